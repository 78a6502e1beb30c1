//! Per-device commands: `register-device`, `status`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use aws_sdk_iot::types::{
    AttributePayload, CaCertificateStatus, CertificateStatus, ThingTypeProperties,
};
use openssl::x509::X509;

use super::attributes::{EXPIRES_ATTRIBUTE, THING_TYPE};
use super::client::{is_not_found, service_code, Aws};
use super::days::{day, day_start, unix_time};
use super::inventory;
use super::register_ca::{find_registered_ca, registered_ca};
use super::state::{AwsState, DEFAULT_POLICY_NAME, DEFAULT_ROLE_ALIAS, DEFAULT_ROLE_NAME};
use crate::ca::CertificateAuthority;
use crate::thing_name::validate_thing_name;
use crate::x509::{check_valid_now, common_name, fingerprint, verify_chain};
use crate::{fsutil, GlobalOpts};

/// File name of a device's certificate in `home/devices/<thing>/`.
pub const DEVICE_CERT_FILE: &str = "device.crt";

/// What registering a device needs from the one-time setup, checked once (a fleet run checks it
/// once for all its devices).
#[derive(Debug, Clone)]
pub struct RegistrationPrerequisites {
    /// Our CA certificate, as registered.
    pub ca_cert: X509,
    pub ca_pem: String,
    /// The IoT policy every device certificate gets.
    pub policy_name: String,
}

impl RegistrationPrerequisites {
    /// Checks that our CA is registered and ACTIVE and that the device policy exists.
    pub async fn check(aws: &Aws, global: &GlobalOpts) -> Result<Self> {
        let ca_cert = load_ca_certificate(global)?;
        let state = AwsState::load(&global.home, aws.endpoint_url.as_deref(), &aws.region)?;
        let registered = registered_ca(aws, &state, &ca_cert).await?;
        if registered.status != Some(CaCertificateStatus::Active) {
            bail!(
                "the CA {} is not ACTIVE in AWS IoT, which then refuses the certificates it signed",
                registered.id
            );
        }
        let policy_name = state
            .policy_name
            .clone()
            .unwrap_or_else(|| DEFAULT_POLICY_NAME.to_string());
        match aws.iot.get_policy().policy_name(&policy_name).send().await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {
                bail!("IoT policy {policy_name} does not exist; run `zkiot aws setup` first")
            }
            Err(e) => return Err(aws.error("GetPolicy", e)),
        }
        ensure_thing_type(aws).await?;
        Ok(Self {
            ca_pem: String::from_utf8(ca_cert.to_pem()?)?,
            ca_cert,
            policy_name,
        })
    }
}

/// Creates the Thing type the devices' Things get ([`THING_TYPE`]) if it does not exist.
async fn ensure_thing_type(aws: &Aws) -> Result<()> {
    match aws
        .iot
        .describe_thing_type()
        .thing_type_name(THING_TYPE)
        .send()
        .await
    {
        Ok(_) => return Ok(()),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(aws.error("DescribeThingType", e)),
    }
    let properties = ThingTypeProperties::builder()
        .thing_type_description(
            "Devices with a Zymbit security module, registered by zkiot; the type lets a Thing \
             hold more than three attributes",
        )
        .build();
    match aws
        .iot
        .create_thing_type()
        .thing_type_name(THING_TYPE)
        .thing_type_properties(properties)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        // Created meanwhile by a concurrent run.
        Err(e) if service_code(&e) == Some("ResourceAlreadyExistsException") => Ok(()),
        Err(e) => Err(aws.error("CreateThingType", e)),
    }
}

/// The CA certificate alone: registering devices needs no CA key. If the key is there, it must
/// match (a mismatched pair means the folder is not what the operator thinks).
fn load_ca_certificate(global: &GlobalOpts) -> Result<X509> {
    CertificateAuthority::certificate_only(global)
}

