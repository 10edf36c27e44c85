//! The Docker volume plugin protocol on a unix socket: the only file that knows its JSON.
//! Handlers are thin: decode (a malformed body is a clear `Err`), call the agent, encode.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::agent::{Agent, AgentError, VolumeInfo};

/// The content type the engine expects.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

fn reply(v: Value) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], v.to_string()).into_response()
}

fn err(op: &str, msg: String) -> Response {
    tracing::warn!(op, error = %msg, "plugin request failed");
    reply(json!({"Err": msg}))
}

fn agent_err(op: &str, e: &AgentError) -> Response {
    err(op, e.chain())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateReq {
    name: String,
    #[serde(default)]
    opts: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NameReq {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MountReq {
    name: String,
    #[serde(rename = "ID")]
    id: String,
}

fn decode<T: serde::de::DeserializeOwned>(op: &str, body: &Bytes) -> Result<T, Box<Response>> {
    serde_json::from_slice(body)
        .map_err(|e| Box::new(err(op, format!("malformed {op} request: {e}"))))
}

fn volume_json(v: &VolumeInfo) -> Value {
    json!({"Name": v.name, "Mountpoint": v.mountpoint, "Status": v.status})
}

type Shared = Arc<Agent>;

async fn activate() -> Response {
    reply(json!({"Implements": ["VolumeDriver"]}))
}

async fn capabilities() -> Response {
    reply(json!({"Capabilities": {"Scope": "global"}}))
}

async fn create(State(a): State<Shared>, body: Bytes) -> Response {
    let r: CreateReq = match decode("Create", &body) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    match a.create(&r.name, &r.opts.unwrap_or_default()).await {
        Ok(()) => reply(json!({"Err": ""})),
        Err(e) => agent_err("Create", &e),
    }
}

async fn remove(State(a): State<Shared>, body: Bytes) -> Response {
    let r: NameReq = match decode("Remove", &body) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    match a.remove(&r.name).await {
        Ok(()) => reply(json!({"Err": ""})),
        Err(e) => agent_err("Remove", &e),
    }
}

async fn mount(State(a): State<Shared>, body: Bytes) -> Response {
    let r: MountReq = match decode("Mount", &body) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    match a.mount(&r.name, &r.id).await {
        Ok(p) => reply(json!({"Mountpoint": p.display().to_string(), "Err": ""})),
        Err(e) => agent_err("Mount", &e),
    }
}

async fn unmount(State(a): State<Shared>, body: Bytes) -> Response {
    let r: MountReq = match decode("Unmount", &body) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    match a.unmount(&r.name, &r.id).await {
        Ok(released) => {
            // The last reference went: a `replicated` volume's standbys get its final state
            // before Docker hears the Unmount is done.
            if released {
                crate::replica::ship_after_unmount(&a, &r.name).await;
            }
            reply(json!({"Err": ""}))
        }
        Err(e) => agent_err("Unmount", &e),
    }
}

async fn path(State(a): State<Shared>, body: Bytes) -> Response {
    let r: NameReq = match decode("Path", &body) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    match a.path(&r.name).await {
        Ok(p) => reply(json!({"Mountpoint": p, "Err": ""})),
        Err(e) => agent_err("Path", &e),
    }
}

async fn get(State(a): State<Shared>, body: Bytes) -> Response {
    let r: NameReq = match decode("Get", &body) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    match a.get(&r.name).await {
        Ok(v) => reply(json!({"Volume": volume_json(&v), "Err": ""})),
        Err(e) => agent_err("Get", &e),
    }
}

async fn list(State(a): State<Shared>) -> Response {
    match a.list().await {
        Ok(vs) => reply(
            json!({"Volumes": vs.iter().map(|v| json!({"Name": v.name, "Mountpoint": v.mountpoint})).collect::<Vec<_>>(), "Err": ""}),
        ),
        Err(e) => agent_err("List", &e),
    }
}

/// Every reply closes its connection, so the engine dials the socket path afresh on each call
/// and a restarted (or replaced) agent is picked up at once instead of via a dead keep-alive.
async fn close_connection(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    r
}

/// Reads the whole request body before any handler answers: a handler that ignores the body
/// (Activate, Capabilities, List, an unknown path) would otherwise reply and close while the
/// client is still writing it, and a client that writes its body separately gets EPIPE.
async fn read_body(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => {
            next.run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(b),
            ))
            .await
        }
        Err(e) => err("request", format!("cannot read the request body: {e}")),
    }
}

/// The engine's requests are small JSON objects.
const BODY_LIMIT: usize = 1 << 20;

/// The plugin routes.
pub fn router(agent: Shared) -> Router {
    Router::new()
        .route("/Plugin.Activate", post(activate))
        .route("/VolumeDriver.Create", post(create))
        .route("/VolumeDriver.Remove", post(remove))
        .route("/VolumeDriver.Mount", post(mount))
        .route("/VolumeDriver.Unmount", post(unmount))
        .route("/VolumeDriver.Path", post(path))
        .route("/VolumeDriver.Get", post(get))
        .route("/VolumeDriver.List", post(list))
        .route("/VolumeDriver.Capabilities", post(capabilities))
        .fallback(|| async { err("unknown", "unknown plugin endpoint".into()) })
        .layer(axum::middleware::from_fn(read_body))
        .layer(axum::middleware::map_response(close_connection))
        .with_state(agent)
}

/// Binds the socket with mode 0660, replacing a stale one (nobody answers on it) but refusing
/// a live one: a second agent on the same socket must not silently take the first one's place.
pub fn bind(socket: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(md) = std::fs::symlink_metadata(socket)
        && md.file_type().is_socket()
    {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "another agent is already listening on {}; stop it first",
                    socket.display()
                ),
            ));
        }
        std::fs::remove_file(socket)?;
    }
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let l = tokio::net::UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    Ok(l)
}

/// Serves the plugin protocol until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::UnixListener,
    agent: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(agent))
        .with_graceful_shutdown(shutdown)
        .await
}
