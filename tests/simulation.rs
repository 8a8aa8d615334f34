//! Deterministic simulation of whole nodes: every node is the real membership machine
//! (`gossip_roster::Machine`, the code `gossip-node` runs), in virtual time, seeded, over a
//! simulated network (delay, loss, partitions, connections with admission) and a simulated
//! disk per node (write latency, fsync policy, a crash losing the un-synced window, fsync
//! failure). The harness only carries bytes and records between machines: it holds no
//! protocol rule of its own.
//!
//! * Scenario tests: detection with lossy links, a pause, a partition, a join, a cold start.
//! * Chaos: random crashes (kill -9 and power loss), graceful restarts, data dirs restored
//!   from older copies, processes started with an id already alive elsewhere, pauses,
//!   partitions, loss, bulk registrations, fsync failures; then everything heals and the
//!   invariants are checked (see [`Sim::check_invariants`]). `CHAOS_SEEDS` seeds run in the
//!   default tests; `cargo test --release --test simulation -- --ignored chaos_many` runs
//!   thousands. A failure prints its seed; `SIM_SEED=n cargo test --test simulation
//!   chaos_one -- --nocapture` replays it.
//! * Scale: `cargo test --release --test simulation -- --ignored --nocapture scale_up_to_1000`
//!   prints the README table for 50, 200 and 1,000 nodes; `... scale_10000` for 10,000.

use gossip_roster::machine::downing::{DowningConfig, Strategy};
use gossip_roster::machine::{Command, Dest, Machine, MachineConfig, Ready, Reply};
use gossip_roster::message::Frame;
use gossip_roster::roster::Roster;
use gossip_roster::{
    ClusterEvent, GossipConfig, Health, Identity, MemberState, NodeId, SwimConfig,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::time::Duration;

const TICK_MS: u64 = 10;

/// How a simulated disk acknowledges and what a crash keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    /// Acknowledged once synced: nothing acknowledged is ever lost.
    Always,
    /// Acknowledged once written; synced every 5 ms: a power loss loses that window.
    Batch,
    /// Acknowledged once written; synced rarely (every 2 s here).
    Never,
}

/// One node's disk: the records written, how many of them are synced, writes in flight.
#[derive(Clone, Debug)]
struct Disk {
    policy: Policy,
    latency_ms: u64,
    records: Vec<ClusterEvent>,
    /// Records acknowledged (written to the OS): survive a process crash.
    written: usize,
    /// Records on stable storage: survive a power loss.
    synced: usize,
    last_sync_ms: u64,
    /// The next write fails (the disk is full): the process stops.
    fail_next: bool,
}

impl Disk {
    fn new(policy: Policy, latency_ms: u64) -> Disk {
        Disk {
            policy,
            latency_ms,
            records: Vec::new(),
            written: 0,
            synced: 0,
            last_sync_ms: 0,
            fail_next: false,
        }
    }

    /// The records a restart recovers: what a process crash keeps, or a power loss.
    fn recover(&mut self, power_loss: bool) {
        let keep = if power_loss {
            self.synced
        } else {
            self.written
        };
        self.records.truncate(keep);
        self.written = keep;
        self.synced = self.synced.min(keep);
    }
}

/// A process running one machine.
struct Proc {
    machine: Machine,
    /// Peer id -> the slot its connection leads to (as the driver's connection table).
    conns: HashMap<NodeId, usize>,
    paused_until: u64,
    next_tick: u64,
    /// Bumped at every start: events of an earlier process are dropped.
    epoch: u64,
    /// Command token -> (names, add).
    commands: HashMap<u64, (Vec<String>, bool)>,
    /// Tag commands waiting for their reply: the state each asks for.
    tag_commands: HashMap<u64, Vec<(String, Option<String>)>>,
    next_token: u64,
}

/// A machine slot: an address with a data dir, and the process on it (if running).
struct Slot {
    addr: String,
    id: NodeId,
    generation: u64,
    seeds: Vec<String>,
    disk: Disk,
    proc: Option<Proc>,
    epoch: u64,
    /// Acknowledged actor states: name -> (present, durable LSN when acknowledged).
    acked: BTreeMap<String, (bool, u64)>,
    /// Acknowledged tags: key -> (value, durable LSN when acknowledged).
    acked_tags: BTreeMap<String, (Option<String>, u64)>,
    /// A second process with an id that is alive elsewhere (never restarted).
    impostor: bool,
    bytes_sent: u64,
    /// Stopped on its own (WAL failure, id refused), with the reason.
    stopped: Option<String>,
}

#[derive(Debug)]
enum Event {
    Deliver {
        from: usize,
        to: usize,
        epoch: u64,
        wire: gossip_roster::machine::Wire,
        hops: u32,
    },
    Refused {
        to: usize,
        epoch: u64,
        addr: String,
        reason: String,
    },
    Written {
        slot: usize,
        epoch: u64,
        upto: usize,
        fail: bool,
    },
}

/// What a run measured.
#[derive(Debug, Default, PartialEq)]
struct Report {
    /// Crash -> every live node has the victim dead, in simulated ms.
    detection_ms: Option<u64>,
    /// Members declared dead somewhere while their process was running and reachable.
    false_positives: Vec<String>,
    messages_per_node_per_s: f64,
}

/// How a join spread: simulated time and hops from the joiner until every live node lists
/// it, and until it lists every live node.
#[derive(Debug, PartialEq)]
struct JoinReport {
    everyone_knows_it_ms: Option<u64>,
    rounds: u32,
    it_knows_everyone_ms: Option<u64>,
}

struct Sim {
    slots: Vec<Slot>,
    by_addr: HashMap<String, usize>,
    now: u64,
    rng: StdRng,
    loss: f64,
    /// (at, seq) -> event
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Event>,
    seq: u64,
    /// Partition: slot -> side; messages across sides are lost (connections stay up).
    side: Vec<u8>,
    messages: u64,
    /// When the last frame from one slot to another arrives: a connection delivers in order
    /// (TCP), so a frame never overtakes one sent before it to the same peer.
    arrivals: HashMap<(usize, usize), u64>,
    /// Every (node, generation, version) of a data event ever sent, with its content.
    versions: HashMap<(NodeId, u64, u64), u64>,
    check_versions: bool,
    violations: Vec<String>,
    /// Members declared dead, by whom, when (for false-positive accounting).
    declared_dead: Vec<(String, u64)>,
    /// Slots crashed, stopped or cut off at some point (a death of theirs is no false alarm).
    disturbed: HashSet<usize>,
    /// The joiner being traced, and per slot the hop at which it learned of it.
    watch: Option<NodeId>,
    hops: Vec<Option<u32>>,
    swim: SwimConfig,
    gossip: GossipConfig,
    downing: DowningConfig,
    /// Print every frame sent (set while measuring idle traffic with SIM_DEBUG).
    debug: bool,
    /// Count delivered frames by kind (SIM_KINDS, for the scale runs).
    count_kinds: bool,
    /// Frames and bytes delivered by kind.
    kinds: BTreeMap<String, (u64, u64)>,
    /// Dials of an address (whether a connection came of it), per address.
    dials: HashMap<String, u64>,
}

/// A number from the environment variable `name` (seed counts, sizes), else `default`.
fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn id(i: usize) -> NodeId {
    NodeId::new(format!("n{i:05}"))
}

fn addr(i: usize) -> String {
    format!("sim://{i}")
}

fn hello(i: usize) -> ClusterEvent {
    ClusterEvent::NewNode {
        node: id(i),
        generation: 1,
        version: 1,
        addr: addr(i),
        actors: Default::default(),
    }
}

impl Sim {
    fn empty(seed: u64, loss: f64) -> Sim {
        Sim {
            slots: Vec::new(),
            by_addr: HashMap::new(),
            now: 0,
            rng: StdRng::seed_from_u64(seed),
            loss,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            side: Vec::new(),
            messages: 0,
            arrivals: HashMap::new(),
            versions: HashMap::new(),
            check_versions: true,
            violations: Vec::new(),
            declared_dead: Vec::new(),
            disturbed: HashSet::new(),
            watch: None,
            hops: Vec::new(),
            swim: SwimConfig::default(),
            gossip: GossipConfig::default(),
            downing: DowningConfig::default(),
            debug: false,
            count_kinds: std::env::var("SIM_KINDS").is_ok(),
            kinds: BTreeMap::new(),
            dials: HashMap::new(),
        }
    }

    /// `n` nodes that all know each other from the start (the join is measured apart).
    fn new(n: usize, seed: u64, loss: f64) -> Sim {
        Sim::with_absent(n, n, seed, loss)
    }

    /// `n` slots of which the first `members` run and know each other; the rest are not
    /// started (see [`Sim::join`]).
    fn with_absent(n: usize, members: usize, seed: u64, loss: f64) -> Sim {
        Sim::empty(seed, loss).populate(n, members)
    }

    /// Adds `n` slots of which the first `members` run and know each other.
    fn populate(self, n: usize, members: usize) -> Sim {
        let mut sim = self;
        // One roster, cloned: records stay shared until a node changes them.
        let mut base = Roster::new();
        for i in 0..members {
            base.apply(&hello(i));
        }
        for i in 0..n {
            sim.add_slot(id(i), 1, Vec::new(), Disk::new(Policy::Batch, 1));
            if i < members {
                // Each node's own record is its to announce (identical to what the others
                // hold: no storm); everything else it knows from the start.
                let mut roster = base.clone();
                roster.remove(&id(i));
                roster.unforget(&id(i));
                roster.shrink_to_fit();
                sim.start_with(i, roster, 0);
            }
        }
        sim.check_versions = n <= 2_000;
        sim
    }

