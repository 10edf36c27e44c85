//! Redis 7 in the slot (`images/redis`: the append-only file with `appendfsync always`, so a
//! reply follows the fsync), one primary that moves with its volume. Its client is the `redis`
//! crate from the host; each acknowledged write is an `SADD` to the run's set, tagged with the
//! process's `run_id`.

use berth_lab::dbimage::Db;

use super::db::{DbWorkload, EnvArgs, Spec};

pub fn workload() -> DbWorkload {
    DbWorkload::new(Spec {
        db: Db::Redis,
        name: "redis",
        base_port: 16379,
        replicas: 1,
        failover: "move",
        own_backend: None,
        env,
    })
}

fn env(a: &EnvArgs) -> Vec<String> {
    vec![format!("REDIS_PORT={}", a.port)]
}
