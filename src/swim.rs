//! The failure detector: SWIM with Lifeguard's local health and suspicion, as a pure state
//! machine. Time (`now`, a `Duration` since any fixed origin) and randomness (a seeded rng)
//! come in; messages to send and verdicts come out as [`Output`]s. No clock, no socket.
//!
//! * Every `probe_interval` one member is probed, on a schedule all members share (see
//!   [`Swim::scheduled_target`]): in each interval every member is probed by exactly one
//!   other, so a member that stops answering is probed within one interval, not whenever
//!   someone's random round-robin comes to it. A closed connection, or news that someone
//!   suspects it (for about 2k of the members that hear it), makes a member the next probe:
//!   a hint, never a verdict. A member whose own health is poor (see below), or whose
//!   scheduled target is gone, goes round its own order instead. No ack within
//!   `probe_timeout` → `k` others are asked to probe it (ping-req). Nothing by the end of the
//!   interval → suspect.
//! * A suspicion times out after `max` (no confirmations) down to `min` (k independent
//!   confirmations) — Lifeguard's formula — where
//!   `min = mult * max(1, log10 min(N, 20)) * interval` and `max = max_mult * min`; then the
//!   member is dead. memberlist's minimum grows with log N for good, to let a refutation
//!   spread over rounds of periodic gossip; ours is pushed at once (milliseconds per hop),
//!   so past 20 members more time buys no safety.
//! * Local health (Lifeguard): failed probes and refutations of our own suspicion raise an
//!   awareness score that stretches our timeouts; successful probes lower it. A tick long
//!   after the previous one means we were paused (GC, SIGSTOP, starved CPU): the probe in
//!   flight is dropped instead of accusing someone for our own stall.

use crate::event::{Generation, Incarnation, MemberState, NodeId};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub struct SwimConfig {
    pub probe_interval: Duration,
    /// Wait for a direct ack before asking others (scaled by local health).
    pub probe_timeout: Duration,
    /// Members asked to probe on our behalf (k).
    pub indirect_checks: usize,
    pub suspicion_mult: u32,
    pub suspicion_max_mult: u32,
    /// Upper bound of the local-health score (timeouts scale by score + 1).
    pub awareness_max: u32,
    /// Dead and left members are forgotten this long after they became so.
    pub tombstone_ttl: Duration,
    /// A member alive this long without a flip is `stable`.
    pub stable_after: Duration,
}

impl Default for SwimConfig {
    /// Tuned to beat memberlist's LAN defaults (probe 1 s, timeout 500 ms, 3 indirect checks,
    /// suspicion mult 4) on detection time, with Lifeguard's protections against false alarms.
    fn default() -> Self {
        SwimConfig {
            probe_interval: Duration::from_millis(300),
            probe_timeout: Duration::from_millis(150),
            indirect_checks: 3,
            suspicion_mult: 3,
            suspicion_max_mult: 6,
            awareness_max: 8,
            tombstone_ttl: Duration::from_secs(3600),
            stable_after: Duration::from_secs(30),
        }
    }
}

/// Probe traffic, carried in frames next to gossip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SwimMsg {
    /// One-letter tags on the wire: probes are most of an idle cluster's traffic.
    #[serde(rename = "P")]
    Ping { seq: u64 },
    #[serde(rename = "A")]
    Ack { seq: u64 },
    /// "Probe `target` for me and tell me if it answers."
    #[serde(rename = "R")]
    PingReq { seq: u64, target: NodeId },
    /// The answer to a ping-req: `target` acked.
    #[serde(rename = "I")]
    IndirectAck { seq: u64, target: NodeId },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Send {
        to: NodeId,
        msg: SwimMsg,
    },
    /// Announce `NodeSuspected` (by us).
    Suspect {
        node: NodeId,
        generation: Generation,
        incarnation: Incarnation,
    },
    /// Announce `NodeDead`.
    Dead {
        node: NodeId,
        generation: Generation,
        incarnation: Incarnation,
    },
    /// A tombstone outlived its TTL: forget the member.
    Reap {
        node: NodeId,
        generation: Generation,
    },
}

#[derive(Clone, Debug)]
struct MemberView {
    generation: Generation,
    incarnation: Incarnation,
    state: MemberState,
    /// When the current state began (our clock), in nanoseconds: half a `Duration`'s size,
    /// and there is one view per member on every node (see [`stamp`]).
    since: u64,
    /// alive <-> suspect flips seen.
    flips: u32,
}

impl MemberView {
    fn since(&self) -> Duration {
        Duration::from_nanos(self.since)
    }
}

/// A time of our clock as a [`MemberView::since`]: nanoseconds, which last 584 years.
fn stamp(now: Duration) -> u64 {
    u64::try_from(now.as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Clone, Debug)]
struct Probe {
    target: NodeId,
    seq: u64,
    started: Duration,
    indirect_sent: bool,
}

#[derive(Clone, Debug)]
struct Suspicion {
    generation: Generation,
    incarnation: Incarnation,
    started: Duration,
    confirmations: BTreeSet<NodeId>,
}

/// A relayed probe: `requester` asked us to ping `target` under their `seq`.
#[derive(Clone, Debug)]
struct Relay {
    requester: NodeId,
    their_seq: u64,
    target: NodeId,
    expires: Duration,
}

/// A member's health as the detector sees it (for status).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub id: NodeId,
    pub state: MemberState,
    pub stable: bool,
    pub flips: u32,
}

