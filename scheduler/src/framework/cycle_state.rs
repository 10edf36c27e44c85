//! Per-cycle scratch space: what pre-filter and pre-score compute once (parsed constraints,
//! normalisation bounds) and filter and score read for every node.

use std::any::Any;
use std::collections::BTreeMap;

#[derive(Default)]
pub struct CycleState {
    data: BTreeMap<&'static str, Box<dyn Any + Send + Sync>>,
}

impl CycleState {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn write<T: Any + Send + Sync>(&mut self, key: &'static str, value: T) {
        self.data.insert(key, Box::new(value));
    }

    pub fn read<T: Any>(&self, key: &'static str) -> Option<&T> {
        self.data.get(key).and_then(|b| b.downcast_ref::<T>())
    }
}
