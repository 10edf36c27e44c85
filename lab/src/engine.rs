//! One Docker Engine, named by its socket: the docker CLI pointed at it, and raw Engine API
//! reads for what the CLI has no inspect for (`GET /tasks`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Output};

#[derive(Debug, Clone)]
pub struct Engine {
    /// Path of the engine's API socket.
    pub sock: String,
}

impl Engine {
    /// The machine's own engine. Tests may run containers and create volumes, images and
    /// plugins on it (and must remove them); they never change its Swarm state.
    pub fn host() -> Engine {
        Engine {
            sock: "/var/run/docker.sock".into(),
        }
    }

    /// `DOCKER_HOST` for this engine.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.sock)
    }

    /// A `docker` command against this engine.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .env("DOCKER_HOST", self.docker_host())
            .args(args)
            .output()
            .expect("the docker CLI runs")
    }

    /// `docker …` that must succeed; its stdout, trimmed.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} on {}: {}",
            self.sock,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A raw Engine API `GET`, body as text. HTTP/1.0, so the engine answers with a plain body
    /// and closes (no chunked encoding to undo).
    pub fn api_get(&self, path: &str) -> Result<String, String> {
        let mut s = UnixStream::connect(&self.sock).map_err(|e| format!("{}: {e}", self.sock))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("GET {path}: no HTTP header in reply"))?;
        let status = head.split(' ').nth(1).unwrap_or("");
        if status != "200" {
            return Err(format!("GET {path}: {head}: {body}"));
        }
        Ok(body.to_string())
    }

    /// `api_get` that must succeed.
    pub fn api_get_ok(&self, path: &str) -> String {
        self.api_get(path).unwrap_or_else(|e| panic!("{e}"))
    }
}
