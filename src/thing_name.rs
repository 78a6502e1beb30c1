//! AWS IoT thing names.

use anyhow::{bail, Result};

/// Longest thing name AWS IoT accepts.
pub const MAX_THING_NAME_LEN: usize = 128;

/// Checks `name` against AWS IoT's thing-name rule `[a-zA-Z0-9:_-]{1,128}`.
pub fn validate_thing_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_THING_NAME_LEN {
        bail!(
            "thing name {name:?} must be 1 to {MAX_THING_NAME_LEN} characters long, not {}",
            name.len()
        );
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-')))
    {
        bail!("thing name {name:?} contains {c:?}; AWS IoT allows only letters, digits, ':', '_' and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        assert!(validate_thing_name("zk-0123abcd:x_y").is_ok());
        assert!(validate_thing_name("").is_err());
        assert!(validate_thing_name("a b").is_err());
        assert!(validate_thing_name("a/b").is_err());
        assert!(validate_thing_name(&"a".repeat(128)).is_ok());
        assert!(validate_thing_name(&"a".repeat(129)).is_err());
    }
}
