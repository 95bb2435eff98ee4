//! Connections of both ports: an accept loop with a connection cap (TLS for the admission port, plain HTTP for the
//! admin port), per-connection header-read and idle timeouts, and the drain on shutdown (idle keep-alive
//! connections closed cleanly, in-flight requests finished, all within the drain deadline).
//!
//! Timeouts are kept by a small watchdog per connection rather than by hyper, whose header timer also runs while a
//! keep-alive connection waits for its next request: the watchdog tells the two apart by whether any byte arrived
//! since the last response. At the cap, idle connections give way: the accept loop signals the pressure and
//! connections idle for more than [`EVICTABLE_AFTER`] close cleanly, so clients kept waiting in the listen backlog
//! by idle ones (a keep-alive pool, or connections opened to exhaust the cap) are served.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, TryAcquireError, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::server::stopped;

/// The largest request head read.
pub const MAX_HEAD: usize = 16 * 1024;

/// Under pressure, a connection idle this long closes to make room. Long enough for a client that was just
/// accepted to send its request (it usually has already), short enough that clients in the backlog wait little.
pub const EVICTABLE_AFTER: Duration = Duration::from_millis(100);

/// Connection limits and timeouts of a port.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at most; further clients wait in the listen backlog (no file descriptor used).
    pub max_connections: usize,
    /// A TLS handshake, or a request's headers once its first byte arrived, must complete within this.
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed cleanly (TLS close_notify).
    pub idle_timeout: Duration,
}

/// Activity of one connection, shared by its IO wrapper, its service and its watchdog.
#[derive(Debug)]
struct Activity {
    epoch: Instant,
    /// Microseconds since `epoch` when the last response was produced (or the connection opened).
    last_done: AtomicU64,
    /// Microseconds since `epoch`, plus one, of the first byte read while no request was being handled: when the
    /// next request's headers began. 0 when none is pending.
    head_since: AtomicU64,
    /// Requests being handled.
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last_done: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// Marks a request done when dropped (also when its future is cancelled).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.head_since.store(0, Ordering::Release);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_done.store(self.0.now(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An IO stream that records when bytes were last read.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let a = &self.activity;
        if buf.filled().len() > before && a.in_flight.load(Ordering::Acquire) == 0 {
            // The first bytes of a request (bytes read while one is handled are its body).
            let _ = a
                .head_since
                .compare_exchange(0, a.now() + 1, Ordering::AcqRel, Ordering::Acquire);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// What the watchdog decided.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Fine,
    /// No request for the idle timeout: close cleanly.
    Idle,
    /// Idle while the port is at its connection cap: close cleanly to make room.
    Evicted,
    /// A request's headers are taking too long: drop the connection.
    SlowHeaders,
}

fn judge(activity: &Activity, limits: &Limits, under_pressure: bool) -> Verdict {
    judge_at(activity, limits, under_pressure, activity.now())
}

/// [`judge`] at `now`, microseconds since the activity's epoch.
fn judge_at(activity: &Activity, limits: &Limits, under_pressure: bool, now: u64) -> Verdict {
    if activity.in_flight.load(Ordering::Acquire) > 0 {
        return Verdict::Fine;
    }
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let head_since = activity.head_since.load(Ordering::Acquire);
    if head_since != 0 {
        // Bytes of a request arrived but it was not dispatched yet: its headers are in progress.
        if now.saturating_sub(head_since - 1) > us(limits.header_read_timeout) {
            return Verdict::SlowHeaders;
        }
        return Verdict::Fine;
    }
    let idle_for = now.saturating_sub(activity.last_done.load(Ordering::Acquire));
    if idle_for > us(limits.idle_timeout) {
        Verdict::Idle
    } else if under_pressure && idle_for > us(EVICTABLE_AFTER) {
        Verdict::Evicted
    } else {
        Verdict::Fine
    }
}

/// Set while the accept loop waits for a free slot; idle connections then close.
#[derive(Debug, Default)]
struct Pressure {
    on: AtomicBool,
    /// Wakes the watchdogs when the pressure comes on, so they need not wait for their next tick.
    rising: Notify,
}

impl Pressure {
    fn set(&self, on: bool) {
        if !self.on.swap(on, Ordering::AcqRel) && on {
            self.rising.notify_waiters();
        }
    }

    fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }
}

/// How a port's connections begin.
#[derive(Clone)]
enum Transport {
    /// A TLS handshake (within the header-read timeout), then HTTP.
    Tls(TlsAcceptor),
    /// HTTP at once.
    Plain,
}

