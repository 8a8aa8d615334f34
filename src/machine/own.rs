//! Our own record: the versions we write, changes waiting for durability, and re-assertion
//! when peers hold data of our record that we do not.
//!
//! We are the only writer of our record, so every change takes the next version. A change
//! is applied to the roster only once durable (see the machine's rules); until then it is
//! "pending" here, so a second change right behind it sees it and takes the version after.

use super::MachineConfig;
use crate::event::{ClusterEvent, Lsn, NodeId, Version};
use crate::local::Identity;
use crate::roster::{FastMap, Roster};
use std::collections::{BTreeSet, HashSet};

/// Bytes of actor names per `NewNode` event we write: every event must fit any frame a peer
/// accepts (the smallest cap allowed is [`crate::machine::MIN_FRAME_BYTES`]; a name is at
/// most 1 KiB).
const ANNOUNCEMENT_BYTES: usize = 16 * 1024;

/// Peers remembered as having not known us (one warning each).
const MAX_UNKNOWN_TO: usize = 1024;

pub(super) struct OwnRecord {
    /// Highest version assigned, durable or pending.
    version: Version,
    /// Actors whose state a pending change sets: name -> (present, LSN of that change).
    pending: FastMap<String, (bool, Lsn)>,
    /// Until the cluster's view of our record has been seen once, our digest claims nothing
    /// of it, so peers send all they hold.
    audit: bool,
    unknown_to: HashSet<NodeId>,
}

impl OwnRecord {
    pub(super) fn new(me: &Identity, roster: &Roster) -> Self {
        let version = roster
            .record(&me.id)
            .filter(|r| r.generation == me.generation)
            .map_or(0, |r| r.version);
        OwnRecord {
            version,
            pending: FastMap::default(),
            audit: true,
            unknown_to: HashSet::new(),
        }
    }

    pub(super) fn version(&self) -> Version {
        self.version
    }

    pub(super) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub(super) fn auditing(&self) -> bool {
        self.audit
    }

    pub(super) fn audit(&mut self) {
        self.audit = true;
    }

    pub(super) fn self_synced(&mut self) {
        self.audit = false;
    }

    /// True the first time `peer` is seen not to know us.
    pub(super) fn note_unknown_to(&mut self, peer: &NodeId) -> bool {
        if self.unknown_to.len() >= MAX_UNKNOWN_TO {
            self.unknown_to.clear();
        }
        self.unknown_to.insert(peer.clone())
    }

    fn next(&mut self) -> Version {
        self.version += 1;
        self.version
    }

    /// Our add (`present`) or removal of `actor`, at the next version.
    fn actor_event(&mut self, me: &Identity, actor: String, present: bool) -> ClusterEvent {
        let version = self.next();
        ClusterEvent::actor_change(me.id.clone(), me.generation, version, actor, present)
    }

    /// Whether we host `actor`, counting changes not yet durable.
    fn hosts(&self, me: &Identity, roster: &Roster, actor: &str) -> bool {
        if let Some((present, _)) = self.pending.get(actor) {
            return *present;
        }
        roster
            .record(&me.id)
            .filter(|r| r.generation == me.generation)
            .and_then(|r| r.actors.get(actor))
            .is_some_and(|e| e.present)
    }

    /// Every actor we host, counting changes not yet durable, sorted.
    pub(super) fn hosted(&self, me: &Identity, roster: &Roster) -> BTreeSet<String> {
        let mut all: BTreeSet<String> = roster
            .record(&me.id)
            .filter(|r| r.generation == me.generation)
            .map(|r| r.hosted_actors().map(str::to_owned).collect())
            .unwrap_or_default();
        for (name, (present, _)) in &self.pending {
            if *present {
                all.insert(name.clone());
            } else {
                all.remove(name);
            }
        }
        all
    }

