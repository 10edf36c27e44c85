//! Two real `berth-volume control --consul` on one Consul (the documented-shapes fake, run by the
//! test: no Consul binary can be had here), elected through a session lock: one serves, the
//! other answers 503 naming it; the leader stopped (SIGTERM) releases the key and the standby
//! serves at its next round; the leader killed (SIGKILL) is replaced once Consul has ended its
//! session (the test plays the TTL running out, then the lock-delay) — with every acknowledged
//! change. The takeover times are printed; only a hang fails the bounds.

use std::time::{Duration, Instant};

use berth_consul_fake::FakeAgent;
use berth_volume_client::ControlClient;
use berth_volume_client::http_client::{self, Target};
use hyper::Method;

use crate::support::{Proc, free_port, spawn};

const TOKEN: &str = "elected-test-token";
const KEY: &str = "berth/control/leader";

struct Pair {
    addrs: [String; 2],
    procs: [Option<Proc>; 2],
    token_file: std::path::PathBuf,
    consul: String,
}

impl Pair {
    fn start(&mut self, i: usize) {
        let a = &self.addrs[i];
        self.procs[i] = Some(spawn(&[
            "control".into(),
            "--listen".into(),
            a.clone(),
            "--advertise".into(),
            format!("http://{a}"),
            "--consul".into(),
            self.consul.clone(),
            "--token-file".into(),
            self.token_file.display().to_string(),
        ]));
    }

    /// (status, leader named in a 503) of instance `i`'s answer to a read, if it answers.
    async fn ask(&self, i: usize) -> Option<(u16, Option<String>)> {
        let auth = [("authorization", format!("Bearer {TOKEN}"))];
        let t = Target::Tcp(self.addrs[i].clone());
        let r = http_client::send(
            &t,
            Method::GET,
            "/v1/configuration/datasets",
            &auth,
            Vec::new(),
        );
        match tokio::time::timeout(Duration::from_secs(2), r).await {
            Ok(Ok(r)) => {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
                Some((r.status.as_u16(), v["leader"].as_str().map(str::to_string)))
            }
            _ => None,
        }
    }

    /// The instance that serves, once one does, and how long that took.
    async fn serving(&self, limit: Duration) -> (usize, Duration) {
        let t0 = Instant::now();
        loop {
            for i in 0..2 {
                if self.procs[i].is_some() && self.ask(i).await.is_some_and(|(s, _)| s == 200) {
                    return (i, t0.elapsed());
                }
            }
            assert!(t0.elapsed() < limit, "no instance served within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn url(&self, i: usize) -> String {
        format!("http://{}", self.addrs[i])
    }
}

fn names(ds: &[berth_control_model::wire::DatasetConfig]) -> Vec<String> {
    let mut n: Vec<String> = ds
        .iter()
        .filter_map(|d| d.metadata.get("name").cloned())
        .collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_serves_and_the_standby_takes_over_on_stop_and_on_death() {
    let fake = FakeAgent::start(None).await;
    let dir = tempfile::tempdir().expect("tmp");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let mut p = Pair {
        addrs: [0, 1].map(|_| format!("127.0.0.1:{}", free_port())),
        procs: [None, None],
        token_file,
        consul: fake.url.clone(),
    };
    p.start(0);
    let (first, _) = p.serving(Duration::from_secs(20)).await;
    assert_eq!(first, 0);
    p.start(1);
    // The second names the first (once it has made its first round).
    let t0 = Instant::now();
    loop {
        if let Some((503, Some(leader))) = p.ask(1).await {
            assert_eq!(leader, p.url(0));
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "standby never named the leader"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let client = ControlClient::new(&format!("{},{}", p.url(1), p.url(0)), Some(TOKEN.into()))
        .expect("client");
    let meta = |n: &str| [("name".to_string(), n.to_string())].into();
    client
        .create("n1", None, &meta("before-stop"), None)
        .await
        .expect("acknowledged through the standby's 503");

    // Stopped: the key is released, and the standby serves at its next round (TTL/3).
    let t_stop = Instant::now();
    assert!(p.procs[0].take().expect("leader").stop(), "clean stop");
    let (now, after_stop) = p.serving(Duration::from_secs(15)).await;
    assert_eq!(now, 1);
    println!(
        "after SIGTERM of the leader, the standby served {:.2} s after the stop began",
        t_stop.elapsed().as_secs_f64()
    );
    assert!(after_stop <= t_stop.elapsed());
    let ds = client.datasets().await.expect("datasets").0;
    assert_eq!(names(&ds), ["before-stop"]);
    client
        .create("n1", None, &meta("before-kill"), None)
        .await
        .expect("acknowledged by the new leader");

    // Killed: nothing serves while Consul still holds the dead leader's session; once it has
    // ended it (TTL) and the lock-delay has run, the restarted standby takes over.
    p.start(0);
    let t0 = Instant::now();
    while p.ask(0).await != Some((503, Some(p.url(1)))) {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "restarted standby never named the leader"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = fake
        .state
        .lock()
        .expect("fake")
        .holder(KEY)
        .expect("the leader holds the key")
        .to_string();
    let mut leader = p.procs[1].take().expect("leader");
    let _ = leader.child.kill();
    let _ = leader.child.wait();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_ne!(
        p.ask(0).await.map(|(s, _)| s),
        Some(200),
        "the standby must not serve while the dead leader's session lives"
    );
    fake.expire_session(&dead);
    fake.advance(Duration::from_secs(10));
    let t_free = Instant::now();
    let (now, took) = p.serving(Duration::from_secs(15)).await;
    assert_eq!(now, 0);
    println!(
        "after the dead leader's session ended and the lock-delay ran out, the standby served {:.2} s later",
        took.as_secs_f64()
    );
    assert!(t_free.elapsed() >= took);
    let ds = client.datasets().await.expect("datasets").0;
    assert_eq!(names(&ds), ["before-kill", "before-stop"]);
    // Every write went through a transaction fenced by the writer's session.
    let st = fake.state.lock().expect("fake");
    let txns: Vec<_> = st.requests.iter().filter(|r| r.path == "/v1/txn").collect();
    assert!(txns.len() >= 2, "{txns:?}");
    for t in txns {
        assert_eq!(t.body[0]["KV"]["Verb"], "check-session", "{:?}", t.body);
        assert_eq!(t.body[0]["KV"]["Key"], KEY);
    }
}
