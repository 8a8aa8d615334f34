//! The node runtime: the pure core (roster, gossip decisions) and the IO shell (store,
//! WebSocket connections, timers) wired with tokio. Read top to bottom:
//!
//! * `start`: bind, recover from the data dir, bring our own record up to date, spawn tasks.
//! * tasks: accept loop, gossip flusher, anti-entropy, join (seeds or remembered peers),
//!   compaction. All stop on `shutdown`.
//! * `receive`: apply incoming events; those that changed the roster are logged and, only once
//!   durable, re-gossiped and published to subscribers (raft-rs's persist-before-send).
//!
//! The roster lock is a `std` mutex never held across an `.await`: no caller can deadlock on it.

use crate::detector::{self, Quorum};
use crate::error::{Error, Result};
use crate::event::{ClusterEvent, Generation, Lsn, MemberState, NodeId};
use crate::gossip::{self, Broadcasts, Delta};
use crate::local::Identity;
use crate::message::{AdminReply, AdminRequest, Frame, Status};
use crate::peers::Peers;
use crate::roster::{Applied, Member, NodeDigest, Roster};
use crate::store::{CompactionReport, Store, StoreConfig};
use crate::swim::{Swim, SwimConfig};
use crate::transport::TransportConfig;
use rand::Rng;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Dissemination knobs. Defaults are tuned for a LAN.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// Spacing of gossip rounds: a lone event goes out at once, a burst shares frames
    /// sent at most once per window.
    pub window: Duration,
    /// Peers each gossip round goes to.
    pub fanout: usize,
    /// Each event is sent about `mult * ceil(log2(N + 1))` times in all.
    pub retransmit_mult: u32,
    /// Digest exchange with one random peer this often (repairs what gossip missed), in
    /// clusters of up to 32; one more interval per doubling beyond
    /// ([`gossip::anti_entropy_interval`]).
    pub anti_entropy_interval: Duration,
    /// Most events in one frame (frames stay well under the 1 MiB cap).
    pub max_events_per_frame: usize,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            window: Duration::from_millis(2),
            fanout: 3,
            retransmit_mult: 3,
            anti_entropy_interval: Duration::from_millis(500),
            max_events_per_frame: 2048,
        }
    }
}

/// Everything needed to start a node. `Default` gives documented defaults.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    /// `HOST:PORT` to listen on; port 0 picks a free one.
    pub listen: String,
    /// The address others dial; default `ws://<bound listen address>`.
    pub advertise: Option<String>,
    /// `None`: use the id stored in the data dir, or generate one on first start.
    pub node_id: Option<NodeId>,
    /// Actors hosted from the start (added if not already registered).
    pub actors: Vec<String>,
    /// `ws://HOST:PORT` of any members; empty: rejoin through the peers the data dir knows.
    pub seeds: Vec<String>,
    pub transport: TransportConfig,
    pub gossip: GossipConfig,
    /// Failure detection (probes, suspicion, tombstones, stability).
    pub swim: SwimConfig,
    pub store: StoreConfig,
    /// Most inbound connections at once; more are closed at once.
    pub max_connections: usize,
    /// How often the compaction thresholds are checked.
    pub compaction_check: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("gossip-data"),
            listen: "127.0.0.1:0".into(),
            advertise: None,
            node_id: None,
            actors: Vec::new(),
            seeds: Vec::new(),
            transport: TransportConfig::default(),
            gossip: GossipConfig::default(),
            swim: SwimConfig::default(),
            store: StoreConfig::default(),
            max_connections: 1024,
            compaction_check: Duration::from_secs(1),
        }
    }
}

/// What start-up found, for logs and status.
#[derive(Clone, Debug)]
pub struct StartInfo {
    pub identity: Identity,
    pub addr: String,
    pub listen: std::net::SocketAddr,
    /// True when the data dir was new.
    pub created: bool,
    pub recovered_members: usize,
    pub replayed: u64,
    pub last_lsn: Lsn,
    pub repaired_torn_tail: bool,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) roster: Mutex<Roster>,
    pub(crate) identity: Identity,
    pub(crate) addr: String,
    pub(crate) config: NodeConfig,
    pub(crate) peers: Peers,
    broadcasts: Mutex<Broadcasts>,
    flush: Notify,
    joined: Notify,
    changes: broadcast::Sender<MembershipChange>,
    pub(crate) swim: Mutex<Swim>,
    quorum: Mutex<Quorum>,
    quorum_tx: watch::Sender<Quorum>,
    pub(crate) cancel: CancellationToken,
    pub(crate) tasks: TaskTracker,
    started: Instant,
    /// Ourselves, for spawning tasks from `&self` methods.
    this: std::sync::Weak<Inner>,
}

/// A change of the roster as subscribers see it: the event, and the actors its node hosts
/// (for `NodeSuspected`, `NodeDead` and `NodeLeft`, the actors an actor system may have to
/// re-home).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipChange {
    pub event: ClusterEvent,
    pub actors: Vec<String>,
}