    /// Announcements of `actors` at `addr`, from the next version on, in events that fit.
    pub(super) fn announce(
        &mut self,
        me: &Identity,
        addr: &str,
        actors: BTreeSet<String>,
    ) -> Vec<ClusterEvent> {
        let mut out = Vec::new();
        let mut chunk = BTreeSet::new();
        let mut bytes = 0;
        for actor in actors {
            if !chunk.is_empty() && bytes + actor.len() + 8 > ANNOUNCEMENT_BYTES {
                let v = self.next();
                out.push(new_node(me, v, addr, std::mem::take(&mut chunk)));
                bytes = 0;
            }
            bytes += actor.len() + 8;
            chunk.insert(actor);
        }
        if !chunk.is_empty() || out.is_empty() {
            let v = self.next();
            out.push(new_node(me, v, addr, chunk));
        }
        out
    }

    /// What start-up writes of our record: data events (durable before they leave) and
    /// liveness events.
    pub(super) fn startup(
        &mut self,
        me: &Identity,
        roster: &Roster,
        addr: &str,
        config: &MachineConfig,
    ) -> (Vec<ClusterEvent>, Vec<ClusterEvent>) {
        let given: BTreeSet<String> = config.actors.iter().cloned().collect();
        match roster.record(&me.id) {
            // We left last time: a new generation that carries our actors and our versions
            // on (registered actors stay registered; versions never regress).
            Some(prev) if prev.generation != me.generation => {
                // At the floor too: a crash can lose this new generation's first writes and
                // the next start would write the same generation again.
                self.version = prev.version.max(config.version_floor);
                let mut all: BTreeSet<String> = prev.hosted_actors().map(str::to_owned).collect();
                all.extend(given);
                (self.announce(me, addr, all), Vec::new())
            }
            None => (self.announce(me, addr, given), Vec::new()),
            Some(rec) => {
                // A restart may have lost versions that peers saw (an fsync window under
                // `batch`/`never`, a data dir restored from an older copy): new versions
                // start at a floor taken from the wall clock (see `MachineConfig`), above
                // any an earlier life could have written, so no version is ever reused
                // for other content. What peers hold beyond ours is re-asserted once seen
                // (see `conflicts`).
                self.version = self.version.max(config.version_floor);
                let mut data = Vec::new();
                if rec.addr != addr {
                    data.push(new_node(me, self.next(), addr, BTreeSet::new()));
                }
                for actor in given {
                    if !rec.actors.get(&actor).is_some_and(|e| e.present) {
                        data.push(self.actor_event(me, actor, true));
                    }
                }
                // Every restart says alive one higher: above anything said of us meanwhile,
                // and above the incarnation a peer that reaped us saw us die at.
                let liveness = vec![ClusterEvent::NodeAlive {
                    node: me.id.clone(),
                    generation: me.generation,
                    incarnation: rec.liveness.incarnation + 1,
                }];
                (data, liveness)
            }
        }
    }

    /// Events that add (or remove) `names`, skipping those already in that state; and the
    /// names that change.
    pub(super) fn change_actors(
        &mut self,
        me: &Identity,
        roster: &Roster,
        names: Vec<String>,
        add: bool,
    ) -> (Vec<ClusterEvent>, Vec<String>) {
        let mut seen = HashSet::new();
        let mut events = Vec::new();
        let mut changed = Vec::new();
        for actor in names {
            if !seen.insert(actor.clone()) || self.hosts(me, roster, &actor) == add {
                continue;
            }
            changed.push(actor.clone());
            events.push(self.actor_event(me, actor, add));
        }
        (events, changed)
    }

    /// Our changes handed to the WAL at `lsn`, not yet durable.
    pub(super) fn pending(&mut self, events: &[ClusterEvent], lsn: Lsn) {
        for (actor, present) in events.iter().flat_map(actor_states) {
            self.pending.insert(actor, (present, lsn));
        }
    }

