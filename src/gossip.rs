//! Dissemination decisions, pure: the broadcast queue with retransmit budgets, the choice of
//! gossip targets, and what a peer lacks according to its digest.
//!
//! Only events that changed our roster enter the queue (the dedup that stops storms). Each
//! gets a budget of about `mult * ceil(log2(N + 1))` sends, spent `fanout` at a time on
//! random peers; what gossip misses, anti-entropy (digest exchange) repairs.

use crate::event::{ClusterEvent, Generation, NodeId, Version};
use crate::roster::{NodeDigest, NodeRecord, Roster};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// One anti-entropy round in this many goes to a random member we hold dead instead of a
/// live one. Two sides of a healed partition hold each other dead and would otherwise never
/// talk again; a wrongly dead member learns of it this way and refutes (Serf's reconnect).
pub const RECONNECT_ONE_IN: u32 = 4;

/// Sends an event gets in a cluster of `n` members: `mult * ceil(log2(n + 1))`.
pub fn retransmit_budget(mult: u32, n: usize) -> u32 {
    let rounds = usize::BITS - n.leading_zeros(); // ceil(log2(n + 1))
    mult * rounds.max(1)
}

/// Clusters up to this size exchange digests every base interval.
pub const ANTI_ENTROPY_SCALE_FROM: usize = 32;

/// The anti-entropy interval for `n` members: `base` up to 32 members, then one more `base`
/// per doubling (memberlist's push-pull scaling). A digest names every member, so a fixed
/// interval would make idle traffic per node grow linearly with the cluster; scaled, it
/// grows as `N / log N` while repair still reaches everyone in `O(log N)` exchanges.
pub fn anti_entropy_interval(base: Duration, n: usize) -> Duration {
    if n <= ANTI_ENTROPY_SCALE_FROM {
        return base;
    }
    let over = (n as f64).log2() - (ANTI_ENTROPY_SCALE_FROM as f64).log2();
    base * (over.ceil() as u32 + 1)
}

/// How long news of new members must have been still before a joining node runs an
/// anti-entropy round of its own:
/// about the time gossip takes to spread news through `n` members (two gossip windows per
/// hop, `ceil(log2(n + 1))` hops). Members that join together learn of each other from
/// gossip only if their peers' news was still being sent when they became known; a node
/// that joined early in a burst can miss the records whose budgets ran out before anyone
/// knew it (measured in the simulation: 6 cold starts of 20 nodes in 50 had one node
/// missing members until the next regular round, 500 to 1,400 ms later). Only nodes still
/// joining run it: a settled cluster pays one round per joiner, by the joiner.
pub fn settle_time(window: Duration, n: usize) -> Duration {
    let hops = usize::BITS - n.leading_zeros(); // ceil(log2(n + 1))
    window * 2 * hops.max(1)
}

/// Most events the broadcast queue holds. Beyond it the event with the fewest sends left is
/// dropped (anti-entropy repairs what gossip drops): a bulk registration of 100,000 actors
/// must not hold 100,000 events per node in memory until their budgets are spent.
pub const MAX_QUEUED: usize = 16_384;

/// Data news (records' content, not liveness: a suspicion and its refutation must be
/// pushed) a node queues for gossip at most at once, and per second after that; beyond, it
/// is not queued at all and anti-entropy alone carries it. Push costs every node
/// `budget x size` of sends (and its peers as much decoding): a restart with 100,000 actors,
/// about 2 MB of announcements, cost each of 4 nodes 20 to 40 MB and seconds of work, enough
/// to starve probes into false suspicions. A cap on the queue alone was not enough (the
/// record arrives frame by frame and each refilled it), nor was one round per event (each
/// node missed some of them, and the repair of a hole sends everything above the peer's
/// watermark). A digest exchange sends a peer what it lacks once, with the coverage that
/// ends the repair.
pub const DATA_NEWS_BURST: usize = 64 * 1024;
/// See [`DATA_NEWS_BURST`].
pub const DATA_NEWS_PER_S: usize = 64 * 1024;

