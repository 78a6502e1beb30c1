//! The device's network client: what `device credentials` and its certificate renewal say to
//! AWS, with no AWS SDK.
//!
//! - [`provider`]: the AWS IoT credentials provider, over mutual TLS with the token's key.
//! - [`iot_api`]: the three AWS IoT API calls of certificate renewal, signed with Signature
//!   Version 4.
//! - [`tls`]: every TLS client configuration (rustls), and the token key as a TLS client key.
//! - [`http`]: a small HTTP/1.1 client and [`http::Endpoint`], the one parser of endpoints.

pub mod http;
pub mod iot_api;
pub mod provider;
pub mod tls;