/// A running node. Cheap to clone; all clones drive the same node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl Node {
    /// Binds the listener, opens (or creates) the data dir, recovers the roster, brings our
    /// own record up to date, and starts gossiping. Must be called inside a tokio runtime.
    pub async fn start(config: NodeConfig) -> Result<(Node, StartInfo)> {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| Error::Listen {
                addr: config.listen.clone(),
                source: e,
            })?;
        let local = listener.local_addr().map_err(Error::io(&config.data_dir))?;
        let scheme = if config.transport.tls.is_some() {
            "wss"
        } else {
            "ws"
        };
        let addr = config
            .advertise
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{local}"));

        // Opening the store and persisting the identity read and fsync files: off the async
        // workers, which would otherwise stall every other task (a node's peers' handshakes
        // when many start in one process).
        let opening = config.clone();
        let (store, recovered, (identity, created), largest) =
            tokio::task::spawn_blocking(move || -> Result<_> {
                let (store, recovered) = Store::open(&opening.data_dir, opening.store.clone())?;
                let identity = resolve_identity(&store, &opening, &recovered.roster)?;
                let largest = store.meta()?.largest_cluster;
                Ok((store, recovered, identity, largest))
            })
            .await
            .expect("store open does not panic")?;
        let info = StartInfo {
            identity: identity.clone(),
            addr: addr.clone(),
            listen: local,
            created,
            recovered_members: recovered.roster.num_members(),
            replayed: recovered.replayed,
            last_lsn: recovered.last_lsn,
            repaired_torn_tail: recovered.repaired.is_some(),
        };
        let previous = recovered.roster.record(&identity.id).cloned();
        let quorum = detector::quorum(largest, recovered.roster.count_by_state());
        let swim = detector::new_swim(&identity.id, config.swim.clone());
        let inner = Arc::new_cyclic(|this| Inner {
            store,
            roster: Mutex::new(recovered.roster),
            identity,
            addr: addr.clone(),
            peers: Peers::new(config.max_connections),
            config,
            broadcasts: Mutex::new(Broadcasts::default()),
            flush: Notify::new(),
            joined: Notify::new(),
            changes: broadcast::channel(4096).0,
            swim: Mutex::new(swim),
            quorum: Mutex::new(quorum),
            quorum_tx: watch::channel(quorum).0,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            started: Instant::now(),
            this: this.clone(),
        });
        let node = Node { inner };
        let events = {
            let roster = node.inner.roster.lock().unwrap();
            let me = &node.inner.identity;
            match previous.filter(|p| p.generation != me.generation) {
                // We left last time: a new generation that carries our actors and versions on.
                Some(prev) => me.rejoin_events(&prev, &addr, &node.inner.config.actors),
                None => me.startup_events(&roster, &addr, &node.inner.config.actors),
            }
        };
        // The detector starts from what the data dir remembers.
        let everyone: Vec<NodeId> = node
            .inner
            .roster
            .lock()
            .unwrap()
            .iter_records()
            .map(|(id, _)| id.clone())
            .collect();
        detector::observe(&node.inner, &everyone);
        node.inner.commit_local(events).await?;

        let inner = &node.inner;
        inner
            .tasks
            .spawn(crate::peers::accept_loop(inner.clone(), listener));
        inner.tasks.spawn(flush_loop(inner.clone()));
        inner.tasks.spawn(anti_entropy_loop(inner.clone()));
        inner.tasks.spawn(join_loop(inner.clone()));
        inner.tasks.spawn(compaction_loop(inner.clone()));
        inner.tasks.spawn(detector::run(inner.clone()));
        inner
            .tasks
            .spawn(persist_largest_loop(inner.clone(), largest));
        Ok((node, info))
    }

    pub fn id(&self) -> &NodeId {
        &self.inner.identity.id
    }

    pub fn generation(&self) -> Generation {
        self.inner.identity.generation
    }

    /// The address others dial.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Registers an actor on this node; resolves once durable (it is then gossiped).
    /// False if it was already hosted.
    pub async fn register_actor(&self, actor: &str) -> Result<bool> {
        self.change_own_record(|id, roster| id.add_actor(roster, actor))
            .await
    }

    /// Unregisters an actor; resolves once durable. False if it was not hosted here.
    pub async fn unregister_actor(&self, actor: &str) -> Result<bool> {
        self.change_own_record(|id, roster| id.remove_actor(roster, actor))
            .await
    }

    async fn change_own_record(
        &self,
        change: impl FnOnce(&Identity, &Roster) -> Option<ClusterEvent>,
    ) -> Result<bool> {
        // Computed and applied under one lock, so concurrent changes get distinct versions.
        let event = {
            let mut roster = self.inner.roster.lock().unwrap();
            match change(&self.inner.identity, &roster) {
                Some(e) => {
                    roster.apply(&e);
                    e
                }
                None => return Ok(false),
            }
        };
        self.inner.log_and_spread(vec![event], true).await?;
        Ok(true)
    }

    /// Live hosts of an actor (alive or suspected members; never dead or gone ones).
    pub fn locate(&self, actor: &str) -> Vec<NodeId> {
        self.inner.roster.lock().unwrap().locate(actor)
    }

    pub fn members(&self) -> Vec<Member> {
        self.inner.roster.lock().unwrap().members()
    }

    /// A copy of the whole roster.
    pub fn roster(&self) -> Roster {
        self.inner.roster.lock().unwrap().clone()
    }

    /// Every change to the roster, as it becomes durable here, with the actors of the node
    /// it is about. Dropping the receiver unsubscribes. A receiver that falls more than 4096
    /// changes behind gets `Lagged` (and should re-read `members()`).
    pub fn subscribe(&self) -> broadcast::Receiver<MembershipChange> {
        self.inner.changes.subscribe()
    }

    /// Whether this node sees a majority of the largest recent cluster.
    pub fn quorum(&self) -> Quorum {
        *self.inner.quorum.lock().unwrap()
    }

    /// Changes of [`Node::quorum`], as they happen.
    pub fn watch_quorum(&self) -> watch::Receiver<Quorum> {
        self.inner.quorum_tx.subscribe()
    }

    /// Applies events as if received from a peer (tests and embedding); resolves once the
    /// changed ones are durable. Returns them.
    pub async fn apply_and_log(&self, events: Vec<ClusterEvent>) -> Result<Vec<ClusterEvent>> {
        self.inner.receive(events).await
    }

    pub fn status(&self) -> Status {
        self.inner.status()
    }

    /// Compacts now if a threshold was passed. Blocking work runs off the executor.
    pub async fn compact_if_needed(&self) -> Result<Option<CompactionReport>> {
        self.inner.clone().compact_if_needed().await
    }

    pub async fn compact(&self) -> Result<CompactionReport> {
        self.inner.clone().compact().await
    }

    /// Announces a graceful leave: `NodeLeft` is logged, then pushed to a few peers right
    /// away (bounded wait). The node keeps running until [`Node::shutdown`].
    pub async fn leave(&self) -> Result<()> {
        let event = {
            let roster = self.inner.roster.lock().unwrap();
            let incarnation = roster
                .record(self.id())
                .map_or(0, |r| r.liveness.incarnation);
            ClusterEvent::NodeLeft {
                node: self.id().clone(),
                generation: self.generation(),
                incarnation,
            }
        };
        let changed = self.inner.commit_local(vec![event]).await?;
        let targets = self
            .inner
            .gossip_targets(self.inner.config.gossip.fanout * 2);
        for m in &targets {
            self.inner
                .peers
                .send(&self.inner, m, Frame::Events(changed.clone()));
        }
        self.inner.peers.drain(Duration::from_millis(500)).await;
        Ok(())
    }

    /// Stops every task, syncs the WAL and flushes the snapshot. The data dir is released
    /// when the last handle is dropped.
    pub async fn shutdown(self) -> Result<()> {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        self.inner.peers.clear();
        let inner = self.inner;
        tokio::task::spawn_blocking(move || match Arc::try_unwrap(inner) {
            Ok(inner) => inner.store.close(),
            Err(shared) => {
                shared.store.sync().wait()?;
                Ok(())
            }
        })
        .await
        .expect("close does not panic")
    }
}

