//! `silence`, `unsilence`, `revoke`: one Thing, the members of a Thing group, or the Things a
//! file names, several at a time. Each Thing's certificates are read and changed where needed,
//! so a re-run changes nothing; the summary says what changed.

use anyhow::{bail, Context, Result};
use aws_sdk_iot::types::CertificateStatus;
use openssl::x509::X509;

use super::batch;
use super::cli::TargetArgs;
use super::client::{is_not_found, Aws};
use super::thing::{describe_certificate, list_thing_principals};
use crate::device::renewal::CURRENT_CERTIFICATE_ATTRIBUTE;
use crate::thing_name::validate_thing_name;

/// `silence`, `unsilence`, `revoke`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChange {
    Silence,
    Unsilence,
    Revoke,
}

/// Applies `change` to one certificate, honouring AWS's rule that REVOKED is final.
/// Returns the status afterwards and whether anything changed.
pub async fn set_certificate_status(
    aws: &Aws,
    certificate_id: &str,
    change: StatusChange,
) -> Result<(String, bool)> {
    let found = describe_certificate(aws, certificate_id)
        .await?
        .with_context(|| format!("certificate {certificate_id} is not registered"))?;
    let current = found.status.as_str();
    let target = match change {
        StatusChange::Silence => CertificateStatus::Inactive,
        StatusChange::Unsilence => CertificateStatus::Active,
        StatusChange::Revoke => CertificateStatus::Revoked,
    };
    if current == target.as_str() {
        return Ok((current.to_string(), false));
    }
    if current == CertificateStatus::Revoked.as_str() {
        match change {
            // Already stronger than silenced.
            StatusChange::Silence => return Ok((current.to_string(), false)),
            _ => bail!(
                "certificate {certificate_id} is REVOKED, which is final; the device needs a new certificate"
            ),
        }
    }
    aws.iot
        .update_certificate()
        .certificate_id(certificate_id)
        .new_status(target.clone())
        .send()
        .await
        .map_err(|e| aws.error("UpdateCertificate", e))?;
    Ok((target.as_str().to_string(), true))
}

/// Which devices, as the operator named them.
pub(crate) enum Targets {
    Thing(String),
    Group(String),
    File(std::path::PathBuf),
}

impl Targets {
    pub(crate) fn from_args(args: &TargetArgs) -> Result<Self> {
        match (&args.thing, &args.group, &args.things_file) {
            (Some(thing), None, None) => Ok(Self::Thing(thing.clone())),
            (None, Some(group), None) => Ok(Self::Group(group.clone())),
            (None, None, Some(file)) => Ok(Self::File(file.clone())),
            _ => bail!("name the devices with one of --thing, --group or --things-file"),
        }
    }

    /// How the operator confirms a revocation: by typing this.
    pub(crate) fn confirmation(&self) -> String {
        match self {
            Self::Thing(thing) => thing.clone(),
            Self::Group(group) => group.clone(),
            Self::File(file) => file.display().to_string(),
        }
    }

    /// The option that names these devices again, for the messages.
    fn option(&self) -> String {
        match self {
            Self::Thing(thing) => format!("--thing {thing}"),
            Self::Group(group) => format!("--group {group}"),
            Self::File(file) => format!("--things-file {}", file.display()),
        }
    }

    /// The Thing names, checked, each once.
    async fn things(&self, aws: &Aws) -> Result<Vec<String>> {
        let names = match self {
            Self::Thing(thing) => vec![thing.clone()],
            Self::Group(group) => things_in_group(aws, group).await?,
            Self::File(file) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from)
                    .collect()
            }
        };
        let mut unique = Vec::with_capacity(names.len());
        for name in names {
            validate_thing_name(&name)?;
            if !unique.contains(&name) {
                unique.push(name);
            }
        }
        if unique.is_empty() {
            bail!("{} names no Thing", self.option());
        }
        Ok(unique)
    }
}

async fn things_in_group(aws: &Aws, group: &str) -> Result<Vec<String>> {
    match aws
        .iot
        .describe_thing_group()
        .thing_group_name(group)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => bail!("thing group {group} does not exist in AWS IoT"),
        Err(e) => return Err(aws.error("DescribeThingGroup", e)),
    }
    aws.iot
        .list_things_in_thing_group()
        .thing_group_name(group)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| aws.error("ListThingsInThingGroup", e))
}

/// What happened to one Thing: one line per certificate.
struct ThingOutcome {
    lines: Vec<String>,
    changed: bool,
}

/// One certificate attached to a Thing, as AWS IoT holds it.
struct Attached {
    id: String,
    status: String,
    cert: Option<X509>,
}

/// Whether `a` was issued before `b`: by start of validity, then by end (a renewal issued in
/// the same second as the certificate it renews lasts longer).
pub(crate) fn issued_before(a: &X509, b: &X509) -> bool {
    use std::cmp::Ordering;
    match a.not_before().compare(b.not_before()) {
        Ok(Ordering::Less) => true,
        Ok(Ordering::Equal) => a
            .not_after()
            .compare(b.not_after())
            .is_ok_and(|o| o == Ordering::Less),
        _ => false,
    }
}

