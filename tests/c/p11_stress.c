/*
 * p11_stress: load on a PKCS#11 module, for the soak and kill -9 tests.
 *
 *   p11_stress MODULE sign THREADS SIGNATURES_PER_THREAD
 *       THREADS threads, each with its own session, sign SHA-256 digests with
 *       CKM_ECDSA and the key labelled slot0, and check each signature with
 *       C_Verify. Prints "signatures N errors E".
 *   p11_stress MODULE certs CERT_DER COUNT
 *       creates COUNT token certificates (label "stress-<pid>-<i>", the DER of
 *       CERT_DER) and destroys each one after finding it again by label.
 *       Prints "certificates N errors E". COUNT 0 means: until killed, and
 *       keep them (for kill -9 tests).
 *   p11_stress MODULE keygen COUNT [destroy]
 *       generates COUNT P-256 token key pairs labelled "gen-<pid>-<i>" with
 *       CKA_ID "<pid>-<i>" (COUNT 0: until killed); with "destroy", destroys
 *       each pair after making it. Prints "keys N errors E".
 *   p11_stress MODULE check [CERT_DER]
 *       every certificate's CKA_VALUE equals CERT_DER exactly (when given);
 *       every private key has a non-empty CKA_LABEL and CKA_ID; a key whose
 *       label is "gen-P-I" has the id "P-I". Prints "objects N bad B generated G",
 *       G being the private keys labelled "gen-...".
 *
 * Environment: STRESS_PIN logs the sessions in. Exit status 0 when E (or B) is 0.
 * Build: cc $(pkg-config --cflags p11-kit-1) -pthread -o p11_stress p11_stress.c -ldl
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR F;
static const char *pin;
static pthread_mutex_t counts_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long done_count, error_count;

static void count(int ok)
{
	pthread_mutex_lock(&counts_lock);
	if (ok)
		done_count++;
	else
		error_count++;
	pthread_mutex_unlock(&counts_lock);
}

static void report_rv(const char *what, CK_RV rv)
{
	fprintf(stderr, "%s: 0x%lx\n", what, (unsigned long)rv);
}

static int open_session(CK_SESSION_HANDLE *s)
{
	CK_RV rv = F->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, s);

	if (rv != CKR_OK) {
		report_rv("C_OpenSession", rv);
		return 1;
	}
	if (pin) {
		rv = F->C_Login(*s, CKU_USER, (CK_BYTE *)pin, strlen(pin));
		if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
			report_rv("C_Login", rv);
			return 1;
		}
	}
	return 0;
}

/* Every object matching the template (a malloc'd array, *count of them);
 * NULL on error. */
static CK_OBJECT_HANDLE *find_all(CK_SESSION_HANDLE s, CK_ATTRIBUTE *t, CK_ULONG n, unsigned long *count)
{
	CK_OBJECT_HANDLE *all = NULL;
	unsigned long have = 0, room = 0;
	CK_RV rv = F->C_FindObjectsInit(s, t, n);

	while (rv == CKR_OK) {
		CK_ULONG found = 0;

		if (have + 512 > room) {
			CK_OBJECT_HANDLE *more = realloc(all, (room + 4096) * sizeof(*all));

			if (!more) {
				fprintf(stderr, "out of memory\n");
				F->C_FindObjectsFinal(s);
				free(all);
				return NULL;
			}
			all = more;
			room += 4096;
		}
		rv = F->C_FindObjects(s, all + have, 512, &found);
		if (rv == CKR_OK && found == 0)
			break;
		have += found;
	}
	if (rv != CKR_OK) {
		report_rv("C_FindObjects", rv);
		F->C_FindObjectsFinal(s);
		free(all);
		return NULL;
	}
	rv = F->C_FindObjectsFinal(s);
	if (rv != CKR_OK) {
		report_rv("C_FindObjectsFinal", rv);
		free(all);
		return NULL;
	}
	*count = have;
	return all;
}

/* Up to `max` handles of objects matching the template; -1 on error. */
static long find(CK_SESSION_HANDLE s, CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_HANDLE *out, CK_ULONG max)
{
	unsigned long count;
	CK_OBJECT_HANDLE *all = find_all(s, t, n, &count);

	if (!all)
		return -1;
	if (count > max)
		count = max;
	memcpy(out, all, count * sizeof(*all));
	free(all);
	return (long)count;
}

struct signer {
	pthread_t thread;
	unsigned long signatures;
};

