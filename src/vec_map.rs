//! A small ordered map on a sorted `Vec`. The session's maps hold a handful of entries
//! (requests in flight, open calls, signature checks), where a sorted `Vec` is as fast as a
//! `BTreeMap` and its code is a fraction of the size in the WebAssembly build (each
//! `BTreeMap<K, V>` instantiates its own B-tree).

#[derive(Debug, Clone)]
pub(crate) struct VecMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap { entries: Vec::new() }
    }
}

impl<K: Ord, V> VecMap<K, V> {
    fn position(&self, key: &K) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.cmp(key))
    }

    /// Inserts or replaces; returns the replaced value.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.position(&key) {
            Ok(at) => self.entries.get_mut(at).map(|(_, old)| std::mem::replace(old, value)),
            Err(at) => {
                self.entries.insert(at, (key, value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let at = self.position(key).ok()?;
        Some(self.entries.remove(at).1)
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        let at = self.position(key).ok()?;
        self.entries.get(at).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let at = self.position(key).ok()?;
        self.entries.get_mut(at).map(|(_, v)| v)
    }

    #[cfg(test)]
    pub fn contains_key(&self, key: &K) -> bool {
        self.position(key).is_ok()
    }

    /// In key order, like a `BTreeMap`.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.iter_mut().map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::VecMap;

    #[test]
    fn behaves_like_an_ordered_map() {
        let mut map = VecMap::default();
        let mut reference = std::collections::BTreeMap::new();
        // A fixed pseudo-random sequence of inserts and removes, compared step by step.
        let mut x: u32 = 7;
        for _ in 0..2_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let key = (x >> 16) % 64;
            if x % 3 == 0 {
                assert_eq!(map.remove(&key), reference.remove(&key));
            } else {
                assert_eq!(map.insert(key, x), reference.insert(key, x));
            }
            assert_eq!(map.get(&key), reference.get(&key));
            assert_eq!(map.contains_key(&key), reference.contains_key(&key));
            assert_eq!(map.len(), reference.len());
        }
        assert!(map.iter().eq(reference.iter()));
        assert!(map.keys().eq(reference.keys()));
        for value in map.values_mut() {
            *value = value.wrapping_add(1);
        }
        assert!(map.values().eq(reference.values().map(|v| v.wrapping_add(1)).collect::<Vec<_>>().iter()));
    }
}
