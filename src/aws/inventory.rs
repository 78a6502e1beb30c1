//! The fleet read a page at a time, as AWS IoT keeps it: our CA's certificates
//! (ListCertificatesByCA, 250 a page, each with its status) and the
//! Things with their attributes (ListThings, 250 a page). A fleet of N devices costs about
//! N / 125 calls, instead of calls per device.

use std::collections::HashMap;

use anyhow::Result;
use aws_sdk_iot::types::CertificateStatus;

use super::attributes::{EXPIRES_ATTRIBUTE, RENEWAL_ATTRIBUTE, RETIRING_PREFIX, WAITING};
use super::Aws;
use crate::device::renewal::CURRENT_CERTIFICATE_ATTRIBUTE;
use crate::device::report::{SEEN_ATTRIBUTE, TAMPER_ATTRIBUTE};

/// The largest page ListCertificatesByCA and ListThings give.
pub(crate) const PAGE_SIZE: i32 = 250;

/// One of our CA's certificates, as its page lists it.
#[derive(Debug, Clone)]
pub(crate) struct CaCertificateEntry {
    pub id: String,
    pub status: CertificateStatus,
}

/// Every certificate registered with the CA `ca_id`, by id.
pub(crate) async fn certificates_of_ca(
    aws: &Aws,
    ca_id: &str,
) -> Result<HashMap<String, CaCertificateEntry>> {
    let mut pages = aws
        .iot
        .list_certificates_by_ca()
        .ca_certificate_id(ca_id)
        .page_size(PAGE_SIZE)
        .into_paginator()
        .items()
        .send();
    let mut certificates = HashMap::new();
    while let Some(item) = pages.next().await {
        let item = item.map_err(|e| aws.error("ListCertificatesByCA", e))?;
        let Some(id) = item.certificate_id() else {
            continue;
        };
        certificates.insert(
            id.to_string(),
            CaCertificateEntry {
                id: id.to_string(),
                status: item
                    .status()
                    .cloned()
                    .unwrap_or_else(|| CertificateStatus::from("UNKNOWN")),
            },
        );
    }
    Ok(certificates)
}

/// A Thing, as its page lists it.
#[derive(Debug, Clone)]
pub(crate) struct ThingEntry {
    pub name: String,
    pub attributes: HashMap<String, String>,
}

/// Every Thing with its attributes, in the order AWS IoT lists them.
pub(crate) async fn things(aws: &Aws) -> Result<Vec<ThingEntry>> {
    let mut pages = aws
        .iot
        .list_things()
        .max_results(PAGE_SIZE)
        .into_paginator()
        .items()
        .send();
    let mut things = Vec::new();
    while let Some(item) = pages.next().await {
        let item = item.map_err(|e| aws.error("ListThings", e))?;
        let Some(name) = item.thing_name() else {
            continue;
        };
        things.push(ThingEntry {
            name: name.to_string(),
            attributes: item.attributes().cloned().unwrap_or_default(),
        });
    }
    Ok(things)
}

/// The certificate id of a principal's ARN, if it is a certificate.
pub(crate) fn certificate_id(principal_arn: &str) -> Option<&str> {
    principal_arn.split_once(":cert/").map(|(_, id)| id)
}

/// `aws status` for the whole fleet, from the pages alone: how many of our CA's certificates
/// have each status, and one line per Thing from its attributes (`zkiot aws status --thing`
/// reads one Thing's certificates and policies).
pub(crate) async fn print_fleet(aws: &Aws, ca_id: Option<&str>) -> Result<()> {
    if let Some(ca_id) = ca_id {
        let mut by_status = std::collections::BTreeMap::new();
        for cert in certificates_of_ca(aws, ca_id).await?.values() {
            *by_status
                .entry(cert.status.as_str().to_string())
                .or_insert(0) += 1;
        }
        let counts: Vec<String> = by_status
            .iter()
            .map(|(status, n)| format!("{n} {status}"))
            .collect();
        println!(
            "certificates of our CA: {}",
            if counts.is_empty() {
                "none".to_string()
            } else {
                counts.join(", ")
            }
        );
    }
    let things = things(aws).await?;
    println!("things: {}", things.len());
    for thing in &things {
        println!("{}", thing_line(thing));
    }
    Ok(())
}

/// `name: expires 2027-01-13, uses certificate <id>, renewal waiting for the device to switch,
/// last seen 2026-12-07T04:00:00Z`, and the perimeter breaches the device reported.
fn thing_line(thing: &ThingEntry) -> String {
    let a = &thing.attributes;
    let mut line = match a.get(EXPIRES_ATTRIBUTE) {
        Some(expires) => format!("{}: expires {expires}", thing.name),
        None => format!(
            "{}: no zkiot record yet (fleet renew writes it; zkiot aws status --thing {} reads the Thing)",
            thing.name, thing.name
        ),
    };
    if let Some(current) = a.get(CURRENT_CERTIFICATE_ATTRIBUTE) {
        line.push_str(&format!(", uses certificate {current}"));
    }
    match a.get(RENEWAL_ATTRIBUTE).map(String::as_str) {
        Some(WAITING) => line.push_str(", renewal waiting for the device to switch"),
        Some(value) => {
            if let Some(since) = value.strip_prefix(RETIRING_PREFIX) {
                line.push_str(&format!(", old certificates inactive since {since}"));
            }
        }
        None => {}
    }
    line.push_str(&device_reports(a));
    line
}

/// What the device itself reported ([`crate::device::report`]): `, last seen …` (or that it
/// never reported), and the breaches.
pub(crate) fn device_reports(a: &HashMap<String, String>) -> String {
    let mut text = match a.get(SEEN_ATTRIBUTE) {
        Some(seen) => format!(", last seen {seen}"),
        None => ", never reported".to_string(),
    };
    if let Some(tamper) = a.get(TAMPER_ATTRIBUTE).filter(|v| !v.is_empty()) {
        text.push_str(&format!(
            ", PERIMETER BREACH reported ({tamper}; `zkiot aws sweep` silences it)"
        ));
    }
    text
}
