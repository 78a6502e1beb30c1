//! When each certificate expires: a fact that never changes, so once read it is kept on this
//! machine (`aws/certificate-expiry.json` in the operator's folder) and never asked of AWS IoT
//! again. It comes from the certificates the operator's folder holds (`devices/<thing>/*.crt`,
//! which this CA issued), else from AWS IoT (DescribeCertificate). A missing or damaged file
//! only costs calls: two operators on two machines read the same facts from AWS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use openssl::x509::X509;

use super::days::unix_time;
use super::thing::describe_certificate;
use super::Aws;
use crate::fsutil;
use crate::x509::fingerprint;

/// The file, under the operator's folder.
const FILE: &str = "aws/certificate-expiry.json";

/// Certificate id → its notAfter (Unix time).
pub(crate) struct ExpiryCache {
    path: PathBuf,
    known: BTreeMap<String, i64>,
    changed: bool,
}

impl ExpiryCache {
    /// What this machine knows: the file, and the certificates in `home/devices/`.
    pub(crate) fn load(home: &Path) -> Result<Self> {
        let path = home.join(FILE);
        let mut known: BTreeMap<String, i64> = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let stored = known.len();
        if let Ok(things) = std::fs::read_dir(home.join("devices")) {
            for thing in things.flatten() {
                let Ok(files) = std::fs::read_dir(thing.path()) else {
                    continue;
                };
                for file in files.flatten() {
                    let path = file.path();
                    if path.extension().map_or(true, |e| e != "crt") {
                        continue;
                    }
                    let Some(cert) = std::fs::read(&path)
                        .ok()
                        .and_then(|pem| X509::from_pem(&pem).ok())
                    else {
                        continue;
                    };
                    if let (Ok(id), Ok(not_after)) =
                        (fingerprint(&cert), unix_time(cert.not_after()))
                    {
                        known.insert(id, not_after);
                    }
                }
            }
        }
        let changed = known.len() != stored;
        Ok(Self {
            path,
            known,
            changed,
        })
    }

    pub(crate) fn get(&self, id: &str) -> Option<i64> {
        self.known.get(id).copied()
    }

    pub(crate) fn insert(&mut self, id: &str, not_after: i64) {
        if self.known.insert(id.to_string(), not_after) != Some(not_after) {
            self.changed = true;
        }
    }

    /// Reads from AWS IoT (DescribeCertificate, `concurrency` at a time) the expiry of those of
    /// `ids` this machine does not know. A certificate AWS IoT does not hold stays unknown.
    pub(crate) async fn fetch_missing(
        &mut self,
        aws: &Aws,
        ids: impl IntoIterator<Item = String>,
        concurrency: u16,
    ) -> Result<()> {
        let missing: Vec<String> = ids
            .into_iter()
            .filter(|id| self.get(id).is_none())
            .collect();
        let mut waiting = missing.into_iter();
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.len() < usize::from(concurrency.max(1)) {
                let Some(id) = waiting.next() else { break };
                let aws = aws.clone();
                running.spawn(async move {
                    let not_after = match describe_certificate(&aws, &id).await? {
                        Some(found) => {
                            let cert = found
                                .der
                                .as_deref()
                                .and_then(|der| X509::from_der(der).ok())
                                .with_context(|| {
                                    format!("AWS IoT holds certificate {id} without a readable PEM")
                                })?;
                            Some(unix_time(cert.not_after())?)
                        }
                        None => None,
                    };
                    anyhow::Ok((id, not_after))
                });
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            if let (id, Some(not_after)) = done?? {
                self.insert(&id, not_after);
            }
        }
        Ok(())
    }

    /// Writes what was learnt, if anything.
    pub(crate) fn save(&self) -> Result<()> {
        if !self.changed {
            return Ok(());
        }
        let mut text = serde_json::to_vec(&self.known)?;
        text.push(b'\n');
        fsutil::write_atomic(&self.path, &text, fsutil::PUBLIC_MODE)
    }
}
