//! Deterministic simulation of the real protocol core (the `Swim` detector, the `Roster`
//! merge, the `Broadcasts` queue and anti-entropy deltas) for many nodes in one thread, over
//! an in-memory network with loss, delay, pauses and partitions, in virtual time, seeded.
//!
//! Default tests run 50 nodes; `cargo test --release --test simulation -- --ignored
//! --nocapture scale_up_to_1000` runs 50, 200 and 1,000 and prints the figures, and
//! `... scale_10000` the 10,000-node run (about 16 GiB of memory and 5 minutes: every
//! node holds the whole roster, so the state is N^2 member views; rosters start as clones
//! that share records until they change).
//!
//! The harness does per message what a node does; anything that costs the size of the
//! cluster per tick (a scan of the roster to pick a peer) would make the simulation, not
//! the protocol, quadratic, so peers are sampled by rejection from the node's own view.

use gossip_roster::gossip::{self, Broadcasts, Delta};
use gossip_roster::roster::{Applied, NodeDigest, Roster};
use gossip_roster::swim::{Output, Swim, SwimConfig, SwimMsg};
use gossip_roster::{ClusterEvent, MemberState, NodeId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::time::Duration;

const TICK_MS: u64 = 10;
const FANOUT: usize = 3;
const AE_BASE: Duration = Duration::from_millis(500);
const JOIN_RETRY_MS: u64 = 100;

#[derive(Clone, Debug)]
enum Msg {
    Swim(SwimMsg),
    Events(Vec<ClusterEvent>),
    Digest(BTreeMap<NodeId, NodeDigest>),
    Sync(Delta, BTreeMap<NodeId, NodeDigest>),
    Delta(Delta),
}

struct SimNode {
    id: NodeId,
    swim: Swim,
    roster: Roster,
    queue: Broadcasts,
    /// Crashed, or not started yet.
    crashed: bool,
    paused_until: u64,
    next_ae: u64,
    sent: u64,
    /// While joining: the seed, and when to ask it again.
    joining: Option<(usize, u64)>,
}

/// What a run measured.
#[derive(Debug, Default, PartialEq)]
struct Report {
    /// Crash -> every live node has the victim dead, in simulated ms.
    detection_ms: Option<u64>,
    /// Nodes declared dead somewhere that were never crashed.
    false_positives: Vec<String>,
    messages_per_node_per_s: f64,
}

/// How a join spread: simulated time and gossip rounds (hops from the joiner) until every
/// live node lists it, and until it lists every live node.
#[derive(Debug, PartialEq)]
struct JoinReport {
    everyone_knows_it_ms: Option<u64>,
    rounds: u32,
    it_knows_everyone_ms: Option<u64>,
}

struct Sim {
    ids: Vec<NodeId>,
    nodes: Vec<SimNode>,
    now: u64,
    rng: StdRng,
    loss: f64,
    /// (deliver at, sequence, from, to, msg)
    net: BinaryHeap<Reverse<(u64, u64, usize, usize)>>,
    payloads: BTreeMap<u64, Msg>,
    seq: u64,
    /// Partition: node index -> side; messages across sides are lost.
    side: Vec<u8>,
    crashed_ever: HashSet<usize>,
    declared_dead: HashSet<String>,
    /// A node whose spread is traced, and per node the hop at which it learned of it.
    watch: Option<usize>,
    hops: Vec<Option<u32>>,
}

fn id(i: usize) -> NodeId {
    NodeId::new(format!("n{i:05}"))
}

fn hello(node: &NodeId, i: usize) -> ClusterEvent {
    ClusterEvent::NewNode {
        node: node.clone(),
        generation: 1,
        version: 1,
        addr: format!("sim://{i}"),
        actors: Default::default(),
    }
}

impl Sim {
    /// `n` nodes that all know each other.
    fn new(n: usize, seed: u64, loss: f64) -> Sim {
        Sim::with_absent(n, n, seed, loss)
    }

    /// `n` nodes of which the first `members` know each other and run; the rest are not
    /// started (see [`Sim::join`]).
    fn with_absent(n: usize, members: usize, seed: u64, loss: f64) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let ids: Vec<NodeId> = (0..n).map(id).collect();
        // Everyone starts knowing everyone (the join is measured separately): one roster,
        // cloned, whose records stay shared until a node changes them.
        let mut base = Roster::new();
        for (i, node) in ids.iter().enumerate().take(members) {
            base.apply(&hello(node, i));
        }
        let nodes = (0..n)
            .map(|i| {
                let mut swim = Swim::new(ids[i].clone(), SwimConfig::default(), rng.gen());
                let roster = if i < members {
                    for m in &ids[..members] {
                        swim.update_member(m, 1, 0, MemberState::Alive, Duration::ZERO);
                    }
                    base.clone()
                } else {
                    let mut own = Roster::new();
                    own.apply(&hello(&ids[i], i));
                    own
                };
                SimNode {
                    id: ids[i].clone(),
                    swim,
                    roster,
                    queue: Broadcasts::default(),
                    crashed: i >= members,
                    paused_until: 0,
                    next_ae: rng.gen_range(0..AE_BASE.as_millis() as u64),
                    sent: 0,
                    joining: None,
                }
            })
            .collect();
        Sim {
            ids,
            nodes,
            now: 0,
            rng,
            loss,
            net: BinaryHeap::new(),
            payloads: BTreeMap::new(),
            seq: 0,
            side: vec![0; n],
            crashed_ever: HashSet::new(),
            declared_dead: HashSet::new(),
            watch: None,
            hops: vec![None; n],
        }
    }

    /// Starts node `j` with only `seed` to go by, as `gossip-node --seed` does: its own
    /// announcement queued, a digest to the seed, retried until the seed answers.
    fn join(&mut self, j: usize, seed: usize) {
        let node = &mut self.nodes[j];
        node.crashed = false;
        node.joining = Some((seed, self.now + JOIN_RETRY_MS));
        node.next_ae = self.now + AE_BASE.as_millis() as u64;
        node.queue
            .push(hello(&self.ids[j], j), gossip::retransmit_budget(3, 1));
        self.watch = Some(j);
        self.hops = vec![None; self.nodes.len()];
        self.hops[j] = Some(0);
        let digest = self.nodes[j].roster.digest();
        self.send(j, seed, Msg::Digest(digest));
    }

    fn index(&self, node: &NodeId) -> usize {
        node.as_str()[1..].parse().unwrap()
    }

    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        self.nodes[from].sent += 1;
        if self.side[from] != self.side[to] || self.rng.gen_bool(self.loss) {
            return;
        }
        let delay = self.rng.gen_range(1..=5);
        self.seq += 1;
        self.net
            .push(Reverse((self.now + delay, self.seq, from, to)));
        self.payloads.insert(self.seq, msg);
    }

    /// Applies events at node `i`; changed ones are queued for gossip. Returns them.
    fn apply(&mut self, i: usize, events: &[ClusterEvent], spread: bool) -> Vec<ClusterEvent> {
        let now = Duration::from_millis(self.now);
        let node = &mut self.nodes[i];
        for e in events {
            if let ClusterEvent::NodeSuspected {
                node: s,
                incarnation,
                by: Some(by),
                ..
            } = e
            {
                node.swim.handle_suspicion(s, *incarnation, by);
            }
        }
        let n_alive = node.roster.count_by_state()[0].max(1);
        let budget = gossip::retransmit_budget(3, n_alive);
        let mut changed = Vec::new();
        for e in events {
            // Only the owner writes its own record; liveness about us is refuted below.
            if e.node() == &node.id
                && !matches!(
                    e,
                    ClusterEvent::NodeSuspected { .. } | ClusterEvent::NodeDead { .. }
                )
            {
                continue;
            }
            if node.roster.apply(e) == Applied::Changed {
                changed.push(e.clone());
                if spread {
                    node.queue.push(e.clone(), budget);
                }
                if let ClusterEvent::NodeDead { node: d, .. } = e {
                    self.declared_dead.insert(d.as_str().to_owned());
                }
            }
        }
        let node = &mut self.nodes[i];
        for e in &changed {
            if let Some(r) = node.roster.record(e.node()) {
                node.swim.update_member(
                    e.node(),
                    r.generation,
                    r.liveness.incarnation,
                    r.liveness.state,
                    now,
                );
            }
        }
        // SWIM refutation.
        let me = node
            .roster
            .record(&node.id)
            .map(|r| (r.generation, r.liveness));
        if let Some((g, l)) = me {
            if matches!(l.state, MemberState::Suspect | MemberState::Dead) {
                let alive = ClusterEvent::NodeAlive {
                    node: node.id.clone(),
                    generation: g,
                    incarnation: l.incarnation + 1,
                };
                node.roster.apply(&alive);
                node.queue.push(alive, budget);
                node.swim.handle_refuted();
            }
        }
        changed
    }

    /// Up to `k` distinct members that node `i` lists in a state `want` accepts: sampled by
    /// rejection from its own view, falling back to a scan when few qualify.
    fn sample(&mut self, i: usize, k: usize, want: fn(MemberState) -> bool) -> Vec<usize> {
        let n = self.nodes.len();
        let ok = |s: &Sim, j: usize| j != i && s.seen(i, j).is_some_and(want);
        let mut out: Vec<usize> = Vec::with_capacity(k);
        for _ in 0..(8 * k + 16) {
            if out.len() == k {
                return out;
            }
            let j = self.rng.gen_range(0..n);
            if ok(self, j) && !out.contains(&j) {
                out.push(j);
            }
        }
        let rest: Vec<usize> = (0..n)
            .filter(|&j| ok(self, j) && !out.contains(&j))
            .collect();
        out.extend(gossip::choose_peers(&mut self.rng, &rest, k - out.len()));
        out
    }

    fn targets(&mut self, i: usize, k: usize) -> Vec<usize> {
        self.sample(i, k, |s| !s.is_tombstone())
    }

    /// A random member we hold dead (the real node does the same, to heal partitions).
    fn dead_target(&mut self, i: usize) -> Option<usize> {
        if self.nodes[i].roster.count_by_state()[MemberState::Dead as usize] == 0 {
            return None;
        }
        self.sample(i, 1, |s| s == MemberState::Dead).pop()
    }

    fn step(&mut self) {
        self.now += TICK_MS;
        // Deliver what is due (to paused nodes: it waits, like a socket buffer).
        let mut held = Vec::new();
        while let Some(Reverse((at, seq, from, to))) = self.net.peek().copied() {
            if at > self.now {
                break;
            }
            self.net.pop();
            let msg = self.payloads.remove(&seq).unwrap();
            if self.nodes[to].crashed {
                continue;
            }
            if self.nodes[to].paused_until > self.now {
                held.push((self.nodes[to].paused_until, seq, from, to, msg));
                continue;
            }
            self.deliver(from, to, msg);
        }
        for (at, seq, from, to, msg) in held {
            self.net.push(Reverse((at, seq, from, to)));
            self.payloads.insert(seq, msg);
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].crashed || self.nodes[i].paused_until > self.now {
                continue;
            }
            let now = Duration::from_millis(self.now);
            let outputs = self.nodes[i].swim.tick(now);
            self.execute(i, outputs);
            // A gossip round.
            let targets = self.targets(i, FANOUT);
            if !targets.is_empty() && !self.nodes[i].queue.is_empty() {
                let batch = self.nodes[i].queue.take_round(2048, targets.len() as u32);
                for t in targets {
                    self.send(i, t, Msg::Events(batch.clone()));
                }
            }
            // A joiner asks its seed again until it answers.
            if let Some((seed, at)) = self.nodes[i].joining {
                if self.nodes[i].roster.num_records() > 1 {
                    self.nodes[i].joining = None;
                } else if self.now >= at {
                    self.nodes[i].joining = Some((seed, self.now + JOIN_RETRY_MS));
                    let digest = self.nodes[i].roster.digest();
                    self.send(i, seed, Msg::Digest(digest));
                }
            }
            // Anti-entropy.
            if self.now >= self.nodes[i].next_ae {
                let alive = self.nodes[i].roster.count_by_state()[0];
                let every = gossip::anti_entropy_interval(AE_BASE, alive).as_millis() as u64;
                // Jittered like the node's loop, so nodes do not sync up.
                self.nodes[i].next_ae =
                    self.now + self.rng.gen_range(every * 3 / 4..=every * 5 / 4);
                let target = if self.rng.gen_ratio(1, gossip::RECONNECT_ONE_IN) {
                    self.dead_target(i)
                } else {
                    self.targets(i, 1).pop()
                };
                if let Some(t) = target {
                    let digest = self.nodes[i].roster.digest();
                    self.send(i, t, Msg::Digest(digest));
                }
            }
        }
    }

    fn execute(&mut self, i: usize, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Send { to, msg } => {
                    let t = self.index(&to);
                    self.send(i, t, Msg::Swim(msg));
                }
                Output::Suspect {
                    node,
                    generation,
                    incarnation,
                } => {
                    let e = ClusterEvent::NodeSuspected {
                        node,
                        generation,
                        incarnation,
                        by: Some(self.nodes[i].id.clone()),
                    };
                    if self.apply(i, std::slice::from_ref(&e), true).is_empty() {
                        let budget = gossip::retransmit_budget(3, self.nodes.len());
                        self.nodes[i].queue.push(e, budget);
                    }
                }
                Output::Dead {
                    node,
                    generation,
                    incarnation,
                } => {
                    self.apply(
                        i,
                        &[ClusterEvent::NodeDead {
                            node,
                            generation,
                            incarnation,
                        }],
                        true,
                    );
                }
                Output::Reap { node, .. } => {
                    self.nodes[i].roster.remove(&node);
                    self.nodes[i].swim.remove_member(&node);
                }
            }
        }
    }

    fn deliver(&mut self, from: usize, to: usize, msg: Msg) {
        let knew = self.watch.map(|w| self.seen(to, w).is_some());
        self.handle(from, to, msg);
        if let (Some(w), Some(false)) = (self.watch, knew) {
            if self.seen(to, w).is_some() && self.hops[to].is_none() {
                self.hops[to] = Some(self.hops[from].unwrap_or(0) + 1);
            }
        }
    }

    fn handle(&mut self, from: usize, to: usize, msg: Msg) {
        let from_id = self.nodes[from].id.clone();
        match msg {
            Msg::Swim(m) => {
                let outputs = self.nodes[to].swim.handle_message(
                    &from_id,
                    m,
                    Duration::from_millis(self.now),
                );
                self.execute(to, outputs);
            }
            Msg::Events(events) => {
                self.apply(to, &events, true);
            }
            Msg::Digest(theirs) => {
                let delta = gossip::delta_for(&self.nodes[to].roster, &theirs);
                let digest = self.nodes[to].roster.digest();
                self.send(to, from, Msg::Sync(delta, digest));
            }
            Msg::Sync(delta, theirs) => {
                self.apply_delta(to, from, delta);
                let back = gossip::delta_for(&self.nodes[to].roster, &theirs);
                if !back.is_empty() {
                    self.send(to, from, Msg::Delta(back));
                }
            }
            Msg::Delta(delta) => self.apply_delta(to, from, delta),
        }
    }

    /// Repair, applied as the node does: not gossiped on, except what the sender says
    /// about itself (a joiner's announcement); learning anything re-arms our own queue.
    fn apply_delta(&mut self, i: usize, from: usize, delta: Delta) {
        let changed = self.apply(i, &delta.events, false);
        for c in &delta.covers {
            self.nodes[i]
                .roster
                .note_coverage(&c.node, c.generation, c.since, c.upto);
        }
        if !changed.is_empty() {
            let node = &mut self.nodes[i];
            let budget = gossip::retransmit_budget(3, node.roster.count_by_state()[0].max(1));
            node.queue.raise_to(budget);
            for e in changed.into_iter().filter(|e| *e.node() == self.ids[from]) {
                node.queue.push(e, budget);
            }
        }
    }

    fn run_until(&mut self, until_ms: u64, mut stop: impl FnMut(&Sim) -> bool) -> bool {
        while self.now < until_ms {
            self.step();
            if stop(self) {
                return true;
            }
        }
        false
    }

    /// What `observer` lists `of` as (announced members only).
    fn seen(&self, observer: usize, of: usize) -> Option<MemberState> {
        self.nodes[observer].roster.state_of(&self.ids[of])
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| !self.nodes[i].crashed)
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i].crashed = true;
        self.crashed_ever.insert(i);
    }

    fn report(&self, detection_ms: Option<u64>) -> Report {
        let mut false_positives: Vec<String> = self
            .declared_dead
            .iter()
            .filter(|d| {
                !self
                    .crashed_ever
                    .contains(&d[1..].parse::<usize>().unwrap())
            })
            .cloned()
            .collect();
        false_positives.sort();
        let sent: u64 = self.nodes.iter().map(|n| n.sent).sum();
        Report {
            detection_ms,
            false_positives,
            messages_per_node_per_s: sent as f64
                / self.nodes.len() as f64
                / (self.now as f64 / 1000.0),
        }
    }
}

