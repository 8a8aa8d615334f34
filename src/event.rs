//! The vocabulary of the roster: ids, versions, liveness, and the events that change them.
//!
//! Every event names the node it is about and that node's `generation`. Data events
//! (`NewNode`, `ActorAdded`, `ActorRemoved`, `TagSet`, `HealthSet`) are written only by the
//! node they describe and
//! carry its `version`; liveness events carry a SWIM `incarnation`. See `roster.rs` for how
//! they merge.

use crate::health::Health;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// A node's name in the cluster. Stable across restarts that keep the data dir.
///
/// Shared, not owned: every event, map key, probe and member view names a node, and a
/// roster of N members is referenced from that many places on each of N nodes. A clone is
/// a reference count, not an allocation. A thin pointer (the length lives with the text):
/// 8 bytes, not `Arc<str>`'s 16, in each of those places. On the wire and on disk it is a
/// plain string.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(arcstr::ArcStr);

const _: () = assert!(std::mem::size_of::<NodeId>() == 8);

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Decodes straight from the borrowed bytes into the shared string: one allocation per id
/// (serde's own `Arc<str>` would go through `String` and `Box<str>`: three, which cost replay
/// a third of its speed).
impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = NodeId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a node id (string)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<NodeId, E> {
                Ok(NodeId::new(v))
            }
        }
        d.deserialize_str(Visitor)
    }
}

impl NodeId {
    pub fn new(id: impl Into<arcstr::ArcStr>) -> Self {
        NodeId(id.into())
    }

