//! The HTTP side: the admission router (HTTPS only), the admin router, and a TLS accept loop with graceful drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use mizzen::admission::{self, Outcome};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::events::{Decision, EventSink};
use crate::metrics::Metrics;
use crate::store::Store;

/// Largest AdmissionReview accepted (bytes); larger bodies get 413.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

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
    /// Set once shutdown began: /readyz turns 503 so no new traffic is routed here.
    pub draining: Arc<AtomicBool>,
}

/// The admission router: `POST /inject` and `POST /inject/{revision}`.
pub fn admission_router(state: AppState) -> Router {
    Router::new()
        .route("/inject", post(inject_default))
        .route("/inject/{revision}", post(inject_revision))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: POST /inject or /inject/<revision>\n") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
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
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    s.metrics.render(),
                )
            }),
        )
        .with_state(state)
}

async fn inject_default(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    handle(state, "default".to_owned(), body).await
}

async fn inject_revision(
    State(state): State<AppState>,
    Path(revision): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(state, revision, body).await
}

fn plain(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

async fn handle(state: AppState, revision: String, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            let label = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "bad_request"
            };
            state.metrics.request(label);
            state.metrics.failure(label);
            tracing::warn!(%revision, status = status.as_u16(), "admission request body refused");
            return plain(status, format!("{} (limit {MAX_BODY} bytes)", rejection.body_text()));
        }
    };
    let deadline = started + state.timeout;
    let Ok(Ok(permit)) = tokio::time::timeout_at(deadline.into(), state.permits.clone().acquire_owned()).await else {
        state.metrics.request("timeout");
        state.metrics.failure("timeout");
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "mizzen webhook overloaded; try again".into(),
        );
    };
    let work_state = state.clone();
    let work = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        review(&work_state, &revision, &body, started)
    });
    match tokio::time::timeout_at(deadline.into(), work).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            tracing::error!(%error, "admission review task failed");
            state.metrics.failure("internal");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
        }
        Err(_) => {
            state.metrics.request("timeout");
            state.metrics.failure("timeout");
            plain(StatusCode::GATEWAY_TIMEOUT, "mizzen webhook timed out".into())
        }
    }
}

/// Answers one review (runs on a blocking thread).
fn review(state: &AppState, revision: &str, body: &[u8], started: Instant) -> Response {
    let request = match admission::parse(body) {
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
        &request,
        config.as_deref(),
        revision,
        namespace.as_ref().map(|n| &n.annotations),
    );
    let elapsed = started.elapsed();
    state.metrics.observe(elapsed);
    state.metrics.request(outcome.result());
    match &outcome {
        Outcome::Injected(_) => state.metrics.injection(revision),
        Outcome::Skipped(_) => state.metrics.skip(outcome.reason_label()),
        Outcome::Denied(_) if config.is_none() => state.metrics.failure("unknown_revision"),
        Outcome::Denied(_) => state.metrics.failure("invalid_pod"),
        Outcome::Ignored(_) => {}
    }
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
    if request.publishes_events() {
        state
            .events
            .send(Decision::new(workload, &request.pod["metadata"], outcome));
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(admission::to_body(response)),
    )
        .into_response()
}

/// Serves `router` over TLS on `listener` until `shutdown` turns true, then drains open connections for up to
/// `drain` before returning.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let service = TowerToHyperService::new(router.clone());
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let connection = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(tls), service);
                    if let Err(error) = watcher.watch(connection).await {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                });
            }
            () = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("admission connections drained"),
        () = tokio::time::sleep(drain) => tracing::warn!("drain deadline passed; closing remaining connections"),
    }
}

/// Serves the admin router over plain HTTP until `shutdown` turns true.
pub async fn serve_plain(listener: TcpListener, router: Router, mut shutdown: watch::Receiver<bool>) {
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stopped(&mut shutdown).await })
        .await;
    if let Err(error) = result {
        tracing::warn!(%error, "admin server stopped");
    }
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
