//! The one task that feeds every open dashboard: it follows the node's membership changes
//! and owner moves, keeps the recent feed and time series, and pushes to each page a
//! snapshot first, then patches (changed members, new feed lines, figures) in order. One
//! task, so a page never sees a patch older than its snapshot.

use super::view::{self, FeedEntry, Seen};
use crate::event::NodeId;
use crate::node::Node;
use crate::owner::OwnerChanged;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Feed lines kept for a page opened later.
const FEED_KEEP: usize = 500;
/// Time-series points kept: five minutes at one point per [`STATS_EVERY`].
const SERIES_KEEP: usize = 150;
const STATS_EVERY: Duration = Duration::from_secs(2);
/// Changes are gathered this long and sent as one patch: a storm of changes costs a page
/// a few patches a second, not one per change.
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// Messages queued for one page; a page that falls this far behind is dropped (its
/// EventSource reconnects and starts again from a snapshot).
const PAGE_QUEUE: usize = 64;

/// One message to a page: a JSON object with a `type` (snapshot, members, feed, stats).
pub(crate) type Message = Arc<str>;

/// A handle to the hub task: pages join through it.
#[derive(Clone)]
pub(crate) struct Hub {
    join: mpsc::Sender<oneshot::Sender<mpsc::Receiver<Message>>>,
}

impl Hub {
    /// Starts the hub; it ends with `cancel` or when the node stops.
    pub(crate) fn spawn(node: Node, cancel: CancellationToken) -> Hub {
        let (join, joins) = mpsc::channel(16);
        tokio::spawn(run(node, cancel, joins));
        Hub { join }
    }

    /// A new page's stream: a snapshot, then patches. `None` when the hub is gone.
    pub(crate) async fn join(&self) -> Option<mpsc::Receiver<Message>> {
        let (tx, rx) = oneshot::channel();
        self.join.send(tx).await.ok()?;
        rx.await.ok()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn message(v: &Value) -> Message {
    Arc::from(v.to_string())
}

struct State {
    node: Node,
    pages: Vec<mpsc::Sender<Message>>,
    feed: VecDeque<FeedEntry>,
    new_feed: Vec<FeedEntry>,
    series: VecDeque<Value>,
    /// Members changed since the last patch.
    dirty: BTreeSet<NodeId>,
    /// A subscription lagged: the next patch is every member.
    resend_all: bool,
    owner_moves: Vec<OwnerChanged>,
    /// Members the pages were last told about.
    shown: HashSet<NodeId>,
    /// Liveness and generation per node, from the events (for feed lines).
    seen: HashMap<NodeId, (Seen, u64)>,
    /// Detector view per node (stable, flips), to notice a member turning stable.
    detector: HashMap<NodeId, (bool, u32)>,
    last_status: Value,
}

async fn run(
    node: Node,
    cancel: CancellationToken,
    mut joins: mpsc::Receiver<oneshot::Sender<mpsc::Receiver<Message>>>,
) {
    let mut changes = node.subscribe();
    let mut owners = node.subscribe_owners();
    let mut s = State {
        node,
        pages: Vec::new(),
        feed: VecDeque::new(),
        new_feed: Vec::new(),
        series: VecDeque::new(),
        dirty: BTreeSet::new(),
        resend_all: false,
        owner_moves: Vec::new(),
        shown: HashSet::new(),
        seen: HashMap::new(),
        detector: HashMap::new(),
        last_status: Value::Null,
    };
    if let Ok(members) = s.node.member_details(None).await {
        for d in members {
            let seen = match d.member.state {
                crate::MemberState::Alive => Seen::Alive,
                crate::MemberState::Suspect => Seen::Suspect,
                _ => Seen::Gone,
            };
            s.seen
                .insert(d.member.id.clone(), (seen, d.member.generation));
        }
    }
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    let mut stats = tokio::time::interval(STATS_EVERY);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(reply) = joins.recv() => s.join(reply).await,
            change = changes.recv() => match change {
                Ok(c) => s.on_change(&c.event),
                Err(broadcast::error::RecvError::Lagged(n)) => s.lagged(n, "membership changes"),
                Err(broadcast::error::RecvError::Closed) => break,
            },
            moved = owners.recv() => match moved {
                Ok(o) => s.on_owner(o),
                Err(broadcast::error::RecvError::Lagged(n)) => s.lagged(n, "owner changes"),
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = flush.tick() => s.flush().await,
            _ = stats.tick() => s.stats(true).await,
        }
        if s.node.stop_reason().is_some() {
            break;
        }
    }
}

impl State {
    fn on_change(&mut self, event: &crate::ClusterEvent) {
        let node = event.node().clone();
        let before = self.seen.get(&node).copied();
        if let Some(line) = view::feed_line(event, before, now_ms()) {
            self.new_feed.push(line);
        }
        if let Some(seen) = view::seen_after(event) {
            self.seen.insert(node.clone(), (seen, event.generation()));
        }
        self.dirty.insert(node);
    }

    fn on_owner(&mut self, moved: OwnerChanged) {
        self.dirty.extend(moved.from.iter().cloned());
        self.dirty.extend(moved.to.iter().cloned());
        self.owner_moves.push(moved);
    }