    /// A fresh random id (`n-` and 12 hex digits), used when none is given.
    pub fn random() -> Self {
        NodeId::new(format!(
            "n-{:012x}",
            rand::random::<u64>() & 0xffff_ffff_ffff
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Changes only when a node starts over without its data dir. A higher generation replaces
/// everything known about the node's earlier life. We use the unix time in ms at creation.
pub type Generation = u64;
/// Grows with every change a node makes to its own record (address, actors).
pub type Version = u64;
/// SWIM incarnation: only the node itself raises it, to refute suspicion.
pub type Incarnation = u64;
/// Log sequence number of a WAL record: dense, starting at 1.
pub type Lsn = u64;

/// The liveness of a member as one node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Alive,
    Suspect,
    Dead,
    Left,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
        }
    }

    /// Dead and left members are kept only as tombstones.
    pub fn is_tombstone(self) -> bool {
        matches!(self, MemberState::Dead | MemberState::Left)
    }
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change to the roster. The variants are the unit of the WAL and of gossip.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ClusterEvent {
    /// A node announces itself: its address and the actors it hosts at `version`.
    NewNode {
        node: NodeId,
        generation: Generation,
        version: Version,
        addr: String,
        actors: BTreeSet<String>,
    },
    ActorAdded {
        node: NodeId,
        generation: Generation,
        version: Version,
        actor: String,
    },
    ActorRemoved {
        node: NodeId,
        generation: Generation,
        version: Version,
        actor: String,
    },
    /// A node's tag `key` set to `value`, or removed (`None`).
    TagSet {
        node: NodeId,
        generation: Generation,
        version: Version,
        key: String,
        value: Option<String>,
    },
    /// The health of an actor the node hosts. An add or removal of the actor at a higher
    /// version supersedes it (a re-added actor starts passing).
    HealthSet {
        node: NodeId,
        generation: Generation,
        version: Version,
        actor: String,
        health: Health,
        note: String,
    },
    /// `by` is the member whose probe failed (when known): independent suspicions of the
    /// same incarnation confirm each other and shorten the suspicion (Lifeguard). It plays
    /// no part in the merge.
    NodeSuspected {
        node: NodeId,
        generation: Generation,
        incarnation: Incarnation,
        #[serde(default)]
        by: Option<NodeId>,
    },
    NodeAlive {
        node: NodeId,
        generation: Generation,
        incarnation: Incarnation,
    },
    NodeDead {
        node: NodeId,
        generation: Generation,
        incarnation: Incarnation,
    },
    /// A graceful leave; final for this generation.
    NodeLeft {
        node: NodeId,
        generation: Generation,
        incarnation: Incarnation,
    },
}

impl ClusterEvent {
    /// The node this event is about.
    pub fn node(&self) -> &NodeId {
        match self {
            ClusterEvent::NewNode { node, .. }
            | ClusterEvent::ActorAdded { node, .. }
            | ClusterEvent::ActorRemoved { node, .. }
            | ClusterEvent::TagSet { node, .. }
            | ClusterEvent::HealthSet { node, .. }
            | ClusterEvent::NodeSuspected { node, .. }
            | ClusterEvent::NodeAlive { node, .. }
            | ClusterEvent::NodeDead { node, .. }
            | ClusterEvent::NodeLeft { node, .. } => node,
        }
    }

    pub fn generation(&self) -> Generation {
        match self {
            ClusterEvent::NewNode { generation, .. }
            | ClusterEvent::ActorAdded { generation, .. }
            | ClusterEvent::ActorRemoved { generation, .. }
            | ClusterEvent::TagSet { generation, .. }
            | ClusterEvent::HealthSet { generation, .. }
            | ClusterEvent::NodeSuspected { generation, .. }
            | ClusterEvent::NodeAlive { generation, .. }
            | ClusterEvent::NodeDead { generation, .. }
            | ClusterEvent::NodeLeft { generation, .. } => *generation,
        }
    }

    /// `ActorAdded` (`present`) or `ActorRemoved` of `actor` on `node`.
    pub fn actor_change(
        node: NodeId,
        generation: Generation,
        version: Version,
        actor: String,
        present: bool,
    ) -> ClusterEvent {
        if present {
            ClusterEvent::ActorAdded {
                node,
                generation,
                version,
                actor,
            }
        } else {
            ClusterEvent::ActorRemoved {
                node,
                generation,
                version,
                actor,
            }
        }
    }

    /// Whether the event is about a node's data (address, actors, tags, health) rather than
    /// its liveness.
    pub fn is_data(&self) -> bool {
        matches!(
            self,
            ClusterEvent::NewNode { .. }
                | ClusterEvent::ActorAdded { .. }
                | ClusterEvent::ActorRemoved { .. }
                | ClusterEvent::TagSet { .. }
                | ClusterEvent::HealthSet { .. }
        )
    }

    /// The owner version of a data event.
    pub fn version(&self) -> Option<Version> {
        match self {
            ClusterEvent::NewNode { version, .. }
            | ClusterEvent::ActorAdded { version, .. }
            | ClusterEvent::ActorRemoved { version, .. }
            | ClusterEvent::TagSet { version, .. }
            | ClusterEvent::HealthSet { version, .. } => Some(*version),
            _ => None,
        }
    }

    /// The event's name as it appears in `gossip-log dump`.
    pub fn kind(&self) -> &'static str {
        match self {
            ClusterEvent::NewNode { .. } => "NewNode",
            ClusterEvent::ActorAdded { .. } => "ActorAdded",
            ClusterEvent::ActorRemoved { .. } => "ActorRemoved",
            ClusterEvent::TagSet { .. } => "TagSet",
            ClusterEvent::HealthSet { .. } => "HealthSet",
            ClusterEvent::NodeSuspected { .. } => "NodeSuspected",
            ClusterEvent::NodeAlive { .. } => "NodeAlive",
            ClusterEvent::NodeDead { .. } => "NodeDead",
            ClusterEvent::NodeLeft { .. } => "NodeLeft",
        }
    }

    /// The event as one flat JSON object: `kind` plus its fields.
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::json;
        let mut m = serde_json::Map::new();
        m.insert("kind".into(), json!(self.kind()));
        m.insert("node".into(), json!(self.node().as_str()));
        m.insert("generation".into(), json!(self.generation()));
        match self {
            ClusterEvent::NewNode {
                version,
                addr,
                actors,
                ..
            } => {
                m.insert("version".into(), json!(version));
                m.insert("addr".into(), json!(addr));
                m.insert("actors".into(), json!(actors));
            }
            ClusterEvent::ActorAdded { version, actor, .. }
            | ClusterEvent::ActorRemoved { version, actor, .. } => {
                m.insert("version".into(), json!(version));
                m.insert("actor".into(), json!(actor));
            }
            ClusterEvent::TagSet {
                version,
                key,
                value,
                ..
            } => {
                m.insert("version".into(), json!(version));
                m.insert("key".into(), json!(key));
                m.insert("value".into(), json!(value));
            }
            ClusterEvent::HealthSet {
                version,
                actor,
                health,
                note,
                ..
            } => {
                m.insert("version".into(), json!(version));
                m.insert("actor".into(), json!(actor));
                m.insert("health".into(), json!(health));
                m.insert("note".into(), json!(note));
            }
            ClusterEvent::NodeSuspected {
                incarnation, by, ..
            } => {
                m.insert("incarnation".into(), json!(incarnation));
                if let Some(by) = by {
                    m.insert("by".into(), json!(by.as_str()));
                }
            }
            ClusterEvent::NodeAlive { incarnation, .. }
            | ClusterEvent::NodeDead { incarnation, .. }
            | ClusterEvent::NodeLeft { incarnation, .. } => {
                m.insert("incarnation".into(), json!(incarnation));
            }
        }
        m
    }
}

