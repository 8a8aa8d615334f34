//! The node: the membership [`Machine`] driven by one task, with sockets, the WAL, timers
//! and admin around it. Read top to bottom:
//!
//! * `Node::start`: bind, recover from the data dir, build the machine, spawn the driver.
//! * `drive`: the one task that owns the machine. Inputs arrive on two bounded channels
//!   (probe traffic, durability and connection changes ahead of gossip and admin); after
//!   each input the machine's `Ready` is carried out: records to the WAL thread (never
//!   awaited here: a durability task reports back), frames to connection writers, replies,
//!   notifications. A slow disk slows acknowledgements, never failure detection.
//! * connections (`peers.rs`) and the admin server (`admin_server.rs`) talk to the driver
//!   through the same channels; nothing shares the roster.
//!
//! A WAL failure or a refused id stops the node: every task ends, and [`Node::stopped`]
//! resolves with the reason.

use crate::checks::HealthCheck;
use crate::credentials::Credentials;
use crate::discovery::{DnsServer, Seed};
use crate::error::{Error, Result};
use crate::event::{ClusterEvent, Generation, Lsn, MemberState, NodeId};
use crate::health::Health;
use crate::local::Identity;
use crate::machine::downing::DowningConfig;
use crate::machine::{Command, Machine, MachineConfig, Outgoing, Ready, Reply, Stop, Token};
use crate::message::{Frame, Status, StatusCounters};
use crate::peers::{self, Conn, Ctx, Input};
use crate::quorum::Quorum;
use crate::roster::{LocateQuery, Member, Roster};
use crate::store::{CompactionReport, Pending, Store, StoreConfig};
use crate::swim::SwimConfig;
use crate::transport::TransportConfig;
use rand::Rng;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use crate::machine::{GossipConfig, MembershipChange};

/// Everything needed to start a node. `Default` gives documented defaults.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    /// `HOST:PORT` to listen on; port 0 picks a free one.
    pub listen: String,
    /// The address others dial, `ws://HOST:PORT` (`wss://` with TLS); default the bound
    /// listen address, or for `0.0.0.0`/`[::]` the address of the interface that routes out
    /// (start fails if there is none).
    pub advertise: Option<String>,
    /// `None`: use the id stored in the data dir, or generate one on first start.
    pub node_id: Option<NodeId>,
    /// Actors hosted from the start (added if not already registered).
    pub actors: Vec<String>,
    /// Tags set at start (tags set earlier, at start or later, are kept).
    pub tags: BTreeMap<String, String>,
    /// Check commands whose results set actors' health (run by the driver, not the machine).
    pub checks: Vec<HealthCheck>,
    /// Any members to join through, tried together with the peers the data dir remembers:
    /// `ws://IP:PORT`; `ws://NAME:PORT` (every A/AAAA address of the name, re-resolved
    /// while no live peer is known); `dns+srv://NAME` (every SRV target and port).
    /// `wss://` with TLS. See [`crate::discovery`].
    pub seeds: Vec<String>,
    /// The DNS server that resolves seed names (default: the system's, /etc/resolv.conf).
    pub dns_server: DnsServer,
    pub transport: TransportConfig,
    pub gossip: GossipConfig,
    /// Failure detection (probes, suspicion, tombstones, stability).
    pub swim: SwimConfig,
    pub store: StoreConfig,
    /// Most inbound connections at once; more are closed at once.
    pub max_connections: usize,
    /// How often the compaction thresholds are checked.
    pub compaction_check: Duration,
    /// `HOST:PORT` of the HTTP endpoint (`/metrics`, `/health`, `/ready`); `None`: off.
    pub http_listen: Option<String>,
    /// Split-brain downing (off by default).
    pub downing: DowningConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("gossip-data"),
            listen: "127.0.0.1:0".into(),
            advertise: None,
            node_id: None,
            actors: Vec::new(),
            tags: BTreeMap::new(),
            checks: Vec::new(),
            seeds: Vec::new(),
            dns_server: DnsServer::System,
            transport: TransportConfig::default(),
            gossip: GossipConfig::default(),
            swim: SwimConfig::default(),
            store: StoreConfig::default(),
            max_connections: 1024,
            compaction_check: Duration::from_secs(1),
            http_listen: None,
            downing: DowningConfig::default(),
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
    /// Where the HTTP endpoint listens, when it is on.
    pub http: Option<std::net::SocketAddr>,
}

/// Why a node stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// [`Node::shutdown`] was called.
    Shutdown,
    /// The WAL could not write or sync: nothing unacknowledged was lost; restart to recover.
    WalFailed(String),
    /// Our id is held by another live process; a peer refused us.
    IdInUse(String),
    /// An admin client asked this node to leave the cluster (`gossip-node leave`); it did.
    Left,
}

impl StopReason {
    /// The error this stop means for a caller (`None` for a requested shutdown).
    pub fn into_error(self) -> Option<Error> {
        match self {
            StopReason::Shutdown | StopReason::Left => None,
            StopReason::WalFailed(e) => Some(Error::WalFailed(e)),
            StopReason::IdInUse(e) => Some(Error::IdInUse(e)),
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Shutdown => f.write_str("shut down"),
            StopReason::Left => f.write_str("left the cluster at an admin client's request"),
            StopReason::WalFailed(e) => write!(f, "the WAL failed: {e}"),
            StopReason::IdInUse(e) => write!(f, "node id {e}"),
        }
    }
}

/// How often the driver ticks the machine when nothing else wakes it. The detector's
/// timeouts are multiples of the probe interval; this only bounds how late one is noticed.
const TICK: Duration = Duration::from_millis(10);
/// Bursts of quorum changes coalesce into one write of the largest cluster size this often
/// (a sled flush and an fsync per write: one per growth step on every node was measured to
/// double the cold-start time of 20 nodes on one machine).
const PERSIST_LARGEST_EVERY: Duration = Duration::from_millis(250);
/// Subscribers that fall this far behind get `Lagged`.
const SUBSCRIBER_BUFFER: usize = 4096;

/// A running node. Cheap to clone; all clones drive the same node.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
}

struct Shared {
    identity: Identity,
    addr: String,
    store: Arc<Store>,
    ctx: Arc<Ctx>,
    changes: broadcast::Sender<MembershipChange>,
    owners: broadcast::Sender<crate::owner::OwnerChanged>,
    quorum: watch::Receiver<Quorum>,
    down: watch::Receiver<Option<String>>,
    stopped: watch::Receiver<Option<StopReason>>,
}

/// A listen address names its port: `127.0.0.1` alone would otherwise fail as an "invalid
/// socket address", which does not say what is wrong.
fn check_port(what: &str, addr: &str) -> Result<()> {
    let problem = match addr.rsplit_once(':').map(|(_, port)| port) {
        None | Some("") => "has no port".to_owned(),
        Some(p) if !p.bytes().all(|b| b.is_ascii_digit()) => {
            format!("has no port ({p:?} is not a number)")
        }
        Some(p) if p.parse::<u16>().is_err() => format!("has port {p}, above 65535"),
        Some(_) => return Ok(()),
    };
    Err(Error::Config(format!(
        "{what} address {addr:?} {problem}: give HOST:PORT (port 0 picks a free one)"
    )))
}

