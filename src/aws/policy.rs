//! The policy documents the credentials provider needs, and the checks AWS makes on them.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// The service principal of the AWS IoT credentials provider.
pub const CREDENTIALS_PROVIDER_PRINCIPAL: &str = "credentials.iot.amazonaws.com";
/// The IoT action that lets a certificate exchange itself for a role alias's credentials.
pub const ASSUME_ROLE_WITH_CERTIFICATE: &str = "iot:AssumeRoleWithCertificate";

/// Trust policy of the device role: only the credentials provider may assume it.
pub fn role_trust_policy() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": CREDENTIALS_PROVIDER_PRINCIPAL},
            "Action": "sts:AssumeRole"
        }]
    })
}

/// The MQTT topics a device may use are those under `<this>/<its Thing name>/`.
pub const DEVICE_TOPIC_PREFIX: &str = "things";
/// AWS IoT resolves this to the Thing attached to the connecting certificate, named by the
/// MQTT client id.
const CONNECTED_THING: &str = "${iot:Connection.Thing.ThingName}";

/// IoT policy attached to every device certificate: it may use this role alias, and MQTT as
/// its own Thing (client id = Thing name) on its own topics, nothing else.
pub fn device_iot_policy(role_alias_arn: &str) -> Value {
    // arn:<partition>:iot:<region>:<account>, the prefix of every IoT resource ARN.
    let iot_arn = role_alias_arn
        .split_once(":rolealias/")
        .map_or(role_alias_arn, |(prefix, _)| prefix);
    let topics = format!("{DEVICE_TOPIC_PREFIX}/{CONNECTED_THING}/*");
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ASSUME_ROLE_WITH_CERTIFICATE,
                "Resource": role_alias_arn
            },
            {
                "Effect": "Allow",
                "Action": "iot:Connect",
                "Resource": format!("{iot_arn}:client/{CONNECTED_THING}"),
                "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}
            },
            {
                "Effect": "Allow",
                "Action": ["iot:Publish", "iot:Receive"],
                "Resource": format!("{iot_arn}:topic/{topics}")
            },
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": format!("{iot_arn}:topicfilter/{topics}")
            }
        ]
    })
}

/// Whether a trust policy lets the credentials provider call `sts:AssumeRole`.
pub fn trusts_credentials_provider(trust: &Value) -> bool {
    statements(trust).iter().any(|s| {
        s.get("Effect").and_then(Value::as_str) == Some("Allow")
            && s.get("Condition").is_none()
            && s.get("Principal")
                .and_then(|p| p.get("Service"))
                .map(|svc| strings(svc).contains(&CREDENTIALS_PROVIDER_PRINCIPAL))
                .unwrap_or(false)
            && s.get("Action")
                .map(|a| {
                    strings(a)
                        .iter()
                        .any(|a| action_matches(a, "sts:AssumeRole"))
                })
                .unwrap_or(false)
    })
}

/// Checks that `doc` is shaped like an IAM policy: a `Statement` (object or non-empty array)
/// whose entries have an `Effect` of Allow or Deny, an action and a resource.
pub fn check_iam_policy(doc: &Value) -> Result<()> {
    let Some(statement) = doc.get("Statement") else {
        bail!("the policy has no \"Statement\"");
    };
    let list = match statement {
        Value::Array(list) if !list.is_empty() => list.clone(),
        Value::Object(_) => vec![statement.clone()],
        _ => bail!("the policy's \"Statement\" must be an object or a non-empty list"),
    };
    for (i, s) in list.iter().enumerate() {
        match s.get("Effect").and_then(Value::as_str) {
            Some("Allow" | "Deny") => {}
            _ => bail!(
                "statement {} needs \"Effect\": \"Allow\" or \"Deny\"",
                i + 1
            ),
        }
        if s.get("Action").is_none() && s.get("NotAction").is_none() {
            bail!("statement {} has no \"Action\"", i + 1);
        }
        if s.get("Resource").is_none() && s.get("NotResource").is_none() {
            bail!("statement {} has no \"Resource\"", i + 1);
        }
    }
    Ok(())
}

