//! `zkiot aws setup`: the IAM role, its role alias, the devices' IoT policy, and the credentials
//! endpoint.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_iot::config::http::HttpResponse;
use aws_sdk_iot::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_iot::types::RoleAliasDescription;
use serde_json::Value;

use super::cli::SetupArgs;
use super::client::{is_not_found, service_code, Aws};
use super::policy;
use super::state::AwsState;
use crate::{fsutil, GlobalOpts};

/// Name of the inline policy that holds `--permissions-policy`.
pub const PERMISSIONS_POLICY_NAME: &str = "zkiot-device-permissions";
/// Name of the inline policy `--renewal` writes.
pub const RENEWAL_POLICY_NAME: &str = "zkiot-device-renewal";

/// What a device needs to pick up its renewed certificate with its temporary credentials: its
/// own Thing's principals, the certificates, and its own Thing's attributes (to record the
/// switch). `${credentials-iot:ThingName}` is the Thing the device named when it asked for
/// credentials.
pub fn renewal_policy() -> Value {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["iot:ListThingPrincipals", "iot:UpdateThing"],
                "Resource": "arn:aws:iot:*:*:thing/${credentials-iot:ThingName}"
            },
            {
                "Effect": "Allow",
                "Action": "iot:DescribeCertificate",
                "Resource": "arn:aws:iot:*:*:cert/*"
            }
        ]
    })
}

/// Range AWS IoT accepts for a role alias's credential duration, in seconds.
pub const CREDENTIAL_DURATION_RANGE: std::ops::RangeInclusive<i32> = 900..=43200;
/// IAM's default MaxSessionDuration of a role.
const IAM_DEFAULT_MAX_SESSION: i32 = 3600;
/// AWS keeps at most this many versions of an IoT policy.
const MAX_POLICY_VERSIONS: usize = 5;

/// What AWS IoT answers (HTTP 400) a call naming an IAM role it cannot use. Right after the role
/// was created or changed that is IAM's propagation delay ("If the role was just created or
/// updated, please try again in a few seconds"); every other input of the role alias calls is
/// checked here before they are made, so this code means the role.
const ROLE_NOT_USABLE: &str = "InvalidRequestException";
/// First pause before retrying a call AWS IoT refused for a role not yet propagated; doubled
/// after each refusal up to [`MAX_ROLE_RETRY_DELAY`].
const FIRST_ROLE_RETRY_DELAY: Duration = Duration::from_millis(500);
const MAX_ROLE_RETRY_DELAY: Duration = Duration::from_secs(8);

/// The checked inputs of `aws setup`; everything here is validated before any call to AWS.
#[derive(Debug, Clone)]
pub struct Settings {
    pub role_name: String,
    pub role_alias: String,
    pub policy_name: String,
    pub duration: i32,
    pub permissions: Option<Value>,
    /// Whether the role also gets [`renewal_policy`].
    pub renewal: bool,
    /// How long calls naming a role this run created or changed wait for IAM to propagate it.
    pub iam_wait: Duration,
}

impl Settings {
    pub fn from_args(args: &SetupArgs) -> Result<Self> {
        if !CREDENTIAL_DURATION_RANGE.contains(&args.duration) {
            bail!(
                "--duration {} is out of range: AWS IoT role aliases allow {} to {} seconds",
                args.duration,
                CREDENTIAL_DURATION_RANGE.start(),
                CREDENTIAL_DURATION_RANGE.end()
            );
        }
        check_name("--role-name", &args.role_name, 64, "+=,.@_-")?;
        check_name("--role-alias", &args.role_alias, 128, "=,@-")?;
        check_name("--policy-name", &args.policy_name, 128, "+=.@-_")?;
        let permissions = match &args.permissions_policy {
            None => None,
            Some(path) => {
                let text = String::from_utf8(fsutil::read(path)?)
                    .with_context(|| format!("{} is not UTF-8 text", path.display()))?;
                let doc = policy::parse(&text, &path.display().to_string())?;
                policy::check_iam_policy(&doc)
                    .with_context(|| format!("{} is not an IAM policy", path.display()))?;
                Some(doc)
            }
        };
        Ok(Self {
            role_name: args.role_name.clone(),
            role_alias: args.role_alias.clone(),
            policy_name: args.policy_name.clone(),
            duration: args.duration,
            permissions,
            renewal: args.renewal,
            iam_wait: args.iam_wait,
        })
    }
}