impl Sim {
    /// Starts node `j` through `seed` and runs until every live node lists it alive and it
    /// lists every live node.
    fn measure_join(&mut self, j: usize, seed: usize) -> JoinReport {
        let t0 = self.now;
        self.join(j, seed);
        let everyone_knows = |s: &Sim| s.live().all(|o| s.seen(o, j) == Some(MemberState::Alive));
        let knows_everyone = |s: &Sim| s.live().all(|o| s.seen(j, o) == Some(MemberState::Alive));
        let (mut a, mut b) = (None, None);
        self.run_until(t0 + 60_000, |s| {
            if a.is_none() && everyone_knows(s) {
                a = Some(s.now - t0);
            }
            if b.is_none() && knows_everyone(s) {
                b = Some(s.now - t0);
            }
            a.is_some() && b.is_some()
        });
        let rounds = self.live().filter_map(|o| self.hops[o]).max().unwrap_or(0);
        self.watch = None;
        JoinReport {
            everyone_knows_it_ms: a,
            rounds,
            it_knows_everyone_ms: b,
        }
    }

    /// Crashes `victim`; runs until every live node has it dead, then 5 s more in which
    /// nothing else may be declared dead.
    fn measure_crash(&mut self, victim: usize) -> Report {
        let t0 = self.now;
        self.crash(victim);
        let detected = self.run_until(t0 + 60_000, |s| {
            s.live()
                .all(|o| s.seen(o, victim) == Some(MemberState::Dead))
        });
        let detection = detected.then(|| self.now - t0);
        let t1 = self.now;
        self.run_until(t1 + 5_000, |_| false);
        self.report(detection)
    }
}