impl Node {
    /// Binds the listener, opens (or creates) the data dir, recovers the roster, brings our
    /// own record up to date (durably), and starts gossiping. Must be called inside a tokio
    /// runtime.
    pub async fn start(config: NodeConfig) -> Result<(Node, StartInfo)> {
        if let Some(id) = &config.node_id {
            crate::names::validate_node_id(id.as_str())
                .map_err(|e| Error::Config(format!("node id {id}: {e}")))?;
        }
        if config.transport.max_frame_bytes < crate::machine::MIN_FRAME_BYTES {
            return Err(Error::Config(format!(
                "the frame cap of {} bytes is below the minimum of {}",
                config.transport.max_frame_bytes,
                crate::machine::MIN_FRAME_BYTES
            )));
        }
        if let Some(addr) = &config.advertise {
            if addr.ends_with(":0") || addr.ends_with(":0/") {
                return Err(Error::Config(format!(
                    "advertise address {addr} has port 0, which no peer can dial: give the port others reach this node at"
                )));
            }
            crate::transport::host_port(addr)
                .map_err(|e| Error::Config(format!("advertise address: {e}")))?;
        }
        if config.transport.cluster.is_empty() {
            return Err(Error::Config(
                "the cluster name is empty: give one (default: \"default\")".into(),
            ));
        }
        let tls = config.transport.credentials.current().tls.is_some();
        let mut literal_seeds = Vec::new();
        let mut named_seeds = Vec::new();
        for s in &config.seeds {
            let seed = Seed::parse(s).map_err(|e| Error::Config(format!("seed: {e}")))?;
            match seed {
                Seed::Address(a) => literal_seeds.push(a),
                named => named_seeds.push(named),
            }
        }
        check_port("listen", &config.listen)?;
        if let Some(at) = &config.http_listen {
            check_port("http listen", at)?;
            if *at == config.listen && !at.ends_with(":0") {
                return Err(Error::Config(format!(
                    "the http listen address is the listen address ({at}): give each its own port"
                )));
            }
        }
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| Error::Listen {
                addr: config.listen.clone(),
                what: "--listen, gossip and admin",
                cause: e,
            })?;
        let local = listener.local_addr().map_err(Error::io(&config.data_dir))?;
        let http = match &config.http_listen {
            None => None,
            Some(at) => {
                Some(
                    tokio::net::TcpListener::bind(at)
                        .await
                        .map_err(|e| Error::Listen {
                            addr: at.clone(),
                            what: "--http-listen",
                            cause: e,
                        })?,
                )
            }
        };
        let http_addr = match &http {
            Some(l) => Some(l.local_addr().map_err(Error::io(&config.data_dir))?),
            None => None,
        };
        let scheme = if config.transport.credentials.current().tls.is_some() {
            "wss"
        } else {
            "ws"
        };
        let addr = match &config.advertise {
            Some(addr) => addr.clone(),
            None => crate::advertise::default_advertise(local, scheme)?,
        };

        // Opening the store and persisting the identity read and fsync files: off the async
        // workers, which would otherwise stall every other task.
        let opening = config.clone();
        let (store, recovered, (identity, created), largest) =
            tokio::task::spawn_blocking(move || -> Result<_> {
                // A new dir's identity is stored with its schema stamp, in one flush.
                let (store, recovered) =
                    Store::open_with_identity(&opening.data_dir, opening.store.clone(), || {
                        (
                            opening.node_id.clone().unwrap_or_else(NodeId::random),
                            crate::store::wal::unix_ms(),
                        )
                    })?;
                let identity = resolve_identity(&store, &opening, &recovered)?;
                let largest = store.meta()?.largest_cluster;
                Ok((store, recovered, identity, largest))
            })
            .await
            .expect("store open does not panic")?;
        let recovered_members = recovered.roster.num_members();
        let (replayed, last_lsn, repaired) = (
            recovered.replayed,
            recovered.last_lsn,
            recovered.repaired.is_some(),
        );
        let started = Instant::now();
        let clock_origin = Duration::from_millis(crate::store::wal::unix_ms());
        let machine = Machine::new(
            MachineConfig {
                identity: identity.clone(),
                addr: addr.clone(),
                seeds: literal_seeds,
                discovery: !named_seeds.is_empty(),
                actors: config.actors.clone(),
                tags: config.tags.clone(),
                gossip: config.gossip.clone(),
                swim: config.swim.clone(),
                max_frame_bytes: config.transport.max_frame_bytes,
                largest_cluster: largest,
                version_floor: crate::machine::version_floor(crate::store::wal::unix_ms()),
                downing: config.downing.clone(),
            },
            recovered.roster,
            recovered.last_lsn,
            rand::random(),
            clock_origin,
        )?;
        // The machine may run under a newer generation than the stored one (taken back from
        // another claimant and logged before it was stored): it says which.
        let identity = machine.identity().clone();
        let info = StartInfo {
            identity: identity.clone(),
            addr: addr.clone(),
            listen: local,
            created,
            recovered_members,
            replayed,
            last_lsn,
            repaired_torn_tail: repaired,
            http: http_addr,
        };
        let store = Arc::new(store);
        let (ctx, control_rx, data_rx) = Ctx::new(&identity, &addr, &config, store.wal_stats());
        let ctx = Arc::new(ctx);
        let (quorum_tx, quorum_rx) = watch::channel(machine.quorum());
        let (needs_seeds_tx, needs_seeds_rx) = watch::channel(machine.needs_seeds());
        let (down_tx, down_rx) = watch::channel(None);
        let (stopped_tx, stopped_rx) = watch::channel(None);
        let (changes, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        let (owners, _) = broadcast::channel(SUBSCRIBER_BUFFER);
        let shared = Arc::new(Shared {
            identity: identity.clone(),
            addr: addr.clone(),
            store: store.clone(),
            ctx: ctx.clone(),
            changes: changes.clone(),
            owners: owners.clone(),
            quorum: quorum_rx,
            down: down_rx,
            stopped: stopped_rx,
        });
        let (durability_tx, durability_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            machine,
            store: store.clone(),
            ctx: ctx.clone(),
            conns: HashMap::new(),
            dialing: HashMap::new(),
            backoff: HashMap::new(),
            seed_warned: HashMap::new(),
            replies: HashMap::new(),
            next_token: 1,
            backlog: std::collections::VecDeque::new(),
            durability: durability_tx,
            changes,
            owners,
            quorum: quorum_tx,
            needs_seeds: needs_seeds_tx,
            down: down_tx,
            stopped: stopped_tx,
            started,
            clock_origin,
            config: config.clone(),
        };
        ctx.tasks.spawn(durability_loop(ctx.clone(), durability_rx));
        ctx.tasks.spawn(drive(driver, control_rx, data_rx));
        if !named_seeds.is_empty() {
            let sink = crate::discovery::Sink {
                found: ctx.control.clone(),
                names: ctx.seed_names.clone(),
            };
            ctx.tasks.spawn(crate::discovery::run(
                named_seeds,
                tls,
                config.dns_server,
                needs_seeds_rx,
                sink,
                ctx.cancel.clone(),
            ));
        }
        let node = Node { shared };
        // Start-up is done once our own record is durable (and so announced).
        node.wait_durable().await?;
        ctx.tasks.spawn(peers::accept_loop(ctx.clone(), listener));
        for check in config.checks.iter().cloned() {
            ctx.tasks.spawn(crate::checks::run(ctx.clone(), check));
        }
        ctx.tasks
            .spawn(compaction_loop(node.clone(), config.compaction_check));
        ctx.tasks.spawn(persist_largest_loop(node.clone(), largest));
        if let Some(listener) = http {
            ctx.tasks.spawn(crate::http::serve(
                listener,
                node.clone(),
                ctx.cancel.clone(),
            ));
        }
        Ok((node, info))
    }

