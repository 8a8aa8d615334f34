//! Connections to peers: accept, dial (with backoff and jitter), one connection per peer
//! pair, and a reader and a writer per connection.
//!
//! When two nodes dial each other at once, both keep the connection dialed by the smaller
//! node id and close the other: each side decides alone and they agree.

use crate::event::NodeId;
use crate::message::{Frame, Role};
use crate::node::Inner;
use crate::roster::Member;
use crate::transport::{self, TransportError, Ws};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Frames waiting for one peer's writer; beyond this, gossip frames are dropped (lossy by
/// design: anti-entropy repairs) rather than letting a slow peer grow our memory.
const PEER_QUEUE: usize = 1024;

struct Conn {
    tx: mpsc::Sender<Frame>,
    id: u64,
    dialer: NodeId,
    close: CancellationToken,
}

#[derive(Default)]
struct State {
    by_id: HashMap<NodeId, Conn>,
    /// Dials in flight, with the frames that wait for them (at most `PEER_QUEUE`): during
    /// a cold start most gossip goes to peers not connected yet, and dropping it there
    /// would leave the repair to anti-entropy, hundreds of milliseconds later.
    dialing: HashMap<String, Vec<Frame>>,
    /// addr -> (no dial before, current delay)
    backoff: HashMap<String, (Instant, Duration)>,
}

pub(crate) struct Peers {
    state: Mutex<State>,
    inbound: Arc<Semaphore>,
    next_id: AtomicU64,
    /// Traffic we sent to members (for status and benchmarks).
    pub(crate) frames_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    handshake_failures: AtomicU64,
}

impl Peers {
    pub(crate) fn new(max_connections: usize) -> Self {
        Peers {
            state: Mutex::new(State::default()),
            inbound: Arc::new(Semaphore::new(max_connections)),
            next_id: AtomicU64::new(1),
            frames_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
        }
    }

    /// Open member connections.
    pub(crate) fn len(&self) -> usize {
        self.state.lock().unwrap().by_id.len()
    }

    /// Sends a frame to a member, dialing it first if we have no connection.
    pub(crate) fn send(&self, inner: &Arc<Inner>, to: &Member, frame: Frame) {
        match self.sender(&to.id) {
            Some(tx) => {
                if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(frame) {
                    tracing::debug!(peer = %to.id, "peer queue full; frame dropped");
                }
            }
            None => self.dial_addr(inner, &to.addr, vec![frame]),
        }
    }

    /// Dials `addr` in the background and sends `frames` once connected. While a dial to it
    /// is in flight the frames wait for it; while it backs off after a failure they are
    /// dropped (anti-entropy repairs).
    pub(crate) fn dial_addr(&self, inner: &Arc<Inner>, addr: &str, frames: Vec<Frame>) {
        if addr == inner.addr {
            return;
        }
        {
            let mut st = self.state.lock().unwrap();
            if let Some(waiting) = st.dialing.get_mut(addr) {
                let room = PEER_QUEUE.saturating_sub(waiting.len());
                waiting.extend(frames.into_iter().take(room));
                return;
            }
            if st
                .backoff
                .get(addr)
                .is_some_and(|(until, _)| Instant::now() < *until)
            {
                return;
            }
            st.dialing.insert(addr.to_owned(), frames);
        }
        let inner2 = inner.clone();
        let addr = addr.to_owned();
        inner.tasks.spawn(async move {
            let me = inner2.role();
            let result = tokio::select! {
                _ = inner2.cancel.cancelled() => return,
                r = transport::dial(&addr, &me, &inner2.config.transport) => r,
            };
            let peers = &inner2.peers;
            let frames = {
                let mut st = peers.state.lock().unwrap();
                if result.is_ok() {
                    st.backoff.remove(&addr);
                }
                st.dialing.remove(&addr).unwrap_or_default()
            };
            match result {
                Ok((ws, role)) => {
                    run_connection(inner2.clone(), ws, role, true, frames).await;
                }
                Err(e) => {
                    let mut st = peers.state.lock().unwrap();
                    let delay = st
                        .backoff
                        .get(&addr)
                        .map_or(Duration::from_millis(200), |(_, d)| {
                            (*d * 2).min(Duration::from_secs(10))
                        });
                    let jittered = delay.mul_f64(rand::thread_rng().gen_range(0.5..1.0));
                    st.backoff
                        .insert(addr.clone(), (Instant::now() + jittered, delay));
                    match e {
                        TransportError::Rejected(_)
                        | TransportError::Auth(_)
                        | TransportError::Tls(_) => {
                            tracing::warn!(%addr, error = %e, "peer refused the connection")
                        }
                        _ => tracing::debug!(%addr, error = %e, "dial failed"),
                    }
                }
            }
        });
    }