/// Parses a JSON policy document, naming `what` in the error.
pub fn parse(text: &str, what: &str) -> Result<Value> {
    serde_json::from_str(text).with_context(|| format!("{what} is not valid JSON"))
}

/// IAM returns policy documents URL-encoded (RFC 3986); this undoes it. Text that is not
/// encoded comes back unchanged.
pub fn url_decode(text: &str) -> String {
    if !text.contains('%') {
        return text.to_string();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if digits.len() == 2 && digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                let b = u8::from_str_radix(digits, 16).unwrap_or(b'%');
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn statements(doc: &Value) -> Vec<Value> {
    match doc.get("Statement") {
        Some(Value::Array(list)) => list.clone(),
        Some(s @ Value::Object(_)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// IAM action matching: case-insensitive, with `*` and `?` wildcards.
fn action_matches(pattern: &str, action: &str) -> bool {
    wildcard_match(&pattern.to_ascii_lowercase(), &action.to_ascii_lowercase())
}

/// `*` matches any run of characters, `?` any one character.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_policy_is_recognised() {
        assert!(trusts_credentials_provider(&role_trust_policy()));
        let other = json!({"Statement": {"Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}});
        assert!(!trusts_credentials_provider(&other));
        let star = json!({"Statement": {"Effect": "Allow",
            "Principal": {"Service": ["ec2.amazonaws.com", CREDENTIALS_PROVIDER_PRINCIPAL]},
            "Action": "sts:*"}});
        assert!(trusts_credentials_provider(&star));
    }

    #[test]
    fn iam_policy_shape() {
        assert!(check_iam_policy(&role_trust_policy()).is_err()); // no Resource
        assert!(check_iam_policy(&device_iot_policy("arn:x")).is_ok());
        assert!(check_iam_policy(&json!({"Statement": []})).is_err());
        assert!(check_iam_policy(&json!({"Statement": {"Effect": "Maybe",
            "Action": "*", "Resource": "*"}}))
        .is_err());
    }

    #[test]
    fn device_policy_allows_the_role_alias_and_mqtt_as_its_own_thing() {
        let alias = "arn:aws:iot:eu-west-1:123456789012:rolealias/zkiot-device-alias";
        let doc = device_iot_policy(alias);
        let statements = statements(&doc);
        let allowed = |action: &str| -> Vec<String> {
            statements
                .iter()
                .filter(|s| s["Effect"] == "Allow" && strings(&s["Action"]).contains(&action))
                .flat_map(|s| strings(&s["Resource"]).into_iter().map(str::to_string))
                .collect()
        };
        let iot = "arn:aws:iot:eu-west-1:123456789012";
        let thing = "${iot:Connection.Thing.ThingName}";
        assert_eq!(allowed(ASSUME_ROLE_WITH_CERTIFICATE), [alias]);
        assert_eq!(allowed("iot:Connect"), [format!("{iot}:client/{thing}")]);
        for action in ["iot:Publish", "iot:Receive"] {
            assert_eq!(allowed(action), [format!("{iot}:topic/things/{thing}/*")]);
        }
        assert_eq!(
            allowed("iot:Subscribe"),
            [format!("{iot}:topicfilter/things/{thing}/*")]
        );
        let connect = statements.iter().find(|s| s["Action"] == "iot:Connect");
        assert_eq!(
            connect.unwrap()["Condition"]["Bool"]["iot:Connection.Thing.IsAttached"],
            "true"
        );
    }

    #[test]
    fn decoding_and_wildcards() {
        assert_eq!(url_decode("%7B%22a%22%3A1%7D"), "{\"a\":1}");
        assert_eq!(url_decode("{\"a\":1}"), "{\"a\":1}");
        assert_eq!(url_decode("100%"), "100%");
        assert!(wildcard_match(
            "arn:aws:iot:*:*:rolealias/*",
            "arn:aws:iot:r:1:rolealias/a"
        ));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "abbc"));
        assert!(!wildcard_match("rolealias/a", "rolealias/ab"));
    }
}
