//! Integration tests of `berth-volume`: the real binary as control service and agents, spoken to
//! over its unix socket and HTTP; `engine` drives this machine's real Docker Engine.

mod cli;
mod control_api;
mod datapath;
mod elected;
mod executor_api;
mod failsafe;
mod faults;
mod ha;
mod lease;
mod plugin;
mod replicated;
mod safety;
mod support;
mod tls;
