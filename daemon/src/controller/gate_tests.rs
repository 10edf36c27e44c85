//! The leadership gate of `Controller::run`: a standby reads nothing from Docker and acts on
//! nothing until it leads. The loop and the test share one task on a single-threaded runtime,
//! so the loop runs only when the test yields: no timer decides the outcome.

use std::sync::Arc;

use bollard_stubs::models::ServiceSpec;
use futures_util::stream::BoxStream;
use tokio::sync::mpsc;

use super::*;
use crate::docker::SwarmState;
use berth_leadership::Leadership;

/// Records, at every read of the swarm, whether the controller led at that moment; answers
/// with an error so each pass ends there.
struct Watched {
    leadership: Arc<Leadership>,
    reads: mpsc::UnboundedSender<bool>,
}

impl DockerApi for Watched {
    async fn state(&self) -> Result<SwarmState, DockerError> {
        let _ = self.reads.send(self.leadership.is_leader());
        Err(DockerError::Unavailable("test".into()))
    }
    async fn create_service(&self, _: ServiceSpec) -> Result<String, DockerError> {
        panic!("no write expected")
    }
    async fn update_service(&self, _: &str, _: u64, _: ServiceSpec) -> Result<(), DockerError> {
        panic!("no write expected")
    }
    async fn remove_service(&self, _: &str) -> Result<(), DockerError> {
        panic!("no write expected")
    }
    async fn set_node_label(&self, _: &str, _: &str, _: Option<&str>) -> Result<(), DockerError> {
        panic!("no write expected")
    }
    fn changes(&self) -> BoxStream<'static, Result<(), DockerError>> {
        Box::pin(futures_util::stream::pending())
    }
}

#[tokio::test]
async fn a_standby_passes_nothing_until_it_leads_then_passes_at_once() {
    let leadership = Leadership::elected(berth_leadership::Policy::StepDown);
    let (tx, mut reads) = mpsc::unbounded_channel();
    let docker = Watched {
        leadership: leadership.clone(),
        reads: tx,
    };
    let controller = Arc::new(
        Controller::new(docker, Config::default(), Metrics::new())
            .with_leadership(leadership.clone()),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = controller.clone().run(async move {
        let _ = stop_rx.await;
    });
    let test = async {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            reads.try_recv().is_err(),
            "a standby does not even read the swarm"
        );
        leadership.lead_until(std::time::Instant::now() + Duration::from_secs(3600));
        assert_eq!(
            reads.recv().await,
            Some(true),
            "leading wakes the loop: a pass at once"
        );
        let _ = stop_tx.send(());
    };
    tokio::join!(run, test);
    while let Ok(leading) = reads.try_recv() {
        assert!(leading, "every read while leading");
    }
}
