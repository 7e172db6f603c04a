//! The accept loop: plain HTTP or TLS (rustls), HTTP/1.1 and HTTP/2, and a graceful shutdown that
//! stops accepting, lets running transfers finish, and gives up after a grace period.
//!
//! Every connection is bounded (the settings are in [`Limits`]):
//! - at most `max_connections` are open; the next `accept` waits until one closes, so excess
//!   clients wait in the kernel's backlog instead of taking descriptors (logged once a minute);
//! - at most `max_connections_per_address` from one client address; more are closed at once, so
//!   one client cannot take every slot;
//! - request headers must arrive within `header_read_timeout` (hyper's timer, HTTP/1);
//! - a connection with no request in flight that reads nothing for `idle_timeout` is closed
//!   (covers half-open and idle keep-alive connections, HTTP/1 and HTTP/2);
//! - every request body must keep up `body_min_rate` bytes per second over each `body_rate_window`
//!   ([`MinRateBody`]); a slower body fails with [`BodyTooSlow`], which handlers answer with 408.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use bytes::Bytes;
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

use crate::Limits;

/// Certificate chain and private key files (PEM) for TLS.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub use berth_core::error::BodyTooSlow;

/// Wraps a request body and enforces a minimum average data rate per window.
pub struct MinRateBody<B> {
    inner: B,
    window: Duration,
    min_per_window: u64,
    min_rate: u64,
    received: u64,
    /// The end of the current window; its timer is made only when the body first has to wait,
    /// so requests without a body (most of them) cost no timer.
    window_end: tokio::time::Instant,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    failed: bool,
}

impl<B> MinRateBody<B> {
    pub fn new(inner: B, min_rate: u64, window: Duration) -> MinRateBody<B> {
        MinRateBody {
            inner,
            window,
            min_per_window: min_rate.saturating_mul(window.as_secs().max(1)),
            min_rate,
            received: 0,
            window_end: tokio::time::Instant::now() + window,
            deadline: None,
            failed: false,
        }
    }
}