fn check_name(flag: &str, name: &str, max: usize, extra: &str) -> Result<()> {
    if name.is_empty() || name.len() > max {
        bail!("{flag} must be 1 to {max} characters long");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || extra.contains(*c)))
    {
        bail!("{flag} {name:?} contains {c:?}, which AWS does not allow there");
    }
    Ok(())
}

pub async fn setup(aws: &Aws, global: &GlobalOpts, settings: &Settings) -> Result<()> {
    let mut state = AwsState::load(&global.home, aws.endpoint_url.as_deref(), &aws.region)?;

    let role = ensure_role(aws, settings).await?;
    let role_arn = role.arn.clone();
    state.role_name = Some(settings.role_name.clone());
    state.role_arn = Some(role_arn.clone());
    state.save(&global.home)?;

    ensure_permissions(aws, settings).await?;
    if settings.renewal {
        ensure_role_policy(
            aws,
            &settings.role_name,
            RENEWAL_POLICY_NAME,
            &renewal_policy(),
        )
        .await?;
    }

    let alias_arn = ensure_role_alias(aws, settings, &role).await?;
    state.role_alias = Some(settings.role_alias.clone());
    state.role_alias_arn = Some(alias_arn.clone());
    state.credential_duration_seconds = Some(settings.duration);
    state.save(&global.home)?;

    let policy_arn = ensure_iot_policy(aws, &settings.policy_name, &alias_arn).await?;
    state.policy_name = Some(settings.policy_name.clone());
    state.policy_arn = policy_arn;
    state.save(&global.home)?;

    let endpoint = match &state.credentials_endpoint {
        Some(endpoint) => endpoint.clone(),
        None => {
            let endpoint = aws
                .iot
                .describe_endpoint()
                .endpoint_type("iot:CredentialProvider")
                .send()
                .await
                .map_err(|e| aws.error("DescribeEndpoint", e))?
                .endpoint_address()
                .context("DescribeEndpoint returned no address")?
                .to_string();
            state.credentials_endpoint = Some(endpoint.clone());
            state.save(&global.home)?;
            endpoint
        }
    };

    println!("credentials endpoint: {endpoint}");
    println!("role alias: {} ({alias_arn})", settings.role_alias);
    println!(
        "silencing window: credentials issued to a device before `zkiot aws silence` are \
         refused by the role's Deny ({}) once IAM applies it (\"a few minutes\" per AWS), and \
         expire at most {} s ({} min) after they were issued in any case",
        super::deny::DENY_POLICY_NAME,
        settings.duration,
        settings.duration / 60
    );
    println!(
        "next: on each device, `zkiot device csr`, then here `zkiot ca sign` and \
         `zkiot aws register-device --thing <name>`"
    );
    Ok(())
}

/// The IAM role as `ensure_role` left it.
struct EnsuredRole {
    name: String,
    arn: String,
    /// Created or changed by this run, so IAM may not have propagated it yet.
    changed_now: bool,
}