/// Crashes one node after a warm-up; runs until every live node has it dead.
fn crash_run(n: usize, seed: u64, loss: f64) -> Report {
    let mut sim = Sim::new(n, seed, loss);
    sim.run_until(3_000, |_| false);
    sim.measure_crash(n / 2)
}

/// `n` members settle, one more joins through node 0, then one member crashes.
fn scale_run(n: usize, seed: u64, loss: f64) -> (JoinReport, Report) {
    let mut sim = Sim::with_absent(n + 1, n, seed, loss);
    sim.run_until(3_000, |_| false);
    let join = sim.measure_join(n, 0);
    let crash = sim.measure_crash(n / 2);
    (join, crash)
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
    let worst = Swim::new(id(0), SwimConfig::default(), 0)
        .config()
        .probe_interval
        .as_millis() as u64
        * 60;
    assert!(detection < worst, "{detection} ms");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    assert_eq!(crash_run(20, 42, 0.05), crash_run(20, 42, 0.05));
}

#[test]
fn a_paused_node_is_suspected_at_most_and_refutes() {
    let mut sim = Sim::new(50, 3, 0.01);
    sim.run_until(3_000, |_| false);
    let paused = 17;
    sim.nodes[paused].paused_until = sim.now + 500;
    let t = sim.now;
    sim.run_until(t + 10_000, |_| false);
    let report = sim.report(None);
    assert!(
        report.false_positives.is_empty(),
        "{:?}",
        report.false_positives
    );
    for o in sim.live() {
        assert_eq!(sim.seen(o, paused), Some(MemberState::Alive), "seen by {o}");
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
        (0..n).all(|o| (0..n).all(|x| s.seen(o, x) == Some(MemberState::Alive)))
    });
    assert!(healed, "rosters did not converge after healing");
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
    assert!(join.rounds >= 2 && join.rounds <= 2 * log2, "{join:?}");
}

