//! Serving an axum app on a listener (HTTP/1.1 and HTTP/2, plain or TLS, tuned for gRPC's
//! large messages), and following the process's phases: what the HTTP and gRPC transports
//! share.

use std::convert::Infallible;

use axum::ServiceExt;
use axum::body::Body;
use axum::response::Response;

/// What [`spawn_app`] serves: an axum `Router`, or the HTTP transport's app (its router
/// behind request decompression), answering requests with axum's bodies (`axum::serve`) and
/// hyper's (`axum_server`).
pub trait Served:
    tower::Service<axum::http::Request<Body>, Response = Response, Error = Infallible, Future: Send>
    + tower::Service<
        axum::http::Request<hyper::body::Incoming>,
        Response = Response,
        Error = Infallible,
        Future: Send,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> Served for S where
    S: tower::Service<
            axum::http::Request<Body>,
            Response = Response,
            Error = Infallible,
            Future: Send,
        > + tower::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = Response,
            Error = Infallible,
            Future: Send,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// A running server: its task, and the switch that stops it accepting (open connections
/// finish their requests).
pub type Server = (
    tokio::task::JoinHandle<std::io::Result<()>>,
    tokio::sync::watch::Sender<bool>,
);

/// Serves `app` on `listener` (HTTP/1.1 and HTTP/2, gRPC included), over TLS when `tls` is
/// given (ALPN offers `h2` and `http/1.1`). With `grpc`, HTTP/2 is set up for large gRPC
/// messages ([`tune_http2`]).
pub fn spawn_app(
    listener: tokio::net::TcpListener,
    app: impl Served,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    grpc: bool,
) -> std::io::Result<Server> {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let server = if tls.is_none() && !grpc {
        // `into_make_service`: each connection gets a clone of `app` (an `Arc` for a router;
        // `axum::serve` given a `Router` itself would copy its table of routes per connection).
        let server = axum::serve(
            listener,
            ServiceExt::<axum::http::Request<Body>>::into_make_service(app),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|s| *s).await;
        });
        tokio::spawn(async move { server.await })
    } else {
        // Stops accepting on the signal; open connections finish their requests.
        let handle = axum_server::Handle::new();
        let stopping = handle.clone();
        tokio::spawn(async move {
            let _ = stopped.wait_for(|s| *s).await;
            stopping.graceful_shutdown(None);
        });
        let listener = listener.into_std()?;
        // Every acceptor sets TCP_NODELAY, as axum::serve does: without it a call's last small
        // frame (gRPC's trailers) waits for the peer's delayed ACK, tens of milliseconds per
        // call. gRPC's also reads through a buffer, and HTTP/2 is set up for large messages.
        macro_rules! serve_with {
            ($acceptor:expr, $grpc:expr) => {{
                let mut server = axum_server::from_tcp(listener)?
                    .acceptor($acceptor)
                    .handle(handle);
                if $grpc {
                    tune_http2(server.http_builder());
                }
                tokio::spawn(server.serve(
                    ServiceExt::<axum::http::Request<Body>>::into_make_service(app),
                ))
            }};
        }
        use axum_server::tls_rustls::RustlsAcceptor;
        match (tls, grpc) {
            (Some(config), false) => serve_with!(
                RustlsAcceptor::new(config).acceptor(axum_server::accept::NoDelayAcceptor),
                false
            ),
            (Some(config), true) => {
                serve_with!(RustlsAcceptor::new(config).acceptor(GrpcAcceptor), true)
            }
            (None, _) => serve_with!(GrpcAcceptor, true),
        }
    };
    Ok((server, stop))
}

/// Accepts a gRPC connection: TCP_NODELAY, and reads through a 64 KiB buffer. HTTP/2's
/// frame reader asks the socket for one frame at a time (16 KiB, as most clients send them),
/// so a 1 MiB message took some 70 `recv` calls, each making the kernel send an ACK; the
/// buffer takes what the socket holds in one call (writes pass straight through).
#[derive(Clone, Copy, Debug)]
struct GrpcAcceptor;

impl<S> axum_server::accept::Accept<tokio::net::TcpStream, S> for GrpcAcceptor {
    type Stream = tokio::io::BufReader<tokio::net::TcpStream>;
    type Service = S;
    type Future = std::future::Ready<std::io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        std::future::ready(stream.set_nodelay(true).map(|()| {
            (
                tokio::io::BufReader::with_capacity(64 << 10, stream),
                service,
            )
        }))
    }
}

/// HTTP/2 for gRPC's large messages: HTTP/2's default 64 KiB flow-control window makes a
/// 1 MiB tensor wait for window updates (a round trip each), and 16 KiB frames cut it in 64;
/// windows of 4 MiB (stream) and 8 MiB (connection) and 4 MiB frames (what grpcio offers) let a message of
/// several MiB arrive without a stall. The windows bound what one connection can send ahead
/// of the server; at most 256 streams at once per connection.
fn tune_http2(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
) {
    builder
        .http2()
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(8 << 20)
        .max_frame_size(4 << 20)
        .max_send_buf_size(4 << 20)
        .max_concurrent_streams(256);
}

/// Follows the process's phase for a server: `draining` turns true in the grace period
/// (not ready, still serving); once stopping, stops accepting and waits (up to the drain
/// deadline) for open requests to finish.
pub async fn follow_phase(
    what: &'static str,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    stop: tokio::sync::watch::Sender<bool>,
    service: &super::Service,
    mut ctx: crate::sources::SourceContext,
) {
    use crate::sources::{Phase, SourceContext};
    SourceContext::reached(&mut ctx.phase, Phase::Draining).await;
    // Not ready, so load balancers stop sending; still accepting and serving.
    service.drain();
    SourceContext::reached(&mut ctx.phase, Phase::Stopping).await;
    let _ = stop.send(true);
    match tokio::time::timeout(ctx.drain, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "serving {what} failed"),
        Ok(Err(e)) => tracing::error!(error = %e, "the {what} server panicked"),
        Err(_) => tracing::warn!(
            secs = ctx.drain.as_secs(),
            "{what} requests still running after the drain deadline"
        ),
    }
}
