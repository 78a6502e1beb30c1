//! Random numbers from the device (PKCS#11 2.40 §5.15).

use cryptoki_sys::*;

use crate::error::{Error, Result};
use crate::module::Module;

impl Module {
    /// `C_GenerateRandom`: bytes from the device's generator.
    pub fn generate_random(&self, session: CK_SESSION_HANDLE, out: &mut [u8]) -> Result<()> {
        self.check_session(session)?;
        if out.is_empty() {
            return Ok(());
        }
        let token = self.token()?;
        let bytes = token.device.random(out.len()).map_err(|e| {
            tracing::error!("random bytes from the device failed: {e}");
            Error::from(e)
        })?;
        if bytes.len() != out.len() {
            return Err(Error::DeviceError(format!(
                "the device returned {} random bytes, not {}",
                bytes.len(),
                out.len()
            )));
        }
        out.copy_from_slice(&bytes);
        Ok(())
    }
}
