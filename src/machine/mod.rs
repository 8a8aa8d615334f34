//! The membership machine: the whole node-level protocol as one pure, deterministic state
//! machine (foca's `Foca`, raft-rs's `RawNode`). The real node ([`crate::node`]) and the
//! simulation (`tests/simulation.rs`) both run it; neither holds a rule of its own.
//!
//! ```text
//!                 +--------------------------------------------+
//!  frame(from) -->|  roster merge      SWIM detector           |--> Ready {
//!  connected  --->|  own record        broadcast queue         |      append:   records for the WAL
//!  closed     --->|  (versions,        anti-entropy, join      |      send:     frames, encoded once
//!  tick(now)  --->|   refutation,      quorum, reaping         |      replies:  command answers
//!  command    --->|   re-assertion)    admission (ids in use)  |      notifications, quorum, stop
//!  durable(n) --->|                                            |    }
//!  seeds(found)-->|  discovered seeds (DNS), remembered peers  |
//!                 +--------------------------------------------+
//! ```
//!
//! Rules kept here, in one place:
//! * Nothing about our own record's content leaves before it is durable: our data changes
//!   are applied to the roster (which gossip, digests and deltas read) only once the WAL
//!   says so. A crash can then never have shown a version that the restarted node reuses.
//! * No peer changes our record, its versions or its coverage. What peers say about our
//!   liveness is refuted; what they hold of our data beyond what we have (a data dir restored
//!   from an older copy, a lost fsync window) is overwritten from a version above theirs.
//! * Replies and notifications of any change wait for its durability; relays of others'
//!   news go out at once (their owner has it durable already).
//! * A live id claimed by another process is refused at the door ([`Machine::admit`]).
//! * Tags and actor health are our own data like actors (durable before they leave). A
//!   health TTL lapses on the first tick whose `now` passes its deadline; TTLs themselves
//!   are neither logged nor gossiped, only the health changes they cause.
//! * Every queue and map is bounded or pruned.
//!
//! No clock, no socket, no tokio: time comes in with every input, randomness from a seed.

pub mod downing;
mod own;
pub mod plausible;
pub mod ready;

pub use ready::{Command, Dest, MembershipChange, Outgoing, Ready, Reply, Stop, Token, Wire};

use crate::event::{ClusterEvent, Generation, Incarnation, Lsn, MemberState, NodeId, Version};
use crate::gossip::{self, Broadcasts, Delta};
use crate::health::Health;
use crate::local::Identity;
use crate::message::Frame;
use crate::quorum::{self, Quorum};
use crate::roster::{Applied, FastMap, NodeDigest, NodeRecord, Roster};
use crate::swim::{Output, Swim, SwimConfig, SwimMsg};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// The smallest frame cap a node may run with: every event it writes fits well within it.
pub const MIN_FRAME_BYTES: usize = 64 * 1024;

/// The start of a `Reject` reason that means "your node id is held by a live member": the
/// dialer stops instead of retrying.
pub const ID_IN_USE: &str = "node id in use: ";
/// See [`Machine::minority_tick`].
const MINORITY_SAID_AFTER_JOIN: Duration = Duration::from_secs(2);

/// How long a large part of a record sent to a peer is not sent to it again (unless the
/// record changed): see [`Machine::skip_recent_resends`].
const RESEND_AFTER: Duration = Duration::from_secs(2);

/// How often dropped events naming invalid node ids are reported at INFO.
const INVALID_IDS_SAID_EVERY: Duration = Duration::from_secs(30);

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
    /// In a cluster of up to this many live members, news that starts at a node goes to
    /// every member at once instead of `fanout` (one hop instead of `log N`): its own
    /// changes, in their first round (`Machine::flush`), and a joiner that announced itself
    /// to it (`Machine::note_join`). 0: never.
    pub tell_all_upto: usize,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            window: Duration::from_millis(2),
            fanout: 3,
            retransmit_mult: 3,
            anti_entropy_interval: Duration::from_millis(500),
            tell_all_upto: 64,
        }
    }
}

/// Everything the machine needs to know at start.
#[derive(Clone, Debug)]
pub struct MachineConfig {
    pub identity: Identity,
    /// The address others dial.
    pub addr: String,
    /// Addresses to join through (tried together with the peers the roster remembers).
    pub seeds: Vec<String>,
    /// More seeds come later through [`Machine::set_seeds`] (DNS names being resolved): the
    /// node waits for them instead of starting a new cluster when it knows no one yet.
    pub discovery: bool,
    /// Actors hosted from the start (added if not already registered).
    pub actors: Vec<String>,
    /// Tags set at start (others set earlier are kept).
    pub tags: BTreeMap<String, String>,
    pub gossip: GossipConfig,
    pub swim: SwimConfig,
    /// Largest frame a peer accepts: every frame we build stays under it.
    pub max_frame_bytes: usize,
    /// Largest recent cluster size, as persisted (the quorum base).
    pub largest_cluster: u64,
    /// Where our own versions resume after a restart: [`version_floor`] of the wall clock.
    /// An earlier life (a lost fsync window, a data dir restored from an older copy) cannot
    /// have written that far, so no version is ever reused for other content.
    pub version_floor: Version,
    /// Split-brain downing (off by default).
    pub downing: downing::DowningConfig,
}

/// Whether a member announced at `addr` could be dialed by a node at `ours`: on WebSockets,
/// `ws://` or `wss://` with a host and a port (what a Hello must carry); the simulation's
/// addresses need only be non-empty.
fn dialable(ours: &str, addr: &str) -> bool {
    if ours.starts_with("ws://") || ours.starts_with("wss://") {
        crate::transport::host_port(addr).is_ok()
    } else {
        !addr.is_empty()
    }
}

fn warn_minority(q: Quorum) {
    tracing::warn!(
        alive = q.alive,
        largest = q.largest,
        "NOT in the majority: this node sees too few members to speak for the cluster"
    );
}

/// Refuses timings whose products overflow a `Duration` (a suspicion lasts up to probe
/// interval x mult x max-mult): far beyond any useful setting, and a panic at the first
/// suspicion otherwise.
fn check_timing(config: &MachineConfig) -> Result<(), crate::Error> {
    const HOUR: Duration = Duration::from_secs(3600);
    let swim = &config.swim;
    let gossip = &config.gossip;
    let bad = [
        (
            swim.probe_interval > HOUR,
            "the probe interval is over an hour",
        ),
        (
            swim.probe_timeout > HOUR,
            "the probe timeout is over an hour",
        ),
        (
            swim.suspicion_mult > 1_000,
            "the suspicion multiplier is over 1,000",
        ),
        (
            swim.suspicion_max_mult > 10_000,
            "the longest suspicion is over 10,000 times the shortest",
        ),
        (gossip.window > HOUR, "the gossip window is over an hour"),
        (
            gossip.anti_entropy_interval > 24 * HOUR,
            "the anti-entropy interval is over a day",
        ),
        (
            swim.tombstone_ttl > 3660 * 24 * HOUR,
            "the tombstone lifetime is over ten years",
        ),
        (
            swim.stable_after > 3660 * 24 * HOUR,
            "the stability period is over ten years",
        ),
    ];
    match bad.iter().find(|(b, _)| *b) {
        Some((_, what)) => Err(crate::Error::Config(what.to_string())),
        None => Ok(()),
    }
}

/// The version floor at wall-clock time `unix_ms`: 2^20 versions per millisecond, more than
/// a process can write (a life that started at T wrote fewer than (now - T) * 2^20), with
/// room in a u64 for centuries.
pub fn version_floor(unix_ms: u64) -> Version {
    unix_ms.saturating_mul(1 << 20)
}

/// Which of our record's numbers peers hold beyond what we can count past.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outgrown {
    Incarnation,
    Version,
}

/// Counters for status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Members declared dead and forgotten by the downing rule (this side went on).
    pub downed: u64,
    pub suspicions: u64,
    pub declared_dead: u64,
    pub refutations: u64,
    pub reassertions: u64,
    pub reclaims: u64,
    pub refused_ids: u64,
    /// Owner lookups of single actors: the work membership news costs the singleton
    /// tracking (each change must cost its own actors, not its node's whole record).
    pub owner_recomputations: u64,
}

/// Something held back until the WAL is durable up to its LSN.
#[derive(Debug)]
enum Held {
    /// Our own data changes: applied, gossiped and published only now.
    Own {
        events: Vec<ClusterEvent>,
        reply: Option<(Token, Reply)>,
    },
    /// Changes already applied (peers' news, our liveness): published now.
    Notify(Vec<ClusterEvent>),
    /// A leave: pushed to a few peers now, then answered.
    Leave(Token, ClusterEvent),
    /// A reply to a command whose changes were applied already.
    Answer(Token, Reply),
}

/// A health TTL of one of our actors.
#[derive(Debug)]
struct Ttl {
    every: Duration,
    deadline: Duration,
    /// Already turned critical for this lapse.
    lapsed: bool,
}

