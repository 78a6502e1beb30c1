//! `zkiot fleet renew`: new certificates for the same device keys before the old ones expire,
//! and the old ones retired once each device has switched, so no device is ever without a
//! valid certificate.
//!
//! Which Things to look at comes from the pages of ListThings (250 Things a call), or from
//! fleet indexing (`index.rs`), and the attributes the operator's commands keep on each Thing
//! (`attributes.rs`): one whose newest certificate expires within `--within` (to the day), whose
//! renewal waits for its device, whose old certificates' grace period may have passed, whose
//! device posted a CSR for a fresh key, or that has no such record yet. The others cost no call.
//! So a daily run makes calls for the devices due, not for the fleet.
//!
//! Per Thing looked at, from what AWS IoT holds (the record only remembers when a certificate
//! was deactivated, for the grace period; the Thing's `zkiot_renewal` says the day too):
//! 1. Our certificates are the Thing's principals that our CA issued. The device's current one
//!    is the one its `zkiot_certificate` attribute names (the device writes it when it
//!    switches), else the newest ACTIVE one.
//! 2. If the device posted a CSR for a fresh key, vouched for by its current key (`rekey.rs`),
//!    that CSR is signed (kept in `devices/<thing>/rekey.crt`). Otherwise, if the newest
//!    ACTIVE certificate expires within `--within`, a new one is issued for its public key and
//!    subject. Either is registered like a new device's certificate. It is written to
//!    `devices/<thing>/renewal.crt` before it is registered, so a run cut short reuses it.
//! 3. Once the device uses a newer certificate than some of ours, those are deactivated; once
//!    inactive for `--grace`, revoked and detached from the Thing (so no later run, `status` or
//!    `silence` reads them again). The operator's `devices/<thing>/device.crt` then becomes the
//!    certificate the device uses.
//! 4. A device that has not switched while the certificates it may hold have all expired is
//!    *stranded*: it can no longer reach AWS to pick up its renewal, and says so on every run
//!    until its new certificate is delivered to it by hand.
//! 5. The Thing's attributes say where it now stands, when that changed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use aws_sdk_iot::types::{AttributePayload, CertificateStatus};
use openssl::asn1::Asn1Time;
use openssl::x509::X509;
use serde::{Deserialize, Serialize};

use super::attributes::{
    look, retiring, retiring_since, EXPIRES_ATTRIBUTE, RENEWAL_ATTRIBUTE, THING_TYPE, WAITING,
};
use super::batch::{self, Progress};
use super::cli::RenewArgs;
use super::client::is_not_found;
use super::days::{day, unix_now, unix_time};
use super::record::{now, Record};
use super::silence::{issued_before, set_certificate_status, StatusChange};
use super::thing::{describe_certificate, list_thing_principals, DEVICE_CERT_FILE};
use super::{index, inventory};
use super::{register_prepared, Aws, RegistrationPrerequisites};
use crate::ca::{CertificateAuthority, SignOptions};
use crate::device::renewal::CURRENT_CERTIFICATE_ATTRIBUTE;
use crate::x509::fingerprint;
use crate::{fsutil, GlobalOpts};

/// Where a renewal certificate is kept before and after it is registered.
const RENEWAL_FILE: &str = "renewal.crt";

/// One line of the renewal record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RenewEntry {
    pub thing: String,
    /// `renewed` (new certificate registered), `deactivated`, `revoked` or `detached` (an
    /// old one, from its Thing).
    pub step: String,
    pub certificate_id: String,
    /// Seconds since the Unix epoch.
    pub time: u64,
}

/// What happened to one Thing.
#[derive(Debug, Default)]
struct Outcome {
    renewed: bool,
    deactivated: usize,
    revoked: usize,
    detached: usize,
    /// Our certificate expiring soon while a renewal waits for the device to switch.
    waiting: bool,
    /// Every certificate the device may hold has expired before it switched.
    stranded: bool,
}

struct Shared {
    aws: Aws,
    ca: CertificateAuthority,
    prereqs: RegistrationPrerequisites,
    record: Record,
    devices_dir: PathBuf,
    sign: SignOptions,
    within_seconds: i64,
    grace_seconds: u64,
    /// When each certificate was first recorded as deactivated.
    deactivated_at: HashMap<String, u64>,
    verbose: bool,
}

/// One of our certificates on a Thing.
struct Ours {
    id: String,
    arn: String,
    status: String,
    cert: X509,
}