/// Most news a node tells every member at once (a joiner's announcement, `Machine::note_join`;
/// a round of its own news, `Machine::flush`): an address and a few actors. Beyond, news is
/// gossiped (a node starting with thousands of actors would send its record N - 1 times
/// where the news' budget is `3 x ceil(log2(N + 1))` sends).
pub const TELL_ALL_MAX_BYTES: usize = 1024;

/// Framing overhead allowed for per frame on top of the encoded events.
pub const FRAME_OVERHEAD: usize = 64;

/// An upper bound of the encoded size of one event on the wire (rmp-serde, as it sits in a
/// frame), from its fields: a string costs its bytes and at most 5 of header, an integer
/// at most 9, the variant and its array headers at most 32. Exact sizes would cost an
/// encoding per queued event (a bulk registration queues tens of thousands).
pub fn encoded_len(event: &ClusterEvent) -> usize {
    const HEAD: usize = 32;
    const INT: usize = 9;
    let s = |x: &str| x.len() + 5;
    let node = s(event.node().as_str());
    HEAD + node
        + match event {
            ClusterEvent::NewNode { addr, actors, .. } => {
                2 * INT + s(addr) + 5 + actors.iter().map(|a| s(a)).sum::<usize>()
            }
            ClusterEvent::ActorAdded { actor, .. } | ClusterEvent::ActorRemoved { actor, .. } => {
                2 * INT + s(actor)
            }
            ClusterEvent::TagSet { key, value, .. } => {
                2 * INT + s(key) + 1 + value.as_deref().map_or(0, s)
            }
            ClusterEvent::HealthSet { actor, note, .. } => {
                2 * INT + s(actor) + s("critical") + s(note)
            }
            ClusterEvent::NodeSuspected { by, .. } => {
                2 * INT + 1 + by.as_ref().map_or(0, |b| s(b.as_str()))
            }
            ClusterEvent::NodeAlive { .. }
            | ClusterEvent::NodeDead { .. }
            | ClusterEvent::NodeLeft { .. } => 2 * INT,
        }
}

struct Queued {
    seq: u64,
    left: u32,
    bytes: usize,
    /// Taken into a round at least once.
    sent: bool,
}

/// Events waiting to be gossiped, each with the sends it has left.
///
/// Bounded ([`MAX_QUEUED`]) with `O(log n)` push and per-event take: an ordered index by
/// sends left (most first, then oldest first) beside a map from event to its slot.
pub struct Broadcasts {
    slots: crate::roster::FastMap<Arc<ClusterEvent>, Queued>,
    order: BTreeMap<(Reverse<u32>, u64), Arc<ClusterEvent>>,
    next_seq: u64,
    /// Queued events never sent yet (news: they go out without waiting for a round).
    fresh: usize,
    /// Bytes of data news (by [`encoded_len`]) it may still take: a token bucket of
    /// [`DATA_NEWS_BURST`], refilled at [`DATA_NEWS_PER_S`].
    allowance: usize,
    refilled_at: Option<Duration>,
}

impl Default for Broadcasts {
    fn default() -> Self {
        Broadcasts {
            slots: Default::default(),
            order: BTreeMap::new(),
            next_seq: 0,
            fresh: 0,
            allowance: DATA_NEWS_BURST,
            refilled_at: None,
        }
    }
}

impl std::fmt::Debug for Broadcasts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broadcasts")
            .field("len", &self.len())
            .finish()
    }
}

impl Broadcasts {
    /// Earns data news allowance for the time since the last call (see [`DATA_NEWS_BURST`]).
    pub fn refill(&mut self, now: Duration) {
        let last = *self.refilled_at.get_or_insert(now);
        let earned = (now.saturating_sub(last).as_secs_f64() * DATA_NEWS_PER_S as f64) as usize;
        if earned > 0 {
            self.allowance = (self.allowance + earned).min(DATA_NEWS_BURST);
            self.refilled_at = Some(now);
        }
    }

