//! The workspace root package. It has no code of its own: it exists so that the cross-crate
//! integration tests (`tests/`) and the criterion benches (`benches/`) sit at the top of the
//! repository, beside the crates they exercise.
pub use berth_scheduler as scheduler;