    pub fn id(&self) -> &NodeId {
        &self.shared.identity.id
    }

    pub fn generation(&self) -> Generation {
        self.shared.identity.generation
    }

    /// The address others dial.
    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The credentials new connections use (see [`crate::credentials`]).
    pub fn credentials(&self) -> Arc<Credentials> {
        self.shared.ctx.transport.credentials.current()
    }

    /// Rotates the cluster secrets and TLS identity: every handshake from now on uses
    /// `credentials`; established connections stay up. Refused, keeping the current ones, if
    /// it would turn TLS or the secret on or off (that takes a restart).
    pub fn reload_credentials(&self, credentials: Credentials) -> Result<()> {
        let described = credentials.describe();
        self.shared.ctx.transport.credentials.replace(credentials)?;
        tracing::info!(credentials = %described, "credentials reloaded; new connections use them");
        Ok(())
    }

    /// Registers an actor on this node; resolves once durable (it is then gossiped).
    /// False if it was already hosted. The name must follow [`crate::names`].
    pub async fn register_actor(&self, actor: &str) -> Result<bool> {
        Ok(!self.add_actors(vec![actor.to_owned()]).await?.is_empty())
    }

    /// Unregisters an actor; resolves once durable. False if it was not hosted here.
    pub async fn unregister_actor(&self, actor: &str) -> Result<bool> {
        Ok(!self.remove_actors(vec![actor.to_owned()]).await?.is_empty())
    }

    /// Registers many actors in one durable change; returns those that were not hosted.
    /// All names are checked first: one bad name refuses the whole call.
    pub async fn add_actors(&self, actors: Vec<String>) -> Result<Vec<String>> {
        match self.command(Command::AddActors(actors)).await? {
            Reply::ActorsChanged(changed) => Ok(changed),
            Reply::InvalidName(e) => Err(e.into()),
            other => unreachable!("an actor change is answered with actors, not {other:?}"),
        }
    }

    /// Unregisters many actors in one durable change; returns those that were hosted.
    pub async fn remove_actors(&self, actors: Vec<String>) -> Result<Vec<String>> {
        match self.command(Command::RemoveActors(actors)).await? {
            Reply::ActorsChanged(changed) => Ok(changed),
            Reply::InvalidName(e) => Err(e.into()),
            other => unreachable!("an actor change is answered with actors, not {other:?}"),
        }
    }

    /// An operator's force-leave of another member: marked `left` cluster-wide (durably
    /// here first), so it is no longer probed or counted in the quorum. Refused
    /// ([`Error::Refused`]) for this node itself, an unknown member, one that already left,
    /// and one not dead unless `force` (a live node then rejoins under a new generation).
    /// Returns the state it had.
    pub async fn remove_member(&self, node: &NodeId, force: bool) -> Result<MemberState> {
        let command = Command::Remove {
            node: node.clone(),
            force,
        };
        match self.command(command).await? {
            Reply::Removed { was, .. } => Ok(was),
            Reply::Refused(why) => Err(Error::Refused(why)),
            other => unreachable!("a removal is answered as one, not {other:?}"),
        }
    }

    /// Live hosts of an actor (alive or suspected members; never dead or gone ones) whose
    /// actor is not critical: passing ones first, then warning ones. [`Error::Down`] while
    /// this node is down (the losing side of a partition): its view of who hosts what is
    /// not to be acted on.
    pub async fn locate(&self, actor: &str) -> Result<Vec<NodeId>> {
        self.locate_with(actor, LocateQuery::default()).await
    }

    /// [`Node::locate`] with tag filters (all must match) and, on request, critical hosts
    /// too (last).
    pub async fn locate_with(&self, actor: &str, query: LocateQuery) -> Result<Vec<NodeId>> {
        let actor = actor.to_owned();
        self.query(move |d| match d.machine.down() {
            Some(why) => Err(Error::Down(why.to_owned())),
            None => Ok(d.machine.roster().locate_with(&actor, &query)),
        })
        .await?
    }

    /// Sets tags of this node in one durable change (then gossiped); returns the keys that
    /// changed. All are checked first ([`crate::tags`] limits): one bad tag refuses the call.
    pub async fn set_tags(&self, tags: Vec<(String, String)>) -> Result<Vec<String>> {
        self.tags_command(Command::SetTags(tags)).await
    }

    /// Unsets tags of this node; returns the keys that were set.
    pub async fn unset_tags(&self, keys: Vec<String>) -> Result<Vec<String>> {
        self.tags_command(Command::UnsetTags(keys)).await
    }

    async fn tags_command(&self, command: Command) -> Result<Vec<String>> {
        match self.command(command).await? {
            Reply::TagsChanged(changed) => Ok(changed),
            Reply::InvalidTag(e) => Err(e.into()),
            other => unreachable!("a tag change is answered with tags, not {other:?}"),
        }
    }

    /// Sets the health of an actor this node hosts, with a note of at most
    /// [`crate::health::MAX_NOTE_BYTES`]; resolves once durable. True if it changed.
    pub async fn set_health(&self, actor: &str, health: Health, note: &str) -> Result<bool> {
        self.health_command(Command::SetHealth {
            actor: actor.to_owned(),
            health,
            note: note.to_owned(),
        })
        .await
    }

    /// Gives an actor a health TTL: it turns critical unless [`Node::pass_ttl`] is called
    /// within `ttl` of now and of every renewal. `None` drops the TTL. The TTL lives in
    /// memory only: after a restart the application sets it again.
    pub async fn set_health_ttl(&self, actor: &str, ttl: Option<Duration>) -> Result<bool> {
        self.health_command(Command::SetHealthTtl {
            actor: actor.to_owned(),
            ttl,
        })
        .await
    }

    /// Renews an actor's TTL and sets it passing.
    pub async fn pass_ttl(&self, actor: &str) -> Result<bool> {
        self.health_command(Command::PassTtl(actor.to_owned()))
            .await
    }

    async fn health_command(&self, command: Command) -> Result<bool> {
        match self.command(command).await? {
            Reply::HealthChanged(changed) => Ok(changed),
            Reply::InvalidHealth(e) => Err(e.into()),
            other => unreachable!("a health change is answered as one, not {other:?}"),
        }
    }

    /// Every announced member, sorted by id.
    pub async fn members(&self) -> Result<Vec<Member>> {
        self.query(|d| d.machine.roster().members()).await
    }

