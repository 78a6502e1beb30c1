/*
 * p11_sweep: calls every function of a PKCS#11 module's function list with
 * hostile arguments (NULL pointers, garbage handles, huge lengths and counts)
 * and lengths no PIN or attribute can have, in every state (not initialised,
 * with a session, with an operation active, finalised),
 * each probe in a forked child with a time limit. The module must answer: a
 * probe that crashes, hangs or returns CKR_GENERAL_ERROR fails the sweep.
 * When the module exports C_GetInterface and it answers a "PKCS 11" 3.0
 * interface, the sweep also calls C_GetInterfaceList, C_GetInterface, the
 * 3.0 list's C_GetInfo and every function PKCS #11 3.0 adds.
 *
 *   p11_sweep MODULE [SECONDS_PER_PROBE]
 *
 * Prints one line per probe that did not return (and a summary line
 * "sweep: N probes (2.40 and 3.0 lists), C crashed, H hung, G CKR_GENERAL_ERROR",
 * or "(2.40 list)" without a 3.0 interface); exit status 0 when all N
 * answered with something other than CKR_GENERAL_ERROR.
 *
 * Build: cc $(pkg-config --cflags p11-kit-1) -o p11_sweep p11_sweep.c -ldl
 */
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#define HUGE_LEN ((CK_ULONG)-1)
#define GARBAGE_HANDLE ((CK_ULONG)0xdeadbeefUL)
/* Larger than any PIN or attribute value, yet a length a buffer could have. */
#define LONG_LEN ((CK_ULONG)0xffffffffUL)

static CK_FUNCTION_LIST_PTR F;

/* PKCS #11 3.0 (3.0 §3.6, §5.4.5-5.4.6). p11-kit's pkcs11.h has these types
 * from 0.25 on and Debian 12 has 0.24, so the sweep declares what it uses:
 * the interface record, and the 3.0 function list as the 2.40 one followed by
 * the entries 3.0 adds, which is its layout. */
struct interface {
	CK_UTF8CHAR *name;
	void *functions;
	CK_FLAGS flags;
};
struct function_list_3_0 {
	CK_FUNCTION_LIST v2;
	CK_RV (*C_GetInterfaceList)(struct interface *, CK_ULONG *);
	CK_RV (*C_GetInterface)(CK_UTF8CHAR *, CK_VERSION *, struct interface **, CK_FLAGS);
	CK_RV (*C_LoginUser)(CK_SESSION_HANDLE, CK_USER_TYPE, CK_UTF8CHAR *, CK_ULONG,
			     CK_UTF8CHAR *, CK_ULONG);
	CK_RV (*C_SessionCancel)(CK_SESSION_HANDLE, CK_FLAGS);
	CK_RV (*C_MessageEncryptInit)(CK_SESSION_HANDLE, CK_MECHANISM *, CK_OBJECT_HANDLE);
	CK_RV (*C_EncryptMessage)(CK_SESSION_HANDLE, void *, CK_ULONG, CK_BYTE *, CK_ULONG,
				  CK_BYTE *, CK_ULONG, CK_BYTE *, CK_ULONG *);
	CK_RV (*C_EncryptMessageBegin)(CK_SESSION_HANDLE, void *, CK_ULONG, CK_BYTE *, CK_ULONG);
	CK_RV (*C_EncryptMessageNext)(CK_SESSION_HANDLE, void *, CK_ULONG, CK_BYTE *, CK_ULONG,
				      CK_BYTE *, CK_ULONG *, CK_FLAGS);
	CK_RV (*C_MessageEncryptFinal)(CK_SESSION_HANDLE);
	CK_RV (*C_MessageDecryptInit)(CK_SESSION_HANDLE, CK_MECHANISM *, CK_OBJECT_HANDLE);
	CK_RV (*C_DecryptMessage)(CK_SESSION_HANDLE, void *, CK_ULONG, CK_BYTE *, CK_ULONG,
				  CK_BYTE *, CK_ULONG, CK_BYTE *, CK_ULONG *);
	CK_RV (*C_DecryptMessageBegin)(CK_SESSION_HANDLE, void *, CK_ULONG, CK_BYTE *, CK_ULONG);
	CK_RV (*C_DecryptMessageNext)(CK_SESSION_HANDLE, void *, CK_ULONG, CK_BYTE *, CK_ULONG,
				      CK_BYTE *, CK_ULONG *, CK_FLAGS);
	CK_RV (*C_MessageDecryptFinal)(CK_SESSION_HANDLE);
	CK_RV (*C_MessageSignInit)(CK_SESSION_HANDLE, CK_MECHANISM *, CK_OBJECT_HANDLE);
	CK_RV (*C_SignMessage)(CK_SESSION_HANDLE, void *, CK_ULONG, CK_BYTE *, CK_ULONG, CK_BYTE *,
			       CK_ULONG *);
	CK_RV (*C_SignMessageBegin)(CK_SESSION_HANDLE, void *, CK_ULONG);
	CK_RV (*C_SignMessageNext)(CK_SESSION_HANDLE, void *, CK_ULONG, CK_BYTE *, CK_ULONG,
				   CK_BYTE *, CK_ULONG *);
	CK_RV (*C_MessageSignFinal)(CK_SESSION_HANDLE);
	CK_RV (*C_MessageVerifyInit)(CK_SESSION_HANDLE, CK_MECHANISM *, CK_OBJECT_HANDLE);
	CK_RV (*C_VerifyMessage)(CK_SESSION_HANDLE, void *, CK_ULONG, CK_BYTE *, CK_ULONG, CK_BYTE *,
				 CK_ULONG);
	CK_RV (*C_VerifyMessageBegin)(CK_SESSION_HANDLE, void *, CK_ULONG);
	CK_RV (*C_VerifyMessageNext)(CK_SESSION_HANDLE, void *, CK_ULONG, CK_BYTE *, CK_ULONG,
				     CK_BYTE *, CK_ULONG);
	CK_RV (*C_MessageVerifyFinal)(CK_SESSION_HANDLE);
};
/* The 3.0 list, NULL when the module offers none; its first probe's number. */
static struct function_list_3_0 *F3;
#define FIRST_3_0_PROBE 68

