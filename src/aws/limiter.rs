//! One rate limiter per AWS API, shared by every concurrent task of a run, so that a fleet
//! command stays within AWS's quotas instead of finding them by being throttled.
//!
//! AWS IoT's control plane allows each account a fixed rate per API and Region (10 requests a
//! second for most certificate and listing APIs: [`AWS_DEFAULT_QUOTAS`]). Each API gets a
//! bucket that spaces its requests evenly at that rate; a request waits for its turn before it
//! goes out. An answer that says "throttled" anyway (another process of the account spends the
//! same quota, or the account's quota is lower) halves that API's rate for a while, and the same
//! request is sent again after a backoff, for up to [`THROTTLE_BUDGET`]; only then does the SDK
//! see the throttling (and retry it in turn, `AWS_MAX_ATTEMPTS`). So a run slows down under
//! throttling, and is not throttled into failure.
//!
//! It sits in one place, the HTTP client the SDK clients are built with ([`Limiter::client`]):
//! an interceptor ([`TagApi`]) names the API on each request, after signing, and the client's
//! connector waits for the API's turn before it sends. The waits are outside the SDK's attempt
//! timeout, which is why `client.rs` bounds an unanswered request by a read timeout instead.
//!
//! The rates are AWS's defaults unless `--api-rate` (or `ZKIOT_API_RATE`) says otherwise
//! ([`Rates::parse`]): an account whose quotas were raised says so there, and `*=off` turns the
//! limiter off (a local stand-in has no quotas).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse, Metadata};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::byte_stream::ByteStream;
use aws_smithy_types::config_bag::ConfigBag;
use tokio::time::Instant;

/// AWS IoT's default quotas, in requests per second per account and Region, of the APIs zkiot
/// calls (Service Quotas, "AWS IoT Core"; where two sources differ, the lower). Any other API,
/// of AWS IoT or another service, gets [`DEFAULT_RATE`].
pub const AWS_DEFAULT_QUOTAS: &[(&str, f64)] = &[
    ("AddThingToThingGroup", 100.0),
    ("AttachPolicy", 15.0),
    ("AttachThingPrincipal", 100.0),
    ("CreateCertificateFromCsr", 15.0),
    ("CreatePolicy", 10.0),
    ("CreateThing", 100.0),
    ("DescribeCertificate", 10.0),
    ("DescribeThing", 350.0),
    ("DetachPolicy", 15.0),
    ("DetachThingPrincipal", 100.0),
    ("GetIndexingConfiguration", 20.0),
    ("GetRegistrationCode", 10.0),
    ("ListAttachedPolicies", 15.0),
    ("ListCertificates", 10.0),
    ("ListCertificatesByCA", 10.0),
    ("ListPrincipalThings", 10.0),
    ("ListThingPrincipals", 10.0),
    ("ListThings", 10.0),
    ("ListThingsInThingGroup", 25.0),
    ("RegisterCACertificate", 10.0),
    ("RegisterCertificate", 10.0),
    ("RegisterCertificateWithoutCA", 10.0),
    ("SearchIndex", 15.0),
    ("UpdateCACertificate", 10.0),
    ("UpdateCertificate", 10.0),
    ("UpdateIndexingConfiguration", 1.0),
    ("UpdateThing", 100.0),
];

/// The rate of an API the table does not name: the lowest of AWS IoT's defaults.
pub const DEFAULT_RATE: f64 = 10.0;

/// How long one request is sent again while AWS answers that it is throttled, before the SDK
/// sees the throttling, unless `--throttle-wait` says otherwise. Well under the 15 minutes for
/// which AWS accepts a signed request.
pub const THROTTLE_WAIT: Duration = Duration::from_secs(300);

/// The service whose quotas [`AWS_DEFAULT_QUOTAS`] lists, as the SDK names it.
const IOT_SERVICE: &str = "IoT";

