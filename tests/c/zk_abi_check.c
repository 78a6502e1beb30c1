/*
 * zk_abi_check: uses libzk_app_utils (or the libzkemu.so emulator) exactly as a
 * C program written against Zymbit's header would, and checks the conventions:
 * 0 / negative errno returns, verify returning 1 / 0, raw 64-byte keys and
 * signatures, and every output buffer released with free().
 *
 *   cc -std=c99 -I include tests/c/zk_abi_check.c -L <dir> -lzkemu -o zk_abi_check
 *   LD_LIBRARY_PATH=<dir> ZKIOT_EMU_DIR=/tmp/emu ./zk_abi_check
 *
 * Prints "OK ..." and exits 0, or names the first failed check and exits 1.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zk_app_utils.h"

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (!(cond)) {                                     \
            fprintf(stderr, "zk_abi_check: line %d: ", __LINE__); \
            fprintf(stderr, __VA_ARGS__);                  \
            fputc('\n', stderr);                           \
            exit(1);                                       \
        }                                                  \
    } while (0)

static void check_string(const char *what, int rc, const char *text)
{
    CHECK(rc == 0, "%s returned %d", what, rc);
    CHECK(text != NULL && text[0] != '\0', "%s gave no text", what);
}

int main(void)
{
    int rc = zkOpen(NULL);
    CHECK(rc == -EINVAL, "zkOpen(NULL) returned %d", rc);
    zkCTX ctx = NULL;
    rc = zkOpen(&ctx);
    CHECK(rc == 0 && ctx != NULL, "zkOpen returned %d", rc);

    char *model = NULL, *serial = NULL, *firmware = NULL;
    rc = zkGetModelNumberString(ctx, &model);
    check_string("zkGetModelNumberString", rc, model);
    rc = zkGetSerialNumberString(ctx, &serial);
    check_string("zkGetSerialNumberString", rc, serial);
    rc = zkGetFirmwareVersionString(ctx, &firmware);
    check_string("zkGetFirmwareVersionString", rc, firmware);

    uint8_t *pk = NULL;
    int pk_sz = 0;
    rc = zkExportPubKey(ctx, &pk, &pk_sz, 0, false);
    CHECK(rc == 0 && pk != NULL && pk_sz == 64, "zkExportPubKey: rc %d, %d bytes", rc, pk_sz);
    uint8_t *old_pk = NULL;
    int old_pk_sz = 0;
    rc = zkGetECDSAPubKey(ctx, &old_pk, &old_pk_sz, 0);
    CHECK(rc == 0 && old_pk_sz == 64 && memcmp(pk, old_pk, 64) == 0,
          "zkGetECDSAPubKey differs from zkExportPubKey (rc %d)", rc);

    uint8_t digest[32];
    for (int i = 0; i < 32; i++)
        digest[i] = (uint8_t)(i * 7 + 1);

    uint8_t *sig = NULL;
    int sig_sz = 0;
    rc = zkGenECDSASigFromDigest(ctx, digest, 0, &sig, &sig_sz);
    CHECK(rc == 0 && sig != NULL && sig_sz == 64, "zkGenECDSASigFromDigest: rc %d, %d bytes",
          rc, sig_sz);
    rc = zkVerifyECDSASigFromDigest(ctx, digest, 0, sig, sig_sz);
    CHECK(rc == 1, "verify of a good signature returned %d, expected 1", rc);
    sig[20] ^= 0x04;
    rc = zkVerifyECDSASigFromDigest(ctx, digest, 0, sig, sig_sz);
    CHECK(rc == 0, "verify of a flipped signature returned %d, expected 0", rc);

    uint8_t *sig2 = NULL;
    int sig2_sz = 0;
    uint8_t recovery_id = 0xff;
    rc = zkGenECDSASigFromDigestWithRecID(ctx, digest, 0, &sig2, &sig2_sz, &recovery_id);
    CHECK(rc == 0 && sig2_sz == 64 && recovery_id <= 1,
          "zkGenECDSASigFromDigestWithRecID: rc %d, recovery id %d", rc, recovery_id);
    CHECK(zkVerifyECDSASigFromDigest(ctx, digest, 0, sig2, sig2_sz) == 1,
          "signature with recovery id does not verify");

    uint8_t *random = NULL;
    rc = zkGetRandBytes(ctx, &random, 48);
    CHECK(rc == 0 && random != NULL, "zkGetRandBytes returned %d", rc);

    int max_keys = 0, *slots = NULL, slot_count = 0;
    rc = zkGetAllocSlotsList(ctx, false, &max_keys, &slots, &slot_count);
    CHECK(rc == 0 && slots != NULL && slot_count >= 3 && max_keys >= slot_count && slots[0] == 0,
          "zkGetAllocSlotsList: rc %d, %d of %d", rc, slot_count, max_keys);

    uint32_t now = 0;
    rc = zkGetTime(ctx, &now, false);
    CHECK(rc == 0 && now > 1600000000u, "zkGetTime: rc %d, %u", rc, (unsigned)now);

    /* The perimeter: two channels, no breach on a new device, a library-
     * allocated array of their first-breach times. */
    rc = zkSetPerimeterEventAction(ctx, 1, ZK_PERIMETER_EVENT_ACTION_NOTIFY |
                                               ZK_PERIMETER_EVENT_ACTION_SELF_DESTRUCT);
    CHECK(rc == 0, "zkSetPerimeterEventAction returned %d", rc);
    rc = zkSetPerimeterEventAction(ctx, 2, ZK_PERIMETER_EVENT_ACTION_NOTIFY);
    CHECK(rc == -EINVAL, "zkSetPerimeterEventAction on channel 2 returned %d", rc);
    uint32_t *breaches = NULL;
    int channels = -1;
    rc = zkGetPerimeterDetectInfo(ctx, &breaches, &channels);
    CHECK(rc == 0 && breaches != NULL && channels == 2 && breaches[0] == 0 && breaches[1] == 0,
          "zkGetPerimeterDetectInfo: rc %d, %d channels", rc, channels);
    rc = zkWaitForPerimeterEvent(ctx, 0);
    CHECK(rc == -ETIMEDOUT, "zkWaitForPerimeterEvent(0) with no breach returned %d", rc);
    rc = zkClearPerimeterDetectEvents(ctx);
    CHECK(rc == 0, "zkClearPerimeterDetectEvents returned %d", rc);
    rc = zkSetPerimeterEventAction(ctx, 1, 0);
    CHECK(rc == 0, "zkSetPerimeterEventAction(none) returned %d", rc);

    /* Failures are negative errno values and leave no buffer to free. */
    uint8_t *none = NULL;
    int none_sz = -1;
    rc = zkGenECDSASigFromDigest(ctx, digest, 100000, &none, &none_sz);
    CHECK(rc == -EINVAL && none == NULL, "signing with slot 100000 returned %d", rc);
    rc = zkGenECDSASigFromDigest(ctx, NULL, 0, &none, &none_sz);
    CHECK(rc == -EINVAL && none == NULL, "signing a NULL digest returned %d", rc);
    rc = zkVerifyECDSASigFromDigest(ctx, digest, 0, sig2, 63);
    CHECK(rc == -EINVAL, "verifying a 63-byte signature returned %d", rc);
    rc = zkGetModelNumberString(ctx, NULL);
    CHECK(rc == -EINVAL, "zkGetModelNumberString(ctx, NULL) returned %d", rc);
    rc = zkGetRandBytes(NULL, &none, 8);
    CHECK(rc == -EINVAL && none == NULL, "zkGetRandBytes without a context returned %d", rc);

    free(pk);
    free(old_pk);
    free(sig);
    free(sig2);
    free(random);
    free(slots);
    free(breaches);

    rc = zkClose(ctx);
    CHECK(rc == 0, "zkClose returned %d", rc);
    rc = zkClose(ctx);
    CHECK(rc == -EINVAL, "closing a closed context returned %d", rc);
    rc = zkGenECDSASigFromDigest(ctx, digest, 0, &none, &none_sz);
    CHECK(rc == -EINVAL && none == NULL, "signing with a closed context returned %d", rc);

    printf("OK model=%s serial=%s firmware=%s slots=%d/%d recovery_id=%d\n", model, serial,
           firmware, slot_count, max_keys, recovery_id);
    free(model);
    free(serial);
    free(firmware);
    return 0;
}
