//! The roster and its merge rule: pure, deterministic, no IO.
//!
//! Each node's record is a join-semilattice, so applying any set of events in any order,
//! with duplicates, ends in the same roster (the property tests below check exactly that):
//!
//! * **generation**: the highest wins; a higher one resets the record (the node started over).
//! * **data** (address, actors, tags, actor health): each entry is last-writer-wins by the
//!   owner's `version`. The owner is the only writer, so two different values never share a
//!   version; removed actors and tags stay as versioned tombstones within the generation so
//!   an old `ActorAdded` or `TagSet` cannot bring them back. An actor's health entry is kept
//!   only while it is newer than the actor's own entry: an add or removal of the actor
//!   supersedes it (a re-added actor starts `passing`), and both are maxima, so the rule
//!   holds in any order.
//! * **liveness**: SWIM's incarnation rules are a total order on `(left, incarnation, rank)`
//!   with `alive < suspect < dead`; the merge keeps the maximum. That yields exactly
//!   "alive(i) beats suspect(j) iff i > j, suspect(i) beats alive(j) iff i >= j, dead(i) beats
//!   both iff i >= j", and `left` is final for the generation.
//!
//! `apply` reports `Changed` only when the join moved the state; only those events are logged
//! and re-gossiped, which is what stops message storms.

use crate::event::{ClusterEvent, Generation, Incarnation, MemberState, NodeId, Version};
use crate::health::{ActorHealth, Health};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Fast hashing for the hot maps; seeded per process, so iteration order is never relied on.
mod nodes;

pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Whether an event moved the roster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Changed,
    Stale,
}

/// Liveness of a member; merged by taking the maximum of [`Liveness::order_key`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    pub state: MemberState,
    pub incarnation: Incarnation,
}

impl Liveness {
    pub const INITIAL: Liveness = Liveness {
        state: MemberState::Alive,
        incarnation: 0,
    };

    /// The SWIM precedence as one total order (see the module doc).
    fn order_key(self) -> (bool, Incarnation, u8) {
        let rank = match self.state {
            MemberState::Alive => 0,
            MemberState::Suspect => 1,
            MemberState::Dead => 2,
            MemberState::Left => 3,
        };
        (self.state == MemberState::Left, self.incarnation, rank)
    }

    /// True when `self` takes precedence over `other`.
    pub fn beats(self, other: Liveness) -> bool {
        self.order_key() > other.order_key()
    }
}

/// One actor name on one node, versioned so removals win over older adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActorEntry {
    pub version: Version,
    pub present: bool,
}

/// One tag of a node, versioned; `value: None` is a removed tag's tombstone.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TagEntry {
    pub version: Version,
    pub value: Option<String>,
}

/// The health of one actor on one node, versioned.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HealthEntry {
    pub version: Version,
    pub health: Health,
    pub note: String,
}

/// Which hosts `locate` returns: all `tags` must match; critical ones only on request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocateQuery {
    pub include_critical: bool,
    pub tags: Vec<(String, String)>,
}

/// Everything known about one node (one generation of it).
///
/// Besides the content, a record keeps `known`: every owner version up to it has been seen
/// (or superseded). Gossip can deliver versions out of order and lose some, so the highest
/// version seen says nothing about completeness; anti-entropy digests carry `known`, and a
/// peer sends everything above it. Equality compares content only.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeRecord {
    pub generation: Generation,
    /// Highest owner version seen in any entry of this generation.
    pub version: Version,
    /// The address others dial; empty until the node's `NewNode` arrives.
    pub addr: String,
    pub addr_version: Version,
    /// Hash map, not B-tree: with many actors per node the merge is dominated by key
    /// comparisons otherwise (measured: 2x slower replay). Unordered; views sort.
    pub actors: FastMap<String, ActorEntry>,
    pub liveness: Liveness,
    /// All owner versions `<= known` are accounted for.
    #[serde(default)]
    pub known: Version,
    /// Tags by key, tombstones included. Sorted: few per node, printed in order.
    #[serde(default)]
    pub tags: BTreeMap<String, TagEntry>,
    /// Health by actor, only where newer than the actor's own entry (see the module doc);
    /// an actor without one is passing.
    #[serde(default)]
    pub health: BTreeMap<String, HealthEntry>,
    /// Versions seen above `known + 1`, waiting for the gap to close. Bookkeeping only:
    /// losing it costs a redundant resend, never correctness.
    #[serde(skip)]
    pending: BTreeSet<Version>,
    /// A fingerprint of the content (address and every actor entry), kept as entries change:
    /// two peers whose watermarks are stuck below a gap (its owner is gone, or restarted
    /// above the gap) but whose contents agree have nothing to exchange. Derived.
    #[serde(skip)]
    sum: u64,
}

/// FNV-1a, 64 bits: the same on every node and every build (a fingerprint compared across
/// the cluster cannot use a per-process seeded hasher).
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // MurmurHash3's finaliser: FNV alone is too linear for sums of entries to stay apart.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// What one digest entry adds to a roster fingerprint: xxh3 (the same on every node and
/// build) of the id, generation, liveness and content sum. Not the watermark `known`: two
/// peers whose contents agree have nothing to exchange even when their watermarks differ
/// (stuck below a gap whose owner is gone), and the watermark must not keep them apart.
pub fn entry_hash(id: &NodeId, d: &NodeDigest) -> u64 {
    // The fixed fields first, then the id: no two entries hash the same bytes. On the
    // stack for usual ids (this runs twice per applied event).
    let mut fixed = [0u8; 25];
    fixed[..8].copy_from_slice(&d.generation.to_le_bytes());
    fixed[8] = d.liveness.state as u8;
    fixed[9..17].copy_from_slice(&d.liveness.incarnation.to_le_bytes());
    fixed[17..].copy_from_slice(&d.sum.to_le_bytes());
    let id = id.as_str().as_bytes();
    let mut buf = [0u8; 128];
    if id.len() <= buf.len() - fixed.len() {
        buf[..fixed.len()].copy_from_slice(&fixed);
        buf[fixed.len()..fixed.len() + id.len()].copy_from_slice(id);
        xxhash_rust::xxh3::xxh3_64(&buf[..fixed.len() + id.len()])
    } else {
        xxhash_rust::xxh3::xxh3_64(&[&fixed[..], id].concat())
    }
}

/// The roster fingerprint of a digest, computed from scratch (what
/// [`Roster::digest_fingerprint`] keeps up to date).
pub fn roster_fingerprint<'a>(
    digest: impl IntoIterator<Item = (&'a NodeId, &'a NodeDigest)>,
) -> u64 {
    digest
        .into_iter()
        .fold(0u64, |acc, (id, d)| acc.wrapping_add(entry_hash(id, d)))
}

fn entry_sum(actor: &str, e: ActorEntry) -> u64 {
    fnv(&[
        actor.as_bytes(),
        &e.version.to_le_bytes(),
        &[u8::from(e.present)],
    ])
}

fn tag_sum(key: &str, e: &TagEntry) -> u64 {
    let (set, value) = match &e.value {
        Some(v) => (1u8, v.as_str()),
        None => (0, ""),
    };
    fnv(&[
        b"@tag",
        key.as_bytes(),
        &e.version.to_le_bytes(),
        &[set],
        value.as_bytes(),
    ])
}

fn health_sum(actor: &str, e: &HealthEntry) -> u64 {
    fnv(&[
        b"@health",
        actor.as_bytes(),
        &e.version.to_le_bytes(),
        e.health.as_str().as_bytes(),
        e.note.as_bytes(),
    ])
}