/// After a throttled answer an API's rate is halved, at most once per this long (the answers
/// to requests already in flight say the same thing again), down to a tenth of its setting.
const DECREASE_INTERVAL: Duration = Duration::from_secs(1);
const FLOOR_FRACTION: f64 = 0.1;
/// The rate then grows back by this fraction of its setting each second without throttling.
const RECOVERY_PER_SECOND: f64 = 0.1;
/// Backoff before a throttled request is sent again: random up to this, doubled each time...
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// ...up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The rate of each API: AWS's defaults, changed by `--api-rate`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    /// Per API name (`DescribeCertificate`, or `IAM:GetRole` for another service): requests a
    /// second, `None` for no limit.
    named: BTreeMap<String, Option<f64>>,
    /// Every other API.
    other: Option<f64>,
}

impl Default for Rates {
    fn default() -> Self {
        Self {
            named: AWS_DEFAULT_QUOTAS
                .iter()
                .map(|(name, rate)| (name.to_string(), Some(*rate)))
                .collect(),
            other: Some(DEFAULT_RATE),
        }
    }
}

impl Rates {
    /// AWS's defaults changed by `spec`: comma-separated `API=RATE` items, applied in order.
    /// API is an AWS IoT API name (`DescribeCertificate`), `SERVICE:API` for another service's
    /// (`IAM:GetRole`), or `*` for every API; RATE is requests per second (a decimal number
    /// above 0) or `off` (no limit). An empty spec keeps the defaults.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut rates = Self::default();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((name, rate)) = item.split_once('=') else {
                bail!(
                    "--api-rate {item:?}: expected API=RATE, e.g. DescribeCertificate=20 or *=off"
                );
            };
            let (name, rate) = (name.trim(), rate.trim());
            let rate = if rate.eq_ignore_ascii_case("off") {
                None
            } else {
                match rate.parse::<f64>() {
                    Ok(r) if r.is_finite() && r > 0.0 => Some(r),
                    _ => bail!(
                        "--api-rate {item:?}: the rate is requests per second above 0, or off"
                    ),
                }
            };
            let valid_name =
                |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric());
            if name == "*" {
                rates.other = rate;
                for value in rates.named.values_mut() {
                    *value = rate;
                }
            } else if name.split(':').all(valid_name) && name.split(':').count() <= 2 {
                let name = name.strip_prefix("IoT:").unwrap_or(name);
                rates.named.insert(name.to_string(), rate);
            } else {
                bail!("--api-rate {item:?}: {name:?} is not an API name (e.g. ListThings, IAM:GetRole, *)");
            }
        }
        Ok(rates)
    }

    /// The rate of `operation` of `service` (as the SDK names them), `None` for no limit.
    pub fn rate(&self, service: &str, operation: &str) -> Option<f64> {
        let key = api_key(service, operation);
        match self.named.get(&key) {
            Some(rate) => *rate,
            None => self.other,
        }
    }
}

/// `DescribeCertificate` for AWS IoT's APIs, `IAM:GetRole` for another service's.
fn api_key(service: &str, operation: &str) -> String {
    if service == IOT_SERVICE {
        operation.to_string()
    } else {
        format!("{service}:{operation}")
    }
}

/// How many requests one API sent, and how many of them AWS answered as throttled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    pub requests: u64,
    pub throttled: u64,
}

/// The limiter of one run: a bucket per API, made on first use.
#[derive(Debug)]
pub struct Limiter {
    rates: Rates,
    buckets: Mutex<HashMap<String, Arc<Bucket>>>,
    sent: Mutex<BTreeMap<String, Sent>>,
    throttle_wait: Duration,
}

impl Limiter {
    /// A limiter at `rates` that sends a throttled request again for up to `throttle_wait`.
    pub fn new(rates: Rates, throttle_wait: Duration) -> Arc<Self> {
        Arc::new(Self {
            rates,
            buckets: Mutex::new(HashMap::new()),
            sent: Mutex::new(BTreeMap::new()),
            throttle_wait,
        })
    }

    /// `inner` with every request an SDK client sends through it limited; the clients also need
    /// [`TagApi`] among their interceptors.
    pub fn client(self: &Arc<Self>, inner: SharedHttpClient) -> SharedHttpClient {
        SharedHttpClient::new(LimitedClient {
            inner,
            limiter: Arc::clone(self),
        })
    }

