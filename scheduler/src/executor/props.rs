//! Property tests: whatever the interleaving of outcomes (done, refused, failed, in any
//! order), node faults and restarts of the executor from its serialized state, a slot never
//! starts at a stale epoch, a drain never has more slots of a service stopped at once than
//! `berth.max-unavailable`, and once the faults stop the executor goes idle.

use proptest::prelude::*;

use super::tests::{Backend, set_node, world};
use super::*;
use crate::model::{Availability, Cluster, NodeState};

const WORKERS: [&str; 4] = ["w1", "w2", "w3", "w4"];

#[derive(Clone, Debug)]
enum Op {
    Down(usize),
    Up(usize),
    Drain(usize),
    Activate(usize),
    /// Complete the n-th command in flight: 0 done (as the backend answers), 1 refused,
    /// 2 failed (neither performed).
    Deliver(usize, u8),
    /// The backend performs the n-th command, then the executor is killed before it hears
    /// back and resumes from its serialized state.
    CrashAfter(usize),
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..4usize).prop_map(Op::Down),
        1 => (0..4usize).prop_map(Op::Up),
        1 => (0..4usize).prop_map(Op::Drain),
        1 => (0..4usize).prop_map(Op::Activate),
        4 => (0..8usize, 0..3u8).prop_map(|(i, k)| Op::Deliver(i, k)),
        1 => (0..8usize).prop_map(Op::CrashAfter),
        1 => (1..40_000u64).prop_map(Op::Tick),
    ]
}

struct Harness {
    c: Cluster,
    b: Backend,
    exec: Executor,
    now: u64,
    inflight: Vec<(CommandId, Command)>,
}

impl Harness {
    fn pull(&mut self) {
        self.inflight.extend(self.exec.next(self.now));
        self.check_notices();
    }

    fn observe(&mut self) {
        self.exec.observe(self.now, Observation::of(&self.c));
        self.pull();
    }

    fn check_notices(&mut self) {
        for n in self.exec.take_notices() {
            assert!(
                !matches!(n, Notice::DrainBudget { .. }),
                "a drain exceeded berth.max-unavailable: {n:?}"
            );
        }
    }

    fn complete(&mut self, id: CommandId, out: Outcome) {
        let again = self.exec.complete(id, out, self.now);
        if again || self.exec.wants_observation() {
            self.observe();
        } else {
            self.pull();
        }
    }

    fn restart(&mut self) {
        let json = serde_json::to_string(self.exec.state()).expect("serializes");
        let state: ExecutorState = serde_json::from_str(&json).expect("deserializes");
        self.exec = Executor::from_state(state);
        // Whatever was out is handed out again.
        self.inflight.clear();
        self.pull();
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Down(k) => {
                set_node(&mut self.c, WORKERS[k], |n| n.state = NodeState::Down);
                self.observe();
            }
            Op::Up(k) => {
                set_node(&mut self.c, WORKERS[k], |n| n.state = NodeState::Ready);
                self.observe();
            }
            Op::Drain(k) => {
                set_node(&mut self.c, WORKERS[k], |n| {
                    n.availability = Availability::Drain
                });
                self.observe();
            }
            Op::Activate(k) => {
                set_node(&mut self.c, WORKERS[k], |n| {
                    n.availability = Availability::Active
                });
                self.observe();
            }
            Op::Deliver(i, kind) => {
                if self.inflight.is_empty() {
                    return;
                }
                let (id, cmd) = self.inflight.remove(i % self.inflight.len());
                let out = match kind {
                    0 => self.b.perform(&mut self.c, &cmd),
                    1 => Outcome::Refused {
                        current_epoch: None,
                        reason: "injected".into(),
                    },
                    _ => Outcome::Failed {
                        reason: "injected".into(),
                    },
                };
                self.complete(id, out);
            }
            Op::CrashAfter(i) => {
                if let Some((_, cmd)) = self.inflight.get(i % self.inflight.len().max(1)) {
                    let cmd = cmd.clone();
                    self.b.perform(&mut self.c, &cmd);
                }
                self.restart();
            }
            Op::Tick(ms) => {
                self.now += ms;
                self.pull();
            }
        }
    }

    /// Faults stopped: every node is up and active, every command succeeds.
    fn settle(&mut self) {
        for w in WORKERS {
            set_node(&mut self.c, w, |n| {
                n.state = NodeState::Ready;
                n.availability = Availability::Active;
            });
        }
        self.observe();
        for _ in 0..500 {
            if let Some((id, cmd)) = self.inflight.first().cloned() {
                self.inflight.remove(0);
                let out = self.b.perform(&mut self.c, &cmd);
                self.complete(id, out);
                continue;
            }
            match self.exec.wake_at() {
                Some(t) => {
                    self.now = self.now.max(t);
                    self.pull();
                }
                None => {
                    self.observe();
                    if self.inflight.is_empty() && self.exec.wake_at().is_none() {
                        break;
                    }
                }
            }
        }
        assert!(self.inflight.is_empty(), "still busy: {:?}", self.inflight);
        assert_eq!(self.exec.wake_at(), None);
        assert_eq!(self.exec.busy_slots().count(), 0, "slots left busy");
        assert!(self.exec.state().runs.is_empty(), "runs left open");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn any_interleaving_is_safe_and_converges(ops in prop::collection::vec(op(), 0..40)) {
        let c = world();
        let mut h = Harness {
            c,
            b: Backend::default(),
            exec: Executor::new(Config::default()),
            now: 0,
            inflight: Vec::new(),
        };
        h.observe();
        for op in &ops {
            // `Backend::perform` asserts that a started slot's epoch is its volume's.
            h.apply(op);
        }
        h.settle();
    }
}
