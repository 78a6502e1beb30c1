//! `silence`, `unsilence`, `revoke`: one Thing, the members of a Thing group, or the Things a
//! file names, several at a time. Each Thing's certificates are read and changed where needed,
//! so a re-run changes nothing; the summary says what changed.
//!
//! Silencing (and revoking) cuts a device off three ways, each as soon as AWS allows:
//! 1. its certificates leave ACTIVE: the credentials provider and AWS IoT refuse new
//!    credentials and new MQTT connections at once (documented);
//! 2. its MQTT connection is closed with iot-data DeleteConnection, client id = Thing name, as
//!    the devices' IoT policy requires (documented: AWS itself only closes it "within a few
//!    minutes" of the certificate change);
//! 3. the credentials already issued to its certificates are refused by a Deny in the devices'
//!    role ([`super::deny`]; the condition key is an inference, and IAM applies a change
//!    within "a few minutes", documented without a bound).
//!
//! Then one line per device says what was cut and the worst case left.

use anyhow::{bail, Context, Result};
use aws_sdk_iot::types::CertificateStatus;
use openssl::x509::X509;

use super::batch;
use super::cli::{ChangeOpts, TargetArgs};
use super::client::{is_not_found, Aws};
use super::deny::{self, DenyList, DENY_POLICY_NAME};
use super::record::now;
use super::state::{AwsState, DEFAULT_ROLE_ALIAS, DEFAULT_ROLE_NAME};
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
    /// The Things `aws sweep` found.
    Swept(Vec<String>),
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
            Self::Swept(_) => "sweep".to_string(),
        }
    }

    /// The option that names these devices again, for the messages.
    fn option(&self) -> String {
        match self {
            Self::Thing(thing) => format!("--thing {thing}"),
            Self::Group(group) => format!("--group {group}"),
            Self::File(file) => format!("--things-file {}", file.display()),
            Self::Swept(_) => "(aws sweep)".to_string(),
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
            Self::Swept(things) => things.clone(),
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
    /// Silence, revoke: the certificates whose credentials may still be valid (ACTIVE until now,
    /// or within the role's longest session). Unsilence: those brought back.
    deny: Vec<String>,
    /// The status the Thing's certificates were left in (the ones acted on).
    status: String,
    connection: Connection,
}

/// What became of a device's MQTT connection.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Connection {
    Closed,
    NotOpen,
    /// Unsilence: nothing to close.
    Untouched,
    Failed(String),
}

