//! AWS SDK clients with overridable endpoints, and errors reduced to one readable line.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_iot::config::http::HttpResponse;
use aws_sdk_iot::config::retry::{RetryPartition, TokenBucket};
use aws_sdk_iot::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use clap::Args;

use super::limiter::{Limiter, Rates, TagApi, THROTTLE_WAIT};

/// Region used when neither `--region` nor the AWS configuration chain names one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Where the AWS APIs are: overridable so the same commands run against a local stand-in.
#[derive(Debug, Clone, Default, Args)]
pub struct AwsOpts {
    /// AWS API endpoint, e.g. a local moto server [default: $AWS_ENDPOINT_URL, else AWS].
    #[arg(long, value_name = "URL", global = true)]
    pub endpoint_url: Option<String>,
    /// AWS region [default: $AWS_REGION or the profile's, else us-east-1].
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// Requests per second each AWS API may take, where it differs from AWS's default quotas
    /// (e.g. `DescribeCertificate=50,ListThings=20` for raised quotas, `IAM:GetRole=5` for
    /// another service's API, `*=off` for no limit) [default: AWS's default quotas, 10 for an API
    /// without one].
    #[arg(
        long,
        value_name = "API=RATE,…",
        global = true,
        env = "ZKIOT_API_RATE",
        value_parser = parse_rates
    )]
    pub api_rate: Option<Rates>,
    /// How long one request is sent again while AWS answers that it is throttled, before the
    /// SDK's own retries (AWS_MAX_ATTEMPTS) take over; 0 leaves throttling to them alone
    /// (e.g. 30s, 5m).
    #[arg(
        long,
        value_name = "DURATION",
        global = true,
        env = "ZKIOT_THROTTLE_WAIT",
        value_parser = crate::duration::parse_duration
    )]
    pub throttle_wait: Option<Duration>,
}

fn parse_rates(spec: &str) -> Result<Rates, String> {
    Rates::parse(spec).map_err(|e| format!("{e:#}"))
}

/// The clients one command needs, and where they point.
#[derive(Clone, Debug)]
pub struct Aws {
    pub iot: aws_sdk_iot::Client,
    pub iam: aws_sdk_iam::Client,
    pub sts: aws_sdk_sts::Client,
    /// The region requests are signed for.
    pub region: String,
    /// The endpoint override in force (`None`: AWS itself).
    pub endpoint_url: Option<String>,
    /// How many times the SDK tries a call before giving up (its standard retry mode retries
    /// throttling, 5xx answers, timeouts and dropped connections, with backoff).
    pub max_attempts: u32,
    /// The configuration the clients were made from, for clients made later (iot-data).
    conf: aws_config::SdkConfig,
    retries: RetryPartition,
    /// The HTTP client every SDK client is built with: through the limiter.
    http: SharedHttpClient,
    /// The limiter every request of these clients goes through.
    pub limiter: Arc<Limiter>,
}

