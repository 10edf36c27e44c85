//! The HTTP/1.1 client the control client, the transfer puller, the replica shipper and the
//! control service's Raft messages share: hyper-util's pooled client over TCP, TLS
//! (hyper-rustls, see `tls`) or a unix socket (hyperlocal), so repeated calls to one peer reuse
//! its connection. Every request is bounded in time: connecting, and the whole exchange
//! ([`send`]) or the reply's head ([`open`]).

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::pool::{Pooled, pooled, tcp_connector};

/// How long a call waits for its whole reply unless it says otherwise ([`send_within`]).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

static TCP: LazyLock<Pooled<HttpConnector>> = LazyLock::new(|| pooled(tcp_connector()));
static UNIX: LazyLock<Pooled<hyperlocal::UnixConnector>> =
    LazyLock::new(|| pooled(hyperlocal::UnixConnector));

/// Where to connect.
#[derive(Debug, Clone)]
pub enum Target {
    /// `host:port`.
    Tcp(String),
    /// `host:port` over TLS, the certificate checked against `host`.
    Tls(String, crate::tls::ClientTls),
    Unix(PathBuf),
}

/// A transport failure (not an HTTP error status).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect to {target}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP exchange with {target} failed: {msg}")]
    Exchange { target: String, msg: String },
}

/// A reply: status, headers and the whole body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

/// Sends one request and reads the whole reply, within [`DEFAULT_TIMEOUT`].
pub async fn send(
    target: &Target,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Reply, HttpError> {
    send_within(DEFAULT_TIMEOUT, target, method, path, headers, body).await
}

/// Sends one request and reads the whole reply within `limit` (for a call the server answers
/// only once long work is done, such as a replica ship).
pub async fn send_within(
    limit: Duration,
    target: &Target,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Reply, HttpError> {
    let whole = async {
        let resp = request(target, method, path, headers, body).await?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| HttpError::Exchange {
                target: target.name(),
                msg: e.to_string(),
            })?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(limit, whole)
        .await
        .unwrap_or_else(|_| Err(target.timed_out(limit)))
}

/// Sends one request and returns as soon as the reply's head arrives (within
/// [`DEFAULT_TIMEOUT`]), its body still streaming: the caller bounds the body's time (the
/// connection goes back to the pool once the body is read, and is closed if it is dropped).
pub async fn open(
    target: &Target,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Response<Incoming>, HttpError> {
    tokio::time::timeout(
        DEFAULT_TIMEOUT,
        request(target, method, path, headers, body),
    )
    .await
    .unwrap_or_else(|_| Err(target.timed_out(DEFAULT_TIMEOUT)))
}

async fn request(
    target: &Target,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Response<Incoming>, HttpError> {
    let ex = |msg: String| HttpError::Exchange {
        target: target.name(),
        msg,
    };
    let uri: hyper::Uri = match target {
        Target::Tcp(a) => format!("http://{a}{path}")
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| ex(e.to_string()))?,
        Target::Tls(a, _) => format!("https://{a}{path}")
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| ex(e.to_string()))?,
        Target::Unix(p) => hyperlocal::Uri::new(p, path).into(),
    };
    // Berth's servers route by path alone; one Host whatever the transport, as before pooling.
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "localhost")
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    let req = b
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| ex(e.to_string()))?;
    let sent = match target {
        Target::Tcp(_) => TCP.request(req).await,
        Target::Tls(_, tls) => tls.client().request(req).await,
        Target::Unix(_) => UNIX.request(req).await,
    };
    sent.map_err(|e| target.failed(e))
}

impl Target {
    fn name(&self) -> String {
        match self {
            Target::Tcp(a) => a.clone(),
            Target::Tls(a, _) => format!("https://{a}"),
            Target::Unix(p) => p.display().to_string(),
        }
    }

    fn timed_out(&self, limit: Duration) -> HttpError {
        HttpError::Exchange {
            target: self.name(),
            msg: format!("no answer within {limit:?}"),
        }
    }

    fn failed(&self, e: hyper_util::client::legacy::Error) -> HttpError {
        if e.is_connect() {
            HttpError::Connect {
                target: self.name(),
                source: std::io::Error::other(crate::error_chain::chain(&e)),
            }
        } else {
            HttpError::Exchange {
                target: self.name(),
                msg: crate::error_chain::chain(&e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hyper_util::rt::TokioIo;

    use super::*;

    async fn hello(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        Ok(Response::new(Full::new(Bytes::from_static(b"hello"))))
    }

    /// Serves `hello` on one connection, counting it in `conns`.
    fn serve_conn<T>(io: T, conns: &Arc<AtomicUsize>)
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        conns.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), hyper::service::service_fn(hello))
                .await;
        });
    }

    #[tokio::test]
    async fn calls_to_one_peer_share_a_connection() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = Target::Tcp(l.local_addr().unwrap().to_string());
        let conns = Arc::new(AtomicUsize::new(0));
        let c = conns.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                serve_conn(s, &c);
            }
        });
        for _ in 0..3 {
            let r = send(&target, Method::GET, "/", &[], Vec::new())
                .await
                .unwrap();
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(&r.body[..], b"hello");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_unix_socket_is_pooled_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let c = conns.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                serve_conn(s, &c);
            }
        });
        let target = Target::Unix(path);
        for _ in 0..2 {
            let r = send(&target, Method::GET, "/_ping", &[], Vec::new())
                .await
                .unwrap();
            assert_eq!(&r.body[..], b"hello");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_peer_that_never_answers_is_given_up_on() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = Target::Tcp(l.local_addr().unwrap().to_string());
        // Accepts, reads nothing, answers nothing.
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                open.push(s);
            }
        });
        let limit = Duration::from_millis(200);
        let e = send_within(limit, &target, Method::GET, "/", &[], Vec::new())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, HttpError::Exchange { msg, .. } if msg.contains("no answer within")),
            "{e:?}"
        );
        held.abort();
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = Target::Tcp(l.local_addr().unwrap().to_string());
        drop(l);
        let e = send(&target, Method::GET, "/", &[], Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::Connect { .. }), "{e:?}");
    }
}
