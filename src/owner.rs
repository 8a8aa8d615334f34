//! Singleton ownership: of the hosts that offer an actor, exactly one owns it.
//!
//! The owner is chosen by rendezvous (highest random weight) hashing: each candidate host
//! scores `xxh3(actor, node id, generation)` and the highest score wins. Every node holding
//! the same roster computes the same owner without talking to anyone, and a change of
//! membership moves only the actors that must move: a host that goes away hands over just
//! the actors it owned (each to its own runner-up), and a host that arrives takes just the
//! actors it now scores highest on. The generation is in the hash so that a node restarted
//! as a new generation does not silently resume ownership it had lost meanwhile.
//!
//! Candidates are the hosts that are up in this node's view: alive or suspect (a suspicion
//! alone does not move a singleton; a death does), and not reporting the actor `critical`.
//! Split-brain downing decides the side: the losing side is down and answers no owner; the
//! winning side has forgotten the unreachable, so they are no candidates there.

use crate::event::{Generation, NodeId};
use crate::roster::Roster;
use serde::{Deserialize, Serialize};

/// A singleton moved (`from` or `to` is `None` when no host was or is eligible).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerChanged {
    pub actor: String,
    pub from: Option<NodeId>,
    pub to: Option<NodeId>,
}

/// The rendezvous score of `node` (in `generation`) for `actor`: fields length-prefixed so
/// that no two different triples hash the same bytes.
pub fn score(actor: &str, node: &NodeId, generation: Generation) -> u64 {
    let mut bytes = Vec::with_capacity(actor.len() + node.as_str().len() + 24);
    bytes.extend_from_slice(&(actor.len() as u64).to_le_bytes());
    bytes.extend_from_slice(actor.as_bytes());
    bytes.extend_from_slice(&(node.as_str().len() as u64).to_le_bytes());
    bytes.extend_from_slice(node.as_str().as_bytes());
    bytes.extend_from_slice(&generation.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// Whether `node` may own `actor` as far as `roster` knows (it hosts it, is up, and does
/// not report it critical).
pub fn eligible(roster: &Roster, node: &NodeId, actor: &str) -> bool {
    roster.state_of(node).is_some_and(|s| !s.is_tombstone())
        && roster.record(node).is_some_and(|r| r.hosts(actor))
        && roster.actor_health(node, actor) != Some(crate::health::Health::Critical)
}

/// The owner of `actor` in `roster`, if any host is eligible.
pub fn owner(roster: &Roster, actor: &str) -> Option<NodeId> {
    roster
        .locate(actor)
        .into_iter()
        .filter(|id| eligible(roster, id, actor))
        .filter_map(|id| {
            let generation = roster.record(&id)?.generation;
            Some((score(actor, &id, generation), id))
        })
        // Equal scores (a 2^-64 chance) fall to the lower id, the same on every node.
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)))
        .map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ClusterEvent;
    use proptest::prelude::*;

    fn roster_with(hosts: &[(&str, u64)], actors: &[&str]) -> Roster {
        let mut r = Roster::new();
        for (id, generation) in hosts {
            r.apply(&ClusterEvent::NewNode {
                node: NodeId::new(*id),
                generation: *generation,
                version: 1,
                addr: format!("ws://{id}"),
                actors: actors.iter().map(|a| a.to_string()).collect(),
            });
        }
        r
    }

    fn kill(r: &mut Roster, id: &str, generation: u64) {
        r.apply(&ClusterEvent::NodeDead {
            node: NodeId::new(id),
            generation,
            incarnation: 0,
        });
    }

    #[test]
    fn one_owner_among_live_hosts_and_only_its_actors_move_when_it_dies() {
        let actors: Vec<String> = (0..200).map(|i| format!("s{i}")).collect();
        let names: Vec<&str> = actors.iter().map(String::as_str).collect();
        let hosts = [("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 1)];
        let mut r = roster_with(&hosts, &names);
        let before: Vec<NodeId> = names.iter().map(|a| owner(&r, a).unwrap()).collect();
        // Spread: every host owns some.
        for (h, _) in hosts {
            assert!(before.iter().any(|o| o.as_str() == h), "{h} owns nothing");
        }
        kill(&mut r, "c", 1);
        for (a, was) in names.iter().zip(&before) {
            let now = owner(&r, a).unwrap();
            assert_ne!(now.as_str(), "c");
            if was.as_str() != "c" {
                assert_eq!(&now, was, "{a} moved though its owner lives");
            }
        }
    }

    #[test]
    fn a_critical_host_hands_its_singletons_over_and_takes_them_back_when_healthy() {
        let mut r = roster_with(&[("a", 1), ("b", 1), ("c", 1)], &["x"]);
        let first = owner(&r, "x").unwrap();
        let health = |r: &mut Roster, h, version| {
            r.apply(&ClusterEvent::HealthSet {
                node: first.clone(),
                generation: 1,
                version,
                actor: "x".into(),
                health: h,
                note: String::new(),
            });
        };
        health(&mut r, crate::health::Health::Critical, 2);
        let second = owner(&r, "x").unwrap();
        assert_ne!(second, first, "a critical host owns nothing");
        health(&mut r, crate::health::Health::Warning, 3);
        assert_eq!(owner(&r, "x"), Some(first), "warning is still eligible");
    }

    #[test]
    fn no_owner_without_an_eligible_host() {
        let mut r = roster_with(&[("a", 1)], &["x"]);
        assert_eq!(owner(&r, "x"), Some(NodeId::new("a")));
        assert_eq!(owner(&r, "y"), None);
        kill(&mut r, "a", 1);
        assert_eq!(owner(&r, "x"), None);
    }

    proptest! {
        /// The owner depends on the roster's content only, not on the order it was built in.
        #[test]
        fn every_order_of_the_same_news_gives_the_same_owner(
            order in Just((0..6usize).collect::<Vec<_>>()).prop_shuffle(),
            dead in proptest::collection::btree_set(0..6usize, 0..6),
        ) {
            let build = |order: &[usize]| {
                let mut r = Roster::new();
                for &i in order {
                    r.apply(&ClusterEvent::NewNode {
                        node: NodeId::new(format!("n{i}")),
                        generation: 1 + i as u64 % 2,
                        version: 1,
                        addr: format!("ws://n{i}"),
                        actors: ["x".to_string(), "y".to_string()].into(),
                    });
                    if dead.contains(&i) {
                        kill(&mut r, &format!("n{i}"), 1 + i as u64 % 2);
                    }
                }
                r
            };
            let a = build(&order);
            let sorted: Vec<usize> = (0..6).collect();
            let b = build(&sorted);
            for actor in ["x", "y"] {
                prop_assert_eq!(owner(&a, actor), owner(&b, actor));
            }
        }
    }
}
