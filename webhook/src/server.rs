//! The HTTP side: the admission router (HTTPS only) and its request handling (body limits and deadlines, bounded
//! memory and concurrency), and the admin router. Connections are `conn`'s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt as _;
use hyper::body::Bytes;
use mizzen::admission::{self, Outcome};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::util::MapResponseLayer;

use crate::events::{Decision, EventSink};
use crate::metrics::Metrics;
use crate::store::Store;

/// Largest AdmissionReview accepted (bytes); larger bodies get 413.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Reviews up to this size are answered on the connection's own thread; larger ones on a blocking thread, so a
/// slow one does not hold up other connections.
const INLINE_BODY: usize = 64 * 1024;

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    /// Configuration caches.
    pub store: Arc<Store>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Event publisher.
    pub events: EventSink,
    /// Bounds concurrent reviews.
    pub permits: Arc<Semaphore>,
    /// Per-request deadline (queueing and work), below the webhook's timeoutSeconds.
    pub timeout: Duration,
    /// Set once shutdown began: /readyz turns 503 so no new traffic is routed here, and responses carry
    /// `connection: close` so clients move their keep-alive connections elsewhere.
    pub draining: Arc<AtomicBool>,
    /// Bytes of request bodies (KiB) being held at once, across requests: bounds memory under large reviews.
    pub body_budget: Arc<Semaphore>,
    /// The budget's size in KiB.
    pub body_budget_kib: u32,
    /// A request body must arrive within this (and within the request deadline).
    pub body_read_timeout: Duration,
}

/// The admission router: `POST /inject` and `POST /inject/{revision}`.
pub fn admission_router(state: AppState) -> Router {
    let draining = state.draining.clone();
    Router::new()
        .route("/inject", post(inject_default))
        .route("/inject/{revision}", post(inject_revision))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: POST /inject or /inject/<revision>\n") })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: POST /inject or /inject/<revision>\n",
            )
        })
        .with_state(state)
        .layer(MapResponseLayer::new(move |mut response: Response| {
            if draining.load(Ordering::Acquire) {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }))
}

/// The admin router: `/livez`, `/readyz`, `/metrics`.
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(s): State<AppState>| async move {
                if s.draining.load(Ordering::Acquire) {
                    (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_owned())
                } else if s.store.is_ready() {
                    (StatusCode::OK, format!("ok: revisions {:?}\n", s.store.revisions()))
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet\n".to_owned())
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(s): State<AppState>| async move {
                (
                    [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
                    s.metrics.render(),
                )
            }),
        )
        .with_state(state)
}

async fn inject_default(State(state): State<AppState>, request: Request) -> Response {
    handle(state, "default".to_owned(), request).await
}

async fn inject_revision(State(state): State<AppState>, Path(revision): Path<String>, request: Request) -> Response {
    handle(state, revision, request).await
}

