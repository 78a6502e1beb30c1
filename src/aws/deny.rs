//! The deny list: an inline policy of the devices' IAM role that refuses every request made with
//! credentials the credentials provider issued to a silenced certificate.
//!
//! STS credentials cannot be revoked, but IAM evaluates the role's policies on every request
//! made with them (documented). The credentials provider puts the certificate's id in every
//! session it issues as `credentials-iot:AwsCertificateId`, which AWS documents as a *policy
//! variable*; using it as a *condition key*, as here, is an inference that no AWS document or
//! example confirms (`scripts/check-deny.sh` tests it on an account). One statement per
//! silencing, its `Sid` the time:
//!
//! ```json
//! {"Sid": "Silenced1765000000", "Effect": "Deny", "Action": "*", "Resource": "*",
//!  "Condition": {"StringEquals": {"credentials-iot:AwsCertificateId": ["<id>", …]}}}
//! ```
//!
//! An entry is needed only while credentials issued before the silencing can still be valid:
//! once the role's longest session (its MaxSessionDuration) has passed since, it is pruned.
//! IAM allows 10,240 characters (whitespace not counted) of inline policy per role, all inline
//! policies together: about 140 certificate ids when the role has no other inline policy.
//! Certificates that do not fit are not denied, and the command says so for each device.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::client::{is_not_found, Aws};
use super::policy;

/// Name of the role's inline policy that holds the deny list.
pub const DENY_POLICY_NAME: &str = "zkiot-silenced";
/// The context key the credentials provider sets to the certificate's id.
pub const CERTIFICATE_ID_KEY: &str = "credentials-iot:AwsCertificateId";
/// IAM's limit on a role's inline policies, all together, whitespace not counted.
pub const INLINE_POLICY_BUDGET: usize = 10_240;
/// Kept past the longest session, for clocks that disagree.
const PRUNE_MARGIN_SECONDS: u64 = 300;
const SID_PREFIX: &str = "Silenced";

/// The deny list as the role holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DenyList {
    /// Certificate ids by the time (seconds since the epoch) they were silenced.
    entries: BTreeMap<u64, Vec<String>>,
    /// Characters the role's other inline policies take of the budget.
    others: usize,
}

/// What [`DenyList::add`] could not fit.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Added {
    pub denied: Vec<String>,
    pub not_fitted: Vec<String>,
}

impl DenyList {
    /// Reads the list from a policy document (others: the characters of the role's other
    /// inline policies). Statements it did not write are dropped.
    pub fn from_document(doc: Option<&Value>, others: usize) -> Self {
        let mut entries: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        let statements = match doc.and_then(|d| d.get("Statement")) {
            Some(Value::Array(list)) => list.clone(),
            Some(s @ Value::Object(_)) => vec![s.clone()],
            _ => Vec::new(),
        };
        for s in statements {
            let Some(time) = s
                .get("Sid")
                .and_then(Value::as_str)
                .and_then(|sid| sid.strip_prefix(SID_PREFIX))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            let ids = match s
                .pointer("/Condition/StringEquals")
                .and_then(|c| c.get(CERTIFICATE_ID_KEY))
            {
                Some(Value::String(id)) => vec![id.clone()],
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                _ => Vec::new(),
            };
            entries.entry(time).or_default().extend(ids);
        }
        Self { entries, others }
    }

    /// The policy document, `None` when the list is empty.
    pub fn document(&self) -> Option<Value> {
        let statements: Vec<Value> = self
            .entries
            .iter()
            .filter(|(_, ids)| !ids.is_empty())
            .map(|(time, ids)| {
                json!({
                    "Sid": format!("{SID_PREFIX}{time}"),
                    "Effect": "Deny",
                    "Action": "*",
                    "Resource": "*",
                    "Condition": {"StringEquals": {CERTIFICATE_ID_KEY: ids}}
                })
            })
            .collect();
        (!statements.is_empty()).then(|| json!({"Version": "2012-10-17", "Statement": statements}))
    }

    pub fn contains(&self, id: &str) -> bool {
        self.entries.values().any(|ids| ids.iter().any(|i| i == id))
    }

