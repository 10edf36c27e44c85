//! PostgreSQL 15 in the slot (`images/postgres`: initdb on an empty volume, `fsync`,
//! `synchronous_commit` on), one primary that moves with its volume (`berth.failover=move`).
//! Its client is the `postgres` crate from the host; each acknowledged write is a committed
//! `INSERT`, tagged with the postmaster that committed it (address, start time, system
//! identifier): a restarted or moved server is a new identity, two at once two primaries.

use berth_lab::dbimage::Db;

use super::db::{DbWorkload, EnvArgs, Spec};

pub fn workload() -> DbWorkload {
    DbWorkload::new(Spec {
        db: Db::Postgres,
        name: "postgres",
        base_port: 15432,
        replicas: 1,
        failover: "move",
        own_backend: None,
        env,
    })
}

fn env(a: &EnvArgs) -> Vec<String> {
    vec![format!("PGPORT={}", a.port)]
}
