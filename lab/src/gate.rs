//! Prerequisites of real-engine tests, and the one rule for a missing one: under `CI=true` (or
//! `CI=1`) the test fails, naming what is missing; elsewhere it is reported as not run, loudly,
//! where a person sees it (the process's stderr, and `ignored` in the test summary).

use std::process::Command;

/// Something a test needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// A Docker Engine answering `docker info`.
    Docker,
    /// Root: network namespaces, bridges, iptables, `/run/docker/plugins`.
    Root,
    /// `ip`, `iptables`, `nsenter`, `unshare` and `dockerd`, for labs of several engines.
    LabTools,
    /// A program on `PATH`, and the Debian package that has it (`.ci/run` installs it).
    Program(&'static str, &'static str),
}

impl Need {
    /// What is missing, worded for a person, or `None` when the machine has it.
    fn missing(self) -> Option<String> {
        match self {
            Need::Docker => (!ok("docker", &["info", "--format", "{{.ServerVersion}}"]))
                .then(|| "a running Docker Engine (`docker info` failed)".to_string()),
            Need::Root => {
                let root = Command::new("id")
                    .arg("-u")
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
                (!root).then(|| "root (network namespaces, iptables, plugin sockets)".to_string())
            }
            Need::LabTools => {
                let absent: Vec<&str> = ["ip", "iptables", "nsenter", "unshare", "dockerd"]
                    .into_iter()
                    .filter(|t| !ok("sh", &["-c", &format!("command -v {t}")]))
                    .collect();
                (!absent.is_empty()).then(|| format!("the commands {}", absent.join(", ")))
            }
            Need::Program(name, package) => (!ok("sh", &["-c", &format!("command -v {name}")]))
                .then(|| format!("{name} (Debian package `{package}`)")),
        }
    }
}

fn ok(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether this run is CI's, where a test that cannot run is a failure.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// What of `needs` the machine lacks, as one sentence, or `None` if nothing.
pub fn missing(needs: &[Need]) -> Option<String> {
    let mut needs = needs.to_vec();
    needs.sort();
    needs.dedup();
    let absent: Vec<String> = needs.into_iter().filter_map(Need::missing).collect();
    (!absent.is_empty()).then(|| absent.join("; "))
}
