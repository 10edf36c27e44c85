//! Berth's fault simulator: a virtual clock, one seeded RNG, a model of nodes, containers,
//! storage and clients — and the *real* placement engine and failover planner
//! (`berth_scheduler`) deciding what happens, compared with Swarm's own behaviour and with a
//! human operator.
//!
//! A tour, in data-flow order:
//! - [`scenario`]: the TOML file → a checked [`scenario::Scenario`] (errors with file:line).
//! - [`faults`]: scheduled and random faults, expanded into primitive actions.
//! - [`clock`], [`queue`], [`rng`]: integer milliseconds, a (time, seq) event heap, ChaCha
//!   streams derived per subsystem from one seed.
//! - [`world`], [`storage`]: nodes, tasks, slots, datasets and their copies.
//! - [`sim`]: the event loop; [`contact`]: faults, heartbeats, contact lost and regained;
//!   [`workload`]: client writes, who may accept them, availability; [`view`]: the engine's
//!   input.
//! - [`policy`]: `swarm-default`, `manual`, `berth` (when to hand the engine's executor an
//!   observation); [`backend`]: the executor's commands carried out on the model;
//!   [`control`]: the volume control service — berth-volume's own control model and node
//!   liveness, which every fence, assignment, mount claim, lease and liveness verdict asks.
//! - rescheduling (a scenario with `[rebalance]`): `policy::rebalance` (Berth's automatic
//!   mode: the engine's rebalance planner, the executor's moves), `policy::swarm_force`
//!   (`docker service update --force`), [`rescheduling`] (the books and the outcome),
//!   [`balance`] (the balance measures over time).
//! - [`checker`]: invariants after every event, fatal per policy.
//! - [`runner`], [`report`], [`plot`]: one run's outcome, the side-by-side report, the SVG.
//! - [`sweep`], [`shrink`]: many seeds in parallel; a failing schedule cut to a minimal one.
//!
//! Architecture invariant: nothing here reads the wall clock, uses an unseeded RNG or iterates
//! a hash container in a decision. The same scenario and seed give byte-identical JSON and SVG.

pub mod backend;
pub mod balance;
pub mod checker;
pub mod clock;
pub mod contact;
pub mod control;
pub mod control_calls;
pub mod event;
pub mod faults;
pub mod metrics;
pub mod plot;
pub mod policy;
pub mod policy_kind;
pub mod queue;
pub mod report;
pub mod rescheduling;
pub mod rng;
pub mod runner;
pub mod scenario;
pub mod shrink;
pub mod sim;
pub mod state;
pub mod storage;
pub mod sweep;
pub mod trace;
pub mod view;
pub mod violation;
pub mod workload;
pub mod world;