/// Applies an admin actor change to each name in turn; replies with the names that changed.
async fn change_actors<F, Fut>(actors: Vec<String>, mut change: F) -> AdminReply
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(String, bool)>>,
{
    let mut changed = Vec::new();
    for a in actors {
        match change(a).await {
            Ok((a, true)) => changed.push(a),
            Ok((_, false)) => {}
            Err(e) => return AdminReply::Error(e.to_string()),
        }
    }
    AdminReply::ActorsChanged { changed }
}

/// Our identity: stored, or new (generation = now), or a new generation after a leave.
fn resolve_identity(
    store: &Store,
    config: &NodeConfig,
    roster: &Roster,
) -> Result<(Identity, bool)> {
    let (identity, created) = match store.identity()? {
        Some((stored, generation)) => {
            if let Some(given) = config.node_id.as_ref().filter(|g| **g != stored) {
                return Err(Error::NodeIdMismatch {
                    stored: stored.to_string(),
                    given: given.to_string(),
                });
            }
            (
                Identity {
                    id: stored,
                    generation,
                },
                false,
            )
        }
        None => {
            let identity = Identity {
                id: config.node_id.clone().unwrap_or_else(NodeId::random),
                generation: crate::store::wal::unix_ms(),
            };
            store.set_identity(&identity.id, identity.generation)?;
            (identity, true)
        }
    };
    if !identity.has_left(roster) {
        return Ok((identity, created));
    }
    // `left` is final for a generation, so coming back after a graceful leave is a new one.
    let generation = crate::store::wal::unix_ms().max(identity.generation + 1);
    store.set_identity(&identity.id, generation)?;
    tracing::info!(
        generation,
        "left the cluster last time; rejoining as a new generation"
    );
    Ok((
        Identity {
            generation,
            ..identity
        },
        created,
    ))
}

