//! Fleet indexing, when the account has it on: `fleet renew` asks SearchIndex for the Things that
//! need a look instead of reading every Thing's page (ListThings).
//!
//! The queries match the attributes of `attributes.rs` exactly (AWS's index also takes ranges;
//! moto's, which the tests run against, does not): `zkiot_expires` on each day from `--within`
//! ago to `--within` ahead, `zkiot_renewal:waiting`, and `zkiot_renewal:retiring-<day>` on each
//! of the [`LOOKBACK_DAYS`] days up to `--grace` ago, at most [`TERMS_PER_QUERY`] terms a query.
//!
//! What the index cannot find: Things without these attributes (from before them, or from other
//! tools), dates older than the look-back, and a CSR a device posted for a fresh key (its value
//! is unique) while its certificate does not expire within `--within` (a device posts one when
//! its certificate expires within its own window, the same 30 days by default). So the index is used only when this machine
//! walked the whole fleet within [`WALK_EVERY`] (`fleet/walked.json`, a cache: a machine
//! without it walks, and the walk writes the attributes of Things that had none). The index is
//! also eventually consistent: a Thing it shows out of date only costs a look, which reads the
//! Thing itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use aws_sdk_iot::types::ThingIndexingMode;
use serde::{Deserialize, Serialize};

use super::attributes::{EXPIRES_ATTRIBUTE, RENEWAL_ATTRIBUTE, RETIRING_PREFIX, WAITING};
use super::client::service_code;
use super::days::day;
use super::inventory::ThingEntry;
use super::Aws;
use crate::fsutil;

/// How often the whole fleet is walked even with the index on, in seconds.
pub(crate) const WALK_EVERY: i64 = 7 * 86_400;
/// How far back `retiring-<day>` is searched beyond `--grace`, in days.
pub(crate) const LOOKBACK_DAYS: i64 = 30;
/// Terms joined by OR in one query (AWS allows 12 terms a query).
const TERMS_PER_QUERY: usize = 10;
/// SearchIndex gives at most 100 Things a page.
const PAGE_SIZE: i32 = 100;
const DAY: i64 = 86_400;

/// Whether the account indexes its Things (thing indexing REGISTRY or more). An operator not
/// allowed to ask gets the walk.
pub(crate) async fn thing_indexing_on(aws: &Aws) -> Result<bool> {
    let config = match aws.iot.get_indexing_configuration().send().await {
        Ok(config) => config,
        Err(e) if service_code(&e).is_some() => return Ok(false),
        Err(e) => return Err(aws.error("GetIndexingConfiguration", e)),
    };
    Ok(config
        .thing_indexing_configuration()
        .is_some_and(|c| *c.thing_indexing_mode() != ThingIndexingMode::Off))
}

/// The queries that find every Thing `look` would look at, but those without attributes.
pub(crate) fn queries(now: i64, within: i64, grace: i64) -> Vec<String> {
    let mut terms = Vec::new();
    let mut t = now.saturating_sub(within);
    while t <= now.saturating_add(within) {
        terms.push(format!("attributes.{EXPIRES_ATTRIBUTE}:{}", day(t)));
        t += DAY;
    }
    terms.push(format!("attributes.{RENEWAL_ATTRIBUTE}:{WAITING}"));
    let last = now.saturating_sub(grace);
    for back in 0..=LOOKBACK_DAYS {
        terms.push(format!(
            "attributes.{RENEWAL_ATTRIBUTE}:{RETIRING_PREFIX}{}",
            day(last - back * DAY)
        ));
    }
    terms
        .chunks(TERMS_PER_QUERY)
        .map(|chunk| chunk.join(" OR "))
        .collect()
}

