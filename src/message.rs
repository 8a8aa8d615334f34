//! The wire protocol: every WebSocket binary frame is one rmp-serde [`Frame`].
//!
//! A connection starts with a handshake (`Hello` both ways, then `Proof` from the dialer when
//! a secret is set); only then are gossip or admin frames accepted. See `transport.rs`.

use crate::event::{ClusterEvent, Generation, NodeId};
use crate::gossip::Delta;
use crate::roster::{Member, NodeDigest};
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change of [`Frame`]. 2: `TagSet` and `HealthSet` events, tags
/// and health in member views, tag and health admin requests (a peer of version 1 could
/// not decode them; it is refused at the handshake instead, with both versions named).
/// 3: anti-entropy opens with a roster [`Frame::Fingerprint`] instead of a full digest, and
/// probe frames carry one-letter tags (`Hello`, `Proof` and `Reject` keep their encoding,
/// so a peer of another version is still told why it is refused).
/// 4: a node checking the cluster's view of its own record opens with [`Frame::Audit`]
/// instead of a full digest.
pub const PROTOCOL_VERSION: u32 = 4;

/// Who is on the other end of a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A cluster member: its id, generation and the address others dial.
    Member {
        id: NodeId,
        generation: Generation,
        addr: String,
    },
    /// An admin client (`gossip-node members ...`): asks, gets an answer, leaves.
    Admin,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// First frame of each side. `nonce` is the challenge the other side must sign.
    Hello {
        protocol: u32,
        cluster: String,
        role: Role,
        nonce: [u8; 32],
        /// The listener's answer to the dialer's nonce (empty without a secret).
        proof: Vec<u8>,
    },
    /// The dialer's answer to the listener's nonce (empty without a secret).
    Proof {
        proof: Vec<u8>,
    },
    /// The handshake failed; the reason is for the log of the other side.
    Reject {
        reason: String,
    },
    /// Dissemination: events that changed our roster.
    Events(Vec<ClusterEvent>),
    /// Anti-entropy, step 0: the fingerprint of my roster
    /// ([`crate::roster::Roster::digest_fingerprint`]). Equal to the receiver's: nothing
    /// more is said. Different: the receiver opens a digest exchange with a `Digest`. A
    /// one-letter tag: this is most of what an idle cluster sends.
    #[serde(rename = "F")]
    Fingerprint(u64),
    /// Anti-entropy, step 1: what I know.
    Digest(Vec<(NodeId, NodeDigest)>),
    /// Anti-entropy, step 2: what you lacked, and what I know (so you can send what I lack).
    Sync {
        delta: Delta,
        digest: Vec<(NodeId, NodeDigest)>,
    },
    /// Anti-entropy, step 3: what the other side lacked. Applied, not re-gossiped.
    Delta(Delta),
    /// Anti-entropy opened by a node that has not yet seen the cluster's view of its own
    /// record (after a start, or when a peer showed a newer one): the fingerprint of its
    /// roster without its own record, and its own digest entry (which claims nothing, so
    /// all of the record comes back). Equal rests: an [`Frame::Audited`] answers with that
    /// one record. Different: the receiver opens a digest exchange with a `Digest`, as for
    /// a `Fingerprint`. A full digest instead would cost every restart in a cluster of
    /// 10,000 several 280 KB frames each way.
    Audit {
        rest: u64,
        own: Option<NodeDigest>,
    },
    /// The answer to an [`Frame::Audit`] whose rest agreed: all the receiver holds of the
    /// auditor's record, and its digest entry of it (`None`: it holds no record of it).
    Audited {
        delta: Delta,
        view: Option<NodeDigest>,
    },
    /// Failure detection: ping, ack, ping-req. A one-letter tag (as its messages'): probes
    /// are the other part of an idle cluster's traffic.
    #[serde(rename = "S")]
    Swim(crate::swim::SwimMsg),
    Admin(AdminRequest),
    AdminReply(AdminReply),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    Members,
    Locate {
        actor: String,
        /// Only hosts whose tags match all of these.
        #[serde(default)]
        tags: Vec<(String, String)>,
        /// Critical hosts too (last).
        #[serde(default)]
        include_critical: bool,
    },
    /// `gossip-node tags set`.
    SetTags {
        tags: Vec<(String, String)>,
    },
    /// `gossip-node tags unset`.
    UnsetTags {
        keys: Vec<String>,
    },
    /// `gossip-node health set`.
    SetHealth {
        actor: String,
        health: crate::health::Health,
        note: String,
    },
    AddActors {
        actors: Vec<String>,
    },
    RemoveActors {
        actors: Vec<String>,
    },
    Status,
    /// Force-leave another member (`gossip-node remove`).
    Remove {
        node: NodeId,
        force: bool,
    },
    /// Leave the cluster gracefully and stop (`gossip-node leave`).
    Leave,
    /// The owners of singleton actors (`gossip-node owner`).
    Owners {
        actors: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminReply {
    /// Part of a `Members` or `Located` answer too large for one frame; more follows. A
    /// member whose actors do not fit one frame is split over consecutive parts (same id,
    /// the rest of its actors): the client joins them.
    Part(Vec<Member>),
    Members(Vec<Member>),
    Located(Vec<Member>),
    /// Actors that changed (already hosted / not hosted ones are left out).
    ActorsChanged {
        changed: Vec<String>,
    },
    Status(Box<Status>),
    /// Tags that changed (keys already so are left out).
    TagsChanged {
        changed: Vec<String>,
    },
    /// Whether the health changed.
    HealthChanged {
        changed: bool,
    },
    /// The member was marked left cluster-wide; the state it had.
    Removed {
        node: NodeId,
        was: crate::event::MemberState,
    },
    /// The leave is durable and sent; the node stops now.
    Left,
    /// Each asked actor with its owner (`None`: no eligible host).
    Owners(Vec<(String, Option<NodeId>)>),
    Error(String),
}

/// The kinds of [`Frame`] that metrics count apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrameKind {
    Handshake,
    Events,
    Fingerprint,
    Digest,
    Sync,
    Delta,
    Audit,
    Ping,
    Ack,
    PingReq,
    IndirectAck,
    Admin,
}

