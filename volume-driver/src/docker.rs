//! The local Docker Engine, only as far as self-fencing needs it: which running containers use
//! one of this driver's volumes, and stopping them. Through bollard (the daemon's Docker
//! client too) over the engine's unix socket, in the engine's own API version.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bollard::errors::Error as BError;
use bollard::query_parameters::{
    KillContainerOptions, ListContainersOptions, StopContainerOptions,
};

/// bollard's per-request limit (its default), in seconds; callers bound their own waits tighter.
const REQUEST_TIMEOUT_S: u64 = 120;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("Docker Engine unreachable (or its answer unreadable) while {what}")]
    Engine {
        what: String,
        #[source]
        source: BError,
    },
    #[error("Docker Engine said {status} to {what}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
}

fn error(what: &str, e: BError) -> DockerError {
    match e {
        BError::DockerResponseServerError {
            status_code,
            message,
        } => DockerError::Status {
            what: what.to_string(),
            status: status_code,
            body: message,
        },
        source => DockerError::Engine {
            what: what.to_string(),
            source,
        },
    }
}

/// A handle on the engine at a unix socket. Connecting (and learning the engine's API version)
/// waits for the first call: the agent starts before its engine does, and an engine that
/// restarts as an older version is asked again only by a new agent.
#[derive(Debug, Clone)]
pub struct Docker {
    socket: PathBuf,
    api: Arc<tokio::sync::OnceCell<bollard::Docker>>,
}

/// Whether `reported` (a mount's `Driver`) is the driver this agent serves as `driver`: a
/// legacy plugin is known by its socket's name, a managed one by its reference (`berth:1`).
fn same_driver(reported: &str, driver: &str) -> bool {
    reported == driver || reported.split(':').next() == Some(driver)
}

impl Docker {
    pub fn new(socket: PathBuf) -> Docker {
        Docker {
            socket,
            api: Arc::default(),
        }
    }

    /// The client, connected and speaking the engine's version: bollard's own (the newest it
    /// knows) lowered to the engine's, since an engine refuses a version newer than its own.
    /// An engine that answers but names no version is spoken to in bollard's.
    async fn api(&self) -> Result<&bollard::Docker, DockerError> {
        self.api
            .get_or_try_init(|| async {
                let d = bollard::Docker::connect_with_unix(
                    &self.socket.to_string_lossy(),
                    REQUEST_TIMEOUT_S,
                    bollard::API_DEFAULT_VERSION,
                )
                .map_err(|e| error("connecting", e))?;
                match d.clone().negotiate_version().await {
                    Ok(d) => Ok(d),
                    Err(
                        BError::DockerResponseServerError { .. } | BError::APIVersionParseError {},
                    ) => Ok(d),
                    Err(e) => Err(error("reading its version", e)),
                }
            })
            .await
    }

    /// Running containers that mount volume `name` of `driver`. The engine's `volume` filter
    /// matches any driver's volume of that name (and mount destinations), so the mounts are
    /// checked here: a container of another driver is never touched.
    pub async fn containers_using(
        &self,
        name: &str,
        driver: &str,
    ) -> Result<Vec<String>, DockerError> {
        let what = "listing containers";
        let options = ListContainersOptions {
            filters: Some(HashMap::from([(
                "volume".to_string(),
                vec![name.to_string()],
            )])),
            ..Default::default()
        };
        let list = self
            .api()
            .await?
            .list_containers(Some(options))
            .await
            .map_err(|e| error(what, e))?;
        Ok(list
            .into_iter()
            .filter(|c| {
                c.mounts.iter().flatten().any(|m| {
                    m.typ.as_deref() == Some("volume")
                        && m.name.as_deref() == Some(name)
                        && same_driver(m.driver.as_deref().unwrap_or_default(), driver)
                })
            })
            .filter_map(|c| c.id)
            .collect())
    }

    /// Whether the engine answers at all (`GET /_ping`).
    pub async fn ping(&self) -> Result<(), DockerError> {
        self.api()
            .await?
            .ping()
            .await
            .map(drop)
            .map_err(|e| error("ping", e))
    }

    /// The engine's Swarm node ID (empty when it is in no swarm).
    pub async fn swarm_node_id(&self) -> Result<String, DockerError> {
        let info = self
            .api()
            .await?
            .info()
            .await
            .map_err(|e| error("reading /info", e))?;
        Ok(info.swarm.and_then(|s| s.node_id).unwrap_or_default())
    }

    /// Stops container `id`: SIGTERM, then SIGKILL after `grace_s` seconds (the engine's own
    /// stop). A container already stopped or gone counts as stopped.
    pub async fn stop(&self, id: &str, grace_s: u64) -> Result<(), DockerError> {
        let options = StopContainerOptions {
            t: Some(i32::try_from(grace_s).unwrap_or(i32::MAX)),
            signal: None,
        };
        let r = self.api().await?.stop_container(id, Some(options)).await;
        gone_is_done(r, &format!("stopping container {id}"))
    }

    /// SIGKILLs container `id`, for when a stop did not finish in time.
    pub async fn kill(&self, id: &str) -> Result<(), DockerError> {
        let r = self
            .api()
            .await?
            .kill_container(id, Some(KillContainerOptions::default()))
            .await;
        gone_is_done(r, &format!("killing container {id}"))
    }
}

/// A stop or kill of a container that is not running (409) or gone (404) has nothing left to do
/// (bollard already takes 304, "already stopped", as success).
fn gone_is_done(r: Result<(), BError>, what: &str) -> Result<(), DockerError> {
    match r {
        Ok(())
        | Err(BError::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }) => Ok(()),
        Err(e) => Err(error(what, e)),
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
