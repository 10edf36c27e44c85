//! The control service on a Raft member (`raft`): when it serves. (The Raft group's own
//! routes and the status route are the API's, `api::group`.)
//!
//! When to serve: a member serves the API only as the leader of its current term, and only after
//! it has applied every entry committed before that term and taken up the resulting document
//! (`lead`). Every write after that goes through the log at that term, so it commits only while
//! a majority still follows: a deposed leader's writes fail, and it stops serving.
//!
//! Node leases across a change of leader (the argument `liveness` relies on): an agent's lease is
//! granted only after the leader has had a majority acknowledge a heartbeat sent after the
//! agent's request arrived (`Replica::confirm_leader`). A newer leader is elected by a majority
//! that, once it has voted, acknowledges no older leader; the two majorities share a member, so
//! every lease the old leader granted was granted, and so started, before the new leader's term.
//! It ends no later than one lease after that, and a new leader counts every node as leased until
//! one lease after it takes over (`Liveness::take_over`): no fence or assignment it allows can
//! overlap a writer holding an old leader's lease. A node the replicated state holds closed is
//! counted leased only as its closure says, from when this member applied it: the old leader
//! granted it nothing after proposing the closure ("Fencing", rule 8).

use std::time::Duration;

use crate::api::Shared;

/// Follows this member's Raft role for as long as the group runs: takes over the state when it
/// becomes leader, stops serving when it is not.
pub async fn lead(c: Shared) {
    let Some(r) = c.replica().cloned() else {
        return;
    };
    let mut metrics = r.raft.metrics();
    loop {
        match r.leading_term() {
            Some(term) if r.gate.serving() != Some(term) => {
                r.gate.stop();
                if r.catch_up().await && r.leading_term() == Some(term) {
                    match c.take_over(r.doc()).await {
                        Ok(()) => {
                            r.gate.serve(term);
                            tracing::info!(id = r.id, term, "leading the control service");
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot take up the replicated state")
                        }
                    }
                }
            }
            Some(_) => {}
            None => {
                if r.gate.serving().is_some() {
                    tracing::info!(id = r.id, "no longer the leader; not serving");
                }
                r.gate.stop();
            }
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = r.gate.resync_wanted() => {},
            // Catching up can fail without a change of metrics (a slow majority): try again.
            _ = tokio::time::sleep(Duration::from_millis(500)) => {},
        }
    }
}