/// The role exists, trusts the credentials provider, and allows sessions of `duration`.
async fn ensure_role(aws: &Aws, settings: &Settings) -> Result<EnsuredRole> {
    let name = &settings.role_name;
    match aws.iam.get_role().role_name(name).send().await {
        Ok(out) => {
            let role = out.role().context("GetRole returned no role")?;
            let trust = role
                .assume_role_policy_document()
                .map(policy::url_decode)
                .unwrap_or_default();
            let trust = policy::parse(&trust, &format!("the trust policy of role {name}"))?;
            if !policy::trusts_credentials_provider(&trust) {
                bail!(
                    "IAM role {name} exists but does not trust {}; choose another --role-name \
                     or add that service principal to its trust policy",
                    policy::CREDENTIALS_PROVIDER_PRINCIPAL
                );
            }
            let max_session = role
                .max_session_duration()
                .unwrap_or(IAM_DEFAULT_MAX_SESSION);
            let raise_max_session = settings.duration > max_session;
            if raise_max_session {
                aws.iam
                    .update_role()
                    .role_name(name)
                    .max_session_duration(settings.duration)
                    .send()
                    .await
                    .map_err(|e| aws.error("UpdateRole", e))?;
                println!(
                    "IAM role {name}: raised MaxSessionDuration from {max_session} to {} s",
                    settings.duration
                );
            } else {
                println!("IAM role {name}: exists, trusts the credentials provider");
            }
            Ok(EnsuredRole {
                name: name.clone(),
                arn: role.arn().to_string(),
                changed_now: raise_max_session,
            })
        }
        Err(e) if is_not_found(&e) => {
            let created = aws
                .iam
                .create_role()
                .role_name(name)
                .description("Assumed by zkiot devices through the AWS IoT credentials provider")
                .assume_role_policy_document(policy::role_trust_policy().to_string())
                .max_session_duration(settings.duration.max(IAM_DEFAULT_MAX_SESSION))
                .send()
                .await
                .map_err(|e| aws.error("CreateRole", e))?;
            let arn = created
                .role()
                .map(|r| r.arn().to_string())
                .context("CreateRole returned no role")?;
            println!("IAM role {name}: created ({arn})");
            Ok(EnsuredRole {
                name: name.clone(),
                arn,
                changed_now: true,
            })
        }
        Err(e) => Err(aws.error("GetRole", e)),
    }
}

/// Puts `--permissions-policy` on the role as an inline policy (unchanged if already equal).
async fn ensure_permissions(aws: &Aws, settings: &Settings) -> Result<()> {
    let Some(wanted) = &settings.permissions else {
        println!(
            "IAM role {}: permissions left as they are (pass --permissions-policy FILE to grant some)",
            settings.role_name
        );
        return Ok(());
    };
    ensure_role_policy(aws, &settings.role_name, PERMISSIONS_POLICY_NAME, wanted).await
}

/// Puts `wanted` on the role as the inline policy `name` (unchanged if already equal).
async fn ensure_role_policy(aws: &Aws, role: &str, name: &str, wanted: &Value) -> Result<()> {
    let current = aws
        .iam
        .get_role_policy()
        .role_name(role)
        .policy_name(name)
        .send()
        .await;
    match current {
        Ok(out) => {
            let doc = policy::url_decode(out.policy_document());
            if serde_json::from_str::<Value>(&doc).ok().as_ref() == Some(wanted) {
                println!("IAM role {role}: permissions policy {name} unchanged");
                return Ok(());
            }
        }
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(aws.error("GetRolePolicy", e)),
    }
    aws.iam
        .put_role_policy()
        .role_name(role)
        .policy_name(name)
        .policy_document(wanted.to_string())
        .send()
        .await
        .map_err(|e| aws.error("PutRolePolicy", e))?;
    println!("IAM role {role}: permissions policy {name} written");
    Ok(())
}

