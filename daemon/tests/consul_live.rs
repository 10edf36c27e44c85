//! Berth's Consul registration against a real Consul agent, when `CONSUL_HTTP_ADDR` names one
//! (`CONSUL_HTTP_TOKEN` for its ACL token). Without it the test is reported `ignored` with a
//! `NOT RUN` line: no Consul binary can be had on the machines that run the suite, so the
//! contract tests in `daemon/src/consul/tests.rs` (Consul's documented shapes) always run
//! instead, and this one checks those shapes against the real thing wherever there is one.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_daemon::consul::election::{ElectionConfig, Elector, elector as new_elector};
use berth_daemon::consul::{Agent, BERTH, CheckStatus, Instance, MANAGED_BY, Registrar};
use berth_daemon::metrics::Metrics;
use berth_leadership::Leadership;
use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let addr = std::env::var("CONSUL_HTTP_ADDR")
        .ok()
        .filter(|a| !a.is_empty());
    if addr.is_none() {
        eprintln!(
            "\n*** NOT RUN: the live Consul test needs a Consul agent: set CONSUL_HTTP_ADDR (and \
             CONSUL_HTTP_TOKEN with ACLs). The contract tests against Consul's documented shapes \
             ran instead. ***\n"
        );
    }
    let trial = Trial::test("registers_refreshes_and_deregisters_on_a_real_agent", {
        let addr = addr.clone();
        move || match addr {
            Some(a) => live(&a).map_err(Failed::from),
            None => Err(Failed::from("needs CONSUL_HTTP_ADDR")),
        }
    })
    .with_ignored_flag(addr.is_none());
    let election = Trial::test("one_of_two_electors_leads_and_a_release_hands_over", {
        let addr = addr.clone();
        move || match addr {
            Some(a) => live_election(&a).map_err(Failed::from),
            None => Err(Failed::from("needs CONSUL_HTTP_ADDR")),
        }
    })
    .with_ignored_flag(addr.is_none());
    libtest_mimic::run(&args, vec![trial, election]).exit()
}

fn instance(id: &str, status: CheckStatus) -> Instance {
    Instance {
        id: id.to_string(),
        name: "berth-live-test".to_string(),
        address: "127.0.0.1".to_string(),
        port: Some(18080),
        tags: vec![BERTH.to_string(), "node=live".to_string()],
        meta: BTreeMap::from([(MANAGED_BY.to_string(), BERTH.to_string())]),
        status,
        output: format!("live test: {}", status.as_str()),
    }
}

fn live(addr: &str) -> Result<(), String> {
    let addr = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let token = std::env::var("CONSUL_HTTP_TOKEN").ok();
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let agent = |t: Option<String>| Agent::new(&addr, t, Duration::from_secs(10));
        let r = Registrar::new(
            agent(token.clone()).map_err(|e| e.to_string())?,
            Duration::from_secs(60),
            Metrics::new(),
        );
        let reader = agent(token.clone()).map_err(|e| e.to_string())?;
        let pid = std::process::id();
        let (a, b) = (
            instance(&format!("berth-live-{pid}-a"), CheckStatus::Passing),
            instance(&format!("berth-live-{pid}-b"), CheckStatus::Critical),
        );
        let outcome = async {
            let rep = r
                .sync(&[a.clone(), b.clone()], false)
                .await
                .map_err(|e| e.to_string())?;
            if !rep.errors.is_empty() {
                return Err(format!("register: {:?}", rep.errors));
            }
            let services = reader.services().await.map_err(|e| e.to_string())?;
            for i in [&a, &b] {
                let s = services
                    .get(&i.id)
                    .ok_or(format!("{} not registered", i.id))?;
                if !s.matches(i) {
                    return Err(format!("{} registered as {s:?}, wanted {i:?}", i.id));
                }
            }
            let checks = reader.checks().await.map_err(|e| e.to_string())?;
            let cb = checks
                .get(&b.check_id())
                .ok_or("the critical instance has no check")?;
            if cb.status != "critical" || cb.output != b.output {
                return Err(format!("check of b: {cb:?}"));
            }
            let again = r
                .sync(&[a.clone(), b.clone()], false)
                .await
                .map_err(|e| e.to_string())?;
            if !again.registered.is_empty() || again.refreshed != 2 {
                return Err(format!("an unchanged pass re-registered: {again:?}"));
            }
            let rep = r
                .sync(std::slice::from_ref(&a), false)
                .await
                .map_err(|e| e.to_string())?;
            if rep.deregistered != [b.id.clone()] {
                return Err(format!("b not deregistered: {rep:?}"));
            }
            Ok::<(), String>(())
        }
        .await;
        // Leave the agent as found, whatever happened.
        let _ = r.sync(&[], false).await;
        outcome
    })
}

fn url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// Leader election on a real agent, the parts that need no waiting: of two electors one leads,
/// and once it resigns (release, then destroy) the other leads at its next round. The key is
/// this process's own, so a real swarm's election is never touched.
fn live_election(addr: &str) -> Result<(), String> {
    let addr = url(addr);
    let token = std::env::var("CONSUL_HTTP_TOKEN").ok();
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let key = format!("berth/live-test-{}/leader", std::process::id());
        let elector = |name: &str| -> Result<(Elector, std::sync::Arc<Leadership>), String> {
            let consul = berth_consul::Consul::new(&addr, token.clone(), Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            let config = ElectionConfig {
                key: key.clone(),
                ttl: Duration::from_secs(10),
                lock_delay: Duration::from_secs(15),
                identity: name.to_string(),
            };
            Ok(new_elector(consul, config))
        };
        let (mut a, la) = elector("live-a")?;
        let (mut b, lb) = elector("live-b")?;
        let outcome = async {
            a.round().await.map_err(|e| e.to_string())?;
            b.round().await.map_err(|e| e.to_string())?;
            if !la.is_leader() || lb.is_leader() {
                return Err("expected a to lead and b to stand by".to_string());
            }
            if lb.view().holder.as_deref() != Some("live-a") {
                return Err(format!("b sees {:?} as the leader", lb.view().holder));
            }
            a.resign().await;
            b.round().await.map_err(|e| e.to_string())?;
            if !lb.is_leader() {
                return Err("after a's release, b should lead at its next round".to_string());
            }
            Ok(())
        }
        .await;
        a.resign().await;
        b.resign().await;
        outcome
    })
}
