//! `zkiot aws audit`: checks in the manner of AWS IoT Device Defender's audit, over the
//! certificates of our CA and the Things they are attached to, computed from what AWS IoT holds
//! (Device Defender's own audit is a paid service that emulators do not offer).
//!
//! What it reads: our CA as registered (DescribeCACertificate), its certificates a page at a
//! time (ListCertificatesByCA: 250 a page, with status and registration date), the Things a page
//! at a time (ListThings), and each Thing's principals (ListThingPrincipals: the one call per
//! Thing, as AWS IoT offers no listing of attachments). A certificate's expiry is read once
//! (DescribeCertificate, or the certificate file in the operator's folder) and kept
//! ([`ExpiryCache`]); it is needed only for ACTIVE certificates on a Thing.
//!
//! The checks, each a finding:
//! - `CA_CERTIFICATE_EXPIRING`: our CA's certificate expires within `--within` (or has expired);
//! - `DEVICE_CERTIFICATE_EXPIRING`: an ACTIVE certificate on a Thing expires within `--within`,
//!   and no other ACTIVE certificate of the Thing lasts beyond it (a renewal waiting for its
//!   device to switch is no finding);
//! - `CERTIFICATE_ON_SEVERAL_THINGS`: a certificate attached to more than one Thing;
//! - `THING_WITH_SEVERAL_ACTIVE_CERTIFICATES`: a Thing with more than one ACTIVE certificate,
//!   unless the later ones are renewals for the same key and the first has not expired (the
//!   device has yet to switch: counted, not a finding);
//! - `CERTIFICATE_WITHOUT_THING`: a certificate (not REVOKED) attached to no Thing;
//! - `INACTIVE_CERTIFICATE_ATTACHED`, `REVOKED_CERTIFICATE_ATTACHED`: a silenced or revoked
//!   certificate still attached to a Thing (an INACTIVE one on a Thing that also has an ACTIVE
//!   one, the old certificate of a renewal retiring, is no finding).
//!
//! Not checked: devices not seen. That needs the devices to report (heartbeats), which they do
//! not yet.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Result};
use aws_sdk_iot::types::CertificateStatus;
use openssl::x509::X509;
use serde::Serialize;

use super::batch;
use super::cli::AuditArgs;
use super::days::{day, unix_now, unix_time};
use super::expiry::ExpiryCache;
use super::inventory::{certificate_id, certificates_of_ca, things, CaCertificateEntry};
use super::register_ca::registered_ca;
use super::state::AwsState;
use super::thing::{describe_certificate, list_thing_principals};
use super::Aws;
use crate::x509::read_certificate;
use crate::GlobalOpts;

/// The checks, in the order findings are listed.
const CHECKS: &[&str] = &[
    "CA_CERTIFICATE_EXPIRING",
    "DEVICE_CERTIFICATE_EXPIRING",
    "CERTIFICATE_ON_SEVERAL_THINGS",
    "THING_WITH_SEVERAL_ACTIVE_CERTIFICATES",
    "CERTIFICATE_WITHOUT_THING",
    "INACTIVE_CERTIFICATE_ATTACHED",
    "REVOKED_CERTIFICATE_ATTACHED",
];

/// What the audit does not check yet, and why.
const NOT_CHECKED: &[&str] = &[
    "DEVICE_NOT_SEEN, PERIMETER_BREACH: `zkiot aws sweep` reads the devices' heartbeats and breach reports, and silences",
];

/// One problem found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub check: &'static str,
    /// The certificate concerned (the CA's for `CA_CERTIFICATE_EXPIRING`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// The Things concerned.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub things: Vec<String>,
    pub detail: String,
}

/// The whole answer, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Report {
    ca_certificate: String,
    ca_expires: String,
    within_days: u64,
    certificates: usize,
    things: usize,
    findings: Vec<Finding>,
    /// Things with a renewed certificate that their device has not switched to yet.
    renewals_waiting: Vec<String>,
    not_checked: Vec<&'static str>,
}

