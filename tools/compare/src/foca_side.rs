//! foca 2.0 (sans-IO SWIM) on tokio UDP, run the way its documentation describes: every
//! input (a datagram, a timer, an announce, a broadcast) goes into `Foca` with an
//! `AccumulatingRuntime`, which is then drained (datagrams out, timers scheduled).
//! Configuration: `Config::new_lan(N)` (probe every 1 s, gossip every 200 ms to 3 members,
//! memberlist's LAN numbers). foca has no key-value state: the value is a custom broadcast,
//! added on one node and pushed at once with `Foca::broadcast`, as an eager user would.

use crate::{poll_until, poll_within, Figures, NEVER};
use foca::{AccumulatingRuntime, BroadcastHandler, Config, Foca, Invalidates, PostcardCodec, Timer};
use rand10::rngs::StdRng;
use rand10::SeedableRng;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

type Node = Foca<SocketAddr, PostcardCodec, StdRng, Handler>;

/// One "key set on a node": the origin and a version (newer replaces older).
#[derive(serde::Serialize, serde::Deserialize)]
struct Value {
    origin: SocketAddr,
    version: u64,
    value: String,
}

struct Key {
    origin: SocketAddr,
    version: u64,
}

impl Invalidates for Key {
    fn invalidates(&self, other: &Self) -> bool {
        self.origin == other.origin && self.version > other.version
    }
}

/// Remembers the newest value per origin; `seen` flips when any value arrives.
struct Handler {
    latest: std::collections::HashMap<SocketAddr, u64>,
    seen: Arc<AtomicBool>,
}

#[derive(Debug)]
struct BadBroadcast(String);

impl std::fmt::Display for BadBroadcast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadBroadcast {}

impl BroadcastHandler<SocketAddr> for Handler {
    type Key = Key;
    type Error = BadBroadcast;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&SocketAddr>,
    ) -> Result<Option<Key>, BadBroadcast> {
        let v: Value = postcard::from_bytes(data).map_err(|e| BadBroadcast(e.to_string()))?;
        if self.latest.get(&v.origin).is_some_and(|&cur| cur >= v.version) {
            return Ok(None);
        }
        self.latest.insert(v.origin, v.version);
        self.seen.store(true, Ordering::Relaxed);
        Ok(Some(Key {
            origin: v.origin,
            version: v.version,
        }))
    }
}

enum Input {
    Data(Vec<u8>),
    Timer(Timer<SocketAddr>),
    Announce(SocketAddr),
    Broadcast(Vec<u8>),
}

struct Running {
    foca: Arc<Mutex<Node>>,
    seen: Arc<AtomicBool>,
    input: mpsc::UnboundedSender<Input>,
    task: tokio::task::JoinHandle<()>,
}

/// The IO shell of one node: feed foca, drain its runtime.
async fn drive(
    foca: Arc<Mutex<Node>>,
    socket: UdpSocket,
    tx: mpsc::UnboundedSender<Input>,
    mut rx: mpsc::UnboundedReceiver<Input>,
    bytes: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 65536];
    let mut runtime = AccumulatingRuntime::new();
    loop {
        let input = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((len, _)) => Input::Data(buf[..len].to_vec()),
                Err(_) => continue,
            },
            i = rx.recv() => match i {
                Some(i) => i,
                None => return,
            },
        };
        {
            let mut f = foca.lock().unwrap();
            // foca is tolerant by design: its errors (a stale timer, a packet for an old
            // identity) are part of normal operation.
            let _ = match input {
                Input::Data(d) => f.handle_data(&d, &mut runtime),
                Input::Timer(t) => f.handle_timer(t, &mut runtime),
                Input::Announce(to) => f.announce(to, &mut runtime),
                Input::Broadcast(data) => f
                    .add_broadcast(&data)
                    .and_then(|_| f.broadcast(&mut runtime)),
            };
        }
        while let Some((to, data)) = runtime.to_send() {
            bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            let _ = socket.send_to(&data, to).await;
        }
        while let Some((after, timer)) = runtime.to_schedule() {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let _ = tx.send(Input::Timer(timer));
            });
        }
        while runtime.to_notify().is_some() {}
    }
}

pub async fn foca_run(n: usize) -> Figures {
    let bytes = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut nodes: Vec<Running> = Vec::new();
    for i in 0..n {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let seen = Arc::new(AtomicBool::new(false));
        let handler = Handler {
            latest: Default::default(),
            seen: seen.clone(),
        };
        let config = Config::new_lan(NonZeroU32::new(n as u32).unwrap());
        let foca = Arc::new(Mutex::new(Foca::with_custom_broadcast(
            addr,
            config,
            StdRng::seed_from_u64(i as u64),
            PostcardCodec,
            handler,
        )));
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(foca.clone(), socket, tx.clone(), rx, bytes.clone()));
        nodes.push(Running {
            foca,
            seen,
            input: tx,
            task,
        });
    }
    // Everyone announces to the first node, as chitchat's nodes list it as their seed.
    let seed = *nodes[0].foca.lock().unwrap().identity();
    for node in &nodes[1..] {
        node.input.send(Input::Announce(seed)).unwrap();
    }
    let t_last = Instant::now();
    let converged = poll_until("foca converges", async || {
        nodes
            .iter()
            .all(|x| x.foca.lock().unwrap().num_members() == n - 1)
    })
    .await;
    let (converge, converge_total) = (converged.saturating_duration_since(t_last), converged - t0);

    let value = Value {
        origin: seed,
        version: 1,
        value: "billing".into(),
    };
    let t1 = Instant::now();
    nodes[0]
        .input
        .send(Input::Broadcast(postcard::to_allocvec(&value).unwrap()))
        .unwrap();
    // foca disseminates a custom broadcast a bounded number of times and never repairs it:
    // a node can miss it for good. Such a run counts as never.
    let seen = poll_within(Duration::from_secs(10), async || {
        nodes.iter().all(|x| x.seen.load(Ordering::Relaxed))
    })
    .await;
    let propagate = seen.map_or(NEVER, |seen| seen - t1);

    let b0 = bytes.load(Ordering::Relaxed);
    let idle = Duration::from_secs(3);
    tokio::time::sleep(idle).await;
    let b1 = bytes.load(Ordering::Relaxed);
    for node in nodes {
        node.task.abort();
    }
    Figures {
        converge,
        converge_total,
        propagate,
        idle_bytes_per_node_s: (b1 - b0) as f64 / n as f64 / idle.as_secs_f64(),
    }
}
