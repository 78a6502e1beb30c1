//! `zkiot fleet`: provisioning many devices at once.
//!
//! `fleet provision` takes a folder of CSRs (one per device, CN = thing name), signs each with
//! the CA and registers it with AWS IoT, several at a time. A record (JSON lines, each flushed to
//! disk before the next step) says what was done per device. A run that is cut short (crash,
//! kill, network loss) is finished by running the same command again: certificates already issued
//! are reused rather than issued again, and registration converges on what AWS already holds, so
//! nothing is duplicated.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use openssl::hash::MessageDigest;
use openssl::x509::X509;
use serde::{Deserialize, Serialize};

use super::batch::{self, Named, Progress};
use super::cli::ProvisionArgs;
use super::record::{now, Record};
use super::{check_device_certificate, register_prepared, Aws, RegistrationPrerequisites};
use crate::ca::{CertificateAuthority, SignOptions};
use crate::thing_name::validate_thing_name;
use crate::x509::{csr_common_name, fingerprint, hex, parse_csr};
use crate::{fsutil, GlobalOpts};

/// One line of the record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecordEntry {
    pub thing: String,
    /// `signed` (certificate issued and written) or `registered` (AWS IoT holds it, attached).
    pub step: String,
    /// SHA-256 of the CSR file.
    pub csr_sha256: String,
    pub certificate_id: String,
    /// What this step created; empty when it found everything in place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    /// Seconds since the Unix epoch.
    pub time: u64,
}

/// One device to provision.
struct Job {
    thing: String,
    csr_path: PathBuf,
    csr: Vec<u8>,
    csr_sha256: String,
}

impl Named for Job {
    fn name(&self) -> &str {
        &self.thing
    }
}

/// How one device ended.
enum Done {
    /// Something was created this run.
    Provisioned,
    /// Everything already existed.
    AlreadyDone,
}

struct Shared {
    aws: Aws,
    ca: CertificateAuthority,
    prereqs: RegistrationPrerequisites,
    record: Record,
    devices_dir: PathBuf,
    sign: SignOptions,
    verbose: bool,
    /// (thing, certificate id) pairs the record already holds a `signed` entry for.
    recorded_signed: HashSet<(String, String)>,
}

pub(crate) async fn provision(args: &ProvisionArgs, global: &GlobalOpts) -> Result<()> {
    let jobs = read_csr_dir(&args.csr_dir)?;
    let ca = CertificateAuthority::open(global)?;
    let aws = Aws::connect(&args.aws).await?;
    let prereqs = RegistrationPrerequisites::check(&aws, global).await?;
    let record_path = args
        .record
        .clone()
        .unwrap_or_else(|| global.home.join("fleet").join("provision.jsonl"));
    let (record, previous) = Record::open::<RecordEntry>(&record_path)?;
    let resumed = previous
        .iter()
        .map(|e| e.thing.as_str())
        .collect::<HashSet<_>>()
        .len();

    let total = jobs.len();
    println!(
        "fleet: {total} CSRs in {}, {} at a time, record {}{}",
        args.csr_dir.display(),
        args.concurrency,
        record_path.display(),
        if resumed > 0 {
            format!(" (resuming: {resumed} devices seen before)")
        } else {
            String::new()
        }
    );
    let shared = Arc::new(Shared {
        aws,
        ca,
        prereqs,
        record,
        devices_dir: global.home.join("devices"),
        sign: SignOptions {
            days: args.days,
            ..SignOptions::default()
        },
        verbose: global.verbose,
        recorded_signed: previous
            .iter()
            .filter(|e| e.step == "signed")
            .map(|e| (e.thing.clone(), e.certificate_id.clone()))
            .collect(),
    });

    let tally = batch::for_each_thing(jobs, args.concurrency, |job, out| {
        let shared = Arc::clone(&shared);
        async move { provision_one(&shared, &job, &out).await }
    })
    .await;
    let provisioned = tally
        .done
        .values()
        .filter(|done| matches!(done, Done::Provisioned))
        .count();
    println!(
        "fleet: {total} devices in {:.1} s: {provisioned} provisioned, {} already done, {} failed{}",
        tally.elapsed.as_secs_f64(),
        tally.done.len() - provisioned,
        tally.failed.len(),
        tally.not_attempted_note()
    );
    tally.finish("devices not provisioned")?;
    println!(
        "next: deliver each devices/<thing>/device.crt to its device (`zkiot device install-cert`)"
    );
    Ok(())
}

