//! Errors of the token, one variant per `CKR_*` code the token returns.

use cryptoki_sys::*;

/// A failed PKCS#11 operation. Each variant is exactly one `CK_RV`
/// ([`Error::rv`]); the strings carry context for the log only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("bad arguments: {0}")]
    ArgumentsBad(&'static str),
    #[error("the attribute is sensitive")]
    AttributeSensitive,
    #[error("attribute type {0:#x} is not valid here")]
    AttributeTypeInvalid(CK_ATTRIBUTE_TYPE),
    #[error("attribute {0:#x} has an invalid value")]
    AttributeValueInvalid(CK_ATTRIBUTE_TYPE),
    #[error("attribute {0:#x} is read-only")]
    AttributeReadOnly(CK_ATTRIBUTE_TYPE),
    #[error("the object cannot be changed or destroyed: {0}")]
    ActionProhibited(&'static str),
    /// The output buffer is too small; `required` is the length that fits.
    #[error("buffer too small: {required} bytes are needed")]
    BufferTooSmall { required: usize },
    #[error("mutex callbacks given without CKF_OS_LOCKING_OK")]
    CantLock,
    #[error("the module is already initialized")]
    CryptokiAlreadyInitialized,
    #[error("the module is not initialized")]
    CryptokiNotInitialized,
    #[error("input length out of range")]
    DataLenRange,
    #[error("device error: {0}")]
    DeviceError(String),
    #[error("the function failed: {0}")]
    FunctionFailed(String),
    #[error("function not supported: {0}")]
    FunctionNotSupported(&'static str),
    #[error("functions never run in parallel")]
    FunctionNotParallel,
    #[error("general error: {0}")]
    GeneralError(String),
    #[error("the key cannot be used for this function")]
    KeyFunctionNotPermitted,
    #[error("invalid key handle")]
    KeyHandleInvalid,
    #[error("the key type does not fit the mechanism")]
    KeyTypeInconsistent,
    #[error("mechanism {0:#x} is not supported")]
    MechanismInvalid(CK_MECHANISM_TYPE),
    #[error("invalid mechanism parameter")]
    MechanismParamInvalid,
    #[error("invalid object handle")]
    ObjectHandleInvalid,
    #[error("an operation is already active")]
    OperationActive,
    #[error("no operation is active")]
    OperationNotInitialized,
    #[error("incorrect PIN")]
    PinIncorrect,
    #[error("PIN length out of range")]
    PinLenRange,
    #[error("the token does not take random seeds")]
    RandomSeedNotSupported,
    #[error("too many sessions")]
    SessionCount,
    #[error("invalid session handle")]
    SessionHandleInvalid,
    #[error("sessions must be serial")]
    SessionParallelNotSupported,
    #[error("the session is read-only")]
    SessionReadOnly,
    #[error("a read-only session exists")]
    SessionReadOnlyExists,
    #[error("the signature is invalid")]
    SignatureInvalid,
    #[error("signature length out of range")]
    SignatureLenRange,
    #[error("invalid slot id")]
    SlotIdInvalid,
    #[error("the template is incomplete: {0}")]
    TemplateIncomplete(&'static str),
    #[error("the template is inconsistent: {0}")]
    TemplateInconsistent(&'static str),
    #[error("no token is present")]
    TokenNotPresent,
    #[error("the user is already logged in")]
    UserAlreadyLoggedIn,
    #[error("the user is not logged in")]
    UserNotLoggedIn,
    #[error("invalid user type")]
    UserTypeInvalid,
}

impl Error {
    /// The one `CK_RV` this error stands for.
    pub fn rv(&self) -> CK_RV {
        match self {
            Error::ArgumentsBad(_) => CKR_ARGUMENTS_BAD,
            Error::AttributeSensitive => CKR_ATTRIBUTE_SENSITIVE,
            Error::AttributeTypeInvalid(_) => CKR_ATTRIBUTE_TYPE_INVALID,
            Error::AttributeValueInvalid(_) => CKR_ATTRIBUTE_VALUE_INVALID,
            Error::AttributeReadOnly(_) => CKR_ATTRIBUTE_READ_ONLY,
            Error::ActionProhibited(_) => CKR_ACTION_PROHIBITED,
            Error::BufferTooSmall { .. } => CKR_BUFFER_TOO_SMALL,
            Error::CantLock => CKR_CANT_LOCK,
            Error::CryptokiAlreadyInitialized => CKR_CRYPTOKI_ALREADY_INITIALIZED,
            Error::CryptokiNotInitialized => CKR_CRYPTOKI_NOT_INITIALIZED,
            Error::DataLenRange => CKR_DATA_LEN_RANGE,
            Error::DeviceError(_) => CKR_DEVICE_ERROR,
            Error::FunctionFailed(_) => CKR_FUNCTION_FAILED,
            Error::FunctionNotSupported(_) => CKR_FUNCTION_NOT_SUPPORTED,
            Error::FunctionNotParallel => CKR_FUNCTION_NOT_PARALLEL,
            Error::GeneralError(_) => CKR_GENERAL_ERROR,
            Error::KeyFunctionNotPermitted => CKR_KEY_FUNCTION_NOT_PERMITTED,
            Error::KeyHandleInvalid => CKR_KEY_HANDLE_INVALID,
            Error::KeyTypeInconsistent => CKR_KEY_TYPE_INCONSISTENT,
            Error::MechanismInvalid(_) => CKR_MECHANISM_INVALID,
            Error::MechanismParamInvalid => CKR_MECHANISM_PARAM_INVALID,
            Error::ObjectHandleInvalid => CKR_OBJECT_HANDLE_INVALID,
            Error::OperationActive => CKR_OPERATION_ACTIVE,
            Error::OperationNotInitialized => CKR_OPERATION_NOT_INITIALIZED,
            Error::PinIncorrect => CKR_PIN_INCORRECT,
            Error::PinLenRange => CKR_PIN_LEN_RANGE,
            Error::RandomSeedNotSupported => CKR_RANDOM_SEED_NOT_SUPPORTED,
            Error::SessionCount => CKR_SESSION_COUNT,
            Error::SessionHandleInvalid => CKR_SESSION_HANDLE_INVALID,
            Error::SessionParallelNotSupported => CKR_SESSION_PARALLEL_NOT_SUPPORTED,
            Error::SessionReadOnly => CKR_SESSION_READ_ONLY,
            Error::SessionReadOnlyExists => CKR_SESSION_READ_ONLY_EXISTS,
            Error::SignatureInvalid => CKR_SIGNATURE_INVALID,
            Error::SignatureLenRange => CKR_SIGNATURE_LEN_RANGE,
            Error::SlotIdInvalid => CKR_SLOT_ID_INVALID,
            Error::TemplateIncomplete(_) => CKR_TEMPLATE_INCOMPLETE,
            Error::TemplateInconsistent(_) => CKR_TEMPLATE_INCONSISTENT,
            Error::TokenNotPresent => CKR_TOKEN_NOT_PRESENT,
            Error::UserAlreadyLoggedIn => CKR_USER_ALREADY_LOGGED_IN,
            Error::UserNotLoggedIn => CKR_USER_NOT_LOGGED_IN,
            Error::UserTypeInvalid => CKR_USER_TYPE_INVALID,
        }
    }

    /// The output length the caller needs, for errors that report one.
    pub fn required_len(&self) -> Option<usize> {
        match self {
            Error::BufferTooSmall { required } => Some(*required),
            _ => None,
        }
    }

    /// True for failures worth a warning in the log; the rest (bad handles,
    /// short buffers, unknown attributes) are part of normal PKCS#11 traffic.
    pub fn is_serious(&self) -> bool {
        matches!(
            self,
            Error::DeviceError(_) | Error::GeneralError(_) | Error::CantLock
        )
    }
}

impl From<zymkey::Error> for Error {
    fn from(e: zymkey::Error) -> Error {
        match e {
            zymkey::Error::Unsupported { function } => Error::FunctionNotSupported(function),
            other => Error::DeviceError(other.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_too_small_carries_the_length() {
        let e = Error::BufferTooSmall { required: 64 };
        assert_eq!(e.rv(), CKR_BUFFER_TOO_SMALL);
        assert_eq!(e.required_len(), Some(64));
        assert_eq!(Error::SignatureInvalid.required_len(), None);
    }

    #[test]
    fn device_failures_map_to_device_error() {
        let e: Error = zymkey::Error::Device {
            function: "zkGenECDSASigFromDigest",
            errno: 5,
        }
        .into();
        assert_eq!(e.rv(), CKR_DEVICE_ERROR);
        let e: Error = zymkey::Error::Unsupported {
            function: "zkGenKeyPair",
        }
        .into();
        assert_eq!(e.rv(), CKR_FUNCTION_NOT_SUPPORTED);
    }
}