    /// Our changes written at `lsn` became durable and are in the roster now.
    pub(super) fn settled(&mut self, events: &[ClusterEvent], lsn: Lsn) {
        for (actor, _) in events.iter().flat_map(actor_states) {
            // Unless a later change (still pending) set it again.
            if self.pending.get(&actor).is_some_and(|(_, l)| *l <= lsn) {
                self.pending.remove(&actor);
            }
        }
    }

    /// Compares peers' data events about our record with what we hold. `Some((above,
    /// foreign))` when they hold something we do not: the highest such version, and the
    /// actors they list as present that we do not host.
    pub(super) fn conflicts(
        &self,
        me: &Identity,
        roster: &Roster,
        events: &[ClusterEvent],
    ) -> Option<(Version, BTreeSet<String>)> {
        let rec = roster
            .record(&me.id)
            .filter(|r| r.generation == me.generation);
        let ours = |actor: &str| rec.and_then(|r| r.actors.get(actor)).copied();
        let mut above = 0;
        let mut foreign = BTreeSet::new();
        // Every actor named in a conflicting event: those we do not host get a removal of
        // ours above it (present there: a phantom to remove; absent: a tombstone to match).
        let mut conflict = |v: Version, actor: Option<(&str, bool)>| {
            above = above.max(v);
            if let Some((a, _)) = actor {
                foreign.insert(a.to_owned());
            }
        };
        for e in events {
            match e {
                ClusterEvent::NewNode {
                    version,
                    addr,
                    actors,
                    ..
                } => {
                    let addr_ok = rec.is_some_and(|r| {
                        r.addr_version > *version || (r.addr_version == *version && r.addr == *addr)
                    });
                    if !addr_ok {
                        conflict(*version, None);
                    }
                    for a in actors {
                        let ok = ours(a).is_some_and(|o| {
                            o.version > *version || (o.version == *version && o.present)
                        });
                        if !ok {
                            conflict(*version, Some((a, true)));
                        }
                    }
                }
                ClusterEvent::ActorAdded { version, actor, .. }
                | ClusterEvent::ActorRemoved { version, actor, .. } => {
                    let present = matches!(e, ClusterEvent::ActorAdded { .. });
                    let ok = ours(actor).is_some_and(|o| {
                        o.version > *version || (o.version == *version && o.present == present)
                    });
                    if !ok {
                        conflict(*version, Some((actor, present)));
                    }
                }
                _ => {}
            }
        }
        foreign.retain(|a| !self.hosts(me, roster, a));
        (above > 0).then_some((above, foreign))
    }

    /// Our whole record again, from a version above `above`: removals of the `foreign`
    /// actors peers list for us, then our address and every actor we host.
    pub(super) fn reassert(
        &mut self,
        me: &Identity,
        roster: &Roster,
        addr: &str,
        above: Version,
        foreign: BTreeSet<String>,
    ) -> Vec<ClusterEvent> {
        self.version = self.version.max(above);
        let mut out = Vec::new();
        for actor in foreign {
            out.push(self.actor_event(me, actor, false));
        }
        let hosted = self.hosted(me, roster);
        out.extend(self.announce(me, addr, hosted));
        out
    }
}

/// The actor states an event of our own sets.
fn actor_states(e: &ClusterEvent) -> Vec<(String, bool)> {
    match e {
        ClusterEvent::NewNode { actors, .. } => actors.iter().map(|a| (a.clone(), true)).collect(),
        ClusterEvent::ActorAdded { actor, .. } => vec![(actor.clone(), true)],
        ClusterEvent::ActorRemoved { actor, .. } => vec![(actor.clone(), false)],
        _ => Vec::new(),
    }
}

fn new_node(me: &Identity, version: Version, addr: &str, actors: BTreeSet<String>) -> ClusterEvent {
    ClusterEvent::NewNode {
        node: me.id.clone(),
        generation: me.generation,
        version,
        addr: addr.to_owned(),
        actors,
    }
}