impl Inner {
    pub(crate) fn me(&self) -> &NodeId {
        &self.identity.id
    }

    /// The detector's clock: time since this node started.
    pub(crate) fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Gossips an event that changed nothing here (a confirming suspicion), unlogged.
    pub(crate) fn spread_only(&self, event: ClusterEvent) {
        let n = self.roster.lock().unwrap().count_by_state()[0].max(1);
        let budget = gossip::retransmit_budget(self.config.gossip.retransmit_mult, n);
        self.broadcasts.lock().unwrap().push(event, budget);
        self.flush.notify_one();
    }

    /// Recomputes the quorum after a change: `left` members left gracefully (the cluster
    /// shrank on purpose), `reaped` a dead member was forgotten (it counts as a shrink only
    /// while we are in the majority: a minority must not talk itself into being the whole).
    pub(crate) fn update_quorum(&self, left: u64, reaped: bool) {
        let counts = self.roster.lock().unwrap().count_by_state();
        let (old, new) = {
            let mut q = self.quorum.lock().unwrap();
            let mut largest = q.largest.saturating_sub(left);
            if reaped && q.in_majority {
                largest = largest.saturating_sub(1);
            }
            let old = *q;
            *q = detector::quorum(largest, counts);
            (old, *q)
        };
        if new.in_majority != old.in_majority {
            if new.in_majority {
                tracing::info!(
                    alive = new.alive,
                    largest = new.largest,
                    "in the majority again"
                );
            } else {
                tracing::warn!(
                    alive = new.alive,
                    largest = new.largest,
                    "NOT in the majority: this node sees too few members to speak for the cluster"
                );
            }
        }
        if new != old {
            self.quorum_tx.send_replace(new);
        }
    }

    fn self_arc(&self) -> Arc<Inner> {
        self.this
            .upgrade()
            .expect("the node is alive while its methods run")
    }

    /// Our own changes (start-up, leave): applied, logged, then gossiped and published.
    /// Returns the changed ones, once durable.
    pub(crate) async fn commit_local(
        &self,
        events: Vec<ClusterEvent>,
    ) -> Result<Vec<ClusterEvent>> {
        let changed: Vec<ClusterEvent> = {
            let mut roster = self.roster.lock().unwrap();
            events
                .into_iter()
                .filter(|e| roster.apply(e) == Applied::Changed)
                .collect()
        };
        self.log_and_spread(changed.clone(), true).await?;
        Ok(changed)
    }

    /// Events from a peer: the acceptable ones are applied; those that changed the roster are
    /// logged, then re-gossiped and published. Returns them, once durable.
    pub(crate) async fn receive(&self, events: Vec<ClusterEvent>) -> Result<Vec<ClusterEvent>> {
        detector::note_confirmations(self, &events);
        let changed: Vec<ClusterEvent> = {
            let mut roster = self.roster.lock().unwrap();
            events
                .into_iter()
                .filter(|e| self.accept_event(e))
                .filter(|e| roster.apply(e) == Applied::Changed)
                .collect()
        };
        self.log_and_spread(changed.clone(), true).await?;
        self.refute_if_accused().await?;
        Ok(changed)
    }

    /// Events already applied to the roster: make them durable and let them out.
    ///
    /// What we say about ourselves (our record: its versions must never be reused for other
    /// content after a crash) goes out only once durable. What we relay about others is
    /// already durable at its owner, and losing our copy in a crash costs an anti-entropy
    /// resend, nothing more: it goes out at once, so a wave of gossip does not wait for a
    /// disk at every hop. Acknowledgements and subscribers always wait for durability.
    pub(crate) async fn log_and_spread(
        &self,
        changed: Vec<ClusterEvent>,
        spread: bool,
    ) -> Result<()> {
        if changed.is_empty() {
            return Ok(());
        }
        let (own, relayed): (Vec<ClusterEvent>, Vec<ClusterEvent>) = if spread {
            changed.iter().cloned().partition(|e| e.node() == self.me())
        } else {
            Default::default()
        };
        let mut first_wave = self.send_first_wave(relayed);
        if let Err(e) = self.store.append(changed.clone()).await {
            if matches!(e, Error::WalFailed(_)) {
                // Never retried: stop, and recover from the log on restart.
                tracing::error!(error = %e, "the WAL failed; stopping the node");
                self.cancel.cancel();
            }
            return Err(e);
        }
        first_wave = first_wave.max(self.send_first_wave(own));
        if spread {
            let n = self.roster.lock().unwrap().count_by_state()[0].max(1);
            let budget = gossip::retransmit_budget(self.config.gossip.retransmit_mult, n);
            // The rest of the budget is spent by the flusher.
            let remaining = budget.saturating_sub(first_wave as u32);
            if remaining > 0 {
                let mut q = self.broadcasts.lock().unwrap();
                for e in &changed {
                    q.push(e.clone(), remaining);
                }
                self.flush.notify_one();
            }
        }
        let touched: Vec<NodeId> = changed.iter().map(|e| e.node().clone()).collect();
        detector::observe(self, &touched);
        self.update_quorum(detector::leaves(&changed, self.me()), false);
        if self.changes.receiver_count() > 0 {
            let roster = self.roster.lock().unwrap();
            for event in changed {
                let actors = roster
                    .record(event.node())
                    .map(|r| {
                        let mut a: Vec<String> = r.hosted_actors().map(str::to_owned).collect();
                        a.sort_unstable();
                        a
                    })
                    .unwrap_or_default();
                let _ = self.changes.send(MembershipChange { event, actors });
            }
        }
        Ok(())
    }

