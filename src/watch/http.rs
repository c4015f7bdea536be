//! Serving `/metrics` over HTTP/1 with hyper, bounded so that no client can starve the
//! sampler: a deadline for the request headers and one for the whole connection, a cap on
//! open connections (over it, a connection is closed at once), and an accept loop that backs
//! off when accepting fails (out of file descriptors) instead of spinning.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::events::{Backoff, message_id};
use super::metrics::{CONTENT_TYPE, Metrics};

/// Prometheus and a person with curl need a handful; each costs one file descriptor, and the
/// service's `LimitNOFILE=` leaves room for these and the daemon's own.
pub const MAX_CONNECTIONS: usize = 32;
/// A scraper on this host sends its request at once; a client that has not, after this long,
/// is holding a slot.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Everything, including writing the answer to a client that does not read it.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(50);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);

fn respond(req: &Request<hyper::body::Incoming>, metrics: &Mutex<Metrics>) -> Response<Full<Bytes>> {
    let mut res = if req.uri().path() == "/metrics" && matches!(*req.method(), Method::GET | Method::HEAD) {
        let body = metrics.lock().map(|m| m.render()).unwrap_or_default();
        let mut res = Response::new(Full::new(Bytes::from(body)));
        res.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(CONTENT_TYPE));
        res
    } else {
        let mut res = Response::new(Full::new(Bytes::from_static(b"try GET /metrics\r\n")));
        *res.status_mut() = StatusCode::NOT_FOUND;
        res
    };
    res.headers_mut().insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
    res
}

/// Errors that concern one connection that is already gone; anything else (EMFILE, ENFILE,
/// ENOBUFS) stays until something else closes a descriptor, so retrying at once would spin.
fn only_that_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
}

/// Serves `GET /metrics` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Mutex<Metrics>>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut pause = ACCEPT_PAUSE_MIN;
    let mut failures = Backoff::default();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) if only_that_connection(&e) => continue,
            Err(e) => {
                let what = format!("the metrics endpoint cannot accept connections: {e}; retrying");
                if let Some(line) = failures.fail(Instant::now(), &what) {
                    tracing::warn!(MESSAGE_ID = message_id::METRICS_ACCEPT_FAILED, "{line}");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(ACCEPT_PAUSE_MAX);
                continue;
            }
        };
        pause = ACCEPT_PAUSE_MIN;
        if failures.recovered().is_some() {
            tracing::info!(
                MESSAGE_ID = message_id::METRICS_ACCEPT_FAILED,
                "the metrics endpoint accepts connections again"
            );
        }
        // Over the cap the connection is closed unanswered: one accept and one close each.
        let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let res = respond(&req, &metrics);
                async move { Ok::<_, Infallible>(res) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, conn).await;
            drop(slot);
        });
    }
}