/* What the arguments of one probe are made of. */
enum variant {
	V_VALID,   /* real handles, valid buffers of honest lengths */
	V_NULL,    /* every pointer NULL, lengths as if they were not */
	V_GARBAGE, /* handles no call ever returned */
	V_HUGE,    /* valid buffers declared (CK_ULONG)-1 long */
	V_MANY,    /* valid arrays (templates, handles) declared (CK_ULONG)-1 long */
	V_LONG,    /* a PIN and an attribute value declared longer than any can be */
	V_COUNT
};
static const char *variant_name[] = { "valid", "null", "garbage", "huge", "many", "long" };

/* The module's state when the call is made. */
enum state {
	S_UNINITIALIZED, /* no C_Initialize in this process */
	S_PUBLIC,        /* initialised, a R/W session, not logged in */
	S_SESSION,       /* initialised, a R/W session, logged in when a PIN is set */
	S_SIGNING,       /* as S_SESSION, with C_SignInit done */
	S_FINDING,       /* as S_SESSION, with C_FindObjectsInit done */
	S_FINALIZED,     /* initialised, then finalised */
	S_STATE_COUNT
};
static const char *state_name[] = { "uninitialized", "public", "session", "signing", "finding",
				    "finalized" };

struct args {
	CK_SLOT_ID slot;
	CK_SESSION_HANDLE session;
	CK_OBJECT_HANDLE key, object;
	CK_BYTE *in, *out;
	CK_ULONG in_len, out_len, pin_len;
	CK_ULONG *out_len_p;
	CK_ATTRIBUTE *template;
	CK_ULONG count;
	CK_MECHANISM *mechanism;
	CK_VOID_PTR reserved;
	CK_SLOT_ID *slots;
	CK_ULONG *ulong_p;
	CK_SESSION_HANDLE *session_p;
	CK_OBJECT_HANDLE *object_p, *object2_p;
	CK_MECHANISM_TYPE *mechanisms;
	CK_INFO *info;
	CK_SLOT_INFO *slot_info;
	CK_TOKEN_INFO *token_info;
	CK_SESSION_INFO *session_info;
	CK_MECHANISM_INFO *mechanism_info;
	CK_FUNCTION_LIST_PTR *list_p;
	struct interface *interfaces;
	struct interface **interface_p;
	CK_UTF8CHAR *interface_name;
	CK_VERSION *version;
	CK_FLAGS flags;
};