/// How our probes ended, since start (for metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeStats {
    /// Probes started (a direct ping to one member).
    pub started: u64,
    /// Answered by the target before we asked others.
    pub acked: u64,
    /// Answered (directly or through a helper) after we asked others.
    pub acked_late: u64,
    /// Unanswered within the probe interval: the target is suspected.
    pub failed: u64,
    /// Dropped because we ourselves stalled (nobody is accused).
    pub abandoned: u64,
    /// Ping-reqs sent to helpers.
    pub ping_reqs: u64,
}

pub struct Swim {
    me: NodeId,
    stats: ProbeStats,
    config: SwimConfig,
    rng: StdRng,
    /// Sorted by id in one vector (40 bytes a member; a B-tree took 43 and a hash map more):
    /// every node holds one view per member.
    members: litemap::LiteMap<NodeId, MemberView>,
    /// Members not dead or gone; kept as states change (timeouts scale with it every tick).
    live: usize,
    /// Dead and left members, waiting for their TTL; the reaper looks at these only.
    tombstones: BTreeSet<NodeId>,
    /// Our own shuffled round-robin, for when the shared schedule does not serve.
    order: Vec<NodeId>,
    next: usize,
    /// Members to probe before the schedule (hints: a closed connection, a suspicion), the
    /// latest last.
    urgent: Vec<NodeId>,
    /// The schedule's round of our last scheduled probe.
    round: u64,
    probe: Option<Probe>,
    /// The target of our last failed probe: its suspicion is our own verdict, not news.
    last_failed: Option<NodeId>,
    next_probe_at: Duration,
    last_tick: Option<Duration>,
    seq: u64,
    // B-trees, not hash maps: iteration order is part of the output, which must be
    // deterministic for a given seed and input.
    suspicions: BTreeMap<NodeId, Suspicion>,
    relays: BTreeMap<u64, Relay>,
    awareness: u32,
}

impl Swim {
    pub fn new(me: NodeId, config: SwimConfig, seed: u64) -> Self {
        Swim {
            me,
            stats: ProbeStats::default(),
            config,
            rng: StdRng::seed_from_u64(seed),
            members: litemap::LiteMap::new(),
            live: 0,
            tombstones: BTreeSet::new(),
            order: Vec::new(),
            next: 0,
            urgent: Vec::new(),
            round: 0,
            probe: None,
            last_failed: None,
            next_probe_at: Duration::ZERO,
            last_tick: None,
            seq: 0,
            suspicions: BTreeMap::new(),
            relays: BTreeMap::new(),
            awareness: 0,
        }
    }

    pub fn config(&self) -> &SwimConfig {
        &self.config
    }

    pub fn probe_stats(&self) -> ProbeStats {
        self.stats
    }

    /// Local health score (0 = healthy).
    pub fn awareness(&self) -> u32 {
        self.awareness
    }

    fn scaled(&self, d: Duration) -> Duration {
        d * (self.awareness + 1)
    }

    /// Number of members not known to be gone (including us).
    fn cluster_size(&self) -> usize {
        1 + self.live
    }

    /// Keeps `live` and `tombstones` in step with a member's state change.
    fn note_state(&mut self, id: &NodeId, before: Option<MemberState>, after: Option<MemberState>) {
        let gone = |s: Option<MemberState>| s.map(|s| s.is_tombstone());
        match (gone(before), gone(after)) {
            (b, a) if b == a => {}
            (b, a) => {
                if b == Some(false) {
                    self.live -= 1;
                }
                if b == Some(true) {
                    self.tombstones.remove(id);
                }
                if a == Some(false) {
                    self.live += 1;
                }
                if a == Some(true) {
                    self.tombstones.insert(id.clone());
                }
            }
        }
    }

    /// Lifeguard's suspicion timeout after `confirmations` independent suspicions.
    pub fn suspicion_timeout(&self, confirmations: usize) -> Duration {
        // Capped at 20 members: see the module doc.
        let n = self.cluster_size().clamp(1, 20) as f64;
        let min = self
            .config
            .probe_interval
            .mul_f64(self.config.suspicion_mult as f64 * n.log10().max(1.0));
        let max = min * self.config.suspicion_max_mult;
        let k = self
            .config
            .indirect_checks
            .min(self.cluster_size().saturating_sub(2))
            .max(1) as f64;
        let c = confirmations as f64;
        let shrink = ((c + 1.0).ln() / (k + 1.0).ln()).min(1.0);
        max.saturating_sub((max - min).mul_f64(shrink)).max(min)
    }

    /// Tells the detector what the roster says about a member (call on every change).
    pub fn update_member(
        &mut self,
        id: &NodeId,
        generation: Generation,
        incarnation: Incarnation,
        state: MemberState,
        now: Duration,
    ) {
        if *id == self.me {
            return;
        }
        match self.members.get_mut(id) {
            Some(m)
                if (m.generation, m.incarnation, m.state) == (generation, incarnation, state) => {}
            Some(m) => {
                let before = m.state;
                let flipped = matches!(
                    (m.state, state),
                    (MemberState::Alive, MemberState::Suspect)
                        | (MemberState::Suspect, MemberState::Alive)
                );
                if flipped {
                    m.flips += 1;
                }
                if m.state != state || m.generation != generation {
                    m.since = stamp(now);
                }
                m.generation = generation;
                m.incarnation = incarnation;
                m.state = state;
                self.note_state(id, Some(before), Some(state));
            }
            None => {
                crate::growth::insert(
                    &mut self.members,
                    id.clone(),
                    MemberView {
                        generation,
                        incarnation,
                        state,
                        since: stamp(now),
                        flips: 0,
                    },
                );
                self.note_state(id, None, Some(state));
                // New members go to a random place in the probe order (a swap, not a shift:
                // joining a member must not cost the size of the cluster).
                crate::growth::reserve_one(&mut self.order);
                self.order.push(id.clone());
                let at = rand::Rng::gen_range(&mut self.rng, 0..self.order.len());
                let last = self.order.len() - 1;
                self.order.swap(at, last);
            }
        }
        // A suspicion ends when the member is alive at a higher incarnation, dead or gone.
        if let Some(s) = self.suspicions.get(id) {
            let resolved = match state {
                MemberState::Alive => incarnation > s.incarnation || generation != s.generation,
                MemberState::Suspect => generation != s.generation,
                MemberState::Dead | MemberState::Left => true,
            };
            if resolved {
                self.suspicions.remove(id);
            }
        }
        if state == MemberState::Suspect {
            self.open_suspicion(id, generation, incarnation, now);
        }
    }

