//! The quorum view: whether this node sees a majority of the largest recent cluster.

use crate::event::{ClusterEvent, NodeId};

/// Whether this node sees a majority of the largest recent cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorum {
    /// Largest recent cluster size (members that did not leave), persisted.
    pub largest: u64,
    pub alive: u64,
    pub in_majority: bool,
}

/// Members that graceful leaves took out of the cluster in `events`.
pub(crate) fn leaves(events: &[ClusterEvent], me: &NodeId) -> u64 {
    events
        .iter()
        .filter(|e| matches!(e, ClusterEvent::NodeLeft { node, .. } if node != me))
        .count() as u64
}

/// The quorum as it follows from counts: `alive` (us included) against the largest size.
pub(crate) fn quorum(largest: u64, counts: [usize; 4]) -> Quorum {
    let [alive, suspect, dead, _left] = counts.map(|c| c as u64);
    let largest = largest.max(alive + suspect + dead).max(1);
    Quorum {
        largest,
        alive,
        in_majority: alive * 2 > largest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_needs_more_than_half_of_the_largest_size() {
        assert!(quorum(5, [3, 0, 2, 0]).in_majority);
        assert!(!quorum(5, [2, 1, 2, 0]).in_majority);
        assert!(
            !quorum(4, [2, 0, 2, 0]).in_majority,
            "exactly half is not a majority"
        );
        // The largest size never drops below what is known now.
        assert_eq!(quorum(3, [4, 0, 1, 0]).largest, 5);
        assert!(
            quorum(0, [1, 0, 0, 0]).in_majority,
            "a new node alone is its whole cluster"
        );
    }
}
