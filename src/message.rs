//! The wire protocol: every WebSocket binary frame is one rmp-serde [`Frame`].
//!
//! A connection starts with a handshake (`Hello` both ways, then `Proof` from the dialer when
//! a secret is set); only then are gossip or admin frames accepted. See `transport.rs`.

use crate::event::{ClusterEvent, Generation, NodeId};
use crate::gossip::Delta;
use crate::roster::{Member, NodeDigest};
use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change of [`Frame`].
pub const PROTOCOL_VERSION: u32 = 1;

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
    /// Anti-entropy, step 1: what I know.
    Digest(Vec<(NodeId, NodeDigest)>),
    /// Anti-entropy, step 2: what you lacked, and what I know (so you can send what I lack).
    Sync {
        delta: Delta,
        digest: Vec<(NodeId, NodeDigest)>,
    },
    /// Anti-entropy, step 3: what the other side lacked. Applied, not re-gossiped.
    Delta(Delta),
    /// Failure detection: ping, ack, ping-req.
    Swim(crate::swim::SwimMsg),
    Admin(AdminRequest),
    AdminReply(AdminReply),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    Members,
    Locate { actor: String },
    AddActors { actors: Vec<String> },
    RemoveActors { actors: Vec<String> },
    Status,
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
    Error(String),
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
}

impl Frame {
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
}