    /// Queues `event` for `budget` sends, unless it is data beyond the allowance (then
    /// anti-entropy carries it; see [`DATA_NEWS_BURST`]).
    pub fn push(&mut self, event: ClusterEvent, budget: u32) {
        if budget == 0 {
            return;
        }
        // The same event again (a duplicate that still changed nothing) only refreshes it.
        if let Some(slot) = self.slots.get_mut(&event) {
            if budget > slot.left {
                let shared = self
                    .order
                    .remove(&(Reverse(slot.left), slot.seq))
                    .expect("indexed");
                slot.left = budget;
                self.order.insert((Reverse(budget), slot.seq), shared);
            }
            return;
        }
        if self.slots.len() >= MAX_QUEUED {
            // Full: the event with the fewest sends left goes (the newcomer, if it has fewer).
            let lowest = self
                .order
                .last_key_value()
                .map_or(0, |((Reverse(l), _), _)| *l);
            if budget < lowest {
                return;
            }
            let (_, victim) = self.order.pop_last().expect("non-empty");
            if self.slots.remove(&victim).is_some_and(|q| !q.sent) {
                self.fresh -= 1;
            }
        }
        let bytes = encoded_len(&event);
        if event.is_data() {
            if bytes > self.allowance {
                return;
            }
            self.allowance -= bytes;
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        let shared = Arc::new(event);
        self.order.insert((Reverse(budget), seq), shared.clone());
        self.slots.insert(
            shared,
            Queued {
                seq,
                left: budget,
                bytes,
                sent: false,
            },
        );
        self.fresh += 1;
    }

    /// Whether some queued event was never sent: news, which goes out at once (a round's
    /// spacing is for retransmissions, not for the first hop).
    pub fn has_fresh(&self) -> bool {
        self.fresh > 0
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Forgets every queued event (nobody to tell: anti-entropy will bring the news).
    pub fn clear(&mut self) {
        self.slots.clear();
        self.order.clear();
        self.fresh = 0;
    }

    /// Gives every queued event at least `budget` sends left: budgets are set from the
    /// cluster size a node knows when it queues an event, and a joiner knows only itself
    /// until its first sync.
    pub fn raise_to(&mut self, budget: u32) {
        let low: Vec<_> = self
            .order
            .range((Reverse(budget), 0)..)
            .map(|(k, _)| *k)
            .collect();
        for key in low {
            let e = self.order.remove(&key).expect("listed");
            let slot = self.slots.get_mut(&e).expect("indexed");
            slot.left = budget;
            self.order.insert((Reverse(budget), slot.seq), e);
        }
    }

    /// The size ([`encoded_len`]) of the event the next round takes first.
    pub fn next_bytes(&self) -> Option<usize> {
        let (_, e) = self.order.first_key_value()?;
        Some(self.slots[e].bytes)
    }

    /// Events for one round to `targets` peers, at most `max_bytes` once encoded in one
    /// frame; each is charged `targets` sends and dropped once its budget is spent. Fresher
    /// events (more sends left) go first. Always takes at least one event when any is
    /// queued (an event too large for any frame is the caller's to refuse earlier).
    pub fn take_round(&mut self, max_bytes: usize, targets: u32) -> Vec<ClusterEvent> {
        let budget = max_bytes.saturating_sub(FRAME_OVERHEAD);
        let mut used = 0;
        let mut taken = Vec::new();
        for (key, e) in self.order.iter() {
            let bytes = self.slots[e].bytes;
            if !taken.is_empty() && used + bytes > budget {
                break;
            }
            used += bytes;
            taken.push((*key, e.clone()));
        }
        let mut batch = Vec::with_capacity(taken.len());
        for (key, e) in taken {
            self.order.remove(&key);
            let left = key.0 .0.saturating_sub(targets.max(1));
            let slot = self.slots.get_mut(&e).expect("indexed");
            if !slot.sent {
                slot.sent = true;
                self.fresh -= 1;
            }
            if left == 0 {
                self.slots.remove(&e);
            } else {
                slot.left = left;
                self.order.insert((Reverse(left), slot.seq), e.clone());
            }
            batch.push(Arc::unwrap_or_clone(e));
        }
        batch
    }
}

/// Up to `fanout` distinct random peers out of `candidates`.
pub fn choose_peers<T: Clone>(rng: &mut impl Rng, candidates: &[T], fanout: usize) -> Vec<T> {
    candidates.choose_multiple(rng, fanout).cloned().collect()
}

/// "I sent you every entry of `node` above `since`, and I had all versions up to `upto`":
/// lets the receiver advance its completeness watermark (see `NodeRecord::known`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    pub node: NodeId,
    pub generation: Generation,
    pub since: Version,
    pub upto: Version,
}

/// What a peer lacks according to its digest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    pub events: Vec<ClusterEvent>,
    pub covers: Vec<Coverage>,
}