    /// Starts timing a suspicion of `id`, unless one is running already.
    fn open_suspicion(
        &mut self,
        id: &NodeId,
        generation: Generation,
        incarnation: Incarnation,
        now: Duration,
    ) {
        if !self.suspicions.contains_key(id) {
            // About 2k of the members that hear of it probe it next: their failed probes are
            // the confirmations that bring its end forward (Lifeguard's `k`), in one probe
            // interval instead of whenever their round-robin comes to it. 2k, not k: with
            // about k, fewer than k came in time half the time (a Poisson draw), and the
            // suspicion ran 2.4 s instead of 1.2 at 50 members. Not everyone: a member that
            // is only slow would get a ping from all N at once (50 nodes on 2 cores under bulk
            // load: 56 false deaths instead of 0 to 8).
            let ours = self.last_failed.as_ref() == Some(id);
            let others = self.cluster_size().saturating_sub(1).max(1);
            let share = (2.0 * self.config.indirect_checks as f64 / others as f64).min(1.0);
            if !ours && rand::Rng::gen_bool(&mut self.rng, share) {
                self.handle_closed(id);
            }
            self.suspicions.insert(
                id.clone(),
                Suspicion {
                    generation,
                    incarnation,
                    started: now,
                    confirmations: BTreeSet::new(),
                },
            );
        }
    }

    /// Adds the members a node starts with (its data dir's roster) at once. Into an empty
    /// view they are built in one pass: a B-tree built from sorted keys fills its nodes,
    /// where one member at a time leaves them a third empty (measured: 124 bytes per member
    /// before, with a 16-byte id and a 40-byte view; at 10,000 simulated nodes of 10,000
    /// members each, most of the simulation's memory).
    pub fn add_members(
        &mut self,
        members: impl IntoIterator<Item = (NodeId, Generation, Incarnation, MemberState)>,
        now: Duration,
    ) {
        if !self.members.is_empty() {
            for (id, generation, incarnation, state) in members {
                self.update_member(&id, generation, incarnation, state, now);
            }
            return;
        }
        let mut members: Vec<(NodeId, Generation, Incarnation, MemberState)> = members
            .into_iter()
            .filter(|(id, ..)| *id != self.me)
            .collect();
        members.sort_by(|a, b| a.0.cmp(&b.0));
        members.dedup_by(|a, b| a.0 == b.0);
        let views: Vec<(NodeId, MemberView)> = members
            .iter()
            .map(|(id, generation, incarnation, state)| {
                let view = MemberView {
                    generation: *generation,
                    incarnation: *incarnation,
                    state: *state,
                    since: stamp(now),
                    flips: 0,
                };
                (id.clone(), view)
            })
            .collect();
        self.members = litemap::LiteMap::from_sorted_store_unchecked(views);
        let mut order = Vec::with_capacity(members.len());
        for (id, generation, incarnation, state) in members {
            self.note_state(&id, None, Some(state));
            if state == MemberState::Suspect {
                self.open_suspicion(&id, generation, incarnation, now);
            }
            order.push(id);
        }
        order.shuffle(&mut self.rng);
        self.order = order;
        self.next = 0;
    }

    /// Forgets a member (it was reaped).
    pub fn remove_member(&mut self, id: &NodeId) {
        if let Some(m) = self.members.remove(id) {
            self.note_state(id, Some(m.state), None);
        }
        self.order.retain(|x| x != id);
        self.urgent.retain(|x| x != id);
        self.suspicions.remove(id);
    }

    /// Another member suspects `node` at `incarnation`: a confirmation that shortens ours.
    pub fn handle_suspicion(&mut self, node: &NodeId, incarnation: Incarnation, by: &NodeId) {
        if let Some(s) = self.suspicions.get_mut(node) {
            if s.incarnation == incarnation && *by != self.me {
                s.confirmations.insert(by.clone());
            }
        }
    }

    /// The connection to `peer` closed: probe it next (a hint, not a verdict).
    pub fn handle_closed(&mut self, peer: &NodeId) {
        if self.members.contains_key(peer) {
            self.urgent.retain(|x| x != peer);
            self.urgent.push(peer.clone());
        }
    }

    /// We learned that others suspect us and refuted: we may be the slow one.
    pub fn handle_refuted(&mut self) {
        self.awareness = (self.awareness + 1).min(self.config.awareness_max);
    }