    /// News goes out at once, in one frame per target: every hop of the first wave costs no
    /// batching delay. Returns the number of targets.
    fn send_first_wave(&self, events: Vec<ClusterEvent>) -> usize {
        if events.is_empty() {
            return 0;
        }
        let targets = self.gossip_targets(self.config.gossip.fanout);
        for frame in gossip::chunks(events, self.config.gossip.max_events_per_frame) {
            for m in &targets {
                self.peers
                    .send(&self.self_arc(), m, Frame::Events(frame.clone()));
            }
        }
        targets.len()
    }

    /// Drops events no peer may send: data about our own record (we are its only writer, so
    /// a peer can only echo what we wrote, or forge), and anything claiming our id under
    /// another generation. What others say about our liveness is accepted (and refuted).
    fn accept_event(&self, e: &ClusterEvent) -> bool {
        if e.node() != self.me() {
            return true;
        }
        if e.generation() > self.identity.generation {
            tracing::warn!(event = %e, "ignoring an event that claims our id with a newer generation");
            return false;
        }
        e.generation() == self.identity.generation
            && matches!(
                e,
                ClusterEvent::NodeSuspected { .. }
                    | ClusterEvent::NodeDead { .. }
                    | ClusterEvent::NodeAlive { .. }
                    | ClusterEvent::NodeLeft { .. }
            )
    }

    /// SWIM refutation: if the roster says we are suspect or dead, announce ourselves alive
    /// with a higher incarnation.
    async fn refute_if_accused(&self) -> Result<()> {
        let refutation = {
            let mut roster = self.roster.lock().unwrap();
            let rec = roster.record(self.me());
            match rec.map(|r| (r.generation, r.liveness)) {
                Some((g, l))
                    if g == self.identity.generation
                        && matches!(l.state, MemberState::Suspect | MemberState::Dead) =>
                {
                    let e = ClusterEvent::NodeAlive {
                        node: self.me().clone(),
                        generation: g,
                        incarnation: l.incarnation + 1,
                    };
                    roster.apply(&e);
                    Some(e)
                }
                _ => None,
            }
        };
        match refutation {
            Some(e) => {
                tracing::info!(event = %e, "refuting a suspicion about us");
                self.swim.lock().unwrap().handle_refuted();
                self.log_and_spread(vec![e], true).await
            }
            None => Ok(()),
        }
    }

    /// Members we may gossip to: announced, not dead or gone, not us. Random order, at most `n`.
    pub(crate) fn gossip_targets(&self, n: usize) -> Vec<Member> {
        self.pick_members(n, |state| !state.is_tombstone())
    }

    /// A random member we hold dead (not left): anti-entropy with it heals partitions.
    fn dead_target(&self) -> Option<Member> {
        self.pick_members(1, |state| state == MemberState::Dead)
            .pop()
    }

    /// Up to `n` random announced members other than us whose state passes `keep`. Runs on
    /// every gossip round, so only the chosen few are turned into `Member` views.
    fn pick_members(&self, n: usize, keep: impl Fn(MemberState) -> bool) -> Vec<Member> {
        let roster = self.roster.lock().unwrap();
        let candidates: Vec<&NodeId> = roster
            .iter_records()
            .filter(|(id, r)| *id != self.me() && r.is_announced() && keep(r.liveness.state))
            .map(|(id, _)| id)
            .collect();
        gossip::choose_peers(&mut rand::thread_rng(), &candidates, n)
            .into_iter()
            .filter_map(|id| roster.member(id))
            .collect()
    }

    pub(crate) fn digest(&self) -> Vec<(NodeId, NodeDigest)> {
        self.roster.lock().unwrap().digest().into_iter().collect()
    }

    fn delta_for(&self, theirs: Vec<(NodeId, NodeDigest)>) -> Delta {
        let theirs: BTreeMap<NodeId, NodeDigest> = theirs.into_iter().collect();
        gossip::delta_for(&self.roster.lock().unwrap(), &theirs)
    }