    /// What each API sent so far, by name.
    pub fn sent(&self) -> BTreeMap<String, Sent> {
        self.sent.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn bucket(&self, api: &Api) -> Option<Arc<Bucket>> {
        let rate = self.rates.rate(&api.service, &api.operation)?;
        let mut buckets = self.buckets.lock().ok()?;
        let key = api_key(&api.service, &api.operation);
        Some(Arc::clone(
            buckets
                .entry(key)
                .or_insert_with(|| Arc::new(Bucket::new(rate))),
        ))
    }

    fn count(&self, api: &Api, throttled: bool) {
        if let Ok(mut sent) = self.sent.lock() {
            let entry = sent
                .entry(api_key(&api.service, &api.operation))
                .or_default();
            if throttled {
                entry.throttled += 1;
            } else {
                entry.requests += 1;
            }
        }
    }

    /// Sends `request` through `inner` in its API's turn, again while AWS answers "throttled"
    /// (for up to `throttle_wait`).
    async fn send(
        &self,
        inner: &SharedHttpConnector,
        request: HttpRequest,
    ) -> Result<HttpResponse, ConnectorError> {
        let Some(api) = request.extension::<Api>().cloned() else {
            return inner.call(request).await;
        };
        let bucket = self.bucket(&api);
        let started = Instant::now();
        let mut throttles = 0u32;
        loop {
            if let Some(bucket) = &bucket {
                bucket.wait_turn().await;
            }
            self.count(&api, false);
            // A body that cannot be copied (a stream) is sent once, as the SDK would.
            let Some(copy) = request.try_clone() else {
                return inner.call(request).await;
            };
            let response = inner.call(copy).await?;
            let (response, throttled) = read_throttling(response).await;
            if !throttled {
                return Ok(response);
            }
            self.count(&api, true);
            if let Some(bucket) = &bucket {
                bucket.throttled_now();
            }
            throttles += 1;
            let backoff = backoff(throttles);
            if started.elapsed() + backoff >= self.throttle_wait {
                return Ok(response);
            }
            tokio::time::sleep(backoff).await;
        }
    }
}

/// Random (full jitter) up to [`FIRST_BACKOFF`] doubled `n - 1` times, at most [`MAX_BACKOFF`].
fn backoff(n: u32) -> Duration {
    let cap = FIRST_BACKOFF
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    cap.mul_f64(fastrand::f64())
}

/// Whether AWS answered "throttled": HTTP 429, an `x-amzn-ErrorType` of `Throttling…`, or an
/// HTTP 400 whose body says `Throttling` (IAM's and STS's XML errors). The body of a 400 is read
/// into memory to look, and put back.
async fn read_throttling(response: HttpResponse) -> (HttpResponse, bool) {
    let status = response.status().as_u16();
    if status == 429 {
        return (response, true);
    }
    if response
        .headers()
        .get("x-amzn-ErrorType")
        .is_some_and(|t| t.starts_with("Throttl"))
    {
        return (response, true);
    }
    if status != 400 {
        return (response, false);
    }
    let mut response = response;
    let body = response.take_body();
    let bytes = match body.bytes() {
        Some(bytes) => bytes.to_vec(),
        None => match ByteStream::new(body).collect().await {
            Ok(collected) => collected.into_bytes().to_vec(),
            // Unreadable: the SDK reports it as it would have.
            Err(_) => Vec::new(),
        },
    };
    let text = String::from_utf8_lossy(&bytes);
    let throttled = text.contains("<Code>Throttling</Code>")
        || text.contains("<Code>ThrottlingException</Code>")
        || text.contains("\"ThrottlingException\"");
    *response.body_mut() = SdkBody::from(bytes);
    (response, throttled)
}

/// One API's turns: requests go out evenly spaced at the current rate, which is the setting
/// but halved after a throttled answer and growing back as the answers come without. Requests
/// take their turns in the order they asked; a request that goes out late (its task was busy)
/// moves the next turn on, so lateness never turns into a burst.
#[derive(Debug)]
struct Bucket {
    setting: f64,
    state: Mutex<BucketState>,
    /// The queue of requests waiting for a turn (tokio's mutex is first come, first served).
    queue: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct BucketState {
    rate: f64,
    /// The earliest time the next request may go.
    next: Instant,
    /// When the rate was last changed.
    adjusted: Instant,
    last_decrease: Option<Instant>,
}

impl Bucket {
    fn new(setting: f64) -> Self {
        let now = Instant::now();
        Self {
            setting,
            state: Mutex::new(BucketState {
                rate: setting,
                next: now,
                adjusted: now,
                last_decrease: None,
            }),
            queue: tokio::sync::Mutex::new(()),
        }
    }