/// The role alias exists, names the role and has the duration asked for.
async fn ensure_role_alias(aws: &Aws, settings: &Settings, role: &EnsuredRole) -> Result<String> {
    let alias = &settings.role_alias;
    let existing = match aws.iot.describe_role_alias().role_alias(alias).send().await {
        Ok(out) => Some(
            out.role_alias_description()
                .context("DescribeRoleAlias returned no description")?
                .clone(),
        ),
        Err(e) if is_not_found(&e) => None,
        Err(e) => return Err(aws.error("DescribeRoleAlias", e)),
    };
    let existing = match existing {
        Some(desc) => desc,
        None => {
            let created = call_naming_role(role, settings.iam_wait, "CreateRoleAlias", || {
                aws.iot
                    .create_role_alias()
                    .role_alias(alias)
                    .role_arn(&role.arn)
                    .credential_duration_seconds(settings.duration)
                    .send()
            })
            .await?;
            match created {
                Ok(out) => {
                    let arn = out
                        .role_alias_arn()
                        .context("CreateRoleAlias returned no ARN")?
                        .to_string();
                    println!(
                        "role alias {alias}: created ({arn}, {} s)",
                        settings.duration
                    );
                    return Ok(arn);
                }
                // An earlier attempt took effect but its answer was lost, or another run made
                // it meanwhile: converge on what is there.
                Err(e) if service_code(&e) == Some("ResourceAlreadyExistsException") => aws
                    .iot
                    .describe_role_alias()
                    .role_alias(alias)
                    .send()
                    .await
                    .map_err(|e| aws.error("DescribeRoleAlias", e))?
                    .role_alias_description()
                    .context("DescribeRoleAlias returned no description")?
                    .clone(),
                Err(e) => return Err(aws.error("CreateRoleAlias", e)),
            }
        }
    };
    update_role_alias(aws, settings, role, &existing).await
}

/// Brings an existing role alias to the role and duration asked for.
async fn update_role_alias(
    aws: &Aws,
    settings: &Settings,
    role: &EnsuredRole,
    desc: &RoleAliasDescription,
) -> Result<String> {
    let alias = &settings.role_alias;
    let arn = desc
        .role_alias_arn()
        .context("DescribeRoleAlias returned no ARN")?
        .to_string();
    let same_role = desc.role_arn() == Some(role.arn.as_str());
    let same_duration = desc.credential_duration_seconds() == Some(settings.duration);
    if same_role && same_duration {
        println!("role alias {alias}: exists ({} s)", settings.duration);
        return Ok(arn);
    }
    call_naming_role(role, settings.iam_wait, "UpdateRoleAlias", || {
        aws.iot
            .update_role_alias()
            .role_alias(alias)
            .role_arn(&role.arn)
            .credential_duration_seconds(settings.duration)
            .send()
    })
    .await?
    .map_err(|e| aws.error("UpdateRoleAlias", e))?;
    println!(
        "role alias {alias}: updated to role {}, {} s",
        role.arn, settings.duration
    );
    Ok(arn)
}

/// Makes a call that names `role` (creating or updating a role alias, both idempotent: a
/// refused call changed nothing), retrying with backoff while AWS IoT refuses the role, for at
/// most `wait`, when this run created or changed the role: IAM has not propagated it yet. A
/// role that existed unchanged before this run has had time to propagate, so a refusal means
/// the role itself is wrong (trust policy, permissions boundary, the caller's iam:PassRole):
/// waiting would only delay that answer, so it fails at once. Returns the call's last outcome,
/// or an error naming the role once the refusal is final.
async fn call_naming_role<T, E, F, Fut>(
    role: &EnsuredRole,
    wait: Duration,
    operation: &str,
    mut call: F,
) -> Result<Result<T, SdkError<E, HttpResponse>>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    let mut delay = FIRST_ROLE_RETRY_DELAY;
    loop {
        let outcome = call().await;
        let refusal = match &outcome {
            Err(e) if service_code(e) == Some(ROLE_NOT_USABLE) => {
                e.message().unwrap_or("no message").to_string()
            }
            _ => return Ok(outcome),
        };
        if !role.changed_now {
            return Err(anyhow!(
                "{operation} failed: {ROLE_NOT_USABLE}: {refusal} (AWS IoT cannot use IAM role {}, \
                 which existed unchanged before this run, so this is not IAM's propagation \
                 delay: check the role, and that you may iam:GetRole and iam:PassRole it)",
                role.name
            ));
        }
        let waited = started.elapsed();
        if waited >= wait {
            return Err(anyhow!(
                "{operation} failed: AWS IoT still cannot use IAM role {} after {:.1} s of waiting \
                 for IAM to propagate it ({ROLE_NOT_USABLE}: {refusal}); run `zkiot aws setup` \
                 again in a minute, or wait longer with --iam-wait",
                role.name,
                waited.as_secs_f64()
            ));
        }
        let pause = delay.min(wait - waited);
        println!(
            "IAM role {}: AWS IoT cannot use it yet (IAM is still propagating it); {operation} \
             again in {:.1} s (waited {:.1} s of {} s)",
            role.name,
            pause.as_secs_f64(),
            waited.as_secs_f64(),
            wait.as_secs()
        );
        tokio::time::sleep(pause).await;
        delay = (delay * 2).min(MAX_ROLE_RETRY_DELAY);
    }
}

