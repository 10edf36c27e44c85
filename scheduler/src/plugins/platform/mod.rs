//! Swarm's PlatformFilter: the image's platforms against the node's, with Swarm's two
//! architecture aliases (x86_64 ≡ amd64, aarch64 ≡ arm64); an empty field matches anything.

use crate::framework::{CycleState, FilterKind, FilterPlugin, Plugin, Reason, Status, TaskSpec};
use crate::model::Platform as NodePlatform;
use crate::snapshot::NodeInfo;

pub const NAME: &str = "Platform";
pub const UNSUPPORTED: &str = "unsupported platform";

pub struct Platform;

impl Plugin for Platform {
    fn name(&self) -> &'static str {
        NAME
    }
}

fn arch(a: &str) -> &str {
    match a {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// SwarmKit's `platformEqual`.
pub fn platform_matches(image: &NodePlatform, node: &NodePlatform) -> bool {
    (image.architecture.is_empty() || arch(&image.architecture) == arch(&node.architecture))
        && (image.os.is_empty() || image.os == node.os)
}

impl FilterPlugin for Platform {
    fn kind(&self) -> FilterKind {
        FilterKind::Static
    }

    fn pre_filter(&self, _cx: &mut CycleState, task: &TaskSpec) -> Status {
        if task.service.placement.platforms.is_empty() {
            Status::SKIP
        } else {
            Status::SUCCESS
        }
    }

    fn filter(&self, _cx: &CycleState, task: &TaskSpec, info: &NodeInfo) -> Status {
        let ok = task
            .service
            .placement
            .platforms
            .iter()
            .any(|p| platform_matches(p, &info.node.platform));
        if ok {
            Status::SUCCESS
        } else {
            Status::unschedulable(NAME, Reason::Static(UNSUPPORTED))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: &str, arch: &str) -> NodePlatform {
        NodePlatform {
            os: os.into(),
            architecture: arch.into(),
        }
    }

    #[test]
    fn aliases_and_wildcards() {
        assert!(platform_matches(
            &p("linux", "amd64"),
            &p("linux", "x86_64")
        ));
        assert!(platform_matches(
            &p("linux", "arm64"),
            &p("linux", "aarch64")
        ));
        assert!(platform_matches(&p("", "arm64"), &p("linux", "aarch64")));
        assert!(platform_matches(&p("linux", ""), &p("linux", "s390x")));
        assert!(!platform_matches(
            &p("linux", "arm64"),
            &p("linux", "x86_64")
        ));
        assert!(!platform_matches(
            &p("windows", "amd64"),
            &p("linux", "x86_64")
        ));
    }
}