/// Checks what AWS would: the device certificate chains to our CA (signature, validity,
/// `clientAuth`), and its CN is a usable thing name. Returns the CN.
pub fn check_device_certificate(cert: &X509, ca_cert: &X509) -> Result<String> {
    verify_chain(cert, ca_cert)?;
    check_valid_now(cert, "device certificate")?;
    let cn = common_name(cert.subject_name()).context("the device certificate's subject")?;
    Ok(cn)
}

/// What `register_prepared` did for one device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterOutcome {
    pub certificate_id: String,
    pub certificate_arn: String,
    /// The certificate's status in AWS IoT after the run.
    pub status: String,
    /// What was created or attached this time; empty when everything already existed.
    pub actions: Vec<String>,
}

/// Registers one device: certificate (ACTIVE, with our CA), Thing, Thing↔certificate and
/// policy↔certificate attachments. Each step first looks at what exists.
pub async fn register_prepared(
    aws: &Aws,
    prereqs: &RegistrationPrerequisites,
    cert: &X509,
    thing: &str,
) -> Result<RegisterOutcome> {
    validate_thing_name(thing)?;
    check_device_certificate(cert, &prereqs.ca_cert)?;
    let id = fingerprint(cert)?;
    let pem = String::from_utf8(cert.to_pem()?)?;
    let der = cert.to_der()?;
    let mut actions = Vec::new();

    // What was created just now has no attachments yet: no need to list them.
    let mut cert_is_new = false;
    let mut thing_is_new = false;

    // 1. The certificate.
    let (arn, status) = match describe_certificate(aws, &id).await? {
        Some(found) => {
            if found.der.as_deref() != Some(der.as_slice()) {
                bail!("AWS IoT holds certificate {id} with other contents than {thing}'s");
            }
            (found.arn, found.status)
        }
        None => {
            let registered = aws
                .iot
                .register_certificate()
                .certificate_pem(&pem)
                .ca_certificate_pem(&prereqs.ca_pem)
                .status(CertificateStatus::Active)
                .send()
                .await;
            match registered {
                Ok(out) => {
                    let got = out.certificate_id().unwrap_or_default();
                    if got != id {
                        bail!("AWS IoT gave certificate id {got}, expected the SHA-256 of its DER ({id})");
                    }
                    actions.push("registered certificate".to_string());
                    let arn = out
                        .certificate_arn()
                        .context("RegisterCertificate returned no ARN")?
                        .to_string();
                    cert_is_new = true;
                    (arn, "ACTIVE".to_string())
                }
                Err(e) if service_code(&e) == Some("ResourceAlreadyExistsException") => {
                    let found = describe_certificate(aws, &id)
                        .await?
                        .context("certificate reported as existing but not found")?;
                    if found.der.as_deref() != Some(der.as_slice()) {
                        bail!("AWS IoT holds certificate {id} with other contents than {thing}'s");
                    }
                    (found.arn, found.status)
                }
                Err(e) => return Err(aws.error("RegisterCertificate", e)),
            }
        }
    };

    // 2. The Thing, with the day its newest certificate expires (see `attributes.rs`).
    // (Emulators replace an existing Thing on CreateThing; AWS does not.)
    let expires = day(unix_time(cert.not_after())?);
    let record_expiry = || {
        AttributePayload::builder()
            .attributes(EXPIRES_ATTRIBUTE, expires.clone())
            .merge(true)
            .build()
    };
    match aws.iot.describe_thing().thing_name(thing).send().await {
        Ok(found) => {
            let recorded = found
                .attributes()
                .and_then(|a| a.get(EXPIRES_ATTRIBUTE))
                .and_then(|d| day_start(d));
            let untyped = found.thing_type_name().is_none();
            if recorded < day_start(&expires) || untyped {
                aws.iot
                    .update_thing()
                    .thing_name(thing)
                    .set_thing_type_name(untyped.then(|| THING_TYPE.to_string()))
                    .attribute_payload(record_expiry())
                    .send()
                    .await
                    .map_err(|e| aws.error("UpdateThing", e))?;
                actions.push(if untyped {
                    format!("gave the thing the type {THING_TYPE} and recorded its expiry")
                } else {
                    "recorded its expiry on the thing".to_string()
                });
            }
        }
        Err(e) if is_not_found(&e) => {
            aws.iot
                .create_thing()
                .thing_name(thing)
                .thing_type_name(THING_TYPE)
                .attribute_payload(record_expiry())
                .send()
                .await
                .map_err(|e| aws.error("CreateThing", e))?;
            actions.push("created thing".to_string());
            thing_is_new = true;
        }
        Err(e) => return Err(aws.error("DescribeThing", e)),
    }

    // 3. Thing ↔ certificate.
    let attached_to_thing =
        !thing_is_new && !cert_is_new && list_thing_principals(aws, thing).await?.contains(&arn);
    if !attached_to_thing {
        aws.iot
            .attach_thing_principal()
            .thing_name(thing)
            .principal(&arn)
            .send()
            .await
            .map_err(|e| aws.error("AttachThingPrincipal", e))?;
        actions.push("attached thing".to_string());
    }

    // 4. Policy ↔ certificate.
    let policy_attached = !cert_is_new
        && attached_policies(aws, &arn)
            .await?
            .contains(&prereqs.policy_name);
    if !policy_attached {
        aws.iot
            .attach_policy()
            .policy_name(&prereqs.policy_name)
            .target(&arn)
            .send()
            .await
            .map_err(|e| aws.error("AttachPolicy", e))?;
        actions.push(format!("attached policy {}", prereqs.policy_name));
    }

    Ok(RegisterOutcome {
        certificate_id: id,
        certificate_arn: arn,
        status,
        actions,
    })
}

