//! Emulator of libzk_app_utils.
