//! The JSON shapes the dashboard page reads: kept compact because a roster of 1,000 members
//! and 100,000 actors is sent whole to every page that opens.

use crate::event::{ClusterEvent, NodeId};
use crate::health::Health;
use crate::message::Status;
use crate::owner::OwnerChanged;
use crate::roster::Member;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// One member as the dashboard shows it (built on the driver, see `Node::member_details`).
#[derive(Clone, Debug)]
pub struct MemberDetail {
    pub member: Member,
    /// Alive for the whole stability period; `None` for this node itself (it does not
    /// probe itself).
    pub stable: Option<bool>,
    /// Alive <-> suspect flips seen (flapping when above 0).
    pub flips: u32,
    /// For each of `member.actors`, whether this member owns it (as announced).
    pub owned: Vec<bool>,
}

fn health_code(h: Health) -> u8 {
    match h {
        Health::Passing => 0,
        Health::Warning => 1,
        Health::Critical => 2,
    }
}

impl MemberDetail {
    /// `actors` is `[[name, health 0|1|2, owned 0|1], ...]`; `notes` only the non-empty
    /// health notes, by actor.
    pub fn to_json(&self) -> Value {
        let m = &self.member;
        let mut notes = serde_json::Map::new();
        let actors: Vec<Value> = m
            .actors
            .iter()
            .zip(&self.owned)
            .map(|(a, owned)| {
                let h = m.health.get(a);
                if let Some(h) = h.filter(|h| !h.note.is_empty()) {
                    notes.insert(a.clone(), json!(h.note));
                }
                json!([a, h.map_or(0, |h| health_code(h.status)), u8::from(*owned)])
            })
            .collect();
        json!({
            "id": m.id.as_str(),
            "addr": m.addr,
            "state": m.state.as_str(),
            "generation": m.generation,
            "incarnation": m.incarnation,
            "version": m.version,
            "stable": self.stable,
            "flips": self.flips,
            "tags": m.tags,
            "actors": actors,
            "notes": notes,
        })
    }
}

/// One line of the feed of membership changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedEntry {
    /// Unix time in ms when this node learned it.
    pub at_ms: u64,
    /// join, suspect, refute, alive, dead, leave, owner.
    pub kind: &'static str,
    pub node: Option<NodeId>,
    pub text: String,
}

impl FeedEntry {
    pub fn to_json(&self) -> Value {
        json!({
            "t": self.at_ms,
            "kind": self.kind,
            "node": self.node.as_ref().map(NodeId::as_str),
            "text": self.text,
        })
    }
}

/// The liveness a feed line needs to tell a refutation from a join: what the previous
/// event about the node said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    Alive,
    Suspect,
    Gone,
}

/// The feed line of a membership change, if it is one the feed shows (liveness and joins;
/// actor, tag and health changes show in the lists instead). `before` is the node's last
/// seen liveness and generation.
pub fn feed_line(
    event: &ClusterEvent,
    before: Option<(Seen, u64)>,
    at_ms: u64,
) -> Option<FeedEntry> {
    let node = event.node().clone();
    let (kind, text) = match event {
        ClusterEvent::NewNode { addr, .. } => match before {
            Some((_, generation)) if generation == event.generation() => return None,
            Some(_) => (
                "join",
                format!("{node} rejoined as a new generation at {addr}"),
            ),
            None => ("join", format!("{node} joined at {addr}")),
        },
        ClusterEvent::NodeSuspected {
            incarnation, by, ..
        } => (
            "suspect",
            match by {
                Some(by) => format!("{node} suspected (incarnation {incarnation}, by {by})"),
                None => format!("{node} suspected (incarnation {incarnation})"),
            },
        ),
        ClusterEvent::NodeAlive { incarnation, .. } => match before {
            Some((Seen::Suspect, _)) => (
                "refute",
                format!("{node} refuted the suspicion (incarnation {incarnation})"),
            ),
            Some((Seen::Gone, _)) => ("alive", format!("{node} is alive again")),
            _ => return None,
        },
        ClusterEvent::NodeDead { incarnation, .. } => (
            "dead",
            format!("{node} declared dead (incarnation {incarnation})"),
        ),
        ClusterEvent::NodeLeft { .. } => ("leave", format!("{node} left")),
        _ => return None,
    };
    Some(FeedEntry {
        at_ms,
        kind,
        node: Some(node),
        text,
    })
}

/// The liveness an event leaves its node in, for [`feed_line`]'s next call.
pub fn seen_after(event: &ClusterEvent) -> Option<Seen> {
    match event {
        ClusterEvent::NewNode { .. } | ClusterEvent::NodeAlive { .. } => Some(Seen::Alive),
        ClusterEvent::NodeSuspected { .. } => Some(Seen::Suspect),
        ClusterEvent::NodeDead { .. } | ClusterEvent::NodeLeft { .. } => Some(Seen::Gone),
        _ => None,
    }
}