    /// Waits for the next turn, behind the requests that asked before, and takes it.
    async fn wait_turn(&self) {
        let _queue = self.queue.lock().await;
        loop {
            let now = Instant::now();
            let turn = self.take_turn(now);
            if turn <= now {
                return;
            }
            // Not taken: the rate may change meanwhile, so it is asked again then.
            self.give_back(turn);
            tokio::time::sleep_until(turn).await;
        }
    }

    /// AWS answered "throttled".
    fn throttled_now(&self) {
        self.throttled(Instant::now());
    }

    /// The next free turn at or after `now`, taken: the one after it is an interval later.
    fn take_turn(&self, now: Instant) -> Instant {
        let Ok(mut state) = self.state.lock() else {
            return now;
        };
        // Grow back towards the setting.
        let elapsed = now.saturating_duration_since(state.adjusted).as_secs_f64();
        state.rate = (state.rate + self.setting * RECOVERY_PER_SECOND * elapsed).min(self.setting);
        state.adjusted = now;
        let turn = state.next.max(now);
        state.next = turn + Duration::from_secs_f64(1.0 / state.rate);
        turn
    }

    /// Undoes [`Self::take_turn`] of a turn not used.
    fn give_back(&self, turn: Instant) {
        if let Ok(mut state) = self.state.lock() {
            state.next = turn;
        }
    }

    /// AWS answered "throttled" at `now`: halve the rate, unless that was done less than a
    /// moment ago.
    fn throttled(&self, now: Instant) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state
            .last_decrease
            .is_some_and(|at| now.saturating_duration_since(at) < DECREASE_INTERVAL)
        {
            return;
        }
        state.last_decrease = Some(now);
        state.rate = (state.rate / 2.0).max(self.setting * FLOOR_FRACTION);
        state.adjusted = now;
    }

    #[cfg(test)]
    fn rate(&self) -> f64 {
        self.state.lock().unwrap().rate
    }
}

/// The API a request is for, as the SDK names it (service and operation).
#[derive(Debug, Clone)]
struct Api {
    service: String,
    operation: String,
}

/// Names the API on each request, for the limiter's connector.
#[derive(Debug)]
pub struct TagApi;

impl Intercept for TagApi {
    fn name(&self) -> &'static str {
        "zkiot::TagApi"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(metadata) = cfg.load::<Metadata>() {
            let api = Api {
                service: metadata.service().to_string(),
                operation: metadata.name().to_string(),
            };
            context.request_mut().add_extension(api);
        }
        Ok(())
    }
}

#[derive(Debug)]
struct LimitedClient {
    inner: SharedHttpClient,
    limiter: Arc<Limiter>,
}

impl HttpClient for LimitedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(LimitedConnector {
            inner: self.inner.http_connector(settings, components),
            limiter: Arc::clone(&self.limiter),
        })
    }
}

#[derive(Debug)]
struct LimitedConnector {
    inner: SharedHttpConnector,
    limiter: Arc<Limiter>,
}