pub(crate) async fn register_device(
    aws: &Aws,
    global: &GlobalOpts,
    cert_path: Option<&Path>,
    thing: Option<&str>,
    group: Option<&str>,
) -> Result<()> {
    let cert_path = match (cert_path, thing) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(thing)) => {
            validate_thing_name(thing)?;
            global.device_record_dir(thing).join(DEVICE_CERT_FILE)
        }
        (None, None) => bail!("name the device with --thing or --cert"),
    };
    let cert = X509::from_pem(&fsutil::read(&cert_path)?)
        .with_context(|| format!("{} is not a PEM certificate", cert_path.display()))?;
    let prereqs = RegistrationPrerequisites::check(aws, global).await?;
    let cn = check_device_certificate(&cert, &prereqs.ca_cert)
        .with_context(|| format!("{} cannot be registered", cert_path.display()))?;
    let thing = thing.unwrap_or(&cn);
    if thing != cn {
        bail!("the certificate's CN is {cn:?}, not the thing name {thing:?}");
    }
    let mut outcome = register_prepared(aws, &prereqs, &cert, thing).await?;
    if let Some(group) = group {
        if let Some(action) = add_to_group(aws, thing, group).await? {
            outcome.actions.push(action);
        }
    }
    if outcome.actions.is_empty() {
        println!(
            "{thing}: already registered (certificate {}, {}); nothing to do",
            outcome.certificate_id, outcome.status
        );
    } else {
        println!(
            "{thing}: {} (certificate {}, {})",
            outcome.actions.join(", "),
            outcome.certificate_id,
            outcome.status
        );
    }
    if outcome.status != "ACTIVE" {
        println!(
            "note: the certificate is {}; the credentials provider refuses it{}",
            outcome.status,
            if outcome.status == "INACTIVE" {
                " until `zkiot aws unsilence`"
            } else {
                ""
            }
        );
    }
    println!("next: on the device, `zkiot device install-cert`, then `zkiot device credentials`");
    Ok(())
}