/// Feed lines for owner moves gathered over one flush: one line per single move, one per
/// (from, to) pair when many moved together (a death moves thousands at once).
pub fn owner_lines(moves: &[OwnerChanged], at_ms: u64) -> Vec<FeedEntry> {
    let name = |n: &Option<NodeId>| n.as_ref().map_or("none".to_owned(), |n| n.to_string());
    let mut groups: BTreeMap<(String, String), Vec<&OwnerChanged>> = BTreeMap::new();
    for m in moves {
        groups
            .entry((name(&m.from), name(&m.to)))
            .or_default()
            .push(m);
    }
    groups
        .into_iter()
        .map(|((from, to), list)| {
            let text = if let [one] = list.as_slice() {
                format!("owner of {}: {from} → {to}", one.actor)
            } else {
                let some: Vec<&str> = list.iter().take(3).map(|m| m.actor.as_str()).collect();
                format!(
                    "{} singletons moved {from} → {to} ({}, …)",
                    list.len(),
                    some.join(", ")
                )
            };
            FeedEntry {
                at_ms,
                kind: "owner",
                node: list[0].to.clone().or_else(|| list[0].from.clone()),
                text,
            }
        })
        .collect()
}

/// The figures of one time-series point: cumulative counters, the page takes rates.
pub fn sample(status: &Status, received: (u64, u64), at_ms: u64) -> Value {
    json!({
        "t": at_ms,
        "frames_sent": status.frames_sent,
        "bytes_sent": status.bytes_sent,
        "frames_received": received.0,
        "bytes_received": received.1,
        "wal_bytes": status.wal_bytes_written,
        "wal_lsn": status.wal_last_lsn,
        "wal_fsyncs": status.counters.wal_fsyncs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s)
    }

    #[test]
    fn the_feed_tells_joins_suspicions_refutations_and_deaths_apart() {
        let new = ClusterEvent::NewNode {
            node: id("b"),
            generation: 7,
            version: 1,
            addr: "ws://x:1".into(),
            actors: Default::default(),
        };
        assert_eq!(feed_line(&new, None, 1).unwrap().kind, "join");
        assert!(
            feed_line(&new, Some((Seen::Alive, 7)), 1).is_none(),
            "an address change is no join"
        );
        assert!(feed_line(&new, Some((Seen::Gone, 6)), 1)
            .unwrap()
            .text
            .contains("new generation"));
        let sus = ClusterEvent::NodeSuspected {
            node: id("b"),
            generation: 7,
            incarnation: 2,
            by: Some(id("a")),
        };
        let line = feed_line(&sus, Some((Seen::Alive, 7)), 5).unwrap();
        assert_eq!((line.kind, line.at_ms), ("suspect", 5));
        assert!(line.text.contains("by a"), "{}", line.text);
        let alive = ClusterEvent::NodeAlive {
            node: id("b"),
            generation: 7,
            incarnation: 3,
        };
        assert_eq!(
            feed_line(&alive, Some((Seen::Suspect, 7)), 1).unwrap().kind,
            "refute"
        );
        assert!(feed_line(&alive, Some((Seen::Alive, 7)), 1).is_none());
        let dead = ClusterEvent::NodeDead {
            node: id("b"),
            generation: 7,
            incarnation: 3,
        };
        assert_eq!(feed_line(&dead, None, 1).unwrap().kind, "dead");
        assert_eq!(seen_after(&dead), Some(Seen::Gone));
        let actor = ClusterEvent::ActorAdded {
            node: id("b"),
            generation: 7,
            version: 2,
            actor: "x".into(),
        };
        assert!(feed_line(&actor, None, 1).is_none());
        assert_eq!(seen_after(&actor), None);
    }

    #[test]
    fn many_owner_moves_between_two_nodes_are_one_line() {
        let mv = |actor: &str, from: Option<&str>, to: Option<&str>| OwnerChanged {
            actor: actor.into(),
            from: from.map(id),
            to: to.map(id),
        };
        let moves: Vec<OwnerChanged> = (0..1000)
            .map(|i| mv(&format!("a{i}"), Some("c"), Some("b")))
            .chain([mv("solo", None, Some("a"))])
            .collect();
        let lines = owner_lines(&moves, 9);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].text, "1000 singletons moved c → b (a0, a1, a2, …)");
        assert_eq!(lines[1].text, "owner of solo: none → a");
        assert_eq!(lines[1].node, Some(id("a")));
    }

    #[test]
    fn a_member_is_sent_with_health_codes_owner_flags_and_notes() {
        use crate::health::ActorHealth;
        let member = Member {
            id: id("a"),
            addr: "ws://127.0.0.1:1".into(),
            state: crate::event::MemberState::Suspect,
            actors: vec!["x".into(), "y".into()],
            incarnation: 3,
            generation: 4,
            version: 5,
            tags: [("zone".to_owned(), "eu".to_owned())].into(),
            health: [(
                "y".to_owned(),
                ActorHealth {
                    status: Health::Critical,
                    note: "disk".into(),
                },
            )]
            .into(),
        };
        let j = MemberDetail {
            member,
            stable: Some(false),
            flips: 2,
            owned: vec![true, false],
        }
        .to_json();
        assert_eq!(j["state"], "suspect");
        assert_eq!(j["actors"], json!([["x", 0, 1], ["y", 2, 0]]));
        assert_eq!(j["notes"], json!({"y": "disk"}));
        assert_eq!(j["tags"]["zone"], "eu");
        assert_eq!(j["flips"], 2);
    }
}
