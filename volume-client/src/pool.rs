//! How the HTTP client's pools are made, for `http_client` (plain TCP, unix sockets) and `tls`
//! (each trust's own pool): the connect bound and how long an idle connection is kept.

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How long opening a TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an unused pooled connection is kept before the pool closes it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// The pooled client behind every plain call, and (through `tls::ClientTls`) every TLS one.
pub(crate) type Pooled<C> = Client<C, Full<Bytes>>;

pub(crate) fn pooled<C>(connector: C) -> Pooled<C>
where
    C: hyper_util::client::legacy::connect::Connect + Clone,
{
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(IDLE_TIMEOUT)
        .build(connector)
}

pub(crate) fn tcp_connector() -> HttpConnector {
    let mut c = HttpConnector::new();
    c.set_connect_timeout(Some(CONNECT_TIMEOUT));
    c.set_nodelay(true);
    // `https://` URIs go through `tls`'s connector, which wraps this one.
    c.enforce_http(false);
    c
}
