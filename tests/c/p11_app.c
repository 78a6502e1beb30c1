/*
 * p11_app: a PKCS#11 application written the way existing C code is, against
 * p11-kit's <p11-kit/pkcs11.h> (standard CK_* names), loading the module at run time.
 *
 *   p11_app MODULE TOKEN_LABEL KEY_LABEL DIGEST_FILE SIGNATURE_OUT [PIN]
 *
 * Finds the token by label and its private key by CKA_LABEL, signs the 32-byte
 * digest with CKM_ECDSA (length query first, as most applications do), and writes
 * the signature as DER (ECDSA-Sig-Value) so `openssl pkeyutl -verify` can check it.
 *
 * Build: cc $(pkg-config --cflags p11-kit-1) -o p11_app p11_app.c -ldl
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

static const char *rv_name(CK_RV rv)
{
	switch (rv) {
	case CKR_OK: return "CKR_OK";
	case CKR_ARGUMENTS_BAD: return "CKR_ARGUMENTS_BAD";
	case CKR_BUFFER_TOO_SMALL: return "CKR_BUFFER_TOO_SMALL";
	case CKR_DEVICE_ERROR: return "CKR_DEVICE_ERROR";
	case CKR_FUNCTION_FAILED: return "CKR_FUNCTION_FAILED";
	case CKR_GENERAL_ERROR: return "CKR_GENERAL_ERROR";
	case CKR_KEY_HANDLE_INVALID: return "CKR_KEY_HANDLE_INVALID";
	case CKR_MECHANISM_INVALID: return "CKR_MECHANISM_INVALID";
	case CKR_OPERATION_NOT_INITIALIZED: return "CKR_OPERATION_NOT_INITIALIZED";
	case CKR_PIN_INCORRECT: return "CKR_PIN_INCORRECT";
	case CKR_SESSION_HANDLE_INVALID: return "CKR_SESSION_HANDLE_INVALID";
	case CKR_TOKEN_NOT_PRESENT: return "CKR_TOKEN_NOT_PRESENT";
	case CKR_USER_NOT_LOGGED_IN: return "CKR_USER_NOT_LOGGED_IN";
	case CKR_USER_ALREADY_LOGGED_IN: return "CKR_USER_ALREADY_LOGGED_IN";
	case CKR_CRYPTOKI_ALREADY_INITIALIZED: return "CKR_CRYPTOKI_ALREADY_INITIALIZED";
	default: return "CKR_?";
	}
}

#define CHECK(call)                                                              \
	do {                                                                     \
		CK_RV rv_ = (call);                                              \
		if (rv_ != CKR_OK) {                                             \
			fprintf(stderr, "%s: %s (0x%lx)\n", #call, rv_name(rv_), \
				(unsigned long)rv_);                             \
			return 1;                                                \
		}                                                                \
	} while (0)

/* Appends one DER INTEGER holding the unsigned big-endian value v[0..n). */
static size_t der_integer(unsigned char *out, const unsigned char *v, size_t n)
{
	size_t len = 0;

	while (n > 1 && v[0] == 0) {
		v++;
		n--;
	}
	out[len++] = 0x02;
	out[len++] = (unsigned char)(n + (v[0] & 0x80 ? 1 : 0));
	if (v[0] & 0x80)
		out[len++] = 0x00;
	memcpy(out + len, v, n);
	return len + n;
}

/* r||s (2 x 32 bytes) to DER SEQUENCE { INTEGER r, INTEGER s }. */
static size_t ecdsa_der(unsigned char *out, const unsigned char *rs, size_t rs_len)
{
	unsigned char body[2 * (2 + 1 + 66)];
	size_t half = rs_len / 2;
	size_t n = der_integer(body, rs, half);

	n += der_integer(body + n, rs + half, half);
	out[0] = 0x30;
	out[1] = (unsigned char)n;
	memcpy(out + 2, body, n);
	return n + 2;
}

static int find_slot(CK_FUNCTION_LIST_PTR p11, const char *token_label, CK_SLOT_ID *slot)
{
	CK_SLOT_ID slots[64];
	CK_ULONG count = sizeof(slots) / sizeof(slots[0]);
	CK_ULONG i;

	CHECK(p11->C_GetSlotList(CK_TRUE, slots, &count));
	for (i = 0; i < count; i++) {
		CK_TOKEN_INFO info;
		char label[sizeof(info.label) + 1];
		size_t len = sizeof(info.label);

		CHECK(p11->C_GetTokenInfo(slots[i], &info));
		memcpy(label, info.label, len);
		while (len > 0 && label[len - 1] == ' ')
			len--;
		label[len] = '\0';
		if (strcmp(label, token_label) == 0) {
			*slot = slots[i];
			return 0;
		}
	}
	fprintf(stderr, "no token labelled '%s' among %lu slots\n", token_label, count);
	return 1;
}

