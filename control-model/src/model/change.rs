//! What a batch of accepted requests changed, record by record: the unit the control service
//! persists (one redb transaction of per-record puts, one Raft entry) instead of the whole
//! document, so a write costs the same at 100,000 datasets as at 100.
//!
//! The state's maps are [`Tracked`]: every mutable access remembers the record's value from
//! before, so [`State::take_change`] lists exactly the records that differ, with no scan of the
//! maps and nothing for a rule to remember to report. The service checks that claim in every
//! debug build by comparing the document it persisted with the one it applied to
//! (`volume_control::commit`).

use std::collections::BTreeMap;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Dataset, LeaderJournal, LeaderLock, Lease, Node, Reported, State};
use crate::grants::Closure;

/// A map that remembers, for each key changed since the last [`Tracked::take`], the value it
/// held before. Reads go through `Deref`; every way to change it is a method here.
#[derive(Debug, Clone)]
pub struct Tracked<V> {
    map: BTreeMap<String, V>,
    /// Key → the value before its first change since the last `take` (`None`: absent).
    before: BTreeMap<String, Option<V>>,
}

impl<V> Default for Tracked<V> {
    fn default() -> Self {
        Tracked {
            map: BTreeMap::new(),
            before: BTreeMap::new(),
        }
    }
}

/// Equal when the maps are: what was changed since the last take is bookkeeping, not state.
impl<V: PartialEq> PartialEq for Tracked<V> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<V: Eq> Eq for Tracked<V> {}

impl<V> Deref for Tracked<V> {
    type Target = BTreeMap<String, V>;
    fn deref(&self) -> &BTreeMap<String, V> {
        &self.map
    }
}

impl<'a, V> IntoIterator for &'a Tracked<V> {
    type Item = (&'a String, &'a V);
    type IntoIter = std::collections::btree_map::Iter<'a, String, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.map.iter()
    }
}

impl<V> FromIterator<(String, V)> for Tracked<V> {
    fn from_iter<I: IntoIterator<Item = (String, V)>>(iter: I) -> Self {
        Tracked {
            map: iter.into_iter().collect(),
            before: BTreeMap::new(),
        }
    }
}

impl<V> From<BTreeMap<String, V>> for Tracked<V> {
    fn from(map: BTreeMap<String, V>) -> Self {
        Tracked {
            map,
            before: BTreeMap::new(),
        }
    }
}

/// Stored exactly as the plain map it wraps, so documents keep their format.
impl<V: Serialize> Serialize for Tracked<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(s)
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Tracked<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(d).map(Tracked::from)
    }
}

impl<V: Clone + PartialEq> Tracked<V> {
    fn remember(&mut self, key: &str) {
        if !self.before.contains_key(key) {
            self.before
                .insert(key.to_string(), self.map.get(key).cloned());
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.remember(key);
        self.map.get_mut(key)
    }

    pub fn insert(&mut self, key: String, value: V) -> Option<V> {
        self.remember(&key);
        self.map.insert(key, value)
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        if !self.map.contains_key(key) {
            return None;
        }
        self.remember(key);
        self.map.remove(key)
    }

    /// Keeps the entries `keep` says to; O(entries), like `BTreeMap::retain`.
    pub fn retain(&mut self, mut keep: impl FnMut(&String, &V) -> bool) {
        let gone: Vec<String> = self
            .map
            .iter()
            .filter(|(k, v)| !keep(k, v))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.remove(&k);
        }
    }

    /// The records changed since the last take, as (now, before), only those that differ;
    /// forgets them.
    fn take(&mut self) -> (Records<V>, Records<V>) {
        let mut now = BTreeMap::new();
        let mut was = BTreeMap::new();
        for (k, before) in std::mem::take(&mut self.before) {
            let cur = self.map.get(&k);
            if cur != before.as_ref() {
                now.insert(k.clone(), cur.cloned());
                was.insert(k, before);
            }
        }
        (now, was)
    }

    /// Sets `key` to `value` (`None`: removes it) without remembering: a change that is
    /// already persisted (or an undo).
    fn put(&mut self, key: &str, value: Option<&V>) {
        match value {
            Some(v) => {
                self.map.insert(key.to_string(), v.clone());
            }
            None => {
                self.map.remove(key);
            }
        }
    }
}

/// Records by key: `Some` the record's new value, `None` removed.
pub type Records<V> = BTreeMap<String, Option<V>>;

/// The records a batch changed and the document's counters after it: what the control service
/// persists per write and what a Raft entry carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub generation: u64,
    pub clock_ms: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub datasets: Records<Dataset>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: Records<Node>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub leases: Records<Lease>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reported: Records<Reported>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub leaders: Records<LeaderLock>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub leader_journals: Records<LeaderJournal>,
    /// Lease closures (`grants`); unknown to, and ignored by, binaries before entry format 3.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub closed: Records<Closure>,
}

impl Change {
    /// Whether no record changed (the counters may have: `tick`).
    pub fn no_records(&self) -> bool {
        self.datasets.is_empty()
            && self.nodes.is_empty()
            && self.leases.is_empty()
            && self.reported.is_empty()
            && self.leaders.is_empty()
            && self.leader_journals.is_empty()
            && self.closed.is_empty()
    }
}

/// The counters as of the last [`State::take_change`]; bookkeeping, so never unequal.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Taken {
    generation: u64,
    clock_ms: u64,
}