fn addr_sum(addr: &str, version: Version) -> u64 {
    fnv(&[b"@addr", addr.as_bytes(), &version.to_le_bytes()])
}

impl PartialEq for NodeRecord {
    fn eq(&self, o: &Self) -> bool {
        (
            self.generation,
            self.version,
            &self.addr,
            self.addr_version,
            &self.actors,
            self.liveness,
            &self.tags,
            &self.health,
        ) == (
            o.generation,
            o.version,
            &o.addr,
            o.addr_version,
            &o.actors,
            o.liveness,
            &o.tags,
            &o.health,
        )
    }
}
impl Eq for NodeRecord {}

/// Most out-of-order versions remembered per node before anti-entropy must close the gap.
const MAX_PENDING: usize = 1024;

impl NodeRecord {
    fn empty(generation: Generation) -> Self {
        NodeRecord {
            generation,
            version: 0,
            addr: String::new(),
            addr_version: 0,
            actors: FastMap::default(),
            liveness: Liveness::INITIAL,
            known: 0,
            tags: BTreeMap::new(),
            health: BTreeMap::new(),
            pending: BTreeSet::new(),
            sum: 0,
        }
    }

    /// The content fingerprint (see the field).
    pub fn fingerprint(&self) -> u64 {
        self.sum
    }

    /// This record's anti-entropy digest entry.
    pub fn digest(&self) -> NodeDigest {
        NodeDigest {
            generation: self.generation,
            known: self.known,
            liveness: self.liveness,
            sum: self.sum,
        }
    }

    /// Recomputes the fingerprint (after loading a record from a snapshot).
    fn resum(&mut self) {
        let mut sum = if self.is_announced() {
            addr_sum(&self.addr, self.addr_version)
        } else {
            0
        };
        for (a, e) in &self.actors {
            sum = sum.wrapping_add(entry_sum(a, *e));
        }
        for (k, e) in &self.tags {
            sum = sum.wrapping_add(tag_sum(k, e));
        }
        for (a, e) in &self.health {
            sum = sum.wrapping_add(health_sum(a, e));
        }
        self.sum = sum;
    }

    /// Replaces (or inserts) an actor entry, keeping the fingerprint; returns the old one.
    /// A health entry of the actor older than the new entry is superseded and dropped.
    fn set_actor(&mut self, actor: &str, entry: ActorEntry) -> Option<ActorEntry> {
        self.sum = self.sum.wrapping_add(entry_sum(actor, entry));
        let old = match self.actors.get_mut(actor) {
            Some(cur) => Some(std::mem::replace(cur, entry)),
            None => {
                self.actors.insert(actor.to_owned(), entry);
                None
            }
        };
        if let Some(o) = old {
            self.sum = self.sum.wrapping_sub(entry_sum(actor, o));
        }
        if self
            .health
            .get(actor)
            .is_some_and(|h| h.version <= entry.version)
        {
            let h = self.health.remove(actor).expect("checked");
            self.sum = self.sum.wrapping_sub(health_sum(actor, &h));
        }
        old
    }

    /// Joins a tag entry; true if it moved.
    fn merge_tag(&mut self, key: &str, entry: TagEntry) -> bool {
        if self.tags.get(key).is_some_and(|cur| *cur >= entry) {
            return false;
        }
        self.sum = self.sum.wrapping_add(tag_sum(key, &entry));
        if let Some(old) = self.tags.insert(key.to_owned(), entry) {
            self.sum = self.sum.wrapping_sub(tag_sum(key, &old));
        }
        true
    }

    /// Joins an actor's health entry; true if it moved. Stale when the actor's own entry
    /// is as new (an add or removal after it supersedes it).
    fn merge_health(&mut self, actor: &str, entry: HealthEntry) -> bool {
        if self
            .actors
            .get(actor)
            .is_some_and(|a| a.version >= entry.version)
            || self.health.get(actor).is_some_and(|cur| *cur >= entry)
        {
            return false;
        }
        self.sum = self.sum.wrapping_add(health_sum(actor, &entry));
        if let Some(old) = self.health.insert(actor.to_owned(), entry) {
            self.sum = self.sum.wrapping_sub(health_sum(actor, &old));
        }
        true
    }

    /// The node's tags (tombstones left out).
    pub fn current_tags(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tags
            .iter()
            .filter_map(|(k, e)| e.value.as_deref().map(|v| (k.as_str(), v)))
    }

    /// The health of a hosted actor (passing with no note unless set); `None` when the
    /// actor is not hosted here.
    pub fn actor_health(&self, actor: &str) -> Option<ActorHealth> {
        if !self.actors.get(actor).is_some_and(|e| e.present) {
            return None;
        }
        Some(match self.health.get(actor) {
            Some(h) => ActorHealth {
                status: h.health,
                note: h.note.clone(),
            },
            None => ActorHealth::default(),
        })
    }

    fn health_rank(&self, actor: &str) -> Health {
        self.health.get(actor).map_or(Health::Passing, |h| h.health)
    }

    /// Accounts for owner version `v` (applied now, or already superseded).
    fn note_version(&mut self, v: Version) {
        self.version = self.version.max(v);
        if v == self.known + 1 {
            self.known = v;
            while self.pending.remove(&(self.known + 1)) {
                self.known += 1;
            }
        } else if v > self.known + 1 && self.pending.len() < MAX_PENDING {
            self.pending.insert(v);
        }
    }

    /// A peer sent everything it had above `since`, and it had all versions up to `upto`.
    fn note_coverage(&mut self, since: Version, upto: Version) {
        if self.known >= since && upto > self.known {
            self.known = upto;
            self.version = self.version.max(upto);
            self.pending = self.pending.split_off(&upto.saturating_add(1));
            while self.pending.remove(&(self.known + 1)) {
                self.known += 1;
            }
        }
    }

    /// Whether `actor` is currently hosted here.
    pub fn hosts(&self, actor: &str) -> bool {
        self.actors.get(actor).is_some_and(|e| e.present)
    }

    /// Names of the actors currently hosted (tombstones left out), in no particular order.
    pub fn hosted_actors(&self) -> impl Iterator<Item = &str> {
        self.actors
            .iter()
            .filter(|(_, e)| e.present)
            .map(|(name, _)| name.as_str())
    }

    /// A node is listed once its own announcement (address) has arrived.
    pub fn is_announced(&self) -> bool {
        self.addr_version > 0
    }

    /// The slot of [`Roster::count_by_state`] this record counts in, if any.
    fn tally(&self) -> Option<usize> {
        self.is_announced().then_some(self.liveness.state as usize)
    }

    /// Joins an actor entry; true if it moved.
    fn merge_actor(&mut self, actor: &str, entry: ActorEntry) -> bool {
        match self.actors.get(actor) {
            Some(cur) if *cur >= entry => false,
            _ => {
                self.set_actor(actor, entry);
                true
            }
        }
    }

    fn merge_addr(&mut self, version: Version, addr: &str) -> bool {
        if (version, addr) > (self.addr_version, self.addr.as_str()) {
            if self.is_announced() {
                self.sum = self
                    .sum
                    .wrapping_sub(addr_sum(&self.addr, self.addr_version));
            }
            self.addr_version = version;
            self.addr = addr.to_owned();
            self.sum = self.sum.wrapping_add(addr_sum(addr, version));
            true
        } else {
            false
        }
    }
}

/// A read-only view of one member, the shape `members --json` prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    pub addr: String,
    pub state: MemberState,
    pub actors: Vec<String>,
    pub incarnation: Incarnation,
    pub generation: Generation,
    pub version: Version,
    /// The node's tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// The health of each hosted actor.
    #[serde(default)]
    pub health: BTreeMap<String, ActorHealth>,
}