static CK_BYTE in_buf[256], out_buf[256], label[32];
static char label_buf[8];
static CK_ULONG out_len_v, ulong_v;
static CK_BBOOL yes = CK_TRUE;
static CK_OBJECT_CLASS data_class = CKO_DATA;
static CK_ATTRIBUTE template_buf[3];
static CK_MECHANISM ecdsa = { CKM_ECDSA, NULL, 0 };
static CK_SLOT_ID slots_buf[4];
static CK_SESSION_HANDLE session_v;
static CK_OBJECT_HANDLE object_v, object2_v;
static CK_MECHANISM_TYPE mechanisms_buf[32];
static CK_INFO info_v;
static CK_SLOT_INFO slot_info_v;
static CK_TOKEN_INFO token_info_v;
static CK_SESSION_INFO session_info_v;
static CK_MECHANISM_INFO mechanism_info_v;
static CK_FUNCTION_LIST_PTR list_v;
static struct interface interfaces_buf[4];
static struct interface *interface_v;
static char name_buf[256];
static CK_VERSION version_v;

static CK_SESSION_HANDLE real_session;
static CK_OBJECT_HANDLE real_key;

static void make_args(struct args *a, enum variant v)
{
	memset(a, 0, sizeof(*a));
	memset(in_buf, 0x5a, sizeof(in_buf));
	template_buf[0] = (CK_ATTRIBUTE){ CKA_CLASS, &data_class, sizeof(data_class) };
	template_buf[1] = (CK_ATTRIBUTE){ CKA_TOKEN, &yes, sizeof(yes) };
	/* Writable: C_GetAttributeValue answers into the same template. */
	memcpy(label_buf, "sweep", 5);
	template_buf[2] = (CK_ATTRIBUTE){ CKA_LABEL, label_buf, 5 };
	out_len_v = sizeof(out_buf);
	ulong_v = 4;
	a->slot = 0;
	a->session = real_session;
	a->key = real_key;
	a->object = real_key;
	a->in = in_buf;
	a->in_len = 32;
	a->pin_len = 4;
	a->out = out_buf;
	a->out_len = sizeof(out_buf);
	a->out_len_p = &out_len_v;
	a->template = template_buf;
	a->count = 3;
	a->mechanism = &ecdsa;
	a->slots = slots_buf;
	a->ulong_p = &ulong_v;
	a->session_p = &session_v;
	a->object_p = &object_v;
	a->object2_p = &object2_v;
	a->mechanisms = mechanisms_buf;
	a->info = &info_v;
	a->slot_info = &slot_info_v;
	a->token_info = &token_info_v;
	a->session_info = &session_info_v;
	a->mechanism_info = &mechanism_info_v;
	a->list_p = &list_v;
	a->interfaces = interfaces_buf;
	a->interface_p = &interface_v;
	strcpy(name_buf, "PKCS 11");
	a->interface_name = (CK_UTF8CHAR *)name_buf;
	version_v = (CK_VERSION){ 3, 0 };
	a->version = &version_v;
	a->flags = 0;
	switch (v) {
	case V_VALID:
	case V_COUNT:
		break;
	case V_NULL:
		a->in = a->out = NULL;
		a->out_len_p = a->ulong_p = NULL;
		a->template = NULL;
		a->mechanism = NULL;
		a->slots = NULL;
		a->session_p = NULL;
		a->object_p = a->object2_p = NULL;
		a->mechanisms = NULL;
		a->info = NULL;
		a->slot_info = NULL;
		a->token_info = NULL;
		a->session_info = NULL;
		a->mechanism_info = NULL;
		a->list_p = NULL;
		a->interfaces = NULL;
		a->interface_p = NULL;
		a->interface_name = NULL;
		a->version = NULL;
		break;
	case V_GARBAGE:
		a->slot = GARBAGE_HANDLE;
		a->session = GARBAGE_HANDLE;
		a->key = a->object = GARBAGE_HANDLE;
		ecdsa.mechanism = GARBAGE_HANDLE;
		strcpy(name_buf, "PKCS 12");
		version_v = (CK_VERSION){ 0xde, 0xad };
		a->flags = GARBAGE_HANDLE;
		break;
	case V_HUGE:
		a->in_len = a->out_len = HUGE_LEN;
		out_len_v = HUGE_LEN;
		ulong_v = HUGE_LEN;
		template_buf[2].ulValueLen = HUGE_LEN;
		break;
	case V_LONG:
		a->pin_len = LONG_LEN;
		template_buf[2].ulValueLen = LONG_LEN;
		/* "PKCS 11" and 247 more bytes before its NUL. */
		memset(name_buf + 7, 'x', sizeof(name_buf) - 8);
		name_buf[sizeof(name_buf) - 1] = 0;
		break;
	case V_MANY:
		a->count = HUGE_LEN;
		ulong_v = HUGE_LEN;
		break;
	}
}