/// Puts `thing` in the static Thing group `group`, creating the group if missing. Returns what
/// it did, `None` when the Thing was already a member.
async fn add_to_group(aws: &Aws, thing: &str, group: &str) -> Result<Option<String>> {
    validate_thing_name(group).context("the group name")?;
    let mut created = false;
    match aws
        .iot
        .describe_thing_group()
        .thing_group_name(group)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {
            match aws
                .iot
                .create_thing_group()
                .thing_group_name(group)
                .send()
                .await
            {
                Ok(_) => created = true,
                // Created meanwhile by a concurrent run.
                Err(e) if service_code(&e) == Some("ResourceAlreadyExistsException") => {}
                Err(e) => return Err(aws.error("CreateThingGroup", e)),
            }
        }
        Err(e) => return Err(aws.error("DescribeThingGroup", e)),
    }
    if !created {
        let mut groups = aws
            .iot
            .list_thing_groups_for_thing()
            .thing_name(thing)
            .into_paginator()
            .items()
            .send();
        while let Some(member_of) = groups.next().await {
            let member_of = member_of.map_err(|e| aws.error("ListThingGroupsForThing", e))?;
            if member_of.group_name() == Some(group) {
                return Ok(None);
            }
        }
    }
    aws.iot
        .add_thing_to_thing_group()
        .thing_group_name(group)
        .thing_name(thing)
        .send()
        .await
        .map_err(|e| aws.error("AddThingToThingGroup", e))?;
    Ok(Some(if created {
        format!("created group {group}, added to it")
    } else {
        format!("added to group {group}")
    }))
}

pub(crate) struct FoundCertificate {
    pub arn: String,
    pub status: String,
    pub der: Option<Vec<u8>>,
    /// When its status last changed (seconds since the epoch), if AWS IoT says.
    pub last_modified: Option<i64>,
}

pub(crate) async fn describe_certificate(aws: &Aws, id: &str) -> Result<Option<FoundCertificate>> {
    match aws
        .iot
        .describe_certificate()
        .certificate_id(id)
        .send()
        .await
    {
        Ok(out) => {
            let desc = out
                .certificate_description()
                .context("DescribeCertificate returned no description")?;
            Ok(Some(FoundCertificate {
                arn: desc
                    .certificate_arn()
                    .context("DescribeCertificate returned no ARN")?
                    .to_string(),
                status: desc
                    .status()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|| "UNKNOWN".into()),
                der: desc
                    .certificate_pem()
                    .and_then(|p| X509::from_pem(p.as_bytes()).ok())
                    .and_then(|c| c.to_der().ok()),
                last_modified: desc.last_modified_date().map(|t| t.secs()),
            }))
        }
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(aws.error("DescribeCertificate", e)),
    }
}

pub(crate) async fn list_thing_principals(aws: &Aws, thing: &str) -> Result<Vec<String>> {
    aws.iot
        .list_thing_principals()
        .thing_name(thing)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| aws.error("ListThingPrincipals", e))
}

/// The names of the policies attached to `target` (a certificate ARN).
async fn attached_policies(aws: &Aws, target: &str) -> Result<Vec<String>> {
    let policies = aws
        .iot
        .list_attached_policies()
        .target(target)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| aws.error("ListAttachedPolicies", e))?;
    Ok(policies
        .iter()
        .filter_map(|p| p.policy_name())
        .map(str::to_string)
        .collect())
}