/// Serves `router` over TLS on `listener` until `shutdown` turns true; then stops accepting, closes idle
/// connections, lets in-flight requests finish for up to `drain`, and returns.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    let transport = Transport::Tls(TlsAcceptor::from(tls));
    serve(listener, transport, router, limits, shutdown, drain, "admission").await;
}

/// Serves `router` over plain HTTP on `listener` (the admin port), as [`serve_tls`] does.
pub async fn serve_plain(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
) {
    serve(listener, Transport::Plain, router, limits, shutdown, drain, "admin").await;
}

async fn serve(
    listener: TcpListener,
    transport: Transport,
    router: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    port: &'static str,
) {
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let pressure = Arc::new(Pressure::default());
    loop {
        // Wait for a free slot before accepting, so a flood of clients queues in the kernel's backlog instead of
        // using file descriptors (the other port keeps answering); meanwhile idle connections make room.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(TryAcquireError::Closed) => break,
            Err(TryAcquireError::NoPermits) => {
                pressure.set(true);
                let slot = tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = stopped(&mut shutdown) => break,
                };
                pressure.set(false);
                slot
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, port, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            peer,
            router: router.clone(),
            limits: limits.clone(),
            shutdown: shutdown.clone(),
            pressure: pressure.clone(),
        };
        let transport = transport.clone();
        tokio::spawn(async move {
            let _slot = slot;
            connection.serve(stream, transport).await;
        });
    }
    pressure.set(false);
    drop(listener);
    tracing::info!(port, "listener closed; draining connections");
    // Every connection holds a slot until it ends: all slots back means all connections closed.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    match tokio::time::timeout(drain, slots.acquire_many(all)).await {
        Ok(_) => tracing::info!(port, "connections drained"),
        Err(_) => tracing::warn!(port, "drain deadline passed; closing remaining connections"),
    }
}

/// One accepted connection and what it shares with its port.
struct Connection {
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    shutdown: watch::Receiver<bool>,
    pressure: Arc<Pressure>,
}

impl Connection {
    async fn serve(self, stream: tokio::net::TcpStream, transport: Transport) {
        let peer = self.peer;
        match transport {
            Transport::Plain => self.http(stream).await,
            Transport::Tls(acceptor) => {
                match tokio::time::timeout(self.limits.header_read_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => self.http(tls).await,
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }
        }
    }

    async fn http<S: AsyncRead + AsyncWrite + Unpin>(self, io: S) {
        let Self {
            peer,
            router,
            limits,
            mut shutdown,
            pressure,
        } = self;
        let activity = Arc::new(Activity::new());
        activity.last_done.store(activity.now(), Ordering::Release);
        let io = Tracked {
            inner: io,
            activity: activity.clone(),
        };
        let service_activity = activity.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let guard = InFlight::start(&service_activity);
            let router = router.clone();
            async move {
                let response = router.oneshot(request.map(axum::body::Body::new)).await;
                drop(guard);
                response
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        // hyper's own header timer (which also runs between requests) only as a backstop behind the watchdog.
        // A request head (the API server's is under 1 KiB) of over MAX_HEAD bytes gets 431 and the connection is
        // closed; an unfinished one is read to at most one read past it. Without the limit hyper buffers up to its
        // read buffer's maximum, about 400 KiB, which each of `max_connections` clients could hold in an unfinished
        // head that no body budget counts: 512 of them, 200 MiB. Bodies are read as before.
        builder
            .max_header_size(MAX_HEAD)
            .keep_alive(true)
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout + limits.idle_timeout + Duration::from_secs(1));
        let connection = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        let tick = (limits.header_read_timeout.min(limits.idle_timeout) / 4).max(Duration::from_millis(50));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Once closing (idle, evicted or shutdown), the connection gets this long to finish what it is doing.
        let mut closing_since: Option<Instant> = None;
        let mut shutting_down = false;
        loop {
            let verdict = tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                    return;
                }
                () = stopped(&mut shutdown), if !shutting_down => {
                    // Shutdown: an idle connection closes now, a busy one after its response (with
                    // `connection: close`).
                    shutting_down = true;
                    connection.as_mut().graceful_shutdown();
                    closing_since.get_or_insert_with(Instant::now);
                    continue;
                }
                () = pressure.rising.notified(), if closing_since.is_none() => judge(&activity, &limits, true),
                _ = ticker.tick() => judge(&activity, &limits, pressure.is_on()),
            };
            if verdict == Verdict::SlowHeaders {
                // Also while closing: a request half sent must not hold the drain.
                tracing::debug!(%peer, "request headers not received in time; connection dropped");
                return;
            }
            if let Some(since) = closing_since {
                // The shutdown's drain deadline bounds this in `serve`; an idle close gets one more period.
                if !shutting_down && since.elapsed() > limits.idle_timeout {
                    tracing::debug!(%peer, "idle connection did not close in time; dropped");
                    return;
                }
                continue;
            }
            match verdict {
                Verdict::Fine | Verdict::SlowHeaders => {}
                Verdict::Idle | Verdict::Evicted => {
                    tracing::debug!(%peer, ?verdict, "closing idle keep-alive connection");
                    connection.as_mut().graceful_shutdown();
                    closing_since = Some(Instant::now());
                }
            }
        }
    }
}