fn plain(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

/// An error as the API server reads one: a `metav1.Status` (JSON), whose message the API server's client keeps in
/// the error it reports (for a text body it reports only a generic one for some codes, such as 503's).
fn status_error(status: StatusCode, reason: &str, message: &str) -> Response {
    let mut body = Vec::with_capacity(128 + message.len());
    body.extend_from_slice(br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"#);
    mizzen::json_text::write_str(&mut body, message);
    body.extend_from_slice(br#","reason":"#);
    mizzen::json_text::write_str(&mut body, reason);
    body.extend_from_slice(format!(r#","code":{}}}"#, status.as_u16()).as_bytes());
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A request refused before its review: status, metrics label and message.
struct Refusal(StatusCode, &'static str, String);

impl Refusal {
    fn respond(self, state: &AppState, revision: &str) -> Response {
        let Refusal(status, label, message) = self;
        state.metrics.request(label);
        state.metrics.failure(label);
        tracing::warn!(%revision, status = status.as_u16(), %message, "admission request refused");
        plain(status, message)
    }
}

/// The declared `Content-Length`, refusing a body over the limit before reading any of it.
fn declared_length(headers: &HeaderMap) -> Result<Option<usize>, Refusal> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    let length = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| Refusal(StatusCode::BAD_REQUEST, "bad_request", "invalid Content-Length".into()))?;
    match usize::try_from(length) {
        Ok(n) if n <= MAX_BODY => Ok(Some(n)),
        _ => Err(Refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body of {length} bytes is over the limit of {MAX_BODY} bytes"),
        )),
    }
}

/// A body read whole, with the share of the body budget it holds (none for a small one).
struct Received {
    bytes: Vec<u8>,
    _budget: Option<OwnedSemaphorePermit>,
}

/// The share of the body budget a body of `declared` bytes (or of unknown size) holds, in KiB.
fn weight(state: &AppState, declared: Option<usize>) -> u32 {
    let kib = declared.unwrap_or(MAX_BODY).div_ceil(1024);
    u32::try_from(kib)
        .unwrap_or(u32::MAX)
        .clamp(1, state.body_budget_kib.max(1))
}

/// Reads the body into one buffer, within the size limit. The client has the body-read timeout to send it; a
/// body over [`INLINE_BODY`] (or of unknown size) takes its share of the body budget once its first bytes arrive,
/// waiting for it (its bytes meanwhile in the socket buffers) up to `deadline`, then has the body-read timeout
/// again. So a client that declares a large body and sends none holds nothing, and small bodies (bounded in number
/// by the connection cap) never wait behind large ones.
async fn read_body(
    state: &AppState,
    mut body: Body,
    declared: Option<usize>,
    deadline: tokio::time::Instant,
) -> Result<Received, Refusal> {
    let mut out = Vec::new();
    let mut budget = None;
    let charged = declared.is_none_or(|n| n > INLINE_BODY);
    let mut body_deadline = deadline.min(tokio::time::Instant::now() + state.body_read_timeout);
    loop {
        let Some(data) = next_data(&mut body, body_deadline, out.len(), declared).await? else {
            return Ok(Received {
                bytes: out,
                _budget: budget,
            });
        };
        if out.capacity() == 0 {
            if charged {
                let share = state.body_budget.clone().acquire_many_owned(weight(state, declared));
                match tokio::time::timeout_at(deadline, share).await {
                    Ok(Ok(share)) => budget = Some(share),
                    _ => return Err(overloaded()),
                }
                // The wait was the webhook's, not the client's.
                body_deadline = deadline.min(tokio::time::Instant::now() + state.body_read_timeout);
            }
            out.reserve_exact(declared.unwrap_or(16 * 1024).max(data.len()));
        }
        if out.len() + data.len() > MAX_BODY {
            return Err(Refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request body is over the limit of {MAX_BODY} bytes"),
            ));
        }
        out.extend_from_slice(&data);
    }
}

/// The next bytes of the body (`None` at its end), before `deadline`; `read` bytes of it came so far.
async fn next_data(
    body: &mut Body,
    deadline: tokio::time::Instant,
    read: usize,
    declared: Option<usize>,
) -> Result<Option<Bytes>, Refusal> {
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(Refusal(
                    StatusCode::REQUEST_TIMEOUT,
                    "body_timeout",
                    format!(
                        "request body not received in time ({read} of {} bytes)",
                        declared.map_or_else(|| "?".to_owned(), |n| n.to_string())
                    ),
                ));
            }
            Ok(None) => return Ok(None),
            Ok(Some(Err(error))) => {
                let why = match declared {
                    Some(n) if read < n => format!("request body ended after {read} of its {n} declared bytes"),
                    _ => "request body could not be read".to_owned(),
                };
                return Err(Refusal(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("{why}: {error}"),
                ));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        // Trailers and empty frames carry no body bytes.
        if let Ok(data) = frame.into_data()
            && !data.is_empty()
        {
            return Ok(Some(data));
        }
    }
}

async fn handle(state: AppState, revision: String, request: Request) -> Response {
    let started = Instant::now();
    // The API server gives up after the configuration's timeoutSeconds, which it sends as `?timeout=`: a review it
    // no longer waits for is not worked on (nor does it publish an Event for a pod that was not admitted).
    let timeout = client_timeout(request.uri().query()).map_or(state.timeout, |t| t.min(state.timeout));
    let deadline = tokio::time::Instant::from_std(started + timeout);
    let declared = match declared_length(request.headers()) {
        Ok(n) => n,
        Err(refusal) => return refusal.respond(&state, &revision),
    };
    // The body first: a client slow to send it holds no concurrency permit (nor, until it sends, any budget).
    let received = match read_body(&state, request.into_body(), declared, deadline).await {
        Ok(received) => received,
        Err(refusal) => return refusal.respond(&state, &revision),
    };
    let permit = match tokio::time::timeout_at(deadline, state.permits.clone().acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        _ => return overloaded().respond(&state, &revision),
    };
    if received.bytes.len() <= INLINE_BODY {
        // A small review costs less than handing it to another thread: answer it here.
        let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            review(&state, &revision, &received.bytes, started)
        }));
        drop((permit, received));
        return answered.unwrap_or_else(|_| internal_error(&state));
    }
    let work_state = state.clone();
    let Received { bytes, _budget: budget } = received;
    let work = tokio::task::spawn_blocking(move || {
        // The permit and the body's budget are held until the review is answered.
        let _held = (permit, budget);
        // Not started once its deadline passed while it waited for a thread: the client was answered 504 then, and
        // the review would count a result and publish an Event for a pod that was not admitted.
        (started.elapsed() < timeout).then(|| review(&work_state, &revision, &bytes, started))
    });
    match tokio::time::timeout_at(deadline, work).await {
        Ok(Ok(Some(response))) => response,
        Ok(Err(error)) => {
            tracing::error!(%error, "admission review task failed");
            internal_error(&state)
        }
        Ok(Ok(None)) | Err(_) => {
            state.metrics.request("timeout");
            state.metrics.failure("timeout");
            plain(StatusCode::GATEWAY_TIMEOUT, "mizzen webhook timed out".into())
        }
    }
}