impl HttpConnector for LimitedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let inner = self.inner.clone();
        let limiter = Arc::clone(&self.limiter);
        HttpConnectorFuture::new(async move { limiter.send(&inner, request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_iot::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_runtime_api::client::http::http_client_fn;
    use aws_smithy_runtime_api::http::StatusCode;
    use std::collections::VecDeque;

    #[test]
    fn rates_are_aws_defaults_changed_by_the_spec() {
        let defaults = Rates::default();
        assert_eq!(defaults.rate("IoT", "DescribeCertificate"), Some(10.0));
        assert_eq!(defaults.rate("IoT", "CreateThing"), Some(100.0));
        assert_eq!(
            defaults.rate("IoT", "DescribeCACertificate"),
            Some(DEFAULT_RATE)
        );
        assert_eq!(defaults.rate("IAM", "GetRole"), Some(DEFAULT_RATE));
        // An IAM API of the same name as an AWS IoT one is not AWS IoT's.
        assert_eq!(defaults.rate("IAM", "AttachPolicy"), Some(DEFAULT_RATE));
        assert_eq!(Rates::parse("").unwrap(), defaults);

        let rates = Rates::parse(
            "DescribeCertificate=20, ListThings=off,IAM:GetRole=2.5,IoT:SearchIndex=30",
        )
        .unwrap();
        assert_eq!(rates.rate("IoT", "DescribeCertificate"), Some(20.0));
        assert_eq!(rates.rate("IoT", "ListThings"), None);
        assert_eq!(rates.rate("IAM", "GetRole"), Some(2.5));
        assert_eq!(rates.rate("IoT", "SearchIndex"), Some(30.0));
        assert_eq!(rates.rate("IoT", "UpdateCertificate"), Some(10.0));

        let off = Rates::parse("*=off").unwrap();
        assert_eq!(off.rate("IoT", "CreateThing"), None);
        assert_eq!(off.rate("STS", "GetCallerIdentity"), None);
        let later_wins = Rates::parse("*=50,DescribeThing=350").unwrap();
        assert_eq!(later_wins.rate("IoT", "ListThings"), Some(50.0));
        assert_eq!(later_wins.rate("IoT", "DescribeThing"), Some(350.0));

        for bad in [
            "ListThings",
            "ListThings=0",
            "ListThings=-1",
            "ListThings=fast",
            "=5",
            "a b=1",
            "A:B:C=1",
            "ListThings=NaN",
            "ListThings=inf",
        ] {
            let err = Rates::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("--api-rate "), "{bad}: {err}");
        }
    }

    #[test]
    fn turns_are_evenly_spaced_and_the_rate_halves_when_throttled() {
        let bucket = Bucket::new(10.0);
        let start = Instant::now();
        let turns: Vec<Duration> = (0..5).map(|_| bucket.take_turn(start) - start).collect();
        assert_eq!(
            turns,
            (0..5)
                .map(|i| Duration::from_millis(100 * i))
                .collect::<Vec<_>>()
        );
        bucket.throttled(start);
        assert_eq!(bucket.rate(), 5.0);
        // The answers to requests already in flight do not halve it again at once.
        bucket.throttled(start + Duration::from_millis(10));
        assert_eq!(bucket.rate(), 5.0);
        // The next turn is 1/5 s after the last.
        assert_eq!(bucket.take_turn(start) - start, Duration::from_millis(500));
        let mut now = start;
        for _ in 0..10 {
            now += DECREASE_INTERVAL;
            bucket.throttled(now);
        }
        assert_eq!(
            bucket.rate(),
            10.0 * FLOOR_FRACTION,
            "never below the floor"
        );
        // Ten quiet seconds bring it back.
        bucket.take_turn(now + Duration::from_secs(10));
        assert_eq!(bucket.rate(), 10.0);
    }

    /// A stand-in for AWS IoT that answers DescribeThing and throttles any API asked more than
    /// `limit` times within a second, and the times of the requests it served.
    #[derive(Debug, Clone)]
    struct FakeIot {
        limit: usize,
        log: Arc<Mutex<FakeLog>>,
    }

    #[derive(Debug, Default)]
    struct FakeLog {
        recent: VecDeque<Instant>,
        served: Vec<Instant>,
        throttled: usize,
    }

    impl HttpConnector for FakeIot {
        fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
            let now = Instant::now();
            let mut log = self.log.lock().unwrap();
            while log
                .recent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
            {
                log.recent.pop_front();
            }
            let response = if log.recent.len() >= self.limit {
                log.throttled += 1;
                let mut r = HttpResponse::new(
                    StatusCode::try_from(429).unwrap(),
                    SdkBody::from(r#"{"message":"Rate exceeded"}"#),
                );
                r.headers_mut()
                    .insert("x-amzn-ErrorType", "ThrottlingException");
                r
            } else {
                log.recent.push_back(now);
                log.served.push(now);
                HttpResponse::new(
                    StatusCode::try_from(200).unwrap(),
                    SdkBody::from(r#"{"thingName":"t"}"#),
                )
            };
            HttpConnectorFuture::ready(Ok(response))
        }
    }

    fn iot_client(limiter: &Arc<Limiter>, fake: &FakeIot) -> aws_sdk_iot::Client {
        let fake = fake.clone();
        let inner = http_client_fn(move |_, _| SharedHttpConnector::new(fake.clone()));
        let conf = aws_sdk_iot::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::for_tests())
            .endpoint_url("http://iot.invalid")
            .http_client(limiter.client(inner))
            .interceptor(TagApi)
            // The SDK's own retries off: any retry seen here is the limiter's.
            .retry_config(aws_sdk_iot::config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_iot::Client::from_conf(conf)
    }

    async fn describe_many(client: &aws_sdk_iot::Client, n: usize) -> usize {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..n {
            let client = client.clone();
            tasks.spawn(async move { client.describe_thing().thing_name("t").send().await });
        }
        let mut failed = 0;
        while let Some(done) = tasks.join_next().await {
            if done.unwrap().is_err() {
                failed += 1;
            }
        }
        failed
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_calls_keep_to_the_rate() {
        // The service allows a little more than the setting: a late wake-up of one task must
        // not count as going over it.
        let fake = FakeIot {
            limit: 110,
            log: Arc::default(),
        };
        let limiter = Limiter::new(Rates::parse("DescribeThing=100").unwrap(), THROTTLE_WAIT);
        let client = iot_client(&limiter, &fake);
        let started = Instant::now();
        assert_eq!(describe_many(&client, 150).await, 0);
        let log = fake.log.lock().unwrap();
        assert_eq!(log.throttled, 0, "never above the rate");
        assert_eq!(log.served.len(), 150);
        // 150 requests at least 10 ms apart: the last goes 1.49 s after the first, or later
        // on a busy machine.
        let first = *log.served.iter().min().unwrap();
        let last = *log.served.iter().max().unwrap();
        assert!(
            last - first >= Duration::from_millis(1480),
            "{:?}",
            last - first
        );
        assert!(last - started < Duration::from_secs(20));
        let sent = limiter.sent();
        assert_eq!(
            sent["DescribeThing"],
            Sent {
                requests: 150,
                throttled: 0
            }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_throttling_service_slows_the_run_down_and_fails_nothing() {
        // The service allows 50 a second; the limiter is set to 200 (another process spends
        // the same quota, or the account's quota is lower than the setting).
        let fake = FakeIot {
            limit: 50,
            log: Arc::default(),
        };
        let limiter = Limiter::new(Rates::parse("DescribeThing=200").unwrap(), THROTTLE_WAIT);
        let client = iot_client(&limiter, &fake);
        assert_eq!(describe_many(&client, 100).await, 0);
        let log = fake.log.lock().unwrap();
        assert_eq!(log.served.len(), 100);
        assert!(log.throttled > 0);
        let sent = limiter.sent()["DescribeThing"];
        assert_eq!(sent.requests, 100 + log.throttled as u64);
        assert_eq!(sent.throttled, log.throttled as u64);
        // Adapting keeps the throttled answers to a fraction of the requests.
        assert!(log.throttled < 100, "{} throttled", log.throttled);
    }

    #[tokio::test]
    async fn throttling_beyond_the_wait_reaches_the_caller() {
        let fake = FakeIot {
            limit: 0,
            log: Arc::default(),
        };
        let limiter = Limiter::new(Rates::default(), Duration::from_secs(2));
        let client = iot_client(&limiter, &fake);
        let started = Instant::now();
        let err = client
            .describe_thing()
            .thing_name("t")
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            aws_sdk_iot::error::ProvideErrorMetadata::code(&err),
            Some("ThrottlingException")
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(limiter.sent()["DescribeThing"].throttled >= 3);
    }

    #[tokio::test]
    async fn an_iam_throttling_answer_is_recognised_in_its_body() {
        let body = "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>";
        let response = HttpResponse::new(StatusCode::try_from(400).unwrap(), SdkBody::from(body));
        let (response, throttled) = read_throttling(response).await;
        assert!(throttled);
        assert_eq!(response.body().bytes(), Some(body.as_bytes()));
        let other = HttpResponse::new(
            StatusCode::try_from(400).unwrap(),
            SdkBody::from(
                "<ErrorResponse><Error><Code>NoSuchEntity</Code></Error></ErrorResponse>",
            ),
        );
        assert!(!read_throttling(other).await.1);
    }
}