/// Prints one markdown row per N (the table `tools/bench` carries).
fn print_scale(sizes: &[usize]) {
    println!(
        "| N | join: rounds (log2 N) | join: all know it | join: it knows all \
         | crash: all hold it dead | false positives | messages/node/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    let ms = |v: Option<u64>| v.map_or("never".into(), |d| format!("{d} ms"));
    for &n in sizes {
        let started = std::time::Instant::now();
        let (join, crash) = scale_run(n, 1, 0.01);
        println!(
            "| {n} | {} ({:.1}) | {} | {} | {} | {} | {:.1} |",
            join.rounds,
            (n as f64).log2(),
            ms(join.everyone_knows_it_ms),
            ms(join.it_knows_everyone_ms),
            ms(crash.detection_ms),
            crash.false_positives.len(),
            crash.messages_per_node_per_s
        );
        eprintln!("N={n}: simulated in {:.0?}", started.elapsed());
    }
}

#[test]
#[ignore = "bigger simulations; run with --release -- --ignored --nocapture"]
fn scale_up_to_1000() {
    print_scale(&[50, 200, 1000]);
}

#[test]
#[ignore = "about 16 GiB and 5 minutes; run with --release -- --ignored --nocapture"]
fn scale_10000() {
    print_scale(&[10_000]);
}