impl FrameKind {
    pub const ALL: [FrameKind; 12] = [
        FrameKind::Handshake,
        FrameKind::Events,
        FrameKind::Fingerprint,
        FrameKind::Digest,
        FrameKind::Sync,
        FrameKind::Delta,
        FrameKind::Audit,
        FrameKind::Ping,
        FrameKind::Ack,
        FrameKind::PingReq,
        FrameKind::IndirectAck,
        FrameKind::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FrameKind::Handshake => "handshake",
            FrameKind::Events => "events",
            FrameKind::Fingerprint => "fingerprint",
            FrameKind::Digest => "digest",
            FrameKind::Sync => "sync",
            FrameKind::Delta => "delta",
            FrameKind::Audit => "audit",
            FrameKind::Ping => "ping",
            FrameKind::Ack => "ack",
            FrameKind::PingReq => "ping_req",
            FrameKind::IndirectAck => "indirect_ack",
            FrameKind::Admin => "admin",
        }
    }
}

/// `gossip-node status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub node_id: NodeId,
    pub generation: Generation,
    pub incarnation: u64,
    pub addr: String,
    pub cluster: String,
    pub alive: usize,
    pub suspect: usize,
    pub dead: usize,
    pub left: usize,
    pub connections: usize,
    /// Gossip, anti-entropy and leave frames sent to members since start, and their bytes.
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub wal_last_lsn: u64,
    pub wal_durable_lsn: u64,
    pub wal_bytes_written: u64,
    pub fsync_policy: String,
    pub snapshot_lsn: u64,
    pub uptime_ms: u64,
    /// Whether this node sees more than half of the largest recent cluster.
    pub in_majority: bool,
    /// Largest recent cluster size (members that did not leave): the quorum base.
    pub largest_cluster: u64,
    /// Lifeguard local health: 0 is healthy; higher stretches our own timeouts.
    pub awareness: u32,
    /// Members alive for the whole stability period.
    pub stable: usize,
    /// Members whose liveness flipped between alive and suspect, with their flip counts.
    pub flapping: Vec<(NodeId, u32)>,
    /// A seed answered (or none was needed): this node is part of a cluster.
    #[serde(default)]
    pub joined: bool,
    #[serde(default)]
    pub counters: StatusCounters,
    /// Why this node is down (the losing side of a partition under split-brain downing).
    #[serde(default)]
    pub down: Option<String>,
}

