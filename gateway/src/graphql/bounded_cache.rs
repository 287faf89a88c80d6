//! A map bounded by the total cost of what it holds (bytes, as its user counts them):
//! inserting past the budget drops the oldest entries first. The persisted-query store
//! and the document cache keep their entries in it.

use std::collections::{HashMap, VecDeque};

/// Entries by key, at most `budget` in total cost; the oldest go first.
#[derive(Debug)]
pub struct BoundedCache<V> {
    entries: HashMap<String, (V, u64)>,
    order: VecDeque<String>,
    cost: u64,
}

impl<V> Default for BoundedCache<V> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
            cost: 0,
        }
    }
}

impl<V: Clone> BoundedCache<V> {
    /// A copy of the entry under `key`.
    pub fn get(&self, key: &str) -> Option<V> {
        self.entries.get(key).map(|(value, _)| value.clone())
    }

    /// Whether an entry is held under `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Keeps `value` under `key` at `cost`, dropping the oldest entries until everything
    /// fits in `budget`; an entry costing more than the whole budget is not kept, and a
    /// key already held keeps its first value.
    pub fn insert(&mut self, key: String, value: V, cost: u64, budget: u64) {
        if cost > budget || self.entries.contains_key(&key) {
            return;
        }
        while self.cost + cost > budget {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some((_, removed)) = self.entries.remove(&oldest) {
                self.cost -= removed;
            }
        }
        self.cost += cost;
        self.order.push_back(key.clone());
        self.entries.insert(key, (value, cost));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_within_its_budget_dropping_the_oldest() {
        let mut cache = BoundedCache::default();
        cache.insert("a".into(), 'x', 40, 100);
        cache.insert("b".into(), 'y', 40, 100);
        cache.insert("c".into(), 'z', 40, 100);
        assert!(cache.get("a").is_none(), "the oldest went first");
        assert_eq!((cache.get("b"), cache.get("c")), (Some('y'), Some('z')));
        assert_eq!(cache.cost, 80);
        cache.insert("huge".into(), 'w', 101, 100);
        assert!(
            cache.get("huge").is_none(),
            "larger than the budget: never kept"
        );
        cache.insert("b".into(), 'v', 1, 100);
        assert_eq!(
            cache.get("b"),
            Some('y'),
            "a held key keeps its first value"
        );
    }
}