pub(crate) async fn status(aws: &Aws, global: &GlobalOpts, thing: Option<&str>) -> Result<()> {
    let state = AwsState::load(&global.home, aws.endpoint_url.as_deref(), &aws.region)?;
    println!("endpoint: {}", aws.endpoint_name());
    if let Some(thing) = thing {
        return thing_status(aws, thing).await;
    }
    let mut ca_id = None;
    match load_ca_certificate(global) {
        Ok(ca) => match find_registered_ca(aws, &state, &ca).await? {
            Some(found) => {
                println!(
                    "CA: {} {}",
                    found.id,
                    found
                        .status
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default()
                );
                ca_id = Some(found.id);
            }
            None => println!("CA: not registered (zkiot aws register-ca)"),
        },
        Err(e) => println!("CA: {e:#}"),
    }
    let role = state.role_name.as_deref().unwrap_or(DEFAULT_ROLE_NAME);
    match aws.iam.get_role().role_name(role).send().await {
        Ok(out) => println!(
            "IAM role: {}",
            out.role().map(|r| r.arn().to_string()).unwrap_or_default()
        ),
        Err(e) if is_not_found(&e) => println!("IAM role {role}: missing (zkiot aws setup)"),
        Err(e) => return Err(aws.error("GetRole", e)),
    }
    let alias = state.role_alias.as_deref().unwrap_or(DEFAULT_ROLE_ALIAS);
    match aws.iot.describe_role_alias().role_alias(alias).send().await {
        Ok(out) => {
            let d = out.role_alias_description();
            println!(
                "role alias: {} ({} s)",
                d.and_then(|d| d.role_alias_arn()).unwrap_or(alias),
                d.and_then(|d| d.credential_duration_seconds())
                    .unwrap_or_default()
            );
        }
        Err(e) if is_not_found(&e) => println!("role alias {alias}: missing (zkiot aws setup)"),
        Err(e) => return Err(aws.error("DescribeRoleAlias", e)),
    }
    let policy = state.policy_name.as_deref().unwrap_or(DEFAULT_POLICY_NAME);
    match aws.iot.get_policy().policy_name(policy).send().await {
        Ok(_) => println!("IoT policy: {policy}"),
        Err(e) if is_not_found(&e) => println!("IoT policy {policy}: missing (zkiot aws setup)"),
        Err(e) => return Err(aws.error("GetPolicy", e)),
    }
    if let Some(endpoint) = &state.credentials_endpoint {
        println!("credentials endpoint: {endpoint}");
    }
    inventory::print_fleet(aws, ca_id.as_deref()).await
}

async fn thing_status(aws: &Aws, thing: &str) -> Result<()> {
    match aws.iot.describe_thing().thing_name(thing).send().await {
        Ok(found) => {
            let attributes = found.attributes().cloned().unwrap_or_default();
            let reports = inventory::device_reports(&attributes);
            println!("{thing}: {}", reports.trim_start_matches(", "));
        }
        Err(e) if is_not_found(&e) => {
            println!("{thing}: no such thing");
            return Ok(());
        }
        Err(e) => return Err(aws.error("DescribeThing", e)),
    }
    let principals = list_thing_principals(aws, thing).await?;
    if principals.is_empty() {
        println!("{thing}: no certificate attached");
    }
    for arn in principals {
        let id = arn.rsplit('/').next().unwrap_or_default();
        let found = describe_certificate(aws, id).await?;
        let status = found
            .as_ref()
            .map(|c| c.status.clone())
            .unwrap_or_else(|| "missing".into());
        let expiry = found
            .as_ref()
            .and_then(|c| c.der.as_deref())
            .and_then(|der| X509::from_der(der).ok())
            .map(|cert| describe_expiry(&cert))
            .unwrap_or_default();
        let names = attached_policies(aws, &arn).await?;
        println!(
            "{thing}: certificate {id} {status}, policies: {}{expiry}",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
    }
    Ok(())
}

/// `, expires <time> (in N days)`, or `, expired <time>`.
fn describe_expiry(cert: &X509) -> String {
    let Ok(now) = openssl::asn1::Asn1Time::days_from_now(0) else {
        return String::new();
    };
    match now.diff(cert.not_after()) {
        Ok(left) if left.days > 0 || (left.days == 0 && left.secs >= 0) => {
            format!(", expires {} (in {} days)", cert.not_after(), left.days)
        }
        _ => format!(", expired {}", cert.not_after()),
    }
}