    pub fn handle_message(&mut self, from: &NodeId, msg: SwimMsg, now: Duration) -> Vec<Output> {
        match msg {
            SwimMsg::Ping { seq } => vec![Output::Send {
                to: from.clone(),
                msg: SwimMsg::Ack { seq },
            }],
            SwimMsg::Ack { seq } => {
                if let Some(relay) = self.relays.remove(&seq) {
                    return vec![Output::Send {
                        to: relay.requester,
                        msg: SwimMsg::IndirectAck {
                            seq: relay.their_seq,
                            target: relay.target,
                        },
                    }];
                }
                self.ack(seq, from);
                Vec::new()
            }
            SwimMsg::IndirectAck { seq, target } => {
                self.ack(seq, &target);
                Vec::new()
            }
            SwimMsg::PingReq { seq, target } => {
                self.seq += 1;
                let ours = self.seq;
                self.relays.insert(
                    ours,
                    Relay {
                        requester: from.clone(),
                        their_seq: seq,
                        target: target.clone(),
                        expires: now + self.config.probe_interval,
                    },
                );
                vec![Output::Send {
                    to: target,
                    msg: SwimMsg::Ping { seq: ours },
                }]
            }
        }
    }

    fn ack(&mut self, seq: u64, from: &NodeId) {
        if self
            .probe
            .as_ref()
            .is_some_and(|p| p.seq == seq && p.target == *from)
        {
            let late = self.probe.take().is_some_and(|p| p.indirect_sent);
            if late {
                self.stats.acked_late += 1;
            } else {
                self.stats.acked += 1;
            }
            self.awareness = self.awareness.saturating_sub(1);
        }
    }