    /// Applies an anti-entropy delta (not re-gossiped: it is repair, not news).
    async fn receive_delta(&self, from: &NodeId, delta: Delta) -> Result<()> {
        let changed = {
            let mut roster = self.roster.lock().unwrap();
            let events: Vec<ClusterEvent> = delta
                .events
                .into_iter()
                .filter(|e| self.accept_event(e))
                .collect();
            Delta {
                events,
                covers: delta.covers,
            }
            .apply_to(&mut roster)
        };
        let learned = !changed.is_empty();
        // Repair is not news, with one exception: what the peer tells about itself. A node
        // that joins by anti-entropy is known only to the peer it synced with otherwise (its
        // own announcement then arrives there as a duplicate and stops); concurrent joiners
        // would wait for anti-entropy to meet.
        let (news, repair): (Vec<ClusterEvent>, Vec<ClusterEvent>) =
            changed.into_iter().partition(|e| e.node() == from);
        self.log_and_spread(news, true).await?;
        self.log_and_spread(repair, false).await?;
        // Our own events that waited for someone to tell (a newcomer's announcement) can go
        // now that we know more peers.
        if learned {
            let n = self.roster.lock().unwrap().count_by_state()[0].max(1);
            let budget = gossip::retransmit_budget(self.config.gossip.retransmit_mult, n);
            let mut q = self.broadcasts.lock().unwrap();
            if !q.is_empty() {
                q.raise_to(budget);
                self.flush.notify_one();
            }
        }
        self.refute_if_accused().await
    }

    /// Splits a delta into frames under the size cap; the last one is built by `last`.
    fn delta_frames(&self, delta: Delta, last: impl FnOnce(Delta) -> Frame) -> Vec<Frame> {
        let mut chunks = gossip::chunks(delta.events, self.config.gossip.max_events_per_frame);
        let tail = chunks.pop().unwrap_or_default();
        let mut frames: Vec<Frame> = chunks
            .into_iter()
            .map(|events| {
                Frame::Delta(Delta {
                    events,
                    covers: Vec::new(),
                })
            })
            .collect();
        frames.push(last(Delta {
            events: tail,
            covers: delta.covers,
        }));
        frames
    }

    /// Handles one frame from a member; returns frames to send back on the same connection.
    pub(crate) async fn handle_member_frame(
        &self,
        from: &NodeId,
        frame: Frame,
    ) -> Result<Vec<Frame>, String> {
        let result = match frame {
            Frame::Events(events) => self.receive(events).await.map(|_| Vec::new()),
            Frame::Digest(theirs) => {
                let delta = self.delta_for(theirs);
                let digest = self.digest();
                Ok(self.delta_frames(delta, |d| Frame::Sync { delta: d, digest }))
            }
            Frame::Sync { delta, digest } => {
                self.joined.notify_waiters();
                let r = self.receive_delta(from, delta).await;
                let back = self.delta_for(digest);
                r.map(|_| {
                    if back.is_empty() {
                        Vec::new()
                    } else {
                        self.delta_frames(back, Frame::Delta)
                    }
                })
            }
            Frame::Delta(delta) => self.receive_delta(from, delta).await.map(|_| Vec::new()),
            Frame::Swim(msg) => detector::handle(&self.self_arc(), from, msg)
                .await
                .map(|_| Vec::new()),
            other => {
                return Err(format!(
                    "unexpected {} frame from member {from}",
                    crate::transport::frame_name(&other)
                ))
            }
        };
        result.map_err(|e| format!("while handling a frame from {from}: {e}"))
    }

    pub(crate) async fn handle_admin(self: &Arc<Self>, req: AdminRequest) -> AdminReply {
        let node = Node {
            inner: self.clone(),
        };
        match req {
            AdminRequest::Members => AdminReply::Members(node.members()),
            AdminRequest::Locate { actor } => {
                let roster = self.roster.lock().unwrap();
                AdminReply::Located(
                    roster
                        .locate(&actor)
                        .iter()
                        .filter_map(|id| roster.member(id))
                        .collect(),
                )
            }
            AdminRequest::AddActors { actors } | AdminRequest::RemoveActors { actors }
                if actors.iter().any(|a| a.is_empty() || a.len() > 1024) =>
            {
                AdminReply::Error("actor names must be 1 to 1024 bytes".into())
            }
            AdminRequest::AddActors { actors } => {
                let node = &node;
                change_actors(actors, |a| async move {
                    node.register_actor(&a).await.map(|c| (a, c))
                })
                .await
            }
            AdminRequest::RemoveActors { actors } => {
                let node = &node;
                change_actors(actors, |a| async move {
                    node.unregister_actor(&a).await.map(|c| (a, c))
                })
                .await
            }
            AdminRequest::Status => AdminReply::Status(Box::new(self.status())),
        }
    }