/* Calls function number `fn` of the list with the arguments `a` (with `rv`
 * NULL, only names it); 0 when there is no function `fn`. */
static int call(int fn, const struct args *a, CK_RV *rv, const char **name)
{
#define CASE(N, FUNC, ...)                    \
	case N:                               \
		*name = #FUNC;                \
		if (rv)                       \
			*rv = F->FUNC(__VA_ARGS__); \
		return 1;
#define CASE3(N, NAME, FUNC, ...)              \
	case N:                                \
		*name = NAME;                  \
		if (rv)                        \
			*rv = F3->FUNC(__VA_ARGS__); \
		return 1;
	if (fn >= FIRST_3_0_PROBE && !F3)
		return 0;
	switch (fn) {
	CASE(0, C_GetInfo, a->info)
	CASE(1, C_GetFunctionList, a->list_p)
	CASE(2, C_GetSlotList, CK_TRUE, a->slots, a->ulong_p)
	CASE(3, C_GetSlotInfo, a->slot, a->slot_info)
	CASE(4, C_GetTokenInfo, a->slot, a->token_info)
	CASE(5, C_GetMechanismList, a->slot, a->mechanisms, a->ulong_p)
	CASE(6, C_GetMechanismInfo, a->slot, CKM_ECDSA, a->mechanism_info)
	CASE(7, C_InitToken, a->slot, a->in, a->pin_len, a->in ? label : NULL)
	CASE(8, C_InitPIN, a->session, a->in, a->pin_len)
	CASE(9, C_SetPIN, a->session, a->in, a->pin_len, a->in, a->pin_len)
	CASE(10, C_OpenSession, a->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, a->session_p)
	CASE(11, C_CloseSession, a->session)
	CASE(12, C_CloseAllSessions, a->slot)
	CASE(13, C_GetSessionInfo, a->session, a->session_info)
	CASE(14, C_GetOperationState, a->session, a->out, a->out_len_p)
	CASE(15, C_SetOperationState, a->session, a->in, a->in_len, a->key, a->key)
	CASE(16, C_Login, a->session, CKU_USER, a->in, a->pin_len)
	CASE(17, C_Logout, a->session)
	CASE(18, C_CreateObject, a->session, a->template, a->count, a->object_p)
	CASE(19, C_CopyObject, a->session, a->object, a->template, a->count, a->object_p)
	CASE(20, C_DestroyObject, a->session, a->object)
	CASE(21, C_GetObjectSize, a->session, a->object, a->ulong_p)
	CASE(22, C_GetAttributeValue, a->session, a->object, a->template, a->count)
	CASE(23, C_SetAttributeValue, a->session, a->object, a->template, a->count)
	CASE(24, C_FindObjectsInit, a->session, a->template, a->count)
	CASE(25, C_FindObjects, a->session, a->object_p, a->count, a->ulong_p)
	CASE(26, C_FindObjectsFinal, a->session)
	CASE(27, C_EncryptInit, a->session, a->mechanism, a->key)
	CASE(28, C_Encrypt, a->session, a->in, a->in_len, a->out, a->out_len_p)
	CASE(29, C_EncryptUpdate, a->session, a->in, a->in_len, a->out, a->out_len_p)
	CASE(30, C_EncryptFinal, a->session, a->out, a->out_len_p)
	CASE(31, C_DecryptInit, a->session, a->mechanism, a->key)
	CASE(32, C_Decrypt, a->session, a->in, a->in_len, a->out, a->out_len_p)
	CASE(33, C_DecryptUpdate, a->session, a->in, a->in_len, a->out, a->out_len_p)
	CASE(34, C_DecryptFinal, a->session, a->out, a->out_len_p)
	CASE(35, C_DigestInit, a->session, a->mechanism)
	CASE(36, C_Digest, a->session, a->in, a->in_len, a->out, a->out_len_p)
	CASE(37, C_DigestUpdate, a->session, a->in, a->in_len)
	CASE(38, C_DigestKey, a->session, a->key)
	CASE(39, C_DigestFinal, a->session, a->out, a->out_len_p)
	CASE(40, C_SignInit, a->session, a->mechanism, a->key)
	CASE(41, C_Sign, a->session, a->in, a->in_len, a->out, a->out_len_p)
	CASE(42, C_SignUpdate, a->session, a->in, a->in_len)
	CASE(43, C_SignFinal, a->session, a->out, a->out_len_p)
	CASE(44, C_SignRecoverInit, a->session, a->mechanism, a->key)
	CASE(45, C_SignRecover, a->session, a->in, a->in_len, a->out, a->out_len_p)
	CASE(46, C_VerifyInit, a->session, a->mechanism, a->key)
	CASE(47, C_Verify, a->session, a->in, a->in_len, a->in, a->in ? 64 : a->in_len)
	CASE(48, C_VerifyUpdate, a->session, a->in, a->in_len)
	CASE(49, C_VerifyFinal, a->session, a->in, a->in_len)
	CASE(50, C_VerifyRecoverInit, a->session, a->mechanism, a->key)
	CASE(51, C_VerifyRecover, a->session, a->in, a->in_len, a->out, a->out_len_p)
	CASE(52, C_DigestEncryptUpdate, a->session, a->in, a->in_len, a->out, a->out_len_p)
	CASE(53, C_DecryptDigestUpdate, a->session, a->in, a->in_len, a->out, a->out_len_p)
	CASE(54, C_SignEncryptUpdate, a->session, a->in, a->in_len, a->out, a->out_len_p)
	CASE(55, C_DecryptVerifyUpdate, a->session, a->in, a->in_len, a->out, a->out_len_p)
	CASE(56, C_GenerateKey, a->session, a->mechanism, a->template, a->count, a->object_p)
	CASE(57, C_GenerateKeyPair, a->session, a->mechanism, a->template, a->count, a->template,
	     a->count, a->object_p, a->object2_p)
	CASE(58, C_WrapKey, a->session, a->mechanism, a->key, a->key, a->out, a->out_len_p)
	CASE(59, C_UnwrapKey, a->session, a->mechanism, a->key, a->in, a->in_len, a->template,
	     a->count, a->object_p)
	CASE(60, C_DeriveKey, a->session, a->mechanism, a->key, a->template, a->count, a->object_p)
	CASE(61, C_SeedRandom, a->session, a->in, a->in_len)
	CASE(62, C_GenerateRandom, a->session, a->out, a->out_len)
	CASE(63, C_GetFunctionStatus, a->session)
	CASE(64, C_CancelFunction, a->session)
	CASE(65, C_WaitForSlotEvent, CKF_DONT_BLOCK, a->ulong_p, a->reserved)
	CASE(66, C_Initialize, a->reserved)
	CASE(67, C_Finalize, a->reserved)
	CASE3(68, "C_GetInterfaceList", C_GetInterfaceList, a->interfaces, a->ulong_p)
	CASE3(69, "C_GetInterface", C_GetInterface, a->interface_name, a->version, a->interface_p,
	      a->flags)
	CASE3(70, "C_GetInfo (3.0 list)", v2.C_GetInfo, a->info)
	CASE3(71, "C_LoginUser", C_LoginUser, a->session, CKU_USER, a->in, a->pin_len, a->in,
	      a->pin_len)
	CASE3(72, "C_SessionCancel", C_SessionCancel, a->session, CKF_SIGN)
	CASE3(73, "C_MessageEncryptInit", C_MessageEncryptInit, a->session, a->mechanism, a->key)
	CASE3(74, "C_EncryptMessage", C_EncryptMessage, a->session, a->in, a->in_len, a->in,
	      a->in_len, a->in, a->in_len, a->out, a->out_len_p)
	CASE3(75, "C_EncryptMessageBegin", C_EncryptMessageBegin, a->session, a->in, a->in_len,
	      a->in, a->in_len)
	CASE3(76, "C_EncryptMessageNext", C_EncryptMessageNext, a->session, a->in, a->in_len, a->in,
	      a->in_len, a->out, a->out_len_p, 0)
	CASE3(77, "C_MessageEncryptFinal", C_MessageEncryptFinal, a->session)
	CASE3(78, "C_MessageDecryptInit", C_MessageDecryptInit, a->session, a->mechanism, a->key)
	CASE3(79, "C_DecryptMessage", C_DecryptMessage, a->session, a->in, a->in_len, a->in,
	      a->in_len, a->in, a->in_len, a->out, a->out_len_p)
	CASE3(80, "C_DecryptMessageBegin", C_DecryptMessageBegin, a->session, a->in, a->in_len,
	      a->in, a->in_len)
	CASE3(81, "C_DecryptMessageNext", C_DecryptMessageNext, a->session, a->in, a->in_len, a->in,
	      a->in_len, a->out, a->out_len_p, 0)
	CASE3(82, "C_MessageDecryptFinal", C_MessageDecryptFinal, a->session)
	CASE3(83, "C_MessageSignInit", C_MessageSignInit, a->session, a->mechanism, a->key)
	CASE3(84, "C_SignMessage", C_SignMessage, a->session, a->in, a->in_len, a->in, a->in_len,
	      a->out, a->out_len_p)
	CASE3(85, "C_SignMessageBegin", C_SignMessageBegin, a->session, a->in, a->in_len)
	CASE3(86, "C_SignMessageNext", C_SignMessageNext, a->session, a->in, a->in_len, a->in,
	      a->in_len, a->out, a->out_len_p)
	CASE3(87, "C_MessageSignFinal", C_MessageSignFinal, a->session)
	CASE3(88, "C_MessageVerifyInit", C_MessageVerifyInit, a->session, a->mechanism, a->key)
	CASE3(89, "C_VerifyMessage", C_VerifyMessage, a->session, a->in, a->in_len, a->in,
	      a->in_len, a->in, a->in ? 64 : a->in_len)
	CASE3(90, "C_VerifyMessageBegin", C_VerifyMessageBegin, a->session, a->in, a->in_len)
	CASE3(91, "C_VerifyMessageNext", C_VerifyMessageNext, a->session, a->in, a->in_len, a->in,
	      a->in_len, a->in, a->in ? 64 : a->in_len)
	CASE3(92, "C_MessageVerifyFinal", C_MessageVerifyFinal, a->session)
	default:
		return 0;
	}
#undef CASE
#undef CASE3
}

