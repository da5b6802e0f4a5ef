//! Serving the router on a socket: per-connection HTTP/1.1 with a header read timeout, and a
//! graceful drain on shutdown.
//!
//! `axum::serve` hides hyper's connection builder, and with it the header read timeout that
//! stops slow or stuck clients from holding connections open; so connections are served here
//! with hyper directly. On shutdown the listener closes, `/readyz` turns 503, keep-alive
//! connections close after their current request, and in-flight streams may finish for up to
//! the drain timeout; after that they end with an error event (never a silent cut).

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::AppState;

/// How long to wait for streams to write their final error event after the drain timeout.
const ABORT_GRACE: Duration = Duration::from_secs(5);

pub(crate) struct ServeOptions {
    pub header_read_timeout: Duration,
    pub drain_timeout: Duration,
}

pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    state: Arc<AppState>,
    abort_streams: watch::Sender<bool>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors or a transient accept error: back off briefly
                        // instead of spinning, and keep serving the connections we have.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, "connection ended with an error: {e}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    state.draining.store(true, Ordering::Relaxed);
    tracing::info!(
        "shutting down: draining in-flight requests for up to {:.0}s",
        options.drain_timeout.as_secs_f64()
    );
    let all_closed = graceful.shutdown();
    tokio::pin!(all_closed);
    if tokio::time::timeout(options.drain_timeout, &mut all_closed)
        .await
        .is_err()
    {
        tracing::warn!("drain timeout reached: ending the remaining streams with an error event");
        abort_streams.send_replace(true);
        if tokio::time::timeout(ABORT_GRACE, &mut all_closed)
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close; exiting anyway");
        }
    }
    tracing::info!("shutdown complete");
    Ok(())
}
