//! Optional TLS (rustls, ring provider) shared by both binaries: the listeners' certificate and key
//! (`--tls-cert`, `--tls-key`), the clients' trust (`--tls-ca`, else the system's roots) and the
//! accept loop that serves a router over TLS. Without the flags nothing here is used.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use tokio_rustls::TlsAcceptor;

/// A TLS file that cannot be used, or a half-given certificate and key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert and --tls-key go together: {0} given without the other")]
    Half(&'static str),
    #[error("cannot read {what} {}: {msg}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        msg: String,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
}

// ring, though rustls marks it deprecated (no post-quantum key exchange): aws-lc-rs needs cmake
// and a longer C build on every machine that builds Berth.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |msg: String| TlsError::File {
        what: "certificate file",
        path: path.to_path_buf(),
        msg,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// The listener's TLS from `--tls-cert` and `--tls-key`: `None` when neither is given (plain
/// HTTP), an error when only one is.
pub fn server(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<TlsAcceptor>, TlsError> {
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(_), None) => return Err(TlsError::Half("--tls-cert")),
        (None, Some(_)) => return Err(TlsError::Half("--tls-key")),
        (Some(c), Some(k)) => (c, k),
    };
    let chain = certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
        what: "private key file",
        path: key.to_path_buf(),
        msg: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(config))))
}

/// What an `https://` client trusts: the CA in `--tls-ca`, else the system's roots; and the
/// pool of connections made with that trust (clones share it).
#[derive(Clone)]
pub struct ClientTls {
    client: crate::pool::Pooled<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    >,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    pub fn new(ca: Option<&Path>) -> Result<ClientTls, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        match ca {
            Some(path) => {
                for c in certs(path)? {
                    roots.add(c).map_err(|e| TlsError::File {
                        what: "CA file",
                        path: path.to_path_buf(),
                        msg: e.to_string(),
                    })?;
                }
            }
            None => {
                // A machine without a readable store still gets a client: every server then
                // fails verification, naming the unknown issuer.
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(c);
                }
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        // The certificate is checked against the URI's host (`https://HOST:PORT`).
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .wrap_connector(crate::pool::tcp_connector());
        Ok(ClientTls {
            client: crate::pool::pooled(connector),
        })
    }

    pub(crate) fn client(
        &self,
    ) -> &crate::pool::Pooled<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    > {
        &self.client
    }
}

/// Serves `svc` over TLS on `listener` until `shutdown`, then lets open connections finish
/// (what `axum::serve(..).with_graceful_shutdown` does for plain HTTP). A failed handshake
/// closes that connection only.
pub async fn serve<S, B>(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    svc: S,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                // Out of descriptors and the like: the listener itself is fine.
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let svc = svc.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(
                TokioIo::new(tls),
                hyper_util::service::TowerToHyperService::new(svc),
            );
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
    Ok(())
}