/* Brings a fresh child process's module into state `s`; 0 on success. */
static int enter_state(enum state s)
{
	CK_ULONG n = 1;
	CK_OBJECT_CLASS private_key = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE find_key = { CKA_CLASS, &private_key, sizeof(private_key) };
	const char *pin = getenv("SWEEP_PIN");

	if (s == S_UNINITIALIZED)
		return 0;
	if (F->C_Initialize(NULL) != CKR_OK)
		return 1;
	if (s == S_FINALIZED)
		return F->C_Finalize(NULL) != CKR_OK;
	if (F->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &real_session) != CKR_OK)
		return 1;
	if (s == S_PUBLIC)
		return 0;
	if (pin && F->C_Login(real_session, CKU_USER, (CK_BYTE *)pin, strlen(pin)) != CKR_OK)
		return 1;
	if (F->C_FindObjectsInit(real_session, &find_key, 1) != CKR_OK ||
	    F->C_FindObjects(real_session, &real_key, 1, &n) != CKR_OK || n != 1 ||
	    F->C_FindObjectsFinal(real_session) != CKR_OK)
		return 1;
	if (s == S_SIGNING)
		return F->C_SignInit(real_session, &ecdsa, real_key) != CKR_OK;
	if (s == S_FINDING)
		return F->C_FindObjectsInit(real_session, NULL, 0) != CKR_OK;
	return 0;
}

