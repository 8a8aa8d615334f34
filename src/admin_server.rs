//! The admin side of a node: requests from `gossip-node members|actors|locate|status` on an
//! admin connection, answered by the driver. Answers of any size: a member list too large
//! for one frame goes out in parts ([`AdminReply::Part`]).

use crate::health::ActorHealth;
use crate::machine::{Command, Reply};
use crate::message::{AdminReply, AdminRequest, Frame};
use crate::node::StopReason;
use crate::peers::{Ctx, Input, Job};
use crate::roster::Member;
use crate::transport::{self, Ws};
use futures_util::SinkExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

/// Serves one admin connection: requests in, replies out, no gossip.
pub(crate) async fn serve(ctx: Arc<Ctx>, mut ws: Ws) {
    let idle = ctx.transport.idle_timeout;
    loop {
        let next = tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            n = tokio::time::timeout(idle, transport::recv_sized(&mut ws)) => n,
        };
        if let Ok(Ok(Some((frame, bytes)))) = &next {
            ctx.metrics.received(frame.kind(), *bytes);
        }
        let req = match next {
            Ok(Ok(Some((Frame::Admin(req), _)))) => req,
            Ok(Ok(Some((other, _)))) => {
                tracing::info!(
                    frame = transport::frame_name(&other),
                    "admin client sent a non-admin frame; closing"
                );
                return;
            }
            _ => return,
        };
        let frames = match answer(&ctx, req).await {
            // Within the admin client's cap too (the default), whatever this node accepts.
            Some(reply) => split(
                reply,
                ctx.transport
                    .max_frame_bytes
                    .min(crate::transport::TransportConfig::default().max_frame_bytes),
            ),
            None => return,
        };
        let left = matches!(frames.last(), Some(AdminReply::Left));
        for reply in frames {
            let frame = Frame::AdminReply(reply);
            let bytes = frame.encode();
            let n = bytes.len();
            if ws.send(Message::Binary(bytes)).await.is_err() {
                break;
            }
            ctx.metrics.sent(frame.kind(), n);
        }
        if left {
            // Answered: now the node stops (the binary exits 0; an embedder sees
            // `StopReason::Left`), after a moment for the leave to reach the wire.
            let _ = ws.close(None).await;
            drain(&ctx).await;
            let _ = ctx.control.send(Input::Stop(StopReason::Left)).await;
            return;
        }
    }
}

/// Waits (at most half a second) until every peer's writer queue is empty.
async fn drain(ctx: &Ctx) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
    while tokio::time::Instant::now() < deadline {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |d| {
            let _ = tx.send(d.queues_empty());
        });
        if ctx.data.send(Input::Query(job)).await.is_err() || rx.await.unwrap_or(true) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The answer to one request (`None`: the node is stopping).
async fn answer(ctx: &Ctx, req: AdminRequest) -> Option<AdminReply> {
    match req {
        AdminRequest::Members => {
            query(ctx, |d| AdminReply::Members(d.machine.roster().members())).await
        }
        AdminRequest::Locate {
            actor,
            tags,
            include_critical,
        } => {
            query(ctx, move |d| {
                if let Some(why) = d.machine.down() {
                    return AdminReply::Error(format!(
                        "this node is down (split-brain downing): {why}; ask a node of the side that went on"
                    ));
                }
                let roster = d.machine.roster();
                let q = crate::roster::LocateQuery {
                    include_critical,
                    tags,
                };
                AdminReply::Located(
                    roster
                        .locate_with(&actor, &q)
                        .iter()
                        .filter_map(|id| roster.member(id))
                        .collect(),
                )
            })
            .await
        }
        AdminRequest::Status => query(ctx, |d| AdminReply::Status(Box::new(d.status()))).await,
        AdminRequest::AddActors { actors } => command(ctx, Command::AddActors(actors)).await,
        AdminRequest::RemoveActors { actors } => command(ctx, Command::RemoveActors(actors)).await,
        AdminRequest::Remove { node, force } => command(ctx, Command::Remove { node, force }).await,
        AdminRequest::Leave => command(ctx, Command::Leave).await,
        AdminRequest::Owners { actors } => {
            query(ctx, move |d| {
                let mut owners = Vec::with_capacity(actors.len());
                for actor in actors {
                    match d.machine.owner(&actor) {
                        Ok(owner) => owners.push((actor, owner)),
                        Err(why) => return AdminReply::Error(why),
                    }
                }
                AdminReply::Owners(owners)
            })
            .await
        }
        AdminRequest::SetTags { tags } => command(ctx, Command::SetTags(tags)).await,
        AdminRequest::UnsetTags { keys } => command(ctx, Command::UnsetTags(keys)).await,
        AdminRequest::SetHealth {
            actor,
            health,
            note,
        } => {
            let c = Command::SetHealth {
                actor,
                health,
                note,
            };
            command(ctx, c).await
        }
    }
}

