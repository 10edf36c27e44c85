//! Whether this `berth run` may act on the swarm now: the controller's gate.
//!
//! Without an election (no `--consul`) the daemon is alone and always leads. With one
//! (`consul::election`), it leads only while it holds the lock *and* its last renewal is
//! recent enough: leadership is granted until a deadline (the moment the renewal was sent plus
//! the session TTL, before which Consul cannot have invalidated the session), so a daemon
//! whose Consul calls hang stops acting on its own clock, without waiting for an answer.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

/// What `/v1/ready` shows of the election.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// False without an election: the daemon always leads.
    pub elected: bool,
    pub leader: bool,
    /// Who holds the lock, as its holder wrote it, when another daemon does.
    pub holder: Option<String>,
    /// Why the last election round failed (Consul unreachable, refused…); `None` after a good one.
    pub error: Option<String>,
}

#[derive(Debug)]
struct Inner {
    elected: bool,
    /// Leads until then; `None`: does not lead.
    until: Option<Instant>,
    holder: Option<String>,
    error: Option<String>,
}

/// Shared between the election, the controller and the API.
#[derive(Debug)]
pub struct Leadership {
    inner: Mutex<Inner>,
    /// Wakes a standby controller when it becomes the leader, so it acts at once rather than at
    /// its next resync.
    gained: Notify,
}

impl Leadership {
    /// The only daemon: always the leader.
    pub fn always() -> Arc<Leadership> {
        Arc::new(Leadership {
            inner: Mutex::new(Inner {
                elected: false,
                until: None,
                holder: None,
                error: None,
            }),
            gained: Notify::new(),
        })
    }

    /// One of several daemons: standby until an election round wins the lock.
    pub fn elected() -> Arc<Leadership> {
        let l = Leadership::always();
        l.lock().elected = true;
        l
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the daemon may act now.
    pub fn is_leader(&self) -> bool {
        self.leads_at(Instant::now())
    }

    /// Whether the daemon may act at `now` (the deadline counts as lapsed).
    pub fn leads_at(&self, now: Instant) -> bool {
        let i = self.lock();
        !i.elected || i.until.is_some_and(|u| now < u)
    }

    /// The lock is held, and the session cannot have expired before `until`.
    pub fn lead_until(&self, until: Instant) {
        let was = {
            let mut i = self.lock();
            let was = i.until.is_some_and(|u| Instant::now() < u);
            i.until = Some(until);
            i.holder = None;
            i.error = None;
            was
        };
        if !was {
            tracing::info!("leading: this daemon acts on the swarm");
            self.gained.notify_one();
        }
    }

    /// Not (or no longer) the leader: `holder` leads instead, if known; `error` says why this
    /// round could not decide, if it could not.
    pub fn stand_by(&self, holder: Option<String>, error: Option<String>) {
        let mut i = self.lock();
        if i.until.take().is_some() {
            match &error {
                Some(e) => {
                    tracing::warn!(error = %e, "no longer the leader: this daemon stops acting")
                }
                None => tracing::info!("no longer the leader: this daemon stops acting"),
            }
        }
        i.holder = holder;
        i.error = error;
    }

    pub fn view(&self) -> View {
        let leader = self.is_leader();
        let i = self.lock();
        View {
            elected: i.elected,
            leader,
            holder: i.holder.clone(),
            error: i.error.clone(),
        }
    }

    /// Resolves when the daemon becomes the leader (or already became it since the last call).
    pub async fn gained(&self) {
        self.gained.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn without_an_election_always_leads() {
        let l = Leadership::always();
        assert!(l.is_leader());
        assert!(!l.view().elected);
    }

    #[test]
    fn an_elected_leader_stops_at_its_deadline_without_any_answer() {
        let l = Leadership::elected();
        assert!(!l.is_leader(), "standby until a round wins");
        let t = Instant::now() + Duration::from_secs(10);
        l.lead_until(t);
        assert!(l.leads_at(t - Duration::from_millis(1)));
        assert!(!l.leads_at(t), "the session may be gone from its TTL on");
        l.stand_by(Some("m2".into()), None);
        assert!(!l.leads_at(t - Duration::from_millis(1)));
        assert_eq!(l.view().holder.as_deref(), Some("m2"));
    }
}