impl fmt::Display for ClusterEvent {
    /// One human line: `Kind node=.. gen=.. field=..`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} node={} gen={}",
            self.kind(),
            self.node(),
            self.generation()
        )?;
        match self {
            ClusterEvent::NewNode {
                version,
                addr,
                actors,
                ..
            } => {
                let actors: Vec<&str> = actors.iter().map(String::as_str).collect();
                write!(
                    f,
                    " version={version} addr={addr} actors=[{}]",
                    actors.join(",")
                )
            }
            ClusterEvent::ActorAdded { version, actor, .. }
            | ClusterEvent::ActorRemoved { version, actor, .. } => {
                write!(f, " version={version} actor={actor}")
            }
            ClusterEvent::TagSet {
                version,
                key,
                value: Some(value),
                ..
            } => write!(f, " version={version} key={key} value={value:?}"),
            ClusterEvent::TagSet { version, key, .. } => {
                write!(f, " version={version} key={key} unset")
            }
            ClusterEvent::HealthSet {
                version,
                actor,
                health,
                note,
                ..
            } => write!(
                f,
                " version={version} actor={actor} health={health} note={note:?}"
            ),
            ClusterEvent::NodeSuspected {
                incarnation,
                by: Some(by),
                ..
            } => write!(f, " incarnation={incarnation} by={by}"),
            ClusterEvent::NodeSuspected { incarnation, .. }
            | ClusterEvent::NodeAlive { incarnation, .. }
            | ClusterEvent::NodeDead { incarnation, .. }
            | ClusterEvent::NodeLeft { incarnation, .. } => write!(f, " incarnation={incarnation}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_and_health_events_print_as_one_line_and_flat_json() {
        let node = NodeId::new("a");
        let set = ClusterEvent::TagSet {
            node: node.clone(),
            generation: 1,
            version: 2,
            key: "zone".into(),
            value: Some("eu 1".into()),
        };
        let unset = ClusterEvent::TagSet {
            node: node.clone(),
            generation: 1,
            version: 3,
            key: "zone".into(),
            value: None,
        };
        let health = ClusterEvent::HealthSet {
            node,
            generation: 1,
            version: 4,
            actor: "svc".into(),
            health: Health::Critical,
            note: "disk full".into(),
        };
        assert_eq!(
            set.to_string(),
            "TagSet node=a gen=1 version=2 key=zone value=\"eu 1\""
        );
        assert_eq!(
            unset.to_string(),
            "TagSet node=a gen=1 version=3 key=zone unset"
        );
        assert_eq!(
            health.to_string(),
            "HealthSet node=a gen=1 version=4 actor=svc health=critical note=\"disk full\""
        );
        let j = serde_json::Value::Object(health.to_json());
        assert_eq!(j["health"], "critical");
        assert_eq!(j["note"], "disk full");
        assert_eq!(
            serde_json::Value::Object(unset.to_json())["value"],
            serde_json::Value::Null
        );
        assert!(set.is_data() && health.is_data());
        assert_eq!(health.version(), Some(4));
    }
}