/// The IoT policy exists and its default version is exactly the document for this alias.
async fn ensure_iot_policy(aws: &Aws, name: &str, alias_arn: &str) -> Result<Option<String>> {
    let wanted = policy::device_iot_policy(alias_arn);
    let allows = format!(
        "allows {} on {alias_arn}, and MQTT with the Thing's name as client id on topics {}/<thing>/*",
        policy::ASSUME_ROLE_WITH_CERTIFICATE,
        policy::DEVICE_TOPIC_PREFIX
    );
    match aws.iot.get_policy().policy_name(name).send().await {
        Ok(out) => {
            let current = out
                .policy_document()
                .and_then(|d| serde_json::from_str::<Value>(d).ok());
            let arn = out.policy_arn().map(str::to_string);
            if current.as_ref() == Some(&wanted) {
                println!("IoT policy {name}: exists, {allows}");
                return Ok(arn);
            }
            make_room_for_policy_version(aws, name).await?;
            aws.iot
                .create_policy_version()
                .policy_name(name)
                .policy_document(wanted.to_string())
                .set_as_default(true)
                .send()
                .await
                .map_err(|e| aws.error("CreatePolicyVersion", e))?;
            println!("IoT policy {name}: new default version, {allows}");
            Ok(arn)
        }
        Err(e) if is_not_found(&e) => {
            let created = aws
                .iot
                .create_policy()
                .policy_name(name)
                .policy_document(wanted.to_string())
                .send()
                .await;
            match created {
                Ok(out) => {
                    println!("IoT policy {name}: created, {allows}");
                    Ok(out.policy_arn().map(str::to_string))
                }
                Err(e) if service_code(&e) == Some("ResourceAlreadyExistsException") => {
                    bail!("IoT policy {name} appeared while this ran; run `zkiot aws setup` again")
                }
                Err(e) => Err(aws.error("CreatePolicy", e)),
            }
        }
        Err(e) => Err(aws.error("GetPolicy", e)),
    }
}

/// AWS keeps five versions of a policy; drop the oldest non-default one when full.
async fn make_room_for_policy_version(aws: &Aws, name: &str) -> Result<()> {
    let versions = aws
        .iot
        .list_policy_versions()
        .policy_name(name)
        .send()
        .await
        .map_err(|e| aws.error("ListPolicyVersions", e))?;
    let versions = versions.policy_versions();
    if versions.len() < MAX_POLICY_VERSIONS {
        return Ok(());
    }
    let oldest = versions
        .iter()
        .filter(|v| !v.is_default_version())
        .min_by_key(|v| {
            v.version_id()
                .and_then(|id| id.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        })
        .and_then(|v| v.version_id())
        .context("the IoT policy has no version that can be deleted")?;
    aws.iot
        .delete_policy_version()
        .policy_name(name)
        .policy_version_id(oldest)
        .send()
        .await
        .map_err(|e| aws.error("DeletePolicyVersion", e))?;
    Ok(())
}
