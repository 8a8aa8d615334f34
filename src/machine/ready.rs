//! What goes into the machine besides frames and ticks, and what comes out of it.
//!
//! Every input leaves its outputs in one [`Ready`] that the caller takes with
//! [`Machine::take_ready`](super::Machine::take_ready) and carries out in order: append the
//! records to the WAL first, then send the frames, complete the replies, publish the
//! notifications. What may only leave once durable (our own record's changes, the replies
//! and notifications of any change) the machine holds back itself until
//! [`Machine::handle_durable`](super::Machine::handle_durable) says so.

use crate::event::{ClusterEvent, MemberState, NodeId};
use crate::health::{Health, HealthError};
use crate::local::Identity;
use crate::message::{Frame, FrameKind};
use crate::names::NameError;
use crate::quorum::Quorum;
use crate::tags::TagError;
use std::sync::Arc;
use std::time::Duration;

/// A caller's handle for a command's reply (chosen by the caller, echoed back).
pub type Token = u64;

/// A frame encoded once, shared by every target it goes to, with its kind (for metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wire {
    bytes: Arc<Vec<u8>>,
    pub kind: FrameKind,
}

impl Wire {
    pub fn new(frame: &Frame) -> Wire {
        Wire {
            bytes: Arc::new(frame.encode()),
            kind: frame.kind(),
        }
    }
}

impl std::ops::Deref for Wire {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Local commands: what the embedding application or an admin client asks of this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Host these actors here (already hosted ones are left alone).
    AddActors(Vec<String>),
    /// Stop hosting these actors (ones not hosted are left alone).
    RemoveActors(Vec<String>),
    /// Set these tags of ours (all checked first; the resulting set within the limits).
    SetTags(Vec<(String, String)>),
    /// Unset these tags of ours (ones we do not carry are left alone).
    UnsetTags(Vec<String>),
    /// Set the health of an actor we host.
    SetHealth {
        actor: String,
        health: Health,
        note: String,
    },
    /// The actor turns critical unless [`Command::PassTtl`] comes within `ttl` of now (and
    /// of every renewal); `None` drops the TTL. Kept in the machine only, not durable.
    SetHealthTtl {
        actor: String,
        ttl: Option<Duration>,
    },
    /// Renews an actor's TTL and sets it passing.
    PassTtl(String),
    /// Announce a graceful leave: final for this generation.
    Leave,
    /// An operator's force-leave of another member: it is marked `left` cluster-wide, so it
    /// is no longer probed or counted in the quorum. Refused for a member not dead unless
    /// `force` (a live one then comes back under a new generation, as after a restart).
    Remove { node: NodeId, force: bool },
}

/// The answer to a [`Command`], once what it changed is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The actors that changed (already hosted / not hosted ones left out).
    ActorsChanged(Vec<String>),
    /// A name broke the rules; nothing was changed.
    InvalidName(NameError),
    /// The tags that changed (keys already so left out).
    TagsChanged(Vec<String>),
    /// A tag broke the rules or the limits; nothing was changed.
    InvalidTag(TagError),
    /// Whether the health changed (or the TTL was set / dropped / renewed).
    HealthChanged(bool),
    /// A health change was refused; nothing was changed.
    InvalidHealth(HealthError),
    /// The leave is durable and on its way to peers.
    Left,
    /// The member is marked left (durably) and the news is on its way; `was` is the state
    /// it had.
    Removed { node: NodeId, was: MemberState },
    /// Nothing was changed, for this reason.
    Refused(String),
}

/// Where a frame goes: a member (over its connection, dialing `addr` if there is none) or
/// an address we know nothing else of (a seed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dest {
    pub id: Option<NodeId>,
    pub addr: Option<String>,
}

impl Dest {
    pub fn member(id: &NodeId, addr: &str) -> Dest {
        Dest {
            id: Some(id.clone()),
            addr: (!addr.is_empty()).then(|| addr.to_owned()),
        }
    }

    /// Back to `id` over the connection its frame came on (no dial if it is gone).
    pub fn back(id: &NodeId) -> Dest {
        Dest {
            id: Some(id.clone()),
            addr: None,
        }
    }

    pub fn addr(addr: &str) -> Dest {
        Dest {
            id: None,
            addr: Some(addr.to_owned()),
        }
    }
}

/// One frame to one destination. Probe traffic (`probe`) is sent ahead of everything else.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub to: Dest,
    pub wire: Wire,
    pub probe: bool,
}

/// A change of the roster as subscribers see it: the event and, for liveness events
/// (`NodeSuspected`, `NodeDead`, `NodeLeft`, `NodeAlive`), the actors its node hosts: what
/// an actor system may have to re-home. Empty for data events, which name their actor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembershipChange {
    pub event: ClusterEvent,
    pub actors: Vec<String>,
}

/// Why the machine wants the node to stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Our id is held by another live process (another data dir); a peer told us so.
    IdInUse { peer_said: String },
}

/// Everything one or more inputs produced, in the order it must be carried out.
#[derive(Debug, Default)]
pub struct Ready {
    /// Records to append to the WAL, in order: they take the next LSNs.
    pub append: Vec<ClusterEvent>,
    /// Frames to send now.
    pub send: Vec<Outgoing>,
    pub replies: Vec<(Token, Reply)>,
    pub notifications: Vec<MembershipChange>,
    /// The quorum, when it changed.
    pub quorum: Option<Quorum>,
    /// Our identity changed (a new generation): store it, for the next start and status.
    pub identity: Option<Identity>,
    pub stop: Option<Stop>,
    /// Split-brain downing changed its verdict: `Some(reason)` this node is down now,
    /// `None` it is up again.
    pub down: Option<Option<String>>,
    /// Singletons that moved (see [`crate::owner`]), once what moved them is durable.
    pub owner_changes: Vec<crate::owner::OwnerChanged>,
}