    fn status(&self) -> Status {
        let roster = self.roster.lock().unwrap();
        let [alive, suspect, dead, left] = roster.count_by_state();
        let incarnation = roster
            .record(self.me())
            .map_or(0, |r| r.liveness.incarnation);
        drop(roster);
        let wal = self.store.wal_stats();
        let quorum = *self.quorum.lock().unwrap();
        let (awareness, health) = {
            let swim = self.swim.lock().unwrap();
            (swim.awareness(), swim.health(self.now()))
        };
        Status {
            node_id: self.me().clone(),
            generation: self.identity.generation,
            incarnation,
            addr: self.addr.clone(),
            cluster: self.config.transport.cluster.clone(),
            alive,
            suspect,
            dead,
            left,
            connections: self.peers.len(),
            frames_sent: self.peers.frames_sent.load(Ordering::Relaxed),
            bytes_sent: self.peers.bytes_sent.load(Ordering::Relaxed),
            wal_last_lsn: wal.last_lsn.load(Ordering::Relaxed),
            wal_durable_lsn: wal.durable_lsn.load(Ordering::Relaxed),
            wal_bytes_written: wal.bytes_written.load(Ordering::Relaxed),
            fsync_policy: self.config.store.wal.policy.to_string(),
            snapshot_lsn: self.store.meta().map(|m| m.snapshot_lsn).unwrap_or(0),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            in_majority: quorum.in_majority,
            largest_cluster: quorum.largest,
            awareness,
            stable: health.iter().filter(|h| h.stable).count(),
            flapping: health
                .into_iter()
                .filter(|h| h.flips > 0)
                .map(|h| (h.id, h.flips))
                .collect(),
        }
    }

    async fn compact_if_needed(self: Arc<Self>) -> Result<Option<CompactionReport>> {
        if !self.store.needs_compaction() {
            return Ok(None);
        }
        self.compact().await.map(Some)
    }

    async fn compact(self: Arc<Self>) -> Result<CompactionReport> {
        tokio::task::spawn_blocking(move || {
            self.store.compact(|| self.roster.lock().unwrap().clone())
        })
        .await
        .expect("compaction does not panic")
    }
}

/// Sends queued events to `fanout` random peers until their retransmit budgets are spent.
/// An event that finds the flusher idle goes out at once; while rounds follow each other they
/// are spaced by the batching window, so bursts share frames without delaying lone events.
async fn flush_loop(inner: Arc<Inner>) {
    let cfg = inner.config.gossip.clone();
    let mut last_round = Instant::now() - cfg.window;
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = inner.flush.notified() => {}
        }
        loop {
            let wait = cfg.window.saturating_sub(last_round.elapsed());
            if !wait.is_zero() {
                tokio::select! {
                    _ = inner.cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            let targets = inner.gossip_targets(cfg.fanout);
            let batch = {
                let mut q = inner.broadcasts.lock().unwrap();
                // Nobody to tell yet: keep the events until someone joins.
                if q.is_empty() || targets.is_empty() {
                    break;
                }
                q.take_round(cfg.max_events_per_frame, targets.len() as u32)
            };
            last_round = Instant::now();
            for m in &targets {
                inner.peers.send(&inner, m, Frame::Events(batch.clone()));
            }
        }
    }
}

/// Digest exchange with one random peer per interval (jittered, so nodes do not sync up).
async fn anti_entropy_loop(inner: Arc<Inner>) {
    let base = inner.config.gossip.anti_entropy_interval;
    loop {
        let members = inner.roster.lock().unwrap().count_by_state()[0];
        let every = gossip::anti_entropy_interval(base, members);
        let jitter = rand::thread_rng().gen_range(0.75..1.25);
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = tokio::time::sleep(every.mul_f64(jitter)) => {}
        }
        // Undelivered events wait for a peer: let the flusher retry them too.
        if !inner.broadcasts.lock().unwrap().is_empty() {
            inner.flush.notify_one();
        }
        let reconnect = rand::thread_rng().gen_ratio(1, gossip::RECONNECT_ONE_IN);
        let peer = if reconnect {
            inner.dead_target()
        } else {
            inner.gossip_targets(1).pop()
        };
        if let Some(peer) = peer {
            inner
                .peers
                .send(&inner, &peer, Frame::Digest(inner.digest()));
        }
    }
}

/// Bursts of quorum changes coalesce into one write of the largest cluster size this often.
const PERSIST_LARGEST_EVERY: Duration = Duration::from_millis(250);