    fn add_slot(&mut self, node: NodeId, generation: u64, seeds: Vec<String>, disk: Disk) -> usize {
        let i = self.slots.len();
        let a = addr(i);
        self.by_addr.insert(a.clone(), i);
        self.slots.push(Slot {
            addr: a,
            id: node,
            generation,
            seeds,
            disk,
            proc: None,
            epoch: 0,
            acked: BTreeMap::new(),
            acked_tags: BTreeMap::new(),
            impostor: false,
            bytes_sent: 0,
            stopped: None,
        });
        self.side.push(0);
        self.hops.push(None);
        i
    }

    /// Starts a process on slot `i` from what its disk holds (as `Store::open` recovers).
    fn start(&mut self, i: usize) {
        let mut roster = Roster::new();
        for e in &self.slots[i].disk.records {
            roster.apply(e);
        }
        let last = self.slots[i].disk.records.len() as u64;
        // A graceful leave ends a generation: come back as a new one (as the node does).
        let me = Identity {
            id: self.slots[i].id.clone(),
            generation: self.slots[i].generation,
        };
        if me.has_left(&roster) {
            self.slots[i].generation += 1;
        }
        self.start_with(i, roster, last);
    }

    fn start_with(&mut self, i: usize, roster: Roster, last_lsn: u64) {
        let slot = &mut self.slots[i];
        slot.epoch += 1;
        slot.stopped = None;
        let config = MachineConfig {
            identity: Identity {
                id: slot.id.clone(),
                generation: slot.generation,
            },
            addr: slot.addr.clone(),
            seeds: slot.seeds.clone(),
            discovery: false,
            actors: Vec::new(),
            tags: Default::default(),
            gossip: self.gossip.clone(),
            swim: self.swim.clone(),
            max_frame_bytes: 1 << 20,
            largest_cluster: 0,
            version_floor: gossip_roster::machine::version_floor(self.now + 1),
            downing: self.downing.clone(),
        };
        let seed = self.rng.gen();
        let machine = Machine::new(
            config,
            roster,
            last_lsn,
            seed,
            Duration::from_millis(self.now),
        )
        .expect("valid config");
        let first_tick = self.now + self.rng.gen_range(0..TICK_MS);
        slot.proc = Some(Proc {
            machine,
            conns: HashMap::new(),
            paused_until: 0,
            next_tick: first_tick,
            epoch: slot.epoch,
            commands: HashMap::new(),
            tag_commands: HashMap::new(),
            next_token: 1,
        });
        self.carry_out(i);
    }

    /// Ends slot `i`'s process at once (kill -9, or a power loss that also loses the
    /// un-synced window). Its peers see their connections close.
    fn crash(&mut self, i: usize, power_loss: bool) {
        if self.slots[i].proc.take().is_none() {
            return;
        }
        self.disturbed.insert(i);
        let slot = &mut self.slots[i];
        if power_loss {
            // Acknowledged changes in the lost window are lost by design of the policy.
            let synced = slot.disk.synced as u64;
            slot.acked.retain(|_, (_, lsn)| *lsn <= synced);
            slot.acked_tags.retain(|_, (_, lsn)| *lsn <= synced);
        }
        slot.disk.recover(power_loss);
        self.close_connections_to(i);
    }

    fn close_connections_to(&mut self, i: usize) {
        let gone = self.slots[i].id.clone();
        for j in 0..self.slots.len() {
            let Some(p) = self.slots[j].proc.as_mut() else {
                continue;
            };
            if p.conns.get(&gone) == Some(&i) {
                p.conns.remove(&gone);
                p.machine.handle_disconnected(&gone);
            }
        }
    }

    /// A graceful stop: leave, wait for it to be durable and sent, then exit.
    fn stop_gracefully(&mut self, i: usize) {
        let Some(p) = self.slots[i].proc.as_mut() else {
            return;
        };
        let token = p.next_token;
        p.next_token += 1;
        p.machine.handle_command(token, Command::Leave);
        self.carry_out(i);
        let until = self.now + 200;
        self.run_until(until, |_| false);
        if self.slots[i].proc.is_some() {
            // A shutdown syncs the WAL.
            let d = &mut self.slots[i].disk;
            d.synced = d.written;
            self.crash(i, false);
        }
    }