    /// A copy of the whole roster.
    pub async fn roster(&self) -> Result<Roster> {
        self.query(|d| d.machine.roster().clone()).await
    }

    /// Every change to the roster, as it becomes durable here, with the actors of the node
    /// it is about. Dropping the receiver unsubscribes. A receiver that falls more than 4096
    /// changes behind gets `Lagged` (and should re-read `members()`).
    pub fn subscribe(&self) -> broadcast::Receiver<MembershipChange> {
        self.shared.changes.subscribe()
    }

    /// Whether this node sees a majority of the largest recent cluster.
    pub fn quorum(&self) -> Quorum {
        *self.shared.quorum.borrow()
    }

    /// Changes of [`Node::quorum`], as they happen.
    pub fn watch_quorum(&self) -> watch::Receiver<Quorum> {
        self.shared.quorum.clone()
    }

    pub async fn status(&self) -> Result<Status> {
        self.query(|d| d.status()).await
    }

    /// What the dashboard shows of members (all announced ones when `ids` is `None`; an
    /// asked id that is gone is left out): each view with how the failure detector sees it
    /// and which of its actors it owns, as announced. Read-only.
    pub(crate) async fn member_details(
        &self,
        ids: Option<Vec<NodeId>>,
    ) -> Result<Vec<crate::dashboard::view::MemberDetail>> {
        self.query(move |d| {
            let machine = &d.machine;
            let roster = machine.roster();
            let members = match ids {
                None => roster.members(),
                Some(ids) => ids.iter().filter_map(|id| roster.member(id)).collect(),
            };
            let health: HashMap<NodeId, crate::swim::Health> = machine
                .swim()
                .health(machine.now())
                .into_iter()
                .map(|h| (h.id.clone(), h))
                .collect();
            members
                .into_iter()
                .map(|member| {
                    let owned = member
                        .actors
                        .iter()
                        .map(|a| machine.tracked_owner(a) == Some(&member.id))
                        .collect();
                    let h = health.get(&member.id);
                    crate::dashboard::view::MemberDetail {
                        stable: h.map(|h| h.stable),
                        flips: h.map_or(0, |h| h.flips),
                        owned,
                        member,
                    }
                })
                .collect()
        })
        .await
    }

    /// How the failure detector sees each member (state, stable, flips): cheap, so the
    /// dashboard can notice a member turning stable, which no event announces.
    pub(crate) async fn detector_health(&self) -> Result<Vec<crate::swim::Health>> {
        self.query(|d| d.machine.swim().health(d.machine.now()))
            .await
    }

