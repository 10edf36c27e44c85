//! Leader locks: which instance of a replicated client (several `berth run`, one per manager)
//! may act, kept in the control state so a new control leader knows the holder. Only who holds
//! a lock and for how long is stored; when it lapses is measured on the serving control
//! instance's own clock (`control::api`), as node leases are.

use serde::{Deserialize, Serialize};

use super::{ControlError, State};

/// One lock's holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderLock {
    pub holder: String,
    /// How long one renewal keeps it.
    pub ttl_ms: u64,
}

impl State {
    /// Gives lock `name` to `holder` for `ttl_ms` per renewal, provided it is held by `expect`
    /// (or free, for `None`): the caller checked, on its clock, that the previous holder's time
    /// ran out, and this check makes that decision void if the lock changed hands meanwhile.
    pub fn take_leader(
        &mut self,
        name: &str,
        holder: &str,
        ttl_ms: u64,
        expect: Option<&str>,
    ) -> Result<(), ControlError> {
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
        let want = LeaderLock {
            holder: holder.to_string(),
            ttl_ms,
        };
        if self.leaders.get(name) != Some(&want) {
            self.leaders.insert(name.to_string(), want);
            self.generation += 1;
        }
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
}