pub(crate) async fn renew(args: &RenewArgs, global: &GlobalOpts) -> Result<()> {
    let ca = CertificateAuthority::open(global)?;
    let aws = Aws::connect(&args.aws).await?;
    let prereqs = RegistrationPrerequisites::check(&aws, global).await?;
    let record_path = args
        .record
        .clone()
        .unwrap_or_else(|| global.home.join("fleet").join("renew.jsonl"));
    let (record, previous) = Record::open::<RenewEntry>(&record_path)?;
    let mut deactivated_at = HashMap::new();
    for entry in previous.iter().filter(|e| e.step == "deactivated") {
        deactivated_at
            .entry(entry.certificate_id.clone())
            .or_insert(entry.time);
    }
    let now = unix_now();
    let within = i64::try_from(args.within.as_secs()).unwrap_or(i64::MAX);
    let grace = i64::try_from(args.grace.as_secs()).unwrap_or(i64::MAX);
    // The Things: through fleet indexing when the account has it and this machine walked the
    // fleet lately, else every Thing's page.
    let mut walks = index::WalkRecord::load(&global.home, &aws);
    let indexed = !args.walk && walks.recent(now) && index::thing_indexing_on(&aws).await?;
    let listed = if indexed {
        let found = index::search(&aws, &index::queries(now, within, grace)).await?;
        println!(
            "fleet renew: {} things found through fleet indexing (every thing's page read {} ago)",
            found.len(),
            walks
                .last()
                .map(|t| format!("{} hours", (now - t) / 3600))
                .unwrap_or_default()
        );
        found
    } else {
        let listed = inventory::things(&aws).await?;
        walks.walked(now)?;
        listed
    };
    let mut things: Vec<String> = listed
        .iter()
        .filter(|t| look(&t.attributes, now, within, grace).is_some())
        .map(|t| t.name.clone())
        .collect();
    things.sort();
    let unchanged = listed.len() - things.len();
    println!(
        "fleet renew: {} things, {} to look at one by one, renewing certificates that expire within {} days, {} at a time, record {}",
        listed.len(),
        things.len(),
        args.within.as_secs() / 86_400,
        args.concurrency,
        record_path.display()
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
        within_seconds: i64::try_from(args.within.as_secs()).unwrap_or(i64::MAX),
        grace_seconds: args.grace.as_secs(),
        deactivated_at,
        verbose: global.verbose,
    });

    let tally = batch::for_each_thing(things, args.concurrency, |thing, out| {
        let shared = Arc::clone(&shared);
        async move { renew_thing(&shared, &thing, &out).await }
    })
    .await;
    let outcomes = || tally.done.values();
    let renewed = outcomes().filter(|o| o.renewed).count();
    let waiting = outcomes().filter(|o| o.waiting).count();
    let stranded = outcomes().filter(|o| o.stranded).count();
    let deactivated: usize = outcomes().map(|o| o.deactivated).sum();
    let revoked: usize = outcomes().map(|o| o.revoked).sum();
    let detached: usize = outcomes().map(|o| o.detached).sum();
    println!(
        "fleet renew: {} things in {:.1} s, {} looked at one by one: {renewed} renewed, {waiting} waiting for the device to switch, {stranded} stranded, {deactivated} old certificates deactivated, {revoked} revoked, {detached} detached, {} failed{}",
        tally.total() + unchanged,
        tally.elapsed.as_secs_f64(),
        tally.total(),
        tally.failed.len(),
        tally.not_attempted_note()
    );
    tally.finish("things not handled")
}

