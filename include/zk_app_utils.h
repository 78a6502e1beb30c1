/*
 * zk_app_utils.h — the part of Zymbit's application C API (libzk_app_utils)
 * that zkiot uses, written from Zymbit's published API documentation.
 *
 * Both the real library (/usr/lib/libzk_app_utils.so) and the zkiot emulator
 * (libzkemu.so) export these symbols with these signatures, so the PKCS#11
 * module loads either one at run time and takes the same code path.
 *
 * Conventions (as documented by Zymbit):
 *  - every function returns int: 0 on success, < 0 (a negative errno) on failure;
 *  - functions that allocate a slot return the slot number (>= 0);
 *  - zkVerify* return 1 for a valid signature, 0 for an invalid one, < 0 on error;
 *  - zkWaitForTap and zkWaitForPerimeterEvent return -ETIMEDOUT when nothing
 *    came within their timeout;
 *  - every uint8_t**, uint32_t**, int** and char** output is malloc'd by the
 *    library and the caller releases it with free();
 *  - digests are 32 bytes (no length argument); signatures are raw r||s (64 bytes);
 *    public keys are raw X||Y (64 bytes for the NIST P-256 and secp256k1 curves),
 *    with no 0x04 prefix.
 */
#ifndef ZK_APP_UTILS_H
#define ZK_APP_UTILS_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void *zkCTX;

typedef enum ZK_EC_KEY_TYPE {
    ZK_NISTP256,
    ZK_SECP256R1 = ZK_NISTP256,
    ZK_SECP256K1,
    ZK_ED25519,
    ZK_X25519
} ZK_EC_KEY_TYPE;

/* Accelerometer axes, for zkSetTapSensitivity. */
typedef enum ZK_ACCEL_AXIS_TYPE {
    ZK_ACCEL_AXIS_X,
    ZK_ACCEL_AXIS_Y,
    ZK_ACCEL_AXIS_Z,
    ZK_ACCEL_AXIS_ALL
} ZK_ACCEL_AXIS_TYPE;

/* One axis of zkGetAccelerometerData. */
typedef struct zkAccelAxisDataType {
    double g;          /* the reading, in units of g */
    int tapDirection;  /* direction of the force that caused a tap: -1 or +1; 0 for none */
} zkAccelAxisDataType;

/* Session. */
int zkOpen(zkCTX *ctx);
int zkClose(zkCTX ctx);

/* Random numbers: *rdata receives rdata_sz bytes. */
int zkGetRandBytes(zkCTX ctx, uint8_t **rdata, int rdata_sz);

/* ECDSA with a device key slot; digest is 32 bytes, *sig receives r||s. */
int zkGenECDSASigFromDigest(zkCTX ctx, const uint8_t *digest, int slot,
                            uint8_t **sig, int *sig_sz);
int zkGenECDSASigFromDigestWithRecID(zkCTX ctx, const uint8_t *digest, int slot,
                                     uint8_t **sig, int *sig_sz,
                                     uint8_t *recovery_id);
int zkVerifyECDSASigFromDigest(zkCTX ctx, const uint8_t *digest, int pubkey_slot,
                               const uint8_t *sig, int sig_sz);
int zkVerifyECDSASigFromDigestWithForeignKeySlot(zkCTX ctx, const uint8_t *digest,
                                                 int pubkey_slot,
                                                 const uint8_t *sig, int sig_sz);

/* Public keys. zkGetECDSAPubKey is the older (deprecated) form of zkExportPubKey. */
int zkGetECDSAPubKey(zkCTX ctx, uint8_t **pk, int *pk_sz, int slot);
int zkExportPubKey(zkCTX ctx, uint8_t **pk, int *pk_sz, int pubkey_slot,
                   bool slot_is_foreign);

/* Key store (HSM6, HSM60, ZYMKEY5, SCM; not ZYMKEY4i). */
int zkGetAllocSlotsList(zkCTX ctx, bool is_foreign, int *max_num_keys,
                        int **alloc_key_list, int *alloc_key_list_sz);
