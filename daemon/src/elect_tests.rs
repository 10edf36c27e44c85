//! `berth run --elect` against a real control service in-process: the election through its
//! leader lock, and the journal that lock's epoch fences.

use std::time::Instant;

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

fn config(who: &str, ttl: Duration) -> ElectConfig {
    ElectConfig {
        name: LOCK.into(),
        ttl,
        identity: who.into(),
    }
}

fn daemon(url: &str, who: &str, ttl: Duration) -> (Elector<ControlLock>, Arc<Leadership>) {
    let c = ControlClient::new(url, None).expect("client");
    elector(c, &config(who, ttl))
}

fn journal(
    url: &str,
    who: &str,
    e: &Elector<ControlLock>,
    dir: &std::path::Path,
) -> ControlJournal {
    let c = ControlClient::new(url, None).expect("client");
    ControlJournal::new(c, &config(who, Duration::from_secs(3)), e.fence(), dir)
}

fn state(next_id: u64) -> Vec<u8> {
    serde_json::to_vec(&ExecutorState {
        next_id,
        ..ExecutorState::default()
    })
    .expect("encodes")
}

/// One of two daemons leads; the other takes over at once when it resigns, and only after
/// the TTL when it stops renewing (dies).
#[tokio::test]
async fn one_daemon_leads_and_another_takes_over_after_a_resign_or_the_ttl() {
    let (url, _dir) = control().await;
    let ttl = Duration::from_secs(3);
    let (mut a, la) = daemon(&url, "a", ttl);
    let (mut b, lb) = daemon(&url, "b", ttl);
    a.round().await.expect("a round");
    b.round().await.expect("b round");
    assert!(la.is_leader() && !lb.is_leader());
    assert_eq!(lb.view().holder.as_deref(), Some("a"));

    a.resign().await;
    assert!(!la.is_leader());
    b.round().await.expect("b round");
    assert!(lb.is_leader(), "b takes a resigned lock at once");

    // b dies (no more rounds): a is refused until b's TTL has run out at the control.
    let died = Instant::now();
    a.round().await.expect("a round");
    assert!(!la.is_leader(), "b's grant still runs");
    while !la.is_leader() {
        assert!(died.elapsed() < ttl * 2, "a never took over");
        tokio::time::sleep(Duration::from_millis(100)).await;
        a.round().await.expect("a round");
    }
    assert!(
        died.elapsed() >= ttl - Duration::from_millis(200),
        "a took over {:?} after b's last renewal, before its TTL",
        died.elapsed()
    );
    assert!(!lb.leads_at(died + ttl), "b stops on its own clock by then");
}

/// A leader that was deposed (the lock went to another daemon while it was paused) and still
/// believes it leads writes the journal at its old epoch: refused, nothing changed; the new
/// leader resumes what the old one wrote before, and its own writes go through.
#[tokio::test]
async fn a_deposed_leaders_journal_write_is_refused() {
    let (url, _dir) = control().await;
    let dirs = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let ttl = Duration::from_secs(30);
    let (mut a, la) = daemon(&url, "a", ttl);
    let (mut b, lb) = daemon(&url, "b", ttl);
    let ja = journal(&url, "a", &a, dirs.0.path());
    let jb = journal(&url, "b", &b, dirs.1.path());

    a.round().await.expect("a round");
    assert!(la.is_leader());
    assert!(ja.needs_load());
    assert_eq!(
        ja.load().await.expect("read"),
        None,
        "nothing journaled yet"
    );
    ja.save(&state(1)).await.expect("the holder writes");
    let epoch_a = a.fence().get().expect("a's epoch");

    // a pauses; its lock is let go behind its back (an operator, or its grant lapsing), and b
    // takes it at a new epoch. a's elector has not run since: it still holds its old epoch.
    let operator = ControlClient::new(&url, None).expect("client");
    operator.release_leader(LOCK, "a").await.expect("released");
    b.round().await.expect("b round");
    assert!(lb.is_leader());
    let epoch_b = b.fence().get().expect("b's epoch");
    assert!(epoch_b > epoch_a);
    assert_eq!(a.fence().get(), Some(epoch_a));

    let resumed = jb.load().await.expect("read").expect("a's journal");
    assert_eq!(resumed.next_id, 1, "b resumes what a journaled");

    let refused = ja.save(&state(2)).await.expect_err("a was deposed");
    assert!(matches!(refused, JournalError::Deposed(_)), "{refused}");
    assert!(ja.needs_load(), "a refused write leaves the journal unread");
    let held = operator
        .leader_journal(LOCK)
        .await
        .expect("read")
        .expect("a journal");
    assert_eq!(
        (held.holder.as_str(), held.epoch),
        ("a", epoch_a),
        "nothing written"
    );

    jb.save(&state(3)).await.expect("b writes at its epoch");
    let held = operator
        .leader_journal(LOCK)
        .await
        .expect("read")
        .expect("a journal");
    assert_eq!((held.holder.as_str(), held.epoch), ("b", epoch_b));
}

/// A holder whose grant lapsed on the control service's clock is refused even though nobody
/// took the lock since: it may no longer believe it leads, and a standby may be about to.
#[tokio::test]
async fn a_journal_write_after_the_grant_lapsed_is_refused() {
    let (url, _dir) = control().await;
    let dir = tempfile::tempdir().expect("dir");
    let (mut a, _la) = daemon(&url, "a", Duration::from_millis(300));
    let ja = journal(&url, "a", &a, dir.path());
    a.round().await.expect("a round");
    ja.load().await.expect("read");
    ja.save(&state(1)).await.expect("within the grant");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let refused = ja.save(&state(2)).await;
    // Unread after the first write? No: a good write keeps it read at the same epoch.
    assert!(
        matches!(refused, Err(JournalError::Deposed(_))),
        "{refused:?}"
    );
}

/// The first leader after the journal moved to the control service carries its own
/// executor.json over; once the control service has a journal, executor.json is not read.
#[tokio::test]
async fn the_first_leader_seeds_the_journal_from_its_executor_json() {
    let (url, _dir) = control().await;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("executor.json"), state(7)).expect("old journal");
    let (mut a, _la) = daemon(&url, "a", Duration::from_secs(30));
    let ja = journal(&url, "a", &a, dir.path());
    a.round().await.expect("a round");
    let got = ja.load().await.expect("read").expect("the local journal");
    assert_eq!(got.next_id, 7);
    ja.save(&state(8)).await.expect("written");
    assert_eq!(ja.load().await.expect("read").expect("remote").next_id, 8);
}