/// What a peer knows of one node, for anti-entropy: compare, then send only what it lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDigest {
    pub generation: Generation,
    /// The completeness watermark (`NodeRecord::known`), not the highest version seen.
    pub known: Version,
    pub liveness: Liveness,
    /// The content fingerprint ([`NodeRecord::fingerprint`]); 0 from peers that predate it.
    #[serde(default)]
    pub sum: u64,
}

/// The cluster roster: node records plus a derived actor index for `locate`.
///
/// Records sit behind `Arc` and are copied on write: a clone of the roster (the compaction
/// snapshot, taken under the node's lock; a simulation of thousands of nodes that start
/// from the same view) shares every record it has not changed since; only the actor index
/// is copied.
#[derive(Clone, Debug)]
pub struct Roster {
    /// Sorted by id ([`nodes::Nodes`]): a random member is one index away (gossip target
    /// sampling); a new member moves the entries after it, which is rare next to lookups.
    nodes: nodes::Nodes,
    /// actor -> nodes whose record lists it as present (any liveness). Derived; not kept
    /// up to date while a [`RosterBuilder`] replays a log.
    actor_index: FastMap<String, BTreeSet<NodeId>>,
    indexed: bool,
    /// Reaped tombstones: events of these generations (or older) are stale, so a peer that
    /// has not reaped yet cannot bring them back, with one exception: the member itself,
    /// alive again above the incarnation it died at (see [`Roster::apply`]). Local
    /// bookkeeping, kept in memory only; the machine prunes it ([`Roster::unforget`]).
    forgotten: FastMap<NodeId, (Generation, Liveness)>,
    /// Announced records by state (alive, suspect, dead, left), kept as records change:
    /// the retransmit budget asks for the alive count on every received batch.
    counts: [usize; 4],
    /// The roster fingerprint ([`Roster::digest_fingerprint`]): the wrapping sum of
    /// [`entry_hash`] over every record, kept as records change (O(1) per change).
    digest_sum: u64,
}

impl Roster {
    /// Gives back spare capacity (a map grown by doubling, or cloned: a clone reserves as
    /// much as its original's table holds). One entry per member on every node adds up.
    pub fn shrink_to_fit(&mut self) {
        self.nodes.shrink_to_fit();
        self.actor_index.shrink_to_fit();
        self.forgotten.shrink_to_fit();
    }
}

impl Default for Roster {
    fn default() -> Self {
        Roster {
            nodes: Default::default(),
            actor_index: FastMap::default(),
            indexed: true,
            forgotten: FastMap::default(),
            counts: [0; 4],
            digest_sum: 0,
        }
    }
}

/// Replays many events into a roster without maintaining the actor index per event, then
/// builds the index once: recovery is bound by `apply`, and the index is most of its cost.
pub struct RosterBuilder {
    roster: Roster,
}

impl RosterBuilder {
    pub fn new(mut roster: Roster) -> Self {
        roster.indexed = false;
        roster.actor_index.clear();
        RosterBuilder { roster }
    }

    pub fn apply(&mut self, event: &ClusterEvent) -> Applied {
        self.roster.apply(event)
    }

    /// The roster with its index rebuilt (and no spare capacity: replay grew it by
    /// doubling).
    pub fn finish(mut self) -> Roster {
        self.roster.shrink_to_fit();
        self.roster.indexed = true;
        let records: Vec<(NodeId, Arc<NodeRecord>)> = self
            .roster
            .nodes
            .iter()
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect();
        for (id, rec) in records {
            self.roster.index_add(&id, &rec);
        }
        self.roster
    }
}

impl PartialEq for Roster {
    fn eq(&self, other: &Self) -> bool {
        self.nodes == other.nodes
    }
}
impl Eq for Roster {}

impl Roster {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a roster from stored records (a snapshot).
    pub fn from_records(records: impl IntoIterator<Item = (NodeId, NodeRecord)>) -> Self {
        let mut roster = Roster::new();
        for (id, mut rec) in records {
            rec.resum();
            roster.index_add(&id, &rec);
            roster.recount(None, rec.tally());
            let before = roster.entry_hash(&id);
            let hash = entry_hash(&id, &rec.digest());
            if let Some(old) = roster.nodes.insert(id, Arc::new(rec)) {
                roster.recount(old.tally(), None);
            }
            roster.digest_sum = roster.digest_sum.wrapping_sub(before).wrapping_add(hash);
        }
        roster
    }

    fn recount(&mut self, before: Option<usize>, after: Option<usize>) {
        if before != after {
            if let Some(b) = before {
                self.counts[b] -= 1;
            }
            if let Some(a) = after {
                self.counts[a] += 1;
            }
        }
    }

    /// Merges one event. Pure: the same roster and event always give the same result.
    pub fn apply(&mut self, event: &ClusterEvent) -> Applied {
        let id = event.node();
        let before = self.entry_hash(id);
        let applied = self.merge(event);
        self.rehash(id, before);
        applied
    }

    /// [`Roster::apply`] without the fingerprint upkeep.
    fn merge(&mut self, event: &ClusterEvent) -> Applied {
        let id = event.node();
        let generation = event.generation();
        if let Some(&(g, died)) = self.forgotten.get(id) {
            // A reaped member back in the same generation (a crash restart after its tombstone
            // expired) is welcome once it says it is alive above the incarnation it died at:
            // only the member itself raises its incarnation, so no stale echo can do that.
            let returns = generation == g
                && died.state == MemberState::Dead
                && matches!(event, ClusterEvent::NodeAlive { incarnation, .. } if *incarnation > died.incarnation);
            if generation < g || (generation == g && !returns) {
                return Applied::Stale;
            }
            self.forgotten.remove(id);
        }
        let current_generation = self.nodes.get(id).map(|r| r.generation);
        match current_generation {
            Some(g) if generation < g => return Applied::Stale,
            Some(g) if generation == g => {}
            _ => {
                // Unknown node, or it started over: a fresh record for this generation.
                if let Some(old) = self.nodes.remove(id) {
                    self.index_remove(id, &old);
                    self.recount(old.tally(), None);
                }
                self.nodes
                    .insert(id.clone(), Arc::new(NodeRecord::empty(generation)));
                self.merge_into(event);
                return Applied::Changed;
            }
        }
        if self.merge_into(event) {
            Applied::Changed
        } else {
            Applied::Stale
        }
    }

