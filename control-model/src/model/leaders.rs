//! Leader locks: which instance of a replicated client (several `berth run`, one per manager)
//! may act, kept in the control state so a new control leader knows the holder. Only who holds
//! a lock and for how long is stored; when it lapses is measured on the serving control
//! instance's own clock (`control::api`), as node leases are.
//!
//! **Epochs.** A lock's epoch is raised whenever it changes hands (to the state's generation at
//! the change, so it never repeats, even across a release): it is the holder's fencing token.
//! The holder's journal (`berth run --elect`'s failover executor state) is written only by the
//! holder at its current epoch, so a deposed holder's late write is refused.

use serde::{Deserialize, Serialize};

use super::{ControlError, State};

/// One lock's holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderLock {
    pub holder: String,
    /// How long one renewal keeps it.
    pub ttl_ms: u64,
    /// The fencing token of this holder's term (see the module doc); 0 for a lock taken before
    /// epochs existed, and kept by its holder's renewals.
    #[serde(default)]
    pub epoch: u64,
}

/// What a lock's holders keep across changes of holder: the state a new holder resumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderJournal {
    /// Who wrote it, at which epoch of the lock.
    pub holder: String,
    pub epoch: u64,
    /// The state as its holder serialised it (JSON text, opaque here).
    pub state: String,
}

impl State {
    /// Gives lock `name` to `holder` for `ttl_ms` per renewal, provided it is held by `expect`
    /// (or free, for `None`): the caller checked, on its clock, that the previous holder's time
    /// ran out, and this check makes that decision void if the lock changed hands meanwhile.
    /// Returns the holder's epoch: the one it had on a renewal, a new one on a change of hands.
    pub fn take_leader(
        &mut self,
        name: &str,
        holder: &str,
        ttl_ms: u64,
        expect: Option<&str>,
    ) -> Result<u64, ControlError> {
        if name.is_empty() || holder.is_empty() || ttl_ms == 0 {
            return Err(ControlError::Invalid(
                "a leader lock needs a name, a holder and a TTL above zero".into(),
            ));
        }
        let current = self.leaders.get(name).map(|l| l.holder.as_str());
        if current != expect {
            return Err(ControlError::Conflict(format!(
                "leader lock {name} is held by {}",
                current.unwrap_or("nobody")
            )));
        }
        let epoch = match self.leaders.get(name) {
            Some(l) if l.holder == holder => l.epoch,
            // The generation this change is about to make: never seen before by any lock.
            _ => self.generation + 1,
        };
        let want = LeaderLock {
            holder: holder.to_string(),
            ttl_ms,
            epoch,
        };
        if self.leaders.get(name) != Some(&want) {
            self.leaders.insert(name.to_string(), want);
            self.generation += 1;
        }
        Ok(epoch)
    }

    /// Writes lock `name`'s journal, provided `holder` holds the lock at `epoch`: a holder that
    /// was deposed (the lock released, or taken by another, since) is refused, however late its
    /// write arrives. Whether the holder's grant still runs is for the caller to check on its
    /// clock, as for [`State::take_leader`].
    pub fn write_leader_journal(
        &mut self,
        name: &str,
        holder: &str,
        epoch: u64,
        state: String,
    ) -> Result<(), ControlError> {
        match self.leaders.get(name) {
            Some(l) if l.holder == holder && l.epoch == epoch => {}
            current => {
                return Err(ControlError::Conflict(format!(
                    "leader lock {name} is held by {}; the journal write of {holder} at epoch \
                     {epoch} is refused",
                    current.map_or_else(
                        || "nobody".to_string(),
                        |l| format!("{} at epoch {}", l.holder, l.epoch)
                    )
                )));
            }
        }
        self.leader_journals.insert(
            name.to_string(),
            LeaderJournal {
                holder: holder.to_string(),
                epoch,
                state,
            },
        );
        self.generation += 1;
        Ok(())
    }

    /// Frees lock `name` if `holder` holds it; a no-op otherwise.
    pub fn release_leader(&mut self, name: &str, holder: &str) {
        if self.leaders.get(name).is_some_and(|l| l.holder == holder) {
            self.leaders.remove(name);
            self.generation += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_changes_hands_only_from_the_holder_the_caller_saw() {
        let mut s = State::default();
        s.take_leader("berth-run", "m1", 10_000, None)
            .expect("free");
        let g = s.generation;
        s.take_leader("berth-run", "m1", 10_000, Some("m1"))
            .expect("renewal");
        assert_eq!(s.generation, g, "a renewal changes nothing stored");
        assert!(s.take_leader("berth-run", "m2", 10_000, None).is_err());
        s.take_leader("berth-run", "m2", 10_000, Some("m1"))
            .expect("taken over from m1");
        s.release_leader("berth-run", "m1");
        assert_eq!(s.leaders["berth-run"].holder, "m2", "m1 no longer holds it");
        s.release_leader("berth-run", "m2");
        assert!(s.leaders.is_empty());
        assert!(s.take_leader("x", "m1", 0, None).is_err());
    }

    #[test]
    fn a_lock_gets_a_new_epoch_at_every_change_of_hands_even_after_a_release() {
        let mut s = State::default();
        let e1 = s.take_leader("l", "m1", 10_000, None).expect("free");
        assert_eq!(
            s.take_leader("l", "m1", 20_000, Some("m1")),
            Ok(e1),
            "a renewal keeps it"
        );
        let e2 = s.take_leader("l", "m2", 10_000, Some("m1")).expect("taken");
        assert!(e2 > e1);
        s.release_leader("l", "m2");
        let e3 = s.take_leader("l", "m1", 10_000, None).expect("free again");
        assert!(e3 > e2, "a released lock's epochs never repeat");
    }

    #[test]
    fn a_deposed_holders_journal_write_is_refused() {
        let mut s = State::default();
        let e1 = s.take_leader("l", "m1", 10_000, None).expect("free");
        s.write_leader_journal("l", "m1", e1, "{\"a\":1}".into())
            .expect("the holder writes");
        let e2 = s.take_leader("l", "m2", 10_000, Some("m1")).expect("taken");
        let refused = s
            .write_leader_journal("l", "m1", e1, "{\"late\":1}".into())
            .expect_err("m1 was deposed");
        assert!(matches!(refused, ControlError::Conflict(_)), "{refused}");
        assert_eq!(s.leader_journals["l"].state, "{\"a\":1}", "nothing written");
        // Even the same holder's name at an old epoch: a process that lost and regained it.
        assert!(s.write_leader_journal("l", "m2", e1, "x".into()).is_err());
        s.write_leader_journal("l", "m2", e2, "{\"b\":1}".into())
            .expect("the new holder writes");
        s.release_leader("l", "m2");
        assert!(
            s.write_leader_journal("l", "m2", e2, "y".into()).is_err(),
            "a released lock's holder is no holder"
        );
        assert_eq!(
            s.leader_journals["l"].epoch, e2,
            "the journal outlives the release"
        );
    }

    #[test]
    fn a_lock_written_before_epochs_reads_as_epoch_zero() {
        let l: LeaderLock =
            serde_json::from_str(r#"{"holder":"m1","ttl_ms":10000}"#).expect("old shape");
        assert_eq!(l.epoch, 0);
    }
}