static void *sign_loop(void *arg)
{
	struct signer *me = arg;
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY, pub_cls = CKO_PUBLIC_KEY;
	CK_ATTRIBUTE key_t[] = { { CKA_CLASS, &cls, sizeof(cls) }, { CKA_LABEL, "slot0", 5 } };
	CK_ATTRIBUTE pub_t[] = { { CKA_CLASS, &pub_cls, sizeof(pub_cls) }, { CKA_LABEL, "slot0", 5 } };
	CK_MECHANISM ecdsa = { CKM_ECDSA, NULL, 0 };
	CK_OBJECT_HANDLE key, pub;
	CK_SESSION_HANDLE s;
	unsigned char digest[32], sig[64];

	if (open_session(&s) || find(s, key_t, 2, &key, 1) != 1 || find(s, pub_t, 2, &pub, 1) != 1) {
		count(0);
		return NULL;
	}
	for (unsigned long i = 0; i < me->signatures; i++) {
		CK_ULONG len = sizeof(sig);
		CK_RV rv;

		for (size_t j = 0; j < sizeof(digest); j++)
			digest[j] = (unsigned char)(rand() ^ (int)i ^ (int)j);
		rv = F->C_SignInit(s, &ecdsa, key);
		if (rv == CKR_OK)
			rv = F->C_Sign(s, digest, sizeof(digest), sig, &len);
		if (rv != CKR_OK || len != 64) {
			report_rv("C_Sign", rv);
			count(0);
			continue;
		}
		rv = F->C_VerifyInit(s, &ecdsa, pub);
		if (rv == CKR_OK)
			rv = F->C_Verify(s, digest, sizeof(digest), sig, len);
		if (rv != CKR_OK)
			report_rv("C_Verify of a signature just made", rv);
		count(rv == CKR_OK);
	}
	F->C_CloseSession(s);
	return NULL;
}

static int run_sign(int threads, unsigned long per_thread)
{
	struct signer *t = calloc((size_t)threads, sizeof(*t));

	for (int i = 0; i < threads; i++) {
		t[i].signatures = per_thread;
		if (pthread_create(&t[i].thread, NULL, sign_loop, &t[i]) != 0)
			return 2;
	}
	for (int i = 0; i < threads; i++)
		pthread_join(t[i].thread, NULL);
	free(t);
	printf("signatures %lu errors %lu\n", done_count, error_count);
	return error_count != 0;
}

static unsigned char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf = malloc(65536);

	if (!f || !buf) {
		perror(path);
		exit(2);
	}
	*len = fread(buf, 1, 65536, f);
	fclose(f);
	return buf;
}

static int run_certs(const char *der_path, unsigned long n)
{
	CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
	CK_CERTIFICATE_TYPE type = CKC_X_509;
	CK_BBOOL yes = CK_TRUE;
	CK_SESSION_HANDLE s;
	size_t der_len;
	unsigned char *der = read_file(der_path, &der_len);

	if (open_session(&s))
		return 1;
	for (unsigned long i = 0; n == 0 || i < n; i++) {
		char label[64];
		CK_ATTRIBUTE t[] = {
			{ CKA_CLASS, &cls, sizeof(cls) },
			{ CKA_CERTIFICATE_TYPE, &type, sizeof(type) },
			{ CKA_TOKEN, &yes, sizeof(yes) },
			{ CKA_LABEL, label, 0 },
			{ CKA_VALUE, der, der_len },
		};
		CK_OBJECT_HANDLE obj, again;
		CK_RV rv;

		t[3].ulValueLen = (CK_ULONG)snprintf(label, sizeof(label), "stress-%ld-%lu", (long)getpid(), i);
		rv = F->C_CreateObject(s, t, 5, &obj);
		if (rv != CKR_OK) {
			report_rv("C_CreateObject", rv);
			count(0);
			continue;
		}
		if (n == 0) {
			count(1);
			continue;
		}
		if (find(s, &t[3], 1, &again, 1) != 1 || again != obj) {
			fprintf(stderr, "certificate %s not found again\n", label);
			count(0);
			continue;
		}
		rv = F->C_DestroyObject(s, obj);
		if (rv != CKR_OK)
			report_rv("C_DestroyObject", rv);
		count(rv == CKR_OK);
	}
	printf("certificates %lu errors %lu\n", done_count, error_count);
	return error_count != 0;
}

static int run_keygen(unsigned long n, int destroy)
{
	CK_MECHANISM gen = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
	CK_BYTE p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
	CK_BBOOL yes = CK_TRUE;
	CK_SESSION_HANDLE s;

	if (open_session(&s))
		return 1;
	for (unsigned long i = 0; n == 0 || i < n; i++) {
		char label[64], id[64];
		CK_ULONG label_len = (CK_ULONG)snprintf(label, sizeof(label), "gen-%ld-%lu", (long)getpid(), i);
		CK_ULONG id_len = (CK_ULONG)snprintf(id, sizeof(id), "%ld-%lu", (long)getpid(), i);
		CK_ATTRIBUTE pub_t[] = { { CKA_EC_PARAMS, p256, sizeof(p256) },
					 { CKA_TOKEN, &yes, sizeof(yes) },
					 { CKA_LABEL, label, label_len },
					 { CKA_ID, id, id_len } };
		CK_ATTRIBUTE priv_t[] = { { CKA_TOKEN, &yes, sizeof(yes) },
					  { CKA_SIGN, &yes, sizeof(yes) },
					  { CKA_LABEL, label, label_len },
					  { CKA_ID, id, id_len } };
		CK_OBJECT_HANDLE pub, priv;
		CK_RV rv = F->C_GenerateKeyPair(s, &gen, pub_t, 4, priv_t, 4, &pub, &priv);

		if (rv != CKR_OK)
			report_rv("C_GenerateKeyPair", rv);
		else if (destroy && (rv = F->C_DestroyObject(s, priv)) == CKR_OK)
			rv = F->C_DestroyObject(s, pub);
		if (rv != CKR_OK && destroy)
			report_rv("C_DestroyObject", rv);
		count(rv == CKR_OK);
	}
	printf("keys %lu errors %lu\n", done_count, error_count);
	return error_count != 0;
}

