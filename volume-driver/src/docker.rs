//! The local Docker Engine, only as far as self-fencing needs it: which running containers use
//! one of this driver's volumes, and stopping them. Over the engine's unix socket with the
//! crate's own HTTP client; unversioned paths, which every engine since 1.24 answers.

use std::path::PathBuf;

use hyper::Method;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use berth_volume_client::http_client::{self, HttpError, Target};

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("Docker Engine unreachable")]
    Transport(#[from] HttpError),
    #[error("Docker Engine said {status} to {what}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error("Docker Engine's container list does not decode: {0}")]
    Decode(String),
}

/// A handle on the engine at a unix socket.
#[derive(Debug, Clone)]
pub struct Docker {
    target: Target,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Container {
    id: String,
    #[serde(default)]
    mounts: Vec<MountPoint>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MountPoint {
    #[serde(default)]
    r#type: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    driver: String,
}

/// Whether `reported` (a mount's `Driver`) is the driver this agent serves as `driver`: a
/// legacy plugin is known by its socket's name, a managed one by its reference (`berth:1`).
fn same_driver(reported: &str, driver: &str) -> bool {
    reported == driver || reported.split(':').next() == Some(driver)
}

impl Docker {
    pub fn new(socket: PathBuf) -> Docker {
        Docker {
            target: Target::Unix(socket),
        }
    }

    /// Running containers that mount volume `name` of `driver`. The engine's `volume` filter
    /// matches any driver's volume of that name (and mount destinations), so the mounts are
    /// checked here: a container of another driver is never touched.
    pub async fn containers_using(
        &self,
        name: &str,
        driver: &str,
    ) -> Result<Vec<String>, DockerError> {
        let filters = serde_json::json!({ "volume": [name] }).to_string();
        let path = format!(
            "/containers/json?filters={}",
            utf8_percent_encode(&filters, NON_ALPHANUMERIC)
        );
        let r = http_client::send(&self.target, Method::GET, &path, &[], Vec::new()).await?;
        if !r.status.is_success() {
            return Err(DockerError::Status {
                what: "listing containers".into(),
                status: r.status.as_u16(),
                body: String::from_utf8_lossy(&r.body).into_owned(),
            });
        }
        let list: Vec<Container> =
            serde_json::from_slice(&r.body).map_err(|e| DockerError::Decode(e.to_string()))?;
        Ok(list
            .into_iter()
            .filter(|c| {
                c.mounts.iter().any(|m| {
                    m.r#type == "volume" && m.name == name && same_driver(&m.driver, driver)
                })
            })
            .map(|c| c.id)
            .collect())
    }

    /// Whether the engine answers at all (`GET /_ping`).
    pub async fn ping(&self) -> Result<(), DockerError> {
        let r = http_client::send(&self.target, Method::GET, "/_ping", &[], Vec::new()).await?;
        if !r.status.is_success() {
            return Err(DockerError::Status {
                what: "ping".into(),
                status: r.status.as_u16(),
                body: String::from_utf8_lossy(&r.body).into_owned(),
            });
        }
        Ok(())
    }

    /// The engine's Swarm node ID (empty when it is in no swarm).
    pub async fn swarm_node_id(&self) -> Result<String, DockerError> {
        let r = http_client::send(&self.target, Method::GET, "/info", &[], Vec::new()).await?;
        if !r.status.is_success() {
            return Err(DockerError::Status {
                what: "reading /info".into(),
                status: r.status.as_u16(),
                body: String::from_utf8_lossy(&r.body).into_owned(),
            });
        }
        let v: serde_json::Value =
            serde_json::from_slice(&r.body).map_err(|e| DockerError::Decode(e.to_string()))?;
        Ok(v["Swarm"]["NodeID"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Stops container `id`: SIGTERM, then SIGKILL after `grace_s` seconds (the engine's own
    /// stop). A container already stopped or gone counts as stopped.
    pub async fn stop(&self, id: &str, grace_s: u64) -> Result<(), DockerError> {
        self.post(
            &format!("/containers/{id}/stop?t={grace_s}"),
            "stopping",
            id,
        )
        .await
    }

    /// SIGKILLs container `id`, for when a stop did not finish in time.
    pub async fn kill(&self, id: &str) -> Result<(), DockerError> {
        self.post(&format!("/containers/{id}/kill"), "killing", id)
            .await
    }

    async fn post(&self, path: &str, what: &str, id: &str) -> Result<(), DockerError> {
        let r = http_client::send(&self.target, Method::POST, path, &[], Vec::new()).await?;
        match r.status.as_u16() {
            // 304: already stopped; 404: gone; 409: not running (kill).
            200..=299 | 304 | 404 | 409 => Ok(()),
            status => Err(DockerError::Status {
                what: format!("{what} container {id}"),
                status,
                body: String::from_utf8_lossy(&r.body).into_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_managed_plugin_is_known_by_its_reference() {
        assert!(super::same_driver("berth", "berth"));
        assert!(super::same_driver("berth:1", "berth"));
        assert!(!super::same_driver("local", "berth"));
        assert!(!super::same_driver("berthx", "berth"));
    }
}