    /// Advances time: starts probes, escalates them, ends suspicions, reaps tombstones.
    pub fn tick(&mut self, now: Duration) -> Vec<Output> {
        let mut out = Vec::new();
        let paused = self
            .last_tick
            .is_some_and(|t| now.saturating_sub(t) > self.config.probe_interval * 2);
        self.last_tick = Some(now);
        if paused {
            // We stalled: whatever did not answer meanwhile may well be our fault.
            if self.probe.take().is_some() {
                self.stats.abandoned += 1;
            }
            self.awareness = (self.awareness + 1).min(self.config.awareness_max);
            self.next_probe_at = now;
            for s in self.suspicions.values_mut() {
                s.started = s
                    .started
                    .max(now.saturating_sub(self.config.probe_interval));
            }
        }
        self.relays.retain(|_, r| r.expires > now);

        // The probe in flight: escalate to ping-req, or give up and suspect.
        if let Some(p) = self.probe.clone() {
            let elapsed = now.saturating_sub(p.started);
            if elapsed >= self.scaled(self.config.probe_interval) {
                self.probe = None;
                self.stats.failed += 1;
                self.last_failed = Some(p.target.clone());
                self.awareness = (self.awareness + 1).min(self.config.awareness_max);
                if let Some(m) = self.members.get(&p.target) {
                    // Also when already suspected: our independent failure is a confirmation
                    // that shortens everyone's suspicion timeout (Lifeguard).
                    if matches!(m.state, MemberState::Alive | MemberState::Suspect) {
                        out.push(Output::Suspect {
                            node: p.target.clone(),
                            generation: m.generation,
                            incarnation: m.incarnation,
                        });
                    }
                }
            } else if !p.indirect_sent && elapsed >= self.scaled(self.config.probe_timeout) {
                let helpers = self.helpers(&p.target);
                self.stats.ping_reqs += helpers.len() as u64;
                for h in helpers {
                    out.push(Output::Send {
                        to: h,
                        msg: SwimMsg::PingReq {
                            seq: p.seq,
                            target: p.target.clone(),
                        },
                    });
                }
                if let Some(p) = self.probe.as_mut() {
                    p.indirect_sent = true;
                }
            }
        }

        // A new probe each interval.
        if self.probe.is_none() && now >= self.next_probe_at {
            if let Some(target) = self.next_target(now) {
                self.seq += 1;
                self.stats.started += 1;
                self.probe = Some(Probe {
                    target: target.clone(),
                    seq: self.seq,
                    started: now,
                    indirect_sent: false,
                });
                out.push(Output::Send {
                    to: target,
                    msg: SwimMsg::Ping { seq: self.seq },
                });
            }
            let interval = self.config.probe_interval;
            self.next_probe_at = self.next_slot(now + self.scaled(interval) - interval / 2);
        }

        // Suspicions that ran out.
        let expired: Vec<NodeId> = self
            .suspicions
            .iter()
            .filter(|(_, s)| {
                now.saturating_sub(s.started) >= self.suspicion_timeout(s.confirmations.len())
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            let s = self.suspicions.remove(&id).expect("listed");
            out.push(Output::Dead {
                node: id,
                generation: s.generation,
                incarnation: s.incarnation,
            });
        }

        // Tombstones past their TTL.
        let ttl = self.config.tombstone_ttl;
        for id in &self.tombstones {
            let m = self.members.get(id).expect("a tombstone is a member");
            if now.saturating_sub(m.since()) >= ttl {
                out.push(Output::Reap {
                    node: id.clone(),
                    generation: m.generation,
                });
            }
        }
        out
    }

    /// Next probe target: a hinted member, else the schedule's, else our round-robin's.
    fn next_target(&mut self, now: Duration) -> Option<NodeId> {
        while let Some(id) = self.urgent.pop() {
            if self.is_live(&id) {
                return Some(id);
            }
        }
        self.scheduled_target(now)
            .or_else(|| self.round_robin_target())
    }

    fn is_live(&self, id: &NodeId) -> bool {
        self.members
            .get(id)
            .is_some_and(|m| !m.state.is_tombstone())
    }

    /// Our place in the schedule: our rank among all members by id (us included; the gone
    /// too, so that every member counts the same ranks) and how many there are.
    fn rank(&self) -> (u64, u64) {
        let i = self.members.find_index(&self.me).unwrap_or_else(|i| i);
        (i as u64, self.members.len() as u64 + 1)
    }

    /// Our probes fall at `phase + p * interval` of the shared clock, with the phases spread
    /// evenly by rank (`interval * rank / n`): no burst of probes at one instant.
    fn phase_ns(&self) -> u128 {
        let (i, n) = self.rank();
        self.config.probe_interval.as_nanos() * u128::from(i) / u128::from(n)
    }

    /// The first of our probe slots at or after `at`.
    fn next_slot(&self, at: Duration) -> Duration {
        let interval = self.config.probe_interval.as_nanos();
        if interval == 0 {
            return at;
        }
        let phase = self.phase_ns();
        let p = at.as_nanos().saturating_sub(phase).div_ceil(interval);
        let ns = phase + p * interval;
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// The slot nearest `now`: the schedule's round.
    fn slot_round(&self, now: Duration) -> u64 {
        let interval = self.config.probe_interval.as_nanos().max(1);
        let since = (now.as_nanos() + interval / 2).saturating_sub(self.phase_ns());
        u64::try_from(since / interval).unwrap_or(u64::MAX)
    }

    /// The shared schedule: in round `p` the member of rank `i` probes the one of rank
    /// `i - 1 - p mod (n - 1)` (mod n). For each round that maps ranks one to one and never
    /// to themselves, so every member is probed once a round, and each prober goes round all
    /// others in n - 1 rounds. With the phases above, the member probing a given one moves up
    /// a rank each round, so its probes come `interval * (1 + 1/n)` apart (at most
    /// `1 + 2/n`), where a random round-robin leaves a member unprobed for a whole interval
    /// more than a third of the time. It needs what members usually have: the same list
    /// and clocks that agree to a few milliseconds (the node counts from the UNIX epoch);
    /// where they do not, it is as good as a random order. While our own health is poor
    /// (we probe less often) we take the next round instead of the clock's, so that we
    /// still go round everyone.
    fn scheduled_target(&mut self, now: Duration) -> Option<NodeId> {
        let (i, n) = self.rank();
        if n < 2 {
            return None;
        }
        self.round = if self.awareness == 0 {
            self.slot_round(now)
        } else {
            self.round.wrapping_add(1)
        };
        let offset = 1 + self.round % (n - 1);
        let rank = (i + n - offset) % n;
        let index = if rank < i { rank } else { rank - 1 };
        let (id, m) = self.members.get_indexed(index as usize)?;
        (!m.state.is_tombstone()).then(|| id.clone())
    }

    /// Our own round-robin over a shuffled order of the live members.
    fn round_robin_target(&mut self) -> Option<NodeId> {
        for _ in 0..self.order.len() {
            if self.next >= self.order.len() {
                self.next = 0;
                self.order.shuffle(&mut self.rng);
            }
            let id = self.order[self.next].clone();
            self.next += 1;
            if self
                .members
                .get(&id)
                .is_some_and(|m| !m.state.is_tombstone())
            {
                return Some(id);
            }
        }
        None
    }

    /// Up to k random live members other than `target`, to probe it for us.
    fn helpers(&mut self, target: &NodeId) -> Vec<NodeId> {
        let candidates: Vec<NodeId> = self
            .members
            .iter()
            .filter(|(id, m)| *id != target && m.state == MemberState::Alive)
            .map(|(id, _)| id.clone())
            .collect();
        candidates
            .choose_multiple(&mut self.rng, self.config.indirect_checks)
            .cloned()
            .collect()
    }

    /// Per-member health for status: state, stability and flips.
    pub fn health(&self, now: Duration) -> Vec<Health> {
        self.members
            .iter()
            .map(|(id, m)| Health {
                id: id.clone(),
                state: m.state,
                stable: m.state == MemberState::Alive
                    && now.saturating_sub(m.since()) >= self.config.stable_after,
                flips: m.flips,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn swim_with(members: &[&str]) -> Swim {
        let mut s = Swim::new(id("me"), SwimConfig::default(), 1);
        for m in members {
            s.update_member(&id(m), 1, 0, MemberState::Alive, ms(0));
        }
        s
    }

    fn sends(out: &[Output]) -> Vec<(NodeId, SwimMsg)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Send { to, msg } => Some((to.clone(), msg.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_answered_probe_accuses_nobody() {
        let mut s = swim_with(&["a", "b", "c"]);
        let out = s.tick(ms(0));
        let (target, msg) = sends(&out).pop().unwrap();
        let SwimMsg::Ping { seq } = msg else {
            panic!("{msg:?}")
        };
        s.handle_message(&target, SwimMsg::Ack { seq }, ms(10));
        let stats = s.probe_stats();
        assert_eq!((stats.started, stats.acked, stats.failed), (1, 1, 0));
        for t in (10..3000).step_by(10) {
            let out = s.tick(ms(t));
            assert!(
                !out.iter()
                    .any(|o| matches!(o, Output::Suspect { node, .. } if *node == target)),
                "at {t}"
            );
            // Everyone answers.
            for (to, msg) in sends(&out) {
                if let SwimMsg::Ping { seq } = msg {
                    s.handle_message(&to, SwimMsg::Ack { seq }, ms(t));
                }
            }
        }
        assert_eq!(s.awareness(), 0);
    }

    #[test]
    fn silence_leads_to_ping_req_then_suspicion_then_death() {
        let mut s = swim_with(&["a", "b", "c"]);
        // Everyone but "a" answers; "a" is silent.
        let mut suspected_at = None;
        let mut dead_at = None;
        let mut saw_ping_req = false;
        for t in (0..20_000).step_by(10) {
            let now = ms(t);
            let out = s.tick(now);
            for o in &out {
                match o {
                    Output::Suspect {
                        node,
                        generation,
                        incarnation,
                    } => {
                        assert_eq!(node.as_str(), "a");
                        suspected_at.get_or_insert(t);
                        s.update_member(node, *generation, *incarnation, MemberState::Suspect, now);
                    }
                    Output::Dead {
                        node,
                        generation,
                        incarnation,
                    } => {
                        assert_eq!(node.as_str(), "a");
                        dead_at.get_or_insert(t);
                        s.update_member(node, *generation, *incarnation, MemberState::Dead, now);
                    }
                    Output::Send {
                        to,
                        msg: SwimMsg::PingReq { target, .. },
                    } => {
                        assert_eq!(target.as_str(), "a");
                        assert_ne!(to.as_str(), "a");
                        saw_ping_req = true;
                    }
                    Output::Send {
                        to,
                        msg: SwimMsg::Ping { seq },
                    } if to.as_str() != "a" => {
                        s.handle_message(to, SwimMsg::Ack { seq: *seq }, now);
                    }
                    _ => {}
                }
            }
            if dead_at.is_some() {
                break;
            }
        }
        assert!(saw_ping_req);
        let stats = s.probe_stats();
        assert!(stats.failed >= 1 && stats.ping_reqs >= 1, "{stats:?}");
        assert!(stats.acked >= 1, "the others answered: {stats:?}");
        let ended = stats.acked + stats.acked_late + stats.failed + stats.abandoned;
        let in_flight = u64::from(s.probe.is_some());
        assert_eq!(
            stats.started,
            ended + in_flight,
            "each probe ended one way: {stats:?}"
        );
        let (suspected, dead) = (suspected_at.unwrap(), dead_at.unwrap());
        // Without confirmations the suspicion runs its full (max) timeout.
        let max = s.suspicion_timeout(0).as_millis() as u64;
        assert!(dead - suspected >= max, "{suspected} -> {dead}, max {max}");
    }

    #[test]
    fn confirmations_shrink_the_suspicion_timeout_to_the_minimum() {
        let s = swim_with(&["a", "b", "c", "d", "e"]);
        let t0 = s.suspicion_timeout(0);
        let t1 = s.suspicion_timeout(1);
        let t3 = s.suspicion_timeout(3);
        assert!(t0 > t1 && t1 > t3, "{t0:?} {t1:?} {t3:?}");
        assert_eq!(t3, s.suspicion_timeout(10), "never below the minimum");
        assert_eq!(t0, t3 * s.config().suspicion_max_mult);
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("m{i}")).collect()
    }

    fn swim_of(n: usize, seed: u64) -> Swim {
        let mut s = Swim::new(id("me"), SwimConfig::default(), seed);
        for m in names(n - 1) {
            s.update_member(&id(&m), 1, 0, MemberState::Alive, ms(0));
        }
        s
    }

    /// The minimum pays for the suspect's time to hear of it and answer, not for rounds of
    /// periodic gossip (ours pushes each change at once): it grows with log10 N up to 20
    /// members and no further (memberlist's formula gives 1.53 s at 50 members).
    #[test]
    fn the_suspicion_minimum_stops_growing_at_twenty_members() {
        let min = |n: usize| swim_of(n, 1).suspicion_timeout(3);
        assert_eq!(min(5), ms(900), "3 x interval below 10 members");
        assert!(min(10) < min(15) && min(15) < min(20));
        assert_eq!(min(20), min(50));
        assert_eq!(min(20), min(10_000));
        assert_eq!(
            min(50),
            SwimConfig::default()
                .probe_interval
                .mul_f64(3.0 * 20f64.log10())
        );
    }

    /// About 2k (6) of the members that hear of a suspicion probe the suspect next, so that
    /// the confirmations which shorten it come within a probe interval; not all of them (a
    /// member that is merely slow would get N pings at once).
    #[test]
    fn about_2k_members_that_hear_of_a_suspicion_probe_the_suspect_next() {
        let next_probe_is = |n: usize, seed: u64| {
            let mut s = swim_of(n, seed);
            let suspect = id("m2");
            s.update_member(&suspect, 1, 0, MemberState::Suspect, ms(0));
            sends(&s.tick(ms(0)))
                .iter()
                .any(|(to, msg)| *to == suspect && matches!(msg, SwimMsg::Ping { .. }))
        };
        let trials = 400;
        let share = |n: usize| {
            (0..trials).filter(|&seed| next_probe_is(n, seed)).count() as f64 / trials as f64
        };
        // Of 49 others, 6 / 49 = 12% plus the round-robin's 2%; round-robin alone: 1 / 49.
        let at_50 = share(50);
        assert!((0.09..0.20).contains(&at_50), "{at_50}");
        // Of 6 or fewer others, all.
        assert_eq!(share(7), 1.0);
    }

    /// A node cut off from everyone suspects one member per probe; its own verdicts are not
    /// news to it, so it goes on round the others instead of probing the one it just
    /// suspected again (that slowed a lone node's split-brain downing past its deadline).
    #[test]
    fn our_own_suspicion_does_not_bring_the_suspect_forward() {
        for seed in 0..50 {
            let mut s = swim_of(7, seed);
            let mut probed = Vec::new();
            for t in (0..20_000).step_by(10) {
                let now = ms(t);
                for o in s.tick(now) {
                    match o {
                        Output::Send {
                            to,
                            msg: SwimMsg::Ping { .. },
                        } => probed.push(to),
                        Output::Suspect {
                            node,
                            generation,
                            incarnation,
                        } => s.update_member(
                            &node,
                            generation,
                            incarnation,
                            MemberState::Suspect,
                            now,
                        ),
                        _ => {}
                    }
                }
                if probed.len() == 6 {
                    break;
                }
            }
            let distinct: BTreeSet<&NodeId> = probed.iter().collect();
            assert_eq!(distinct.len(), 6, "seed {seed}: {probed:?}");
        }
    }

    #[test]
    fn refutation_ends_a_suspicion_and_counts_a_flip() {
        let mut s = swim_with(&["a"]);
        s.update_member(&id("a"), 1, 0, MemberState::Suspect, ms(0));
        s.update_member(&id("a"), 1, 1, MemberState::Alive, ms(100));
        for t in (100..30_000).step_by(100) {
            assert!(!s
                .tick(ms(t))
                .iter()
                .any(|o| matches!(o, Output::Dead { .. })));
        }
        let h = s.health(ms(30_000));
        assert_eq!(h[0].flips, 2);
    }

    #[test]
    fn a_pause_of_our_own_accuses_nobody() {
        let mut s = swim_with(&["a", "b"]);
        s.tick(ms(0)); // a probe goes out and is never answered: we are frozen
        let out = s.tick(ms(10_000));
        assert!(
            !out.iter().any(|o| matches!(o, Output::Suspect { .. })),
            "{out:?}"
        );
        assert!(s.awareness() > 0);
    }

    /// The detectors of `n` members that all know each other, alive.
    fn cluster(n: usize) -> Vec<Swim> {
        let all = names(n);
        all.iter()
            .enumerate()
            .map(|(i, me)| {
                let mut s = Swim::new(id(me), SwimConfig::default(), i as u64);
                for m in &all {
                    s.update_member(&id(m), 1, 0, MemberState::Alive, ms(0));
                }
                s
            })
            .collect()
    }

    /// Share of (member, interval) pairs in which nobody probed the member, for `n` members
    /// whose clocks read `offset(i)` ahead of the true time, over a minute.
    fn unprobed_share(n: usize, offset: impl Fn(usize) -> u64) -> f64 {
        let mut nodes = cluster(n);
        let (start, end, interval) = (2_000, 62_000, 300);
        let mut probed: BTreeSet<(NodeId, u64)> = BTreeSet::new();
        for t in (0..end).step_by(10) {
            for (i, node) in nodes.iter_mut().enumerate() {
                let now = ms(t + offset(i));
                for (to, msg) in sends(&node.tick(now)) {
                    if let SwimMsg::Ping { seq } = msg {
                        if t >= start {
                            probed.insert((to.clone(), (t - start) / interval));
                        }
                        node.handle_message(&to, SwimMsg::Ack { seq }, now);
                    }
                }
            }
        }
        let slots = n as u64 * ((end - start) / interval);
        1.0 - probed.len() as f64 / slots as f64
    }

    /// The schedule asks for clocks that agree; where they do not (here up to a minute
    /// apart), a member goes unprobed for an interval about as often as under shuffled
    /// round-robins, (1 - 1/(n-1))^(n-1) of the intervals, about 1/e, or less (measured:
    /// 0.24 against 0.36 at 30 members; 0.03 on one clock).
    #[test]
    fn with_clocks_that_disagree_the_schedule_is_no_worse_than_shuffled_orders() {
        let n = 30;
        let shuffled = (1.0 - 1.0 / (n as f64 - 1.0)).powi(n as i32 - 1);
        let agreed = unprobed_share(n, |_| 0);
        let skewed = unprobed_share(n, |i| (i as u64 * 7_919_777) % 60_000);
        println!("unprobed intervals: agreed clocks {agreed:.3}, skewed {skewed:.3}, shuffled orders {shuffled:.3}");
        // On one clock, only the probes 1 + 1/n intervals apart leave an interval out now
        // and then (about 1/n of them).
        assert!(agreed < 2.0 / n as f64, "agreed clocks: {agreed}");
        assert!(
            skewed < shuffled + 0.05,
            "skewed clocks: {skewed}, shuffled: {shuffled}"
        );
    }

    /// Members that share a clock and a member list probe on one schedule: every member is
    /// probed about once an interval, never left unprobed for much longer (a shuffled
    /// round-robin each leaves a member of 50 unprobed for 2-3 intervals now and then, and
    /// a frozen member waits that long before anyone notices).
    #[test]
    fn on_the_shared_schedule_every_member_is_probed_once_an_interval() {
        for n in [2usize, 5, 50] {
            let mut nodes = cluster(n);
            // Each node ticks every 10 ms from its own start, as drivers do.
            let mut probed: BTreeMap<NodeId, Vec<u64>> = BTreeMap::new();
            for t in (0..30_000).step_by(10) {
                for (i, node) in nodes.iter_mut().enumerate() {
                    let now = ms(t + (i as u64 * 7) % 10);
                    for (to, msg) in sends(&node.tick(now)) {
                        if let SwimMsg::Ping { seq } = msg {
                            probed.entry(to.clone()).or_default().push(t);
                            node.handle_message(&to, SwimMsg::Ack { seq }, now);
                        }
                    }
                }
            }
            let interval = 300;
            for (member, at) in &probed {
                // After the first second (the first probes go out at start, off the schedule).
                let at: Vec<u64> = at.iter().copied().filter(|t| *t >= 1_000).collect();
                let widest = at.windows(2).map(|w| w[1] - w[0]).max().unwrap();
                let bound = interval + 2 * interval / n as u64 + 10;
                assert!(
                    widest <= bound,
                    "n={n}: {member:?} unprobed for {widest} ms"
                );
                assert!(
                    at.len() as u64 >= 29_000 / bound,
                    "n={n}: {member:?} probed {} times",
                    at.len()
                );
            }
            assert_eq!(probed.len(), n);
        }
    }

    #[test]
    fn a_closed_connection_makes_that_member_the_next_probe() {
        let mut s = swim_with(&["a", "b", "c", "d", "e", "f"]);
        s.tick(ms(0));
        s.handle_message(&id("x"), SwimMsg::Ack { seq: 0 }, ms(1));
        s.handle_closed(&id("e"));
        // Finish the current probe, then the next one must be "e".
        let current = s.probe.as_ref().unwrap().clone();
        s.handle_message(&current.target, SwimMsg::Ack { seq: current.seq }, ms(5));
        let out = s.tick(ms(300));
        assert_eq!(sends(&out)[0].0, id("e"));
    }

    #[test]
    fn ping_req_is_relayed_and_answered() {
        let mut s = swim_with(&["a", "b"]);
        let out = s.handle_message(
            &id("a"),
            SwimMsg::PingReq {
                seq: 77,
                target: id("b"),
            },
            ms(0),
        );
        let (to, msg) = sends(&out).pop().unwrap();
        assert_eq!(to, id("b"));
        let SwimMsg::Ping { seq } = msg else { panic!() };
        let out = s.handle_message(&id("b"), SwimMsg::Ack { seq }, ms(5));
        assert_eq!(
            sends(&out),
            vec![(
                id("a"),
                SwimMsg::IndirectAck {
                    seq: 77,
                    target: id("b")
                }
            )]
        );
    }

    #[test]
    fn tombstones_are_reaped_after_their_ttl() {
        let mut s = swim_with(&["a"]);
        s.update_member(&id("a"), 1, 0, MemberState::Dead, ms(0));
        let ttl = s.config().tombstone_ttl;
        assert!(!s
            .tick(ttl - ms(1))
            .iter()
            .any(|o| matches!(o, Output::Reap { .. })));
        assert!(s
            .tick(ttl)
            .iter()
            .any(|o| matches!(o, Output::Reap { node, .. } if *node == id("a"))));
    }

    proptest::proptest! {
        #[test]
        fn live_count_tombstones_and_probe_order_follow_the_members(
            ops in proptest::collection::vec((0u8..6, 0u8..4, proptest::bool::weighted(0.2)), 0..60),
        ) {
            let states = [
                MemberState::Alive,
                MemberState::Suspect,
                MemberState::Dead,
                MemberState::Left,
            ];
            let mut s = swim_with(&[]);
            for (m, st, remove) in ops {
                let who = id(&format!("m{m}"));
                if remove {
                    s.remove_member(&who);
                } else {
                    s.update_member(&who, 1, 0, states[st as usize], ms(0));
                }
                let live = s.members.values().filter(|m| !m.state.is_tombstone()).count();
                proptest::prop_assert_eq!(s.live, live);
                let gone: BTreeSet<NodeId> = s
                    .members
                    .iter()
                    .filter(|(_, m)| m.state.is_tombstone())
                    .map(|(id, _)| id.clone())
                    .collect();
                proptest::prop_assert_eq!(&s.tombstones, &gone);
                let mut order = s.order.clone();
                order.sort();
                let listed: Vec<NodeId> = s.members.keys().cloned().collect();
                proptest::prop_assert_eq!(order, listed);
            }
        }

        /// Members added at once end as members added one by one do: the same views, live
        /// count, tombstones, suspicions and probe targets (in another order).
        #[test]
        fn members_added_at_once_are_as_if_added_one_by_one(
            members in proptest::collection::vec((0u8..40, 1u64..3, 0u64..3, 0u8..4), 0..60),
            later in proptest::collection::vec((0u8..40, 0u8..4), 0..10),
        ) {
            let states = [
                MemberState::Alive,
                MemberState::Suspect,
                MemberState::Dead,
                MemberState::Left,
            ];
            let start: Vec<(NodeId, Generation, Incarnation, MemberState)> = members
                .iter()
                .map(|(m, g, i, st)| (id(&format!("m{m}")), *g, *i, states[*st as usize]))
                .chain([(id("me"), 1, 0, MemberState::Alive)])
                .collect();
            let mut bulk = swim_with(&[]);
            bulk.add_members(start.clone(), ms(5));
            let mut one = swim_with(&[]);
            // One by one, a repeated id counts as an update; at once, its first entry wins.
            let mut seen = BTreeSet::new();
            for (who, g, i, st) in &start {
                if seen.insert(who.clone()) {
                    one.update_member(who, *g, *i, *st, ms(5));
                }
            }
            for (m, st) in later {
                let who = id(&format!("m{m}"));
                for s in [&mut bulk, &mut one] {
                    s.update_member(&who, 2, 3, states[st as usize], ms(9));
                }
            }
            let view = |s: &Swim| -> Vec<(NodeId, Generation, Incarnation, MemberState, u64, u32)> {
                s.members
                    .iter()
                    .map(|(id, m)| (id.clone(), m.generation, m.incarnation, m.state, m.since, m.flips))
                    .collect()
            };
            proptest::prop_assert_eq!(view(&bulk), view(&one));
            proptest::prop_assert_eq!(bulk.live, one.live);
            proptest::prop_assert_eq!(&bulk.tombstones, &one.tombstones);
            let suspected = |s: &Swim| -> Vec<(NodeId, Generation, Incarnation)> {
                s.suspicions
                    .iter()
                    .map(|(id, x)| (id.clone(), x.generation, x.incarnation))
                    .collect()
            };
            proptest::prop_assert_eq!(suspected(&bulk), suspected(&one));
            let sorted = |s: &Swim| {
                let mut o = s.order.clone();
                o.sort();
                o
            };
            proptest::prop_assert_eq!(sorted(&bulk), sorted(&one));
        }
    }
}