/// One certificate attached to a Thing, as AWS IoT holds it.
struct Attached {
    id: String,
    status: String,
    cert: Option<X509>,
    last_modified: Option<i64>,
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

async fn change_thing(
    aws: &Aws,
    thing: &str,
    change: StatusChange,
    longest_session: u64,
) -> Result<ThingOutcome> {
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
            last_modified: found.last_modified,
        });
    }
    if attached.is_empty() {
        bail!("thing {thing} has no certificate attached");
    }
    let mut outcome = ThingOutcome {
        lines: Vec::new(),
        changed: false,
        deny: Vec::new(),
        status: String::new(),
        connection: Connection::Untouched,
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
    let recent = |c: &Attached| match c.last_modified.map(u64::try_from) {
        Some(Ok(t)) => now().saturating_sub(t) <= longest_session,
        _ => true,
    };
    for c in &attached {
        let (status, changed) = set_certificate_status(aws, &c.id, change).await?;
        outcome.changed |= changed;
        let was_active = c.status == CertificateStatus::Active.as_str();
        if change == StatusChange::Unsilence || was_active || recent(c) {
            outcome.deny.push(c.id.clone());
        }
        outcome.status = status.clone();
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

/// What the cut needs besides the certificates: the iot-data client, the deny list and the
/// role's durations. Read once per command; a part that cannot be had is reported per device.
struct Cut {
    role: String,
    /// The role alias's credential duration, for the worst case.
    alias_duration: Option<i32>,
    longest_session: u64,
    deny: Result<DenyList, String>,
    data: Option<Result<aws_sdk_iotdataplane::Client, String>>,
}

impl Cut {
    async fn prepare(
        aws: &Aws,
        global: &crate::GlobalOpts,
        change: StatusChange,
        data_endpoint: Option<&str>,
    ) -> Result<Self> {
        let state = AwsState::load(&global.home, aws.endpoint_url.as_deref(), &aws.region)?;
        let role = state
            .role_name
            .clone()
            .unwrap_or_else(|| DEFAULT_ROLE_NAME.to_string());
        let alias = state
            .role_alias
            .clone()
            .unwrap_or_else(|| DEFAULT_ROLE_ALIAS.to_string());
        let alias_duration = match aws
            .iot
            .describe_role_alias()
            .role_alias(&alias)
            .send()
            .await
        {
            Ok(out) => out
                .role_alias_description()
                .and_then(|d| d.credential_duration_seconds()),
            Err(_) => state.credential_duration_seconds,
        };
        let (deny, longest_session) = match deny::load(aws, &role).await {
            Ok((list, longest)) => (Ok(list), longest),
            Err(e) => (Err(format!("{e:#}")), 43_200),
        };
        let data = match change {
            StatusChange::Unsilence => None,
            _ => Some(
                aws.iot_data(data_endpoint)
                    .await
                    .map_err(|e| format!("{e:#}")),
            ),
        };
        Ok(Self {
            role,
            alias_duration,
            longest_session,
            deny,
            data,
        })
    }

    /// Closes the Thing's MQTT connection (client id = Thing name).
    async fn close_connection(&self, aws: &Aws, thing: &str, change: StatusChange) -> Connection {
        let client = match &self.data {
            None => return Connection::Untouched,
            Some(Err(e)) => return Connection::Failed(e.clone()),
            Some(Ok(client)) => client,
        };
        let sent = client
            .delete_connection()
            .client_id(thing)
            // A revoked device never comes back: its persistent session goes too.
            .clean_session(change == StatusChange::Revoke)
            .send()
            .await;
        match sent {
            Ok(_) => Connection::Closed,
            // AWS IoT answers so for a client that is not connected.
            Err(e) if is_not_found(&e) => Connection::NotOpen,
            Err(e) => Connection::Failed(format!("{:#}", aws.error("DeleteConnection", e))),
        }
    }
}

/// The deny list's part: which certificates are denied now, which did not fit.
struct DenyOutcome {
    denied: Vec<String>,
    not_fitted: Vec<String>,
    error: Option<String>,
    pruned: usize,
    listed: usize,
}

/// One IAM write for the whole command: adds (silence, revoke) or removes (unsilence) the
/// certificates of the Things done, after pruning what has expired.
async fn update_deny_list(
    aws: &Aws,
    cut: &mut Cut,
    outcomes: &[&ThingOutcome],
    change: StatusChange,
) -> DenyOutcome {
    let ids: Vec<String> = outcomes.iter().flat_map(|o| o.deny.clone()).collect();
    let mut result = DenyOutcome {
        denied: Vec::new(),
        not_fitted: Vec::new(),
        error: None,
        pruned: 0,
        listed: 0,
    };
    let list = match &mut cut.deny {
        Ok(list) => list,
        Err(e) => {
            result.error = Some(e.clone());
            return result;
        }
    };
    let before = list.clone();
    result.pruned = list.prune(now(), cut.longest_session);
    match change {
        StatusChange::Unsilence => {
            list.remove(&ids);
        }
        _ => {
            let added = list.add(&ids, now());
            result.denied = added.denied;
            result.not_fitted = added.not_fitted;
        }
    }
    result.listed = list.len();
    if *list != before {
        if let Err(e) = deny::save(aws, &cut.role, list).await {
            result.error = Some(format!("{e:#}"));
            result.denied.clear();
        }
    }
    result
}

/// Applies `change` to every certificate of every target Thing, `concurrency` Things at a
/// time (see [`batch`]), closes their MQTT connections and updates the deny list (silence,
/// revoke), prints one line per certificate (as each Thing is done), one per device saying
/// what was cut, and a summary. Fails if any Thing failed or was not attempted, or if a part
/// of the cut failed; a re-run then finishes the rest.
pub(crate) async fn change_status(
    aws: &Aws,
    global: &crate::GlobalOpts,
    targets: &Targets,
    change: StatusChange,
    opts: &ChangeOpts,
) -> Result<()> {
    let things = targets.things(aws).await?;
    let mut cut = Cut::prepare(aws, global, change, opts.iot_data_endpoint.as_deref()).await?;
    let longest = cut.longest_session;
    if let [thing] = things.as_slice() {
        // One Thing: its own error is the answer.
        let mut outcome = change_thing(aws, thing, change, longest).await?;
        outcome.connection = cut.close_connection(aws, thing, change).await;
        for line in &outcome.lines {
            println!("{line}");
        }
        let denied = update_deny_list(aws, &mut cut, &[&outcome], change).await;
        let failed = report(&cut, &denied, &[(thing.clone(), &outcome)], change);
        if let Some(why) = failed.first() {
            bail!("{thing}: {why}; run the same command again to finish");
        }
        return Ok(());
    }

    let shared = std::sync::Arc::new(cut);
    let tally = batch::for_each_thing(things, opts.concurrency, |thing, out| {
        let aws = aws.clone();
        let cut = std::sync::Arc::clone(&shared);
        async move {
            let mut outcome = change_thing(&aws, &thing, change, cut.longest_session).await?;
            outcome.connection = cut.close_connection(&aws, &thing, change).await;
            for line in &outcome.lines {
                out.println(line);
            }
            Ok(outcome)
        }
    })
    .await;
    let mut cut = std::sync::Arc::try_unwrap(shared)
        .map_err(|_| anyhow::anyhow!("the batch still holds the cut"))?;
    let done: Vec<(String, &ThingOutcome)> =
        tally.done.iter().map(|(t, o)| (t.clone(), o)).collect();
    let outcomes: Vec<&ThingOutcome> = done.iter().map(|(_, o)| *o).collect();
    let denied = if tally.unreachable {
        // No call after the one that met the outage; the same command finishes the job (the
        // certificates changed now are still recent then, so they are listed).
        DenyOutcome {
            denied: Vec::new(),
            not_fitted: Vec::new(),
            error: Some("AWS became unreachable".into()),
            pruned: 0,
            listed: 0,
        }
    } else {
        update_deny_list(aws, &mut cut, &outcomes, change).await
    };
    let cut_failed = report(&cut, &denied, &done, change);
    let changed = tally.done.values().filter(|o| o.changed).count();
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
    if !cut_failed.is_empty() {
        bail!(
            "{} of {} things not cut off entirely ({}); run the same command again to finish",
            cut_failed.len(),
            tally.total(),
            cut_failed[0]
        );
    }
    Ok(())
}

/// Prints, per device, what was cut and the worst case left (silence, revoke), or that it is
/// back (unsilence), and the deny list's state. Returns the failures of the cut, one per device.
fn report(
    cut: &Cut,
    denied: &DenyOutcome,
    done: &[(String, &ThingOutcome)],
    change: StatusChange,
) -> Vec<String> {
    let mut failures = Vec::new();
    let window = cut
        .alias_duration
        .map_or("the role alias's duration".to_string(), |d| {
            format!("{d} s")
        });
    if change == StatusChange::Unsilence {
        for (thing, o) in done {
            let creds = match &denied.error {
                None => "credentials issued to it are no longer denied",
                Some(_) => "credentials issued to it may still be denied (the deny list could not be read or written)",
            };
            println!("{thing}: back: certificate {}, new credentials and MQTT connections allowed; {creds}", o.status);
        }
        if let Some(e) = &denied.error {
            failures.push(format!("deny list not updated: {e}"));
        }
        return failures;
    }
    for (thing, o) in done {
        let mut cut_parts = vec![format!("certificate {}", o.status)];
        let mut worst = Vec::new();
        match &o.connection {
            Connection::Closed => cut_parts.push("MQTT connection closed".into()),
            Connection::NotOpen => cut_parts.push("no MQTT connection was open".into()),
            Connection::Untouched => {}
            Connection::Failed(e) => {
                cut_parts.push(format!("MQTT connection NOT closed ({e})"));
                worst.push(
                    "an open MQTT connection lasts until AWS IoT drops it, \"within a few minutes\" of the certificate change"
                        .to_string(),
                );
                failures.push(format!("MQTT connection not closed: {e}"));
            }
        }
        let denied_all = o.deny.iter().all(|id| denied.denied.contains(id));
        if o.deny.is_empty() {
            cut_parts.push("no credentials issued to it can still be valid".into());
        } else if let Some(e) = &denied.error {
            cut_parts.push(format!("credentials already issued NOT denied ({e})"));
            worst.push(format!(
                "credentials already issued stay valid until they expire, at most {window} after issue"
            ));
            failures.push(format!("deny list not updated: {e}"));
        } else if denied_all {
            cut_parts.push(format!(
                "credentials already issued denied (role {}, policy {DENY_POLICY_NAME})",
                cut.role
            ));
            worst.push(
                "IAM applying the Deny (AWS: \"a few minutes\", no bound documented; keyed by credentials-iot:AwsCertificateId, an inference: scripts/check-deny.sh checks it on an account)"
                    .to_string(),
            );
        } else {
            cut_parts.push(format!(
                "credentials already issued NOT denied: the role's inline policies are full ({} certificates listed)",
                denied.listed
            ));
            worst.push(format!(
                "credentials already issued stay valid until they expire, at most {window} after issue"
            ));
        }
        println!(
            "{thing}: cut: {}; worst case left: {}",
            cut_parts.join(", "),
            worst.join("; ")
        );
    }
    if !denied.not_fitted.is_empty() {
        eprintln!(
            "warning: {} certificates did not fit the deny list of role {} (IAM allows 10,240 \
             characters of inline policy per role, about 140 certificates); their credentials \
             already issued stay valid until they expire (at most {window}); entries leave the \
             list {} s after their silencing",
            denied.not_fitted.len(),
            cut.role,
            cut.longest_session
        );
    }
    if denied.pruned > 0 {
        println!(
            "deny list of role {}: {} entries older than the role's longest session ({} s) pruned, {} listed",
            cut.role, denied.pruned, cut.longest_session, denied.listed
        );
    }
    failures
}