    /// The writer queue of the open connection to `peer`.
    fn sender(&self, peer: &NodeId) -> Option<mpsc::Sender<Frame>> {
        let st = self.state.lock().unwrap();
        st.by_id.get(peer).map(|c| c.tx.clone())
    }

    /// Queues frames on the open connection to `peer`, if any (dropped when none or full).
    fn forward(&self, peer: &NodeId, frames: Vec<Frame>) {
        if let Some(tx) = self.sender(peer) {
            for f in frames {
                let _ = tx.try_send(f);
            }
        }
    }

    /// Waits until every peer's queue is flushed to its socket, or `max` passes.
    pub(crate) async fn drain(&self, max: Duration) {
        let deadline = Instant::now() + max;
        while Instant::now() < deadline {
            let busy = self
                .state
                .lock()
                .unwrap()
                .by_id
                .values()
                .any(|c| c.tx.capacity() < PEER_QUEUE);
            if !busy {
                // Give the writers a moment to hand the last frame to the socket.
                tokio::time::sleep(Duration::from_millis(20)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Closes every connection.
    pub(crate) fn clear(&self) {
        for (_, c) in self.state.lock().unwrap().by_id.drain() {
            c.close.cancel();
        }
    }

    /// Registers a member connection; `None` if an existing one is preferred (this one closes).
    fn register(
        &self,
        me: &NodeId,
        peer: &NodeId,
        dialer: NodeId,
        tx: mpsc::Sender<Frame>,
    ) -> Option<(u64, CancellationToken)> {
        let preferred = std::cmp::min(me, peer).clone();
        let mut st = self.state.lock().unwrap();
        if let Some(existing) = st.by_id.get(peer) {
            if existing.dialer == preferred && dialer != preferred {
                return None;
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let close = CancellationToken::new();
        if let Some(old) = st.by_id.insert(
            peer.clone(),
            Conn {
                tx,
                id,
                dialer,
                close: close.clone(),
            },
        ) {
            old.close.cancel();
        }
        Some((id, close))
    }

    fn unregister(&self, peer: &NodeId, id: u64) {
        let mut st = self.state.lock().unwrap();
        if st.by_id.get(peer).is_some_and(|c| c.id == id) {
            st.by_id.remove(peer);
        }
    }
}

impl Inner {
    pub(crate) fn role(&self) -> Role {
        Role::Member {
            id: self.me().clone(),
            generation: self.identity.generation,
            addr: self.addr.clone(),
        }
    }
}

/// Accepts connections until shutdown; each gets its own task. Over the connection cap, a
/// new connection is closed at once.
pub(crate) async fn accept_loop(inner: Arc<Inner>, listener: tokio::net::TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = inner.cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = inner.peers.inbound.clone().try_acquire_owned() else {
            tracing::warn!(%remote, "connection cap reached; closing a new connection");
            continue;
        };
        let inner2 = inner.clone();
        inner.tasks.spawn(async move {
            let _permit = permit;
            let me = inner2.role();
            let result = tokio::select! {
                _ = inner2.cancel.cancelled() => return,
                r = transport::accept(stream, &me, &inner2.config.transport) => r,
            };
            match result {
                Ok((ws, role)) => run_connection(inner2, ws, role, false, Vec::new()).await,
                Err(e) => {
                    // A flood of bad connections must not become a flood of log lines.
                    let n = inner2.peers.handshake_failures.fetch_add(1, Ordering::Relaxed) + 1;
                    if n <= 10 || n.is_multiple_of(1000) {
                        tracing::info!(%remote, error = %e, failures_so_far = n, "handshake failed");
                    } else {
                        tracing::debug!(%remote, error = %e, "handshake failed");
                    }
                }
            }
        });
    }
}

/// Serves one connection after its handshake, until either side closes it.
async fn run_connection(
    inner: Arc<Inner>,
    ws: Ws,
    role: Role,
    dialed_by_me: bool,
    initial: Vec<Frame>,
) {
    match role {
        Role::Admin => serve_admin(inner, ws).await,
        Role::Member { id, .. } if id == *inner.me() => {
            tracing::warn!("a peer presents our own node id; closing (a second node with our id, or a seed that is us)");
        }
        Role::Member { id, .. } => serve_member(inner, ws, id, dialed_by_me, initial).await,
    }
}

async fn serve_member(
    inner: Arc<Inner>,
    ws: Ws,
    peer: NodeId,
    dialed_by_me: bool,
    initial: Vec<Frame>,
) {
    let (tx, mut rx) = mpsc::channel::<Frame>(PEER_QUEUE);
    for f in initial {
        let _ = tx.try_send(f);
    }
    let dialer = if dialed_by_me {
        inner.me().clone()
    } else {
        peer.clone()
    };
    let Some((conn_id, close)) = inner.peers.register(inner.me(), &peer, dialer, tx.clone()) else {
        tracing::debug!(%peer, "keeping the other connection to this peer");
        // What waited for this connection goes over the one that is kept.
        let mut waiting = Vec::new();
        while let Ok(f) = rx.try_recv() {
            waiting.push(f);
        }
        inner.peers.forward(&peer, waiting);
        return;
    };
    tracing::debug!(%peer, dialed_by_me, "connected");
    let (mut sink, mut stream) = ws.split();
    let counters = inner.clone();
    let writer = inner.tasks.spawn(async move {
        while let Some(frame) = rx.recv().await {
            let bytes = frame.encode();
            counters.peers.frames_sent.fetch_add(1, Ordering::Relaxed);
            counters
                .peers
                .bytes_sent
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            if sink.send(Message::Binary(bytes)).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let idle = inner.config.transport.idle_timeout;
    let reason = loop {
        let next = tokio::select! {
            _ = inner.cancel.cancelled() => break "shutting down".to_string(),
            _ = close.cancelled() => break "replaced by another connection".to_string(),
            n = tokio::time::timeout(idle, transport::recv(&mut stream)) => n,
        };
        let frame = match next {
            Err(_) => break format!("idle for {idle:?}"),
            Ok(Ok(None)) => break "closed by peer".to_string(),
            Ok(Err(e)) => break e.to_string(),
            Ok(Ok(Some(frame))) => frame,
        };
        match inner.handle_member_frame(&peer, frame).await {
            Ok(replies) => {
                for r in replies {
                    if tx.send(r).await.is_err() {
                        break;
                    }
                }
            }
            Err(e) => break e,
        }
    };
    tracing::debug!(%peer, %reason, "connection closed");
    inner.peers.unregister(&peer, conn_id);
    if !inner.cancel.is_cancelled() && !close.is_cancelled() {
        // A lost connection is a hint to probe the peer soon, never a verdict.
        inner.swim.lock().unwrap().handle_closed(&peer);
    }
    drop(tx);
    let _ = writer.await;
}

/// Admin connections: requests in, replies out, no gossip.
async fn serve_admin(inner: Arc<Inner>, mut ws: Ws) {
    let idle = inner.config.transport.idle_timeout;
    loop {
        let next = tokio::select! {
            _ = inner.cancel.cancelled() => return,
            n = tokio::time::timeout(idle, transport::recv(&mut ws)) => n,
        };
        let reply = match next {
            Ok(Ok(Some(Frame::Admin(req)))) => inner.handle_admin(req).await,
            Ok(Ok(Some(other))) => {
                tracing::info!(
                    frame = transport::frame_name(&other),
                    "admin client sent a non-admin frame; closing"
                );
                return;
            }
            _ => return,
        };
        if transport::send(&mut ws, &Frame::AdminReply(reply))
            .await
            .is_err()
        {
            return;
        }
    }
}
