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

#[cfg(test)]
mod tests {
    use super::*;

    fn dataset(standby: Option<u32>) -> DatasetRt {
        DatasetRt {
            name: "pg-1".into(),
            service: 0,
            slot: 1,
            slot_idx: 0,
            backend: Backend::Replicated,
            size_bytes: 0,
            epoch: 1,
            current: Some(0),
            standby,
            acked: 0,
            unreplicated: VecDeque::new(),
            writers: Vec::new(),
            rr: 0,
            double_since: None,
            home: Some(0),
        }
    }

    fn copy(node: u32) -> CopyRt {
        CopyRt {
            dataset: 0,
            node: Some(node),
            len: 0,
            alive: true,
            revoked: false,
            ready_at: 0,
        }
    }

    #[test]
    fn standby_trails_by_the_lag() {
        let mut copies = vec![copy(0), copy(1)];
        let mut ds = dataset(Some(1));
        for t in [0, 100, 200, 300, 400] {
            copies[0].len += 1;
            ds.acked += 1;
            ds.unreplicated.push_back(t);
        }
        ds.replicate(&mut copies, 450, 200);
        // Writes at 0, 100, 200 are older than 450 − 200; 300 and 400 are in flight.
        assert_eq!(copies[1].len, 3);
        assert_eq!(ds.unreplicated.len(), 2);
        ds.replicate(&mut copies, 10_000, 200);
        assert_eq!(copies[1].len, 5);
    }

    #[test]
    fn no_standby_no_replication() {
        let mut copies = vec![copy(0)];
        let mut ds = dataset(None);
        ds.unreplicated.push_back(0);
        ds.replicate(&mut copies, 10_000, 200);
        assert!(ds.unreplicated.is_empty());
        assert_eq!(copies[0].len, 0);
    }
}