/// Seconds from now until `time` (negative once past).
fn seconds_until(time: &openssl::asn1::Asn1TimeRef) -> Result<i64> {
    let diff = Asn1Time::days_from_now(0)?.diff(time)?;
    Ok(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

async fn renew_thing(shared: &Shared, thing: &str, out: &Progress) -> Result<Outcome> {
    let aws = &shared.aws;
    let described = aws
        .iot
        .describe_thing()
        .thing_name(thing)
        .send()
        .await
        .map_err(|e| aws.error("DescribeThing", e))?;
    let mut attributes = described.attributes().cloned().unwrap_or_default();
    let mut untyped = described.thing_type_name().is_none();
    let recorded_current = attributes.get(CURRENT_CERTIFICATE_ATTRIBUTE).cloned();

    let ca_cert = shared.ca.certificate();
    let mut ours = Vec::new();
    for arn in list_thing_principals(aws, thing).await? {
        let Some(id) = arn.split_once(":cert/").map(|(_, id)| id.to_string()) else {
            continue;
        };
        let Some(found) = describe_certificate(aws, &id).await? else {
            continue;
        };
        let Some(cert) = found.der.as_deref().and_then(|d| X509::from_der(d).ok()) else {
            continue;
        };
        let issued_by_us = cert.verify(&*ca_cert.public_key()?).unwrap_or(false)
            && cert.issuer_name().to_der()? == ca_cert.subject_name().to_der()?;
        if issued_by_us {
            ours.push(Ours {
                id,
                arn,
                status: found.status,
                cert,
            });
        }
    }
    let mut outcome = Outcome::default();
    if ours.is_empty() {
        return Ok(outcome);
    }
    let active = CertificateStatus::Active.as_str();
    let newest_active = ours.iter().filter(|c| c.status == active).max_by(|a, b| {
        a.cert
            .not_after()
            .compare(b.cert.not_after())
            .unwrap_or(std::cmp::Ordering::Equal)
    });

    // 2. Renew: for the fresh key the device asked for (rekey.rs), else for the same key when
    // the newest active certificate expires soon.
    let active_keys = ours
        .iter()
        .filter(|c| c.status == active)
        .map(|c| c.cert.public_key())
        .collect::<Result<Vec<_>, _>>()?;
    let to_issue = match super::rekey::posted(described.attributes(), &active_keys)? {
        Some(request) if active_keys.iter().any(|k| k.public_eq(&request.key)) => None,
        Some(request) => Some(super::rekey::certificate(
            &shared.ca,
            &shared.sign,
            &shared.devices_dir.join(thing),
            thing,
            &request,
            shared.within_seconds,
        )?),
        None => match newest_active {
            Some(newest) if seconds_until(newest.cert.not_after())? <= shared.within_seconds => {
                Some(renewal_for(shared, thing, &newest.cert)?)
            }
            _ => None,
        },
    };
    let mut newest_expiry = None;
    if let Some(cert) = to_issue {
        // The Thing says a renewal waits before the certificate exists in AWS IoT: a run cut
        // short after registering it (which records the new expiry) still looks at the Thing
        // next time, instead of taking it for one renewed and switched.
        let expires = unix_time(cert.not_after())?;
        record_on_thing(
            shared,
            thing,
            &mut attributes,
            &mut untyped,
            Some(expires),
            WAITING.to_string(),
        )
        .await?;
        let registered = register_prepared(aws, &shared.prereqs, &cert, thing).await?;
        newest_expiry = Some(unix_time(cert.not_after())?);
        shared.record.append(&RenewEntry {
            thing: thing.to_string(),
            step: "renewed".into(),
            certificate_id: registered.certificate_id.clone(),
            time: now(),
        })?;
        outcome.renewed = true;
        if shared.verbose {
            out.println(&format!(
                "{thing}: renewed as certificate {}",
                registered.certificate_id
            ));
        }
    }

    // The newest of our certificates the Thing keeps, for its record.
    for cert in ours
        .iter()
        .filter(|c| c.status != CertificateStatus::Revoked.as_str())
    {
        let expires = unix_time(cert.cert.not_after())?;
        newest_expiry = Some(newest_expiry.map_or(expires, |e: i64| e.max(expires)));
    }

    // 3. Retire what is older than the certificate the device recorded switching to; the
    // operator's copy of the device's certificate follows it.
    let recorded = recorded_current
        .as_deref()
        .and_then(|id| ours.iter().find(|c| c.id == id));
    let older: Vec<&Ours> = match recorded {
        Some(current) => {
            keep_device_certificate(shared, thing, &current.cert, DEVICE_CERT_FILE, out)?;
            ours.iter()
                .filter(|c| c.id != current.id && issued_before(&c.cert, &current.cert))
                .collect()
        }
        None => Vec::new(),
    };

    // A newer certificate the device has not switched to yet: it keeps what it has (the one
    // it recorded, else one of those older than the newest). Waiting, or stranded once every
    // certificate it may hold has expired.
    if let Some(newest) = newest_active {
        let held: Vec<&Ours> = match recorded {
            Some(current) if issued_before(&current.cert, &newest.cert) => vec![current],
            Some(_) => Vec::new(),
            None => ours
                .iter()
                .filter(|c| c.id != newest.id && issued_before(&c.cert, &newest.cert))
                .collect(),
        };
        let expired = |c: &Ours| seconds_until(c.cert.not_after()).is_ok_and(|s| s < 0);
        if !held.is_empty() && held.iter().all(|c| expired(c)) {
            outcome.stranded = true;
            let last = held
                .iter()
                .max_by(|a, b| {
                    a.cert
                        .not_after()
                        .compare(b.cert.not_after())
                        .unwrap_or(std::cmp::Ordering::Equal)
                })
                .map(|c| (c.id.clone(), c.cert.not_after().to_string()))
                .unwrap_or_default();
            keep_device_certificate(shared, thing, &newest.cert, RENEWAL_FILE, out)?;
            out.println(&format!(
                "{thing}: stranded: its certificate {} expired ({}) before the device switched to \
                 {}, so it can no longer reach AWS IoT to pick that one up; deliver \
                 devices/{thing}/{RENEWAL_FILE} to the device by hand (`zkiot device install-cert \
                 --cert {RENEWAL_FILE} ...`: same key, no new CSR needed)",
                last.0, last.1, newest.id,
            ));
        } else if !held.is_empty() {
            outcome.waiting = true;
        }
    }
    // Since when the older certificates left INACTIVE by this run have been: the record's time,
    // else the day the Thing says (another operator's run, or a lost record).
    let attribute_since = attributes
        .get(RENEWAL_ATTRIBUTE)
        .and_then(|v| retiring_since(v))
        .and_then(|t| u64::try_from(t).ok());
    let mut inactive_since: Option<u64> = None;
    let mut keep_inactive =
        |at: u64| inactive_since = Some(inactive_since.map_or(at, |s| s.min(at)));
    for old in older {
        if old.status == active {
            let (_, changed) = set_certificate_status(aws, &old.id, StatusChange::Silence).await?;
            if changed {
                shared.record.append(&RenewEntry {
                    thing: thing.to_string(),
                    step: "deactivated".into(),
                    certificate_id: old.id.clone(),
                    time: now(),
                })?;
                outcome.deactivated += 1;
            }
            keep_inactive(now());
        } else if old.status == CertificateStatus::Inactive.as_str() {
            let recorded = shared.deactivated_at.get(&old.id).copied();
            match recorded.or(attribute_since) {
                Some(at) if now().saturating_sub(at) >= shared.grace_seconds => {
                    let (_, changed) =
                        set_certificate_status(aws, &old.id, StatusChange::Revoke).await?;
                    if changed {
                        shared.record.append(&RenewEntry {
                            thing: thing.to_string(),
                            step: "revoked".into(),
                            certificate_id: old.id.clone(),
                            time: now(),
                        })?;
                        outcome.revoked += 1;
                    }
                    detach(shared, thing, old).await?;
                    outcome.detached += 1;
                }
                Some(at) => {
                    keep_inactive(at);
                    if recorded.is_none() {
                        // Known from the Thing: the record learns it.
                        shared.record.append(&RenewEntry {
                            thing: thing.to_string(),
                            step: "deactivated".into(),
                            certificate_id: old.id.clone(),
                            time: at,
                        })?;
                    }
                }
                // Deactivated by someone else: the grace period starts now.
                None => {
                    let at = now();
                    keep_inactive(at);
                    shared.record.append(&RenewEntry {
                        thing: thing.to_string(),
                        step: "deactivated".into(),
                        certificate_id: old.id.clone(),
                        time: at,
                    })?
                }
            }
        } else if old.status == CertificateStatus::Revoked.as_str() {
            // Revoked by an earlier run (or by hand) and left attached: retire it for good.
            detach(shared, thing, old).await?;
            outcome.detached += 1;
        }
    }

    // 5. Where the Thing now stands.
    let renewal = if outcome.renewed || outcome.waiting || outcome.stranded {
        WAITING.to_string()
    } else if let Some(since) = inactive_since {
        retiring(i64::try_from(since).unwrap_or(i64::MAX))
    } else {
        String::new()
    };
    record_on_thing(
        shared,
        thing,
        &mut attributes,
        &mut untyped,
        newest_expiry,
        renewal,
    )
    .await?;
    Ok(outcome)
}

/// Writes the Thing's `zkiot_expires` and `zkiot_renewal` (empty: removed) if they differ from
/// `attributes`, with the Thing type when it has none (see `attributes.rs`), and keeps
/// `attributes` and `untyped` up to date with what was written.
async fn record_on_thing(
    shared: &Shared,
    thing: &str,
    attributes: &mut HashMap<String, String>,
    untyped: &mut bool,
    expires: Option<i64>,
    renewal: String,
) -> Result<()> {
    let mut changes = HashMap::new();
    if let Some(expires) = expires.map(day) {
        if attributes.get(EXPIRES_ATTRIBUTE) != Some(&expires) {
            changes.insert(EXPIRES_ATTRIBUTE.to_string(), expires);
        }
    }
    if attributes.get(RENEWAL_ATTRIBUTE).map_or("", String::as_str) != renewal {
        changes.insert(RENEWAL_ATTRIBUTE.to_string(), renewal);
    }
    if changes.is_empty() {
        return Ok(());
    }
    let aws = &shared.aws;
    aws.iot
        .update_thing()
        .thing_name(thing)
        .set_thing_type_name((*untyped).then(|| THING_TYPE.to_string()))
        .attribute_payload(
            AttributePayload::builder()
                .set_attributes(Some(changes.clone()))
                .merge(true)
                .build(),
        )
        .send()
        .await
        .map_err(|e| aws.error("UpdateThing", e))?;
    *untyped = false;
    for (name, value) in changes {
        if value.is_empty() {
            attributes.remove(&name);
        } else {
            attributes.insert(name, value);
        }
    }
    Ok(())
}

/// Detaches a retired certificate from its Thing (it stays registered, REVOKED, so AWS IoT
/// still refuses it), so later runs no longer read it.
async fn detach(shared: &Shared, thing: &str, old: &Ours) -> Result<()> {
    let aws = &shared.aws;
    match aws
        .iot
        .detach_thing_principal()
        .thing_name(thing)
        .principal(&old.arn)
        .send()
        .await
    {
        Ok(_) => {}
        // Detached meanwhile.
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(aws.error("DetachThingPrincipal", e)),
    }
    shared.record.append(&RenewEntry {
        thing: thing.to_string(),
        step: "detached".into(),
        certificate_id: old.id.clone(),
        time: now(),
    })
}

/// Makes `devices/<thing>/<file>` hold `cert` (written atomically when it does not); returns
/// its path.
fn keep_device_certificate(
    shared: &Shared,
    thing: &str,
    cert: &X509,
    file: &str,
    out: &Progress,
) -> Result<PathBuf> {
    let path = shared.devices_dir.join(thing).join(file);
    let held = path
        .exists()
        .then(|| fsutil::read(&path).ok())
        .flatten()
        .and_then(|pem| X509::from_pem(&pem).ok())
        .and_then(|c| c.to_der().ok());
    if held.as_deref() != Some(cert.to_der()?.as_slice()) {
        fsutil::write_atomic(&path, &cert.to_pem()?, fsutil::PUBLIC_MODE)?;
        if shared.verbose {
            out.println(&format!(
                "{thing}: {} is now the certificate the device uses",
                path.display()
            ));
        }
    }
    Ok(path)
}

/// The renewal certificate for `current`: the one a cut-short run already issued, if it is for
/// the same key and subject, from this CA and valid beyond the renewal window; else a new one,
/// written to disk before it is registered.
fn renewal_for(shared: &Shared, thing: &str, current: &X509) -> Result<X509> {
    let path = shared.devices_dir.join(thing).join(RENEWAL_FILE);
    if let Some(existing) = read_reusable(&path, shared, current)? {
        return Ok(existing);
    }
    let cert = shared.ca.renew(current, &shared.sign).with_context(|| {
        format!(
            "{thing}: cannot renew certificate {}",
            fingerprint(current).unwrap_or_default()
        )
    })?;
    fsutil::write_atomic(&path, &cert.to_pem()?, fsutil::PUBLIC_MODE)?;
    Ok(cert)
}

fn read_reusable(path: &Path, shared: &Shared, current: &X509) -> Result<Option<X509>> {
    if !path.exists() {
        return Ok(None);
    }
    let Ok(existing) = X509::from_pem(&fsutil::read(path)?) else {
        return Ok(None);
    };
    let same_key = existing.public_key()?.public_eq(&*current.public_key()?);
    let same_subject = existing.subject_name().to_der()? == current.subject_name().to_der()?;
    let ours = crate::x509::verify_chain(&existing, shared.ca.certificate()).is_ok();
    let lasts = seconds_until(existing.not_after())? > shared.within_seconds;
    Ok((same_key && same_subject && ours && lasts).then_some(existing))
}