/* Reads one attribute into a malloc'd buffer; NULL if it has none. */
static unsigned char *attribute(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type, CK_ULONG *len)
{
	CK_ATTRIBUTE a = { type, NULL, 0 };
	unsigned char *buf;

	if (F->C_GetAttributeValue(s, o, &a, 1) != CKR_OK || a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
		return NULL;
	buf = malloc(a.ulValueLen + 1);
	a.pValue = buf;
	if (F->C_GetAttributeValue(s, o, &a, 1) != CKR_OK) {
		free(buf);
		return NULL;
	}
	buf[a.ulValueLen] = 0;
	*len = a.ulValueLen;
	return buf;
}

static int run_check(const char *der_path)
{
	CK_OBJECT_CLASS cert_cls = CKO_CERTIFICATE, key_cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE cert_t = { CKA_CLASS, &cert_cls, sizeof(cert_cls) };
	CK_ATTRIBUTE key_t = { CKA_CLASS, &key_cls, sizeof(key_cls) };
	CK_OBJECT_HANDLE *objects;
	unsigned long total = 0, bad = 0, generated = 0;
	CK_SESSION_HANDLE s;
	size_t der_len = 0;
	unsigned char *der = der_path ? read_file(der_path, &der_len) : NULL;
	unsigned long n;

	if (open_session(&s))
		return 1;
	objects = find_all(s, &cert_t, 1, &n);
	if (!objects)
		return 1;
	for (unsigned long i = 0; i < n; i++) {
		CK_ULONG len = 0;
		unsigned char *value = attribute(s, objects[i], CKA_VALUE, &len);

		total++;
		if (!value || (der && (len != der_len || memcmp(value, der, len) != 0))) {
			fprintf(stderr, "certificate object %lu is not whole\n", (unsigned long)objects[i]);
			bad++;
		}
		free(value);
	}
	free(objects);
	objects = find_all(s, &key_t, 1, &n);
	if (!objects)
		return 1;
	for (unsigned long i = 0; i < n; i++) {
		CK_ULONG label_len = 0, id_len = 0;
		unsigned char *label = attribute(s, objects[i], CKA_LABEL, &label_len);
		unsigned char *id = attribute(s, objects[i], CKA_ID, &id_len);

		total++;
		if (label && label_len > 4 && strncmp((char *)label, "gen-", 4) == 0)
			generated++;
		if (!label || !id || label_len == 0 || id_len == 0 ||
		    (strncmp((char *)label, "gen-", 4) == 0 && strcmp((char *)label + 4, (char *)id) != 0)) {
			fprintf(stderr, "private key %lu: label '%s' id '%s'\n", (unsigned long)objects[i],
				label ? (char *)label : "(none)", id ? (char *)id : "(none)");
			bad++;
		}
		free(label);
		free(id);
	}
	free(objects);
	printf("objects %lu bad %lu generated %lu\n", total, bad, generated);
	return bad != 0;
}

int main(int argc, char **argv)
{
	CK_RV (*get_list)(CK_FUNCTION_LIST_PTR_PTR);
	CK_C_INITIALIZE_ARGS init = { .flags = CKF_OS_LOCKING_OK };
	void *lib;
	CK_RV rv;
	int status;

	if (argc < 3) {
		fprintf(stderr, "usage: %s MODULE sign|certs|keygen|check ...\n", argv[0]);
		return 2;
	}
	pin = getenv("STRESS_PIN");
	lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		fprintf(stderr, "dlopen: %s\n", dlerror());
		return 2;
	}
	*(void **)&get_list = dlsym(lib, "C_GetFunctionList");
	if (!get_list || get_list(&F) != CKR_OK)
		return 2;
	rv = F->C_Initialize(&init);
	if (rv != CKR_OK) {
		report_rv("C_Initialize", rv);
		return 2;
	}
	srand((unsigned)getpid());
	if (strcmp(argv[2], "sign") == 0 && argc == 5)
		status = run_sign(atoi(argv[3]), strtoul(argv[4], NULL, 10));
	else if (strcmp(argv[2], "certs") == 0 && argc == 5)
		status = run_certs(argv[3], strtoul(argv[4], NULL, 10));
	else if (strcmp(argv[2], "keygen") == 0 && (argc == 4 || (argc == 5 && strcmp(argv[4], "destroy") == 0)))
		status = run_keygen(strtoul(argv[3], NULL, 10), argc == 5);
	else if (strcmp(argv[2], "check") == 0 && argc <= 4)
		status = run_check(argc == 4 ? argv[3] : NULL);
	else {
		fprintf(stderr, "bad arguments\n");
		return 2;
	}
	rv = F->C_Finalize(NULL);
	if (rv != CKR_OK) {
		report_rv("C_Finalize", rv);
		return 1;
	}
	return status;
}
