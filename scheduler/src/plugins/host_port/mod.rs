//! Swarm's HostPortFilter: a host-mode published port binds on the node itself, so two tasks
//! publishing the same protocol/port cannot share a node. Also books the ports on reserve.

use crate::framework::{
    CycleState, FilterKind, FilterPlugin, Plugin, Reason, ReservePlugin, Status, TaskSpec,
};
use crate::snapshot::NodeInfo;

pub const NAME: &str = "HostPort";

pub struct HostPort;

impl Plugin for HostPort {
    fn name(&self) -> &'static str {
        NAME
    }
}

impl FilterPlugin for HostPort {
    fn kind(&self) -> FilterKind {
        FilterKind::Monotone
    }

    fn pre_filter(&self, _cx: &mut CycleState, task: &TaskSpec) -> Status {
        if task.service.host_ports().next().is_none() {
            Status::SKIP
        } else {
            Status::SUCCESS
        }
    }

    fn filter(&self, _cx: &CycleState, task: &TaskSpec, info: &NodeInfo) -> Status {
        for (proto, port) in task.service.host_ports() {
            if info.host_ports.contains(&(proto, port)) {
                let reason = format!("host port {}/{} in use", port, proto.as_str());
                return Status::unschedulable(NAME, Reason::from(reason));
            }
        }
        Status::SUCCESS
    }
}

impl ReservePlugin for HostPort {
    fn reserve(&self, task: &TaskSpec, info: &mut NodeInfo) -> Status {
        info.host_ports.extend(task.service.host_ports());
        Status::SUCCESS
    }

    fn unreserve(&self, task: &TaskSpec, info: &mut NodeInfo) {
        for p in task.service.host_ports() {
            if let Some(i) = info.host_ports.iter().position(|q| *q == p) {
                info.host_ports.swap_remove(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PortConfig, Protocol, PublishMode, Service};
    use crate::plugins::test_support::{node, reason, run_filter};

    #[test]
    fn host_port_taken_once() {
        let mut svc = Service::new("web");
        svc.ports.push(PortConfig {
            protocol: Protocol::Tcp,
            target_port: 8080,
            published_port: 80,
            publish_mode: PublishMode::Host,
        });
        let n = node("n1");
        let mut info = NodeInfo::new(0, &n);
        assert!(run_filter(&HostPort, &svc, None, &info).is_success());
        info.host_ports.push((Protocol::Tcp, 80));
        assert_eq!(
            reason(&run_filter(&HostPort, &svc, None, &info)),
            "host port 80/tcp in use"
        );
        // Ingress-mode ports do not bind on the node.
        svc.ports[0].publish_mode = PublishMode::Ingress;
        assert!(run_filter(&HostPort, &svc, None, &info).is_success());
    }

    #[test]
    fn reserve_then_unreserve_frees_the_port() {
        let mut svc = Service::new("web");
        svc.ports.push(PortConfig {
            protocol: Protocol::Udp,
            target_port: 53,
            published_port: 53,
            publish_mode: PublishMode::Host,
        });
        let n = node("n1");
        let mut info = NodeInfo::new(0, &n);
        crate::plugins::test_support::with_task(&svc, |task| {
            assert!(HostPort.reserve(task, &mut info).is_success());
            assert_eq!(info.host_ports, [(Protocol::Udp, 53)]);
            HostPort.unreserve(task, &mut info);
            HostPort.unreserve(task, &mut info); // idempotent
            assert!(info.host_ports.is_empty());
        });
    }
}