/// What the node counted since it started (the `/metrics` counters).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounters {
    /// Members this node suspected, declared dead; suspicions of itself it refuted.
    pub suspicions: u64,
    pub declared_dead: u64,
    pub refutations: u64,
    /// Our own record re-announced (a peer did not know it); ids refused as held elsewhere.
    pub reassertions: u64,
    pub refused_ids: u64,
    /// Unreachable members declared dead and forgotten by split-brain downing.
    #[serde(default)]
    pub downed: u64,
    pub probes: crate::swim::ProbeStats,
    pub wal_batches: u64,
    pub wal_fsyncs: u64,
    pub compactions: u64,
    pub handshake_failures: u64,
}

impl Frame {
    /// What kind of frame this is, for metrics (probe messages by their own kind).
    pub fn kind(&self) -> FrameKind {
        use crate::swim::SwimMsg;
        match self {
            Frame::Hello { .. } | Frame::Proof { .. } | Frame::Reject { .. } => {
                FrameKind::Handshake
            }
            Frame::Events(_) => FrameKind::Events,
            Frame::Fingerprint(_) => FrameKind::Fingerprint,
            Frame::Digest(_) => FrameKind::Digest,
            Frame::Sync { .. } => FrameKind::Sync,
            Frame::Delta(_) => FrameKind::Delta,
            Frame::Audit { .. } | Frame::Audited { .. } => FrameKind::Audit,
            Frame::Swim(SwimMsg::Ping { .. }) => FrameKind::Ping,
            Frame::Swim(SwimMsg::Ack { .. }) => FrameKind::Ack,
            Frame::Swim(SwimMsg::PingReq { .. }) => FrameKind::PingReq,
            Frame::Swim(SwimMsg::IndirectAck { .. }) => FrameKind::IndirectAck,
            Frame::Admin(_) | Frame::AdminReply(_) => FrameKind::Admin,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec(self).expect("frames always encode")
    }

    pub fn decode(bytes: &[u8]) -> Result<Frame, String> {
        rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(512) })]
        /// Arbitrary bytes never panic the decoder; they are an error or some frame.
        #[test]
        fn decoding_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = Frame::decode(&bytes);
        }
    }

    #[test]
    fn frames_round_trip() {
        let f = Frame::Events(vec![ClusterEvent::NodeAlive {
            node: NodeId::new("a"),
            generation: 1,
            incarnation: 2,
        }]);
        assert_eq!(Frame::decode(&f.encode()), Ok(f));
    }

    /// Probes and fingerprints are what an idle cluster sends: they stay a few bytes.
    #[test]
    fn idle_frames_are_small() {
        use crate::swim::SwimMsg;
        let ping = Frame::Swim(SwimMsg::Ping { seq: 1_000 }).encode();
        let ack = Frame::Swim(SwimMsg::Ack { seq: 1_000 }).encode();
        let fingerprint = Frame::Fingerprint(u64::MAX).encode();
        assert!(ping.len() <= 10, "ping: {} bytes", ping.len());
        assert!(ack.len() <= 10, "ack: {} bytes", ack.len());
        assert!(
            fingerprint.len() <= 13,
            "fingerprint: {} bytes",
            fingerprint.len()
        );
        for f in [&ping, &ack, &fingerprint] {
            Frame::decode(f).expect("round trip");
        }
    }

    /// A peer of another protocol version still decodes our handshake (to say why it refuses
    /// us): its encoding is not touched by the renames of the hot frames.
    #[test]
    fn the_handshake_keeps_its_encoding() {
        let bytes = Frame::Reject { reason: "x".into() }.encode();
        assert_eq!(&bytes[..8], b"\x81\xa6Reject");
    }
}
