//! The roster's records by node id: a sorted vector with a one-entry lookup cache.
//!
//! Sorted, not hashed: 16 bytes per member where a hash map takes about 40, and every node
//! holds one entry per member (a simulation of 10,000 nodes holds 10^8). A lookup is a
//! binary search, which an `apply` made four of for the same id (the fingerprint before,
//! the generation, the merge, the fingerprint after): replay lost a third of its speed to
//! them. The cache remembers the last index found, so the repeats cost one comparison.

use super::NodeRecord;
use crate::event::NodeId;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// No index cached.
const NONE: usize = usize::MAX;

#[derive(Debug, Default)]
pub(super) struct Nodes {
    entries: Vec<(NodeId, Arc<NodeRecord>)>,
    /// Index of the last lookup's hit. Atomic (relaxed) only so the roster stays `Sync`:
    /// a stale value is checked before use, so any value is safe.
    last: AtomicUsize,
}

impl Clone for Nodes {
    fn clone(&self) -> Self {
        Nodes {
            entries: self.entries.clone(),
            last: AtomicUsize::new(NONE),
        }
    }
}

impl PartialEq for Nodes {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Nodes {
    fn find(&self, id: &NodeId) -> Result<usize, usize> {
        let last = self.last.load(Ordering::Relaxed);
        if let Some((cached, _)) = self.entries.get(last) {
            if cached == id {
                return Ok(last);
            }
        }
        let found = self.entries.binary_search_by(|(k, _)| k.cmp(id));
        if let Ok(i) = found {
            self.last.store(i, Ordering::Relaxed);
        }
        found
    }

    pub(super) fn get(&self, id: &NodeId) -> Option<&Arc<NodeRecord>> {
        self.find(id).ok().map(|i| &self.entries[i].1)
    }

    pub(super) fn get_mut(&mut self, id: &NodeId) -> Option<&mut Arc<NodeRecord>> {
        self.find(id).ok().map(|i| &mut self.entries[i].1)
    }

    /// Inserts or replaces; the old record if there was one. Grows by an eighth when full.
    pub(super) fn insert(&mut self, id: NodeId, rec: Arc<NodeRecord>) -> Option<Arc<NodeRecord>> {
        match self.find(&id) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, rec)),
            Err(i) => {
                crate::growth::reserve_one(&mut self.entries);
                self.entries.insert(i, (id, rec));
                self.last.store(i, Ordering::Relaxed);
                None
            }
        }
    }

    pub(super) fn remove(&mut self, id: &NodeId) -> Option<Arc<NodeRecord>> {
        let i = self.find(id).ok()?;
        self.last.store(NONE, Ordering::Relaxed);
        Some(self.entries.remove(i).1)
    }

    /// In id order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&NodeId, &Arc<NodeRecord>)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &NodeId> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub(super) fn get_indexed(&self, i: usize) -> Option<(&NodeId, &Arc<NodeRecord>)> {
        self.entries.get(i).map(|(k, v)| (k, v))
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(generation: u64) -> Arc<NodeRecord> {
        Arc::new(NodeRecord::empty(generation))
    }

    #[test]
    fn lookups_after_inserts_and_removes_find_what_a_map_would() {
        let mut nodes = Nodes::default();
        let mut model = std::collections::BTreeMap::new();
        // A deterministic mix of inserts, replacements and removes over 50 ids.
        let mut x: u64 = 7;
        for step in 0..2_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let id = NodeId::new(format!("n{}", (x >> 33) % 50));
            match (x >> 20) % 3 {
                0 | 1 => {
                    let old = nodes.insert(id.clone(), rec(step)).map(|r| r.generation);
                    assert_eq!(old, model.insert(id.clone(), step));
                }
                _ => {
                    let old = nodes.remove(&id).map(|r| r.generation);
                    assert_eq!(old, model.remove(&id));
                }
            }
            // Looked up twice: the second answer comes from the cache.
            for _ in 0..2 {
                assert_eq!(
                    nodes.get(&id).map(|r| r.generation),
                    model.get(&id).copied()
                );
            }
            let other = NodeId::new(format!("n{}", (x >> 40) % 50));
            assert_eq!(
                nodes.get(&other).map(|r| r.generation),
                model.get(&other).copied()
            );
        }
        let ids: Vec<&NodeId> = nodes.keys().collect();
        let expected: Vec<&NodeId> = model.keys().collect();
        assert_eq!(ids, expected, "sorted by id");
        assert_eq!(nodes.len(), model.len());
    }
}
