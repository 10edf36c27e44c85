//! `berth run --elect`: one active daemon among several (one per manager) without Consul,
//! through the volume control service's leader lock (`POST /v1/berth/leaders/{name}`), which
//! the control service keeps in its replicated state.
//!
//! As with Consul (`consul::election`), a round that wins leads until the moment its request
//! was *sent* plus the TTL ([`Leadership::lead_until`]): the control service measures the same
//! TTL from later (after it received the request and confirmed it leads its Raft group), and a
//! new control leader counts every lock as renewed when it takes over, so no other daemon is
//! granted the lock before this one has stopped acting on its own clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_volume_client::ControlClient;

use crate::leader::Leadership;

/// How the election is run.
#[derive(Debug, Clone)]
pub struct ElectConfig {
    /// The lock every daemon of a swarm contends for.
    pub name: String,
    /// How long one round's grant lasts.
    pub ttl: Duration,
    /// This daemon, as the lock's holder and in a standby's `/v1/ready`.
    pub identity: String,
}

impl ElectConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.ttl < Duration::from_secs(3) {
            return Err(format!(
                "the leader TTL ({:?}) must be at least 3s: a round runs every third of it",
                self.ttl
            ));
        }
        Ok(())
    }

    /// A third of the TTL, so two rounds may fail before the grant lapses.
    pub fn interval(&self) -> Duration {
        self.ttl / 3
    }
}

/// One daemon's side of the election.
pub struct Elector {
    control: ControlClient,
    config: ElectConfig,
    leadership: Arc<Leadership>,
}

impl Elector {
    pub fn new(
        control: ControlClient,
        config: ElectConfig,
        leadership: Arc<Leadership>,
    ) -> Elector {
        Elector {
            control,
            config,
            leadership,
        }
    }

    /// One round: take or renew the lock.
    pub async fn round(&mut self) {
        let sent = Instant::now();
        match self
            .control
            .take_leader(&self.config.name, &self.config.identity, self.config.ttl)
            .await
        {
            Ok(r) if r.granted => self.leadership.lead_until(sent + self.config.ttl),
            Ok(r) => self.leadership.stand_by(r.holder, None),
            Err(e) => {
                tracing::warn!(error = %e, "leader election round failed; this daemon does not act");
                self.leadership.stand_by(None, Some(e.to_string()));
            }
        }
    }

    /// Stops leading and frees the lock, so a standby takes over at its next round.
    pub async fn resign(&mut self) {
        self.leadership.stand_by(None, None);
        if let Err(e) = self
            .control
            .release_leader(&self.config.name, &self.config.identity)
            .await
        {
            tracing::warn!(error = %e, "leader lock not released; a standby waits for its TTL");
        }
    }

    /// Rounds every [`ElectConfig::interval`] until `stop` turns true, then resigns.
    pub async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        tracing::info!(lock = %self.config.name, ttl = ?self.config.ttl, "leader election through the volume control service");
        loop {
            self.round().await;
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = tokio::time::sleep(self.config.interval()) => {}
            }
        }
        self.resign().await;
    }
}

#[cfg(test)]
mod tests {
    use berth_volume_control::api::{self, Control};
    use berth_volume_control::store::RedbStore;

    use super::*;

    async fn control() -> (String, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tmp");
        let store = RedbStore::open(dir.path()).expect("store");
        let c = Arc::new(Control::open(Box::new(store), None).await.expect("control"));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", l.local_addr().expect("addr"));
        tokio::spawn(api::serve(l, c, std::future::pending()));
        (url, dir)
    }

    fn elector(url: &str, who: &str, ttl: Duration) -> (Elector, Arc<Leadership>) {
        let l = Leadership::elected();
        let config = ElectConfig {
            name: "berth-run".into(),
            ttl,
            identity: who.into(),
        };
        let c = ControlClient::new(url, None).expect("client");
        (Elector::new(c, config, l.clone()), l)
    }

    /// One of two daemons leads; the other takes over at once when it resigns, and only after
    /// the TTL when it stops renewing (dies).
    #[tokio::test]
    async fn one_daemon_leads_and_another_takes_over_after_a_resign_or_the_ttl() {
        let (url, _dir) = control().await;
        let ttl = Duration::from_secs(3);
        let (mut a, la) = elector(&url, "a", ttl);
        let (mut b, lb) = elector(&url, "b", ttl);
        a.round().await;
        b.round().await;
        assert!(la.is_leader() && !lb.is_leader());
        assert_eq!(lb.view().holder.as_deref(), Some("a"));

        a.resign().await;
        assert!(!la.is_leader());
        b.round().await;
        assert!(lb.is_leader(), "b takes a resigned lock at once");

        // b dies (no more rounds): a is refused until b's TTL has run out at the control.
        let died = Instant::now();
        a.round().await;
        assert!(!la.is_leader(), "b's grant still runs");
        while !la.is_leader() {
            assert!(died.elapsed() < ttl * 2, "a never took over");
            tokio::time::sleep(Duration::from_millis(100)).await;
            a.round().await;
        }
        assert!(
            died.elapsed() >= ttl - Duration::from_millis(200),
            "a took over {:?} after b's last renewal, before its TTL",
            died.elapsed()
        );
        assert!(!lb.leads_at(died + ttl), "b stops on its own clock by then");
    }
}