    /// Resolves when the node stops, with the reason: a requested shutdown, or a failure
    /// (the WAL could not write; our id is held by another live process).
    pub async fn stopped(&self) -> StopReason {
        let mut rx = self.shared.stopped.clone();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return rx.borrow().clone().unwrap_or(StopReason::Shutdown);
            }
        }
    }

    /// The owner of a singleton `actor`: among its hosts that are up, not `critical` and on
    /// this side, the one rendezvous hashing picks (see [`crate::owner`]); every node with the
    /// same roster answers the same. [`Error::Down`] or [`Error::NotInMajority`] when this
    /// node's view is not to be acted on.
    pub async fn owner(&self, actor: &str) -> Result<Option<NodeId>> {
        let actor = actor.to_owned();
        self.query(move |d| {
            d.machine.owner(&actor).map_err(|why| {
                if d.machine.down().is_some() {
                    Error::Down(why)
                } else {
                    Error::NotInMajority(why)
                }
            })
        })
        .await?
    }

    /// Singletons that move, as they move (`OwnerChanged { actor, from, to }`), announced once
    /// what moved them is durable here. A separate stream from [`Node::subscribe`]: an
    /// actor system that follows owners need not sift membership news, and one that does
    /// not is not slowed by a storm of owner changes.
    pub fn subscribe_owners(&self) -> broadcast::Receiver<crate::owner::OwnerChanged> {
        self.shared.owners.subscribe()
    }

    /// Why this node is down, while it is: split-brain downing judged its side of a
    /// partition the losing one. An actor system should stop its actors meanwhile; the node
    /// keeps probing and comes back up once its side wins (a heal).
    pub fn down(&self) -> Option<String> {
        self.shared.down.borrow().clone()
    }

    /// Changes of [`Node::down`], as they happen.
    pub fn watch_down(&self) -> watch::Receiver<Option<String>> {
        self.shared.down.clone()
    }

    /// Why the node stopped, if it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.shared.stopped.borrow().clone()
    }

    /// This node's metrics instruments (`/metrics` renders them with [`Node::status`]).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.shared.ctx.metrics
    }

    /// Compacts now if a threshold was passed. Blocking work runs off the executor.
    pub async fn compact_if_needed(&self) -> Result<Option<CompactionReport>> {
        if !self.shared.store.needs_compaction() {
            return Ok(None);
        }
        self.compact().await.map(Some)
    }

    /// Snapshots the roster and drops covered WAL segments.
    pub async fn compact(&self) -> Result<CompactionReport> {
        let (roster, lsn) = self.query(|d| d.machine.snapshot_point()).await?;
        let store = self.shared.store.clone();
        let started = Instant::now();
        let report = tokio::task::spawn_blocking(move || store.compact_at(&roster, lsn))
            .await
            .expect("compaction does not panic")?;
        let metrics = &self.shared.ctx.metrics;
        metrics.compactions.inc();
        metrics
            .compaction_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(report)
    }

    /// Announces a graceful leave: `NodeLeft` is logged, then pushed to a few peers right
    /// away (bounded wait). The node keeps running until [`Node::shutdown`].
    pub async fn leave(&self) -> Result<()> {
        self.command(Command::Leave).await?;
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            if self.query(|d| d.queues_empty()).await.unwrap_or(true) {
                // Give the writers a moment to hand the last frame to the socket.
                tokio::time::sleep(Duration::from_millis(20)).await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Stops every task, syncs the WAL and flushes the snapshot. The data dir is released
    /// when the last handle is dropped.
    pub async fn shutdown(self) -> Result<()> {
        let ctx = self.shared.ctx.clone();
        ctx.cancel.cancel();
        ctx.tasks.close();
        ctx.tasks.wait().await;
        let store = self.shared.store.clone();
        drop(self);
        tokio::task::spawn_blocking(move || match Arc::try_unwrap(store) {
            Ok(store) => store.close(),
            Err(shared) => shared.mark_clean_stop(),
        })
        .await
        .expect("close does not panic")
    }

    /// Runs `f` on the driver (it owns the machine) and returns its result.
    async fn query<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Driver) -> R + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = oneshot::channel();
        let job: peers::Job = Box::new(move |d: &Driver| {
            let _ = tx.send(f(d));
        });
        self.shared
            .ctx
            .data
            .send(Input::Query(job))
            .await
            .map_err(|_| self.stopped_error())?;
        rx.await.map_err(|_| self.stopped_error())
    }

    async fn command(&self, command: Command) -> Result<Reply> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .ctx
            .data
            .send(Input::Command { command, reply: tx })
            .await
            .map_err(|_| self.stopped_error())?;
        rx.await.map_err(|_| self.stopped_error())
    }

    /// Resolves once everything the machine has logged so far is durable.
    async fn wait_durable(&self) -> Result<()> {
        loop {
            let (last, durable) = self
                .query(|d| (d.machine.last_lsn(), d.machine.durable_lsn()))
                .await?;
            if durable >= last {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn stopped_error(&self) -> Error {
        match self.shared.stopped.borrow().clone() {
            Some(r) => r
                .into_error()
                .unwrap_or_else(|| Error::Stopped("shut down".into())),
            None => Error::Stopped("shutting down".into()),
        }
    }
}

/// The one task that owns the machine.
pub(crate) struct Driver {
    pub(crate) machine: Machine,
    store: Arc<Store>,
    ctx: Arc<Ctx>,
    /// Open member connections by peer id.
    conns: HashMap<NodeId, Conn>,
    /// Dials in flight, with the frames that wait for them (at most `PEER_QUEUE`): during
    /// a cold start most gossip goes to peers not connected yet, and dropping it there
    /// would leave the repair to anti-entropy, hundreds of milliseconds later.
    dialing: HashMap<String, Vec<Outgoing>>,
    /// addr -> (no dial before, current delay); pruned as entries expire.
    backoff: HashMap<String, (Instant, Duration)>,
    /// When each seed was last warned about as unreachable (seeds only: bounded).
    seed_warned: HashMap<String, Instant>,
    replies: HashMap<Token, oneshot::Sender<Reply>>,
    next_token: Token,
    /// Slices of large frames still to apply (see [`slice_frame`]).
    backlog: std::collections::VecDeque<(NodeId, Frame)>,
    durability: mpsc::UnboundedSender<Pending>,
    changes: broadcast::Sender<MembershipChange>,
    owners: broadcast::Sender<crate::owner::OwnerChanged>,
    quorum: watch::Sender<Quorum>,
    /// Whether the machine still wants seeds (discovery re-resolves names meanwhile).
    needs_seeds: watch::Sender<bool>,
    down: watch::Sender<Option<String>>,
    stopped: watch::Sender<Option<StopReason>>,
    started: Instant,
    /// The machine's time is `clock_origin + started.elapsed()`: the UNIX time at start,
    /// then the monotonic clock. Members whose clocks agree then share the probe schedule
    /// (see `Swim::scheduled_target`); a wall-clock step later does not move ours.
    clock_origin: Duration,
    config: NodeConfig,
}

/// Least time between two warnings about the same unreachable seed.
const SEED_WARN_EVERY: Duration = Duration::from_secs(30);

/// The longest wait before an address that failed to dial is dialed again (jittered down to
/// half). A seed back after a long absence is reached within it.
const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Most addresses kept in backoff before expired ones are dropped.
const MAX_BACKOFF_ENTRIES: usize = 4096;

impl Driver {
    fn now(&self) -> Duration {
        self.clock_origin + self.started.elapsed()
    }

    fn input(&mut self, input: Input) {
        match input {
            Input::Frame { from, frame } => {
                // A large batch is applied in slices, with probe traffic and ticks handled
                // in between: a frame of 20,000 events must not hold acks back.
                let mut slices = slice_frame(frame).into_iter();
                let first = slices.next().expect("at least one slice");
                self.backlog.extend(slices.map(|f| (from.clone(), f)));
                if let Err(reason) = self.machine.handle_frame(&from, first) {
                    tracing::info!(peer = %from, %reason, "closing a connection");
                    if let Some(c) = self.conns.get(&from) {
                        c.close.cancel();
                    }
                }
            }
            Input::Up {
                peer,
                conn,
                dialed_addr,
                admit,
                kept,
            } => {
                let admitted = match admit {
                    Some((generation, addr)) => self.machine.admit(&peer, generation, &addr),
                    None => Ok(()),
                };
                match admitted {
                    Ok(()) => self.connection_up(peer, conn, dialed_addr, kept),
                    Err(reason) => {
                        let _ = kept.send(Err(reason));
                    }
                }
            }
            Input::Down {
                peer,
                conn_id,
                hint,
            } => {
                if self.conns.get(&peer).is_some_and(|c| c.id == conn_id) {
                    self.conns.remove(&peer);
                }
                if hint {
                    self.machine.handle_disconnected(&peer);
                }
            }
            Input::DialFailed {
                addr,
                refused,
                error,
                itself,
            } => {
                self.dialing.remove(&addr);
                self.back_off(&addr);
                if itself {
                    self.machine.handle_own_address(&addr);
                }
                if let Some(error) = error {
                    self.warn_unreachable_seed(&addr, &error);
                }
                if let Some(reason) = refused {
                    self.machine.handle_refused(&addr, &reason);
                }
            }
            Input::Refused { addr, reason } => {
                tracing::warn!(peer = %addr, %reason, "peer refused us");
                self.machine.handle_refused(&addr, &reason);
            }
            Input::Command { command, reply } => {
                let token = self.next_token;
                self.next_token += 1;
                self.replies.insert(token, reply);
                self.machine.handle_command(token, command);
            }
            Input::Query(job) => job(self),
            Input::Discovered(seeds) => self.machine.set_seeds(seeds),
            Input::Durable(lsn) => self.machine.handle_durable(lsn),
            Input::Failed(e) => {
                tracing::error!(error = %e, "the WAL failed; stopping the node");
                let cause = match e {
                    Error::WalFailed(cause) => cause,
                    other => other.to_string(),
                };
                self.stop(StopReason::WalFailed(cause));
            }
            Input::Stop(reason) => self.stop(reason),
        }
    }

    /// The next slice of a large frame.
    fn next_slice(&mut self) {
        if let Some((from, frame)) = self.backlog.pop_front() {
            if let Err(reason) = self.machine.handle_frame(&from, frame) {
                tracing::info!(peer = %from, %reason, "closing a connection");
                if let Some(c) = self.conns.get(&from) {
                    c.close.cancel();
                }
            }
        }
    }

    /// Carries out what the machine decided, in order: log, send, answer, publish.
    fn execute(&mut self, ready: Ready) {
        if !ready.append.is_empty() {
            let pending = self.store.append(ready.append);
            let _ = self.durability.send(pending);
        }
        for o in ready.send {
            self.send(o);
        }
        for (token, reply) in ready.replies {
            if let Some(tx) = self.replies.remove(&token) {
                let _ = tx.send(reply);
            }
        }
        if self.changes.receiver_count() > 0 {
            for n in ready.notifications {
                let _ = self.changes.send(n);
            }
        }
        if let Some(q) = ready.quorum {
            self.quorum.send_replace(q);
        }
        let needs_seeds = self.machine.needs_seeds();
        self.needs_seeds.send_if_modified(|was| {
            let changed = *was != needs_seeds;
            *was = needs_seeds;
            changed
        });
        if let Some(down) = ready.down {
            self.down.send_replace(down);
        }
        for change in ready.owner_changes {
            tracing::debug!(actor = %change.actor, from = ?change.from, to = ?change.to, "owner changed");
            let _ = self.owners.send(change);
        }
        if let Some(me) = ready.identity {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = store.set_identity(&me.id, me.generation) {
                    tracing::error!(error = %e, "could not store our new generation (the WAL has it)");
                }
            });
        }
        if let Some(Stop::IdInUse { peer_said }) = ready.stop {
            self.stop(StopReason::IdInUse(peer_said));
        }
    }

    fn stop(&mut self, reason: StopReason) {
        let _ = self.ctx.stop_reason.set(reason.to_string());
        if self.stopped.borrow().is_none() {
            self.stopped.send_replace(Some(reason));
        }
        self.ctx.cancel.cancel();
    }

    /// Sends over the open connection, or dials the address first.
    fn send(&mut self, o: Outgoing) {
        if let Some(c) = o.to.id.as_ref().and_then(|id| self.conns.get(id)) {
            c.push(o.wire, o.probe);
            return;
        }
        let Some(addr) = o.to.addr.clone() else {
            return;
        };
        if addr == self.machine.addr() {
            return;
        }
        if let Some(waiting) = self.dialing.get_mut(&addr) {
            if waiting.len() < peers::PEER_QUEUE {
                waiting.push(o);
            }
            return;
        }
        if self
            .backoff
            .get(&addr)
            .is_some_and(|(until, _)| Instant::now() < *until)
        {
            return;
        }
        self.dialing.insert(addr.clone(), vec![o]);
        self.ctx.tasks.spawn(peers::dial(self.ctx.clone(), addr));
    }

    /// A seed that cannot be dialed (down, wrong address, not a gossip node) is worth a
    /// warning: at most one per seed per [`SEED_WARN_EVERY`], with the reason.
    fn warn_unreachable_seed(&mut self, addr: &str, error: &str) {
        if !self.config.seeds.iter().any(|s| s == addr) {
            return;
        }
        let now = Instant::now();
        if self
            .seed_warned
            .get(addr)
            .is_some_and(|at| now.duration_since(*at) < SEED_WARN_EVERY)
        {
            return;
        }
        self.seed_warned.insert(addr.to_owned(), now);
        tracing::warn!(seed = %addr, %error, "cannot reach a seed (retrying; this warning repeats at most every 30 s)");
    }

    fn back_off(&mut self, addr: &str) {
        let now = Instant::now();
        if self.backoff.len() >= MAX_BACKOFF_ENTRIES {
            self.backoff.retain(|_, (until, _)| *until > now);
        }
        let delay = self
            .backoff
            .get(addr)
            .map_or(Duration::from_millis(200), |(_, d)| {
                (*d * 2).min(DIAL_BACKOFF_MAX)
            });
        let jittered = delay.mul_f64(rand::thread_rng().gen_range(0.5..1.0));
        self.backoff
            .insert(addr.to_owned(), (now + jittered, delay));
    }

    /// A member connection finished its handshake. When two nodes dial each other at once,
    /// both keep the connection dialed by the smaller id: each side decides alone and they
    /// agree. Frames that waited for the dial go over whichever connection is kept.
    fn connection_up(
        &mut self,
        peer: NodeId,
        conn: Conn,
        dialed_addr: Option<String>,
        kept: oneshot::Sender<Result<bool, String>>,
    ) {
        let waiting = dialed_addr
            .as_ref()
            .and_then(|a| self.dialing.remove(a))
            .unwrap_or_default();
        if let Some(a) = &dialed_addr {
            self.backoff.remove(a);
            let meant = waiting.iter().find_map(|o| o.to.id.as_ref());
            self.machine.handle_dialed(a, &peer, meant);
        }
        let preferred = std::cmp::min(self.machine.id(), &peer).clone();
        let keep_existing = self
            .conns
            .get(&peer)
            .is_some_and(|e| e.dialer == preferred && conn.dialer != preferred);
        if keep_existing {
            tracing::debug!(%peer, "keeping the other connection to this peer");
            let existing = &self.conns[&peer];
            for o in waiting {
                existing.push(o.wire, o.probe);
            }
            let _ = kept.send(Ok(false));
            return;
        }
        if kept.send(Ok(true)).is_err() {
            // The connection's task is gone (shutting down): what waited for it is gossip,
            // which anti-entropy repairs.
            return;
        }
        for o in waiting {
            conn.push(o.wire, o.probe);
        }
        if let Some(old) = self.conns.insert(peer.clone(), conn) {
            old.close.cancel();
        }
        self.machine.handle_connected(&peer);
    }

    pub(crate) fn queues_empty(&self) -> bool {
        self.conns.values().all(Conn::is_idle)
    }

    pub(crate) fn status(&self) -> Status {
        let roster = self.machine.roster();
        let [alive, suspect, dead, left] = roster.count_by_state();
        let wal = self.store.wal_stats();
        let quorum = self.machine.quorum();
        let swim = self.machine.swim();
        let health = swim.health(self.machine.now());
        let (frames_sent, bytes_sent) = self.ctx.metrics.sent_totals();
        let counters = self.machine.counters();
        Status {
            node_id: self.machine.id().clone(),
            generation: self.machine.identity().generation,
            incarnation: self.machine.incarnation(),
            addr: self.machine.addr().to_owned(),
            cluster: self.config.transport.cluster.clone(),
            alive,
            suspect,
            dead,
            left,
            connections: self.conns.len(),
            frames_sent,
            bytes_sent,
            wal_last_lsn: wal.last_lsn.load(Ordering::Relaxed),
            wal_durable_lsn: wal.durable_lsn.load(Ordering::Relaxed),
            wal_bytes_written: wal.bytes_written.load(Ordering::Relaxed),
            fsync_policy: self.config.store.wal.policy.to_string(),
            snapshot_lsn: self.store.meta().map(|m| m.snapshot_lsn).unwrap_or(0),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            in_majority: quorum.in_majority,
            largest_cluster: quorum.largest,
            awareness: swim.awareness(),
            stable: health.iter().filter(|h| h.stable).count(),
            flapping: health
                .into_iter()
                .filter(|h| h.flips > 0)
                .map(|h| (h.id, h.flips))
                .collect(),
            joined: self.machine.joined(),
            counters: StatusCounters {
                suspicions: counters.suspicions,
                declared_dead: counters.declared_dead,
                refutations: counters.refutations,
                reassertions: counters.reassertions,
                refused_ids: counters.refused_ids,
                downed: counters.downed,
                probes: swim.probe_stats(),
                wal_batches: wal.batches.load(Ordering::Relaxed),
                wal_fsyncs: wal.fsyncs.load(Ordering::Relaxed),
                compactions: self.ctx.metrics.compactions.get(),
                handshake_failures: self.ctx.metrics.handshake_failures.get(),
            },
            down: self.machine.down().map(str::to_owned),
        }
    }
}

