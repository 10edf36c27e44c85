//! A minimal HTTP/1.1 client (one connection per request, whole or streamed replies) over TCP or a unix socket, shared by
//! the control client and the transfer puller so neither pulls in a full HTTP client stack.

use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

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

/// Sends one request and reads the whole reply.
pub async fn send(
    target: &Target,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Reply, HttpError> {
    let resp = open(target, method, path, headers, body).await?;
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
}

/// Sends one request and returns as soon as the reply's head arrives, its body still streaming
/// (the connection lives until the body is read or dropped).
pub async fn open(
    target: &Target,
    method: Method,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Response<Incoming>, HttpError> {
    let name = target.name();
    let ex = |msg: String| HttpError::Exchange {
        target: name.clone(),
        msg,
    };
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    let req = b
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| ex(e.to_string()))?;
    let connect = |source| HttpError::Connect {
        target: name.clone(),
        source,
    };
    match target {
        Target::Tcp(a) => {
            let s = tokio::net::TcpStream::connect(a).await.map_err(connect)?;
            exchange(TokioIo::new(s), req).await.map_err(ex)
        }
        Target::Tls(a, tls) => {
            let s = tokio::net::TcpStream::connect(a).await.map_err(connect)?;
            let s = tls.connect(a, s).await.map_err(connect)?;
            exchange(TokioIo::new(s), req).await.map_err(ex)
        }
        Target::Unix(p) => {
            let s = tokio::net::UnixStream::connect(p).await.map_err(connect)?;
            exchange(TokioIo::new(s), req).await.map_err(ex)
        }
    }
}

impl Target {
    fn name(&self) -> String {
        match self {
            Target::Tcp(a) => a.clone(),
            Target::Tls(a, _) => format!("https://{a}"),
            Target::Unix(p) => p.display().to_string(),
        }
    }
}

async fn exchange<T>(io: T, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    // The connection task ends by itself once the reply is read and `tx` is gone.
    tokio::spawn(conn);
    tx.send_request(req).await.map_err(|e| e.to_string())
}
