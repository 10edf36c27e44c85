//! Storage as it really is: every dataset has copies, on a node's disk (`local`, `replicated`)
//! or on shared storage; a write lands on the copy its holder mounts; a copy on a dead disk is
//! gone. Lost acknowledged writes are derived, not guessed:
//!
//! every write appended to a copy was acknowledged exactly once, and each copy is a prefix of
//! some history, so when the run ends the writes lost are `acked − len(copy the dataset now
//! lives on)`. A new empty volume (what Swarm gives a rescheduled task) has length 0; a promoted
//! standby lacks the unreplicated tail; a partitioned old holder's extra writes are on a copy
//! nobody uses any more. All three fall out of the same subtraction.

use std::collections::VecDeque;

use berth_scheduler::model::Backend;

use crate::clock::Ms;

pub struct CopyRt {
    pub dataset: u32,
    /// `None`: the copy on shared storage.
    pub node: Option<u32>,
    /// Writes it holds.
    pub len: u64,
    /// False once its disk is lost.
    pub alive: bool,
    /// Berth revoked it: older than the dataset's epoch, never mounted again.
    pub revoked: bool,
    /// A fresh member of a self-replicating service serves only after its resync.
    pub ready_at: Ms,
}

pub struct DatasetRt {
    pub name: String,
    pub service: u32,
    pub slot: u64,
    pub slot_idx: u32,
    pub backend: Backend,
    pub size_bytes: u64,
    pub epoch: u64,
    /// The copy the dataset lives on (the last holder's).
    pub current: Option<u32>,
    /// `replicated`: the standby copy.
    pub standby: Option<u32>,
    pub acked: u64,
    /// Times of acknowledged writes not yet on the standby (at most `rate × lag` of them).
    pub unreplicated: VecDeque<Ms>,
    /// Tasks accepting writes right now (recomputed after every non-write event).
    pub writers: Vec<u32>,
    pub rr: u64,
    pub double_since: Option<Ms>,
    /// The node of the last holder: the dataset's primary as the engine sees it.
    pub home: Option<u32>,
}

impl DatasetRt {
    /// The standby catches up to everything acknowledged before `now − lag`.
    pub fn replicate(&mut self, copies: &mut [CopyRt], now: Ms, lag: Ms) {
        let Some(sb) = self.standby else {
            self.unreplicated.clear();
            return;
        };
        while let Some(&t) = self.unreplicated.front() {
            if t + lag > now {
                break;
            }
            self.unreplicated.pop_front();
            copies[sb as usize].len += 1;
        }
    }
}