impl PartialEq for Taken {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl State {
    /// What changed since the last call (or since loading): the change to persist, and the
    /// change that undoes it (`apply` it if the first cannot be persisted). Costs what
    /// changed, not what the state holds.
    pub fn take_change(&mut self) -> (Change, Change) {
        let (datasets, datasets_was) = self.datasets.take();
        let (nodes, nodes_was) = self.nodes.take();
        let (leases, leases_was) = self.leases.take();
        let (reported, reported_was) = self.reported.take();
        let (leaders, leaders_was) = self.leaders.take();
        let (leader_journals, leader_journals_was) = self.leader_journals.take();
        let (closed, closed_was) = self.closed.take();
        let was = self.taken;
        self.taken = Taken {
            generation: self.generation,
            clock_ms: self.clock_ms,
        };
        (
            Change {
                generation: self.generation,
                clock_ms: self.clock_ms,
                datasets,
                nodes,
                leases,
                reported,
                leaders,
                leader_journals,
                closed,
            },
            Change {
                generation: was.generation,
                clock_ms: was.clock_ms,
                datasets: datasets_was,
                nodes: nodes_was,
                leases: leases_was,
                reported: reported_was,
                leaders: leaders_was,
                leader_journals: leader_journals_was,
                closed: closed_was,
            },
        )
    }

    /// Applies `c` (persisted elsewhere, or an undo): the records it names take its values, the
    /// name index follows, and nothing is remembered as changed.
    pub fn apply(&mut self, c: &Change) {
        for (id, d) in &c.datasets {
            if let Some(name) = self.datasets.get(id).and_then(Dataset::name)
                && self.names.get(name) == Some(id)
            {
                let name = name.to_string();
                self.names.remove(&name);
            }
            if let Some(d) = d
                && !d.deleted
                && let Some(name) = d.name()
            {
                self.names.insert(name.to_string(), id.clone());
            }
            self.datasets.put(id, d.as_ref());
        }
        for (k, v) in &c.nodes {
            self.nodes.put(k, v.as_ref());
        }
        for (k, v) in &c.leases {
            self.leases.put(k, v.as_ref());
        }
        for (k, v) in &c.reported {
            self.reported.put(k, v.as_ref());
        }
        for (k, v) in &c.leaders {
            self.leaders.put(k, v.as_ref());
        }
        for (k, v) in &c.leader_journals {
            self.leader_journals.put(k, v.as_ref());
        }
        for (k, v) in &c.closed {
            self.closed.put(k, v.as_ref());
        }
        self.generation = c.generation;
        self.clock_ms = c.clock_ms;
        self.taken = Taken {
            generation: c.generation,
            clock_ms: c.clock_ms,
        };
    }

    /// Forgets what changed so far: the state as it stands is what is persisted (just loaded).
    pub fn settle(&mut self) {
        let _ = self.take_change();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AssignMode, NewDataset};

    fn node(n: &str) -> Node {
        Node {
            uuid: n.into(),
            host: n.into(),
            transfer: format!("{n}:1"),
            dead: false,
        }
    }

    fn named(n: &str) -> NewDataset {
        NewDataset {
            primary: "n1".into(),
            metadata: [("name".to_string(), n.to_string())].into(),
            ..NewDataset::default()
        }
    }

    /// The change names exactly the records that differ, and applying it to the state as it
    /// was gives the state as it is; applying the undo gives back the state as it was.
    #[test]
    fn a_change_carries_what_changed_and_its_undo_restores_the_rest() {
        let mut s = State::default();
        s.register_node(node("n1"));
        s.register_node(node("n2"));
        for i in 0..50 {
            s.create(named(&format!("v{i}")), None).expect("create");
        }
        s.settle();
        let before = s.clone();
        s.fence("v7", "n1", 1, 10).expect("fence");
        s.assign("v7", "n2", 2, AssignMode::Move, 20)
            .expect("assign");
        s.delete(&s.id_of("v8").expect("v8"), None).expect("delete");
        s.create(named("v8"), None).expect("name reused");
        s.take_leader("run", "m1", 1000, None).expect("lock");
        s.tick(99);
        // A refused request changes nothing.
        assert!(s.fence("v9", "n1", 5, 30).is_err());
        let (fwd, back) = s.take_change();
        assert_eq!(fwd.datasets.len(), 3, "v7, the old v8 and the new v8");
        assert_eq!(fwd.leaders.len(), 1);
        assert!(fwd.nodes.is_empty() && fwd.leases.is_empty());
        let mut replay = before.clone();
        replay.apply(&fwd);
        assert_eq!(replay, s);
        assert_eq!(
            replay.by_name("v8"),
            s.by_name("v8"),
            "the name index follows"
        );
        let mut undone = s.clone();
        undone.apply(&back);
        assert_eq!(undone, before);
        assert_eq!(
            undone.by_name("v8").map(|d| &d.dataset_id),
            before.by_name("v8").map(|d| &d.dataset_id)
        );
        let (again, _) = s.take_change();
        assert!(again.no_records(), "a take forgets what it listed");
    }

    #[test]
    fn a_tracked_map_is_stored_as_the_plain_map() {
        let mut t: Tracked<u32> = Tracked::default();
        t.insert("a".into(), 1);
        assert_eq!(serde_json::to_string(&t).expect("json"), r#"{"a":1}"#);
        let back: Tracked<u32> = serde_json::from_str(r#"{"a":1}"#).expect("parse");
        assert_eq!(back, t);
    }
}
