//! `aws.json` in the operator's folder: the names and identifiers the AWS commands created, so
//! later commands (and re-runs) find them without asking for them again.
//!
//! It is a memory, not the truth: every command checks the service. It is written atomically.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::fsutil;

/// Names the AWS commands give what they create, unless told otherwise (aws.json then
/// remembers the names chosen).
pub const DEFAULT_ROLE_NAME: &str = "zkiot-device";
pub const DEFAULT_ROLE_ALIAS: &str = "zkiot-device-alias";
pub const DEFAULT_POLICY_NAME: &str = "zkiot-device-policy";
/// Lifetime of the devices' temporary credentials, in seconds, unless told otherwise: AWS's
/// least, so that credentials issued to a device before it was silenced stop within 15 minutes
/// even where the role's Deny (see `deny.rs`) does not apply.
pub const DEFAULT_CREDENTIAL_DURATION: i32 = 900;

/// File name of the state, in the operator's folder.
pub const STATE_FILE: &str = "aws.json";

/// What the AWS commands remember between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct AwsState {
    /// The endpoint override the identifiers below belong to (`None`: AWS itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// The region the identifiers below belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificate_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_alias_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_duration_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_arn: Option<String>,
    /// `<prefix>.credentials.iot.<region>.amazonaws.com`, as DescribeEndpoint first gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_endpoint: Option<String>,
}

impl AwsState {
    /// Path of the state file under `home`.
    pub fn path(home: &Path) -> PathBuf {
        home.join(STATE_FILE)
    }

    /// Reads the state for this endpoint and region. State recorded for another endpoint or
    /// region is not reused (its identifiers mean nothing here): an empty state comes back, and
    /// saving replaces it.
    pub fn load(home: &Path, endpoint_url: Option<&str>, region: &str) -> Result<Self> {
        let path = Self::path(home);
        let fresh = Self {
            endpoint_url: endpoint_url.map(str::to_string),
            region: Some(region.to_string()),
            ..Self::default()
        };
        if !path.exists() {
            return Ok(fresh);
        }
        let bytes = fsutil::read(&path)?;
        let state: Self = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not valid zkiot AWS state", path.display()))?;
        if state.endpoint_url.as_deref() != endpoint_url || state.region.as_deref() != Some(region)
        {
            return Ok(fresh);
        }
        Ok(state)
    }

    /// Writes the state atomically.
    pub fn save(&self, home: &Path) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(self)?;
        text.push(b'\n');
        fsutil::write_atomic(&Self::path(home), &text, fsutil::PUBLIC_MODE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_other_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = AwsState::load(dir.path(), Some("http://x"), "us-east-1").unwrap();
        state.role_alias = Some("a".into());
        state.save(dir.path()).unwrap();
        let again = AwsState::load(dir.path(), Some("http://x"), "us-east-1").unwrap();
        assert_eq!(again, state);
        let other = AwsState::load(dir.path(), None, "us-east-1").unwrap();
        assert_eq!(other.role_alias, None);
        let other_region = AwsState::load(dir.path(), Some("http://x"), "eu-west-1").unwrap();
        assert_eq!(other_region.role_alias, None);
    }
}
