//! Deterministic simulation of the real protocol core (the `Swim` detector, the `Roster`
//! merge, the `Broadcasts` queue and anti-entropy deltas) for many nodes in one thread, over
//! an in-memory network with loss, delay, pauses and partitions, in virtual time, seeded.
//!
//! Default tests run 50 nodes; `cargo test --release --test simulation -- --ignored
//! --nocapture` runs 200 and 1,000 and prints the figures.

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
const AE_EVERY_MS: u64 = 500;

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
    crashed: bool,
    paused_until: u64,
    next_ae: u64,
    sent: u64,
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

struct Sim {
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
}

fn id(i: usize) -> NodeId {
    NodeId::new(format!("n{i:04}"))
}

impl Sim {
    fn new(n: usize, seed: u64, loss: f64) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        // Everyone starts knowing everyone (the join is measured separately).
        let hello: Vec<ClusterEvent> = (0..n)
            .map(|i| ClusterEvent::NewNode {
                node: id(i),
                generation: 1,
                version: 1,
                addr: format!("sim://{i}"),
                actors: Default::default(),
            })
            .collect();
        let nodes = (0..n)
            .map(|i| {
                let mut roster = Roster::new();
                for e in &hello {
                    roster.apply(e);
                }
                let mut swim = Swim::new(id(i), SwimConfig::default(), rng.gen());
                for j in 0..n {
                    swim.update_member(&id(j), 1, 0, MemberState::Alive, Duration::ZERO);
                }
                SimNode {
                    id: id(i),
                    swim,
                    roster,
                    queue: Broadcasts::default(),
                    crashed: false,
                    paused_until: 0,
                    next_ae: rng.gen_range(0..AE_EVERY_MS),
                    sent: 0,
                }
            })
            .collect();
        Sim {
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
        }
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

    fn targets(&mut self, i: usize, k: usize) -> Vec<usize> {
        let cands: Vec<usize> = self.nodes[i]
            .roster
            .members()
            .into_iter()
            .filter(|m| m.id != self.nodes[i].id && !m.state.is_tombstone())
            .map(|m| self.index(&m.id))
            .collect();
        gossip::choose_peers(&mut self.rng, &cands, k)
    }

    /// A random member we hold dead (the real node does the same, to heal partitions).
    fn dead_target(&mut self, i: usize) -> Option<usize> {
        let dead: Vec<usize> = self.nodes[i]
            .roster
            .members()
            .into_iter()
            .filter(|m| m.state == MemberState::Dead)
            .map(|m| self.index(&m.id))
            .collect();
        gossip::choose_peers(&mut self.rng, &dead, 1).pop()
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
            // Anti-entropy.
            if self.now >= self.nodes[i].next_ae {
                self.nodes[i].next_ae = self.now + AE_EVERY_MS;
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
                self.apply_delta(to, delta);
                let back = gossip::delta_for(&self.nodes[to].roster, &theirs);
                if !back.is_empty() {
                    self.send(to, from, Msg::Delta(back));
                }
            }
            Msg::Delta(delta) => self.apply_delta(to, delta),
        }
    }

    fn apply_delta(&mut self, i: usize, delta: Delta) {
        self.apply(i, &delta.events, false);
        for c in &delta.covers {
            self.nodes[i]
                .roster
                .note_coverage(&c.node, c.generation, c.since, c.upto);
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

    fn state_seen_by(&self, observer: usize, of: usize) -> Option<MemberState> {
        self.nodes[observer].roster.member(&id(of)).map(|m| m.state)
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

/// Crashes one node after a warm-up; runs until every live node has it dead.
fn crash_run(n: usize, seed: u64, loss: f64) -> Report {
    let mut sim = Sim::new(n, seed, loss);
    sim.run_until(3_000, |_| false);
    let victim = n / 2;
    let t0 = sim.now;
    sim.crash(victim);
    let detected = sim.run_until(t0 + 60_000, |s| {
        s.live()
            .all(|o| s.state_seen_by(o, victim) == Some(MemberState::Dead))
    });
    let detection = detected.then(|| sim.now - t0);
    // Keep running a while: nothing else may be declared dead.
    let t1 = sim.now;
    sim.run_until(t1 + 5_000, |_| false);
    sim.report(detection)
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
        assert_eq!(
            sim.state_seen_by(o, paused),
            Some(MemberState::Alive),
            "seen by {o}"
        );
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
        s.state_seen_by(0, 40) == Some(MemberState::Dead)
            && s.state_seen_by(40, 0) == Some(MemberState::Dead)
    });
    assert!(split, "the sides never declared each other dead");
    sim.side = vec![0; n];
    let t = sim.now;
    // Healed: the dead refute through anti-entropy, and all rosters agree on all alive.
    let healed = sim.run_until(t + 120_000, |s| {
        (0..n).all(|o| (0..n).all(|x| s.state_seen_by(o, x) == Some(MemberState::Alive)))
    });
    assert!(healed, "rosters did not converge after healing");
}

fn print_scale(n: usize) {
    let report = crash_run(n, 1, 0.01);
    println!(
        "N={n}: detection {} ms, false positives {}, {:.1} messages/node/s",
        report
            .detection_ms
            .map_or("never".into(), |d| d.to_string()),
        report.false_positives.len(),
        report.messages_per_node_per_s
    );
}

#[test]
#[ignore = "bigger simulations; run with --release -- --ignored --nocapture"]
fn scale_200_and_1000() {
    for n in [50, 200, 1000] {
        print_scale(n);
    }
}