async fn query(
    ctx: &Ctx,
    f: impl FnOnce(&crate::node::Driver) -> AdminReply + Send + 'static,
) -> Option<AdminReply> {
    let (tx, rx) = oneshot::channel();
    let job: Job = Box::new(move |d| {
        let _ = tx.send(f(d));
    });
    ctx.data.send(Input::Query(job)).await.ok()?;
    rx.await.ok()
}

async fn command(ctx: &Ctx, command: Command) -> Option<AdminReply> {
    let (tx, rx) = oneshot::channel();
    ctx.data
        .send(Input::Command { command, reply: tx })
        .await
        .ok()?;
    Some(match rx.await {
        Ok(Reply::ActorsChanged(changed)) => AdminReply::ActorsChanged { changed },
        Ok(Reply::InvalidName(e)) => AdminReply::Error(format!("invalid actor name: {e}")),
        Ok(Reply::Left) => AdminReply::Left,
        Ok(Reply::Removed { node, was }) => AdminReply::Removed { node, was },
        Ok(Reply::Refused(why)) => AdminReply::Error(why),
        Ok(Reply::TagsChanged(changed)) => AdminReply::TagsChanged { changed },
        Ok(Reply::InvalidTag(e)) => AdminReply::Error(format!("invalid tag: {e}")),
        Ok(Reply::HealthChanged(changed)) => AdminReply::HealthChanged { changed },
        Ok(Reply::InvalidHealth(e)) => AdminReply::Error(format!("health: {e}")),
        Err(_) => AdminReply::Error(match ctx.stop_reason.get() {
            Some(reason) => format!("the node stopped before the change was durable ({reason}); it may be partly applied after a restart"),
            None => "the node is stopping".into(),
        }),
    })
}

/// Rough encoded size of a member entry without its actors, generous (rmp-serde adds a few
/// bytes per field). Tags are bounded ([`crate::tags::MAX_TAG_BYTES`]).
fn member_bytes(m: &Member) -> usize {
    96 + m.id.as_str().len()
        + m.addr.len()
        + m.tags
            .iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum::<usize>()
}

/// Rough encoded size of one actor of a member: its name, and its health and note.
fn actor_bytes(health: &BTreeMap<String, ActorHealth>, actor: &str) -> usize {
    let note = health.get(actor).map_or(0, |h| h.note.len());
    2 * actor.len() + note + 32
}