    /// Joins `event` into the record of its node, which exists with the same generation.
    fn merge_into(&mut self, event: &ClusterEvent) -> bool {
        let id = event.node();
        let shared = self.nodes.get_mut(id).expect("record exists");
        match event {
            ClusterEvent::NewNode {
                version,
                addr,
                actors,
                ..
            } => {
                let rec = Arc::make_mut(shared);
                let before = rec.tally();
                let mut changed = rec.merge_addr(*version, addr);
                let entry = ActorEntry {
                    version: *version,
                    present: true,
                };
                let mut added = Vec::new();
                for actor in actors {
                    let was = rec.actors.get(actor).is_some_and(|e| e.present);
                    if rec.merge_actor(actor, entry) {
                        changed = true;
                        if !was {
                            added.push(actor.clone());
                        }
                    }
                }
                rec.note_version(*version);
                let after = rec.tally();
                self.recount(before, after);
                for actor in added {
                    self.index_insert(&actor, id);
                }
                changed
            }
            ClusterEvent::ActorAdded { version, actor, .. }
            | ClusterEvent::ActorRemoved { version, actor, .. } => {
                let rec = Arc::make_mut(shared);
                let present = matches!(event, ClusterEvent::ActorAdded { .. });
                let entry = ActorEntry {
                    version: *version,
                    present,
                };
                rec.note_version(*version);
                if rec
                    .actors
                    .get(actor.as_str())
                    .is_some_and(|cur| *cur >= entry)
                {
                    return false;
                }
                let was = rec.set_actor(actor, entry).is_some_and(|o| o.present);
                match (was, present) {
                    (false, true) => self.index_insert(actor, id),
                    (true, false) => self.index_delete(actor, id),
                    _ => {}
                }
                true
            }
            ClusterEvent::TagSet {
                version,
                key,
                value,
                ..
            } => {
                let entry = TagEntry {
                    version: *version,
                    value: value.clone(),
                };
                let rec = Arc::make_mut(shared);
                rec.note_version(*version);
                rec.merge_tag(key, entry)
            }
            ClusterEvent::HealthSet {
                version,
                actor,
                health,
                note,
                ..
            } => {
                let rec = Arc::make_mut(shared);
                rec.note_version(*version);
                rec.merge_health(
                    actor,
                    HealthEntry {
                        version: *version,
                        health: *health,
                        note: note.clone(),
                    },
                )
            }
            ClusterEvent::NodeSuspected { incarnation, .. }
            | ClusterEvent::NodeAlive { incarnation, .. }
            | ClusterEvent::NodeDead { incarnation, .. }
            | ClusterEvent::NodeLeft { incarnation, .. } => {
                let state = match event {
                    ClusterEvent::NodeSuspected { .. } => MemberState::Suspect,
                    ClusterEvent::NodeAlive { .. } => MemberState::Alive,
                    ClusterEvent::NodeDead { .. } => MemberState::Dead,
                    _ => MemberState::Left,
                };
                let l = Liveness {
                    state,
                    incarnation: *incarnation,
                };
                // Decided on the shared record: a stale report must not unshare it.
                if !l.beats(shared.liveness) {
                    return false;
                }
                let before = shared.tally();
                let rec = Arc::make_mut(shared);
                rec.liveness = l;
                let after = rec.tally();
                self.recount(before, after);
                true
            }
        }
    }

    fn index_add(&mut self, id: &NodeId, rec: &NodeRecord) {
        for actor in rec.hosted_actors() {
            self.index_insert(actor, id);
        }
    }

    fn index_remove(&mut self, id: &NodeId, rec: &NodeRecord) {
        for actor in rec.hosted_actors() {
            self.index_delete(actor, id);
        }
    }

    fn index_insert(&mut self, actor: &str, id: &NodeId) {
        if !self.indexed {
            return;
        }
        match self.actor_index.get_mut(actor) {
            Some(hosts) => {
                hosts.insert(id.clone());
            }
            None => {
                self.actor_index
                    .insert(actor.to_owned(), BTreeSet::from([id.clone()]));
            }
        }
    }

    fn index_delete(&mut self, actor: &str, id: &NodeId) {
        if !self.indexed {
            return;
        }
        if let Some(hosts) = self.actor_index.get_mut(actor) {
            hosts.remove(id);
            if hosts.is_empty() {
                self.actor_index.remove(actor);
            }
        }
    }

    /// Records that a peer's delta for `id` covered every owner version up to `upto` above
    /// `since` (see [`NodeRecord`]). No effect on content.
    pub fn note_coverage(
        &mut self,
        id: &NodeId,
        generation: Generation,
        since: Version,
        upto: Version,
    ) {
        // Bounded by what we hold: a peer that sent every entry above `since` cannot have
        // had versions above the highest one it sent (a larger `upto` is a lie or a bug, and
        // would let a peer push our watermark anywhere).
        let before = self.entry_hash(id);
        if let Some(rec) = self.nodes.get_mut(id).filter(|r| {
            r.generation == generation && r.known >= since && upto > r.known && upto <= r.version
        }) {
            Arc::make_mut(rec).note_coverage(since, upto);
        }
        self.rehash(id, before);
    }

    /// Forgets a node entirely (tombstone reaping). Returns its last record. Events of that
    /// generation or older stay stale from now on; a newer generation is welcome.
    pub fn remove(&mut self, id: &NodeId) -> Option<NodeRecord> {
        let before = self.entry_hash(id);
        let rec = self.nodes.remove(id)?;
        self.digest_sum = self.digest_sum.wrapping_sub(before);
        self.index_remove(id, &rec);
        self.recount(rec.tally(), None);
        self.forgotten
            .insert(id.clone(), (rec.generation, rec.liveness));
        Some(Arc::unwrap_or_clone(rec))
    }

    /// Drops the memory of a reaped member (long enough after the reap that every peer
    /// reaped it too): the forgotten map must not grow with every member ever seen.
    pub fn unforget(&mut self, id: &NodeId) {
        self.forgotten.remove(id);
    }

    /// Reaped members still remembered (for bounds checks).
    pub fn num_forgotten(&self) -> usize {
        self.forgotten.len()
    }

    /// Marks a record complete up to its highest version: only its owner may (an owner has
    /// every version it wrote, including jumps over versions it re-asserted above).
    pub fn mark_complete(&mut self, id: &NodeId) {
        let before = self.entry_hash(id);
        if let Some(rec) = self.nodes.get_mut(id).filter(|r| r.known < r.version) {
            let rec = Arc::make_mut(rec);
            rec.known = rec.version;
            rec.pending.clear();
        }
        self.rehash(id, before);
    }

    /// What `id`'s record adds to the roster fingerprint now (0 without a record).
    fn entry_hash(&self, id: &NodeId) -> u64 {
        self.nodes
            .get(id)
            .map_or(0, |r| entry_hash(id, &r.digest()))
    }

    /// Replaces what `id`'s record added to the fingerprint (`before`) with what it adds now.
    fn rehash(&mut self, id: &NodeId, before: u64) {
        let after = self.entry_hash(id);
        if after != before {
            self.digest_sum = self.digest_sum.wrapping_sub(before).wrapping_add(after);
        }
    }

    /// A fingerprint of [`Roster::digest`]: two rosters have the same one exactly when (but
    /// for a 2^-64 chance) every record agrees in generation, liveness and content sum
    /// ([`roster_fingerprint`] of their digests). Anti-entropy sends it instead of the
    /// digest; only a difference costs a digest exchange. Kept up to date as records
    /// change, so asking costs nothing.
    pub fn digest_fingerprint(&self) -> u64 {
        self.digest_sum
    }

    /// [`Roster::digest_fingerprint`] of this roster without `id`'s record: what an audit of
    /// `id`'s own record compares (each side holds its own view of that one).
    pub fn fingerprint_without(&self, id: &NodeId) -> u64 {
        self.digest_sum.wrapping_sub(self.entry_hash(id))
    }

    pub fn record(&self, id: &NodeId) -> Option<&NodeRecord> {
        self.nodes.get(id).map(Arc::as_ref)
    }

    /// All records, including ones not yet announced, in id order.
    pub fn iter_records(&self) -> impl Iterator<Item = (&NodeId, &NodeRecord)> {
        self.nodes.iter().map(|(id, r)| (id, r.as_ref()))
    }

    /// The record at position `i` in id order: random sampling of members.
    pub fn nth_record(&self, i: usize) -> Option<(&NodeId, &NodeRecord)> {
        self.nodes.get_indexed(i).map(|(id, r)| (id, r.as_ref()))
    }

    pub fn num_records(&self) -> usize {
        self.nodes.len()
    }

    /// One member's view, if it has announced itself.
    pub fn member(&self, id: &NodeId) -> Option<Member> {
        let rec = self.nodes.get(id)?;
        rec.is_announced().then(|| Self::view(id, rec))
    }