/// Most reaped members remembered (their events stay stale meanwhile).
const MAX_FORGOTTEN: usize = 65_536;
/// Most members whose last message time is kept.
const MAX_HEARD: usize = 1 << 20;
/// Addresses of members reaped while dead, kept for reconnect attempts (Serf's
/// `reconnect_timeout`): two sides of a partition longer than the tombstone TTL forget each
/// other, and without this, nothing would ever bring them together again.
const RECONNECT_ADDRS_MAX: usize = 64;
/// How long a reaped member's address is tried.
const RECONNECT_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How often a joined node tries a seed that no member of its roster lives at (see
/// [`Machine::unmet_seed`]). It was one anti-entropy round in 16 (every 8 s on average, and
/// over 20 s one time in 13: black-box trial); a timer bounds the wait. Such seeds are rare
/// (a seed that was down, or a DNS name in front of the members): 12 bytes each time.
const SEED_CHECK_EVERY: Duration = Duration::from_secs(2);
/// The first seed check after joining; each check that finds a seed unmet doubles the wait
/// up to [`SEED_CHECK_EVERY`]: a seed that was a moment late (nodes started at once) is met
/// within a few hundred ms, one that stays away costs a round every 2 s as before.
const SEED_CHECK_FIRST: Duration = Duration::from_millis(200);

/// A join retries its seeds no less often than this.
const JOIN_RETRY_MAX: Duration = Duration::from_secs(5);
const JOIN_RETRY_FIRST: Duration = Duration::from_millis(100);
/// Most configured or discovered seeds one join attempt sends to (a random sample beyond).
const JOIN_SEEDS_MAX: usize = 32;
/// A join sends our record ahead of its digest only up to this many entries (actors,
/// tags, health) and bytes; see [`Machine::own_record_for_join`].
const JOIN_RECORD_ENTRIES: usize = 64;
const JOIN_RECORD_BYTES: usize = 16 * 1024;
/// Most other addresses of our own remembered.
const MAX_OWN_ADDRS: usize = 16;
/// Most members remembered as moved away from their address ([`Machine::handle_dialed`]).
const MAX_MOVED: usize = 1024;
/// Most peers of the data dir's roster kept as join candidates: a random sample. A join
/// asks a few of them at a time, and members the roster holds alive are asked too, so a
/// sample loses nothing; keeping every address would cost a string per member per node
/// (at 10,000 members, 40% of a simulated node's memory).
const REMEMBERED_MAX: usize = 64;

pub struct Machine {
    me: Identity,
    addr: String,
    config: MachineConfig,
    roster: Roster,
    swim: Swim,
    queue: Broadcasts,
    rng: StdRng,
    now: Duration,
    quorum: Quorum,
    /// Whether this process has been in the majority yet: the first time is news, only
    /// later ones are "again".
    been_in_majority: bool,
    /// LSN of the last record handed out in a `Ready`, and the last one known durable.
    last_lsn: Lsn,
    durable_lsn: Lsn,
    held: VecDeque<(Lsn, Held)>,
    own: own::OwnRecord,
    /// Configured literal seeds plus the latest discovered ones (never our own address).
    seeds: Vec<String>,
    /// Peers the data dir remembered at start (tried together with the seeds).
    remembered: Vec<String>,
    /// Other addresses that reached this node (a seed name listing us under an address we
    /// do not advertise); at most [`MAX_OWN_ADDRS`].
    own_addrs: Vec<String>,
    joined: bool,
    next_join: Duration,
    join_delay: Duration,
    next_anti_entropy: Duration,
    /// An extra anti-entropy round when news of members has been still until then (see
    /// [`Machine::anti_entropy_soon`]).
    follow_up_round: Option<Duration>,
    /// Announcements of joiners to tell every member with this batch's round.
    joins_to_tell: Vec<ClusterEvent>,
    /// Out of the majority since before we joined, not yet warned of ([`Machine::minority_tick`]).
    minority_unsaid: bool,
    /// Our own news was queued since the last round: the next goes to every member
    /// ([`Machine::flush`]).
    own_news: bool,
    /// A new generation that waits for the end of the limit on them ([`Machine::outgrow`]).
    outgrow_due: Option<Outgrown>,
    /// The member whose answer made us joined (a seed, usually): it answered everyone who
    /// joined through it, so a follow-up round goes to it.
    joined_via: Option<NodeId>,
    /// When events naming invalid node ids were last reported (once per 30 s).
    invalid_ids_said: Option<Duration>,
    /// When a seed no member of our roster lives at is next tried ([`Machine::unmet_seed`]).
    next_seed_check: Duration,
    /// Seed checks so far that found a seed unmet (the wait doubles with each).
    seed_checks: u32,
    /// Seeds a dial reached at an address their node does not advertise (a proxy, a
    /// Kubernetes Service, NAT), with the member that answered there ([`Machine::handle_dialed`]).
    seed_aliases: BTreeMap<String, NodeId>,
    /// Earliest time of the next gossip round (rounds are spaced by the window).
    next_round: Duration,
    /// When each member last sent us anything: a claim on a live id is refused.
    last_heard: FastMap<NodeId, Duration>,
    /// Reaped members, oldest first: forgotten for good one more TTL later.
    reaped: VecDeque<(Duration, NodeId)>,
    /// Large parts of records sent to a peer lately, by (peer, record): the generation and
    /// version sent up to, and when (see [`Machine::skip_recent_resends`]).
    sent_lately: FastMap<(NodeId, NodeId), (Generation, Version, Duration)>,
    /// Members reaped while dead, newest last, with their address: tried now and then
    /// for [`RECONNECT_WINDOW`], in case they were only on the other side of a partition.
    reconnect: VecDeque<(Duration, NodeId, String)>,
    /// Dead or reaped members whose address another node answered at (a new node given a
    /// dead one's IP, as Kubernetes does), with that address: not dialed to reconnect while
    /// it holds ([`Machine::handle_dialed`]).
    moved: BTreeMap<NodeId, String>,
    left: bool,
    /// Health TTLs of our actors: not durable, not gossiped (only their lapses are).
    ttls: BTreeMap<String, Ttl>,
    /// When a seed first answered (or start, without seeds).
    joined_at: Option<Duration>,
    last_unknown_bump: Option<Duration>,
    last_reclaim: Option<Duration>,
    counters: Counters,
    /// When the set of reachable members last changed, and the change last judged by the
    /// downing rule (it decides once per stable period).
    reach_changed_at: Duration,
    judged: Option<Duration>,
    /// A fingerprint of the set of alive members, recomputed after liveness news (a suspect
    /// declared dead does not change who is reachable, so it does not restart the clock).
    reachable_sum: u64,
    liveness_dirty: bool,
    probe_failures: u64,
    /// Why this node is down (the losing side of a partition), while it is.
    down: Option<String>,
    /// The owner of each actor as last announced (see [`crate::owner`]); empty while this
    /// node has no say (not joined, not in the majority, or down).
    owners: FastMap<String, NodeId>,
    /// The same, by owner: what a node's departure must recompute even once its record
    /// (and so its list of actors) is gone.
    owned_by: FastMap<NodeId, BTreeSet<String>>,
    /// The generation of each host whose announcement has been published: a record is
    /// announced in chunks, and only the first chunk of a generation moves more than its
    /// own actors.
    announced_hosts: FastMap<NodeId, Generation>,
    owners_announced: bool,
    /// A join is due but waits for our announcement to be durable.
    join_waits_for_own: bool,
    out: Ready,
}

impl Machine {
    /// A machine for a node whose data dir recovered `roster` up to `last_lsn`. Its first
    /// `Ready` brings our own record up to date (announcement, start-up actors, an
    /// incarnation above whatever was said of us before).
    pub fn new(
        config: MachineConfig,
        roster: Roster,
        last_lsn: Lsn,
        seed: u64,
        now: Duration,
    ) -> Result<Machine, crate::Error> {
        for a in &config.actors {
            crate::names::validate_actor_name(a)?;
        }
        for (k, v) in &config.tags {
            crate::tags::validate_key(k)?;
            crate::tags::validate_value(k, v)?;
        }
        crate::tags::check_totals(config.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        check_timing(&config)?;
        let me = effective_identity(&config.identity, &roster);
        let mut swim = Swim::new(me.id.clone(), config.swim.clone(), seed);
        swim.add_members(
            roster.iter_records().map(|(id, r)| {
                let l = r.liveness;
                (id.clone(), r.generation, l.incarnation, l.state)
            }),
            now,
        );
        let quorum = quorum::quorum(config.largest_cluster, roster.count_by_state());
        let mut seeds = config.seeds.clone();
        seeds.retain(|s| *s != config.addr);
        seeds.sort();
        seeds.dedup();
        let mut remembered: Vec<&str> = roster
            .iter_records()
            .filter(|(id, r)| **id != me.id && r.is_announced() && !r.liveness.state.is_tombstone())
            .map(|(_, r)| r.addr.as_str())
            .filter(|a| *a != config.addr && !seeds.iter().any(|s| s == a))
            .collect();
        remembered.sort_unstable();
        remembered.dedup();
        if remembered.len() > REMEMBERED_MAX {
            let mut rng = StdRng::seed_from_u64(seed);
            remembered = gossip::choose_peers(&mut rng, &remembered, REMEMBERED_MAX);
            remembered.sort_unstable();
        }
        let remembered: Vec<String> = remembered.into_iter().map(str::to_owned).collect();
        let starts_alone = seeds.is_empty() && remembered.is_empty() && !config.discovery;
        if starts_alone {
            tracing::info!("no seeds and no remembered peers: this node starts a new cluster");
        } else if !remembered.is_empty() {
            tracing::info!(
                peers = remembered.len(),
                seeds = seeds.len(),
                "joining through seeds and remembered peers"
            );
        }
        let mut roster = roster;
        // We are complete for our own record by definition (replay leaves gaps where a
        // restart jumped its versions).
        roster.mark_complete(&me.id);
        let own = own::OwnRecord::new(&me, &roster);
        let mut m = Machine {
            addr: config.addr.clone(),
            me,
            roster,
            swim,
            queue: Broadcasts::default(),
            rng: StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
            now,
            quorum,
            been_in_majority: quorum.in_majority,
            last_lsn,
            durable_lsn: last_lsn,
            held: VecDeque::new(),
            own,
            joined: starts_alone,
            seeds,
            remembered,
            own_addrs: Vec::new(),
            next_join: now,
            join_delay: JOIN_RETRY_FIRST,
            next_anti_entropy: now + config.gossip.anti_entropy_interval,
            follow_up_round: None,
            joins_to_tell: Vec::new(),
            own_news: false,
            minority_unsaid: false,
            outgrow_due: None,
            joined_via: None,
            invalid_ids_said: None,
            next_seed_check: Duration::ZERO,
            seed_checks: 0,
            seed_aliases: BTreeMap::new(),
            next_round: now,
            last_heard: FastMap::default(),
            reaped: VecDeque::new(),
            sent_lately: FastMap::default(),
            reconnect: VecDeque::new(),
            moved: BTreeMap::new(),
            left: false,
            ttls: BTreeMap::new(),
            joined_at: None,
            last_unknown_bump: None,
            last_reclaim: None,
            counters: Counters::default(),
            reach_changed_at: now,
            judged: None,
            reachable_sum: 0,
            liveness_dirty: true,
            probe_failures: 0,
            down: None,
            owners: FastMap::default(),
            owned_by: FastMap::default(),
            announced_hosts: FastMap::default(),
            owners_announced: false,
            join_waits_for_own: false,
            out: Ready::default(),
            config,
        };
        if m.joined {
            m.joined_at = Some(now);
        }

        if m.me != m.config.identity {
            m.out.identity = Some(m.me.clone());
        }
        m.start_own_record();
        m.join_tick();
        Ok(m)
    }

    // ---- queries ----

    pub fn id(&self) -> &NodeId {
        &self.me.id
    }

    pub fn identity(&self) -> &Identity {
        &self.me
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The roster as this node holds it (our own record as of its last durable change).
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    pub fn quorum(&self) -> Quorum {
        self.quorum
    }

    pub fn swim(&self) -> &Swim {
        &self.swim
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn now(&self) -> Duration {
        self.now
    }

    /// Whether we are still waiting for a peer's whole view of our own record (after a
    /// start, or once a peer showed a newer one): until then anti-entropy rounds send a full
    /// digest, not a fingerprint.
    pub fn auditing_own_record(&self) -> bool {
        self.own.auditing()
    }

    /// Whether a seed (or a remembered peer) answered our join.
    pub fn joined(&self) -> bool {
        self.joined
    }

    /// Whether seeds are still wanted: not joined yet, or joined but knowing no live peer
    /// (a node that started a cluster alone keeps trying its seeds, so two nodes that each
    /// started alone merge once they find each other). Discovery re-resolves meanwhile.
    pub fn needs_seeds(&self) -> bool {
        if self.left {
            return false;
        }
        if !self.joined {
            return true;
        }
        let [alive, suspect, ..] = self.roster.count_by_state();
        let me_live = self
            .roster
            .state_of(&self.me.id)
            .is_some_and(|s| !s.is_tombstone());
        let peers = alive + suspect - usize::from(me_live);
        peers == 0 && !(self.seeds.is_empty() && self.remembered.is_empty())
    }

    /// The addresses a join goes to: seeds (configured and discovered), then the peers the
    /// data dir remembered.
    pub fn join_candidates(&self) -> (&[String], &[String]) {
        (&self.seeds, &self.remembered)
    }

    /// Our current incarnation (as the roster holds it).
    pub fn incarnation(&self) -> Incarnation {
        self.roster
            .record(&self.me.id)
            .filter(|r| r.generation == self.me.generation)
            .map_or(0, |r| r.liveness.incarnation)
    }

    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }

    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }

    /// Sizes of every queue and map that grows with traffic (for bounds checks).
    pub fn sizes(&self) -> Sizes {
        Sizes {
            broadcasts: self.queue.len(),
            held: self.held.len(),
            forgotten: self.roster.num_forgotten(),
            last_heard: self.last_heard.len(),
            pending_actors: self.own.pending_len(),
        }
    }

    /// A roster to snapshot and the LSN it covers: everything appended so far except our
    /// own changes (and a leave) still waiting for durability: they are in the WAL, not yet
    /// in the roster, so the snapshot claims no more than it holds. Replay is idempotent, so a
    /// roster holding more than the LSN says is fine.
    pub fn snapshot_point(&self) -> (Roster, Lsn) {
        // A batch is held under the LSN of its last record: the snapshot stops below its
        // first.
        let covers = self
            .held
            .iter()
            .find_map(|(lsn, h)| match h {
                Held::Own { events, .. } => Some(lsn - events.len() as Lsn),
                Held::Leave(..) => Some(lsn - 1),
                _ => None,
            })
            .unwrap_or(self.last_lsn);
        (self.roster.clone(), covers)
    }

    /// When the machine next needs a tick (a gossip round waiting for its window, a probe
    /// deadline); the driver ticks at least this early.
    pub fn next_deadline(&self) -> Option<Duration> {
        if self.queue.has_fresh() {
            return Some(self.now);
        }
        (!self.queue.is_empty()).then_some(self.next_round.max(self.now))
    }

    /// Takes everything the inputs so far produced, with a gossip round if one is due: once
    /// per batch of inputs, however many frames of news the batch held (a node that hears
    /// of ten joins in ten frames sends one round, not ten).
    pub fn take_ready(&mut self) -> Ready {
        self.tell_joins();
        self.flush();
        std::mem::take(&mut self.out)
    }

    // ---- inputs ----

    /// Time passes: probes, suspicions, reaping, anti-entropy, join retries, gossip rounds.
    pub fn handle_tick(&mut self, now: Duration) {
        self.now = self.now.max(now);
        self.queue.refill(self.now);
        let outputs = self.swim.tick(self.now);
        self.run_detector(outputs);
        self.prune_forgotten();
        self.downing_tick();
        self.owner_authority_tick();
        self.ttl_tick();
        self.join_tick();
        self.anti_entropy_tick();
        self.seed_check_tick();
        self.outgrow_tick();
        self.minority_tick();
    }

    /// The WAL is durable up to `lsn`: what waited for it goes out.
    pub fn handle_durable(&mut self, lsn: Lsn) {
        self.durable_lsn = self.durable_lsn.max(lsn.min(self.last_lsn));
        while self
            .held
            .front()
            .is_some_and(|(l, _)| *l <= self.durable_lsn)
        {
            let (lsn, held) = self.held.pop_front().expect("checked");
            match held {
                Held::Own { events, reply } => {
                    self.own.settled(&events, lsn);
                    let mut changed = Vec::with_capacity(events.len());
                    for e in events {
                        if self.roster.apply(&e) == Applied::Changed {
                            changed.push(e);
                        }
                    }
                    self.roster.mark_complete(&self.me.id);
                    // Our own record counts too (a node alone is its whole cluster).
                    self.update_quorum(0, false);
                    let budget = self.budget();
                    for e in &changed {
                        self.queue.push(e.clone(), budget);
                    }
                    self.own_news |= !changed.is_empty();
                    self.publish(changed);
                    self.out.replies.extend(reply);
                }
                Held::Notify(events) => self.publish(events),
                Held::Answer(token, reply) => self.out.replies.push((token, reply)),
                Held::Leave(token, event) => {
                    self.roster.apply(&event);
                    self.update_quorum(0, false);
                    self.publish(vec![event.clone()]);
                    let wire = encode(&Frame::Events(vec![event]));
                    for (id, addr) in self.gossip_targets(self.config.gossip.fanout * 2) {
                        self.send(Dest::member(&id, &addr), wire.clone(), false);
                    }
                    self.out.replies.push((token, Reply::Left));
                }
            }
        }
        if self.join_waits_for_own && self.roster.record(&self.me.id).is_some() {
            self.join_tick();
        }
    }

    /// Whether a change of our own record waits for durability.
    fn own_change_held(&self) -> bool {
        self.held.iter().any(|(_, h)| matches!(h, Held::Own { .. }))
    }

    /// A local command; its reply comes once what it changed is durable.
    pub fn handle_command(&mut self, token: Token, command: Command) {
        match command {
            Command::AddActors(names) | Command::RemoveActors(names)
                if names
                    .iter()
                    .any(|n| crate::names::validate_actor_name(n).is_err()) =>
            {
                let err = names
                    .iter()
                    .find_map(|n| crate::names::validate_actor_name(n).err())
                    .expect("found above");
                self.out.replies.push((token, Reply::InvalidName(err)));
            }
            Command::AddActors(names) => self.change_actors(token, names, true),
            Command::RemoveActors(names) => self.change_actors(token, names, false),
            Command::SetTags(tags) => {
                let r = self.own.set_tags(&self.me, &self.roster, tags);
                self.change_tags(token, r);
            }
            Command::UnsetTags(keys) => {
                let r = self.own.unset_tags(&self.me, &self.roster, keys);
                self.change_tags(token, r);
            }
            Command::SetHealth {
                actor,
                health,
                note,
            } => {
                let r = self.set_health(&actor, health, note);
                self.answer_health(token, r);
            }
            Command::SetHealthTtl { actor, ttl } => {
                let r = self.set_health_ttl(&actor, ttl);
                self.answer_health(token, r);
            }
            Command::PassTtl(actor) => {
                let r = self.pass_ttl(&actor);
                self.answer_health(token, r);
            }
            Command::Leave => {
                // Final for this generation: durable before anyone hears of it, so a crash
                // before the write cannot leave peers holding a leave we come back without.
                let event = ClusterEvent::NodeLeft {
                    node: self.me.id.clone(),
                    generation: self.me.generation,
                    incarnation: self.incarnation(),
                };
                self.left = true;
                let lsn = self.append(vec![event.clone()]);
                self.held.push_back((lsn, Held::Leave(token, event)));
            }
            Command::Remove { node, force } => self.remove_member(token, node, force),
        }
    }

    /// An operator's force-leave: `node` is marked left at the generation and incarnation we
    /// know, spread like any news, answered once durable.
    fn remove_member(&mut self, token: Token, node: NodeId, force: bool) {
        let refuse =
            |m: &mut Machine, why: String| m.out.replies.push((token, Reply::Refused(why)));
        if node == self.me.id {
            return refuse(
                self,
                format!("{node} is this node: ask it to leave instead"),
            );
        }
        let Some(rec) = self.roster.record(&node) else {
            return refuse(self, format!("{node} is not a member this node knows"));
        };
        let was = rec.liveness.state;
        match was {
            MemberState::Left => return refuse(self, format!("{node} has already left")),
            MemberState::Alive | MemberState::Suspect if !force => {
                return refuse(
                    self,
                    format!(
                        "{node} is {was}, not dead: remove it once it is declared dead, or pass --force \
                         (a live node then rejoins under a new generation)"
                    ),
                )
            }
            _ => {}
        }
        let event = ClusterEvent::NodeLeft {
            node: node.clone(),
            generation: rec.generation,
            incarnation: rec.liveness.incarnation,
        };
        tracing::info!(%node, %was, force, "an operator removes a member: marked left cluster-wide");
        if self.roster.apply(&event) == Applied::Changed {
            self.update_quorum(1, false);
            let budget = self.budget();
            self.queue.push(event.clone(), budget);
            self.record_changes(vec![event]);
        }
        let lsn = self.last_lsn;
        let reply = Reply::Removed { node, was };
        self.held.push_back((lsn, Held::Answer(token, reply)));
    }

    /// A member connection opened (after its handshake).
    pub fn handle_connected(&mut self, peer: &NodeId) {
        self.heard(peer);
    }

    /// A member connection closed: probe that member soon (a hint, never a verdict).
    pub fn handle_disconnected(&mut self, peer: &NodeId) {
        self.swim.handle_closed(peer);
    }

    /// Whether a member presenting `id`, `generation` and `addr` in its handshake may
    /// connect. Refused: our own id, and an id a live member holds at another address that
    /// we heard from recently (a second process started with `--node-id` of a live one).
    /// The reason starts with [`ID_IN_USE`] for the latter.
    pub fn admit(&mut self, id: &NodeId, generation: u64, addr: &str) -> Result<(), String> {
        self.bounds()
            .check_generation(generation)
            .map_err(|err| format!("{id}: {err}"))?;
        if *id == self.me.id {
            return Err(format!(
                "{ID_IN_USE}{id} is this node's own id (held by {}, generation {})",
                self.addr, self.me.generation
            ));
        }
        let Some(rec) = self.roster.record(id) else {
            return Ok(());
        };
        // Another process: another data dir (generation) at another address. The same data
        // dir restarted on a new port keeps its generation and is welcome.
        let live = !rec.liveness.state.is_tombstone();
        let other_process = rec.addr != addr && rec.generation != generation;
        let quiet = self
            .last_heard
            .get(id)
            .map(|t| self.now.saturating_sub(*t))
            .filter(|ago| *ago <= self.swim.suspicion_timeout(0));
        if let (true, true, true, Some(ago)) = (live, other_process, rec.is_announced(), quiet) {
            self.counters.refused_ids += 1;
            // Heard from lately is not proof of life: a holder killed a moment ago is still
            // alive here until the detector says otherwise.
            let reason = format!(
                "{ID_IN_USE}{id} is held by the member at {} (generation {}), heard from {} ms \
                 ago; if that process has just stopped, start this one again once peers hold \
                 it dead (within seconds)",
                rec.addr,
                rec.generation,
                ago.as_millis()
            );
            tracing::warn!(%id, claimed_by = addr, held_by = %rec.addr, "refusing a second process that claims a live member's id");
            return Err(reason);
        }
        Ok(())
    }

    /// Seeds found by discovery (a DNS name's addresses), replacing those found before;
    /// configured seeds stay. `found` may hold our own address. A discovery that found only
    /// us, while we know no one else (no other seed, no remembered peer), means no one else
    /// is registered yet: the node starts a new cluster, and keeps joining through its seeds
    /// while it knows no live peer ([`Machine::needs_seeds`]). New seeds are tried at once.
    pub fn set_seeds(&mut self, found: Vec<String>) {
        let only_us = !found.is_empty() && found.iter().all(|a| self.is_own_addr(a));
        let mut seeds: Vec<String> = self
            .config
            .seeds
            .iter()
            .chain(&found)
            .filter(|a| !self.is_own_addr(a))
            .cloned()
            .collect();
        seeds.sort();
        seeds.dedup();
        let changed = seeds != self.seeds;
        self.seeds = seeds;
        let seeds = &self.seeds;
        self.seed_aliases.retain(|a, _| seeds.contains(a));
        if only_us && !self.joined && self.seeds.is_empty() && self.remembered.is_empty() {
            tracing::info!("the seeds resolve to this node only: it starts a new cluster");
            self.joined = true;
            self.joined_at = Some(self.now);
        }
        if changed && self.needs_seeds() {
            self.next_join = self.now;
            self.join_delay = JOIN_RETRY_FIRST;
            self.join_tick();
        }
    }

    /// A dial of `addr` reached `peer`. A seed at an address its node does not advertise (a
    /// proxy, a Kubernetes Service, NAT) is met while the member that answered there is one:
    /// by its address alone it stayed unmet for good, and every seed check (each 2 s) dialed
    /// it anew, replacing the connection to the member behind it (black-box trial,
    /// 2026-12-04).
    ///
    /// A dial meant for a dead or reaped member (`meant`) that another node answered means
    /// the address was given to someone else: it is not dialed for that member again while
    /// its record keeps that address. Dialed every few seconds to reconnect, each dial
    /// replaced a connection to the new node (black-box trial, 2026-12-04).
    pub fn handle_dialed(&mut self, addr: &str, peer: &NodeId, meant: Option<&NodeId>) {
        if self.seeds.iter().any(|s| s == addr) {
            self.seed_aliases.insert(addr.to_owned(), peer.clone());
        }
        let Some(meant) = meant.filter(|m| *m != peer) else {
            return;
        };
        let gone = match self.roster.record(meant) {
            Some(r) => r.liveness.state.is_tombstone() && r.addr == addr,
            None => self
                .reconnect
                .iter()
                .any(|(_, id, a)| id == meant && a == addr),
        };
        if gone && self.moved.len() < MAX_MOVED {
            tracing::info!(member = %meant, %addr, answered = %peer, "a dead member's address answers as another node; not dialing it there again");
            self.moved.insert(meant.clone(), addr.to_owned());
        }
    }

    /// Whether `id` at `addr` is not worth a dial to reconnect: the address is ours, or
    /// another node answered there.
    fn moved_on(&self, id: &NodeId, addr: &str) -> bool {
        self.is_own_addr(addr) || self.moved.get(id).is_some_and(|a| a == addr)
    }

    /// A dial of `addr` reached this very node: `addr` is ours too (a seed name lists us
    /// under an address we do not advertise). It is not tried again, and a seed name that
    /// resolves to our addresses only counts as resolving to us.
    pub fn handle_own_address(&mut self, addr: &str) {
        if !self.is_own_addr(addr) && self.own_addrs.len() < MAX_OWN_ADDRS {
            self.own_addrs.push(addr.to_owned());
        }
        self.seeds.retain(|a| a != addr);
        self.remembered.retain(|a| a != addr);
    }

    fn is_own_addr(&self, addr: &str) -> bool {
        addr == self.addr || self.own_addrs.iter().any(|a| a == addr)
    }

    /// A peer refused our handshake. An id conflict stops a node that is still joining (it
    /// is the second process with that id). A member of the cluster stays: the other
    /// claimant was admitted somewhere, and we take our record back when we see it
    /// ([`Machine::reclaim`]); the claimant is refused at every door that hears from us.
    pub fn handle_refused(&mut self, addr: &str, reason: &str) {
        if let Some(rest) = reason.strip_prefix(ID_IN_USE) {
            if self.joined && self.roster.num_members() > 1 {
                tracing::error!(%addr, "{rest}; another process claims our id, staying");
                return;
            }
            tracing::error!(%addr, "{rest}");
            self.out.stop = Some(Stop::IdInUse {
                peer_said: rest.to_owned(),
            });
        }
    }

    /// A member exchanged rosters with us (answered our digest, or sent its own: it knows us
    /// and is part of a cluster): we are joined.
    fn mark_joined(&mut self, from: &NodeId) {
        if !self.joined {
            self.joined = true;
            self.joined_at = Some(self.now);
            self.joined_via = Some(from.clone());
            tracing::info!(peer = %from, alive = self.roster.count_by_state()[0], "joined the cluster");
            self.queue.raise_to(self.budget());
        }
    }

    /// One frame from a member. An error means the frame has no place on a member
    /// connection (the caller closes it); the machine is unchanged then.
    pub fn handle_frame(&mut self, from: &NodeId, frame: Frame) -> Result<(), String> {
        let frame = self.drop_invalid_events(from, frame);
        self.heard(from);
        match frame {
            Frame::Events(events) => self.receive(from, events, true),
            Frame::Fingerprint(theirs) => {
                // Only a member of a cluster that counts us as a member sends one.
                self.mark_joined(from);
                // Equal: the same digest but for watermarks (so the same view of us too, which
                // `receive` already acted on), nothing to repair. Different: we open a digest
                // exchange, whose checks (accusations, claims on our record, a peer that
                // forgot us) run as ever. While auditing our own record we answer with an
                // audit instead, whatever the fingerprints: it asks for all of our record.
                if self.own.auditing() {
                    let wire = encode(&self.audit_frame());
                    self.send(Dest::back(from), wire, false);
                } else if theirs != self.roster.digest_fingerprint() {
                    let wire = encode(&Frame::Digest(self.digest()));
                    self.send(Dest::back(from), wire, false);
                }
            }
            Frame::Audit { rest, own } => {
                self.mark_joined(from);
                if rest == self.roster.fingerprint_without(from) {
                    // Equal but for the auditor's record: that record is all it lacks.
                    let delta = gossip::delta_for_record(&self.roster, from, own.as_ref(), false);
                    let view = self.roster.record(from).map(NodeRecord::digest);
                    self.send_delta(from, delta, |d| Frame::Audited { delta: d, view });
                } else {
                    let wire = encode(&Frame::Digest(self.digest()));
                    self.send(Dest::back(from), wire, false);
                }
            }
            Frame::Audited { delta, view } => {
                self.mark_joined(from);
                self.own.self_synced();
                self.receive_delta(from, delta);
                // Their rest equals ours: they know whom we know.
                let knows_others = self.roster.num_records() > 1;
                self.check_view_of_us(from, view, knows_others);
                let back = gossip::delta_for_record(&self.roster, &self.me.id, view.as_ref(), true);
                if !back.is_empty() {
                    self.send_delta(from, back, Frame::Delta);
                }
            }
            Frame::Digest(theirs) => {
                self.mark_joined(from);
                self.check_view_in_digest(from, &theirs);
                let delta = self.delta_for(theirs);
                let digest = self.digest();
                self.send_delta(from, delta, |d| Frame::Sync { delta: d, digest });
            }
            Frame::Sync { delta, digest } => {
                self.mark_joined(from);
                self.own.self_synced();
                self.receive_delta(from, delta);
                self.check_view_in_digest(from, &digest);
                let back = self.delta_for(digest);
                if !back.is_empty() {
                    self.send_delta(from, back, Frame::Delta);
                }
            }
            Frame::Delta(delta) => self.receive_delta(from, delta),
            Frame::Swim(msg) => {
                let outputs = self.swim.handle_message(from, msg, self.now);
                self.run_detector(outputs);
            }
            other => {
                return Err(format!(
                    "unexpected {} frame from member {from}",
                    crate::transport::frame_name(&other)
                ))
            }
        }
        Ok(())
    }

    // ---- our own record ----

    /// Drops events about a node id that no node could have, and announcements of an address
    /// no node could be dialed at (a forged peer, or a release before these checks that let
    /// one in); the rest of the frame applies as ever. Closing the connection instead would
    /// bring the same record back with the next round.
    fn drop_invalid_events(&mut self, from: &NodeId, mut frame: Frame) -> Frame {
        let bounds = self.bounds();
        let mut dropped = 0;
        let mut example: Option<String> = None;
        let mut note = |err: String| {
            dropped += 1;
            example.get_or_insert(err);
        };
        let ours = &self.addr;
        let mut keep_events = |events: &mut Vec<ClusterEvent>| {
            events.retain(|e| {
                let checked = crate::names::validate_node_id(e.node().as_str())
                    .map_err(|err| err.to_string())
                    .and_then(|()| match e {
                        ClusterEvent::NewNode { addr, .. } if !dialable(ours, addr) => {
                            Err(format!(
                                "{} announced at {addr:?}, not a ws:// or wss:// host:port",
                                e.node()
                            ))
                        }
                        _ => bounds
                            .check_event(e)
                            .map_err(|err| format!("{}: {err}", e.node())),
                    });
                checked.map_err(&mut note).is_ok()
            });
        };
        match &mut frame {
            Frame::Events(events) => keep_events(events),
            Frame::Delta(delta) | Frame::Sync { delta, .. } | Frame::Audited { delta, .. } => {
                keep_events(&mut delta.events);
                delta.covers.retain(|c| {
                    bounds
                        .check_coverage(c)
                        .map_err(|err| note(format!("coverage of {}: {err}", c.node)))
                        .is_ok()
                });
            }
            _ => {}
        }
        match &mut frame {
            Frame::Digest(digest) | Frame::Sync { digest, .. } => digest.retain(|(id, d)| {
                bounds
                    .check_digest(d)
                    .map_err(|err| note(format!("digest entry of {id}: {err}")))
                    .is_ok()
            }),
            Frame::Audited { view: d, .. } | Frame::Audit { own: d, .. } => {
                if let Some(err) = d.as_ref().and_then(|d| bounds.check_digest(d).err()) {
                    note(format!("a digest entry: {err}"));
                    *d = None;
                }
            }
            _ => {}
        }
        if let Some(err) = example {
            let quiet = self
                .invalid_ids_said
                .is_some_and(|t| self.now < t + INVALID_IDS_SAID_EVERY);
            if quiet {
                tracing::debug!(peer = %from, dropped, %err, "dropped events naming invalid node ids, addresses or numbers");
            } else {
                self.invalid_ids_said = Some(self.now);
                tracing::warn!(peer = %from, dropped, %err, "dropped events naming invalid node ids, addresses or numbers no node can reach (said once per 30 s)");
            }
        }
        frame
    }

    /// What a peer may state, as of now (our time is the UNIX time in the node).
    fn bounds(&self) -> plausible::Bounds {
        plausible::Bounds::at(self.now.as_millis() as u64)
    }

    /// Start-up: the announcement (or re-announcement after a leave), start-up actors, and
    /// an incarnation above anything said of us before.
    fn start_own_record(&mut self) {
        let (data, liveness) = self
            .own
            .startup(&self.me, &self.roster, &self.addr, &self.config);
        if !liveness.is_empty() {
            self.apply_local_liveness(liveness);
        }
        if !data.is_empty() {
            self.commit_own(data, None);
        }
    }

    /// Peers hold our id under a newer generation than ours: another process claimed it
    /// (admitted somewhere that had not heard from us lately) or is claiming it. Our record
    /// is ours: it comes back under a generation above theirs, with our address and actors.
    /// At most once per suspicion timeout, so two live claimants cannot outbid each other
    /// in a storm (the other one is refused at every door that hears from us).
    fn reclaim(&mut self, from: &NodeId, theirs: Generation) {
        if theirs < self.me.generation || self.lately(self.last_reclaim) {
            return;
        }
        self.last_reclaim = Some(self.now);
        let generation = theirs.saturating_add(1);
        if theirs == self.me.generation {
            // Our own generation marked left while we run: `remove --force` by an operator.
            tracing::warn!(peer = %from, generation, "peers hold this running node as left (removed by an operator with --force?); rejoining under a new generation");
        } else {
            tracing::warn!(peer = %from, theirs, ours = self.me.generation, generation, "peers hold our id under a newer generation (another process with our id?); taking our record back under a newer one");
        }
        self.renew(generation);
    }

    /// Peers hold our record at a number we cannot count past ([`plausible`]: forged, or
    /// corrupt): we go on under the next generation, whose numbers start afresh. At most once
    /// per suspicion timeout, as [`Machine::reclaim`].
    /// Held back by that limit, it is due on the first tick after it ([`Machine::outgrow_tick`]):
    /// a second accusation within it (at the new generation, which is the old one plus one)
    /// left a node dead for good until anything else stirred the roster (a black-box trial).
    fn outgrow(&mut self, what: Outgrown) {
        if self.lately(self.last_reclaim) {
            self.outgrow_due = Some(what);
            return;
        }
        self.last_reclaim = Some(self.now);
        self.outgrow_due = None;
        let generation = self.me.generation.saturating_add(1);
        tracing::warn!(?what, generation, "peers hold our record at a number no real node reaches (forged?), which we cannot answer from above; going on under a new generation");
        self.renew(generation);
    }

    /// A new generation held back by the once-per-suspicion-timeout limit, once it is over:
    /// for an accusation, only if we are still accused (the roster says); for a claim on our
    /// record's version, always (peers' records of us are not in ours to check).
    fn outgrow_tick(&mut self) {
        let Some(what) = self.outgrow_due else {
            return;
        };
        if self.lately(self.last_reclaim) {
            return;
        }
        self.outgrow_due = None;
        match what {
            Outgrown::Incarnation => self.refute_if_accused(),
            Outgrown::Version => self.outgrow(what),
        }
    }

    /// Whether `at` lies within a suspicion timeout of now: what we do at most that often
    /// (a new generation, an announcement to a peer that forgot us).
    fn lately(&self, at: Option<Duration>) -> bool {
        at.is_some_and(|t| self.now.saturating_sub(t) < self.swim.suspicion_timeout(0))
    }

    /// Our record again, with our address and actors, under `generation`.
    fn renew(&mut self, generation: Generation) {
        let content = self.own.content(&self.me, &self.roster);
        self.counters.reclaims += 1;
        self.me.generation = generation;
        self.out.identity = Some(self.me.clone());
        let events = self.own.announce_content(&self.me, &self.addr, content);
        self.commit_own(events, None);
    }

    /// The incarnation to say alive at, above `above`; `None` (and a new generation) when
    /// `above` is as high as peers accept.
    fn alive_above(&mut self, above: Incarnation) -> Option<Incarnation> {
        if above >= plausible::MAX_INCARNATION {
            self.outgrow(Outgrown::Incarnation);
            return None;
        }
        Some(above + 1)
    }

    fn change_actors(&mut self, token: Token, names: Vec<String>, add: bool) {
        let (events, changed) = self.own.change_actors(&self.me, &self.roster, names, add);
        if !add {
            // A TTL goes with its actor (a re-added one starts passing, without one).
            for a in &changed {
                self.ttls.remove(a);
            }
        }
        if events.is_empty() {
            self.out
                .replies
                .push((token, Reply::ActorsChanged(changed)));
        } else {
            self.commit_own(events, Some((token, Reply::ActorsChanged(changed))));
        }
    }

    fn change_tags(
        &mut self,
        token: Token,
        result: Result<(Vec<ClusterEvent>, Vec<String>), crate::tags::TagError>,
    ) {
        match result {
            Err(e) => self.out.replies.push((token, Reply::InvalidTag(e))),
            Ok((events, changed)) if events.is_empty() => {
                self.out.replies.push((token, Reply::TagsChanged(changed)))
            }
            Ok((events, changed)) => {
                tracing::info!(keys = ?changed, "tags of this node changed");
                self.commit_own(events, Some((token, Reply::TagsChanged(changed))));
            }
        }
    }

    /// Sets an actor's health: `Ok(true)` when that logged a change (its reply then waits
    /// for durability like the change).
    fn set_health(
        &mut self,
        actor: &str,
        health: Health,
        note: String,
    ) -> Result<bool, crate::health::HealthError> {
        match self
            .own
            .set_health(&self.me, &self.roster, actor, health, note)?
        {
            Some(event) => {
                self.commit_own(vec![event], None);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn set_health_ttl(
        &mut self,
        actor: &str,
        ttl: Option<Duration>,
    ) -> Result<bool, crate::health::HealthError> {
        use crate::health::HealthError;
        if !self.own.hosted(&self.me, &self.roster).contains(actor) {
            return Err(HealthError::NotHosted(actor.to_owned()));
        }
        match ttl {
            Some(every) if every.is_zero() => Err(HealthError::ZeroTtl),
            Some(every) => {
                let deadline = self.now + every;
                self.ttls.insert(
                    actor.to_owned(),
                    Ttl {
                        every,
                        deadline,
                        lapsed: false,
                    },
                );
                Ok(true)
            }
            None => Ok(self.ttls.remove(actor).is_some()),
        }
    }

    fn pass_ttl(&mut self, actor: &str) -> Result<bool, crate::health::HealthError> {
        let now = self.now;
        let Some(ttl) = self.ttls.get_mut(actor) else {
            return Err(crate::health::HealthError::NoTtl(actor.to_owned()));
        };
        ttl.deadline = now + ttl.every;
        ttl.lapsed = false;
        self.set_health(actor, Health::Passing, String::new())?;
        Ok(true)
    }

    /// The reply to a health command: after the change it logged is durable, if any.
    fn answer_health(&mut self, token: Token, result: Result<bool, crate::health::HealthError>) {
        let reply = match result {
            Ok(changed) => Reply::HealthChanged(changed),
            Err(e) => Reply::InvalidHealth(e),
        };
        if matches!(reply, Reply::HealthChanged(_)) && self.durable_lsn < self.last_lsn {
            let lsn = self.last_lsn;
            self.held.push_back((lsn, Held::Answer(token, reply)));
        } else {
            self.out.replies.push((token, reply));
        }
    }

    /// TTLs not renewed by their deadline turn their actor critical (once per lapse).
    fn ttl_tick(&mut self) {
        let now = self.now;
        let lapsed: Vec<(String, Duration)> = self
            .ttls
            .iter_mut()
            .filter(|(_, t)| !t.lapsed && now >= t.deadline)
            .map(|(a, t)| {
                t.lapsed = true;
                (a.clone(), t.every)
            })
            .collect();
        for (actor, every) in lapsed {
            let note = format!("TTL of {every:?} lapsed without a renewal");
            tracing::warn!(%actor, ?every, "health TTL lapsed; the actor is critical");
            if let Err(e) = self.set_health(&actor, Health::Critical, note) {
                // Not hosted any more: the TTL goes with the actor.
                tracing::debug!(%actor, "dropping the TTL: {e}");
                self.ttls.remove(&actor);
            }
        }
    }

    /// Our own data changes: logged now, applied and gossiped once durable.
    fn commit_own(&mut self, events: Vec<ClusterEvent>, reply: Option<(Token, Reply)>) {
        let lsn = self.append(events.clone());
        self.own.pending(&events, lsn);
        self.held.push_back((lsn, Held::Own { events, reply }));
    }

    /// Our own liveness (refutation, start-up incarnation): applied and gossiped now
    /// (an incarnation carries no content to reuse), published once durable.
    fn apply_local_liveness(&mut self, events: Vec<ClusterEvent>) {
        let changed: Vec<ClusterEvent> = events
            .into_iter()
            .filter(|e| self.roster.apply(e) == Applied::Changed)
            .collect();
        if changed.is_empty() {
            return;
        }
        // Our own liveness counts in the quorum like anyone's: a refutation must undo what
        // the suspicion of us took away.
        self.update_quorum(0, false);
        let budget = self.budget();
        for e in &changed {
            self.queue.push(e.clone(), budget);
        }
        self.own_news = true;
        let lsn = self.append(changed.clone());
        self.held.push_back((lsn, Held::Notify(changed)));
    }

    /// SWIM refutation: the roster says we are suspect or dead; say alive, one higher.
    fn refute_if_accused(&mut self) {
        let Some(rec) = self.roster.record(&self.me.id) else {
            return;
        };
        if rec.generation != self.me.generation
            || !matches!(rec.liveness.state, MemberState::Suspect | MemberState::Dead)
        {
            return;
        }
        let above = rec.liveness.incarnation;
        let Some(incarnation) = self.alive_above(above) else {
            return;
        };
        let event = ClusterEvent::NodeAlive {
            node: self.me.id.clone(),
            generation: self.me.generation,
            incarnation,
        };
        tracing::info!(event = %event, "refuting a suspicion about us");
        self.counters.refutations += 1;
        self.swim.handle_refuted();
        self.apply_local_liveness(vec![event]);
    }

    /// What a peer's digest says of us: an accusation to refute, a record of ours beyond what
    /// we hold (to re-assert), a claim on our id, or nothing at all (it forgot us).
    fn check_view_in_digest(&mut self, from: &NodeId, digest: &[(NodeId, NodeDigest)]) {
        let theirs = digest
            .iter()
            .find(|(id, _)| *id == self.me.id)
            .map(|(_, d)| *d);
        self.check_view_of_us(from, theirs, digest.len() > 1);
    }

    /// [`Machine::check_view_in_digest`] for one entry: `theirs` is the peer's digest entry
    /// for us, `knows_others` whether it holds records of members other than us.
    fn check_view_of_us(&mut self, from: &NodeId, theirs: Option<NodeDigest>, knows_others: bool) {
        match theirs {
            Some(d)
                if d.generation == self.me.generation
                    && d.liveness.state == MemberState::Left
                    && !self.left =>
            {
                self.reclaim(from, d.generation)
            }
            Some(d) if d.generation == self.me.generation => {
                if matches!(d.liveness.state, MemberState::Suspect | MemberState::Dead) {
                    let e = Roster::liveness_event(&self.me.id, d.generation, d.liveness);
                    if self.roster.apply(&e) == Applied::Changed {
                        let lsn = self.append(vec![e.clone()]);
                        self.held.push_back((lsn, Held::Notify(vec![e])));
                        self.update_quorum(0, false);
                    }
                    self.refute_if_accused();
                }
                let ours = self.roster.record(&self.me.id);
                let phantoms = ours
                    .is_some_and(|r| d.sum != 0 && d.sum != r.fingerprint() && d.known >= r.known);
                if phantoms && !self.own.auditing() {
                    // As complete as we are, yet different: they hold entries of our record
                    // that we never wrote in this life (a lost fsync window). See them all.
                    tracing::info!(peer = %from, "a peer holds our record with other contents than ours; asking for all of it");
                    self.own.audit();
                }
                if d.known > self.own.version() {
                    // They hold versions of our record we do not have: pull our whole record
                    // from them to see what, then overwrite it from above.
                    tracing::warn!(peer = %from, theirs = d.known, ours = self.own.version(), "a peer holds a newer version of our record than we do (data dir restored from an older copy, or a lost fsync window); re-asserting ours");
                    self.own.audit();
                }
            }
            Some(d) if d.generation > self.me.generation => self.reclaim(from, d.generation),
            Some(_) => {}
            // A member that knows others but not us, long after we joined (gossip would have
            // told it in milliseconds): it reaped us and refuses our records at the
            // incarnation we have. Say alive one higher, at most once per suspicion timeout.
            None if knows_others && self.roster.state_of(from).is_some() && self.settled() => {
                if self.lately(self.last_unknown_bump) {
                    return;
                }
                self.last_unknown_bump = Some(self.now);
                if self.own.note_unknown_to(from) {
                    tracing::warn!(peer = %from, "a peer does not know this node (reaped while we were away?); announcing ourselves again");
                }
                let Some(incarnation) = self.alive_above(self.incarnation()) else {
                    return;
                };
                let e = ClusterEvent::NodeAlive {
                    node: self.me.id.clone(),
                    generation: self.me.generation,
                    incarnation,
                };
                self.apply_local_liveness(vec![e]);
            }
            None => {}
        }
    }

    /// Whether we have been part of the cluster long enough that every member should know
    /// us: joined more than two suspicion timeouts ago.
    fn settled(&self) -> bool {
        let window = self.swim.suspicion_timeout(0) * 2;
        self.joined_at
            .is_some_and(|t| self.now.saturating_sub(t) > window)
    }

    /// Data events about our own record from a peer: never applied; compared with ours, and
    /// any difference overwritten from a version above everything seen.
    fn check_claims_on_us(&mut self, events: &[ClusterEvent]) {
        let conflict = self.own.conflicts(&self.me, &self.roster, events);
        if let Some(conflict) = conflict {
            let above = conflict.above;
            if above > plausible::MAX_VERSION - plausible::REASSERT_ROOM {
                self.outgrow(Outgrown::Version);
                return;
            }
            let events = self
                .own
                .reassert(&self.me, &self.roster, &self.addr, conflict);
            self.counters.reassertions += 1;
            tracing::warn!(
                above,
                events = events.len(),
                "peers hold data of our record that we do not: re-asserting our record above it"
            );
            self.commit_own(events, None);
        }
    }

    // ---- peers' news ----

    /// Events from a peer (`news`: gossip, re-gossiped; otherwise anti-entropy repair).
    fn receive(&mut self, from: &NodeId, events: Vec<ClusterEvent>, news: bool) {
        let mut changed = Vec::new();
        let mut about_us = Vec::new();
        for e in events {
            if let ClusterEvent::NodeSuspected {
                node,
                incarnation,
                by: Some(by),
                ..
            } = &e
            {
                self.swim.handle_suspicion(node, *incarnation, by);
            }
            if *e.node() == self.me.id {
                if e.generation() == self.me.generation
                    && matches!(e, ClusterEvent::NodeLeft { .. })
                    && !self.left
                {
                    // Peers hold a leave of this generation that we never made durable (we
                    // crashed before its write, or another process with our id left): `left`
                    // is final, so we go on under a new generation.
                    self.reclaim(from, self.me.generation);
                } else if e.generation() == self.me.generation && !e.is_data() {
                    if self.roster.apply(&e) == Applied::Changed {
                        changed.push(e);
                    }
                } else if e.generation() == self.me.generation {
                    about_us.push(e);
                } else if e.generation() > self.me.generation {
                    self.reclaim(from, e.generation());
                }
                continue;
            }
            if self.roster.apply(&e) == Applied::Changed {
                changed.push(e);
            }
        }
        if !about_us.is_empty() {
            self.check_claims_on_us(&about_us);
        }
        // Repair is not news, with one exception: what the peer tells about itself (a node
        // that joined by anti-entropy is otherwise known only to the peer it synced with).
        let budget = self.budget();
        for e in &changed {
            if news || e.node() == from {
                self.queue.push(e.clone(), budget);
            }
        }
        self.note_join(from, &changed);
        self.record_changes(changed);
        self.refute_if_accused();
    }

    /// A member that announces itself to us (we are its seed, or the first it synced with)
    /// is told to every live member at once, in a cluster of up to
    /// [`GossipConfig::tell_all_upto`]: one hop instead of `log N` rounds of gossip, over
    /// connections the joiners opened to us. Members that join together then learn of each
    /// other from the seed alone: those it knew before a joiner come in its sync, those after
    /// in this (a connection delivers in order, and a joiner's record goes ahead of its
    /// digest). Only a small announcement (a node starting with thousands of actors is left
    /// to gossip and anti-entropy); it is queued as news all the same, for what this misses.
    /// Sent with the batch's gossip round ([`Machine::tell_joins`]).
    fn note_join(&mut self, from: &NodeId, changed: &[ClusterEvent]) {
        if self.roster.count_by_state()[0] > self.config.gossip.tell_all_upto {
            return;
        }
        self.joins_to_tell.extend(
            changed
                .iter()
                .filter(|e| {
                    e.node() == from
                        && matches!(e, ClusterEvent::NewNode { .. })
                        && gossip::encoded_len(e) <= gossip::TELL_ALL_MAX_BYTES
                })
                .cloned(),
        );
    }

    /// The joins noted in this batch of inputs, in one frame to every live member (a joiner
    /// gets the others). A `Delta`, which is applied and not passed on: every member got it
    /// from us, so each one's relays (its whole retransmit budget) would only repeat it.
    /// What this misses, our own gossip of the join (queued as news) and anti-entropy
    /// bring.
    fn tell_joins(&mut self) {
        if self.joins_to_tell.is_empty() {
            return;
        }
        let joins = std::mem::take(&mut self.joins_to_tell);
        let alive = self.roster.count_by_state()[0];
        let as_delta = |events| {
            encode(&Frame::Delta(Delta {
                events,
                covers: Vec::new(),
            }))
        };
        let all = as_delta(joins.clone());
        for (id, addr) in self.pick(alive, |s| s == MemberState::Alive) {
            let wire = if joins.iter().any(|e| *e.node() == id) {
                let others: Vec<ClusterEvent> =
                    joins.iter().filter(|e| *e.node() != id).cloned().collect();
                if others.is_empty() {
                    continue;
                }
                as_delta(others)
            } else {
                all.clone()
            };
            self.send(Dest::member(&id, &addr), wire, false);
        }
    }

    fn receive_delta(&mut self, from: &NodeId, delta: Delta) {
        let known = self.roster.count_by_state()[0];
        self.receive(from, delta.events, false);
        for c in &delta.covers {
            // Our own record's coverage is ours alone to state.
            if c.node != self.me.id {
                self.roster
                    .note_coverage(&c.node, c.generation, c.since, c.upto);
            }
        }
        // Only when the delta taught us members: the news queued so far had the budget of a
        // smaller cluster. Topping it up on every delta only sent it again (a restart of a
        // node with 100,000 actors: its peers sent their share of its record 35 times).
        if self.roster.count_by_state()[0] > known && !self.queue.is_empty() {
            self.queue.raise_to(self.budget());
        }
    }

    /// Applied changes: logged, the detector and quorum told, published once durable.
    fn record_changes(&mut self, changed: Vec<ClusterEvent>) {
        if changed.is_empty() {
            return;
        }
        for e in &changed {
            self.observe(e.node());
        }
        if changed.iter().any(|e| !e.is_data()) {
            self.liveness_dirty = true;
        }
        if !self.settled()
            && changed
                .iter()
                .any(|e| matches!(e, ClusterEvent::NewNode { .. }))
        {
            self.anti_entropy_soon();
        }
        let left = quorum::leaves(&changed, &self.me.id);
        let lsn = self.append(changed.clone());
        self.held.push_back((lsn, Held::Notify(changed)));
        self.update_quorum(left, false);
    }

    // ---- the detector ----

    fn run_detector(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Send { to, msg } => {
                    let addr = self
                        .roster
                        .record(&to)
                        .map(|r| r.addr.clone())
                        .unwrap_or_default();
                    // An ack goes back whoever asked, known to our roster or not.
                    let dest = if matches!(msg, SwimMsg::Ack { .. }) && addr.is_empty() {
                        Dest::back(&to)
                    } else {
                        Dest::member(&to, &addr)
                    };
                    self.send(dest, encode(&Frame::Swim(msg)), true);
                }
                Output::Suspect {
                    node,
                    generation,
                    incarnation,
                } => {
                    self.counters.suspicions += 1;
                    let event = ClusterEvent::NodeSuspected {
                        node: node.clone(),
                        generation,
                        incarnation,
                        by: Some(self.me.id.clone()),
                    };
                    let budget = self.budget();
                    if self.roster.apply(&event) == Applied::Changed {
                        tracing::info!(%node, incarnation, "no answer to probes; suspecting");
                        self.queue.push(event.clone(), budget);
                        self.record_changes(vec![event]);
                    } else {
                        // Already suspected (by someone else, or by us at an earlier failed
                        // probe: said once, a trial saw it logged three times): our own
                        // suspicion confirms it (it shortens everyone's timeout), though it
                        // changes nothing here.
                        tracing::debug!(%node, incarnation, "no answer to probes; confirming the suspicion");
                        self.queue.push(event, budget);
                    }
                }
                Output::Dead {
                    node,
                    generation,
                    incarnation,
                } => {
                    let event = ClusterEvent::NodeDead {
                        node: node.clone(),
                        generation,
                        incarnation,
                    };
                    if self.roster.apply(&event) == Applied::Changed {
                        tracing::warn!(%node, incarnation, "suspicion timed out; declaring dead");
                        self.counters.declared_dead += 1;
                        let budget = self.budget();
                        self.queue.push(event.clone(), budget);
                        self.record_changes(vec![event]);
                    }
                }
                Output::Reap { node, generation } => {
                    if self.reap(&node, generation) {
                        tracing::info!(%node, "tombstone expired; forgotten");
                        self.update_quorum(0, true);
                    }
                }
            }
        }
    }

    /// Forgets a dead or left member of `generation` (remembered one more TTL so stale news
    /// of it cannot bring it back); false if the roster holds something else of it.
    fn reap(&mut self, node: &NodeId, generation: Generation) -> bool {
        let is_tombstone = self
            .roster
            .record(node)
            .is_some_and(|r| r.generation == generation && r.liveness.state.is_tombstone());
        self.swim.remove_member(node);
        self.last_heard.remove(node);
        if is_tombstone {
            if let Some(r) = self
                .roster
                .record(node)
                .filter(|r| r.liveness.state == MemberState::Dead && !r.addr.is_empty())
            {
                self.reconnect.retain(|(_, id, _)| id != node);
                if self.reconnect.len() == RECONNECT_ADDRS_MAX {
                    self.reconnect.pop_front();
                }
                self.reconnect
                    .push_back((self.now, node.clone(), r.addr.clone()));
            }
            self.roster.remove(node);
            self.announced_hosts.remove(node);
            self.reaped.push_back((self.now, node.clone()));
        }
        is_tombstone
    }

    // ---- split-brain downing ----

    /// Once the reachable set held still for the stable period: judge this side. The loser
    /// marks itself down; the winner declares whom it cannot reach dead and forgets them.
    fn downing_tick(&mut self) {
        let strategy = self.config.downing.strategy;
        if strategy == downing::Strategy::Off {
            return;
        }
        if std::mem::take(&mut self.liveness_dirty) {
            let sum = self.reachable_sum();
            if sum != self.reachable_sum {
                self.reachable_sum = sum;
                self.reach_changed_at = self.now;
            }
        }
        // A failed probe means the detector is still at work (a member of the other side
        // not yet suspected looks reachable until its probe fails: a node cut off from
        // everyone probes slowly, Lifeguard stretching its interval). Settled means no
        // failure either for the whole stable period.
        let failed = self.swim.probe_stats().failed;
        if failed != self.probe_failures {
            self.probe_failures = failed;
            self.reach_changed_at = self.now;
        }
        if self.left
            || self.judged == Some(self.reach_changed_at)
            || self.now.saturating_sub(self.reach_changed_at) < self.config.downing.stable_after
            || self.quorum_counts()[1] > 0
            || !self.heard_from_all_alive_since(self.reach_changed_at)
        {
            // The detector has not settled who is reachable: a suspicion is still open, or
            // a member we count as alive has not been heard from since the view last changed
            // (it may be on the other side, not yet probed). Judging a view still forming is
            // how both sides come to think they won.
            return;
        }
        self.judged = Some(self.reach_changed_at);
        let lowest = self
            .roster
            .iter_records()
            .filter(|(_, r)| r.liveness.state != MemberState::Left)
            .map(|(id, r)| (id, r.liveness.state == MemberState::Alive))
            .min_by(|a, b| a.0.cmp(b.0));
        let view = downing::View {
            reachable: self.quorum.alive,
            largest: self.quorum.largest,
            lowest,
        };
        match (downing::verdict(strategy, &view), self.down.is_some()) {
            (Err(why), false) => {
                tracing::warn!(%strategy, reason = %why, "this side of a partition lost: this node is DOWN (it keeps probing, and comes back up once its side wins)");
                self.down = Some(why.clone());
                self.out.down = Some(Some(why));
            }
            (Err(why), true) => self.down = Some(why),
            (Ok(()), true) => {
                tracing::info!(%strategy, reachable = view.reachable, largest = view.largest, "this side goes on: up again");
                self.down = None;
                self.out.down = Some(None);
            }
            (Ok(()), false) => {}
        }
        if self.down.is_none() {
            self.down_unreachable();
        }
    }

    /// Every member alive in our roster sent us something at or after `t`.
    fn heard_from_all_alive_since(&self, t: Duration) -> bool {
        self.roster
            .iter_records()
            .filter(|(id, r)| **id != self.me.id && r.liveness.state == MemberState::Alive)
            .all(|(id, _)| self.last_heard.get(id).is_some_and(|h| *h >= t))
    }

    fn quorum_counts(&self) -> [usize; 4] {
        self.roster.count_by_state()
    }

    /// An order-independent fingerprint of who is alive.
    fn reachable_sum(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        self.roster
            .iter_records()
            .filter(|(_, r)| r.liveness.state == MemberState::Alive)
            .map(|(id, r)| {
                let mut h = std::hash::DefaultHasher::new();
                (id, r.generation).hash(&mut h);
                h.finish()
            })
            .fold(0u64, u64::wrapping_add)
    }

    /// The winning side: members it cannot reach are declared dead and forgotten now, so
    /// its quorum stops counting them. One that was only cut off comes back by saying it is
    /// alive (a higher incarnation), as after any false death.
    fn down_unreachable(&mut self) {
        let unreachable: Vec<(NodeId, Generation, Incarnation)> = self
            .roster
            .iter_records()
            .filter(|(id, r)| {
                **id != self.me.id
                    && matches!(r.liveness.state, MemberState::Suspect | MemberState::Dead)
            })
            .map(|(id, r)| (id.clone(), r.generation, r.liveness.incarnation))
            .collect();
        for (node, generation, incarnation) in unreachable {
            let event = ClusterEvent::NodeDead {
                node: node.clone(),
                generation,
                incarnation,
            };
            if self.roster.apply(&event) == Applied::Changed {
                self.counters.declared_dead += 1;
                let budget = self.budget();
                self.queue.push(event.clone(), budget);
                self.record_changes(vec![event]);
            }
            if self.reap(&node, generation) {
                tracing::warn!(%node, "unreachable after the partition settled: downed (declared dead and forgotten)");
                self.counters.downed += 1;
                // Like a leave: the cluster shrank on purpose, whichever side we are on.
                self.update_quorum(1, false);
            }
        }
        // The reaping changed the quorum, not who is reachable: nothing more to judge.
        self.judged = Some(self.reach_changed_at);
    }

    /// Why this node is down, while it is (split-brain downing).
    pub fn down(&self) -> Option<&str> {
        self.down.as_deref()
    }

    /// Tells the detector what the roster now says about `id`.
    fn observe(&mut self, id: &NodeId) {
        if let Some(r) = self.roster.record(id) {
            self.swim.update_member(
                id,
                r.generation,
                r.liveness.incarnation,
                r.liveness.state,
                self.now,
            );
        }
    }

    /// Reaped members are remembered one more TTL (so peers that reap later cannot bring
    /// them back to us), and never more than [`MAX_FORGOTTEN`]. A member noted as moved off
    /// its address ([`Machine::handle_dialed`]) is dropped from that note once its record
    /// changes or it is no longer tried.
    fn prune_forgotten(&mut self) {
        let ttl = self.config.swim.tombstone_ttl;
        while let Some((at, id)) = self.reaped.front() {
            if self.now.saturating_sub(*at) < ttl && self.reaped.len() <= MAX_FORGOTTEN {
                break;
            }
            self.roster.unforget(id);
            self.reaped.pop_front();
        }
        let (roster, reconnect) = (&self.roster, &self.reconnect);
        self.moved.retain(|id, addr| match roster.record(id) {
            Some(r) => r.liveness.state.is_tombstone() && r.addr == *addr,
            None => reconnect.iter().any(|(_, i, _)| i == id),
        });
    }

    fn heard(&mut self, from: &NodeId) {
        if self.last_heard.len() >= MAX_HEARD && !self.last_heard.contains_key(from) {
            let now = self.now;
            let window = self.swim.suspicion_timeout(0);
            self.last_heard
                .retain(|_, t| now.saturating_sub(*t) <= window);
            if self.last_heard.len() >= MAX_HEARD {
                return;
            }
        }
        self.last_heard.insert(from.clone(), self.now);
    }

    /// A minority that began before the join (a node restarted ahead of its members) or
    /// within [`MINORITY_SAID_AFTER_JOIN`] of it is expected and logged at INFO; it is
    /// warned of if it lasts that long after the join (the members heard from since need
    /// that long to be counted alive again: refutations, the others' own restarts). It was
    /// a WARN at once, on every node restarted before a majority of the cluster was up, and
    /// on nodes that joined and then heard members they held dead alive again 1 to 100 ms
    /// later (black-box trials).
    fn minority_tick(&mut self) {
        if self.minority_unsaid && self.joined && !self.just_joined() {
            self.minority_unsaid = false;
            if !self.quorum.in_majority && !self.left {
                warn_minority(self.quorum);
            }
        }
    }

    /// Joined less than [`MINORITY_SAID_AFTER_JOIN`] ago.
    fn just_joined(&self) -> bool {
        self.joined_at
            .is_some_and(|t| self.now < t + MINORITY_SAID_AFTER_JOIN)
    }

    /// Recomputes the quorum after a change: `left` members left gracefully (the cluster
    /// shrank on purpose), `reaped` a dead member was forgotten (a shrink only while we are
    /// in the majority: a minority must not talk itself into being the whole).
    fn update_quorum(&mut self, left: u64, reaped: bool) {
        let old = self.quorum;
        let mut largest = old.largest.saturating_sub(left);
        if reaped && old.in_majority {
            largest = largest.saturating_sub(1);
        }
        let new = quorum::quorum(largest, self.roster.count_by_state());
        let leaving = self
            .roster
            .record(&self.me.id)
            .is_some_and(|r| r.liveness.state == MemberState::Left);
        if new.in_majority != old.in_majority && !leaving {
            if new.in_majority {
                self.minority_unsaid = false;
                let again = if self.been_in_majority { " again" } else { "" };
                self.been_in_majority = true;
                tracing::info!(
                    alive = new.alive,
                    largest = new.largest,
                    "in the majority{again}"
                );
            } else if self.left {
                // Our own graceful leave: we stop counting ourselves, nothing was lost.
                tracing::debug!(
                    alive = new.alive,
                    largest = new.largest,
                    "left the majority by leaving"
                );
            } else if !self.joined || self.just_joined() {
                // Restarted, its members not heard from yet (the whole cluster restarting),
                // or just joined, with members we held dead not yet heard alive again:
                // expected; warned of if it outlasts the join (`minority_tick`).
                self.minority_unsaid = true;
                tracing::info!(
                    alive = new.alive,
                    largest = new.largest,
                    "not in the majority while rejoining: waiting for members to answer"
                );
            } else {
                warn_minority(new);
            }
        }
        if new != old {
            self.reach_changed_at = self.now;
            self.quorum = new;
            self.out.quorum = Some(new);
        }
    }

    // ---- dissemination ----

    /// Sends an event gets in the cluster as we know it now.
    fn budget(&self) -> u32 {
        let n = self.roster.count_by_state()[0].max(1);
        gossip::retransmit_budget(self.config.gossip.retransmit_mult, n)
    }

    /// A gossip round if the window allows: queued events, most sends left first, in one
    /// frame under the size cap, to `fanout` random live members. News (an event never sent
    /// yet) goes at once: the window spaces retransmissions, and holding the first hop
    /// behind it cost each hop up to the window (measured: a registration took 5 ms to reach
    /// 4 peers). With nobody to tell, the queue is dropped: anti-entropy brings the news to
    /// whoever comes.
    ///
    /// The first round after our own news goes to every member in a cluster of up to
    /// [`GossipConfig::tell_all_upto`], with at most [`gossip::TELL_ALL_MAX_BYTES`] of
    /// events (the rest follow in the next turn's round; a larger first event is gossiped
    /// as ever): one hop, where 3 members and their relays took `log N` (a registration
    /// seen by all of 20 in the simulation: 8 to 12 ms before, 5 to 6 now, 1 of them its
    /// fsync). It spends the news' budget at once (`3 x ceil(log2(N + 1))` sends, 15 at
    /// N = 20 against 19 members); the receivers relay it as any news, for a member the
    /// round missed.
    fn flush(&mut self) {
        let own_news = std::mem::take(&mut self.own_news);
        if self.queue.is_empty() || (self.now < self.next_round && !self.queue.has_fresh()) {
            return;
        }
        let [alive, suspect, ..] = self.roster.count_by_state();
        let small = self
            .queue
            .next_bytes()
            .is_some_and(|b| b <= gossip::TELL_ALL_MAX_BYTES);
        let (fanout, max_bytes) = if own_news && small && alive <= self.config.gossip.tell_all_upto
        {
            let bytes = gossip::TELL_ALL_MAX_BYTES + gossip::FRAME_OVERHEAD;
            (alive + suspect, bytes.min(self.config.max_frame_bytes))
        } else {
            (self.config.gossip.fanout, self.config.max_frame_bytes)
        };
        let targets = self.gossip_targets(fanout);
        if targets.is_empty() {
            self.queue.clear();
            return;
        }
        let batch = self.queue.take_round(max_bytes, targets.len() as u32);
        let wire = encode(&Frame::Events(batch));
        for (id, addr) in targets {
            self.send(Dest::member(&id, &addr), wire.clone(), false);
        }
        self.next_round = self.now + self.config.gossip.window;
    }

    fn anti_entropy_tick(&mut self) {
        let follow_up = self.follow_up_round.is_some_and(|at| self.now >= at);
        if self.now < self.next_anti_entropy && !follow_up {
            return;
        }
        if follow_up {
            self.follow_up_round = None;
        } else {
            let alive = self.roster.count_by_state()[0];
            let every =
                gossip::anti_entropy_interval(self.config.gossip.anti_entropy_interval, alive);
            self.next_anti_entropy = self.now + every.mul_f64(self.rng.gen_range(0.75..1.25));
        }
        if !self.joined || self.left {
            return;
        }
        let member = |(id, addr): (NodeId, String)| Dest::member(&id, &addr);
        // A follow-up goes to the member we joined through: a random one may have joined
        // in the same burst and lack just what we lack (equal fingerprints, nothing
        // learned, and a wait for the next regular round: 1 to 3 cold starts of 5 nodes in
        // 1,000 in the simulation).
        if follow_up {
            let via = self.joined_via.clone().and_then(|id| {
                let r = self.roster.record(&id)?;
                let ok = r.is_announced() && !r.liveness.state.is_tombstone();
                ok.then(|| (id.clone(), r.addr.clone()))
            });
            if let Some(dest) = via.or_else(|| self.gossip_targets(1).pop()).map(member) {
                self.send_round(dest);
            }
            return;
        }
        // The reconnect slot falls back to a live member: with nobody dead or reaped it
        // would skip the round (a quarter of all rounds, measured as cold starts stalling
        // for two intervals).
        let reconnect = if self.rng.gen_ratio(1, gossip::RECONNECT_ONE_IN) {
            let dead = self.pick(1, |s| s == MemberState::Dead).pop();
            let dead = dead.filter(|(id, addr)| !self.moved_on(id, addr));
            dead.or_else(|| self.reconnect_target()).map(member)
        } else {
            None
        };
        let target = reconnect.or_else(|| self.gossip_targets(1).pop().map(member));
        if let Some(dest) = target {
            self.send_round(dest);
        }
    }

    /// One anti-entropy round to `dest`. In sync, it costs a fingerprint whatever the
    /// cluster size; the peer opens a digest exchange only if its roster differs. Auditing
    /// our own record (after a start, or a peer showed a newer one) needs all the peer holds
    /// of it: an audit.
    fn send_round(&mut self, dest: Dest) {
        let frame = if self.own.auditing() {
            self.audit_frame()
        } else {
            Frame::Fingerprint(self.roster.digest_fingerprint())
        };
        self.send(dest, encode(&frame), false);
    }

    /// Once joined, from [`SEED_CHECK_FIRST`] doubling to [`SEED_CHECK_EVERY`] (+-25%): a
    /// round to a seed no member of our roster lives at, if there is one.
    fn seed_check_tick(&mut self) {
        if self.now < self.next_seed_check {
            return;
        }
        let every = (SEED_CHECK_FIRST * (1 << self.seed_checks.min(8))).min(SEED_CHECK_EVERY);
        self.next_seed_check = self.now + every.mul_f64(self.rng.gen_range(0.75..1.25));
        if !self.joined || self.left {
            return;
        }
        if let Some(addr) = self.unmet_seed() {
            self.seed_checks += 1;
            self.send_round(Dest::addr(&addr));
        }
    }

    /// A seed at whose address no record of ours lives (nor the member a dial of it reached:
    /// [`Machine::handle_dialed`]). A node whose seeds were down at its start and that
    /// another new node dialed meanwhile is joined (with that node) and stops the join
    /// retries; without this it would never reach its seeds once they are up, and stay a
    /// cluster apart for good (black-box trial, 2026-12-02). A seed in our cluster
    /// answers an equal fingerprint with nothing; one in another cluster opens the digest
    /// exchange that merges the two.
    fn unmet_seed(&mut self) -> Option<String> {
        if self.seeds.is_empty() {
            return None;
        }
        let (roster, aliases) = (&self.roster, &self.seed_aliases);
        let met_behind = |a: &String| {
            aliases
                .get(a)
                .and_then(|id| roster.state_of(id))
                .is_some_and(|s| !s.is_tombstone())
        };
        let unmet: Vec<&String> = self
            .seeds
            .iter()
            .filter(|a| !roster.iter_records().any(|(_, r)| &r.addr == *a) && !met_behind(a))
            .collect();
        gossip::choose_peers(&mut self.rng, &unmet, 1)
            .pop()
            .cloned()
    }

    /// While we are joining ([`Machine::settled`] not yet), a member joined or came back as
    /// a new generation: one anti-entropy round follows once such news has been still for
    /// about the time gossip takes to spread ([`gossip::settle_time`]), not a whole interval
    /// later. A node joining with others in a burst is the one that can miss members (their
    /// news ran out before anyone knew it); members already settled hear every joiner's
    /// news in full, and at 10,000 nodes a round each per join would cost a digest exchange
    /// wherever rosters still differ. Still, not merely after the first news: while a burst
    /// of joins spreads, each round would be a full digest exchange (measured, 20 nodes in
    /// one process: cold starts 25 -> 40 ms from the extra load). The regular rounds keep
    /// their schedule.
    fn anti_entropy_soon(&mut self) {
        let alive = self.roster.count_by_state()[0];
        let settle = gossip::settle_time(self.config.gossip.window, alive);
        self.follow_up_round = Some(self.now + settle.mul_f64(self.rng.gen_range(0.75..1.25)));
    }

    /// A member reaped while dead, still within its reconnect window, one reconnect slot in
    /// [`gossip::RECONNECT_ONE_IN`] (they are usually gone for good: few digests to them).
    /// One that is back in the roster (it rejoined) is dropped from the list.
    fn reconnect_target(&mut self) -> Option<(NodeId, String)> {
        let now = self.now;
        let roster = &self.roster;
        self.reconnect.retain(|(at, id, _)| {
            now.saturating_sub(*at) < RECONNECT_WINDOW && roster.record(id).is_none()
        });
        let worth: Vec<usize> = (0..self.reconnect.len())
            .filter(|&i| {
                let (_, id, addr) = &self.reconnect[i];
                !self.moved_on(id, addr)
            })
            .collect();
        if worth.is_empty() || !self.rng.gen_ratio(1, gossip::RECONNECT_ONE_IN) {
            return None;
        }
        let i = worth[self.rng.gen_range(0..worth.len())];
        let (_, id, addr) = &self.reconnect[i];
        Some((id.clone(), addr.clone()))
    }

    /// Until a seed answers: a digest to every seed, retried with backoff and jitter.
    fn join_tick(&mut self) {
        if self.now < self.next_join || self.left || !self.needs_seeds() {
            return;
        }
        // A new node's announcement is on its way to disk (a moment under `--fsync batch`):
        // the join waits for it, so that the record goes with it (see
        // [`Machine::own_record_for_join`]); `handle_durable` sends it then.
        if self.roster.record(&self.me.id).is_none() && self.own_change_held() {
            self.join_waits_for_own = true;
            return;
        }
        self.join_waits_for_own = false;
        // Every seed (they are few: configured, or one DNS name's addresses), and a few of
        // the remembered peers: a node rejoining a cluster of 1,000 must not send 999
        // digests (of 1,000 entries each) per attempt.
        // A node that holds a roster (a restart) is likely in sync but for its own record:
        // an audit then costs a few bytes each way. A new node's digest is tiny anyway.
        let frame = if self.own.auditing() && self.roster.num_records() > 1 {
            self.audit_frame()
        } else {
            Frame::Digest(self.digest())
        };
        let wire = encode(&frame);
        let own = self.own_record_for_join();
        let k = self.config.gossip.fanout.max(1);
        let mut chosen = if self.seeds.len() <= JOIN_SEEDS_MAX {
            self.seeds.clone()
        } else {
            gossip::choose_peers(&mut self.rng, &self.seeds, JOIN_SEEDS_MAX)
        };
        chosen.extend(gossip::choose_peers(&mut self.rng, &self.remembered, k));
        // And members the roster holds alive now: the remembered addresses are those of
        // the start, and may all be gone (a process that held an id for a while, a peer
        // restarted at another address) while the cluster itself is alive and well.
        chosen.extend(self.gossip_targets(k).into_iter().map(|(_, addr)| addr));
        chosen.sort();
        chosen.dedup();
        for seed in chosen {
            if let Some(own) = &own {
                self.send(Dest::addr(&seed), own.clone(), false);
            }
            self.send(Dest::addr(&seed), wire.clone(), false);
        }
        let wait = self.join_delay.mul_f64(self.rng.gen_range(0.8..1.2));
        self.next_join = self.now + wait;
        self.join_delay = (self.join_delay * 2).min(JOIN_RETRY_MAX);
    }

    /// Our whole record as a delta, to go ahead of a join's digest when it is small (a new
    /// node's is its announcement): the seed learns of us from our first frame and spreads
    /// the news at once, where the digest exchange would bring it our record only in its
    /// third leg (digest, sync, then our delta), a round trip later. A large record (a
    /// restart with many actors) waits for that exchange, which sends it once.
    fn own_record_for_join(&self) -> Option<Wire> {
        let rec = self.roster.record(&self.me.id)?;
        if rec.actors.len() + rec.tags.len() + rec.health.len() > JOIN_RECORD_ENTRIES {
            return None;
        }
        let delta = gossip::delta_for_record(&self.roster, &self.me.id, None, true);
        if delta.events.is_empty() {
            return None;
        }
        let wire = encode(&Frame::Delta(delta));
        (wire.len() <= JOIN_RECORD_BYTES.min(self.config.max_frame_bytes)).then_some(wire)
    }

    /// Members we may gossip to: announced, not dead or gone, not us. Random, at most `n`.
    fn gossip_targets(&mut self, n: usize) -> Vec<(NodeId, String)> {
        self.pick(n, |s| !s.is_tombstone())
    }

    /// Up to `n` random announced members other than us whose state passes `keep`: sampled
    /// by rejection (a scan of the roster per gossip round would cost the cluster size),
    /// falling back to a scan when few qualify.
    fn pick(&mut self, n: usize, keep: impl Fn(MemberState) -> bool) -> Vec<(NodeId, String)> {
        let counts = self.roster.count_by_state();
        let qualifying: usize = [
            MemberState::Alive,
            MemberState::Suspect,
            MemberState::Dead,
            MemberState::Left,
        ]
        .iter()
        .filter(|s| keep(**s))
        .map(|s| counts[*s as usize])
        .sum();
        if qualifying == 0 || n == 0 {
            return Vec::new();
        }
        let mut chosen: Vec<NodeId> = Vec::with_capacity(n);
        let total = self.roster.num_records();
        if qualifying > 2 * n + 8 && total > 0 {
            for _ in 0..(8 * n + 16) {
                if chosen.len() == n {
                    break;
                }
                let Some((id, _)) = self.roster.nth_record(self.rng.gen_range(0..total)) else {
                    break;
                };
                let ok = *id != self.me.id
                    && self.roster.state_of(id).is_some_and(&keep)
                    && !chosen.contains(id);
                if ok {
                    chosen.push(id.clone());
                }
            }
        }
        if chosen.len() < n {
            let mut rest: Vec<&NodeId> = self
                .roster
                .iter_records()
                .filter(|(id, r)| {
                    **id != self.me.id
                        && r.is_announced()
                        && keep(r.liveness.state)
                        && !chosen.contains(id)
                })
                .map(|(id, _)| id)
                .collect();
            rest.sort();
            let more = gossip::choose_peers(&mut self.rng, &rest, n - chosen.len());
            chosen.extend(more.into_iter().cloned());
        }
        chosen
            .into_iter()
            .filter_map(|id| {
                let addr = self.roster.record(&id)?.addr.clone();
                Some((id, addr))
            })
            .collect()
    }

    /// Our digest. Our own entry claims nothing until we have seen the cluster's view of
    /// our record once (after a start, or when a peer showed a newer one): peers then send
    /// us all they hold of it, and any difference is re-asserted.
    fn digest(&self) -> Vec<(NodeId, NodeDigest)> {
        let mut d: Vec<(NodeId, NodeDigest)> = self.roster.digest().into_iter().collect();
        if self.own.auditing() {
            for (id, nd) in d.iter_mut() {
                if *id == self.me.id {
                    nd.known = 0;
                }
            }
        }
        d
    }

    /// Opens anti-entropy while auditing our own record: our roster's fingerprint without
    /// our record, and our digest entry claiming nothing of it. A peer in sync answers with
    /// our record alone; a full digest would cost O(members) each way, on every start.
    fn audit_frame(&self) -> Frame {
        let own = self.roster.record(&self.me.id).map(|r| NodeDigest {
            known: 0,
            ..r.digest()
        });
        Frame::Audit {
            rest: self.roster.fingerprint_without(&self.me.id),
            own,
        }
    }

    fn delta_for(&self, theirs: Vec<(NodeId, NodeDigest)>) -> Delta {
        let theirs: BTreeMap<NodeId, NodeDigest> = theirs.into_iter().collect();
        gossip::delta_for(&self.roster, &theirs, Some(&self.me.id))
    }

    /// Sends a delta back to `to` split into frames under the size cap; the last one is
    /// built by `last` (and carries the coverage, which holds only once all events arrived).
    fn send_delta(&mut self, to: &NodeId, mut delta: Delta, last: impl FnOnce(Delta) -> Frame) {
        self.skip_recent_resends(to, &mut delta);
        let mut chunks = gossip::chunks(delta.events, self.config.max_frame_bytes);
        let tail = chunks.pop().unwrap_or_default();
        for events in chunks {
            let wire = encode(&Frame::Delta(Delta {
                events,
                covers: Vec::new(),
            }));
            self.send(Dest::back(to), wire, false);
        }
        // Coverage is small per node, but a roster of many nodes has many: split too.
        let mut covers = delta.covers;
        let per_frame = (self.config.max_frame_bytes / 2 / 96).max(1);
        while covers.len() > per_frame {
            let rest = covers.split_off(per_frame);
            let wire = encode(&Frame::Delta(Delta {
                events: Vec::new(),
                covers,
            }));
            self.send(Dest::back(to), wire, false);
            covers = rest;
        }
        let wire = encode(&last(Delta {
            events: tail,
            covers,
        }));
        self.send(Dest::back(to), wire, false);
    }

    /// Takes out of `delta` the large parts of records (at least [`gossip::DATA_NEWS_BURST`]
    /// bytes) that went to `to` less than [`RESEND_AFTER`] ago and have not changed since:
    /// a peer answers again before it has taken in a large delta (2 MB of a restart with
    /// 100,000 actors is a second's work on a busy node), and its watermark, which only the
    /// delta's last frame moves, still asks for all of it. A restarted node sent its record
    /// to each peer 4 to 6 times over. Small parts always go (cheap, and a lost delta is
    /// repaired by the next exchange); a lost large one by the first after the wait.
    fn skip_recent_resends(&mut self, to: &NodeId, delta: &mut Delta) {
        let now = self.now;
        self.sent_lately
            .retain(|_, (_, _, at)| now.saturating_sub(*at) < RESEND_AFTER);
        let mut bytes: BTreeMap<&NodeId, usize> = BTreeMap::new();
        for e in &delta.events {
            *bytes.entry(e.node()).or_default() += gossip::encoded_len(e);
        }
        let mut skip = BTreeSet::new();
        for (node, b) in bytes {
            let Some(rec) = self.roster.record(node) else {
                continue;
            };
            if b < gossip::DATA_NEWS_BURST {
                continue;
            }
            let key = (to.clone(), node.clone());
            match self.sent_lately.get(&key) {
                Some(&(g, v, _)) if g == rec.generation && v >= rec.version => {
                    skip.insert(node.clone());
                }
                _ => {
                    self.sent_lately
                        .insert(key, (rec.generation, rec.version, now));
                }
            }
        }
        if !skip.is_empty() {
            tracing::debug!(peer = %to, records = skip.len(), "a large delta sent lately: not again yet");
            delta.events.retain(|e| !skip.contains(e.node()));
            delta.covers.retain(|c| !skip.contains(&c.node));
        }
    }

    fn send(&mut self, to: Dest, wire: Wire, probe: bool) {
        self.out.send.push(Outgoing { to, wire, probe });
    }

    /// Hands records to the WAL; returns the LSN of the last one.
    fn append(&mut self, events: Vec<ClusterEvent>) -> Lsn {
        self.last_lsn += events.len() as u64;
        self.out.append.extend(events);
        self.last_lsn
    }

    /// Notifications of durable changes. A liveness change carries the actors its node
    /// hosts (what an actor system may have to re-home); a data change names its actor
    /// itself (listing every actor per event would cost a bulk registration its square).
    fn publish(&mut self, events: Vec<ClusterEvent>) {
        for event in events {
            if let ClusterEvent::HealthSet {
                node,
                actor,
                health,
                note,
                ..
            } = &event
            {
                tracing::info!(%node, %actor, %health, %note, "actor health changed");
            }
            let actors = if !event.is_data() {
                self.roster
                    .record(event.node())
                    .map(|r| {
                        let mut a: Vec<String> = r.hosted_actors().map(str::to_owned).collect();
                        a.sort_unstable();
                        a
                    })
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            let moved: Vec<String> = match &event {
                ClusterEvent::ActorAdded { actor, .. }
                | ClusterEvent::ActorRemoved { actor, .. }
                | ClusterEvent::HealthSet { actor, .. } => vec![actor.clone()],
                // A generation's first announcement also makes the actors added before it
                // arrived count at last, and moves what the node owned as an earlier
                // generation (the generation is in the score). Its later chunks move only
                // their own actors: recomputing the whole record for each chunk made a
                // restart with 100,000 actors cost 5 million owner lookups per node.
                ClusterEvent::NewNode {
                    node,
                    generation,
                    actors,
                    ..
                } => {
                    let mut all: BTreeSet<String> = actors.clone();
                    if self.announced_hosts.insert(node.clone(), *generation) != Some(*generation) {
                        if let Some(r) = self.roster.record(node) {
                            all.extend(r.hosted_actors().map(str::to_owned));
                        }
                        if let Some(owned) = self.owned_by.get(node) {
                            all.extend(owned.iter().cloned());
                        }
                    }
                    all.into_iter().collect()
                }
                // What its node owned moves too, even if its record is gone by now.
                other => {
                    let mut all: BTreeSet<String> = actors.iter().cloned().collect();
                    if let Some(owned) = self.owned_by.get(other.node()) {
                        all.extend(owned.iter().cloned());
                    }
                    all.into_iter().collect()
                }
            };
            self.out
                .notifications
                .push(MembershipChange { event, actors });
            for actor in moved {
                self.recompute_owner(actor);
            }
        }
    }

    /// Whether this node's view of owners may be acted on.
    fn owner_authority(&self) -> Result<(), String> {
        if let Some(why) = &self.down {
            return Err(format!("this node is down (split-brain downing): {why}"));
        }
        if !self.joined {
            return Err("this node has not joined yet (no seed has answered): it knows too little to name owners".into());
        }
        if !self.quorum.in_majority {
            return Err(format!(
                "this node is not in the majority ({} alive of the largest recent cluster of {}): its view of owners is not to be acted on",
                self.quorum.alive, self.quorum.largest
            ));
        }
        Ok(())
    }

    /// Owners are announced only while this node has a say: on gaining it, every owner is
    /// announced (`from` the last one announced); on losing it, every owner it announced
    /// goes `to: None`, so an application following the stream stops its workers.
    fn owner_authority_tick(&mut self) {
        let authority = self.owner_authority().is_ok();
        if authority == self.owners_announced {
            return;
        }
        self.owners_announced = authority;
        if authority {
            let actors: Vec<String> = self.roster.actor_names().map(str::to_owned).collect();
            for actor in actors {
                self.recompute_owner(actor);
            }
        } else {
            self.owned_by.clear();
            let mut lost: Vec<(String, NodeId)> = self.owners.drain().collect();
            lost.sort();
            for (actor, from) in lost {
                self.out.owner_changes.push(crate::owner::OwnerChanged {
                    actor,
                    from: Some(from),
                    to: None,
                });
            }
        }
    }

    /// Recomputes the owner of `actor`; a change is announced (only while this node has a
    /// say: see [`Machine::owner_authority_tick`]).
    fn recompute_owner(&mut self, actor: String) {
        if !self.owners_announced {
            return;
        }
        self.counters.owner_recomputations += 1;
        let now = crate::owner::owner(&self.roster, &actor);
        let before = match &now {
            Some(o) => self.owners.insert(actor.clone(), o.clone()),
            None => self.owners.remove(&actor),
        };
        if before != now {
            if let Some(b) = &before {
                if let Some(set) = self.owned_by.get_mut(b) {
                    set.remove(&actor);
                    if set.is_empty() {
                        self.owned_by.remove(b);
                    }
                }
            }
            if let Some(o) = &now {
                self.owned_by
                    .entry(o.clone())
                    .or_default()
                    .insert(actor.clone());
            }
            self.out.owner_changes.push(crate::owner::OwnerChanged {
                actor,
                from: before,
                to: now,
            });
        }
    }

    /// The owner of `actor` as announced so far (the last `OwnerChanged` for it).
    pub fn tracked_owner(&self, actor: &str) -> Option<&NodeId> {
        self.owners.get(actor)
    }

    /// The owner of `actor` as this node sees it; an error while this node is down or not in
    /// the majority (a minority's view of owners is not to be acted on).
    pub fn owner(&self, actor: &str) -> Result<Option<NodeId>, String> {
        self.owner_authority()?;
        Ok(crate::owner::owner(&self.roster, actor))
    }
}

/// Sizes of the machine's growing structures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sizes {
    pub broadcasts: usize,
    pub held: usize,
    pub forgotten: usize,
    pub last_heard: usize,
    pub pending_actors: usize,
}

/// The generation we run as: never below what our own record says (the WAL is the truth:
/// a generation taken back from another claimant is logged before it is stored), and a new
/// one if that record says we left (`left` is final for a generation).
fn effective_identity(given: &Identity, roster: &Roster) -> Identity {
    let mut me = given.clone();
    if let Some(rec) = roster.record(&me.id) {
        me.generation = me.generation.max(rec.generation);
        if rec.generation == me.generation && rec.liveness.state == MemberState::Left {
            me.generation += 1;
        }
    }
    me
}

/// Encodes a frame once for every target it goes to.
pub fn encode(frame: &Frame) -> Wire {
    Wire::new(frame)
}

#[cfg(test)]
mod tests;