int main(int argc, char **argv)
{
	CK_RV (*get_list)(CK_FUNCTION_LIST_PTR_PTR);
	CK_RV (*get_interface)(CK_UTF8CHAR *, CK_VERSION *, struct interface **, CK_FLAGS);
	unsigned seconds = argc > 2 ? (unsigned)atoi(argv[2]) : 10;
	int probes = 0, crashed = 0, hung = 0, general = 0;
	void *lib;

	if (argc < 2) {
		fprintf(stderr, "usage: %s MODULE [SECONDS_PER_PROBE]\n", argv[0]);
		return 2;
	}
	lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 2;
	}
	*(void **)&get_list = dlsym(lib, "C_GetFunctionList");
	if (!get_list || get_list(&F) != CKR_OK) {
		fprintf(stderr, "C_GetFunctionList failed\n");
		return 2;
	}
	*(void **)&get_interface = dlsym(lib, "C_GetInterface");
	if (get_interface) {
		CK_VERSION v3 = { 3, 0 };
		struct interface *found = NULL;

		if (get_interface((CK_UTF8CHAR *)"PKCS 11", &v3, &found, 0) == CKR_OK && found &&
		    found->functions)
			F3 = found->functions;
	}
	for (int s = 0; s < S_STATE_COUNT; s++) {
		for (int fn = 0;; fn++) {
			const char *name = NULL;

			if (!call(fn, NULL, NULL, &name))
				break;
			for (int v = 0; v < V_COUNT; v++) {
				int fds[2], status;
				CK_RV rv = 0;
				pid_t pid;
				ssize_t got;

				if (pipe(fds) != 0) {
					perror("pipe");
					return 2;
				}
				fflush(stdout);
				pid = fork();
				if (pid < 0) {
					perror("fork");
					return 2;
				}
				if (pid == 0) {
					struct args a;

					close(fds[0]);
					alarm(seconds);
					if (enter_state((enum state)s) != 0)
						_exit(3);
					make_args(&a, (enum variant)v);
					call(fn, &a, &rv, &name);
					if (write(fds[1], &rv, sizeof(rv)) != sizeof(rv))
						_exit(4);
					_exit(0);
				}
				close(fds[1]);
				got = read(fds[0], &rv, sizeof(rv));
				close(fds[0]);
				waitpid(pid, &status, 0);
				probes++;
				if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
					hung++;
					printf("HANG  %-22s %-8s in state %s\n", name, variant_name[v], state_name[s]);
				} else if (WIFSIGNALED(status)) {
					crashed++;
					printf("CRASH %-22s %-8s in state %s: signal %d\n", name, variant_name[v],
					       state_name[s], WTERMSIG(status));
				} else if (WIFEXITED(status) && WEXITSTATUS(status) == 3) {
					fprintf(stderr, "could not reach state %s\n", state_name[s]);
					return 2;
				} else if (got != sizeof(rv) || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
					crashed++;
					printf("CRASH %-22s %-8s in state %s: exit status %d\n", name,
					       variant_name[v], state_name[s], WEXITSTATUS(status));
				} else if (rv == CKR_GENERAL_ERROR) {
					general++;
					printf("GENERAL_ERROR %-22s %-8s in state %s\n", name, variant_name[v],
					       state_name[s]);
				} else if (getenv("SWEEP_VERBOSE")) {
					printf("ok    %-22s %-8s in state %-13s rv 0x%lx\n", name, variant_name[v],
					       state_name[s], (unsigned long)rv);
				}
			}
		}
	}
	printf("sweep: %d probes (%s), %d crashed, %d hung, %d CKR_GENERAL_ERROR\n", probes,
	       F3 ? "2.40 and 3.0 lists" : "2.40 list", crashed, hung, general);
	return crashed || hung || general ? 1 : 0;
}