/// The soft limit on open files (`/proc/self/limits`), when it can be read.
pub fn open_files_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// `requested`, lowered so the process keeps `reserve` file descriptors for the admin port, the API watches and
/// certificate reloads when the open-files limit is low.
pub fn effective_max_connections(requested: usize, limit: Option<usize>, reserve: usize) -> usize {
    match limit {
        Some(limit) if limit.saturating_sub(reserve) < requested => limit.saturating_sub(reserve).max(1),
        _ => requested.max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 8,
            header_read_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(300),
        }
    }

    /// Times in milliseconds; `head` is when a pending request's first byte came, if one is pending. Judged at
    /// `now` (not the clock: a stalled test thread must not change the verdict).
    fn judge_ms(now: u64, head: Option<u64>, done: u64, in_flight: usize, l: &Limits, under_pressure: bool) -> Verdict {
        let a = Activity::new();
        a.head_since.store(head.map_or(0, |h| h * 1000 + 1), Ordering::Release);
        a.last_done.store(done * 1000, Ordering::Release);
        a.in_flight.store(in_flight, Ordering::Release);
        judge_at(&a, l, under_pressure, now * 1000)
    }

    #[test]
    fn the_watchdog_tells_idle_from_slow_headers() {
        let l = limits();
        assert_eq!(judge_ms(200, None, 0, 0, &l, false), Verdict::Fine);
        assert_eq!(judge_ms(400, None, 0, 0, &l, false), Verdict::Idle);
        assert_eq!(
            judge_ms(1000, None, 0, 1, &l, false),
            Verdict::Fine,
            "a request in flight"
        );
        assert_eq!(
            judge_ms(1000, Some(950), 950, 0, &l, false),
            Verdict::Fine,
            "headers arriving"
        );
        assert_eq!(
            judge_ms(1000, Some(0), 0, 0, &l, false),
            Verdict::SlowHeaders,
            "headers trickling too long"
        );
    }

    #[test]
    fn at_the_cap_only_connections_idle_for_a_while_give_way() {
        let l = limits();
        assert_eq!(judge_ms(200, None, 0, 0, &l, true), Verdict::Evicted);
        assert_eq!(
            judge_ms(200, None, 150, 0, &l, true),
            Verdict::Fine,
            "just opened or just answered"
        );
        assert_eq!(judge_ms(200, None, 0, 1, &l, true), Verdict::Fine, "busy");
        assert_eq!(
            judge_ms(200, Some(150), 0, 0, &l, true),
            Verdict::Fine,
            "headers arriving"
        );
    }

    #[test]
    fn limits_are_exceeded_only_past_them() {
        // Header timeout 100 ms, idle timeout 300 ms, evictable after 100 ms: each exactly at its limit is fine.
        let l = limits();
        assert_eq!(judge_ms(1100, Some(1000), 0, 0, &l, false), Verdict::Fine);
        assert_eq!(judge_ms(1101, Some(1000), 0, 0, &l, false), Verdict::SlowHeaders);
        assert_eq!(judge_ms(1300, None, 1000, 0, &l, false), Verdict::Fine);
        assert_eq!(judge_ms(1301, None, 1000, 0, &l, false), Verdict::Idle);
        assert_eq!(judge_ms(1100, None, 1000, 0, &l, true), Verdict::Fine);
        assert_eq!(judge_ms(1101, None, 1000, 0, &l, true), Verdict::Evicted);
    }

    #[test]
    fn a_low_open_files_limit_lowers_the_connection_cap() {
        assert_eq!(effective_max_connections(1024, Some(256), 64), 192);
        assert_eq!(effective_max_connections(100, Some(256), 64), 100);
        assert_eq!(effective_max_connections(100, None, 64), 100);
        assert_eq!(effective_max_connections(100, Some(10), 64), 1);
    }
}
