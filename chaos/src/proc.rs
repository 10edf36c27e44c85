//! A process the harness runs inside a lab node (a volume agent, a control member, `berth
//! run`), started with `nsenter`: when a PID namespace is entered the program is nsenter's
//! child, so signals go to both.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use berth_lab::wait_for;

pub struct Proc {
    child: Child,
    what: String,
}

impl Proc {
    /// Starts `cmd`, its output appended to `log`.
    pub fn spawn(mut cmd: Command, what: &str, log: &Path) -> Result<Proc> {
        let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Proc {
            child,
            what: what.into(),
        })
    }

    /// The PIDs to signal: nsenter's children (the program, inside the node's PID namespace)
    /// and nsenter itself.
    fn pids(&self) -> Vec<u32> {
        let me = self.child.id();
        let mut pids: Vec<u32> = fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        pids.push(me);
        pids
    }

    pub fn signal(&self, sig: &str) {
        for pid in self.pids() {
            let _ = Command::new("kill")
                .args([&format!("-{sig}"), &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }

    /// SIGKILL, no goodbye: a crash.
    pub fn kill(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (SIGKILL after 15 s).
    pub fn stop(&mut self) {
        // A stopped (paused) process must run to act on SIGTERM.
        self.signal("CONT");
        self.signal("TERM");
        let done = wait_for(Duration::from_secs(15), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !done {
            eprintln!("chaos: {} ignored SIGTERM; killing it", self.what);
            self.kill();
        }
        let _ = self.child.wait();
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.alive() {
            self.kill();
        }
    }
}