/// The driver loop: one input at a time (probe traffic and durability first), then its
/// `Ready`. Ticks come every [`TICK`] and whenever the machine asks for one earlier (a
/// gossip round waiting for its window).
async fn drive(mut d: Driver, mut control: mpsc::Receiver<Input>, mut data: mpsc::Receiver<Input>) {
    let cancel = d.ctx.cancel.clone();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let first = d.machine.take_ready();
    d.execute(first);
    loop {
        let wake = d.machine.next_deadline().map(|at| {
            tokio::time::Instant::from_std(d.started + at.saturating_sub(d.clock_origin))
        });
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some(input) = control.recv() => d.input(input),
            _ = tick.tick() => {
                let now = d.now();
                d.machine.handle_tick(now);
            }
            _ = async { tokio::time::sleep_until(wake.expect("guarded")).await }, if wake.is_some() => {
                let now = d.now();
                d.machine.handle_tick(now);
            }
            _ = std::future::ready(()), if !d.backlog.is_empty() => d.next_slice(),
            Some(input) = data.recv() => d.input(input),
        }
        // What else is already waiting joins this turn (probe traffic first), so that one
        // gossip round answers a burst of frames. Data never overtakes the slices of an
        // earlier frame (they apply in order: a Sync's coverage comes with its last slice),
        // and a turn takes in at most a slice's worth of events (acks go out at its end).
        let mut events = 0;
        for _ in 0..TURN_INPUTS {
            let next = match control.try_recv() {
                Ok(input) => Some(input),
                Err(_) if d.backlog.is_empty() && events < SLICE_EVENTS => data.try_recv().ok(),
                Err(_) => None,
            };
            let Some(input) = next else { break };
            if let Input::Frame { frame, .. } = &input {
                events += events_in(frame);
            }
            d.input(input);
        }
        let ready = d.machine.take_ready();
        d.execute(ready);
    }
    for c in d.conns.values() {
        c.close.cancel();
    }
    if d.stopped.borrow().is_none() {
        d.stopped.send_replace(Some(StopReason::Shutdown));
    }
}