impl<B> http_body::Body for MinRateBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.received += d.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                // The window's timer runs only while the server waits for the client; a handler
                // that stops reading (back-pressure from disk) is not the client's fault.
                let end = this.window_end;
                let deadline = this.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(end)));
                while deadline.as_mut().poll(cx).is_ready() {
                    if this.received < this.min_per_window {
                        this.failed = true;
                        let e = BodyTooSlow { received: this.received, window_secs: this.window.as_secs(), min_rate: this.min_rate };
                        metrics::counter!("berth_slow_bodies_total").increment(1);
                        return Poll::Ready(Some(Err(Box::new(e))));
                    }
                    this.received = 0;
                    this.window_end = tokio::time::Instant::now() + this.window;
                    deadline.as_mut().reset(this.window_end);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Open connections per client address.
#[derive(Default)]
struct PerAddress {
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

impl PerAddress {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<std::net::IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Counts a new connection from `ip` unless it already has `max`.
    fn admit(self: &Arc<Self>, ip: std::net::IpAddr, max: usize) -> Option<AddressSlot> {
        let mut open = self.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot { ip, table: self.clone() })
    }
}

/// One counted connection of an address; uncounted when dropped.
struct AddressSlot {
    ip: std::net::IpAddr,
    table: Arc<PerAddress>,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// An accepted connection's share of the limits: its global slot, its address's slot and the
/// `berth_open_connections` gauge, all given back when dropped.
struct OpenConnection {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _slot: AddressSlot,
}

impl OpenConnection {
    fn new(permit: tokio::sync::OwnedSemaphorePermit, slot: AddressSlot) -> OpenConnection {
        metrics::gauge!("berth_open_connections").increment(1.0);
        OpenConnection { _permit: permit, _slot: slot }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!("berth_open_connections").decrement(1.0);
    }
}

/// Per-connection activity: when the client last sent bytes, and requests in flight.
struct Activity {
    start: Instant,
    last_read_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        self.last_read_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_read_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// A stream that records when it last read bytes.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Counts a request as in flight until its response body is done (or dropped).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(a: &Arc<Activity>) -> InFlight {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A response body that keeps its request counted as in flight.
struct Tracked {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(64 * 1024);
    b
}

async fn serve_io<S>(stream: S, app: Router, peer: SocketAddr, limits: Arc<Limits>, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity { start: Instant::now(), last_read_ms: AtomicU64::new(0), in_flight: AtomicUsize::new(0) });
    let io = TokioIo::new(Watched { inner: stream, activity: activity.clone() });
    let (min_rate, window) = (limits.body_min_rate, limits.body_rate_window);
    let act = activity.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let guard = InFlight::new(&act);
        req.extensions_mut().insert(ConnectInfo(peer));
        let req = req.map(|b| Body::new(MinRateBody::new(b, min_rate, window)));
        let app = app.clone();
        async move {
            let resp = app.oneshot(req).await?;
            Ok::<_, std::convert::Infallible>(resp.map(|b| Body::new(Tracked { inner: b, _guard: guard })))
        }
    });
    let builder = builder(&limits);
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let idle = limits.idle_timeout;
    let check = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut closing = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep(check), if !closing => {
                if activity.in_flight.load(Ordering::Relaxed) == 0 && activity.idle_for() >= idle {
                    tracing::debug!(%peer, idle_secs = idle.as_secs(), "closing an idle connection");
                    metrics::counter!("berth_idle_connections_closed_total").increment(1);
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            _ = stop.changed(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
        if closing {
            // An idle or stopping connection gets a moment to finish what it writes, then goes.
            if activity.in_flight.load(Ordering::Relaxed) == 0 {
                let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
                return;
            }
        }
    }
}

/// [`serve_with`] with the default [`Limits`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    serve_with(listener, app, tls, shutdown, grace, Limits::default()).await
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits up to `grace` for running
/// requests. With `tls`, every connection is TLS. `limits` bound connections and their timing.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    limits: Limits,
) -> std::io::Result<()> {
    let limits = Arc::new(limits);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut last_full_warning: Option<Instant> = None;
    let mut last_address_warning: Option<Instant> = None;
    let per_address = Arc::new(PerAddress::default());
    tokio::pin!(shutdown);
    loop {
        let permit = match connections.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if last_full_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached: new connections wait until one closes (limits.max_connections)"
                    );
                    last_full_warning = Some(Instant::now());
                }
                metrics::counter!("berth_connection_limit_reached_total").increment(1);
                tokio::select! {
                    p = connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                    _ = &mut shutdown => break,
                }
            }
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(slot) = per_address.admit(peer.ip(), limits.max_connections_per_address) else {
                    if last_address_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        tracing::warn!(
                            client = %peer.ip(),
                            max_connections_per_address = limits.max_connections_per_address,
                            "a client address reached its connection limit: its further connections are closed (limits.max_connections_per_address)"
                        );
                        last_address_warning = Some(Instant::now());
                    }
                    metrics::counter!("berth_connections_refused_total", "reason" => "per_address").increment(1);
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let limits = limits.clone();
                let stop = stop_rx.clone();
                // Held by the connection's task: frees its slots (and the gauge) however it ends.
                let open = OpenConnection::new(permit, slot);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        None => serve_io(stream, app, peer, limits, stop).await,
                        Some(acceptor) => match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => serve_io(tls, app, peer, limits, stop).await,
                            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        },
                    }
                    drop(open);
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(grace_secs = grace.as_secs(), "shutting down: waiting for running requests");
    let _ = stop_tx.send(true);
    let all = limits.max_connections.min(u32::MAX as usize) as u32;
    tokio::select! {
        _ = connections.acquire_many(all) => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing remaining connections"),
    }
    Ok(())
}