async fn change_thing(aws: &Aws, thing: &str, change: StatusChange) -> Result<ThingOutcome> {
    let described = match aws.iot.describe_thing().thing_name(thing).send().await {
        Ok(out) => out,
        Err(e) if is_not_found(&e) => bail!("thing {thing} does not exist in AWS IoT"),
        Err(e) => return Err(aws.error("DescribeThing", e)),
    };
    let recorded_current = described
        .attributes()
        .and_then(|a| a.get(CURRENT_CERTIFICATE_ATTRIBUTE))
        .cloned();
    let mut attached = Vec::new();
    for arn in list_thing_principals(aws, thing).await? {
        let Some((_, id)) = arn.split_once(":cert/") else {
            continue;
        };
        let found = describe_certificate(aws, id)
            .await?
            .with_context(|| format!("certificate {id} is not registered"))?;
        attached.push(Attached {
            id: id.to_string(),
            status: found.status,
            cert: found.der.as_deref().and_then(|d| X509::from_der(d).ok()),
        });
    }
    if attached.is_empty() {
        bail!("thing {thing} has no certificate attached");
    }
    let mut outcome = ThingOutcome {
        lines: Vec::new(),
        changed: false,
    };
    let revoked = CertificateStatus::Revoked.as_str();
    // Unsilencing brings back the certificate the device uses, never one that renewal retired
    // (older than the certificate the device recorded switching to) nor a revoked one, which
    // AWS never lets back; only a Thing left with nothing else to bring back is an error.
    let mut left = Vec::new();
    if change == StatusChange::Unsilence {
        let current = recorded_current
            .as_deref()
            .and_then(|id| attached.iter().find(|c| c.id == id))
            .and_then(|c| c.cert.clone());
        attached.retain(|c| {
            let retired = match (&current, &c.cert) {
                (Some(current), Some(cert)) => issued_before(cert, current),
                _ => false,
            };
            if retired {
                left.push(format!(
                    "{thing}: certificate {} is {}, retired by renewal; left as it is",
                    c.id, c.status
                ));
            }
            !retired
        });
        if attached.iter().any(|c| c.status != revoked) {
            attached.retain(|c| {
                if c.status == revoked {
                    left.push(format!(
                        "{thing}: certificate {} is REVOKED, retired; left as it is",
                        c.id
                    ));
                }
                c.status != revoked
            });
        }
    }
    for c in &attached {
        let (status, changed) = set_certificate_status(aws, &c.id, change).await?;
        outcome.changed |= changed;
        outcome.lines.push(if changed {
            format!("{thing}: certificate {} is now {status}", c.id)
        } else {
            format!(
                "{thing}: certificate {} is already {status}; nothing to do",
                c.id
            )
        });
    }
    outcome.lines.extend(left);
    Ok(outcome)
}

/// Applies `change` to every certificate of every target Thing, `concurrency` Things at a
/// time (see [`batch`]), and prints one line per certificate (as each Thing is done) and a
/// summary. Fails if any Thing failed or was not attempted; a re-run then finishes the rest.
pub(crate) async fn change_status(
    aws: &Aws,
    targets: &Targets,
    change: StatusChange,
    concurrency: u16,
) -> Result<()> {
    let things = targets.things(aws).await?;
    if let [thing] = things.as_slice() {
        // One Thing: its own error is the answer.
        let outcome = change_thing(aws, thing, change).await?;
        for line in &outcome.lines {
            println!("{line}");
        }
        print_effect(&thing.clone(), targets, change);
        return Ok(());
    }

    let tally = batch::for_each_thing(things, concurrency, |thing, out| {
        let aws = aws.clone();
        async move {
            let outcome = change_thing(&aws, &thing, change).await?;
            for line in &outcome.lines {
                out.println(line);
            }
            Ok(outcome.changed)
        }
    })
    .await;
    let changed = tally.done.values().filter(|changed| **changed).count();
    let verb = match change {
        StatusChange::Silence => "silence",
        StatusChange::Unsilence => "unsilence",
        StatusChange::Revoke => "revoke",
    };
    println!(
        "{verb} {}: {} things: {changed} changed, {} already done, {} failed{}",
        targets.option(),
        tally.total(),
        tally.done.len() - changed,
        tally.failed.len(),
        tally.not_attempted_note()
    );
    tally.finish("things not changed")?;
    let who = match targets {
        Targets::Group(group) => format!("the things of group {group}"),
        _ => "these things".to_string(),
    };
    print_effect(&who, targets, change);
    Ok(())
}

fn print_effect(who: &str, targets: &Targets, change: StatusChange) {
    match change {
        StatusChange::Silence => println!(
            "the credentials provider refuses {who} from now on; credentials already issued \
             stay valid until they expire; undo with `zkiot aws unsilence {}`",
            targets.option()
        ),
        StatusChange::Unsilence => println!("{who} can get credentials again"),
        StatusChange::Revoke => println!(
            "{who} can no longer get credentials; credentials already issued stay valid until \
             they expire; to bring {} back, issue and register a new certificate",
            if matches!(targets, Targets::Thing(_)) {
                "the device"
            } else {
                "a device"
            }
        ),
    }
}