/// Keeps `meta.largest_cluster` on disk in step with the quorum, at most one write (a sled
/// flush and an fsync of its files) per `PERSIST_LARGEST_EVERY`. A cold start grows the
/// cluster one member at a time; a write per step, on every node, was measured to double
/// the convergence time of 20 nodes starting on one machine. The last value is written on
/// shutdown; a crash can lose at most the last interval's growth.
async fn persist_largest_loop(inner: Arc<Inner>, mut persisted: u64) {
    let mut changes = inner.quorum_tx.subscribe();
    loop {
        let stopping = tokio::select! {
            _ = inner.cancel.cancelled() => true,
            r = changes.changed() => r.is_err(),
        };
        if !stopping {
            tokio::select! {
                _ = inner.cancel.cancelled() => {}
                _ = tokio::time::sleep(PERSIST_LARGEST_EVERY) => {}
            }
        }
        let largest = changes.borrow_and_update().largest;
        if largest != persisted {
            let store = inner.clone();
            let written =
                tokio::task::spawn_blocking(move || store.store.set_largest_cluster(largest)).await;
            match written {
                Ok(Ok(())) => persisted = largest,
                Ok(Err(e)) => tracing::error!(error = %e, "could not persist the cluster size"),
                Err(e) => tracing::error!(error = %e, "persisting the cluster size panicked"),
            }
        }
        if stopping || inner.cancel.is_cancelled() {
            return;
        }
    }
}

/// Joins through the seeds (or, without seeds, the peers the data dir remembers): a digest to
/// each, retried with backoff and jitter until one answers with a full sync.
async fn join_loop(inner: Arc<Inner>) {
    let mut seeds = inner.config.seeds.clone();
    if seeds.is_empty() {
        seeds = inner
            .roster
            .lock()
            .unwrap()
            .members()
            .into_iter()
            .filter(|m| m.id != *inner.me() && !m.state.is_tombstone())
            .map(|m| m.addr)
            .collect();
        if seeds.is_empty() {
            tracing::info!("no seeds and no remembered peers: this node starts a new cluster");
            return;
        }
        tracing::info!(peers = seeds.len(), "rejoining through remembered peers");
    }
    seeds.retain(|s| *s != inner.addr);
    let mut delay = Duration::from_millis(100);
    loop {
        let joined = inner.joined.notified();
        tokio::pin!(joined);
        joined.as_mut().enable();
        for seed in &seeds {
            inner
                .peers
                .dial_addr(&inner, seed, vec![Frame::Digest(inner.digest())]);
        }
        let wait = delay.mul_f64(rand::thread_rng().gen_range(0.8..1.2));
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = &mut joined => {
                tracing::info!(members = inner.roster.lock().unwrap().num_members(), "joined the cluster");
                return;
            }
            _ = tokio::time::sleep(wait) => {
                tracing::debug!(?seeds, "no seed answered yet; retrying");
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn compaction_loop(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(inner.config.compaction_check);
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = inner.clone().compact_if_needed().await {
                    tracing::error!(error = %e, "compaction failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod cluster_tests {
    use super::*;

    async fn node(dir: &std::path::Path, id: &str, seeds: Vec<String>) -> Node {
        let config = NodeConfig {
            data_dir: dir.to_path_buf(),
            node_id: Some(NodeId::new(id)),
            seeds,
            ..NodeConfig::default()
        };
        Node::start(config).await.unwrap().0
    }

    async fn until(mut f: impl FnMut() -> bool) {
        tokio::time::timeout(Duration::from_secs(30), async {
            while !f() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("condition never held");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_largest_cluster_size_reaches_the_disk_coalesced_and_on_shutdown() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let a = node(dirs[0].path(), "a", vec![]).await;
        let seed = vec![a.addr().to_owned()];
        let b = node(dirs[1].path(), "b", seed.clone()).await;
        let c = node(dirs[2].path(), "c", seed).await;
        until(|| [&a, &b, &c].iter().all(|n| n.members().len() == 3)).await;
        // Written in the background, once for the burst.
        let stored = || a.inner.store.meta().unwrap().largest_cluster;
        until(|| stored() == 3).await;
        // A change shortly before shutdown (well within the coalescing interval) is written
        // by the shutdown.
        c.leave().await.unwrap();
        c.shutdown().await.unwrap();
        until(|| b.quorum().largest == 2).await;
        let b_dir = dirs[1].path().to_path_buf();
        b.shutdown().await.unwrap();
        let (store, _) =
            crate::store::Store::open(&b_dir, crate::store::StoreConfig::default()).unwrap();
        assert_eq!(store.meta().unwrap().largest_cluster, 2);
        a.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscribers_see_remote_changes_with_their_hosts_and_a_leave() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = node(d1.path(), "a", vec![]).await;
        let b = node(d2.path(), "b", vec![a.addr().to_owned()]).await;
        until(|| b.members().len() == 2 && a.members().len() == 2).await;
        let mut changes = b.subscribe();
        a.register_actor("billing").await.unwrap();
        until(|| b.locate("billing") == [NodeId::new("a")]).await;
        let seen = changes.recv().await.unwrap();
        assert!(
            matches!(seen.event, ClusterEvent::ActorAdded { ref actor, .. } if actor == "billing"),
            "{seen:?}"
        );
        a.leave().await.unwrap();
        a.shutdown().await.unwrap();
        until(|| {
            b.members()
                .iter()
                .any(|m| m.id.as_str() == "a" && m.state == MemberState::Left)
        })
        .await;
        assert!(b.locate("billing").is_empty(), "a left node hosts nothing");
        b.shutdown().await.unwrap();
    }
}