impl Aws {
    /// Loads the AWS configuration (credentials, region, endpoint) the usual way, with `opts`
    /// taking precedence.
    pub async fn connect(opts: &AwsOpts) -> Result<Self> {
        let endpoint_url = opts
            .endpoint_url
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .filter(|u| !u.is_empty());
        // An unanswered request is bounded by the read timeout (from when it is sent), not by an
        // attempt timeout, which would also count the wait for its API's turn in the limiter.
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .read_timeout(Duration::from_secs(30))
                .build(),
        );
        if let Some(url) = &opts.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(region) = &opts.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let mut conf = loader.load().await;
        if conf.region().is_none() {
            conf = conf
                .into_builder()
                .region(Region::new(DEFAULT_REGION))
                .build();
        }
        let region = conf
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| DEFAULT_REGION.to_string());
        let max_attempts = conf.retry_config().map_or(1, |r| r.max_attempts());
        // Every call gets all its attempts, however many calls failed before it. The SDK's
        // shared retry quota (500 tokens, 5 or more per retry) stops retrying after about a
        // hundred failed retries: in a fleet run under throttling, the devices after that fail
        // at their first throttled call, and "gave up after N attempts" is untrue. A run's load
        // on a failing service stays bounded without it: --concurrency calls at a time, each
        // at most `max_attempts` with exponential backoff.
        let retries = RetryPartition::custom("zkiot")
            .token_bucket(TokenBucket::unlimited())
            .build();
        let limiter = Limiter::new(
            opts.api_rate.clone().unwrap_or_default(),
            opts.throttle_wait.unwrap_or(THROTTLE_WAIT),
        );
        let http = limiter.client(default_http_client());
        Ok(Self {
            iot: aws_sdk_iot::Client::from_conf(
                aws_sdk_iot::config::Builder::from(&conf)
                    .retry_partition(retries.clone())
                    .http_client(http.clone())
                    .interceptor(TagApi)
                    .build(),
            ),
            iam: aws_sdk_iam::Client::from_conf(
                aws_sdk_iam::config::Builder::from(&conf)
                    .retry_partition(retries.clone())
                    .http_client(http.clone())
                    .interceptor(TagApi)
                    .build(),
            ),
            sts: aws_sdk_sts::Client::from_conf(
                aws_sdk_sts::config::Builder::from(&conf)
                    .retry_partition(retries.clone())
                    .http_client(http.clone())
                    .interceptor(TagApi)
                    .build(),
            ),
            region,
            endpoint_url,
            max_attempts,
            conf,
            retries,
            http,
            limiter,
        })
    }

    /// A client of the AWS IoT data plane (iot-data), whose endpoint is the account's own:
    /// `explicit` when given (`--iot-data-endpoint`), else the endpoint override in force
    /// (as for every other service), else what DescribeEndpoint gives for `iot:Data-ATS`.
    pub async fn iot_data(&self, explicit: Option<&str>) -> Result<aws_sdk_iotdataplane::Client> {
        let url = match (explicit, &self.endpoint_url) {
            (Some(url), _) => url.to_string(),
            (None, Some(url)) => url.clone(),
            (None, None) => {
                let address = self
                    .iot
                    .describe_endpoint()
                    .endpoint_type("iot:Data-ATS")
                    .send()
                    .await
                    .map_err(|e| self.error("DescribeEndpoint", e))?
                    .endpoint_address()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow!("DescribeEndpoint returned no iot:Data-ATS address"))?;
                format!("https://{address}")
            }
        };
        Ok(aws_sdk_iotdataplane::Client::from_conf(
            aws_sdk_iotdataplane::config::Builder::from(&self.conf)
                .endpoint_url(url)
                .retry_partition(self.retries.clone())
                .http_client(self.http.clone())
                .interceptor(TagApi)
                .build(),
        ))
    }

    /// Human name of the endpoint, for messages.
    pub fn endpoint_name(&self) -> String {
        match &self.endpoint_url {
            Some(url) => url.clone(),
            None => format!("AWS ({})", self.region),
        }
    }

    /// Turns an SDK error into one line that names the operation and the cause.
    pub fn error<E>(&self, operation: &str, err: SdkError<E, HttpResponse>) -> anyhow::Error
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let detail = match &err {
            SdkError::ServiceError(service) => {
                let e = service.err();
                let status = service.raw().status().as_u16();
                let detail = match (e.code(), e.message()) {
                    (Some(code), Some(message)) => format!("{code}: {message}"),
                    (Some(code), None) => code.to_string(),
                    _ => format!(
                        "unexpected answer from {} (HTTP {status})",
                        self.endpoint_name()
                    ),
                };
                let transient = status >= 500
                    || status == 429
                    || e.code().is_some_and(|c| c.starts_with("Throttl"));
                if transient {
                    format!("{detail} (gave up after {} attempts)", self.max_attempts)
                } else {
                    detail
                }
            }
            SdkError::DispatchFailure(_) if root_cause(&err).contains("no credentials found") => {
                "no AWS credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                 or AWS_PROFILE)"
                    .to_string()
            }
            SdkError::DispatchFailure(_) => {
                return Unreachable(format!(
                    "{operation} failed: cannot reach {}: {}",
                    self.endpoint_name(),
                    root_cause(&err)
                ))
                .into();
            }
            SdkError::TimeoutError(_) => {
                return Unreachable(format!(
                    "{operation} failed: {} did not answer in time ({} attempts)",
                    self.endpoint_name(),
                    self.max_attempts
                ))
                .into();
            }
            SdkError::ResponseError(_) => format!(
                "unreadable answer from {}: {}",
                self.endpoint_name(),
                root_cause(&err)
            ),
            _ => root_cause(&err),
        };
        anyhow!("{operation} failed: {detail}")
    }
}

/// The AWS endpoint could not be reached (network, DNS, TLS, timeout): every further call
/// would fail the same way.
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Unreachable {}

/// The error code of a service error, if the call reached the service.
pub fn service_code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    match err {
        SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    }
}

/// Whether the service said the named resource does not exist.
pub fn is_not_found<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    matches!(
        service_code(err),
        Some("ResourceNotFoundException" | "NoSuchEntity" | "NoSuchEntityException")
    )
}

/// The innermost distinct messages of an error chain, joined: what actually went wrong.
fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut messages: Vec<String> = Vec::new();
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !text.is_empty() && !messages.iter().any(|m| m.contains(&text)) {
            messages.push(text);
        }
        current = e.source();
    }
    // The outer layers are generic ("dispatch failure", "io error"); keep the specific tail.
    let keep = messages.len().saturating_sub(2);
    messages[keep..].join(": ")
}

/// The HTTPS client the SDK would build by default (hyper 1 with rustls), to put the limiter in
/// front of.
fn default_http_client() -> SharedHttpClient {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
    use aws_smithy_http_client::{Builder, ConnectorBuilder};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

/// The multi-threaded runtime the AWS commands run on.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the async runtime: {e}"))
}