/// Inputs handled per driver turn at most, besides the one that woke it.
const TURN_INPUTS: usize = 32;

/// Events applied per driver turn at most.
const SLICE_EVENTS: usize = 512;

/// How many events `frame` carries (what applying it costs).
fn events_in(frame: &Frame) -> usize {
    match frame {
        Frame::Events(events) => events.len(),
        Frame::Delta(delta) | Frame::Sync { delta, .. } | Frame::Audited { delta, .. } => {
            delta.events.len()
        }
        _ => 1,
    }
}

/// Splits a frame carrying many events into frames of at most [`SLICE_EVENTS`] that mean
/// the same when applied in order: events first, then coverage (and a `Sync`'s digest)
/// with the last slice.
fn slice_frame(frame: Frame) -> Vec<Frame> {
    match frame {
        Frame::Events(events) if events.len() > SLICE_EVENTS => split_events(events)
            .into_iter()
            .map(Frame::Events)
            .collect(),
        Frame::Delta(delta) if delta.events.len() > SLICE_EVENTS => {
            slice_delta(delta, Frame::Delta)
        }
        Frame::Sync { delta, digest } if delta.events.len() > SLICE_EVENTS => {
            slice_delta(delta, |d| Frame::Sync { delta: d, digest })
        }
        Frame::Audited { delta, view } if delta.events.len() > SLICE_EVENTS => {
            slice_delta(delta, |d| Frame::Audited { delta: d, view })
        }
        other => vec![other],
    }
}

fn split_events(events: Vec<ClusterEvent>) -> Vec<Vec<ClusterEvent>> {
    let mut it = events.into_iter().peekable();
    let mut out = Vec::new();
    while it.peek().is_some() {
        out.push(it.by_ref().take(SLICE_EVENTS).collect());
    }
    out
}

/// A delta's events in `Delta` slices, the last one (with the coverage) built by `last`.
fn slice_delta(
    delta: crate::gossip::Delta,
    last: impl FnOnce(crate::gossip::Delta) -> Frame,
) -> Vec<Frame> {
    use crate::gossip::Delta;
    let mut parts = split_events(delta.events);
    let tail = parts.pop().unwrap_or_default();
    let mut out: Vec<Frame> = parts
        .into_iter()
        .map(|events| {
            Frame::Delta(Delta {
                events,
                covers: Vec::new(),
            })
        })
        .collect();
    out.push(last(Delta {
        events: tail,
        covers: delta.covers,
    }));
    out
}

/// Waits for the WAL's acknowledgements in order and tells the driver how far it is
/// durable; a failure stops the node (never retried: the kernel may have dropped the pages).
async fn durability_loop(ctx: Arc<Ctx>, mut pendings: mpsc::UnboundedReceiver<Pending>) {
    loop {
        let pending = tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            p = pendings.recv() => match p { Some(p) => p, None => return },
        };
        let input = match pending.await {
            Ok(lsn) => Input::Durable(lsn),
            Err(e) => Input::Failed(e),
        };
        let failed = matches!(input, Input::Failed(_));
        if ctx.control.send(input).await.is_err() || failed {
            return;
        }
    }
}

async fn compaction_loop(node: Node, every: Duration) {
    let cancel = node.shared.ctx.cancel.clone();
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = node.compact_if_needed().await {
                    if !cancel.is_cancelled() {
                        tracing::error!(error = %e, "compaction failed");
                    }
                }
            }
        }
    }
}

/// Keeps `meta.largest_cluster` on disk in step with the quorum, at most one write per
/// [`PERSIST_LARGEST_EVERY`]; the last value is written on shutdown, so a crash can lose at
/// most the last interval's growth.
async fn persist_largest_loop(node: Node, mut persisted: u64) {
    let cancel = node.shared.ctx.cancel.clone();
    let mut changes = node.watch_quorum();
    loop {
        let stopping = tokio::select! {
            _ = cancel.cancelled() => true,
            r = changes.changed() => r.is_err(),
        };
        if !stopping {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep(PERSIST_LARGEST_EVERY) => {}
            }
        }
        let largest = changes.borrow_and_update().largest;
        if largest != persisted {
            let store = node.shared.store.clone();
            let written =
                tokio::task::spawn_blocking(move || store.set_largest_cluster(largest)).await;
            match written {
                Ok(Ok(())) => persisted = largest,
                Ok(Err(e)) => tracing::error!(error = %e, "could not persist the cluster size"),
                Err(e) => tracing::error!(error = %e, "persisting the cluster size panicked"),
            }
        }
        if stopping || cancel.is_cancelled() {
            return;
        }
    }
}