    pub fn len(&self) -> usize {
        self.entries.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops the entries silenced at least `longest_session` seconds (and a margin) before
    /// `now`: every credential issued before then has expired. Returns how many.
    pub fn prune(&mut self, now: u64, longest_session: u64) -> usize {
        let limit = now.saturating_sub(longest_session + PRUNE_MARGIN_SECONDS);
        let old: Vec<u64> = self.entries.range(..limit).map(|(t, _)| *t).collect();
        old.iter()
            .filter_map(|t| self.entries.remove(t))
            .map(|ids| ids.len())
            .sum()
    }

    /// Removes these certificates (unsilenced). Returns how many were listed.
    pub fn remove(&mut self, ids: &[String]) -> usize {
        let mut removed = 0;
        for list in self.entries.values_mut() {
            let before = list.len();
            list.retain(|i| !ids.contains(i));
            removed += before - list.len();
        }
        self.entries.retain(|_, list| !list.is_empty());
        removed
    }

    /// Adds the certificates not listed yet, silenced at `now`, as long as the role's inline
    /// policies stay within IAM's budget; the rest are returned as not fitted.
    pub fn add(&mut self, ids: &[String], now: u64) -> Added {
        let mut added = Added::default();
        for id in ids {
            if self.contains(id) {
                added.denied.push(id.clone());
                continue;
            }
            self.entries.entry(now).or_default().push(id.clone());
            if self.size() > self.budget() {
                if let Some(list) = self.entries.get_mut(&now) {
                    list.pop();
                }
                added.not_fitted.push(id.clone());
            } else {
                added.denied.push(id.clone());
            }
        }
        self.entries.retain(|_, list| !list.is_empty());
        added
    }

    /// Characters the document takes (whitespace not counted, as IAM counts).
    pub fn size(&self) -> usize {
        self.document().map_or(0, |d| compact_size(&d.to_string()))
    }

    /// Characters left for this policy.
    pub fn budget(&self) -> usize {
        INLINE_POLICY_BUDGET.saturating_sub(self.others)
    }
}

/// Characters of a policy text, whitespace not counted.
fn compact_size(text: &str) -> usize {
    text.chars().filter(|c| !c.is_whitespace()).count()
}

/// The deny list of `role` as IAM holds it, and the role's longest session in seconds.
pub async fn load(aws: &Aws, role: &str) -> Result<(DenyList, u64)> {
    let longest = aws
        .iam
        .get_role()
        .role_name(role)
        .send()
        .await
        .map_err(|e| aws.error("GetRole", e))?
        .role()
        .and_then(|r| r.max_session_duration())
        .unwrap_or(3600);
    let names: Vec<String> = aws
        .iam
        .list_role_policies()
        .role_name(role)
        .into_paginator()
        .items()
        .send()
        .try_collect()
        .await
        .map_err(|e| aws.error("ListRolePolicies", e))?;
    let mut others = 0;
    let mut ours = None;
    for name in names {
        let doc = match aws
            .iam
            .get_role_policy()
            .role_name(role)
            .policy_name(&name)
            .send()
            .await
        {
            Ok(out) => policy::url_decode(out.policy_document()),
            // Deleted meanwhile.
            Err(e) if is_not_found(&e) => continue,
            Err(e) => return Err(aws.error("GetRolePolicy", e)),
        };
        if name == DENY_POLICY_NAME {
            ours = Some(policy::parse(
                &doc,
                &format!("inline policy {DENY_POLICY_NAME} of role {role}"),
            )?);
        } else {
            others += compact_size(&doc);
        }
    }
    Ok((
        DenyList::from_document(ours.as_ref(), others),
        u64::try_from(longest).unwrap_or(3600),
    ))
}

/// Writes the list to `role` (deleting the policy once it is empty).
pub async fn save(aws: &Aws, role: &str, list: &DenyList) -> Result<()> {
    match list.document() {
        Some(doc) => aws
            .iam
            .put_role_policy()
            .role_name(role)
            .policy_name(DENY_POLICY_NAME)
            .policy_document(doc.to_string())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws.error("PutRolePolicy", e))
            .with_context(|| format!("the deny list of role {role}")),
        None => match aws
            .iam
            .delete_role_policy()
            .role_name(role)
            .policy_name(DENY_POLICY_NAME)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(aws.error("DeleteRolePolicy", e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> String {
        format!("{n:064x}")
    }

    #[test]
    fn round_trip_prune_and_remove() {
        let mut list = DenyList::default();
        assert!(list.document().is_none());
        let added = list.add(&[id(1), id(2)], 1000);
        assert_eq!(added.denied, [id(1), id(2)]);
        list.add(&[id(3), id(1)], 5000);
        assert_eq!(list.len(), 3);
        let doc = list.document().unwrap();
        assert_eq!(doc["Statement"][0]["Sid"], "Silenced1000");
        assert_eq!(
            doc["Statement"][1]["Condition"]["StringEquals"][CERTIFICATE_ID_KEY],
            json!([id(3)])
        );
        let again = DenyList::from_document(Some(&doc), 0);
        assert_eq!(again, list);
        // 3600 s sessions: the first entry goes once 3600 s and the margin have passed.
        assert_eq!(list.clone().prune(1000 + 3600 + 300, 3600), 0);
        assert_eq!(list.prune(1000 + 3600 + 301, 3600), 2);
        assert!(list.contains(&id(3)) && !list.contains(&id(1)));
        assert_eq!(list.remove(&[id(3), id(9)]), 1);
        assert!(list.is_empty() && list.document().is_none());
    }

    #[test]
    fn what_does_not_fit_is_said() {
        let mut list = DenyList::default();
        let ids: Vec<String> = (0..200).map(id).collect();
        let added = list.add(&ids, 7);
        assert!(list.size() <= INLINE_POLICY_BUDGET);
        // About 140 ids fit a role with no other inline policy.
        assert!(
            (140..=150).contains(&added.denied.len()),
            "{}",
            added.denied.len()
        );
        assert_eq!(added.denied.len() + added.not_fitted.len(), 200);
        assert_eq!(added.not_fitted[0], ids[added.denied.len()]);
        // Another inline policy of 4,000 characters leaves room for fewer.
        let mut smaller = DenyList::from_document(None, 4000);
        let fitted = smaller.add(&ids, 7).denied.len();
        assert!(fitted < 100, "{fitted}");
    }
}