    fn push(&mut self, at: u64, e: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, e);
    }

    /// Takes slot `i`'s Ready and carries it out as the driver does.
    fn carry_out(&mut self, i: usize) {
        let Some(p) = self.slots[i].proc.as_mut() else {
            return;
        };
        let ready: Ready = p.machine.take_ready();
        let epoch = p.epoch;
        if !ready.append.is_empty() {
            self.note_writes(i, &ready.append);
            let disk = &mut self.slots[i].disk;
            disk.records.extend(ready.append);
            let upto = disk.records.len();
            let fail = std::mem::take(&mut disk.fail_next);
            let at = self.now + disk.latency_ms;
            self.push(
                at,
                Event::Written {
                    slot: i,
                    epoch,
                    upto,
                    fail,
                },
            );
        }
        for (token, reply) in ready.replies {
            let p = self.slots[i].proc.as_mut().expect("running");
            let durable = p.machine.durable_lsn();
            if let (Some((names, add)), Reply::ActorsChanged(_)) =
                (p.commands.remove(&token), &reply)
            {
                for n in names {
                    self.slots[i].acked.insert(n, (add, durable));
                }
            } else if let (Some(tags), Reply::TagsChanged(_)) =
                (p.tag_commands.remove(&token), &reply)
            {
                for (k, v) in tags {
                    self.slots[i].acked_tags.insert(k, (v, durable));
                }
            }
        }
        for n in &ready.notifications {
            if let ClusterEvent::NodeDead { node, .. } = &n.event {
                self.declared_dead.push((node.to_string(), self.now));
            }
        }
        if let Some(stop) = ready.stop {
            self.slots[i].stopped = Some(format!("{stop:?}"));
            self.slots[i].proc = None;
            self.close_connections_to(i);
            return;
        }
        let hops = self.hops[i].map_or(0, |h| h + 1);
        for o in ready.send {
            self.route(i, o.to, o.wire, hops);
        }
    }

    /// Finds where a frame goes, as the driver does: an open connection to the id, or a new
    /// one to the address (admitted by the other side first).
    fn route(&mut self, from: usize, to: Dest, wire: gossip_roster::machine::Wire, hops: u32) {
        let p = self.slots[from].proc.as_ref().expect("running");
        let known = to.id.as_ref().and_then(|id| p.conns.get(id)).copied();
        let target = match known {
            Some(t) => t,
            None => {
                let Some(dialed) = to.addr.as_ref() else {
                    return;
                };
                let Some(t) = self.by_addr.get(dialed).copied() else {
                    return;
                };
                *self.dials.entry(dialed.clone()).or_default() += 1;
                if t == from {
                    // The address reaches the dialer itself (as the real driver finds out).
                    let fp = self.slots[from].proc.as_mut().expect("running");
                    fp.machine.handle_own_address(dialed);
                    return;
                }
                if !self.connect(from, t) {
                    return;
                }
                let tid = self.slots[t].id.clone();
                let fp = self.slots[from].proc.as_mut().expect("running");
                fp.machine.handle_dialed(dialed, &tid, to.id.as_ref());
                t
            }
        };
        self.slots[from].bytes_sent += wire.len() as u64;
        if self.debug {
            let kind = match Frame::decode(&wire) {
                Ok(Frame::Events(e)) => format!("Events {}", describe(&e, 0)),
                Ok(Frame::Fingerprint(_)) => "Fingerprint".into(),
                Ok(Frame::Digest(_)) => "Digest".into(),
                Ok(Frame::Sync { delta, .. }) => {
                    format!("Sync {}", describe(&delta.events, delta.covers.len()))
                }
                Ok(Frame::Delta(delta)) => {
                    format!("Delta {}", describe(&delta.events, delta.covers.len()))
                }
                Ok(Frame::Swim(_)) => "Swim".into(),
                _ => "other".into(),
            };
            eprintln!(
                "[{}] {} bytes: {kind} ({} -> {})",
                self.now,
                wire.len(),
                self.slots[from].id,
                self.slots[target].id
            );
        }
        self.messages += 1;
        if self.side[from] != self.side[target] || self.rng.gen_bool(self.loss) {
            return;
        }
        let Some(epoch) = self.slots[target].proc.as_ref().map(|p| p.epoch) else {
            return;
        };
        let last = self.arrivals.entry((from, target)).or_default();
        let at = (self.now + self.rng.gen_range(1..=5)).max(*last);
        *last = at;
        self.push(
            at,
            Event::Deliver {
                from,
                to: target,
                epoch,
                wire,
                hops,
            },
        );
    }

    /// A new connection from `from` to `to`: the handshake, and the admission decision of
    /// the accepting side. False if it could not be made.
    fn connect(&mut self, from: usize, to: usize) -> bool {
        if self.side[from] != self.side[to] {
            return false;
        }
        let (fid, fgen, faddr) = {
            let s = &self.slots[from];
            (s.id.clone(), s.generation, s.addr.clone())
        };
        let tid = self.slots[to].id.clone();
        if self.slots[from].proc.is_none() {
            // Sent by a process that has died since: its connection is gone.
            return false;
        }
        let Some(tp) = self.slots[to].proc.as_mut() else {
            return false;
        };
        if tid == fid {
            return false;
        }
        match tp.machine.admit(&fid, fgen, &faddr) {
            Ok(()) => {
                tp.conns.insert(fid.clone(), from);
                tp.machine.handle_connected(&fid);
                let fp = self.slots[from].proc.as_mut().expect("running");
                fp.conns.insert(tid.clone(), to);
                fp.machine.handle_connected(&tid);
                true
            }
            Err(reason) => {
                let epoch = self.slots[from].proc.as_ref().map_or(0, |p| p.epoch);
                let addr = self.slots[to].addr.clone();
                let at = self.now + 2;
                self.push(
                    at,
                    Event::Refused {
                        to: from,
                        epoch,
                        addr,
                        reason,
                    },
                );
                false
            }
        }
    }

    fn running(&self, i: usize, epoch: u64) -> bool {
        self.slots[i]
            .proc
            .as_ref()
            .is_some_and(|p| p.epoch == epoch)
    }

    /// Records every data event a node writes of its own record: a version written twice
    /// with different contents (in two lives of the process) could reach peers with both,
    /// so any such reuse is a violation, sent or not.
    fn note_writes(&mut self, i: usize, events: &[ClusterEvent]) {
        if !self.check_versions {
            return;
        }
        use std::hash::{Hash, Hasher};
        let me = &self.slots[i].id;
        for e in events.iter().filter(|e| e.node() == me) {
            let Some(version) = e.version() else {
                continue;
            };
            let mut h = std::collections::hash_map::DefaultHasher::new();
            e.hash(&mut h);
            let content = h.finish();
            let key = (me.clone(), e.generation(), version);
            let first = *self.versions.entry(key).or_insert(content);
            if first != content {
                self.violations.push(format!(
                    "{me} wrote version {version} (gen {}) twice with different contents, the second: {e}",
                    e.generation()
                ));
            }
        }
    }

    /// Runs until `done` holds or `until` passes. True if `done` held.
    fn run_until(&mut self, until: u64, mut done: impl FnMut(&Sim) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            let next_event = self.queue.peek().map(|Reverse((at, _))| *at);
            let next_tick = self
                .slots
                .iter()
                .filter_map(|s| s.proc.as_ref())
                .map(|p| p.next_tick.max(p.paused_until))
                .min();
            let next = match (next_event, next_tick) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => return false,
                },
            };
            if next > until {
                self.now = until;
                return done(self);
            }
            self.now = self.now.max(next);
            if next_event == Some(next) {
                let Reverse((_, seq)) = self.queue.pop().expect("peeked");
                let e = self.events.remove(&seq).expect("queued");
                self.handle(e);
            } else {
                self.tick_due();
            }
        }
    }

    fn tick_due(&mut self) {
        let now = self.now;
        for i in 0..self.slots.len() {
            let Some(p) = self.slots[i].proc.as_mut() else {
                continue;
            };
            if p.next_tick > now || p.paused_until > now {
                continue;
            }
            // Ticks come every TICK_MS, sooner when the machine asks (a gossip window).
            let wake = p
                .machine
                .next_deadline()
                .map_or(u64::MAX, |d| d.as_millis() as u64);
            p.next_tick = (now + TICK_MS).min(wake.max(now + 1));
            p.machine.handle_tick(Duration::from_millis(now));
            self.carry_out(i);
            self.sync_disk(i);
        }
    }

    /// The OS syncs written records per policy.
    fn sync_disk(&mut self, i: usize) {
        let now = self.now;
        let d = &mut self.slots[i].disk;
        let every = match d.policy {
            Policy::Always => 0,
            Policy::Batch => 5,
            Policy::Never => 2_000,
        };
        if now.saturating_sub(d.last_sync_ms) >= every {
            d.synced = d.written;
            d.last_sync_ms = now;
        }
    }

    fn handle(&mut self, e: Event) {
        match e {
            Event::Deliver {
                from,
                to,
                epoch,
                wire,
                hops,
            } => {
                if !self.running(to, epoch) {
                    return;
                }
                let paused = self.slots[to].proc.as_ref().expect("running").paused_until;
                if paused > self.now {
                    // A paused process reads its socket when it wakes.
                    self.push(
                        paused,
                        Event::Deliver {
                            from,
                            to,
                            epoch,
                            wire,
                            hops,
                        },
                    );
                    return;
                }
                let frame = Frame::decode(&wire).expect("frames decode");
                if self.count_kinds {
                    let kind = match &frame {
                        Frame::Swim(m) => {
                            format!("{m:?}").split(' ').next().unwrap_or("").to_owned()
                        }
                        Frame::Events(e) => {
                            format!("Events({})", e.first().map_or("", |e| e.kind()))
                        }
                        other => gossip_roster::transport::frame_name(other).to_owned(),
                    };
                    let seen = self.kinds.entry(kind).or_default();
                    seen.0 += 1;
                    seen.1 += wire.len() as u64;
                }
                let from_id = self.slots[from].id.clone();
                let watched = self.watch.clone();
                let p = self.slots[to].proc.as_mut().expect("running");
                // Frames from a connection the receiver does not hold (it restarted) would
                // arrive on a new connection in reality: admit it first.
                if p.conns.get(&from_id) != Some(&from) && !self.connect(from, to) {
                    return;
                }
                let p = self.slots[to].proc.as_mut().expect("running");
                p.machine.handle_tick(Duration::from_millis(self.now));
                let _ = p.machine.handle_frame(&from_id, frame);
                if let Some(w) = watched {
                    if self.hops[to].is_none() && p.machine.roster().member(&w).is_some() {
                        self.hops[to] = Some(hops);
                    }
                }
                self.carry_out(to);
            }
            Event::Refused {
                to,
                epoch,
                addr,
                reason,
            } => {
                if self.running(to, epoch) {
                    let p = self.slots[to].proc.as_mut().expect("running");
                    p.machine.handle_refused(&addr, &reason);
                    self.carry_out(to);
                }
            }
            Event::Written {
                slot,
                epoch,
                upto,
                fail,
            } => {
                if !self.running(slot, epoch) {
                    return;
                }
                if fail {
                    // The WAL failed: the process exits; what was written before survives.
                    let d = &mut self.slots[slot].disk;
                    d.records.truncate(d.written);
                    self.slots[slot].stopped = Some("WAL failed".into());
                    self.crash(slot, false);
                    return;
                }
                let d = &mut self.slots[slot].disk;
                d.written = d.written.max(upto);
                if d.policy == Policy::Always {
                    d.synced = d.written;
                }
                let p = self.slots[slot].proc.as_mut().expect("running");
                p.machine.handle_durable(upto as u64);
                self.carry_out(slot);
            }
        }
    }

    // ---- views ----

    fn live(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].proc.is_some() && !self.slots[i].impostor)
            .collect()
    }

    /// What slot `o` believes of slot `x`'s node.
    fn seen(&self, o: usize, x: usize) -> Option<MemberState> {
        let p = self.slots[o].proc.as_ref()?;
        p.machine.roster().state_of(&self.slots[x].id)
    }

    fn command(&mut self, i: usize, names: Vec<String>, add: bool) {
        let Some(p) = self.slots[i].proc.as_mut() else {
            return;
        };
        let token = p.next_token;
        p.next_token += 1;
        p.commands.insert(token, (names.clone(), add));
        let cmd = if add {
            Command::AddActors(names)
        } else {
            Command::RemoveActors(names)
        };
        p.machine.handle_command(token, cmd);
        self.carry_out(i);
    }

    /// `calls` registrations of `per_call` actors each on slot `i` (`PREFIX-CALL-K`), 20 ms
    /// apart, as a bulk load sends them.
    fn register_in_calls(&mut self, i: usize, prefix: &str, calls: usize, per_call: usize) {
        for call in 0..calls {
            let names = (0..per_call)
                .map(|k| format!("{prefix}-{call}-{k}"))
                .collect();
            self.command(i, names, true);
            let t = self.now + 20;
            self.run_until(t, |_| false);
        }
    }

    /// A tag or health command; tag changes are tracked until acknowledged.
    fn data_command(&mut self, i: usize, cmd: Command) {
        let Some(p) = self.slots[i].proc.as_mut() else {
            return;
        };
        let token = p.next_token;
        p.next_token += 1;
        match &cmd {
            Command::SetTags(tags) => {
                let want = tags.iter().map(|(k, v)| (k.clone(), Some(v.clone())));
                p.tag_commands.insert(token, want.collect());
            }
            Command::UnsetTags(keys) => {
                let want = keys.iter().map(|k| (k.clone(), None));
                p.tag_commands.insert(token, want.collect());
            }
            _ => {}
        }
        p.machine.handle_command(token, cmd);
        self.carry_out(i);
    }

    /// Runs until every live node holds the same roster (equal fingerprints: anti-entropy
    /// has repaired what loss dropped), has nothing left to gossip (the last change has run
    /// out of retransmissions) or to publish (changes wait for durability), and has seen its own record from a peer since it started (a
    /// lost reply leaves a node sending full digests until then); at most 60 s.
    fn run_until_quiet(&mut self) {
        let until = self.now + 60_000;
        // Looked at once per simulated millisecond, not after every frame (a pass over the
        // whole cluster each time); being quiet is not monotonic, so no cursor here.
        let mut looked_at = None;
        self.run_until(until, |s| {
            if looked_at == Some(s.now) {
                return false;
            }
            looked_at = Some(s.now);
            let machines: Vec<&Machine> = s
                .live()
                .iter()
                .filter_map(|&i| s.slots[i].proc.as_ref().map(|p| &p.machine))
                .collect();
            let sum = machines.first().map(|m| m.roster().digest_fingerprint());
            machines.iter().all(|m| {
                m.sizes().broadcasts == 0
                    && m.sizes().held == 0
                    && !m.auditing_own_record()
                    && Some(m.roster().digest_fingerprint()) == sum
            })
        });
    }

    /// Bytes sent per live node per second over `window_ms` of an idle cluster (call
    /// [`Sim::run_until_quiet`] first: then what is counted is probes and anti-entropy).
    fn idle_bytes_per_node_per_s(&mut self, window_ms: u64) -> f64 {
        let live = self.live();
        let before: u64 = live.iter().map(|&i| self.slots[i].bytes_sent).sum();
        let until = self.now + window_ms;
        self.run_until(until, |_| false);
        let after: u64 = live.iter().map(|&i| self.slots[i].bytes_sent).sum();
        (after - before) as f64 / live.len().max(1) as f64 / (window_ms as f64 / 1000.0)
    }

    /// The invariants every run must end with, after quiescence:
    /// * all live nodes hold the same roster;
    /// * every live node holds every other live node alive;
    /// * no acknowledged actor change is lost (except what a power loss may lose by policy);
    /// * no version of a record was ever sent with two different contents;
    /// * every live node's quorum counts the members its roster holds alive;
    /// * queues and maps are bounded.
    fn check_invariants(&self) -> Result<(), String> {
        let mut errors = self.violations.clone();
        let live = self.live();
        let Some(&first) = live.first() else {
            return Ok(());
        };
        // Tombstones of members that are gone for good are reaped at slightly different
        // times on each node: compare everything else.
        let live_ids: HashSet<NodeId> = live.iter().map(|&i| self.slots[i].id.clone()).collect();
        let comparable = |r: &Roster| -> BTreeMap<NodeId, gossip_roster::roster::NodeRecord> {
            r.iter_records()
                .filter(|(id, rec)| live_ids.contains(*id) || !rec.liveness.state.is_tombstone())
                .map(|(id, rec)| (id.clone(), rec.clone()))
                .collect()
        };
        let reference = comparable(self.slots[first].proc.as_ref().unwrap().machine.roster());
        for (i, s) in self.slots.iter().enumerate() {
            if s.proc.is_none() && !s.impostor {
                errors.push(format!(
                    "slot {i} ({}) is not running: {:?}",
                    s.id, s.stopped
                ));
            }
        }
        for &o in &live {
            let m = &self.slots[o].proc.as_ref().unwrap().machine;
            let mine = comparable(m.roster());
            if mine != reference {
                for (id, rec) in &mine {
                    if reference.get(id) != Some(rec) {
                        errors.push(format!(
                            "slot {o} holds {id} as {rec:?}\n  slot {first}: {:?}",
                            reference.get(id)
                        ));
                    }
                }
                for id in reference.keys().filter(|id| !mine.contains_key(*id)) {
                    errors.push(format!("slot {o} lacks {id}, which slot {first} holds"));
                }
            }
            for &x in &live {
                if x != o && self.seen(o, x) != Some(MemberState::Alive) {
                    errors.push(format!(
                        "slot {o} holds live slot {x} ({}) as {:?}",
                        self.slots[x].id,
                        self.seen(o, x)
                    ));
                }
            }
            // Owners: the ones the machine tracked through its notifications are the ones
            // its roster gives now, and (rosters being equal) the same on every node.
            let reference_roster = self.slots[first].proc.as_ref().unwrap().machine.roster();
            for actor in m.roster().actor_names() {
                let now = gossip_roster::owner::owner(m.roster(), actor);
                if m.tracked_owner(actor) != now.as_ref() {
                    errors.push(format!(
                        "slot {o} tracked {:?} as the owner of {actor}, its roster says {now:?} (its quorum {:?}, counts {:?}, owner query {:?})",
                        m.tracked_owner(actor),
                        m.quorum(),
                        m.roster().count_by_state(),
                        m.owner(actor)
                    ));
                }
                let theirs = gossip_roster::owner::owner(reference_roster, actor);
                if now != theirs {
                    errors.push(format!(
                        "slot {o} says {now:?} owns {actor}, slot {first} says {theirs:?}"
                    ));
                }
            }
            // The quorum follows the roster: a stale one refuses owners and /ready while
            // every member is alive (found by a black-box trial).
            let alive_now = m.roster().count_by_state()[0] as u64;
            if m.quorum().alive != alive_now {
                errors.push(format!(
                    "slot {o} has quorum {:?} while its roster holds {alive_now} alive",
                    m.quorum()
                ));
            }
            let sizes = m.sizes();
            if sizes.broadcasts > 16_384 || sizes.held > 1_000 || sizes.pending_actors > 0 {
                errors.push(format!(
                    "slot {o} holds unbounded state after quiescence: {sizes:?}"
                ));
            }
        }
        for &o in &live {
            let slot = &self.slots[o];
            let roster = slot.proc.as_ref().unwrap().machine.roster();
            let tags = roster.tags(&slot.id).unwrap_or_default();
            for (key, (value, _)) in &slot.acked_tags {
                if tags.get(key) != value.as_ref() {
                    errors.push(format!(
                        "slot {o}: acknowledged tag {key}={value:?} is lost (holds {:?})",
                        tags.get(key)
                    ));
                }
            }
            for (name, (present, _)) in &slot.acked {
                let hosts = roster
                    .locate_with(
                        name,
                        &gossip_roster::LocateQuery {
                            include_critical: true,
                            tags: Vec::new(),
                        },
                    )
                    .contains(&slot.id);
                if hosts != *present {
                    errors.push(format!(
                        "slot {o}: acknowledged {} {name} is lost",
                        if *present { "add of" } else { "removal of" }
                    ));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
    }

    fn report(&self, detection_ms: Option<u64>, since: u64) -> Report {
        let live: HashSet<String> = self
            .live()
            .into_iter()
            .filter(|i| !self.disturbed.contains(i))
            .map(|i| self.slots[i].id.to_string())
            .collect();
        let mut false_positives: Vec<String> = self
            .declared_dead
            .iter()
            .filter(|(n, at)| *at >= since && live.contains(n))
            .map(|(n, _)| n.clone())
            .collect();
        false_positives.sort();
        false_positives.dedup();
        let secs = (self.now.max(1) as f64) / 1000.0;
        Report {
            detection_ms,
            false_positives,
            messages_per_node_per_s: self.messages as f64 / self.slots.len() as f64 / secs,
        }
    }

    /// Crashes `victim` and runs until every live node holds it dead.
    fn measure_crash(&mut self, victim: usize) -> Report {
        let since = self.now;
        self.crash(victim, false);
        let v = self.slots[victim].id.clone();
        let t0 = self.now;
        // As in `measure_join`: dead stays dead (the victim does not come back), so each
        // node is looked at until it holds it dead, and not again.
        let live = self.live();
        let mut holding = 0;
        let done = self.run_until(t0 + 120_000, |s| {
            while holding < live.len() {
                let roster = s.slots[live[holding]]
                    .proc
                    .as_ref()
                    .unwrap()
                    .machine
                    .roster();
                if roster.state_of(&v) != Some(MemberState::Dead) {
                    return false;
                }
                holding += 1;
            }
            true
        });
        self.report(done.then(|| self.now - t0), since)
    }

    /// Freezes `victim` (as SIGSTOP does: its connections stay open, frames to it wait) and
    /// runs until every other live node holds it dead: only the probes can tell.
    fn measure_freeze(&mut self, victim: usize) -> Report {
        let since = self.now;
        self.disturbed.insert(victim);
        let t0 = self.now;
        self.slots[victim]
            .proc
            .as_mut()
            .expect("running")
            .paused_until = t0 + 120_000;
        let others: Vec<usize> = self.live().into_iter().filter(|&i| i != victim).collect();
        let mut holding = 0;
        let done = self.run_until(t0 + 120_000, |s| {
            while holding < others.len() {
                if s.seen(others[holding], victim) != Some(MemberState::Dead) {
                    return false;
                }
                holding += 1;
            }
            true
        });
        self.report(done.then(|| self.now - t0), since)
    }

    /// Starts slot `j` with only `seed` to go by (as `gossip-node --seed` does) and runs
    /// until every live node lists it and it lists every live node.
    fn measure_join(&mut self, j: usize, seed: usize) -> JoinReport {
        self.slots[j].seeds = vec![addr(seed)];
        self.watch = Some(self.slots[j].id.clone());
        self.hops = vec![None; self.slots.len()];
        self.hops[j] = Some(0);
        let t0 = self.now;
        self.start(j);
        let joiner = self.slots[j].id.clone();
        let mut it_knows = None;
        let live = self.live();
        let n_live = live.len();
        // This runs after every delivered frame: nodes found to know the joiner are not
        // looked at again (in this window nobody forgets it), so the whole wait costs one
        // pass over the cluster, not one per frame (at N = 10,000 that was most of the run).
        let mut knowing = 0;
        let everyone = self.run_until(t0 + 30_000, |s| {
            while knowing < live.len() {
                let roster = s.slots[live[knowing]]
                    .proc
                    .as_ref()
                    .unwrap()
                    .machine
                    .roster();
                if !roster.record(&joiner).is_some_and(|r| r.is_announced()) {
                    return false;
                }
                knowing += 1;
            }
            true
        });
        let everyone_ms = everyone.then(|| self.now - t0);
        let knows = |s: &Sim| {
            s.slots[j]
                .proc
                .as_ref()
                .is_some_and(|p| p.machine.roster().num_members() >= n_live)
        };
        if self.run_until(t0 + 30_000, knows) {
            it_knows = Some(self.now - t0);
        }
        let rounds = self.hops.iter().flatten().copied().max().unwrap_or(0);
        JoinReport {
            everyone_knows_it_ms: everyone_ms,
            rounds,
            it_knows_everyone_ms: it_knows,
        }
    }
}

/// A delta in one line: how many events and covers, and the first event.
fn describe(events: &[ClusterEvent], covers: usize) -> String {
    let first: String = events
        .first()
        .map(|e| e.to_string())
        .unwrap_or_default()
        .chars()
        .take(120)
        .collect();
    format!("({} events, {covers} covers; e.g. {first})", events.len())
}

// ---- chaos ----

/// A cluster of 4 to 7 nodes through a random schedule of faults, then healed and quiet;
/// returns the invariant failures (with the seed to replay), or the idle traffic before and
/// after.
fn chaos(seed: u64) -> Result<(f64, f64), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sim = Sim::empty(seed, 0.0);
    sim.swim.tombstone_ttl = Duration::from_millis(rng.gen_range(3_000..20_000));
    let n = rng.gen_range(4..8);
    for i in 0..n {
        let policy = [Policy::Always, Policy::Batch, Policy::Never][rng.gen_range(0..3)];
        let seeds = if i == 0 { vec![] } else { vec![addr(0)] };
        sim.add_slot(
            id(i),
            1 + i as u64,
            seeds,
            Disk::new(policy, rng.gen_range(0..4)),
        );
        sim.start(i);
        let t = sim.now + rng.gen_range(0..50);
        sim.run_until(t, |_| false);
    }
    let t = sim.now + 3_000;
    sim.run_until(t, |_| false);
    let baseline = sim.idle_bytes_per_node_per_s(3_000);
    // Every node tags itself and hosts an actor with some health; one TTL lapses mid-chaos
    // (unless a random renewal comes first).
    for i in 0..n {
        sim.command(i, vec![format!("h{i}")], true);
        sim.data_command(
            i,
            Command::SetTags(vec![("zone".into(), format!("z{}", i % 3))]),
        );
        let t = sim.now + 20;
        sim.run_until(t, |_| false);
        let health = [Health::Passing, Health::Warning, Health::Critical][i % 3];
        let (actor, note) = (format!("h{i}"), format!("node {i}"));
        sim.data_command(
            i,
            Command::SetHealth {
                actor,
                health,
                note,
            },
        );
    }
    sim.data_command(
        0,
        Command::SetHealthTtl {
            actor: "h0".into(),
            ttl: Some(Duration::from_millis(rng.gen_range(500..5_000))),
        },
    );
    // Older copies of data dirs, to restore later.
    let mut copies: HashMap<usize, Disk> = HashMap::new();
    let mut actor_seq = 0u32;
    let chaos_until = sim.now + 20_000;
    while sim.now < chaos_until {
        let i = rng.gen_range(0..n);
        match rng.gen_range(0..100) {
            0..=7 => {
                // Tags and health: set, unset, TTLs that lapse or are renewed.
                let hosted: Vec<String> = sim.slots[i]
                    .acked
                    .iter()
                    .filter(|(_, (p, _))| *p)
                    .map(|(n, _)| n.clone())
                    .collect();
                let actor = (!hosted.is_empty()).then(|| hosted[rng.gen_range(0..hosted.len())].clone());
                let health = [Health::Passing, Health::Warning, Health::Critical][rng.gen_range(0..3)];
                let cmd = match (rng.gen_range(0..5), actor) {
                    (0, _) => Command::SetTags(vec![
                        ("zone".into(), format!("z{}", rng.gen_range(0..3))),
                        (format!("k{}", rng.gen_range(0..4)), String::new()),
                    ]),
                    (1, _) => Command::UnsetTags(vec![format!("k{}", rng.gen_range(0..4))]),
                    (2, Some(actor)) => Command::SetHealth {
                        actor,
                        health,
                        note: format!("at {}", sim.now),
                    },
                    (3, Some(actor)) => Command::SetHealthTtl {
                        actor,
                        ttl: Some(Duration::from_millis(rng.gen_range(100..3_000))),
                    },
                    (_, Some(actor)) => Command::PassTtl(actor),
                    _ => Command::SetTags(vec![("zone".into(), "z0".into())]),
                };
                sim.data_command(i, cmd);
            }
            8..=24 => {
                // Actor changes, sometimes in bulk.
                let count = if rng.gen_ratio(1, 8) {
                    rng.gen_range(200..2_000)
                } else {
                    rng.gen_range(1..5)
                };
                let add = rng.gen_ratio(3, 4);
                let names: Vec<String> = if add {
                    (0..count)
                        .map(|_| {
                            actor_seq += 1;
                            format!("a{}", actor_seq)
                        })
                        .collect()
                } else {
                    sim.slots[i]
                        .acked
                        .iter()
                        .filter(|(_, (p, _))| *p)
                        .map(|(n, _)| n.clone())
                        .take(count)
                        .collect()
                };
                if !names.is_empty() {
                    sim.command(i, names, add);
                }
            }
            25..=34 => sim.crash(i, rng.gen_ratio(1, 3)),
            35..=44
                if sim.slots[i].proc.is_none() && !sim.slots[i].impostor => {
                    sim.start(i);
                }
            45..=49 => {
                sim.disturbed.insert(i);
                sim.stop_gracefully(i);
            }
            50..=54 => {
                copies.insert(i, sim.slots[i].disk.clone());
            }
            55..=59 => {
                // Restore an older copy of the data dir (with the process stopped).
                if let Some(old) = copies.get(&i).cloned() {
                    sim.crash(i, false);
                    sim.slots[i].disk = old;
                    sim.slots[i].acked.clear();
                    sim.slots[i].acked_tags.clear();
                    sim.start(i);
                }
            }
            60..=64
                // A second process with the id of a live node, another data dir and address.
                if sim.slots[i].proc.is_some()
                    && !sim.slots[i].impostor
                    && sim.side.iter().all(|s| *s == 0)
                => {
                    // Another data dir: its own generation (creation time, in the node).
                    let generation = 1_000_000 + sim.now;
                    let k = sim.add_slot(
                        sim.slots[i].id.clone(),
                        generation,
                        vec![addr((i + 1) % n)],
                        Disk::new(Policy::Batch, 1),
                    );
                    sim.slots[k].impostor = true;
                    sim.start(k);
                }
            65..=71 => {
                for s in 0..n {
                    sim.side[s] = u8::from(rng.gen_ratio(1, 3));
                    if sim.side[s] == 1 {
                        sim.disturbed.insert(s);
                    }
                }
            }
            72..=79 => sim.side.iter_mut().for_each(|s| *s = 0),
            80..=84 => {
                if let Some(p) = sim.slots[i].proc.as_mut() {
                    p.paused_until = sim.now + rng.gen_range(100..3_000);
                    sim.disturbed.insert(i);
                }
            }
            85..=89 => sim.loss = [0.0, 0.01, 0.05, 0.2][rng.gen_range(0..4)],
            90..=92 => sim.slots[i].disk.latency_ms = rng.gen_range(0..50),
            93..=94 => sim.slots[i].disk.fail_next = true,
            _ => {}
        }
        let t = sim.now + rng.gen_range(10..800);
        sim.run_until(t, |_| false);
    }
    // Heal: one network, no loss, fast disks, every data dir's process running, impostors
    // gone.
    sim.side.iter_mut().for_each(|s| *s = 0);
    sim.loss = 0.0;
    for i in 0..sim.slots.len() {
        sim.slots[i].disk.latency_ms = 1;
        sim.slots[i].disk.fail_next = false;
        if let Some(p) = sim.slots[i].proc.as_mut() {
            p.paused_until = 0;
        }
        if sim.slots[i].impostor {
            sim.crash(i, false);
        } else if sim.slots[i].proc.is_none() {
            sim.start(i);
        }
    }
    // A supervisor restarts what stopped by itself (a node refused while an impostor still
    // held its id, until the impostor was declared dead), every 2 s.
    for _ in 0..15 {
        let t = sim.now + 2_000;
        sim.run_until(t, |_| false);
        for i in 0..sim.slots.len() {
            if sim.slots[i].proc.is_none() && !sim.slots[i].impostor {
                sim.start(i);
            }
        }
    }
    let t = sim.now + 10_000;
    sim.run_until(t, |_| false);
    sim.debug = std::env::var("SIM_DEBUG").is_ok();
    if sim.debug {
        for i in sim.live() {
            let r = sim.slots[i].proc.as_ref().unwrap().machine.roster();
            let view: Vec<_> = r
                .iter_records()
                .map(|(id, rec)| {
                    (
                        id.to_string(),
                        rec.generation,
                        rec.version,
                        rec.known,
                        rec.liveness.state,
                    )
                })
                .collect();
            eprintln!("slot {i} ({}): {view:?}", sim.slots[i].id);
        }
    }
    let after = sim.idle_bytes_per_node_per_s(3_000);
    sim.debug = false;
    let mut result = sim.check_invariants();
    if result.is_ok() && after > 2.0 * baseline + 2_000.0 {
        result = Err(format!(
            "idle traffic did not settle: {after:.0} B/node/s after, {baseline:.0} before"
        ));
    }
    result
        .map(|()| (baseline, after))
        .map_err(|e| format!("seed {seed}: {e}\n(replay: SIM_SEED={seed} cargo test --test simulation chaos_one -- --nocapture)"))
}

/// Seeds of the default test run.
const CHAOS_SEEDS: u64 = 200;

#[test]
fn chaos_seeds_end_in_one_correct_roster() {
    let failures: Vec<String> = (0..CHAOS_SEEDS).filter_map(|s| chaos(s).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {CHAOS_SEEDS} seeds failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
#[ignore = "thousands of chaos seeds; run with --release -- --ignored"]
fn chaos_many() {
    let from: u64 = env_number("SIM_FROM", CHAOS_SEEDS);
    let failures: Vec<String> = (from..from + 5_000)
        .filter_map(|s| chaos(s).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} seeds failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn chaos_one() {
    let seed: u64 = env_number("SIM_SEED", 1);
    match chaos(seed) {
        Ok((before, after)) => eprintln!("seed {seed}: idle {before:.0} -> {after:.0} B/node/s"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn the_same_seed_gives_the_same_run() {
    assert_eq!(chaos(3), chaos(3));
    assert_eq!(crash_run(20, 42, 0.05), crash_run(20, 42, 0.05));
}

// ---- scenarios ----

/// Crashes one node after a warm-up; runs until every live node has it dead.
fn crash_run(n: usize, seed: u64, loss: f64) -> Report {
    let mut sim = Sim::new(n, seed, loss);
    sim.run_until(3_000, |_| false);
    sim.measure_crash(n / 2)
}

/// `n` members settle, one more joins through node 0, the cluster idles for 3 s (its bytes
/// per node per second are the third figure), then one member crashes.
fn scale_run(n: usize, seed: u64, loss: f64) -> (JoinReport, Report, f64) {
    let stage = |name: &str| {
        if std::env::var_os("SIM_KINDS").is_some() {
            eprintln!(
                "N={n}: after {name}: peak RSS {}, now {}",
                peak_rss(),
                rss()
            );
        }
    };
    let mut sim = Sim::with_absent(n + 1, n, seed, loss);
    stage("populate");
    sim.run_until(3_000, |_| false);
    stage("settle");
    let join = sim.measure_join(n, 0);
    stage("join");
    sim.run_until_quiet();
    let before = sim.kinds.clone();
    sim.debug = std::env::var("SIM_DEBUG").is_ok();
    let idle = sim.idle_bytes_per_node_per_s(3_000);
    sim.debug = false;
    stage("idle");
    if sim.count_kinds {
        let during: BTreeMap<&String, (u64, u64)> = sim
            .kinds
            .iter()
            .map(|(k, (c, b))| {
                let (c0, b0) = before.get(k).copied().unwrap_or_default();
                (k, (c - c0, b - b0))
            })
            .filter(|(_, (c, _))| *c > 0)
            .collect();
        eprintln!("N={n}: idle window, (frames, bytes) by kind: {during:?}");
    }
    let crash = sim.measure_crash(n / 2);
    stage("crash");
    if sim.count_kinds {
        eprintln!("N={n}: (frames, bytes) delivered by kind: {:?}", sim.kinds);
    }
    (join, crash, idle)
}

#[test]
fn fifty_nodes_detect_a_crash_with_lossy_links_and_no_false_positives() {
    let report = crash_run(50, 7, 0.01);
    eprintln!("50 nodes, 1% loss: {report:?}");
    let detection = report
        .detection_ms
        .expect("every live node declared the victim dead");
    assert!(
        report.false_positives.is_empty(),
        "false positives: {:?}",
        report.false_positives
    );
    // Bounded by the protocol: probe rounds plus the longest suspicion, in simulated time.
    let worst = SwimConfig::default().probe_interval.as_millis() as u64 * 60;
    assert!(detection < worst, "{detection} ms");
}

#[test]
fn a_paused_node_is_suspected_at_most_and_refutes() {
    let mut sim = Sim::new(50, 3, 0.01);
    sim.run_until(3_000, |_| false);
    let paused = 17;
    sim.slots[paused].proc.as_mut().unwrap().paused_until = sim.now + 500;
    let t = sim.now;
    sim.run_until(t + 10_000, |_| false);
    let report = sim.report(None, 0);
    assert!(
        report.false_positives.is_empty(),
        "{:?}",
        report.false_positives
    );
    for o in sim.live() {
        if o != paused {
            assert_eq!(sim.seen(o, paused), Some(MemberState::Alive), "seen by {o}");
        }
    }
}

#[test]
fn a_partition_heals_into_one_roster() {
    let n = 50;
    let mut sim = Sim::new(n, 11, 0.0);
    sim.run_until(2_000, |_| false);
    for i in 30..n {
        sim.side[i] = 1;
    }
    let t = sim.now;
    // Long enough for each side to declare the other dead.
    let split = sim.run_until(t + 60_000, |s| {
        s.seen(0, 40) == Some(MemberState::Dead) && s.seen(40, 0) == Some(MemberState::Dead)
    });
    assert!(split, "the sides never declared each other dead");
    sim.side = vec![0; n];
    let t = sim.now;
    // Healed: the dead refute through anti-entropy, and all rosters agree on all alive.
    let healed = sim.run_until(t + 120_000, |s| {
        (0..n).all(|o| (0..n).all(|x| o == x || s.seen(o, x) == Some(MemberState::Alive)))
    });
    assert!(healed, "rosters did not converge after healing");
    let t = sim.now + 5_000;
    sim.run_until(t, |_| false);
    sim.check_invariants().unwrap();
}

/// Whether slot `i` runs and is not down.
fn up(sim: &Sim, i: usize) -> bool {
    sim.slots[i]
        .proc
        .as_ref()
        .is_some_and(|p| p.machine.down().is_none())
}

/// Split-brain downing under keep-majority: a cluster of 3-7 split in two (any sizes, exact
/// halves included). Once the split has lasted the stable period plus the time a node cut
/// off from everyone needs to notice it (its probes slow down as they fail: Lifeguard), never
/// are both sides up, and the side the rule names is the one up; healed, everyone is up and
/// alive again in every roster. Returns how long after the split every node held its final
/// verdict (the downing decision time).
fn downing_run(seed: u64) -> Result<u64, String> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xd0_d0);
    let n = rng.gen_range(3..=7);
    let stable = 3_000;
    let mut sim = Sim::empty(seed, 0.0);
    sim.downing = DowningConfig {
        strategy: Strategy::KeepMajority,
        stable_after: Duration::from_millis(stable),
    };
    let mut sim = sim.populate(n, n);
    sim.run_until(2_000, |_| false);
    let k = rng.gen_range(1..n);
    let mut ids: Vec<usize> = (0..n).collect();
    ids.shuffle(&mut rng);
    let side_a: BTreeSet<usize> = ids[..k].iter().copied().collect();
    for i in 0..n {
        sim.side[i] = u8::from(side_a.contains(&i));
    }
    // The side that must go on: more than half, or the half holding the lowest id (slot 0).
    let a_wins = k * 2 > n || (k * 2 == n && side_a.contains(&0));
    let wins = |i: usize| side_a.contains(&i) == a_wins;
    let t0 = sim.now;
    let settled = t0 + stable + 30_000;
    let mut both_up_at = None;
    let mut last_wrong = t0;
    sim.run_until(settled + 10_000, |s| {
        let a_up = (0..n).any(|i| side_a.contains(&i) && up(s, i));
        let b_up = (0..n).any(|i| !side_a.contains(&i) && up(s, i));
        if s.now >= settled && a_up && b_up && both_up_at.is_none() {
            both_up_at = Some(s.now);
        }
        if (0..n).any(|i| up(s, i) != wins(i)) {
            last_wrong = s.now;
        }
        false
    });
    if let Some(t) = both_up_at {
        return Err(format!(
            "n={n} side_a={side_a:?}: both sides up {} ms after the split",
            t - t0
        ));
    }
    for i in 0..n {
        if up(&sim, i) != wins(i) {
            return Err(format!(
                "n={n} side_a={side_a:?}: slot {i} is {} but its side {}",
                if up(&sim, i) { "up" } else { "down" },
                if wins(i) { "won" } else { "lost" }
            ));
        }
    }
    let decided = last_wrong + TICK_MS - t0;
    sim.side = vec![0; n];
    let t1 = sim.now;
    let healed = sim.run_until(t1 + 120_000, |s| {
        (0..n)
            .all(|o| up(s, o) && (0..n).all(|x| o == x || s.seen(o, x) == Some(MemberState::Alive)))
    });
    if !healed {
        let view: Vec<String> = (0..n)
            .map(|o| {
                let states: Vec<String> = (0..n).map(|x| format!("{:?}", sim.seen(o, x))).collect();
                format!(
                    "{o}{}: {}",
                    if up(&sim, o) { "" } else { " (down)" },
                    states.join(" ")
                )
            })
            .collect();
        return Err(format!(
            "n={n} side_a={side_a:?}: not whole 120 s after healing:\n{}",
            view.join("\n")
        ));
    }
    let t = sim.now + 5_000;
    sim.run_until(t, |_| false);
    sim.check_invariants()?;
    Ok(decided)
}

const DOWNING_SEEDS: u64 = 25;

#[test]
fn downing_never_leaves_both_sides_of_a_split_up_and_heals() {
    let failed: Vec<String> = (0..DOWNING_SEEDS)
        .filter_map(|seed| downing_run(seed).err().map(|e| format!("seed {seed}: {e}")))
        .collect::<Vec<_>>();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
#[ignore = "many seeds; run with --ignored (SIM_SEEDS=n to choose how many); prints decision times"]
fn downing_many() {
    let seeds = env_number("SIM_SEEDS", 1_000);
    let mut failed = Vec::new();
    let mut times = Vec::new();
    for seed in 0..seeds {
        match downing_run(seed) {
            Ok(t) => times.push(t),
            Err(e) => failed.push(format!("seed {seed}: {e}")),
        }
    }
    times.sort_unstable();
    if !times.is_empty() {
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        println!(
            "downing decision time after a split (stable period 3 s, {} runs): median {} ms, p99 {} ms, max {} ms",
            times.len(),
            at(0.5),
            at(0.99),
            times[times.len() - 1]
        );
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn a_joiner_spreads_to_fifty_nodes_in_logarithmic_rounds() {
    let n = 50;
    let mut sim = Sim::with_absent(n + 1, n, 5, 0.01);
    sim.run_until(1_000, |_| false);
    let join = sim.measure_join(n, 0);
    eprintln!("50 nodes + 1 joiner, 1% loss: {join:?}");
    assert!(join.everyone_knows_it_ms.is_some(), "{join:?}");
    assert!(join.it_knows_everyone_ms.is_some(), "{join:?}");
    // Fanout 3 reaches 50 nodes in about log3(50) ~ 4 hops; twice log2 is generous.
    let log2 = usize::BITS - (n + 1).leading_zeros();
    assert!(join.rounds >= 1 && join.rounds <= 2 * log2, "{join:?}");
}

#[test]
fn bulk_registration_of_twenty_thousand_actors_while_probes_run_accuses_nobody() {
    let n = 5;
    let mut sim = Sim::new(n, 21, 0.0);
    for s in &mut sim.slots {
        s.disk.latency_ms = 20;
    }
    sim.run_until(2_000, |_| false);
    sim.register_in_calls(1, "bulk", 20, 1_000);
    let t = sim.now + 15_000;
    sim.run_until(t, |_| false);
    let report = sim.report(None, 0);
    assert!(
        report.false_positives.is_empty(),
        "{:?}",
        report.false_positives
    );
    assert!(sim.declared_dead.is_empty(), "{:?}", sim.declared_dead);
    assert_eq!(sim.slots[1].acked.len(), 20_000, "every call answered");
    sim.check_invariants().unwrap();
}

/// A graceful restart of a node hosting 20,000 actors (a record of about 770 KB): it comes
/// back as a new generation and announces them all again. Pushed with the whole budget, each
/// of 5 nodes sent 8 to 9 copies of the record (`budget x size`; a real cluster spent seconds
/// decoding them, starving its probes); beyond its data news allowance (`DATA_NEWS_BURST`) anti-entropy
/// carries it, and each node sends a copy or two.
#[test]
fn a_graceful_restart_with_many_actors_costs_each_node_a_few_copies_of_its_record() {
    let n = 5;
    let mut sim = Sim::new(n, env_number("SIM_SEED", 11), 0.0);
    sim.run_until(2_000, |_| false);
    sim.register_in_calls(1, "actor", 20, 1_000);
    sim.run_until_quiet();
    let sent = |sim: &Sim| -> Vec<u64> { sim.slots.iter().map(|s| s.bytes_sent).collect() };
    let before = sent(&sim);
    sim.stop_gracefully(1);
    // Its disk holds no peers (the cluster was made up in memory): it rejoins through 0.
    sim.slots[1].seeds = vec![addr(0)];
    let restart = sim.now;
    sim.start(1);
    sim.run_until_quiet();
    eprintln!("quiet {} ms after the restart", sim.now - restart);
    let roster = sim.slots[0].proc.as_ref().unwrap().machine.roster().clone();
    let record = gossip_roster::machine::encode(&Frame::Events(roster.events_since(&id(1), None)));
    let member = roster.member(&id(1)).unwrap();
    assert_eq!((member.generation, member.actors.len()), (2, 20_000));
    let copies: Vec<f64> = sent(&sim)
        .iter()
        .zip(&before)
        .map(|(after, before)| (after - before) as f64 / record.len() as f64)
        .collect();
    eprintln!(
        "record {} bytes; sent per node, in copies of it: {copies:.1?}",
        record.len()
    );
    let report = sim.report(None, 0);
    assert!(
        report.false_positives.is_empty(),
        "{:?}",
        report.false_positives
    );
    sim.check_invariants().unwrap();
    assert!(copies.iter().all(|&c| c < 4.0), "{copies:.1?}");
}

/// Idle traffic of `n` nodes that know each other and have settled: bytes of encoded frames
/// sent per node per simulated second over 5 s, no loss (what the protocol costs at rest).
fn idle_run(n: usize, seed: u64) -> f64 {
    let mut sim = Sim::new(n, seed, 0.0);
    sim.run_until(5_000, |_| false);
    let idle = sim.idle_bytes_per_node_per_s(5_000);
    sim.check_invariants()
        .expect("an idle cluster holds one roster");
    idle
}

/// In sync, a round of anti-entropy costs the same at any size (a fingerprint, not a digest
/// of every member), and probes are per node: idle bytes per node must not grow with N.
#[test]
fn idle_traffic_per_node_does_not_grow_with_the_cluster() {
    let small = idle_run(20, 3);
    let large = idle_run(200, 3);
    eprintln!("idle bytes per node per s: N=20 {small:.0}, N=200 {large:.0}");
    assert!(small > 0.0, "probes run while idle");
    assert!(
        large < 2.0 * small,
        "idle traffic grows with N: {small:.0} B/node/s at 20, {large:.0} at 200"
    );
}

/// Idle bytes per node per second by N (`SIM_IDLE_SIZES`, default 5,20,50,200,1000).
#[test]
#[ignore = "prints the idle table; run with --release -- --ignored --nocapture"]
fn idle_table() {
    let sizes: Vec<usize> = std::env::var("SIM_IDLE_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![5, 20, 50, 200, 1_000]);
    println!("| N | idle bytes/node/s |");
    println!("|---|---|");
    for n in sizes {
        println!("| {n} | {:.0} |", idle_run(n, 1));
    }
}

/// Prints one markdown row per N (the table `tools/bench` carries).
fn print_scale(sizes: &[usize]) {
    // A fixed mmap threshold: each simulated node's per-member vectors (64 KB and up at
    // these sizes) get mappings of their own, which grow in place (mremap) and go back to
    // the system when freed. Under glibc's sliding default they move into the heap, where
    // every growth leaves the old block resident: peak RSS at N = 4,000 was 1,493 MB with
    // it, 1,364 MB without. Ours is a test harness choice; `gossip-node` runs on mimalloc.
    // SAFETY: mallopt takes the allocator's own lock and changes no allocation.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
    println!(
        "| N | join: rounds (log2 N) | join: all know it | join: it knows all \
         | crash: all hold it dead | false positives | messages/node/s | idle bytes/node/s \
         | peak RSS of the simulation |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let ms = |v: Option<u64>| v.map_or("never".into(), |d| format!("{d} ms"));
    for &n in sizes {
        let started = std::time::Instant::now();
        let (join, crash, idle) = scale_run(n, 1, 0.01);
        println!(
            "| {n} | {} ({:.1}) | {} | {} | {} | {} | {:.1} | {idle:.0} | {} |",
            join.rounds,
            (n as f64).log2(),
            ms(join.everyone_knows_it_ms),
            ms(join.it_knows_everyone_ms),
            ms(crash.detection_ms),
            crash.false_positives.len(),
            crash.messages_per_node_per_s,
            peak_rss()
        );
        eprintln!(
            "N={n}: simulated in {:.0?}, peak RSS {}",
            started.elapsed(),
            peak_rss()
        );
    }
}

/// The process's peak resident set (Linux `VmHWM`), for the scale runs' memory figure.
fn peak_rss() -> String {
    proc_status("VmHWM:")
}

/// The process's resident set now (Linux `VmRSS`).
fn rss() -> String {
    proc_status("VmRSS:")
}

fn proc_status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .map(|l| l[field.len()..].trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[test]
#[ignore = "bigger simulations; run with --release -- --ignored --nocapture"]
fn scale_up_to_1000() {
    print_scale(&scale_sizes(&[50, 200, 1000]));
}

#[test]
#[ignore = "about 7 GB and eight minutes; run with --release -- --ignored --nocapture"]
fn scale_10000() {
    print_scale(&scale_sizes(&[10_000]));
}

/// `SIM_SIZES=2000,5000` replaces a scale test's sizes (to profile one size alone).
fn scale_sizes(default: &[usize]) -> Vec<usize> {
    match std::env::var("SIM_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("SIM_SIZES: comma-separated node counts")
            })
            .collect(),
        Err(_) => default.to_vec(),
    }
}

/// A cluster of `n` started cold, as the comparison starts every system: slot 0 alone, then
/// every other at once, seeded with it. Simulated ms from the last start until every node
/// knows every other.
fn cold_start_run(n: usize, seed: u64) -> Option<u64> {
    let mut sim = Sim::with_absent(n, 0, seed, 0.0);
    sim.start(0);
    sim.run_until(5, |_| false);
    for i in 1..n {
        sim.slots[i].seeds = vec![addr(0)];
        sim.start(i);
    }
    let t0 = sim.now;
    let all_know_all = |s: &Sim| {
        s.slots.iter().all(|slot| {
            slot.proc
                .as_ref()
                .is_some_and(|p| p.machine.roster().num_members() >= n)
        })
    };
    sim.run_until(t0 + 30_000, all_know_all)
        .then(|| sim.now - t0)
}

/// The `q` quantile of sorted simulated times (nearest rank, the largest at most).
fn at(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// (median, 90th percentile, max) of `runs` cold starts of `n` nodes, in simulated ms.
fn cold_start_spread(n: usize, runs: u64) -> (u64, u64, u64) {
    let mut ms: Vec<u64> = (0..runs)
        .map(|seed| cold_start_run(n, seed).unwrap_or_else(|| panic!("seed {seed}: never")))
        .collect();
    ms.sort();
    (at(&ms, 0.5), at(&ms, 0.9), *ms.last().unwrap())
}

/// Nodes started together learn of each other through gossip and the seed's syncs; one that
/// joined early in the burst used to miss the members whose news ran out before anyone knew
/// it, and waited for a regular anti-entropy round (375 to 625 ms, and a quarter of the
/// rounds went nowhere): 6 of 50 seeds at N = 20 took 509 to 1,396 ms. A node still joining
/// now runs a round of its own once news of new members has been still for a moment.
#[test]
fn a_cold_start_converges_without_waiting_for_a_regular_anti_entropy_round() {
    for seed in 0..40 {
        let ms = cold_start_run(20, seed).expect("converges");
        assert!(ms < 200, "seed {seed}: all knew all only after {ms} ms");
    }
}

/// The same, over many small cold starts. Two nodes that joined late in the burst knew the
/// same members, and the follow-up round of one went to the other: equal fingerprints, so
/// it learned nothing, and waited for a regular round (about 500 ms; seed 379 of 1,000 at
/// N = 5). The follow-up round now goes to the member we joined through.
#[test]
fn a_follow_up_round_goes_where_the_joiners_are_known() {
    for seed in 0..1_000 {
        let ms = cold_start_run(5, seed).expect("converges");
        assert!(ms < 200, "seed {seed}: all knew all only after {ms} ms");
    }
}

/// Nodes started together learn of each other from their seed in one hop: it tells every
/// member of each joiner as it hears of it, and a joiner learns the earlier ones from its
/// sync. Gossiped from the seed to 3 members and on from them, it took `log N` hops (median
/// 16 and 18 ms at N = 20 and 50, max 20 and 24, hops of 1 to 5 ms).
#[test]
fn a_cold_start_of_up_to_fifty_takes_one_hop_from_the_seed() {
    for n in [20, 50] {
        for seed in 0..30 {
            let ms = cold_start_run(n, seed).expect("converges");
            assert!(
                ms <= 12,
                "N={n}, seed {seed}: all knew all only after {ms} ms"
            );
        }
    }
}

/// Simulated ms from a registration on node 0 of a settled cluster of `n` until every node
/// locates the actor (the comparison's "value set on one, seen by all").
fn value_run(n: usize, seed: u64) -> u64 {
    let mut sim = Sim::new(n, seed, 0.0);
    sim.run_until(2_000, |_| false);
    let t0 = sim.now;
    sim.command(0, vec!["billing".into()], true);
    let seen_by_all = |s: &Sim| {
        s.slots.iter().all(|slot| {
            slot.proc
                .as_ref()
                .is_some_and(|p| !p.machine.roster().locate("billing").is_empty())
        })
    };
    assert!(
        sim.run_until(t0 + 30_000, seen_by_all),
        "seed {seed}: never"
    );
    sim.now - t0
}

/// In a cluster of up to 64, a node's own news goes to every member in its first round:
/// one hop after its write is durable (1 ms here, hops of 1 to 5 ms; measured 5 to 6 ms).
/// Gossiped to 3 members and on from them, it took `log N` hops: at N = 20 and 50, 8 to 12
/// and 10 to 17 ms (30 seeds each).
#[test]
fn own_news_in_a_cluster_of_up_to_fifty_takes_one_hop() {
    for n in [20, 50] {
        for seed in 0..30 {
            let ms = value_run(n, seed);
            assert!(
                ms <= 6,
                "N={n}, seed {seed}: seen by all only after {ms} ms"
            );
        }
    }
}

/// Cold-start convergence in the simulation (`SIM_SEEDS` runs per size, default 100).
#[test]
#[ignore]
fn cold_start_table() {
    let runs: u64 = env_number("SIM_SEEDS", 100);
    println!("| N | cold start, simulated ms: median | p90 | max ({runs} seeds) |");
    println!("|---|---|---|---|");
    for n in [5, 20, 50, 200] {
        let (median, p90, max) = cold_start_spread(n, runs);
        println!("| {n} | {median} | {p90} | {max} |");
    }
}

/// Detection times of `runs` seeds at `n` members, 1% loss, sorted, in simulated ms: a crash
/// (connections close) or a freeze (SIGSTOP: silent, connections stay open). Panics on a
/// false positive.
fn detection_spread(n: usize, runs: u64, freeze: bool) -> Vec<u64> {
    let mut ms: Vec<u64> = (0..runs)
        .map(|seed| {
            let mut sim = Sim::new(n, seed, 0.01);
            // At a random moment of the probe interval: failures do not wait for a schedule.
            let at = 3_000 + StdRng::seed_from_u64(seed).gen_range(0..300);
            sim.run_until(at, |_| false);
            let report = if freeze {
                sim.measure_freeze(n / 2)
            } else {
                sim.measure_crash(n / 2)
            };
            assert!(
                report.false_positives.is_empty(),
                "seed {seed}: {:?}",
                report.false_positives
            );
            report
                .detection_ms
                .unwrap_or_else(|| panic!("seed {seed}: never declared dead"))
        })
        .collect();
    ms.sort();
    ms
}

/// A frozen member of fifty: probed within an interval (the shared schedule), then the
/// suspicion's minimum once about k others, told to probe it next, have confirmed. Before,
/// the minimum grew with log10 N past 20 members (1.53 s at 50) and confirmations came when
/// each prober's round-robin reached the suspect: median 1,853 ms, 90th percentile 2,425 ms
/// over 50 seeds. Then, with each member's own shuffled round-robin, the first probe could
/// be two or three intervals away: 90th percentile 2,185 ms, max 2,647.
#[test]
fn a_frozen_member_of_fifty_is_declared_dead_in_under_two_seconds() {
    let ms = detection_spread(50, 20, true);
    let median = ms[ms.len() / 2];
    assert!(median < 1_700, "median {median} ms of {ms:?}");
    assert!(ms[ms.len() - 1] < 2_000, "max over 2 s: {ms:?}");
}

/// Detection in the simulation (`SIM_SEEDS` runs per size, default 50).
#[test]
#[ignore]
fn detection_table() {
    let runs: u64 = env_number("SIM_SEEDS", 50);
    println!("| N | failure | detection, simulated ms: median | p90 | max ({runs} seeds) |");
    println!("|---|---|---|---|---|");
    for n in [5, 20, 50, 200] {
        for freeze in [false, true] {
            let ms = detection_spread(n, runs, freeze);
            let how = if freeze { "freeze" } else { "crash" };
            let (median, p90) = (at(&ms, 0.5), at(&ms, 0.9));
            println!("| {n} | {how} | {median} | {p90} | {} |", ms[ms.len() - 1]);
        }
    }
}

/// The same chain started all at once, the seed a moment late (black-box trial: n1, n2
/// seeded with n1, n3 with n2, started back to back; n2 dialed n1 before it listened, then
/// n3 joined n2, and the two halves stayed apart until n2's next seed check: 5.1 s, 1.7 to
/// 2.1 s in reruns). A seed still unmet is tried soon after joining, then less and less often.
#[test]
fn a_chain_started_at_once_is_one_cluster_soon_after_its_seed_is_up() {
    for seed in 0..20 {
        assert!(
            chain_is_one_cluster(seed, 200, 1_000),
            "seed {seed}: still two clusters 1 s after the seed started"
        );
    }
}

/// Slot 1 seeded with slot 0, slot 2 with slot 1, started at once; slot 0 (the seed) starts
/// `seed_late` ms later, alone. Whether all three are one cluster within `within` ms of it.
fn chain_is_one_cluster(seed: u64, seed_late: u64, within: u64) -> bool {
    let mut sim = Sim::with_absent(3, 0, seed, 0.0);
    sim.slots[1].seeds = vec![addr(0)];
    sim.start(1);
    sim.slots[2].seeds = vec![addr(1)];
    sim.start(2);
    sim.run_until(seed_late, |_| false);
    sim.start(0);
    let t0 = sim.now;
    sim.run_until(t0 + within, |s: &Sim| {
        s.slots.iter().all(|slot| {
            slot.proc
                .as_ref()
                .is_some_and(|p| p.machine.roster().num_members() == 3)
        })
    })
}

/// A node whose seed is down at its start, dialed meanwhile by another new node, joins with
/// it; once the seed is up the two clusters must become one. Before, the node never tried
/// its seed again (it was joined) and the two stayed apart for good (black-box trial: 2 of
/// 22 chains of nodes started at once, node k seeded with node k - 1).
/// Nodes seeded with an address their seed does not advertise (a Kubernetes Service, a
/// proxy): once a dial of it reached a member, the seed is met. It stayed unmet by its
/// address, and each node dialed it anew at every seed check, every 2 s for good (10 dials
/// per node in 20 s; black-box trial, 2026-12-04).
#[test]
fn a_seed_behind_an_address_it_does_not_advertise_is_met_through_whoever_answers() {
    let n = 5;
    let service = "sim://service".to_string();
    let mut sim = Sim::with_absent(n, 0, 3, 0.0);
    sim.by_addr.insert(service.clone(), 0);
    sim.start(0);
    sim.run_until(5, |_| false);
    for i in 1..n {
        sim.slots[i].seeds = vec![service.clone()];
        sim.start(i);
    }
    let t = sim.now + 2_000;
    sim.run_until(t, |_| false);
    assert!((1..n).all(|i| (0..n).all(|x| sim.seen(i, x) == Some(MemberState::Alive))));
    let joined = sim.dials.get(&service).copied().unwrap_or(0);
    let t = sim.now + 20_000;
    sim.run_until(t, |_| false);
    let later = sim.dials.get(&service).copied().unwrap_or(0) - joined;
    assert_eq!(
        later, 0,
        "{later} dials of the service address after the join"
    );
}

/// A dead member's address given to a new node (a pod's IP reused): every member dialed it
/// now and then to reconnect with the dead one, and each dial reached the new node instead
/// (replacing a connection to it), or the new node itself, for as long as the dead member
/// was remembered (black-box trial, 2026-12-04: about one handshake a second, for an
/// hour). Once a dial meant for it reached another node, it is not dialed there again.
#[test]
fn a_dead_members_address_taken_by_a_new_node_is_not_dialed_for_it_again() {
    let n = 5;
    let mut sim = Sim::with_absent(n + 1, n, 9, 0.0);
    sim.run_until(1_000, |_| false);
    sim.crash(0, false);
    let t = sim.now + 5_000;
    sim.run_until(t, |_| false);
    assert!((1..n).all(|o| sim.seen(o, 0) == Some(MemberState::Dead)));
    // The new node listens at its own address and at the dead one's.
    let old = addr(0);
    sim.by_addr.insert(old.clone(), n);
    sim.slots[n].seeds = vec![addr(1)];
    sim.start(n);
    let t = sim.now + 2_000;
    sim.run_until(t, |_| false);
    assert!((1..=n).all(|o| sim.seen(o, n) == Some(MemberState::Alive)));
    let before = sim.dials.get(&old).copied().unwrap_or(0);
    let t = sim.now + 30_000;
    sim.run_until(t, |_| false);
    let later = sim.dials.get(&old).copied().unwrap_or(0) - before;
    // Each of the 5 learns it once at most (and the new node that it is its own).
    assert!(
        later <= 5,
        "{later} dials of the dead member's address in 30 s"
    );
}

#[test]
fn a_node_that_joined_while_its_seed_was_down_still_reaches_its_seed() {
    for seed in 0..20 {
        // Within one seed check (2 s, +25%) and the exchange it opens. It was one
        // anti-entropy round in 16: 1.5 to 12 s here, and 20 s in a black-box trial.
        assert!(
            chain_is_one_cluster(seed, 3_000, 3_000),
            "seed {seed}: still two clusters 3 s after the seed started"
        );
    }
}
