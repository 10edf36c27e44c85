//! [`DockerApi`] on `bollard`, the design's Docker client.

use std::collections::HashMap;

use bollard::Docker;
use bollard::errors::Error as BError;
use bollard::query_parameters::{EventsOptions, UpdateServiceOptions};
use bollard_stubs::models::ServiceSpec;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::{DockerApi, DockerError, SwarmState};

#[derive(Clone)]
pub struct BollardDocker {
    docker: Docker,
}

impl BollardDocker {
    /// Connects to `url` (`unix:///var/run/docker.sock`, `tcp://host:2375`, or a bare socket
    /// path) and negotiates the API version, so an older engine (20.10 speaks 1.41) is spoken to
    /// in its own version.
    pub async fn connect(url: &str) -> Result<BollardDocker, DockerError> {
        let timeout = 120;
        let docker = if let Some(path) = url.strip_prefix("unix://") {
            Docker::connect_with_unix(path, timeout, bollard::API_DEFAULT_VERSION)
        } else if url.starts_with("tcp://") || url.starts_with("http://") {
            Docker::connect_with_http(url, timeout, bollard::API_DEFAULT_VERSION)
        } else {
            Docker::connect_with_unix(url, timeout, bollard::API_DEFAULT_VERSION)
        }
        .map_err(unavailable)?;
        let docker = docker.negotiate_version().await.map_err(unavailable)?;
        Ok(BollardDocker { docker })
    }
}

fn unavailable(e: BError) -> DockerError {
    DockerError::Unavailable(e.to_string())
}

fn classify(what: &str, e: BError) -> DockerError {
    match e {
        BError::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            404 => DockerError::NotFound(format!("{what}: {message}")),
            409 => DockerError::Conflict(format!("{what}: {message}")),
            // SwarmKit reports a stale version as a 500 "update out of sequence".
            500 if message.contains("out of sequence") => {
                DockerError::Conflict(format!("{what}: {message}"))
            }
            400 => DockerError::Refused(format!("{what}: {message}")),
            _ => DockerError::Unavailable(format!("{what}: {status_code} {message}")),
        },
        other => DockerError::Unavailable(format!("{what}: {other}")),
    }
}

impl DockerApi for BollardDocker {
    async fn state(&self) -> Result<SwarmState, DockerError> {
        let nodes = self
            .docker
            .list_nodes(None)
            .await
            .map_err(|e| classify("list nodes", e))?;
        let services = self
            .docker
            .list_services(None)
            .await
            .map_err(|e| classify("list services", e))?;
        let tasks = self
            .docker
            .list_tasks(None)
            .await
            .map_err(|e| classify("list tasks", e))?;
        Ok(SwarmState {
            nodes,
            services,
            tasks,
        })
    }

    async fn create_service(&self, spec: ServiceSpec) -> Result<String, DockerError> {
        let name = spec.name.clone().unwrap_or_default();
        let r = self
            .docker
            .create_service(spec, None)
            .await
            .map_err(|e| classify(&format!("create service {name}"), e))?;
        r.id.ok_or_else(|| DockerError::Unavailable(format!("create service {name}: no ID")))
    }

    async fn update_service(
        &self,
        id: &str,
        version: u64,
        spec: ServiceSpec,
    ) -> Result<(), DockerError> {
        let options = UpdateServiceOptions {
            version: i32::try_from(version)
                .map_err(|_| DockerError::Refused(format!("service {id}: version {version}")))?,
            ..Default::default()
        };
        self.docker
            .update_service(id, spec, options, None)
            .await
            .map(|_| ())
            .map_err(|e| classify(&format!("update service {id}"), e))
    }

    async fn remove_service(&self, id: &str) -> Result<(), DockerError> {
        match self.docker.delete_service(id).await {
            Ok(()) => Ok(()),
            Err(e) => match classify(&format!("remove service {id}"), e) {
                // Already gone is what was asked for.
                DockerError::NotFound(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn set_node_label(
        &self,
        node_id: &str,
        key: &str,
        value: Option<&str>,
    ) -> Result<(), DockerError> {
        let what = format!("node {node_id}");
        let node = self
            .docker
            .inspect_node(node_id)
            .await
            .map_err(|e| classify(&what, e))?;
        let mut spec = node.spec.unwrap_or_default();
        let mut labels = spec.labels.take().unwrap_or_default();
        let unchanged = match value {
            Some(v) => labels.get(key).map(String::as_str) == Some(v),
            None => !labels.contains_key(key),
        };
        if unchanged {
            return Ok(());
        }
        match value {
            Some(v) => labels.insert(key.to_string(), v.to_string()),
            None => labels.remove(key),
        };
        spec.labels = Some(labels);
        let version = node.version.and_then(|v| v.index).unwrap_or(0);
        let options = bollard::query_parameters::UpdateNodeOptions {
            version: i64::try_from(version)
                .map_err(|_| DockerError::Refused(format!("{what}: version {version}")))?,
        };
        self.docker
            .update_node(node_id, spec, options)
            .await
            .map_err(|e| classify(&what, e))
    }

    fn changes(&self) -> BoxStream<'static, Result<(), DockerError>> {
        let filters = HashMap::from([(
            "type".to_string(),
            vec!["service".to_string(), "node".to_string()],
        )]);
        let options = EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        self.docker
            .events(Some(options))
            .map(|e| e.map(|_| ()).map_err(unavailable))
            .boxed()
    }
}
