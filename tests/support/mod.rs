//! Shared helpers for the real-engine tests: the Docker gate (fail loudly under CI, say so
//! loudly elsewhere) and a multi-node Swarm lab of dockerds in network namespaces.

#![allow(dead_code)]

pub mod lab;

use std::process::Command;

/// Whether the real-engine tests can run. Under `CI=true` a missing engine or missing root is a
/// failure; elsewhere the test prints why it did not run and returns.
pub fn docker_or_skip(test: &str) -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let docker_ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let tools = ["ip", "iptables", "nsenter", "unshare", "dockerd"]
        .iter()
        .all(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let busybox = std::path::Path::new("/bin/busybox").exists();
    let missing: Vec<&str> = [
        (!docker_ok).then_some("a running Docker Engine (docker info failed)"),
        (!root).then_some("root (for network namespaces)"),
        (!tools).then_some("ip, iptables, nsenter, unshare, dockerd"),
        (!busybox).then_some("/bin/busybox (apt-get install busybox-static)"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test} needs {}", missing.join(", "));
    if ci {
        panic!("{msg} — required under CI=true");
    }
    eprintln!("\n*** NOT RUN: {msg}. Set up the machine (see README) to run it. ***\n");
    false
}