/// The Things the queries find, each once, with their attributes.
pub(crate) async fn search(aws: &Aws, queries: &[String]) -> Result<Vec<ThingEntry>> {
    let mut found = BTreeMap::new();
    for query in queries {
        let mut next = None;
        loop {
            let page = aws
                .iot
                .search_index()
                .query_string(query)
                .max_results(PAGE_SIZE)
                .set_next_token(next)
                .send()
                .await
                .map_err(|e| aws.error("SearchIndex", e))?;
            for thing in page.things() {
                if let Some(name) = thing.thing_name() {
                    found.insert(
                        name.to_string(),
                        thing.attributes().cloned().unwrap_or_default(),
                    );
                }
            }
            next = page.next_token().map(str::to_string);
            if next.is_none() {
                break;
            }
        }
    }
    Ok(found
        .into_iter()
        .map(|(name, attributes)| ThingEntry { name, attributes })
        .collect())
}

/// When this machine last walked the fleet of an endpoint and region.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Walks {
    /// `<endpoint or "aws"> <region>` → Unix time.
    walked: BTreeMap<String, i64>,
}

/// `fleet/walked.json` under `home`.
pub(crate) struct WalkRecord {
    path: PathBuf,
    key: String,
    walks: Walks,
}

impl WalkRecord {
    pub(crate) fn load(home: &Path, aws: &Aws) -> Self {
        let path = home.join("fleet").join("walked.json");
        let walks = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let key = format!(
            "{} {}",
            aws.endpoint_url.as_deref().unwrap_or("aws"),
            aws.region
        );
        Self { path, key, walks }
    }

    /// Whether the last walk is recent enough for the index to be trusted with the rest.
    pub(crate) fn recent(&self, now: i64) -> bool {
        self.walks
            .walked
            .get(&self.key)
            .is_some_and(|at| now.saturating_sub(*at) < WALK_EVERY)
    }

    /// When the last walk was, if any.
    pub(crate) fn last(&self) -> Option<i64> {
        self.walks.walked.get(&self.key).copied()
    }

    pub(crate) fn walked(&mut self, now: i64) -> Result<()> {
        self.walks.walked.insert(self.key.clone(), now);
        let mut text = serde_json::to_vec_pretty(&self.walks)?;
        text.push(b'\n');
        fsutil::write_atomic(&self.path, &text, fsutil::PUBLIC_MODE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::attributes::look;
    use std::collections::HashMap;

    #[test]
    fn the_queries_find_what_a_walk_would_look_at() {
        let now = 1_796_644_800; // 2026-12-07 12:00 UTC
        let within = 30 * DAY;
        let grace = 7 * DAY;
        let queries = queries(now, within, grace);
        let terms: Vec<&str> = queries.iter().flat_map(|q| q.split(" OR ")).collect();
        assert!(queries
            .iter()
            .all(|q| q.split(" OR ").count() <= TERMS_PER_QUERY));
        assert_eq!(terms.len(), 61 + 1 + 31);
        // Every attribute value a look is due for, from a day ago to the end of the window, is
        // searched for.
        for offset in -30..=29 {
            let expires = day(now + offset * DAY);
            let attributes = HashMap::from([(EXPIRES_ATTRIBUTE.to_string(), expires.clone())]);
            assert!(look(&attributes, now, within, grace).is_some(), "{expires}");
            assert!(
                terms.contains(&format!("attributes.zkiot_expires:{expires}").as_str()),
                "{expires}"
            );
        }
        assert!(terms.contains(&"attributes.zkiot_renewal:waiting"));
        for back in 7..=37 {
            let retiring = format!("retiring-{}", day(now - back * DAY));
            let attributes = HashMap::from([
                (EXPIRES_ATTRIBUTE.to_string(), day(now + 300 * DAY)),
                (RENEWAL_ATTRIBUTE.to_string(), retiring.clone()),
            ]);
            assert!(
                look(&attributes, now, within, grace).is_some(),
                "{retiring}"
            );
            assert!(
                terms.contains(&format!("attributes.zkiot_renewal:{retiring}").as_str()),
                "{retiring}"
            );
        }
    }
}
