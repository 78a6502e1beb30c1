//! C ABI of the PKCS#11 module.