impl Delta {
    /// Applies the delta: events first, then coverage. Returns the events that changed `roster`.
    pub fn apply_to(&self, roster: &mut Roster) -> Vec<ClusterEvent> {
        let changed = self
            .events
            .iter()
            .filter(|e| roster.apply(e) == crate::roster::Applied::Changed)
            .cloned()
            .collect();
        for c in &self.covers {
            roster.note_coverage(&c.node, c.generation, c.since, c.upto);
        }
        changed
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.covers.is_empty()
    }
}

/// Brings a peer whose digest is `theirs` up to our roster: every entry above its watermark,
/// our liveness where it takes precedence, and coverage so its watermark can advance.
///
/// `own` is the node whose roster this is: its own record it holds complete, which lets it
/// fill a hole in a peer's copy (see `add_record_delta`).
pub fn delta_for(
    roster: &Roster,
    theirs: &BTreeMap<NodeId, NodeDigest>,
    own: Option<&NodeId>,
) -> Delta {
    let mut delta = Delta::default();
    // In id order (the roster's), so the same rosters always give the same delta.
    for (id, rec) in roster.iter_records() {
        let complete = own == Some(id);
        add_record_delta(&mut delta, roster, id, rec, theirs.get(id), complete);
    }
    delta
}

/// [`delta_for`] of one record only: brings a peer whose digest entry for `id` is `theirs`
/// (`None`: it holds no record) up to ours. Answers an audit of `id`'s own record.
/// `complete`: the record is our own (see [`delta_for`]).
pub fn delta_for_record(
    roster: &Roster,
    id: &NodeId,
    theirs: Option<&NodeDigest>,
    complete: bool,
) -> Delta {
    let mut delta = Delta::default();
    if let Some(rec) = roster.record(id) {
        add_record_delta(&mut delta, roster, id, rec, theirs, complete);
    }
    delta
}

fn add_record_delta(
    delta: &mut Delta,
    roster: &Roster,
    id: &NodeId,
    rec: &NodeRecord,
    theirs: Option<&NodeDigest>,
    complete: bool,
) {
    let since = match theirs {
        Some(d) if d.generation > rec.generation => return,
        Some(d) if d.generation == rec.generation => {
            if rec.liveness.beats(d.liveness) {
                delta
                    .events
                    .push(Roster::liveness_event(id, rec.generation, rec.liveness));
            }
            // The same content (fingerprints agree): nothing to send, though coverage
            // may still move their watermark. Otherwise everything above it.
            let same = d.sum != 0 && d.sum == rec.fingerprint();
            if rec.version <= d.known || (same && rec.known <= d.known) {
                // Our own record, complete, and a peer at its watermark with other content:
                // the peer has a hole below the watermark (a lost middle frame of a delta
                // whose last frame, with the coverage, arrived), which no watermark shows.
                // Only the whole record fills it; the peer keeps what it holds. Only the
                // owner can tell: elsewhere the same digests also mean "the peer holds
                // entries above the watermark that we lack", which it sends us itself.
                let other = d.sum != 0 && !same;
                if complete && other && d.known == rec.known && rec.version <= rec.known {
                    delta.events.extend(roster.events_since(id, None));
                }
                return;
            }
            if !same {
                delta
                    .events
                    .extend(roster.events_since(id, Some((d.generation, d.known))));
            }
            d.known
        }
        _ => {
            delta.events.extend(roster.events_since(id, None));
            0
        }
    };
    if rec.known > since {
        delta.covers.push(Coverage {
            node: id.clone(),
            generation: rec.generation,
            since,
            upto: rec.known,
        });
    }
}