/// Splits a member list answer into frames that fit `max_bytes`: `Part`s, then the final
/// reply of the original kind. Other replies are small and go as they are.
pub(crate) fn split(reply: AdminReply, max_bytes: usize) -> Vec<AdminReply> {
    type Finish = fn(Vec<Member>) -> AdminReply;
    let (members, last): (Vec<Member>, Finish) = match reply {
        AdminReply::Members(m) => (m, AdminReply::Members),
        AdminReply::Located(m) => (m, AdminReply::Located),
        other => return vec![other],
    };
    let budget = max_bytes.saturating_sub(1024).max(4096) / 2;
    let mut parts: Vec<Vec<Member>> = vec![Vec::new()];
    let mut used = 0;
    for mut m in members {
        let head = member_bytes(&m);
        let actors = std::mem::take(&mut m.actors);
        let mut health = std::mem::take(&mut m.health);
        let mut tags = std::mem::take(&mut m.tags);
        let mut chunk = Vec::new();
        let mut chunk_bytes = head;
        let mut pieces = Vec::new();
        for a in actors {
            let b = actor_bytes(&health, &a);
            if !chunk.is_empty() && chunk_bytes + b > budget {
                pieces.push(std::mem::take(&mut chunk));
                chunk_bytes = head;
            }
            chunk_bytes += b;
            chunk.push(a);
        }
        pieces.push(chunk);
        for actors in pieces {
            // Each piece carries the health of its own actors; the first one the tags.
            let piece = Member {
                health: actors
                    .iter()
                    .filter_map(|a| Some((a.clone(), health.remove(a)?)))
                    .collect(),
                tags: std::mem::take(&mut tags),
                actors,
                ..m.clone()
            };
            let bytes = member_bytes(&piece)
                + piece
                    .actors
                    .iter()
                    .map(|a| actor_bytes(&piece.health, a))
                    .sum::<usize>();
            if used + bytes > budget && !parts.last().expect("non-empty").is_empty() {
                parts.push(Vec::new());
                used = 0;
            }
            used += bytes;
            parts.last_mut().expect("non-empty").push(piece);
        }
    }
    let tail = parts.pop().expect("non-empty");
    let mut out: Vec<AdminReply> = parts.into_iter().map(AdminReply::Part).collect();
    out.push(last(tail));
    out
}

/// Joins the parts of an answer back: consecutive entries of one member become one.
pub fn join_parts(parts: Vec<Vec<Member>>) -> Vec<Member> {
    let mut out: Vec<Member> = Vec::new();
    for m in parts.into_iter().flatten() {
        match out.last_mut() {
            Some(prev) if prev.id == m.id => {
                prev.actors.extend(m.actors);
                prev.health.extend(m.health);
                prev.tags.extend(m.tags);
            }
            _ => out.push(m),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{MemberState, NodeId};
    use crate::message::Frame;

    fn member(id: &str, actors: usize) -> Member {
        Member {
            id: NodeId::new(id),
            addr: "ws://127.0.0.1:1".into(),
            state: MemberState::Alive,
            actors: (0..actors).map(|i| format!("actor-{i:06}")).collect(),
            incarnation: 0,
            generation: 1,
            version: 1,
            tags: [("zone".to_string(), "eu-1".to_string())].into(),
            health: (0..actors)
                .step_by(7)
                .map(|i| {
                    let h = crate::ActorHealth {
                        status: crate::Health::Warning,
                        note: "n".repeat(200),
                    };
                    (format!("actor-{i:06}"), h)
                })
                .collect(),
        }
    }

    #[test]
    fn a_large_answer_is_split_into_frames_that_fit_and_joins_back() {
        let members = vec![member("a", 10), member("b", 100_000), member("c", 3)];
        let max = 1 << 20;
        let frames = split(AdminReply::Members(members.clone()), max);
        assert!(frames.len() > 1);
        let mut parts = Vec::new();
        for (i, f) in frames.into_iter().enumerate() {
            let bytes = Frame::AdminReply(f.clone()).encode().len();
            assert!(bytes <= max, "frame {i}: {bytes} bytes");
            match f {
                AdminReply::Part(p) | AdminReply::Members(p) => parts.push(p),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(join_parts(parts), members);
    }

    #[test]
    fn small_answers_go_in_one_frame() {
        let frames = split(AdminReply::Located(vec![member("a", 2)]), 1 << 20);
        assert_eq!(frames, vec![AdminReply::Located(vec![member("a", 2)])]);
    }
}