/// Reads and checks the CSR folder up front, so a bad folder changes nothing.
fn read_csr_dir(dir: &Path) -> Result<Vec<Job>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read folder {}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csr") && p.is_file())
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!("no *.csr files in {}", dir.display());
    }
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    let mut jobs = Vec::with_capacity(paths.len());
    for path in paths {
        let csr = fsutil::read(&path)?;
        let parsed = parse_csr(&csr).with_context(|| path.display().to_string())?;
        let thing = csr_common_name(&parsed).with_context(|| path.display().to_string())?;
        validate_thing_name(&thing).with_context(|| path.display().to_string())?;
        if let Some(other) = seen.insert(thing.clone(), path.clone()) {
            bail!(
                "{} and {} both ask for thing {thing}; keep one",
                other.display(),
                path.display()
            );
        }
        let digest = openssl::hash::hash(MessageDigest::sha256(), &csr)?;
        jobs.push(Job {
            thing,
            csr_path: path,
            csr_sha256: hex(&digest),
            csr,
        });
    }
    Ok(jobs)
}

async fn provision_one(shared: &Shared, job: &Job, out: &Progress) -> Result<Done> {
    let (cert, signed_now) = certificate_for(shared, job)?;
    let certificate_id = fingerprint(&cert)?;
    // A run killed between writing the certificate and recording it left it unrecorded.
    let unrecorded = !shared
        .recorded_signed
        .contains(&(job.thing.clone(), certificate_id.clone()));
    if signed_now || unrecorded {
        shared.record.append(&RecordEntry {
            thing: job.thing.clone(),
            step: "signed".into(),
            csr_sha256: job.csr_sha256.clone(),
            certificate_id: certificate_id.clone(),
            actions: vec![if signed_now {
                "issued certificate".into()
            } else {
                "found certificate issued earlier".into()
            }],
            time: now(),
        })?;
    }
    let outcome = register_prepared(&shared.aws, &shared.prereqs, &cert, &job.thing).await?;
    shared.record.append(&RecordEntry {
        thing: job.thing.clone(),
        step: "registered".into(),
        csr_sha256: job.csr_sha256.clone(),
        certificate_id,
        actions: outcome.actions.clone(),
        time: now(),
    })?;
    if shared.verbose {
        let what = if outcome.actions.is_empty() && !signed_now {
            "already done".to_string()
        } else {
            let mut all = Vec::new();
            if signed_now {
                all.push("issued certificate".to_string());
            }
            all.extend(outcome.actions.iter().cloned());
            all.join(", ")
        };
        out.println(&format!("{}: {what}", job.thing));
    }
    if signed_now || !outcome.actions.is_empty() {
        Ok(Done::Provisioned)
    } else {
        Ok(Done::AlreadyDone)
    }
}

/// The device's certificate: the one already issued for this CSR's key if it is still good
/// (so a re-run never issues a second one), else a new one, written to disk before it is used.
fn certificate_for(shared: &Shared, job: &Job) -> Result<(X509, bool)> {
    let path = shared.devices_dir.join(&job.thing).join("device.crt");
    let csr = parse_csr(&job.csr)?;
    let csr_key = csr.public_key()?;
    if path.exists() {
        let existing = X509::from_pem(&fsutil::read(&path)?)
            .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
        let same_key = existing.public_key()?.public_eq(&csr_key);
        if same_key
            && check_device_certificate(&existing, shared.ca.certificate())
                .is_ok_and(|cn| cn == job.thing)
        {
            return Ok((existing, false));
        }
    }
    let cert = shared
        .ca
        .sign_csr(&job.csr, &shared.sign)
        .with_context(|| job.csr_path.display().to_string())?;
    fsutil::write_atomic(&path, &cert.to_pem()?, fsutil::PUBLIC_MODE)?;
    Ok((cert, true))
}
