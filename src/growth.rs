//! How the per-member vectors grow.
//!
//! Every node holds a few entries per member (its roster, its detector's probe order), and a
//! simulation holds one node's worth per node: 10^8 entries at 10,000 members. A vector full
//! when one member joins doubles, so a whole cluster's worth of them doubles at once when
//! anyone joins. Growing by an eighth keeps inserts amortized O(1) with at most 12.5% spare.

/// Makes room for one more element: an eighth more (at least one) when `v` is full.
pub fn reserve_one<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len() / 8 + 1);
    }
}

/// [`litemap::LiteMap::insert`], growing the map by an eighth rather than doubling when a new
/// key finds it full.
pub fn insert<K: Ord, V>(map: &mut litemap::LiteMap<K, V>, key: K, value: V) -> Option<V> {
    if !map.contains_key(&key) {
        let mut entries = std::mem::take(map).into_tuple_vec();
        reserve_one(&mut entries);
        *map = litemap::LiteMap::from_sorted_store_unchecked(entries);
    }
    map.insert(key, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_vector_grows_by_an_eighth_and_one_with_room_does_not_grow() {
        let mut v: Vec<u64> = Vec::with_capacity(800);
        v.extend(0..800);
        reserve_one(&mut v);
        assert!(
            v.capacity() >= 901 && v.capacity() < 1_000,
            "{}",
            v.capacity()
        );
        let cap = v.capacity();
        v.push(1);
        reserve_one(&mut v);
        assert_eq!(v.capacity(), cap);
        let mut empty: Vec<u64> = Vec::new();
        reserve_one(&mut empty);
        assert!(empty.capacity() >= 1);
    }

    #[test]
    fn a_map_stays_sorted_and_replaces_values_of_known_keys() {
        let mut m = litemap::LiteMap::new();
        for k in [5, 1, 9, 3, 7] {
            assert_eq!(insert(&mut m, k, k * 10), None);
        }
        assert_eq!(insert(&mut m, 3, 33), Some(30));
        let got: Vec<(i32, i32)> = m.iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(got, vec![(1, 10), (3, 33), (5, 50), (7, 70), (9, 90)]);
    }
}
