//! Our own record: the versions we write, changes waiting for durability, and re-assertion
//! when peers hold data of our record that we do not.
//!
//! We are the only writer of our record, so every change takes the next version. A change
//! is applied to the roster only once durable (see the machine's rules); until then it is
//! "pending" here, so a second change right behind it sees it and takes the version after.

use super::MachineConfig;
use crate::event::{ClusterEvent, Lsn, NodeId, Version};
use crate::health::{ActorHealth, Health, HealthError};
use crate::local::Identity;
use crate::roster::{FastMap, NodeRecord, Roster};
use crate::tags::{self, TagError};
use std::collections::{BTreeMap, BTreeSet, HashSet};

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
    /// Tags a pending change sets (`None`: unsets), with the LSN of that change.
    pending_tags: FastMap<String, (Option<String>, Lsn)>,
    /// Actor health a pending change sets, with the LSN of that change.
    pending_health: FastMap<String, (ActorHealth, Lsn)>,
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
            pending_tags: FastMap::default(),
            pending_health: FastMap::default(),
            audit: true,
            unknown_to: HashSet::new(),
        }
    }

    pub(super) fn version(&self) -> Version {
        self.version
    }

    pub(super) fn pending_len(&self) -> usize {
        self.pending.len() + self.pending_tags.len() + self.pending_health.len()
    }

    /// Our record in this generation, as durable.
    fn record<'r>(&self, me: &Identity, roster: &'r Roster) -> Option<&'r NodeRecord> {
        roster
            .record(&me.id)
            .filter(|r| r.generation == me.generation)
    }

    /// Our tags, counting changes not yet durable.
    pub(super) fn tags(&self, me: &Identity, roster: &Roster) -> BTreeMap<String, String> {
        let mut all: BTreeMap<String, String> = self
            .record(me, roster)
            .map(|r| {
                r.current_tags()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        for (k, (v, _)) in &self.pending_tags {
            match v {
                Some(v) => all.insert(k.clone(), v.clone()),
                None => all.remove(k),
            };
        }
        all
    }

    /// The health of an actor we host, counting changes not yet durable (a pending add or
    /// removal of the actor resets it, a pending health change written with or after it
    /// sets it); `None` when we do not host it.
    pub(super) fn health(
        &self,
        me: &Identity,
        roster: &Roster,
        actor: &str,
    ) -> Option<ActorHealth> {
        if !self.hosts(me, roster, actor) {
            return None;
        }
        let actor_lsn = self.pending.get(actor).map(|(_, l)| *l);
        match self.pending_health.get(actor) {
            Some((h, l)) if actor_lsn.is_none_or(|a| *l >= a) => return Some(h.clone()),
            _ => {}
        }
        if actor_lsn.is_some() {
            return Some(ActorHealth::default());
        }
        self.record(me, roster)?.actor_health(actor)
    }

    /// Health we set explicitly (not the default) for every actor we host.
    fn set_health_entries(&self, me: &Identity, roster: &Roster) -> Vec<(String, ActorHealth)> {
        self.hosted(me, roster)
            .into_iter()
            .filter_map(|a| {
                let h = self.health(me, roster, &a)?;
                let explicit = self.pending_health.contains_key(&a)
                    || self
                        .record(me, roster)
                        .is_some_and(|r| r.health.contains_key(&a));
                explicit.then_some((a, h))
            })
            .collect()
    }

    fn tag_event(&mut self, me: &Identity, key: String, value: Option<String>) -> ClusterEvent {
        ClusterEvent::TagSet {
            node: me.id.clone(),
            generation: me.generation,
            version: self.next(),
            key,
            value,
        }
    }

    fn health_event(&mut self, me: &Identity, actor: String, h: ActorHealth) -> ClusterEvent {
        ClusterEvent::HealthSet {
            node: me.id.clone(),
            generation: me.generation,
            version: self.next(),
            actor,
            health: h.status,
            note: h.note,
        }
    }

    /// Events that set `tags` (checked, and the resulting set within the limits), skipping
    /// those already set so; and the keys that change.
    pub(super) fn set_tags(
        &mut self,
        me: &Identity,
        roster: &Roster,
        given: Vec<(String, String)>,
    ) -> Result<(Vec<ClusterEvent>, Vec<String>), TagError> {
        for (k, v) in &given {
            tags::validate_key(k)?;
            tags::validate_value(k, v)?;
        }
        let current = self.tags(me, roster);
        let mut after = current.clone();
        let mut wanted = BTreeMap::new();
        for (k, v) in given {
            after.insert(k.clone(), v.clone());
            wanted.insert(k, v);
        }
        tags::check_totals(after.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        let mut events = Vec::new();
        let mut changed = Vec::new();
        for (k, v) in wanted {
            if current.get(&k) != Some(&v) {
                changed.push(k.clone());
                events.push(self.tag_event(me, k, Some(v)));
            }
        }
        Ok((events, changed))
    }

    /// Events that unset the `keys` we carry; and the keys that change.
    pub(super) fn unset_tags(
        &mut self,
        me: &Identity,
        roster: &Roster,
        keys: Vec<String>,
    ) -> Result<(Vec<ClusterEvent>, Vec<String>), TagError> {
        for k in &keys {
            tags::validate_key(k)?;
        }
        let current = self.tags(me, roster);
        let keys: BTreeSet<String> = keys.into_iter().collect();
        let mut events = Vec::new();
        let mut changed = Vec::new();
        for k in keys.into_iter().filter(|k| current.contains_key(k)) {
            changed.push(k.clone());
            events.push(self.tag_event(me, k, None));
        }
        Ok((events, changed))
    }

    /// The event that sets an actor's health, if it changes it.
    pub(super) fn set_health(
        &mut self,
        me: &Identity,
        roster: &Roster,
        actor: &str,
        health: Health,
        note: String,
    ) -> Result<Option<ClusterEvent>, HealthError> {
        crate::health::validate_note(&note)?;
        let Some(current) = self.health(me, roster, actor) else {
            return Err(HealthError::NotHosted(actor.to_owned()));
        };
        let wanted = ActorHealth {
            status: health,
            note,
        };
        if current == wanted {
            return Ok(None);
        }
        Ok(Some(self.health_event(me, actor.to_owned(), wanted)))
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
                // Tags carry over too (health starts over: passing).
                let mut tags: BTreeMap<String, String> = prev
                    .current_tags()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                tags.extend(config.tags.clone());
                let mut data = self.announce(me, addr, all);
                for (k, v) in tags {
                    data.push(self.tag_event(me, k, Some(v)));
                }
                (data, Vec::new())
            }
            None => {
                let mut data = self.announce(me, addr, given);
                for (k, v) in config.tags.clone() {
                    data.push(self.tag_event(me, k, Some(v)));
                }
                (data, Vec::new())
            }
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
                for (k, v) in config.tags.clone() {
                    if rec.tags.get(&k).and_then(|e| e.value.as_ref()) != Some(&v) {
                        data.push(self.tag_event(me, k, Some(v)));
                    }
                }
                // Every restart says alive one higher: above anything said of us meanwhile,
                // and above the incarnation a peer that reaped us saw us die at.
                // At most the highest peers accept: accused there, the node then outgrows
                // this generation (`Machine::outgrow`).
                let liveness = vec![ClusterEvent::NodeAlive {
                    node: me.id.clone(),
                    generation: me.generation,
                    incarnation: rec
                        .liveness
                        .incarnation
                        .saturating_add(1)
                        .min(super::plausible::MAX_INCARNATION),
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
        for e in events {
            match e {
                ClusterEvent::TagSet { key, value, .. } => {
                    self.pending_tags.insert(key.clone(), (value.clone(), lsn));
                }
                ClusterEvent::HealthSet {
                    actor,
                    health,
                    note,
                    ..
                } => {
                    let h = ActorHealth {
                        status: *health,
                        note: note.clone(),
                    };
                    self.pending_health.insert(actor.clone(), (h, lsn));
                }
                _ => {}
            }
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
        for e in events {
            match e {
                ClusterEvent::TagSet { key, .. }
                    if self.pending_tags.get(key).is_some_and(|(_, l)| *l <= lsn) =>
                {
                    self.pending_tags.remove(key);
                }
                ClusterEvent::HealthSet { actor, .. }
                    if self
                        .pending_health
                        .get(actor)
                        .is_some_and(|(_, l)| *l <= lsn) =>
                {
                    self.pending_health.remove(actor);
                }
                _ => {}
            }
        }
    }

    /// Compares peers' data events about our record with what we hold. `Some` when they
    /// hold something we do not: the highest such version, the actors they list (as present,
    /// or with a health) that we do not host, and the tags they list that we do not carry.
    pub(super) fn conflicts(
        &self,
        me: &Identity,
        roster: &Roster,
        events: &[ClusterEvent],
    ) -> Option<Conflict> {
        let rec = self.record(me, roster);
        let ours = |actor: &str| rec.and_then(|r| r.actors.get(actor)).copied();
        let mut c = Conflict::default();
        // Every actor named in a conflicting event: those we do not host get a removal of
        // ours above it (present there: a phantom to remove; absent: a tombstone to match).
        let conflict = |c: &mut Conflict, v: Version, actor: Option<&str>| {
            c.above = c.above.max(v);
            if let Some(a) = actor {
                c.foreign.insert(a.to_owned());
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
                        conflict(&mut c, *version, None);
                    }
                    for a in actors {
                        let ok = ours(a).is_some_and(|o| {
                            o.version > *version || (o.version == *version && o.present)
                        });
                        if !ok {
                            conflict(&mut c, *version, Some(a));
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
                        conflict(&mut c, *version, Some(actor));
                    }
                }
                ClusterEvent::TagSet {
                    version,
                    key,
                    value,
                    ..
                } => {
                    let ok = rec.and_then(|r| r.tags.get(key)).is_some_and(|o| {
                        o.version > *version || (o.version == *version && o.value == *value)
                    });
                    if !ok {
                        conflict(&mut c, *version, None);
                        c.foreign_tags.insert(key.clone());
                    }
                }
                ClusterEvent::HealthSet {
                    version,
                    actor,
                    health,
                    note,
                    ..
                } => {
                    let superseded = ours(actor).is_some_and(|o| o.version >= *version);
                    let same = rec.and_then(|r| r.health.get(actor)).is_some_and(|o| {
                        o.version > *version
                            || (o.version == *version && o.health == *health && o.note == *note)
                    });
                    if !superseded && !same {
                        conflict(&mut c, *version, Some(actor));
                    }
                }
                _ => {}
            }
        }
        c.foreign.retain(|a| !self.hosts(me, roster, a));
        let ours = self.tags(me, roster);
        c.foreign_tags.retain(|k| !ours.contains_key(k));
        (c.above > 0).then_some(c)
    }

    /// Our whole record again, from a version above `c.above`: removals of the foreign
    /// actors and tags peers list for us, then our address, every actor we host, our tags
    /// and the health we set (the new announcement of an actor resets its health).
    pub(super) fn reassert(
        &mut self,
        me: &Identity,
        roster: &Roster,
        addr: &str,
        c: Conflict,
    ) -> Vec<ClusterEvent> {
        self.version = self.version.max(c.above);
        let mut out = Vec::new();
        for actor in c.foreign {
            out.push(self.actor_event(me, actor, false));
        }
        for key in c.foreign_tags {
            out.push(self.tag_event(me, key, None));
        }
        out.extend(self.announce_all(me, roster, addr));
        out
    }

    /// Every actor we host at `addr`, then our tags and the health we set, all at new
    /// versions (after a re-assertion, or under a new generation of ours).
    pub(super) fn announce_all(
        &mut self,
        me: &Identity,
        roster: &Roster,
        addr: &str,
    ) -> Vec<ClusterEvent> {
        let content = self.content(me, roster);
        self.announce_content(me, addr, content)
    }

    /// What our record holds (counting changes not yet durable), to announce again.
    pub(super) fn content(&self, me: &Identity, roster: &Roster) -> Content {
        Content {
            actors: self.hosted(me, roster),
            tags: self.tags(me, roster),
            health: self.set_health_entries(me, roster),
        }
    }

    /// `content` announced at new versions, as `me` (maybe a new generation of ours).
    pub(super) fn announce_content(
        &mut self,
        me: &Identity,
        addr: &str,
        content: Content,
    ) -> Vec<ClusterEvent> {
        let mut out = self.announce(me, addr, content.actors);
        for (k, v) in content.tags {
            out.push(self.tag_event(me, k, Some(v)));
        }
        for (a, h) in content.health {
            out.push(self.health_event(me, a, h));
        }
        out
    }
}

/// Our record's content: actors hosted, tags, and the health set explicitly.
pub(super) struct Content {
    actors: BTreeSet<String>,
    tags: BTreeMap<String, String>,
    health: Vec<(String, ActorHealth)>,
}

/// What peers hold of our record that we do not (see [`OwnRecord::conflicts`]).
#[derive(Debug, Default)]
pub(super) struct Conflict {
    pub(super) above: Version,
    pub(super) foreign: BTreeSet<String>,
    pub(super) foreign_tags: BTreeSet<String>,
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
