//! Swarm's PluginFilter: the volume drivers and log driver a task needs must be installed on
//! the node (`Description.Engine.Plugins`). A managed plugin may be listed as `name:latest`.
//! A node whose plugin list is unknown (hand-written scenarios) is assumed to have them.

use std::sync::Arc;

use crate::framework::{CycleState, FilterKind, FilterPlugin, Plugin, Reason, Status, TaskSpec};
use crate::model::EnginePlugin;
use crate::snapshot::NodeInfo;

pub const NAME: &str = "EnginePlugins";
const STATE: &str = "EnginePlugins/needed";

/// Log drivers built into the engine, never listed as plugins.
const BUILTIN_LOG_DRIVERS: &[&str] = &[
    "awslogs",
    "etwlogs",
    "fluentd",
    "gcplogs",
    "gelf",
    "journald",
    "json-file",
    "local",
    "logentries",
    "none",
    "splunk",
    "syslog",
];

pub struct EnginePlugins;

struct Needed(Vec<(&'static str, String, Reason)>);

impl Plugin for EnginePlugins {
    fn name(&self) -> &'static str {
        NAME
    }
}

fn has(plugins: &[EnginePlugin], kind: &str, name: &str) -> bool {
    plugins.iter().any(|p| {
        p.kind.eq_ignore_ascii_case(kind)
            && (p.name == name || p.name.strip_suffix(":latest") == Some(name))
    })
}

impl FilterPlugin for EnginePlugins {
    fn kind(&self) -> FilterKind {
        FilterKind::Static
    }

    fn pre_filter(&self, cx: &mut CycleState, task: &TaskSpec) -> Status {
        let mut needed: Vec<(&'static str, String, Reason)> = Vec::new();
        for d in task.service.volume_drivers() {
            needed.push(("Volume", d.to_string(), missing("Volume", d)));
        }
        if let Some(log) = task.service.log_driver.as_deref()
            && !log.is_empty()
            && !BUILTIN_LOG_DRIVERS.contains(&log)
        {
            needed.push(("Log", log.to_string(), missing("Log", log)));
        }
        needed.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        needed.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
        if needed.is_empty() {
            return Status::SKIP;
        }
        cx.write(STATE, Needed(needed));
        Status::SUCCESS
    }

    fn filter(&self, cx: &CycleState, _task: &TaskSpec, info: &NodeInfo) -> Status {
        let (Some(Needed(needed)), Some(plugins)) = (cx.read::<Needed>(STATE), &info.node.plugins)
        else {
            return Status::SUCCESS;
        };
        for (kind, name, reason) in needed {
            if !has(plugins, kind, name) {
                return Status::unschedulable(NAME, reason.clone());
            }
        }
        Status::SUCCESS
    }
}

fn missing(kind: &str, name: &str) -> Reason {
    Reason::Shared(Arc::from(format!("missing plugin {kind}/{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mount, Service};
    use crate::plugins::test_support::{node, reason, run_filter};

    #[test]
    fn volume_driver_must_be_installed() {
        let mut svc = Service::new("db");
        svc.mounts.push(Mount {
            source: "data".into(),
            target: "/data".into(),
            driver: Some("berth".into()),
            ..Mount::default()
        });
        let mut n = node("n1");
        let local = EnginePlugin {
            kind: "Volume".into(),
            name: "local".into(),
        };
        n.plugins = Some(vec![local.clone()].into());
        let got = run_filter(&EnginePlugins, &svc, None, &NodeInfo::new(0, &n));
        assert_eq!(reason(&got), "missing plugin Volume/berth");
        let berth = EnginePlugin {
            kind: "Volume".into(),
            name: "berth:latest".into(),
        };
        n.plugins = Some(vec![local, berth].into());
        assert!(run_filter(&EnginePlugins, &svc, None, &NodeInfo::new(0, &n)).is_success());
        n.plugins = None;
        assert!(run_filter(&EnginePlugins, &svc, None, &NodeInfo::new(0, &n)).is_success());
    }

    #[test]
    fn builtin_log_drivers_need_nothing() {
        let mut svc = Service::new("web");
        svc.log_driver = Some("syslog".into());
        let mut n = node("n1");
        n.plugins = Some(Vec::new().into());
        assert!(run_filter(&EnginePlugins, &svc, None, &NodeInfo::new(0, &n)).is_success());
        svc.log_driver = Some("loki".into());
        assert_eq!(
            reason(&run_filter(
                &EnginePlugins,
                &svc,
                None,
                &NodeInfo::new(0, &n)
            )),
            "missing plugin Log/loki"
        );
    }
}