    fn lagged(&mut self, missed: u64, what: &str) {
        self.resend_all = true;
        self.new_feed.push(FeedEntry {
            at_ms: now_ms(),
            kind: "note",
            node: None,
            text: format!("the dashboard missed {missed} {what}; members re-read"),
        });
    }

    /// Sends to every page; drops those that fell behind or went away.
    fn send(&mut self, msg: &Message) {
        self.pages.retain(|p| p.try_send(msg.clone()).is_ok());
    }

    async fn join(&mut self, reply: oneshot::Sender<mpsc::Receiver<Message>>) {
        let (tx, rx) = mpsc::channel(PAGE_QUEUE);
        // Pending changes go out first to the pages already open; the new page's snapshot
        // includes them.
        self.flush().await;
        let members = match self.node.member_details(None).await {
            Ok(m) => m,
            Err(_) => return,
        };
        self.shown = members.iter().map(|d| d.member.id.clone()).collect();
        if let Ok(health) = self.node.detector_health().await {
            self.detector = health
                .into_iter()
                .map(|h| (h.id, (h.stable, h.flips)))
                .collect();
        }
        if self.last_status.is_null() {
            self.stats(true).await;
        }
        let snapshot = json!({
            "type": "snapshot",
            "self": {
                "id": self.node.id().as_str(),
                "addr": self.node.addr(),
                "generation": self.node.generation(),
            },
            "status": self.last_status,
            "members": members.iter().map(view::MemberDetail::to_json).collect::<Vec<_>>(),
            "feed": self.feed.iter().map(FeedEntry::to_json).collect::<Vec<_>>(),
            "series": self.series,
        });
        if tx.try_send(message(&snapshot)).is_ok() && reply.send(rx).is_ok() {
            self.pages.push(tx);
        }
    }

    async fn flush(&mut self) {
        if !self.owner_moves.is_empty() {
            let moves = std::mem::take(&mut self.owner_moves);
            self.new_feed.extend(view::owner_lines(&moves, now_ms()));
        }
        if !self.new_feed.is_empty() {
            let lines = std::mem::take(&mut self.new_feed);
            // A liveness change moves the counts and the quorum: show them now, not at the
            // next tick.
            if lines.iter().any(|l| l.kind != "owner") && !self.pages.is_empty() {
                self.stats(false).await;
            }
            let msg = json!({
                "type": "feed",
                "entries": lines.iter().map(FeedEntry::to_json).collect::<Vec<_>>(),
            });
            self.feed.extend(lines);
            while self.feed.len() > FEED_KEEP {
                self.feed.pop_front();
            }
            self.send(&message(&msg));
        }
        if self.pages.is_empty() {
            // A page that opens later gets a fresh snapshot.
            self.dirty.clear();
            self.resend_all = false;
            return;
        }
        if !self.resend_all && self.dirty.is_empty() {
            return;
        }
        let asked: Option<Vec<NodeId>> = if self.resend_all {
            None
        } else {
            Some(std::mem::take(&mut self.dirty).into_iter().collect())
        };
        self.resend_all = false;
        self.dirty.clear();
        let Ok(members) = self.node.member_details(asked.clone()).await else {
            return;
        };
        let present: HashSet<NodeId> = members.iter().map(|d| d.member.id.clone()).collect();
        let removed: Vec<NodeId> = match asked {
            None => self.shown.difference(&present).cloned().collect(),
            Some(ids) => ids.into_iter().filter(|id| !present.contains(id)).collect(),
        };
        for id in &removed {
            self.shown.remove(id);
        }
        self.shown.extend(present);
        let msg = json!({
            "type": "members",
            "members": members.iter().map(view::MemberDetail::to_json).collect::<Vec<_>>(),
            "removed": removed.iter().map(NodeId::as_str).collect::<Vec<_>>(),
        });
        self.send(&message(&msg));
    }

    /// The status to every page, with a new time-series point when `sample` (the regular
    /// tick; not an extra refresh after a liveness change, so points stay evenly spaced).
    async fn stats(&mut self, sample: bool) {
        let Ok(status) = self.node.status().await else {
            return;
        };
        let point = if sample {
            let p = view::sample(&status, self.node.metrics().received_totals(), now_ms());
            self.series.push_back(p.clone());
            while self.series.len() > SERIES_KEEP {
                self.series.pop_front();
            }
            p
        } else {
            Value::Null
        };
        self.last_status = serde_json::to_value(&status).unwrap_or(Value::Null);
        if self.pages.is_empty() {
            return;
        }
        // Stability comes with time, not with an event: compare the detector's view.
        if let Ok(health) = self.node.detector_health().await {
            let mut now = HashMap::with_capacity(health.len());
            for h in health {
                let v = (h.stable, h.flips);
                if self.detector.get(&h.id) != Some(&v) {
                    self.dirty.insert(h.id.clone());
                }
                now.insert(h.id, v);
            }
            self.detector = now;
        }
        let msg = json!({ "type": "stats", "status": self.last_status, "sample": point });
        self.send(&message(&msg));
    }
}
