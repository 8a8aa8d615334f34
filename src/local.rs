//! Changes a node makes to its own record. Pure: the roster in, the events to apply and log
//! out. The node is the only writer of its record, so each event takes the next version.

use crate::event::{ClusterEvent, Generation, NodeId};
use crate::roster::{Liveness, NodeRecord, Roster};
use crate::MemberState;

/// Who we are: the owner of one record in the roster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub id: NodeId,
    pub generation: Generation,
}

impl Identity {
    fn next_version(&self, roster: &Roster) -> u64 {
        roster
            .record(&self.id)
            .filter(|r| r.generation == self.generation)
            .map_or(0, |r| r.version)
            + 1
    }

    /// Events that bring our own record up to date when the node starts: the announcement
    /// (first start, or a new address), the actors given at start that are not yet hosted
    /// (registered actors stay until removed), and an incarnation above anything said about
    /// us in a previous life, so stale suspicions are refuted.
    pub fn startup_events(
        &self,
        roster: &Roster,
        addr: &str,
        actors: &[String],
    ) -> Vec<ClusterEvent> {
        let mut version = self.next_version(roster);
        let current = roster
            .record(&self.id)
            .filter(|r| r.generation == self.generation);
        let mut out = Vec::new();
        match current {
            None => {
                out.push(ClusterEvent::NewNode {
                    node: self.id.clone(),
                    generation: self.generation,
                    version,
                    addr: addr.to_owned(),
                    actors: actors.iter().cloned().collect(),
                });
                return out;
            }
            Some(rec) => {
                if rec.addr != addr {
                    out.push(ClusterEvent::NewNode {
                        node: self.id.clone(),
                        generation: self.generation,
                        version,
                        addr: addr.to_owned(),
                        actors: Default::default(),
                    });
                    version += 1;
                }
                for actor in actors {
                    if !rec.actors.get(actor).is_some_and(|e| e.present) {
                        out.push(ClusterEvent::ActorAdded {
                            node: self.id.clone(),
                            generation: self.generation,
                            version,
                            actor: actor.clone(),
                        });
                        version += 1;
                    }
                }
                if rec.liveness != Liveness::INITIAL {
                    out.push(ClusterEvent::NodeAlive {
                        node: self.id.clone(),
                        generation: self.generation,
                        incarnation: rec.liveness.incarnation + 1,
                    });
                }
            }
        }
        out
    }

    /// Events for a node that left in its previous generation and comes back as
    /// `self.generation`: one announcement that carries its actors (registered ones stay
    /// registered) and continues its versions, so they never regress.
    pub fn rejoin_events(
        &self,
        previous: &NodeRecord,
        addr: &str,
        actors: &[String],
    ) -> Vec<ClusterEvent> {
        let mut all: std::collections::BTreeSet<String> =
            previous.hosted_actors().map(str::to_owned).collect();
        all.extend(actors.iter().cloned());
        vec![ClusterEvent::NewNode {
            node: self.id.clone(),
            generation: self.generation,
            version: previous.version + 1,
            addr: addr.to_owned(),
            actors: all,
        }]
    }

    /// Whether our own record says we left: a graceful leave ends this generation for good.
    pub fn has_left(&self, roster: &Roster) -> bool {
        roster.record(&self.id).is_some_and(|r| {
            r.generation == self.generation && r.liveness.state == MemberState::Left
        })
    }

    /// Whether our record (this generation) lists `actor` as present.
    fn hosts(&self, roster: &Roster, actor: &str) -> bool {
        roster
            .record(&self.id)
            .filter(|r| r.generation == self.generation)
            .and_then(|r| r.actors.get(actor))
            .is_some_and(|e| e.present)
    }

    /// Registers `actor` here; `None` when it is already hosted.
    pub fn add_actor(&self, roster: &Roster, actor: &str) -> Option<ClusterEvent> {
        let hosted = self.hosts(roster, actor);
        (!hosted).then(|| ClusterEvent::ActorAdded {
            node: self.id.clone(),
            generation: self.generation,
            version: self.next_version(roster),
            actor: actor.to_owned(),
        })
    }

    /// Unregisters `actor`; `None` when it is not hosted here.
    pub fn remove_actor(&self, roster: &Roster, actor: &str) -> Option<ClusterEvent> {
        let hosted = self.hosts(roster, actor);
        hosted.then(|| ClusterEvent::ActorRemoved {
            node: self.id.clone(),
            generation: self.generation,
            version: self.next_version(roster),
            actor: actor.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roster::Applied;

    fn me() -> Identity {
        Identity {
            id: NodeId::new("me"),
            generation: 5,
        }
    }

    fn apply_all(r: &mut Roster, evs: &[ClusterEvent]) {
        for e in evs {
            assert_eq!(r.apply(e), Applied::Changed, "{e}");
        }
    }

    #[test]
    fn first_start_announces_everything_in_one_event() {
        let r = Roster::new();
        let evs = me().startup_events(&r, "ws://a:1", &["x".into(), "y".into()]);
        assert_eq!(evs.len(), 1);
        assert!(
            matches!(&evs[0], ClusterEvent::NewNode { version: 1, actors, .. } if actors.len() == 2)
        );
    }

    #[test]
    fn restart_keeps_versions_growing_and_adds_only_what_is_missing() {
        let mut r = Roster::new();
        let evs = me().startup_events(&r, "ws://a:1", &["x".into()]);
        apply_all(&mut r, &evs);
        let add = me().add_actor(&r, "z").unwrap();
        apply_all(&mut r, &[add]);
        assert!(me().add_actor(&r, "z").is_none());
        // Restart on the same address with one more actor: only that actor is new.
        let evs = me().startup_events(&r, "ws://a:1", &["x".into(), "w".into()]);
        assert_eq!(evs.len(), 1);
        assert!(
            matches!(&evs[0], ClusterEvent::ActorAdded { version: 3, actor, .. } if actor == "w")
        );
        apply_all(&mut r, &evs);
        // A new address is re-announced with the next version.
        let evs = me().startup_events(&r, "ws://b:2", &[]);
        assert!(matches!(&evs[0], ClusterEvent::NewNode { version: 4, .. }));
        apply_all(&mut r, &evs);
        assert_eq!(r.member(&me().id).unwrap().actors, vec!["w", "x", "z"]);
        let rm = me().remove_actor(&r, "x").unwrap();
        apply_all(&mut r, &[rm]);
        assert!(me().remove_actor(&r, "x").is_none());
    }

    #[test]
    fn restart_refutes_what_was_said_about_us() {
        let mut r = Roster::new();
        let evs = me().startup_events(&r, "ws://a:1", &[]);
        apply_all(&mut r, &evs);
        apply_all(
            &mut r,
            &[ClusterEvent::NodeDead {
                node: me().id,
                generation: 5,
                incarnation: 3,
            }],
        );
        let evs = me().startup_events(&r, "ws://a:1", &[]);
        apply_all(&mut r, &evs);
        let m = r.member(&me().id).unwrap();
        assert_eq!((m.state, m.incarnation), (MemberState::Alive, 4));
    }
}