/// The `timeout` query parameter the API server adds to a webhook call (Go's `time.Duration` text, such as `10s`,
/// `2.5s` or `1m30s`); `None` when absent, malformed or not positive, and the webhook's own deadline applies.
fn client_timeout(query: Option<&str>) -> Option<Duration> {
    let value = query?.split('&').find_map(|pair| pair.strip_prefix("timeout="))?;
    go_duration(value).filter(|d| !d.is_zero())
}

/// Go's `time.ParseDuration` for non-negative durations: decimal numbers, each with a unit (`ns`, `us`, `µs`,
/// `ms`, `s`, `m`, `h`), such as `1h2m3.5s`.
fn go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let nanos_per = match unit {
            "ns" => 1.0,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * nanos_per;
        rest = next;
    }
    // Beyond Go's range (about 292 years) it is not a duration Go would send.
    (total.is_finite() && total < 9.3e18).then(|| Duration::from_nanos(total as u64))
}

fn internal_error(state: &AppState) -> Response {
    state.metrics.failure("internal");
    plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
}

/// No budget or permit before the deadline.
fn overloaded() -> Refusal {
    Refusal(
        StatusCode::SERVICE_UNAVAILABLE,
        "timeout",
        "mizzen webhook overloaded; try again".into(),
    )
}

/// Answers one review (runs on a blocking thread for large bodies).
fn review(state: &AppState, revision: &str, body: &[u8], started: Instant) -> Response {
    // The request borrows the body: the pod is parsed from it only as far as injection needs.
    let mut request = match admission::parse(body) {
        Ok(r) => r,
        Err(error) => {
            state.metrics.request("bad_request");
            state.metrics.failure("bad_request");
            tracing::warn!(%revision, %error, "not an AdmissionReview");
            return plain(StatusCode::BAD_REQUEST, error.to_string());
        }
    };
    let config = state.store.config(revision);
    let namespace = state.store.namespace(request.namespace());
    let (response, outcome) = admission::respond(
        &mut request,
        config.as_deref(),
        revision,
        namespace.as_ref().map(|n| &n.annotations),
    );
    let elapsed = started.elapsed();
    state.metrics.observe(elapsed);
    if let Outcome::Unserved(message) = &outcome {
        // No MeshInstall serves the revision (deleted while its webhook configuration is not yet, or not yet seen):
        // the webhook cannot serve the pod, as when it is unreachable, which says nothing of the pod. An HTTP error
        // leaves the decision to the configuration's failurePolicy: Fail refuses the pod with this message (the API
        // server's error quotes it: a Status it decodes, of a 500, whose generic text quotes the body otherwise),
        // Ignore creates it without a sidecar.
        state.metrics.request("unknown_revision");
        state.metrics.failure("unknown_revision");
        tracing::warn!(%revision, namespace = request.namespace(), "no MeshInstall serves this revision");
        return status_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message);
    }
    state.metrics.request(outcome.result());
    match &outcome {
        Outcome::Injected(_) => state.metrics.injection(revision),
        Outcome::Skipped(_) => state.metrics.skip(outcome.reason_label()),
        Outcome::Denied(_) => state.metrics.failure("invalid_pod"),
        Outcome::Ignored(_) | Outcome::Unserved(_) => {}
    }
    let body = admission::to_body(&response);
    drop(response);
    if tracing::enabled!(tracing::Level::INFO) {
        let workload = request.workload();
        tracing::info!(
            namespace = request.namespace(),
            pod = %request.pod_name(),
            owner = %format!("{}/{}", workload.kind, workload.name),
            %revision,
            decision = outcome.result(),
            reason = %outcome.reason(),
            duration_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            "admission review"
        );
    }
    if request.publishes_events() && state.events.is_enabled() {
        state.events.send(Decision::new(&request, outcome));
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response()
}

/// Resolves once the shutdown flag is true (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Makes sure a listener address is usable, with a clear error.
pub async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, crate::Error> {
    TcpListener::bind(addr).await.map_err(|source| crate::Error::Bind {
        what: what.to_owned(),
        addr,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_servers_timeout_parameter_is_read_as_go_writes_durations() {
        let ms = Duration::from_millis;
        for (query, want) in [
            (Some("timeout=10s"), Some(ms(10_000))),
            (Some("timeout=3s"), Some(ms(3_000))),
            (Some("a=b&timeout=2.5s"), Some(ms(2_500))),
            (Some("timeout=1m30s"), Some(ms(90_000))),
            (Some("timeout=500ms"), Some(ms(500))),
            (Some("timeout=1h0m0s"), Some(ms(3_600_000))),
            (Some("timeout=1500us"), Some(ms(1) + Duration::from_micros(500))),
            (Some("timeout=2\u{b5}s"), Some(Duration::from_micros(2))),
            // Not positive, malformed or absent: the webhook's own deadline.
            (Some("timeout=0s"), None),
            (Some("timeout=0"), None),
            (Some("timeout="), None),
            (Some("timeout=10"), None),
            (Some("timeout=-1s"), None),
            (Some("timeout=1.2.3s"), None),
            (Some("timeout=s"), None),
            (Some("timeout=10x"), None),
            (Some("timeouts=10s"), None),
            (Some("x=1"), None),
            (None, None),
        ] {
            assert_eq!(client_timeout(query), want, "{query:?}");
        }
    }
}