pub(crate) async fn audit(aws: &Aws, global: &GlobalOpts, args: &AuditArgs) -> Result<()> {
    let ca_cert = read_certificate(&global.ca_cert_path())?;
    let state = AwsState::load(&global.home, aws.endpoint_url.as_deref(), &aws.region)?;
    let ca = registered_ca(aws, &state, &ca_cert).await?;
    let now = unix_now();
    let within = i64::try_from(args.within.as_secs()).unwrap_or(i64::MAX);
    let horizon = now.saturating_add(within);
    let mut findings = Vec::new();

    // The CA, as AWS IoT holds it.
    let registered_ca = ca
        .pem
        .as_deref()
        .and_then(|pem| X509::from_pem(pem.as_bytes()).ok())
        .unwrap_or(ca_cert);
    let ca_expires = unix_time(registered_ca.not_after())?;
    if ca_expires <= horizon {
        findings.push(Finding {
            check: "CA_CERTIFICATE_EXPIRING",
            certificate: Some(ca.id.clone()),
            things: Vec::new(),
            detail: format!("the CA certificate {}", expiry_text(ca_expires, now)),
        });
    }

    // The fleet: pages, then each Thing's principals.
    let certificates = certificates_of_ca(aws, &ca.id).await?;
    let thing_list = things(aws).await?;
    let names: Vec<String> = thing_list.iter().map(|t| t.name.clone()).collect();
    let tally = batch::for_each_thing(names, args.concurrency, |thing, _| {
        let aws = aws.clone();
        async move { list_thing_principals(&aws, &thing).await }
    })
    .await;
    tally.finish("things not read")?;
    let mut on_thing: BTreeMap<&str, Vec<&CaCertificateEntry>> = BTreeMap::new();
    let mut things_of: HashMap<&str, Vec<&str>> = HashMap::new();
    for (thing, principals) in &tally.done {
        for arn in principals {
            if let Some(cert) = certificate_id(arn).and_then(|id| certificates.get(id)) {
                on_thing.entry(thing.as_str()).or_default().push(cert);
                things_of
                    .entry(cert.id.as_str())
                    .or_default()
                    .push(thing.as_str());
            }
        }
    }

    // Certificates and Things.
    let mut sorted: Vec<&CaCertificateEntry> = certificates.values().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    for cert in &sorted {
        match things_of.get(cert.id.as_str()) {
            Some(things) if things.len() > 1 => {
                let mut things: Vec<String> = things.iter().map(|t| t.to_string()).collect();
                things.sort();
                findings.push(Finding {
                    check: "CERTIFICATE_ON_SEVERAL_THINGS",
                    certificate: Some(cert.id.clone()),
                    detail: format!(
                        "{} certificate attached to {} things: {}",
                        cert.status.as_str(),
                        things.len(),
                        things.join(", ")
                    ),
                    things,
                });
            }
            Some(_) => {}
            None if cert.status != CertificateStatus::Revoked => findings.push(Finding {
                check: "CERTIFICATE_WITHOUT_THING",
                certificate: Some(cert.id.clone()),
                things: Vec::new(),
                detail: format!("{} certificate attached to no thing", cert.status.as_str()),
            }),
            None => {}
        }
    }

    // The expiry of every ACTIVE certificate on a Thing.
    let mut expiry = ExpiryCache::load(&global.home)?;
    let active_ids: Vec<String> = on_thing
        .values()
        .flatten()
        .filter(|c| c.status == CertificateStatus::Active)
        .map(|c| c.id.clone())
        .collect();
    expiry
        .fetch_missing(aws, active_ids, args.concurrency)
        .await?;
    expiry.save()?;

    let mut renewals_waiting = Vec::new();
    for (thing, certs) in &on_thing {
        let mut certs = certs.clone();
        certs.sort_by(|a, b| a.id.cmp(&b.id));
        let expires = |c: &CaCertificateEntry| expiry.get(&c.id).unwrap_or(i64::MIN);
        // The ACTIVE ones, first to expire first.
        let mut active: Vec<&CaCertificateEntry> = certs
            .iter()
            .copied()
            .filter(|c| c.status == CertificateStatus::Active)
            .collect();
        active.sort_by_key(|c| (expires(c), c.id.clone()));
        let lasting = active.iter().any(|c| expires(c) > horizon);
        for cert in &active {
            if expires(cert) <= horizon && !lasting {
                findings.push(Finding {
                    check: "DEVICE_CERTIFICATE_EXPIRING",
                    certificate: Some(cert.id.clone()),
                    things: vec![thing.to_string()],
                    detail: format!(
                        "certificate of thing {thing} {}",
                        expiry_text(expires(cert), now)
                    ),
                });
            }
        }
        if active.len() > 1 {
            if renewal_waiting(aws, &active, &expiry, now).await? {
                renewals_waiting.push(thing.to_string());
            } else {
                findings.push(Finding {
                    check: "THING_WITH_SEVERAL_ACTIVE_CERTIFICATES",
                    certificate: None,
                    things: vec![thing.to_string()],
                    detail: format!(
                        "thing {thing} has {} ACTIVE certificates: {}",
                        active.len(),
                        active
                            .iter()
                            .map(|c| c.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        for cert in &certs {
            let check = if cert.status == CertificateStatus::Inactive && active.is_empty() {
                "INACTIVE_CERTIFICATE_ATTACHED"
            } else if cert.status == CertificateStatus::Revoked {
                "REVOKED_CERTIFICATE_ATTACHED"
            } else {
                continue;
            };
            findings.push(Finding {
                check,
                certificate: Some(cert.id.clone()),
                things: vec![thing.to_string()],
                detail: format!(
                    "{} certificate still attached to thing {thing}",
                    cert.status.as_str()
                ),
            });
        }
    }
    findings.sort_by_key(|f| {
        (
            CHECKS.iter().position(|c| *c == f.check),
            f.things.first().cloned(),
            f.certificate.clone(),
        )
    });

    let report = Report {
        ca_certificate: ca.id.clone(),
        ca_expires: day(ca_expires),
        within_days: args.within.as_secs() / 86_400,
        certificates: certificates.len(),
        things: thing_list.len(),
        findings,
        renewals_waiting,
        not_checked: NOT_CHECKED.to_vec(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    if !report.findings.is_empty() {
        bail!(
            "audit: {} finding{}",
            report.findings.len(),
            if report.findings.len() == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

fn print_report(report: &Report) {
    println!(
        "audit of CA {} (expires {}): {} certificates, {} things; expiring means within {} days",
        report.ca_certificate,
        report.ca_expires,
        report.certificates,
        report.things,
        report.within_days
    );
    for finding in &report.findings {
        match &finding.certificate {
            Some(id) => println!("{} {id}: {}", finding.check, finding.detail),
            None => println!("{}: {}", finding.check, finding.detail),
        }
    }
    let mut counts: BTreeMap<usize, (&str, usize)> = BTreeMap::new();
    for finding in &report.findings {
        let order = CHECKS.iter().position(|c| *c == finding.check).unwrap_or(0);
        counts.entry(order).or_insert((finding.check, 0)).1 += 1;
    }
    let summary: Vec<String> = counts
        .values()
        .map(|(check, n)| format!("{n} {check}"))
        .collect();
    println!(
        "audit: {} findings{}; {} renewal{} waiting for the device to switch",
        report.findings.len(),
        if summary.is_empty() {
            String::new()
        } else {
            format!(" ({})", summary.join(", "))
        },
        report.renewals_waiting.len(),
        if report.renewals_waiting.len() == 1 {
            ""
        } else {
            "s"
        }
    );
    for note in &report.not_checked {
        println!("not checked: {note}");
    }
}

/// `expires 2027-01-13 (in 30 days)` or `expired 2026-11-02`.
fn expiry_text(expires: i64, now: i64) -> String {
    if expires == i64::MIN {
        "has no known expiry".to_string()
    } else if expires < now {
        format!("expired {}", day(expires))
    } else {
        format!(
            "expires {} (in {} days)",
            day(expires),
            (expires - now) / 86_400
        )
    }
}

/// Whether the ACTIVE certificates of a Thing (first to expire first) are one certificate and
/// its renewals, for the same key and subject, the first not yet expired: the device has yet to
/// switch.
async fn renewal_waiting(
    aws: &Aws,
    active: &[&CaCertificateEntry],
    expiry: &ExpiryCache,
    now: i64,
) -> Result<bool> {
    let Some(first) = active.first() else {
        return Ok(false);
    };
    if expiry.get(&first.id).map_or(true, |t| t < now) {
        return Ok(false);
    }
    let mut key_and_subject = None;
    for cert in active {
        let Some(pem) = describe_certificate(aws, &cert.id)
            .await?
            .and_then(|f| f.der)
            .and_then(|der| X509::from_der(&der).ok())
        else {
            return Ok(false);
        };
        let this = (
            pem.public_key()?.public_key_to_der()?,
            pem.subject_name().to_der()?,
        );
        match &key_and_subject {
            None => key_and_subject = Some(this),
            Some(first) if *first == this => {}
            Some(_) => return Ok(false),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_texts() {
        let now = 1_798_761_599 - 10 * 86_400;
        assert_eq!(
            expiry_text(1_798_761_599, now),
            "expires 2026-12-31 (in 10 days)"
        );
        assert_eq!(expiry_text(now - 86_400, now), "expired 2026-12-20");
    }
}