int zkGenKeyPair(zkCTX ctx, ZK_EC_KEY_TYPE type);
int zkRemoveKey(zkCTX ctx, int slot, bool slot_is_foreign);
int zkStoreForeignPubKey(zkCTX ctx, ZK_EC_KEY_TYPE pk_type, uint8_t *pk, int pk_sz);

/* Device information; strings are NUL-terminated. */
int zkGetModelNumberString(zkCTX ctx, char **model_str);
int zkGetFirmwareVersionString(zkCTX ctx, char **fw_ver_str);
int zkGetSerialNumberString(zkCTX ctx, char **serial_num_str);
int zkGetTime(zkCTX ctx, uint32_t *epoch_time_sec, bool precise_time);

/* Accelerometer (none on ZYMKEY5). pct runs from 0 (tap detection off) to
 * 100 (most sensitive); axis is a ZK_ACCEL_AXIS_TYPE. zkWaitForTap blocks for
 * up to timeout_ms (0: does not block). */
int zkSetTapSensitivity(zkCTX ctx, int axis, float pct);
int zkWaitForTap(zkCTX ctx, uint32_t timeout_ms);
int zkGetAccelerometerData(zkCTX ctx, zkAccelAxisDataType *x, zkAccelAxisDataType *y,
                           zkAccelAxisDataType *z);

/* Perimeter-breach (tamper) circuits: channel 0 or 1 (circuit 1 is channel 0).
 * A breach latches the channel's first-breach time until the events are
 * cleared, which also rearms the channels. NOTIFY tells the host
 * (zkWaitForPerimeterEvent); SELF_DESTRUCT destroys every key of the device,
 * in production mode only, and there for good. The flags are OR-able. */
#define ZK_PERIMETER_EVENT_ACTION_NOTIFY        (1 << 0)
#define ZK_PERIMETER_EVENT_ACTION_SELF_DESTRUCT (1 << 1)
int zkSetPerimeterEventAction(zkCTX ctx, int channel, uint32_t action_flags);
/* *timestamps_sec receives one entry per channel (*num_timestamps of them):
 * the epoch seconds of its first breach, 0 for none. */
int zkGetPerimeterDetectInfo(zkCTX ctx, uint32_t **timestamps_sec, int *num_timestamps);
int zkClearPerimeterDetectEvents(zkCTX ctx);
/* Blocks for up to timeout_ms (0: does not block) for a breach on a channel
 * set to NOTIFY: 0 for one, -ETIMEDOUT for none. */
int zkWaitForPerimeterEvent(zkCTX ctx, uint32_t timeout_ms);
/* The digital perimeter (HSM6, HSM60, SCM): low-power period in microseconds,
 * maximum number of bits, minimum and maximum delays in nanoseconds. */
int zkSetDigitalPerimeterDetectLPPeriod(zkCTX ctx, int lp_period);
int zkSetDigitalPerimeterDetectLPMaxBits(zkCTX ctx, int max_num_bits);
int zkSetDigitalPerimeterDetectDelays(zkCTX ctx, int min_delay_ns, int max_delay_ns);

/* Binding: zkLockBinding puts the device in production mode, for good (HSM
 * series; a ZYMKEY4i is locked by cutting its lock tab). */
int zkLockBinding(zkCTX ctx);
int zkGetCurrentBindingInfo(zkCTX ctx, bool *binding_is_locked, bool *is_bound);

/* The emulator's own extension; Zymbit's library has no such function.
 * Names the emulated device the next zkOpen reaches (its state directory and,
 * once created, its serial number), without a device operation, so that a
 * module's cache of one emulated device is not taken for another's. */
int zkemu_state_fingerprint(char **fingerprint);

#ifdef __cplusplus
}
#endif

#endif /* ZK_APP_UTILS_H */
