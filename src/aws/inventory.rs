//! The fleet read a page at a time, as AWS IoT keeps it: our CA's certificates
//! (ListCertificatesByCA, 250 a page, each with its status) and the
//! Things with their attributes (ListThings, 250 a page). A fleet of N devices costs about
//! N / 125 calls, instead of calls per device.

use std::collections::HashMap;

use anyhow::Result;
use aws_sdk_iot::types::CertificateStatus;

use super::Aws;

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
}

/// Every Thing, in the order AWS IoT lists them.
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
        });
    }
    Ok(things)
}

/// The certificate id of a principal's ARN, if it is a certificate.
pub(crate) fn certificate_id(principal_arn: &str) -> Option<&str> {
    principal_arn.split_once(":cert/").map(|(_, id)| id)
}