/// Splits events into groups that each encode to at most `max_bytes` in one frame (an
/// event alone over the limit gets a group of its own; callers refuse such events earlier).
pub fn chunks(events: Vec<ClusterEvent>, max_bytes: usize) -> Vec<Vec<ClusterEvent>> {
    let budget = max_bytes.saturating_sub(FRAME_OVERHEAD);
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut used = 0;
    for e in events {
        let bytes = encoded_len(&e);
        if !current.is_empty() && used + bytes > budget {
            out.push(std::mem::take(&mut current));
            used = 0;
        }
        used += bytes;
        current.push(e);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn ev(n: u64) -> ClusterEvent {
        ClusterEvent::NodeAlive {
            node: NodeId::new("x"),
            generation: 1,
            incarnation: n,
        }
    }

    #[test]
    fn budget_grows_with_log_n() {
        assert_eq!(retransmit_budget(3, 1), 3);
        assert_eq!(retransmit_budget(3, 5), 9);
        assert_eq!(retransmit_budget(3, 50), 18);
        assert_eq!(retransmit_budget(3, 1000), 30);
    }

    #[test]
    fn anti_entropy_slows_down_one_step_per_doubling_above_32_members() {
        let base = Duration::from_millis(500);
        let at = |n| anti_entropy_interval(base, n).as_millis();
        assert_eq!(
            [at(1), at(32), at(33), at(64), at(65)],
            [500, 500, 1000, 1000, 1500]
        );
        assert_eq!([at(1000), at(10_000)], [3000, 5000]);
    }

    #[test]
    fn news_is_fresh_until_first_sent_whatever_happens_to_it() {
        let mut q = Broadcasts::default();
        assert!(!q.has_fresh());
        q.push(ev(1), 6);
        q.push(ev(2), 3);
        assert!(q.has_fresh());
        q.take_round(1 << 20, 3);
        assert!(!q.has_fresh(), "both went out");
        q.push(ev(1), 9);
        assert!(!q.has_fresh(), "a duplicate of a sent event is not news");
        q.push(ev(3), 3);
        assert!(q.has_fresh());
        // A round too small for everything: the freshest (most sends left) goes first.
        assert_eq!(q.take_round(1, 3), vec![ev(1)]);
        assert!(q.has_fresh(), "ev(3) is still waiting");
        q.take_round(1 << 20, 3);
        assert!(!q.has_fresh());
        // Evicted or cleared unsent news is not waiting any more.
        q.push(ev(4), 1);
        q.clear();
        assert!(!q.has_fresh());
        for i in 0..(MAX_QUEUED as u64 + 5) {
            q.push(ev(10 + i), 2);
        }
        q.take_round(usize::MAX, 1);
        let mut rounds = 0;
        while q.has_fresh() {
            q.take_round(1 << 20, 1);
            rounds += 1;
            assert!(rounds < 1_000_000, "fresh count drifted");
        }
        while !q.is_empty() {
            q.take_round(1 << 20, 1);
        }
        assert!(!q.has_fresh());
    }

    #[test]
    fn queue_spends_budgets_and_drops_spent_events() {
        let mut q = Broadcasts::default();
        q.push(ev(1), 6);
        q.push(ev(2), 3);
        assert_eq!(q.take_round(1 << 20, 3), vec![ev(1), ev(2)]);
        assert_eq!(q.take_round(1 << 20, 3), vec![ev(1)]);
        assert!(q.is_empty());
        q.push(ev(1), 3);
        q.push(ev(1), 9);
        assert_eq!(q.len(), 1, "a duplicate refreshes, never doubles");
        q.push(ev(2), 1);
        q.raise_to(6);
        assert_eq!(q.take_round(1 << 20, 3), vec![ev(1), ev(2)]);
        assert_eq!(
            q.take_round(1 << 20, 3),
            vec![ev(1), ev(2)],
            "raised to 6 sends: two rounds of 3"
        );
    }

    #[test]
    fn data_news_beyond_its_allowance_is_left_to_anti_entropy_liveness_never() {
        let added = |i: usize| ClusterEvent::ActorAdded {
            node: NodeId::new("a"),
            generation: 1,
            version: i as u64,
            actor: format!("{i:0>1000}"),
        };
        let each = encoded_len(&added(0));
        let fit = DATA_NEWS_BURST / each;
        let mut q = Broadcasts::default();
        q.refill(Duration::ZERO);
        for i in 0..2 * fit {
            q.push(added(i), 9);
        }
        assert_eq!(
            q.len(),
            fit,
            "a burst's worth queued, the rest left to anti-entropy"
        );
        // Those go out with their whole budget: three rounds of three.
        for _ in 0..3 {
            assert_eq!(
                q.take_round(usize::MAX, 3),
                (0..fit).map(added).collect::<Vec<_>>()
            );
        }
        assert!(q.is_empty());
        // Sending does not earn allowance back; time does, at its rate.
        q.push(added(100_000), 9);
        assert!(q.is_empty());
        q.refill(Duration::from_millis(500));
        for i in 0..fit {
            q.push(added(200_000 + i), 9);
        }
        let half = DATA_NEWS_PER_S / 2 / each;
        assert!(
            (half..=half + 1).contains(&q.len()),
            "{} after half a second",
            q.len()
        );
        // Liveness is always queued.
        q.push(ev(1), 9);
        assert_eq!(q.slots[&ev(1)].left, 9);
    }

    #[test]
    fn peers_are_distinct_and_bounded() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let c: Vec<u32> = (0..10).collect();
        let mut p = choose_peers(&mut rng, &c, 3);
        p.sort();
        p.dedup();
        assert_eq!(p.len(), 3);
        assert_eq!(choose_peers(&mut rng, &c[..2], 3).len(), 2);
    }

    #[test]
    fn the_size_bound_holds_for_every_kind_of_event() {
        let n = NodeId::new("a-node-id");
        let big = u64::MAX;
        let events = vec![
            ClusterEvent::NewNode {
                node: n.clone(),
                generation: big,
                version: big,
                addr: "ws://127.0.0.1:65535".into(),
                actors: (0..50)
                    .map(|i| format!("actor-{i}-{}", "x".repeat(i)))
                    .collect(),
            },
            ClusterEvent::ActorAdded {
                node: n.clone(),
                generation: big,
                version: big,
                actor: "y".repeat(1024),
            },
            ClusterEvent::ActorRemoved {
                node: n.clone(),
                generation: big,
                version: big,
                actor: String::new(),
            },
            ClusterEvent::NodeSuspected {
                node: n.clone(),
                generation: big,
                incarnation: big,
                by: Some(n.clone()),
            },
            ClusterEvent::NodeSuspected {
                node: n.clone(),
                generation: 1,
                incarnation: 1,
                by: None,
            },
            ClusterEvent::NodeAlive {
                node: n.clone(),
                generation: big,
                incarnation: big,
            },
            ClusterEvent::NodeDead {
                node: n.clone(),
                generation: big,
                incarnation: big,
            },
            ClusterEvent::NodeLeft {
                node: n,
                generation: big,
                incarnation: big,
            },
        ];
        for e in &events {
            let exact = rmp_serde::to_vec(e).unwrap().len();
            assert!(
                encoded_len(e) >= exact,
                "{}: bound {} < {exact}",
                e.kind(),
                encoded_len(e)
            );
        }
        // And a frame of them, with the overhead, stays within the sum.
        let frame = crate::message::Frame::Events(events.clone()).encode().len();
        let bound: usize = events.iter().map(encoded_len).sum::<usize>() + FRAME_OVERHEAD;
        assert!(frame <= bound, "{frame} > {bound}");
    }

    /// A delta too big for one frame travels in several; when a middle one is lost and the
    /// last (with the coverage) arrives, the peer claims the whole record while entries are
    /// missing. The next exchange must still bring them.
    #[test]
    fn a_lost_middle_frame_of_a_delta_is_repaired_by_the_next_exchange() {
        let owner = NodeId::new("owner");
        let mut a = Roster::new();
        a.apply(&ClusterEvent::NewNode {
            node: owner.clone(),
            generation: 1,
            version: 1,
            addr: "ws://h:1".into(),
            actors: Default::default(),
        });
        for version in 2..=301 {
            a.apply(&ClusterEvent::ActorAdded {
                node: owner.clone(),
                generation: 1,
                version,
                actor: format!("actor{version}"),
            });
        }
        let Delta { events, covers } = delta_for(&a, &BTreeMap::new(), Some(&owner));
        let mut frames = chunks(events, 4096);
        assert!(frames.len() >= 3, "{} frames", frames.len());
        frames.remove(1);
        let mut b = Roster::new();
        Delta {
            events: frames.concat(),
            covers,
        }
        .apply_to(&mut b);
        let known = |r: &Roster| r.record(&owner).unwrap().known;
        assert_eq!(known(&b), known(&a), "the coverage arrived");
        assert_ne!(b, a, "entries are missing");
        // A member that is not the owner cannot tell a hole from entries above the
        // watermark, so it sends nothing: a non-owner holding a's content.
        assert!(delta_for(&a, &b.digest(), None).is_empty());
        // The owner (a is the owner's roster here) fills it.
        let to_b = delta_for(&a, &b.digest(), Some(&owner));
        let to_a = delta_for(&b, &a.digest(), None);
        to_b.apply_to(&mut b);
        to_a.apply_to(&mut a);
        assert_eq!(a, b);
        assert!(delta_for(&a, &b.digest(), Some(&owner)).is_empty());
        assert!(delta_for(&b, &a.digest(), None).is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(256) })]

        /// Two rosters that exchange deltas both ways end equal (anti-entropy converges).
        #[test]
        fn push_pull_converges(a_events in prop::collection::vec(0u64..40, 0..30), b_events in prop::collection::vec(0u64..40, 0..30)) {
            let mk = |seeds: &[u64]| {
                let mut r = Roster::new();
                for &s in seeds {
                    let node = NodeId::new(format!("n{}", s % 4));
                    let e = match s % 5 {
                        0 => ClusterEvent::NodeSuspected { node, generation: 1 + s % 2, incarnation: s % 3, by: None },
                        1 => ClusterEvent::NewNode { node, generation: 1 + s % 2, version: s, addr: format!("ws://h:{s}"), actors: Default::default() },
                        2 => ClusterEvent::ActorRemoved { node, generation: 1 + s % 2, version: s, actor: format!("a{}", s % 3) },
                        3 => ClusterEvent::NodeDead { node, generation: 1 + s % 2, incarnation: s % 4 },
                        _ => ClusterEvent::ActorAdded { node, generation: 1 + s % 2, version: s, actor: format!("a{}", s % 3) },
                    };
                    r.apply(&e);
                }
                r
            };
            // Versions are derived from s, so one owner never writes two values at one version.
            let mut a = mk(&a_events);
            let mut b = mk(&b_events);
            let to_b = delta_for(&a, &b.digest(), None);
            let to_a = delta_for(&b, &a.digest(), None);
            to_b.apply_to(&mut b);
            to_a.apply_to(&mut a);
            prop_assert_eq!(&a, &b);
            // And once equal, another round changes nothing. (Entries above a watermark are
            // resent until someone complete, such as the owner, closes the gap.)
            prop_assert!(delta_for(&a, &b.digest(), None).apply_to(&mut b).is_empty());
        }
    }
}
