//! Rolling a changed stateful template out to its slots: which slots to update now.
//!
//! Like a StatefulSet's `RollingUpdate`: highest slot first, never more than the service's
//! `berth.max-unavailable` slots down at once (a slot being updated counts as down until its
//! new task runs, as does a slot down for any other reason), and services in `berth.depends-on`
//! order — a service starts rolling only once every service it depends on is fully updated and
//! available, so a database is upgraded before the API that talks to it.
//!
//! Pure: the caller reports each slot's state, this returns what to update; called again on
//! every reconcile, so a rollout resumes wherever a restart left it.

use std::collections::BTreeMap;

use crate::dependency;
use crate::model::{Cluster, Policy};
use crate::schedule::PlanError;

/// One slot as the caller sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotState {
    pub service: String,
    pub slot: u64,
    /// Runs an older version of its template.
    pub outdated: bool,
    /// Its task is running.
    pub available: bool,
}

/// The slots to update now, as (service, slot), in the order to issue them.
pub fn next(cluster: &Cluster, slots: &[SlotState]) -> Result<Vec<(String, u64)>, PlanError> {
    let names: Vec<&str> = cluster.services.iter().map(|s| s.name.as_str()).collect();
    let mut policies = Vec::with_capacity(cluster.services.len());
    for s in &cluster.services {
        policies.push(
            Policy::from_labels(&s.labels).map_err(|source| PlanError::Labels {
                service: s.name.clone(),
                source,
            })?,
        );
    }
    let deps: Vec<&[String]> = policies.iter().map(|p| p.depends_on.as_slice()).collect();
    let order = dependency::order(&names, &deps)?;
    let mut by_service: BTreeMap<&str, Vec<&SlotState>> = BTreeMap::new();
    for s in slots {
        by_service.entry(s.service.as_str()).or_default().push(s);
    }
    let settled = |name: &str| {
        by_service
            .get(name)
            .is_none_or(|ss| ss.iter().all(|s| !s.outdated && s.available))
    };
    let mut out = Vec::new();
    for &i in &order.sequence {
        let name = names[i];
        let Some(ss) = by_service.get(name) else {
            continue;
        };
        if !policies[i].depends_on.iter().all(|d| settled(d)) {
            continue;
        }
        let down = ss.iter().filter(|s| !s.available).count();
        let budget = (policies[i].max_unavailable.max(1) as usize).saturating_sub(down);
        let mut outdated: Vec<&&SlotState> = ss.iter().filter(|s| s.outdated).collect();
        // Highest slot first; an outdated slot that is down anyway costs no extra budget.
        outdated.sort_by_key(|s| (s.available, std::cmp::Reverse(s.slot)));
        let mut spent = 0;
        for s in outdated {
            if s.available {
                if spent == budget {
                    break;
                }
                spent += 1;
            }
            out.push((name.to_string(), s.slot));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::replicated;

    fn slot(service: &str, slot: u64, outdated: bool, available: bool) -> SlotState {
        SlotState {
            service: service.into(),
            slot,
            outdated,
            available,
        }
    }

    fn cluster() -> Cluster {
        Cluster {
            services: vec![
                {
                    let mut api = replicated("api", 3);
                    api.labels.insert("berth.depends-on".into(), "db".into());
                    api.labels
                        .insert("berth.max-unavailable".into(), "2".into());
                    api
                },
                replicated("db", 3),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn highest_slot_first_within_the_budget() {
        let c = cluster();
        let all_old = |svc| (1..=3).map(move |i| slot(svc, i, true, true));
        let slots: Vec<_> = all_old("db").collect();
        assert_eq!(next(&c, &slots).unwrap(), [("db".to_string(), 3)]);
        // Slot 3 updated but not running yet: the budget of 1 is spent.
        let slots = vec![
            slot("db", 1, true, true),
            slot("db", 2, true, true),
            slot("db", 3, false, false),
        ];
        assert!(next(&c, &slots).unwrap().is_empty());
    }

    #[test]
    fn a_dependent_service_waits_for_its_dependencies() {
        let c = cluster();
        let mut slots: Vec<_> = (1..=3).map(|i| slot("api", i, true, true)).collect();
        slots.push(slot("db", 1, true, true));
        assert_eq!(next(&c, &slots).unwrap(), [("db".to_string(), 1)]);
        slots.pop();
        slots.push(slot("db", 1, false, true));
        // max-unavailable 2 for the api.
        assert_eq!(
            next(&c, &slots).unwrap(),
            [("api".to_string(), 3), ("api".to_string(), 2)]
        );
    }

    #[test]
    fn an_outdated_slot_that_is_down_anyway_is_updated_at_once() {
        let c = cluster();
        let slots = vec![
            slot("db", 1, true, false),
            slot("db", 2, true, true),
            slot("db", 3, true, true),
        ];
        assert_eq!(next(&c, &slots).unwrap(), [("db".to_string(), 1)]);
    }
}