/// Our identity: as stored (a new dir got one when the store opened: `--node-id` or a random
/// id, generation = now), or a new generation after a leave.
fn resolve_identity(
    store: &Store,
    config: &NodeConfig,
    recovered: &crate::store::Recovered,
) -> Result<(Identity, bool)> {
    let (stored, generation) = store.identity()?.ok_or_else(|| Error::BadDataDir {
        dir: store.dir().to_path_buf(),
        reason: "no node identity after opening".into(),
    })?;
    if let Some(given) = config.node_id.as_ref().filter(|g| **g != stored) {
        return Err(Error::NodeIdMismatch {
            stored: stored.to_string(),
            given: given.to_string(),
        });
    }
    let identity = Identity {
        id: stored,
        generation,
    };
    let (created, roster) = (recovered.identity_created, &recovered.roster);
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

/// Events applied as if a peer had gossiped them (tests): resolves once durable.
#[doc(hidden)]
pub async fn inject(node: &Node, from: NodeId, events: Vec<ClusterEvent>) -> Result<()> {
    node.shared
        .ctx
        .data
        .send(Input::Frame {
            from,
            frame: Frame::Events(events),
        })
        .await
        .map_err(|_| node.stopped_error())?;
    node.wait_durable().await
}

#[cfg(test)]
mod cluster_tests {
    use super::*;
    use crate::event::MemberState;

    async fn node(dir: &std::path::Path, id: &str, seeds: Vec<String>) -> Node {
        let config = NodeConfig {
            data_dir: dir.to_path_buf(),
            node_id: Some(NodeId::new(id)),
            seeds,
            ..NodeConfig::default()
        };
        Node::start(config).await.unwrap().0
    }

    async fn until_async<F, Fut>(mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        tokio::time::timeout(Duration::from_secs(30), async {
            while !f().await {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("condition never held");
    }

    async fn sizes(nodes: &[&Node]) -> Vec<usize> {
        let mut out = Vec::new();
        for n in nodes {
            out.push(n.members().await.unwrap().len());
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_largest_cluster_size_reaches_the_disk_coalesced_and_on_shutdown() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let a = node(dirs[0].path(), "a", vec![]).await;
        let seed = vec![a.addr().to_owned()];
        let b = node(dirs[1].path(), "b", seed.clone()).await;
        let c = node(dirs[2].path(), "c", seed).await;
        until_async(|| async { sizes(&[&a, &b, &c]).await == [3, 3, 3] }).await;
        // Written in the background, once for the burst.
        let stored = || a.store().meta().unwrap().largest_cluster;
        until_async(|| async { stored() == 3 }).await;
        // A change shortly before shutdown (well within the coalescing interval) is written
        // by the shutdown.
        c.leave().await.unwrap();
        c.shutdown().await.unwrap();
        until_async(|| async { b.quorum().largest == 2 }).await;
        let b_dir = dirs[1].path().to_path_buf();
        b.shutdown().await.unwrap();
        let (store, _) =
            crate::store::Store::open(&b_dir, crate::store::StoreConfig::default()).unwrap();
        assert_eq!(store.meta().unwrap().largest_cluster, 2);
        a.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tags_health_and_ttls_through_the_library_reach_another_node_and_its_subscribers() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = node(d1.path(), "a", vec![]).await;
        let b = node(d2.path(), "b", vec![a.addr().to_owned()]).await;
        until_async(|| async { sizes(&[&a, &b]).await == [2, 2] }).await;
        let mut changes = b.subscribe();
        a.register_actor("svc").await.unwrap();
        let tags = vec![("zone".to_string(), "eu".to_string())];
        assert_eq!(a.set_tags(tags.clone()).await.unwrap(), ["zone"]);
        assert!(a.set_tags(tags).await.unwrap().is_empty(), "already so");
        assert!(a.set_health("svc", Health::Warning, "slow").await.unwrap());
        assert!(!a.set_health("svc", Health::Warning, "slow").await.unwrap());
        let id_a = NodeId::new("a");
        until_async(|| async {
            let r = b.roster().await.unwrap();
            r.actor_health(&id_a, "svc") == Some(Health::Warning)
                && r.tags(&id_a)
                    .is_some_and(|t| t.get("zone").map(String::as_str) == Some("eu"))
        })
        .await;
        // Published once durable on b too (the roster may show it a moment earlier).
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let c = changes.recv().await.expect("subscribed");
                if matches!(&c.event, ClusterEvent::HealthSet { actor, health: Health::Warning, .. } if actor == "svc")
                {
                    return;
                }
            }
        })
        .await
        .expect("the health change reached b's subscribers");

        // A TTL that is not renewed turns the actor critical; a renewal brings it back.
        a.set_health_ttl("svc", Some(Duration::from_millis(100)))
            .await
            .unwrap();
        until_async(|| async {
            b.locate("svc").await.unwrap().is_empty()
                && b.locate_with(
                    "svc",
                    LocateQuery {
                        include_critical: true,
                        tags: vec![("zone".into(), "eu".into())],
                    },
                )
                .await
                .unwrap()
                    == [id_a.clone()]
        })
        .await;
        assert!(a.pass_ttl("svc").await.unwrap());
        assert_eq!(
            a.roster().await.unwrap().actor_health(&id_a, "svc"),
            Some(Health::Passing)
        );
        a.set_health_ttl("svc", None).await.unwrap();

        // Typed errors; nothing changes.
        let bad = a.set_tags(vec![("bad key".into(), "v".into())]).await;
        assert!(matches!(bad, Err(Error::InvalidTag(_))), "{bad:?}");
        let bad = a.set_health("nope", Health::Critical, "").await;
        assert!(
            matches!(
                bad,
                Err(Error::Health(crate::health::HealthError::NotHosted(_)))
            ),
            "{bad:?}"
        );
        let bad = a.set_health_ttl("svc", Some(Duration::ZERO)).await;
        assert!(matches!(bad, Err(Error::Health(_))), "{bad:?}");
        assert_eq!(a.unset_tags(vec!["zone".into()]).await.unwrap(), ["zone"]);
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscribers_see_remote_changes_with_their_hosts_and_a_leave() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = node(d1.path(), "a", vec![]).await;
        let b = node(d2.path(), "b", vec![a.addr().to_owned()]).await;
        until_async(|| async { sizes(&[&a, &b]).await == [2, 2] }).await;
        let mut changes = b.subscribe();
        a.register_actor("billing").await.unwrap();
        until_async(|| async { b.locate("billing").await.unwrap() == [NodeId::new("a")] }).await;
        // Membership news of the join may still be arriving (a's record as it settles, under
        // a loaded machine): the first event that names an actor is the one.
        let seen = loop {
            let seen = changes.recv().await.unwrap();
            match &seen.event {
                ClusterEvent::NewNode { actors, .. } if actors.is_empty() => continue,
                e if !e.is_data() => continue,
                _ => break seen,
            }
        };
        let billing = match &seen.event {
            ClusterEvent::ActorAdded { actor, .. } => actor == "billing",
            ClusterEvent::NewNode { actors, .. } => actors.contains("billing"),
            _ => false,
        };
        assert!(billing, "{seen:?}");
        a.leave().await.unwrap();
        a.shutdown().await.unwrap();
        until_async(|| async {
            b.members()
                .await
                .unwrap()
                .iter()
                .any(|m| m.id.as_str() == "a" && m.state == MemberState::Left)
        })
        .await;
        assert!(
            b.locate("billing").await.unwrap().is_empty(),
            "a left node hosts nothing"
        );
        b.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_actor_names_are_refused_by_the_library_and_nothing_changes() {
        let d = tempfile::tempdir().unwrap();
        let a = node(d.path(), "a", vec![]).await;
        let err = a
            .add_actors(vec!["good".into(), "has space".into()])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidName(_)), "{err}");
        assert!(a.locate("good").await.unwrap().is_empty());
        a.shutdown().await.unwrap();
    }
}