int main(int argc, char **argv)
{
	const char *module_path, *token_label, *key_label, *digest_path, *sig_path, *pin;
	unsigned char digest[64], rs[132], der[2 + 2 * (2 + 1 + 66)];
	CK_C_GetFunctionList get_function_list;
	CK_FUNCTION_LIST_PTR p11;
	CK_C_INITIALIZE_ARGS init_args;
	CK_SESSION_HANDLE session;
	CK_OBJECT_HANDLE key, extra;
	CK_ULONG found, rs_len;
	CK_OBJECT_CLASS key_class = CKO_PRIVATE_KEY;
	CK_MECHANISM mechanism = { CKM_ECDSA, NULL, 0 };
	CK_SLOT_ID slot;
	size_t digest_len, der_len;
	void *module;
	FILE *f;

	if (argc != 6 && argc != 7) {
		fprintf(stderr, "usage: %s MODULE TOKEN_LABEL KEY_LABEL DIGEST_FILE SIGNATURE_OUT [PIN]\n",
			argv[0]);
		return 2;
	}
	module_path = argv[1];
	token_label = argv[2];
	key_label = argv[3];
	digest_path = argv[4];
	sig_path = argv[5];
	pin = argc == 7 ? argv[6] : NULL;

	f = fopen(digest_path, "rb");
	if (!f) {
		perror(digest_path);
		return 1;
	}
	digest_len = fread(digest, 1, sizeof(digest), f);
	fclose(f);

	module = dlopen(module_path, RTLD_NOW | RTLD_LOCAL);
	if (!module) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 1;
	}
	get_function_list = (CK_C_GetFunctionList)dlsym(module, "C_GetFunctionList");
	if (!get_function_list) {
		fprintf(stderr, "dlsym C_GetFunctionList: %s\n", dlerror());
		return 1;
	}
	CHECK(get_function_list(&p11));

	memset(&init_args, 0, sizeof(init_args));
	init_args.flags = CKF_OS_LOCKING_OK;
	CHECK(p11->C_Initialize(&init_args));

	if (find_slot(p11, token_label, &slot))
		return 1;
	CHECK(p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &session));
	if (pin) {
		CK_RV rv = p11->C_Login(session, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
		if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
			fprintf(stderr, "C_Login: %s\n", rv_name(rv));
			return 1;
		}
	}

	{
		CK_ATTRIBUTE template[] = {
			{ CKA_CLASS, &key_class, sizeof(key_class) },
			{ CKA_LABEL, (void *)key_label, strlen(key_label) },
		};
		CHECK(p11->C_FindObjectsInit(session, template, 2));
		CHECK(p11->C_FindObjects(session, &key, 1, &found));
		if (found == 1)
			CHECK(p11->C_FindObjects(session, &extra, 1, &found));
		else
			found = 2;
		CHECK(p11->C_FindObjectsFinal(session));
		if (found != 0) {
			fprintf(stderr, "expected exactly one private key labelled '%s'\n", key_label);
			return 1;
		}
	}

	CHECK(p11->C_SignInit(session, &mechanism, key));
	CHECK(p11->C_Sign(session, digest, digest_len, NULL, &rs_len));
	if (rs_len == 0 || rs_len > sizeof(rs) || rs_len % 2) {
		fprintf(stderr, "unexpected signature length %lu\n", rs_len);
		return 1;
	}
	CHECK(p11->C_Sign(session, digest, digest_len, rs, &rs_len));

	CHECK(p11->C_CloseSession(session));
	CHECK(p11->C_Finalize(NULL));
	dlclose(module);

	der_len = ecdsa_der(der, rs, rs_len);
	f = fopen(sig_path, "wb");
	if (!f || fwrite(der, 1, der_len, f) != der_len || fclose(f) != 0) {
		perror(sig_path);
		return 1;
	}
	printf("signed %zu-byte digest with '%s' on token '%s': %lu-byte r||s\n", digest_len,
	       key_label, token_label, rs_len);
	return 0;
}
