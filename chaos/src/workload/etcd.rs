//! A 3-member etcd 3.4 cluster, one member per worker, as a `recreate` service: each member
//! has its own `local` volume, and a member whose node is lost is recreated empty on another
//! node under its own name, where its entry point removes the stale member and adds it again
//! (`images/etcd`), so the cluster's own replication refills it. Its client is `etcdctl` from
//! the image, from the host, writing to every member; a write is acknowledged once a majority
//! committed it, and tagged with the cluster's ID — a second ID is a second cluster accepting
//! writes (a member that founded its own).

use berth_lab::dbimage::Db;

use super::Backend;
use super::db::{DbWorkload, EnvArgs, Spec};

pub fn workload() -> DbWorkload {
    DbWorkload::new(Spec {
        db: Db::Etcd,
        name: "etcd",
        base_port: 12379,
        replicas: 3,
        failover: "recreate",
        own_backend: Some(Backend::Local),
        env,
    })
}

/// Client port `port`, peer port `port + 1000`.
fn env(a: &EnvArgs) -> Vec<String> {
    let peers: Vec<String> = a
        .workers
        .iter()
        .map(|w| format!("http://{w}:{}", a.port))
        .collect();
    vec![
        format!("ETCD_NAME={}", a.member),
        format!("ETCD_CLIENT_PORT={}", a.port),
        format!("ETCD_PEER_PORT={}", a.port + 1000),
        format!("BERTH_ETCD_FIRST={}", a.first),
        format!("BERTH_ETCD_PEERS={}", peers.join(",")),
        "BERTH_ETCD_JOIN_WAIT=5".to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_member_knows_every_worker_and_who_founds_the_cluster() {
        let workers = ["10.0.0.11".to_string(), "10.0.0.12".to_string()];
        let e = env(&EnvArgs {
            port: 12400,
            member: "{{.Service.Name}}",
            first: "db21-1",
            workers: &workers,
        });
        assert!(e.contains(&"ETCD_NAME={{.Service.Name}}".to_string()));
        assert!(e.contains(&"ETCD_PEER_PORT=13400".to_string()));
        assert!(e.contains(&"BERTH_ETCD_FIRST=db21-1".to_string()));
        assert!(e.contains(
            &"BERTH_ETCD_PEERS=http://10.0.0.11:12400,http://10.0.0.12:12400".to_string()
        ));
    }
}
