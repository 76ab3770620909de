//! The HTTP side of the endpoint: `GET /metrics` (and `HEAD`), HTTP/1.1 on
//! hyper.
//!
//! Bounded like every other listener of ipfailover: at most
//! [`MAX_CONNECTIONS`] at once (more are closed at once), a request's
//! header must arrive within [`HEADER_TIMEOUT`], and a connection lives at
//! most [`CONNECTION_LIFETIME`]. A bind failure (address in use, an
//! address this host does not have) is logged and retried every
//! [`BIND_RETRY`]: metrics never stop masterd or the failover.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::Exporter;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// Time for a request's header to arrive.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one connection (keep-alive included).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// Interval between attempts to bind the listen address.
pub const BIND_RETRY: Duration = Duration::from_secs(10);

/// The content type of the text exposition format 0.0.4.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `/metrics` on `listen` until `quit` becomes true.
pub async fn serve(listen: SocketAddr, exp: Arc<Exporter>, mut quit: watch::Receiver<bool>) {
    let mut warned = false;
    let listener = loop {
        if *quit.borrow() {
            return;
        }
        match TcpListener::bind(listen).await {
            Ok(l) => break l,
            Err(e) => {
                if !warned {
                    tracing::error!(listen = %listen, error = %e, "cannot serve /metrics ([metrics] listen); retrying every {}s", BIND_RETRY.as_secs());
                    warned = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(BIND_RETRY) => {}
                    _ = quit.changed() => {}
                }
            }
        }
    };
    tracing::info!(listen = %listen, "serving Prometheus metrics at /metrics");
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = quit.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and the like: back off a little, keep the listener.
                tracing::debug!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(peer = %peer, "metrics: too many connections; closed");
            continue;
        };
        let exp = Arc::clone(&exp);
        conns.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let exp = Arc::clone(&exp);
                async move { Ok::<_, Infallible>(answer(&exp, &req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "metrics: connection ended")
                }
                Err(_) => {
                    tracing::debug!(peer = %peer, "metrics: connection closed after its lifetime")
                }
            }
            drop(permit);
        });
    }
    conns.shutdown().await;
}

fn response(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

async fn answer(exp: &Exporter, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let plain = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = response(
            StatusCode::METHOD_NOT_ALLOWED,
            plain,
            "only GET and HEAD\n".into(),
        );
        r.headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        // hyper sends no body in answer to HEAD.
        "/metrics" => match exp.scrape().await {
            Ok(text) => response(StatusCode::OK, TEXT_FORMAT, text),
            Err(e) => {
                tracing::error!(error = %e, "metrics: cannot encode");
                response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    plain,
                    format!("cannot encode the metrics: {e}\n"),
                )
            }
        },
        "/" => response(
            StatusCode::OK,
            plain,
            "ipfailover masterd: metrics at /metrics\n".into(),
        ),
        _ => response(
            StatusCode::NOT_FOUND,
            plain,
            "not found: the metrics are at /metrics\n".into(),
        ),
    }
}
