//! The failure detector's IO shell: drives the pure [`Swim`] machine with a clock, carries its
//! messages in frames, turns its verdicts into roster events, and keeps the quorum view.

use crate::error::Result;
use crate::event::{ClusterEvent, NodeId};
use crate::message::Frame;
use crate::node::Inner;
use crate::roster::Applied;
use crate::swim::{Output, Swim, SwimMsg};
use std::sync::Arc;
use std::time::Duration;

/// How often the detector's clock ticks. Its timeouts are multiples of the probe interval;
/// this only bounds how late a deadline can be noticed.
const TICK: Duration = Duration::from_millis(10);

/// Whether this node sees a majority of the largest recent cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorum {
    /// Largest recent cluster size (members that did not leave), persisted.
    pub largest: u64,
    pub alive: u64,
    pub in_majority: bool,
}

pub(crate) fn new_swim(inner_id: &NodeId, config: crate::swim::SwimConfig) -> Swim {
    Swim::new(inner_id.clone(), config, rand::random())
}

/// Ticks the detector until shutdown.
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let outputs = inner.swim.lock().unwrap().tick(inner.now());
        if let Err(e) = execute(&inner, outputs).await {
            tracing::error!(error = %e, "failure detector could not record a verdict");
        }
    }
}

/// A probe message from a member.
pub(crate) async fn handle(inner: &Arc<Inner>, from: &NodeId, msg: SwimMsg) -> Result<()> {
    let outputs = inner
        .swim
        .lock()
        .unwrap()
        .handle_message(from, msg, inner.now());
    execute(inner, outputs).await
}

/// Carries out what the detector decided.
async fn execute(inner: &Arc<Inner>, outputs: Vec<Output>) -> Result<()> {
    for output in outputs {
        match output {
            Output::Send { to, msg } => {
                let member = inner.roster.lock().unwrap().member(&to);
                if let Some(m) = member {
                    inner.peers.send(inner, &m, Frame::Swim(msg));
                }
            }
            Output::Suspect {
                node,
                generation,
                incarnation,
            } => {
                let event = ClusterEvent::NodeSuspected {
                    node: node.clone(),
                    generation,
                    incarnation,
                    by: Some(inner.me().clone()),
                };
                tracing::info!(%node, incarnation, "no answer to probes; suspecting");
                let applied = inner.roster.lock().unwrap().apply(&event);
                if applied == Applied::Changed {
                    inner.log_and_spread(vec![event], true).await?;
                } else {
                    // Already suspected by someone else: our own suspicion is a confirmation
                    // worth telling (it shortens everyone's timeout), though it changes nothing.
                    inner.spread_only(event);
                }
            }
            Output::Dead {
                node,
                generation,
                incarnation,
            } => {
                tracing::warn!(%node, incarnation, "suspicion timed out; declaring dead");
                inner
                    .commit_local(vec![ClusterEvent::NodeDead {
                        node,
                        generation,
                        incarnation,
                    }])
                    .await?;
            }
            Output::Reap { node, generation } => {
                let reaped = {
                    let mut roster = inner.roster.lock().unwrap();
                    let is_tombstone = roster.record(&node).is_some_and(|r| {
                        r.generation == generation && r.liveness.state.is_tombstone()
                    });
                    is_tombstone.then(|| roster.remove(&node)).flatten()
                };
                inner.swim.lock().unwrap().remove_member(&node);
                if reaped.is_some() {
                    tracing::info!(%node, "tombstone expired; forgotten");
                    inner.update_quorum(0, true);
                }
            }
        }
    }
    Ok(())
}

/// Tells the detector what the roster now says about these nodes.
pub(crate) fn observe(inner: &Inner, nodes: &[NodeId]) {
    let now = inner.now();
    let roster = inner.roster.lock().unwrap();
    let mut swim = inner.swim.lock().unwrap();
    for id in nodes {
        if let Some(r) = roster.record(id) {
            swim.update_member(
                id,
                r.generation,
                r.liveness.incarnation,
                r.liveness.state,
                now,
            );
        }
    }
}

/// Independent suspicions seen in a received frame (changed or not) confirm ours.
pub(crate) fn note_confirmations(inner: &Inner, events: &[ClusterEvent]) {
    let mut swim = inner.swim.lock().unwrap();
    for e in events {
        if let ClusterEvent::NodeSuspected {
            node,
            incarnation,
            by: Some(by),
            ..
        } = e
        {
            swim.handle_suspicion(node, *incarnation, by);
        }
    }
}

/// Members that graceful leaves took out of the cluster in `events`.
pub(crate) fn leaves(events: &[ClusterEvent], me: &NodeId) -> u64 {
    events
        .iter()
        .filter(|e| matches!(e, ClusterEvent::NodeLeft { node, .. } if node != me))
        .count() as u64
}

/// The quorum as it follows from counts: `alive` (us included) against the largest size.
pub(crate) fn quorum(largest: u64, counts: [usize; 4]) -> Quorum {
    let [alive, suspect, dead, _left] = counts.map(|c| c as u64);
    let largest = largest.max(alive + suspect + dead).max(1);
    Quorum {
        largest,
        alive,
        in_majority: alive * 2 > largest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_needs_more_than_half_of_the_largest_size() {
        assert!(quorum(5, [3, 0, 2, 0]).in_majority);
        assert!(!quorum(5, [2, 1, 2, 0]).in_majority);
        assert!(
            !quorum(4, [2, 0, 2, 0]).in_majority,
            "exactly half is not a majority"
        );
        // The largest size never drops below what is known now.
        assert_eq!(quorum(3, [4, 0, 1, 0]).largest, 5);
        assert!(
            quorum(0, [1, 0, 0, 0]).in_majority,
            "a new node alone is its whole cluster"
        );
    }
}