    /// Announced members sorted by id.
    pub fn members(&self) -> Vec<Member> {
        let mut out: Vec<Member> = self
            .nodes
            .iter()
            .filter(|(_, r)| r.is_announced())
            .map(|(id, r)| Self::view(id, r))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    fn view(id: &NodeId, rec: &NodeRecord) -> Member {
        Member {
            id: id.clone(),
            addr: rec.addr.clone(),
            state: rec.liveness.state,
            actors: {
                let mut actors: Vec<String> = rec.hosted_actors().map(str::to_owned).collect();
                actors.sort_unstable();
                actors
            },
            incarnation: rec.liveness.incarnation,
            generation: rec.generation,
            version: rec.version,
            tags: rec
                .current_tags()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            health: rec
                .hosted_actors()
                .filter_map(|a| Some((a.to_owned(), rec.actor_health(a)?)))
                .collect(),
        }
    }

    /// Every actor name some member hosts (or hosted, with its record still held).
    pub fn actor_names(&self) -> impl Iterator<Item = &str> {
        self.actor_index.keys().map(String::as_str)
    }

    /// Nodes that host `actor`, are not dead or gone (alive or merely suspected) and whose
    /// actor is not critical: passing ones first, then warning ones, each sorted by id.
    pub fn locate(&self, actor: &str) -> Vec<NodeId> {
        self.locate_with(actor, &LocateQuery::default())
    }

    /// [`Roster::locate`] with tag filters (every one must match) and, on request, critical
    /// hosts too (last).
    pub fn locate_with(&self, actor: &str, query: &LocateQuery) -> Vec<NodeId> {
        let Some(hosts) = self.actor_index.get(actor) else {
            return Vec::new();
        };
        let mut found: Vec<(Health, &NodeId)> = hosts
            .iter()
            .filter_map(|id| {
                let rec = self.nodes.get(id)?;
                if !rec.is_announced() || rec.liveness.state.is_tombstone() {
                    return None;
                }
                let health = rec.health_rank(actor);
                if health == Health::Critical && !query.include_critical {
                    return None;
                }
                let tags_match = query.tags.iter().all(|(k, v)| {
                    rec.tags
                        .get(k)
                        .is_some_and(|e| e.value.as_deref() == Some(v.as_str()))
                });
                tags_match.then_some((health, id))
            })
            .collect();
        // Stable: ids stay sorted within each health.
        found.sort_by_key(|(h, _)| *h);
        found.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// The health of `actor` on `node`: `None` when the node has not announced itself or
    /// does not host the actor (whatever its liveness: callers weigh that themselves).
    pub fn actor_health(&self, node: &NodeId, actor: &str) -> Option<Health> {
        self.actor_status(node, actor).map(|h| h.status)
    }

    /// [`Roster::actor_health`] with its note.
    pub fn actor_status(&self, node: &NodeId, actor: &str) -> Option<ActorHealth> {
        self.nodes
            .get(node)
            .filter(|r| r.is_announced())?
            .actor_health(actor)
    }

    /// The tags of `node`, if it has announced itself.
    pub fn tags(&self, node: &NodeId) -> Option<BTreeMap<String, String>> {
        let rec = self.nodes.get(node).filter(|r| r.is_announced())?;
        Some(
            rec.current_tags()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    /// The state of `id` if it has announced itself (what `member(id)` says, without
    /// building the view).
    pub fn state_of(&self, id: &NodeId) -> Option<MemberState> {
        self.nodes
            .get(id)
            .filter(|r| r.is_announced())
            .map(|r| r.liveness.state)
    }

    /// Announced members, whatever their state (what `members()` would list, without
    /// building the views).
    pub fn num_members(&self) -> usize {
        self.counts.iter().sum()
    }

    /// Counts of announced members by state, in the order alive, suspect, dead, left.
    pub fn count_by_state(&self) -> [usize; 4] {
        self.counts
    }

    /// What this roster knows, per node, for anti-entropy.
    pub fn digest(&self) -> BTreeMap<NodeId, NodeDigest> {
        self.nodes
            .iter()
            .map(|(id, r)| (id.clone(), r.digest()))
            .collect()
    }

    /// Data events that bring a peer holding `(generation, known)` of `id` up to our record
    /// (every entry above `known`). With `since = None` (the peer knows nothing, or an older
    /// generation) the whole record, liveness included.
    pub fn events_since(
        &self,
        id: &NodeId,
        since: Option<(Generation, Version)>,
    ) -> Vec<ClusterEvent> {
        let Some(rec) = self.nodes.get(id) else {
            return Vec::new();
        };
        let since_version = match since {
            Some((g, v)) if g == rec.generation => v,
            Some((g, _)) if g > rec.generation => return Vec::new(),
            _ => 0,
        };
        let generation = rec.generation;
        let mut out = Vec::new();
        if rec.addr_version > since_version {
            out.push(ClusterEvent::NewNode {
                node: id.clone(),
                generation,
                version: rec.addr_version,
                addr: rec.addr.clone(),
                actors: BTreeSet::new(),
            });
        }
        let mut entries: Vec<(Version, ClusterEvent)> = rec
            .actors
            .iter()
            .filter(|(_, e)| e.version > since_version)
            .map(|(actor, e)| {
                let event = ClusterEvent::actor_change(
                    id.clone(),
                    generation,
                    e.version,
                    actor.clone(),
                    e.present,
                );
                (e.version, event)
            })
            .collect();
        for (key, e) in rec.tags.iter().filter(|(_, e)| e.version > since_version) {
            let event = ClusterEvent::TagSet {
                node: id.clone(),
                generation,
                version: e.version,
                key: key.clone(),
                value: e.value.clone(),
            };
            entries.push((e.version, event));
        }
        for (actor, e) in rec.health.iter().filter(|(_, e)| e.version > since_version) {
            let event = ClusterEvent::HealthSet {
                node: id.clone(),
                generation,
                version: e.version,
                actor: actor.clone(),
                health: e.health,
                note: e.note.clone(),
            };
            entries.push((e.version, event));
        }
        entries.sort_unstable_by_key(|(v, _)| *v);
        out.extend(entries.into_iter().map(|(_, e)| e));
        // A peer of the same generation compares liveness through its digest; a peer without
        // the record needs it (and an empty record still says the node exists).
        let full = since.is_none_or(|(g, _)| g != generation);
        if full && (rec.liveness != Liveness::INITIAL || out.is_empty()) {
            out.push(Self::liveness_event(id, generation, rec.liveness));
        }
        out
    }

    /// The event that carries `liveness` for a node.
    pub fn liveness_event(id: &NodeId, generation: Generation, l: Liveness) -> ClusterEvent {
        let (node, incarnation) = (id.clone(), l.incarnation);
        match l.state {
            MemberState::Alive => ClusterEvent::NodeAlive {
                node,
                generation,
                incarnation,
            },
            MemberState::Suspect => ClusterEvent::NodeSuspected {
                node,
                generation,
                incarnation,
                by: None,
            },
            MemberState::Dead => ClusterEvent::NodeDead {
                node,
                generation,
                incarnation,
            },
            MemberState::Left => ClusterEvent::NodeLeft {
                node,
                generation,
                incarnation,
            },
        }
    }

    /// Every record as events; applying them to an empty roster rebuilds this one.
    pub fn to_events(&self) -> Vec<ClusterEvent> {
        let mut ids: Vec<&NodeId> = self.nodes.keys().collect();
        ids.sort();
        ids.into_iter()
            .flat_map(|id| self.events_since(id, None))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u8) -> NodeId {
        NodeId::new(format!("n{n}"))
    }

    fn new_node(n: u8, generation: u64, version: u64, actors: &[&str]) -> ClusterEvent {
        ClusterEvent::NewNode {
            node: id(n),
            generation,
            version,
            addr: format!("ws://127.0.0.1:{}", 7000 + n as u16),
            actors: actors.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn add(n: u8, generation: u64, version: u64, actor: &str) -> ClusterEvent {
        ClusterEvent::ActorAdded {
            node: id(n),
            generation,
            version,
            actor: actor.into(),
        }
    }

    fn remove(n: u8, generation: u64, version: u64, actor: &str) -> ClusterEvent {
        ClusterEvent::ActorRemoved {
            node: id(n),
            generation,
            version,
            actor: actor.into(),
        }
    }

    fn live(n: u8, generation: u64, state: MemberState, incarnation: u64) -> ClusterEvent {
        Roster::liveness_event(&id(n), generation, Liveness { state, incarnation })
    }

    fn tag(n: u8, generation: u64, version: u64, key: &str, value: Option<&str>) -> ClusterEvent {
        ClusterEvent::TagSet {
            node: id(n),
            generation,
            version,
            key: key.into(),
            value: value.map(str::to_owned),
        }
    }

    fn health(n: u8, generation: u64, version: u64, actor: &str, h: Health) -> ClusterEvent {
        ClusterEvent::HealthSet {
            node: id(n),
            generation,
            version,
            actor: actor.into(),
            health: h,
            note: format!("{h} at {version}"),
        }
    }

    #[test]
    fn tags_are_last_writer_wins_and_unset_leaves_a_tombstone() {
        let mut r = Roster::new();
        r.apply(&new_node(1, 1, 1, &["a"]));
        assert_eq!(r.apply(&tag(1, 1, 3, "zone", Some("eu"))), Applied::Changed);
        assert_eq!(r.apply(&tag(1, 1, 2, "zone", Some("us"))), Applied::Stale);
        assert_eq!(r.tags(&id(1)).unwrap()["zone"], "eu");
        assert_eq!(r.member(&id(1)).unwrap().tags["zone"], "eu");
        assert_eq!(r.apply(&tag(1, 1, 4, "zone", None)), Applied::Changed);
        assert_eq!(r.apply(&tag(1, 1, 3, "zone", Some("eu"))), Applied::Stale);
        assert!(r.tags(&id(1)).unwrap().is_empty());
        let q = |tags: &[(&str, &str)]| LocateQuery {
            include_critical: false,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        assert!(r.locate_with("a", &q(&[("zone", "eu")])).is_empty());
        r.apply(&tag(1, 1, 5, "zone", Some("us")));
        r.apply(&tag(1, 1, 6, "rack", Some("r1")));
        assert_eq!(r.locate_with("a", &q(&[("zone", "us")])), vec![id(1)]);
        assert_eq!(
            r.locate_with("a", &q(&[("zone", "us"), ("rack", "r1")])),
            vec![id(1)]
        );
        assert!(r
            .locate_with("a", &q(&[("zone", "us"), ("rack", "r2")]))
            .is_empty());
    }

    #[test]
    fn health_orders_locate_and_critical_hosts_are_left_out() {
        let mut r = Roster::new();
        for n in 1..=3 {
            r.apply(&new_node(n, 1, 1, &["a"]));
        }
        r.apply(&health(1, 1, 2, "a", Health::Warning));
        r.apply(&health(2, 1, 2, "a", Health::Critical));
        assert_eq!(
            r.locate("a"),
            vec![id(3), id(1)],
            "passing first, critical out"
        );
        let all = LocateQuery {
            include_critical: true,
            tags: Vec::new(),
        };
        assert_eq!(r.locate_with("a", &all), vec![id(3), id(1), id(2)]);
        assert_eq!(r.actor_health(&id(2), "a"), Some(Health::Critical));
        assert_eq!(r.actor_status(&id(2), "a").unwrap().note, "critical at 2");
        assert_eq!(r.actor_health(&id(3), "a"), Some(Health::Passing));
        assert_eq!(r.actor_health(&id(3), "b"), None);
        assert_eq!(
            r.member(&id(1)).unwrap().health["a"].status,
            Health::Warning
        );
    }

    #[test]
    fn an_actor_change_supersedes_its_older_health() {
        let mut r = Roster::new();
        r.apply(&new_node(1, 1, 1, &["a"]));
        r.apply(&health(1, 1, 2, "a", Health::Critical));
        r.apply(&remove(1, 1, 3, "a"));
        assert_eq!(r.actor_health(&id(1), "a"), None);
        assert_eq!(
            r.apply(&health(1, 1, 2, "a", Health::Critical)),
            Applied::Stale
        );
        r.apply(&add(1, 1, 4, "a"));
        assert_eq!(
            r.actor_health(&id(1), "a"),
            Some(Health::Passing),
            "re-added: passing"
        );
        // Health newer than the add, arriving before it, survives it.
        let mut r2 = Roster::new();
        r2.apply(&new_node(1, 1, 1, &[]));
        r2.apply(&health(1, 1, 6, "b", Health::Warning));
        r2.apply(&add(1, 1, 5, "b"));
        assert_eq!(r2.actor_health(&id(1), "b"), Some(Health::Warning));
    }

    #[test]
    fn new_node_then_actor_changes_are_visible() {
        let mut r = Roster::new();
        assert_eq!(r.apply(&new_node(1, 1, 1, &["a"])), Applied::Changed);
        assert_eq!(r.apply(&add(1, 1, 2, "b")), Applied::Changed);
        assert_eq!(r.locate("a"), vec![id(1)]);
        assert_eq!(r.apply(&remove(1, 1, 3, "a")), Applied::Changed);
        assert!(r.locate("a").is_empty());
        assert_eq!(r.member(&id(1)).unwrap().actors, vec!["b".to_string()]);
        assert_eq!(r.member(&id(1)).unwrap().version, 3);
    }

    #[test]
    fn duplicates_and_old_versions_are_stale() {
        let mut r = Roster::new();
        r.apply(&new_node(1, 1, 1, &[]));
        r.apply(&add(1, 1, 2, "a"));
        r.apply(&remove(1, 1, 3, "a"));
        let before = r.clone();
        assert_eq!(r.apply(&add(1, 1, 2, "a")), Applied::Stale);
        assert_eq!(r.apply(&remove(1, 1, 3, "a")), Applied::Stale);
        assert_eq!(r.apply(&new_node(1, 1, 1, &[])), Applied::Stale);
        assert_eq!(r, before);
        assert!(
            r.locate("a").is_empty(),
            "an old add cannot resurrect a removed actor"
        );
    }

    #[test]
    fn higher_generation_replaces_the_record_and_lower_is_stale() {
        let mut r = Roster::new();
        r.apply(&new_node(1, 1, 5, &["old"]));
        r.apply(&live(1, 1, MemberState::Dead, 3));
        assert_eq!(r.apply(&new_node(1, 2, 1, &["new"])), Applied::Changed);
        let m = r.member(&id(1)).unwrap();
        assert_eq!(
            (m.generation, m.state, m.actors.clone()),
            (2, MemberState::Alive, vec!["new".into()])
        );
        assert!(r.locate("old").is_empty());
        assert_eq!(r.apply(&add(1, 1, 9, "zombie")), Applied::Stale);
        assert_eq!(r.apply(&live(1, 1, MemberState::Dead, 9)), Applied::Stale);
    }

    #[test]
    fn swim_incarnation_rules() {
        use MemberState::*;
        let l = |state, incarnation| Liveness { state, incarnation };
        for i in 0..4u64 {
            for j in 0..4u64 {
                assert_eq!(
                    l(Alive, i).beats(l(Suspect, j)),
                    i > j,
                    "alive({i}) vs suspect({j})"
                );
                assert_eq!(
                    l(Suspect, i).beats(l(Alive, j)),
                    i >= j,
                    "suspect({i}) vs alive({j})"
                );
                assert_eq!(
                    l(Dead, i).beats(l(Alive, j)),
                    i >= j,
                    "dead({i}) vs alive({j})"
                );
                assert_eq!(
                    l(Dead, i).beats(l(Suspect, j)),
                    i >= j,
                    "dead({i}) vs suspect({j})"
                );
                assert_eq!(l(Alive, i).beats(l(Alive, j)), i > j);
                assert_eq!(l(Suspect, i).beats(l(Suspect, j)), i > j);
                // Left is final for the generation: nothing else beats it.
                for s in [Alive, Suspect, Dead] {
                    assert!(!l(s, i).beats(l(Left, j)));
                    assert!(l(Left, j).beats(l(s, i)));
                }
            }
        }
    }

    #[test]
    fn refutation_brings_a_suspect_back_and_dead_hosts_are_not_located() {
        let mut r = Roster::new();
        r.apply(&new_node(1, 1, 1, &["a"]));
        r.apply(&live(1, 1, MemberState::Suspect, 0));
        assert_eq!(r.locate("a"), vec![id(1)], "a suspect still hosts");
        assert_eq!(r.apply(&live(1, 1, MemberState::Alive, 0)), Applied::Stale);
        assert_eq!(
            r.apply(&live(1, 1, MemberState::Alive, 1)),
            Applied::Changed
        );
        r.apply(&live(1, 1, MemberState::Dead, 1));
        assert!(r.locate("a").is_empty());
        assert_eq!(r.count_by_state(), [0, 0, 1, 0]);
    }

    #[test]
    fn liveness_before_announcement_is_kept_but_not_listed() {
        let mut r = Roster::new();
        assert_eq!(r.apply(&live(1, 1, MemberState::Dead, 0)), Applied::Changed);
        assert!(r.members().is_empty());
        r.apply(&new_node(1, 1, 1, &[]));
        assert_eq!(r.member(&id(1)).unwrap().state, MemberState::Dead);
    }

    #[test]
    fn a_reaped_node_cannot_be_brought_back_by_old_events() {
        let mut r = Roster::new();
        r.apply(&new_node(1, 1, 1, &["a"]));
        r.apply(&live(1, 1, MemberState::Dead, 0));
        let old = r.to_events();
        assert!(r.remove(&id(1)).is_some());
        for e in &old {
            assert_eq!(r.apply(e), Applied::Stale, "{e}");
        }
        assert!(r.member(&id(1)).is_none());
        assert_eq!(
            r.apply(&new_node(1, 2, 1, &[])),
            Applied::Changed,
            "a new life is welcome"
        );
    }

    #[test]
    fn a_reaped_node_alive_above_its_death_is_welcome_in_the_same_generation() {
        let mut r = Roster::new();
        r.apply(&new_node(1, 1, 1, &["a"]));
        r.apply(&live(1, 1, MemberState::Dead, 2));
        r.remove(&id(1));
        assert_eq!(r.apply(&live(1, 1, MemberState::Alive, 2)), Applied::Stale);
        assert_eq!(
            r.apply(&live(1, 1, MemberState::Alive, 3)),
            Applied::Changed,
            "back from a crash after the reap: welcome"
        );
        assert_eq!(r.apply(&new_node(1, 1, 1, &["a"])), Applied::Changed);
        assert_eq!(r.locate("a"), vec![id(1)]);
        // A graceful leave stays final for the generation.
        r.apply(&live(1, 1, MemberState::Left, 3));
        r.remove(&id(1));
        assert_eq!(r.apply(&live(1, 1, MemberState::Alive, 9)), Applied::Stale);
    }

    #[test]
    fn coverage_beyond_what_a_peer_sent_is_ignored_and_never_overflows() {
        let mut r = Roster::new();
        r.apply(&new_node(1, 1, 1, &[]));
        r.apply(&add(1, 1, 3, "x"));
        r.note_coverage(&id(1), 1, 0, u64::MAX);
        assert_eq!(r.record(&id(1)).unwrap().known, 1, "a lie is ignored");
        r.note_coverage(&id(1), 1, 1, 3);
        assert_eq!(r.record(&id(1)).unwrap().known, 3);
    }

    #[test]
    fn events_since_sends_only_what_the_peer_lacks() {
        let mut r = Roster::new();
        r.apply(&new_node(1, 1, 1, &["a"]));
        r.apply(&add(1, 1, 2, "b"));
        r.apply(&remove(1, 1, 3, "a"));
        let delta = r.events_since(&id(1), Some((1, 2)));
        assert_eq!(delta, vec![remove(1, 1, 3, "a")]);
        assert!(r.events_since(&id(1), Some((1, 3))).is_empty());
        assert!(
            r.events_since(&id(1), Some((2, 0))).is_empty(),
            "peer is ahead"
        );
        let mut peer = Roster::new();
        for e in r.events_since(&id(1), None) {
            peer.apply(&e);
        }
        assert_eq!(peer, r);
    }

    // ---- properties ----

    fn arb_event() -> impl Strategy<Value = ClusterEvent> {
        let node = 0u8..4;
        let generation = 1u64..3;
        let version = 1u64..6;
        let actor = prop::sample::select(vec!["a", "b", "c"]);
        let arb_actor = actor.clone();
        let state = prop::sample::select(vec![
            MemberState::Alive,
            MemberState::Suspect,
            MemberState::Dead,
            MemberState::Left,
        ]);
        prop_oneof![
            (
                node.clone(),
                generation.clone(),
                version.clone(),
                prop::collection::vec(actor.clone(), 0..3)
            )
                .prop_map(|(n, g, v, a)| new_node(n, g, v, &a)),
            (
                node.clone(),
                generation.clone(),
                version.clone(),
                actor.clone()
            )
                .prop_map(|(n, g, v, a)| add(n, g, v, a)),
            (node.clone(), generation.clone(), version.clone(), actor)
                .prop_map(|(n, g, v, a)| remove(n, g, v, a)),
            (node.clone(), generation.clone(), state, 0u64..4)
                .prop_map(|(n, g, s, i)| live(n, g, s, i)),
            (
                node.clone(),
                generation.clone(),
                version.clone(),
                prop::sample::select(vec!["zone", "rack"]),
                prop::option::of(prop::sample::select(vec!["x", "y"]))
            )
                .prop_map(|(n, g, v, k, val)| tag(n, g, v, k, val)),
            (
                node,
                generation,
                version,
                arb_actor,
                prop::sample::select(vec![Health::Passing, Health::Warning, Health::Critical])
            )
                .prop_map(|(n, g, v, a, h)| health(n, g, v, a, h)),
        ]
    }

    /// Owner-consistent streams: one owner never writes two different values at one version.
    /// Real owners never do; arbitrary events can, so we derive versions from the position.
    fn owner_consistent(events: Vec<ClusterEvent>) -> Vec<ClusterEvent> {
        events
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let v = i as u64 + 1;
                match e {
                    ClusterEvent::NewNode {
                        node,
                        generation,
                        addr,
                        actors,
                        ..
                    } => ClusterEvent::NewNode {
                        node,
                        generation,
                        version: v,
                        addr,
                        actors,
                    },
                    ClusterEvent::ActorAdded {
                        node,
                        generation,
                        actor,
                        ..
                    } => ClusterEvent::ActorAdded {
                        node,
                        generation,
                        version: v,
                        actor,
                    },
                    ClusterEvent::ActorRemoved {
                        node,
                        generation,
                        actor,
                        ..
                    } => ClusterEvent::ActorRemoved {
                        node,
                        generation,
                        version: v,
                        actor,
                    },
                    ClusterEvent::TagSet {
                        node,
                        generation,
                        key,
                        value,
                        ..
                    } => ClusterEvent::TagSet {
                        node,
                        generation,
                        version: v,
                        key,
                        value,
                    },
                    ClusterEvent::HealthSet {
                        node,
                        generation,
                        actor,
                        health,
                        note,
                        ..
                    } => ClusterEvent::HealthSet {
                        node,
                        generation,
                        version: v,
                        actor,
                        health,
                        note,
                    },
                    other => other,
                }
            })
            .collect()
    }

    fn build(events: &[ClusterEvent]) -> Roster {
        let mut r = Roster::new();
        for e in events {
            r.apply(e);
        }
        r
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(512) })]

        #[test]
        fn any_order_with_duplicates_converges(
            events in prop::collection::vec(arb_event(), 0..40),
            seed in any::<u64>(),
            dup in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let events = owner_consistent(events);
            let reference = build(&events);
            let mut shuffled = events.clone();
            for d in &dup {
                if !events.is_empty() {
                    shuffled.push(d.get(&events).clone());
                }
            }
            use rand::{seq::SliceRandom, SeedableRng};
            shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            let other = build(&shuffled);
            prop_assert_eq!(&other, &reference);
            // The derived index agrees with the records, whether kept per event or rebuilt.
            let mut bulk = RosterBuilder::new(Roster::new());
            for e in &shuffled {
                bulk.apply(e);
            }
            let bulk = bulk.finish();
            prop_assert_eq!(&bulk, &reference);
            let all = LocateQuery { include_critical: true, tags: vec![("zone".into(), "x".into())] };
            for actor in ["a", "b", "c"] {
                prop_assert_eq!(other.locate(actor), reference.locate(actor));
                prop_assert_eq!(bulk.locate(actor), reference.locate(actor));
                prop_assert_eq!(other.locate_with(actor, &all), reference.locate_with(actor, &all));
            }
            // Equal contents, equal fingerprints (anti-entropy compares them).
            for (id, rec) in reference.iter_records() {
                prop_assert_eq!(other.record(id).unwrap().fingerprint(), rec.fingerprint());
            }
            prop_assert_eq!(other.members(), reference.members());
        }

        /// The kept fingerprint always equals one computed from scratch over the digest,
        /// through applies, coverage, completion, reaps and snapshot reloads.
        #[test]
        fn the_fingerprint_is_kept_exactly(
            events in prop::collection::vec(arb_event(), 0..40),
            ops in prop::collection::vec(0u8..6, 0..40),
        ) {
            let mut r = Roster::new();
            for (i, e) in owner_consistent(events).iter().enumerate() {
                r.apply(e);
                match ops.get(i) {
                    Some(0) => { r.remove(e.node()); }
                    Some(1) => r.mark_complete(e.node()),
                    Some(2) => {
                        let g = e.generation();
                        let known = r.record(e.node()).map_or(0, |x| x.known);
                        r.note_coverage(e.node(), g, known, known + 2);
                    }
                    Some(3) => { r.unforget(e.node()); }
                    _ => {}
                }
                let digest = r.digest();
                prop_assert_eq!(r.digest_fingerprint(), roster_fingerprint(&digest));
            }
            let reloaded = Roster::from_records(
                r.iter_records().map(|(id, x)| (id.clone(), x.clone())),
            );
            prop_assert_eq!(reloaded.digest_fingerprint(), r.digest_fingerprint());
        }

        /// Two rosters have equal fingerprints exactly when their digests agree but for the
        /// watermarks (`known`): any other difference (a record missing, another generation,
        /// liveness or content) shows.
        #[test]
        fn fingerprints_are_equal_iff_digests_are(
            a in prop::collection::vec(arb_event(), 0..30),
            b in prop::collection::vec(arb_event(), 0..30),
            shared in prop::collection::vec(arb_event(), 0..30),
        ) {
            let shared = owner_consistent(shared);
            let mut x = build(&shared);
            let mut y = build(&shared);
            for e in &a { x.apply(e); }
            for e in &b { y.apply(e); }
            let strip = |r: &Roster| -> BTreeMap<NodeId, (Generation, Liveness, u64)> {
                r.digest().into_iter().map(|(id, d)| (id, (d.generation, d.liveness, d.sum))).collect()
            };
            let same = strip(&x) == strip(&y);
            prop_assert_eq!(x.digest_fingerprint() == y.digest_fingerprint(), same);
        }

        #[test]
        fn stale_events_never_change_state(events in prop::collection::vec(arb_event(), 0..40)) {
            let mut r = Roster::new();
            for e in &owner_consistent(events) {
                let before = r.clone();
                if r.apply(e) == Applied::Stale {
                    prop_assert_eq!(&r, &before);
                } else {
                    prop_assert_ne!(&r, &before);
                }
                // Applying the same event again is always stale (idempotence).
                prop_assert_eq!(r.apply(e), Applied::Stale);
            }
        }

        #[test]
        fn liveness_only_moves_up_the_swim_order(events in prop::collection::vec(arb_event(), 0..40)) {
            let mut r = Roster::new();
            for e in &events {
                let before = r.record(e.node()).cloned();
                r.apply(e);
                let after = r.record(e.node()).unwrap();
                if let Some(b) = before.filter(|b| b.generation == after.generation) {
                    prop_assert!(b.liveness == after.liveness || after.liveness.beats(b.liveness));
                    prop_assert!(after.version >= b.version);
                }
            }
        }

        #[test]
        fn counts_and_earlier_clones_follow_every_change(
            events in prop::collection::vec(arb_event(), 0..40),
            reap in prop::collection::vec(any::<bool>(), 0..40),
        ) {
            let mut r = Roster::new();
            for (i, e) in events.iter().enumerate() {
                let earlier = r.clone();
                let earlier_events = earlier.to_events();
                r.apply(e);
                if reap.get(i) == Some(&true) {
                    r.remove(e.node());
                }
                // Records are shared copy-on-write: a clone never sees later changes.
                prop_assert_eq!(earlier.to_events(), earlier_events);
                let mut recount = [0; 4];
                for m in r.members() {
                    recount[m.state as usize] += 1;
                }
                prop_assert_eq!(r.count_by_state(), recount);
                prop_assert_eq!(r.num_members(), r.members().len());
                let reloaded =
                    Roster::from_records(r.iter_records().map(|(id, rec)| (id.clone(), rec.clone())));
                prop_assert_eq!(reloaded.count_by_state(), recount);
            }
        }

        #[test]
        fn to_events_and_deltas_rebuild_the_roster(
            events in prop::collection::vec(arb_event(), 0..40),
            cut in any::<prop::sample::Index>(),
        ) {
            let events = owner_consistent(events);
            let r = build(&events);
            prop_assert_eq!(&build(&r.to_events()), &r);
            // A peer that has a prefix of the same events catches up from our per-node deltas
            // (data entries above its watermark, from `events_since`) plus the liveness its
            // digest lacks: what anti-entropy sends (`gossip::delta_for`).
            let cut = cut.index(events.len() + 1);
            let mut peer = build(&events[..cut]);
            crate::gossip::delta_for(&r, &peer.digest(), None).apply_to(&mut peer);
            prop_assert_eq!(&peer, &r);
        }
    }
}
