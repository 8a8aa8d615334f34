//! gossip-roster next to chitchat and foca, same run, same machine, loopback only.
//!
//! For N = 5, 20, 50: time from a cold start until every node knows every other; time until a
//! value set on one node (an actor for us, a key for chitchat) is seen by all; bytes sent per
//! node per second while idle. chitchat 0.13.0 runs at a 100 ms and at a 10 ms gossip
//! interval (its failure detector's initial interval set to the gossip interval), ours with
//! its defaults; foca 2.0.0 with its LAN configuration (see `foca_side.rs`). Prints a markdown
//! table with the ratios (ours / theirs; < 1 is better).
//!
//! `tools/compare.sh` (or `cargo run --release --manifest-path tools/compare/Cargo.toml`).

use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpTransport};
use chitchat::{
    spawn_chitchat, ChitchatConfig, ChitchatEnvelope, ChitchatHandle, ChitchatId,
    FailureDetectorConfig,
};
use gossip_roster::{Node, NodeConfig, NodeId};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod foca_side;
#[path = "../../../benches/support/procs.rs"]
mod procs;

/// chitchat's UDP transport, counting the bytes it sends.
struct Counting {
    inner: UdpTransport,
    bytes: Arc<AtomicU64>,
}

struct CountingSocket {
    inner: Box<dyn Socket>,
    bytes: Arc<AtomicU64>,
}

#[async_trait]
impl Transport for Counting {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let inner = self.inner.open(listen_addr).await?;
        Ok(Box::new(CountingSocket {
            inner,
            bytes: self.bytes.clone(),
        }))
    }
}

#[async_trait]
impl Socket for CountingSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.inner.local_addr()
    }
    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let outcome = self.inner.send(to, envelope).await?;
        self.bytes
            .fetch_add(outcome.num_bytes_sent as u64, Ordering::Relaxed);
        Ok(outcome)
    }
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        self.inner.recv().await
    }
}

/// Runs futures concurrently on this task and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futs.map(Box::pin).collect();
    let mut out = Vec::with_capacity(handles.len());
    let mut pending: Vec<_> = handles.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.extend(
        results
            .into_iter()
            .map(|r| r.expect("every future completed")),
    );
    out
}

/// Polls `check` every 2 ms; the moment it holds, or `None` after `limit`.
async fn poll_within(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return Some(Instant::now());
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn poll_until(what: &str, check: impl AsyncFnMut() -> bool) -> Instant {
    poll_within(Duration::from_secs(60), check)
        .await
        .unwrap_or_else(|| panic!("never happened: {what}"))
}

/// A figure that never came (within the limit the run gives it).
const NEVER: Duration = Duration::MAX;

struct Figures {
    /// From the moment the last node was started (spawned, data dir open) until all know all.
    converge: Duration,
    /// From the first node's start, including the start-up of every node (for us: creating
    /// and syncing N data dirs on one disk).
    converge_total: Duration,
    propagate: Duration,
    idle_bytes_per_node_s: f64,
}

async fn chitchat_run(n: usize, interval: Duration) -> Figures {
    let bytes = Arc::new(AtomicU64::new(0));
    let transport = Counting {
        inner: UdpTransport,
        bytes: bytes.clone(),
    };
    // Hold every probe socket until all ports are picked, so no port is handed out twice.
    let probes: Vec<std::net::UdpSocket> = (0..n)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = probes
        .iter()
        .map(|p| p.local_addr().unwrap().port())
        .collect();
    drop(probes);
    let seed = format!("127.0.0.1:{}", ports[0]);
    let t0 = Instant::now();
    let mut handles: Vec<ChitchatHandle> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(format!("c{i}"), 1, addr),
            cluster_id: "compare".into(),
            gossip_interval: interval,
            listen_addr: addr,
            seed_nodes: if i == 0 { vec![] } else { vec![seed.clone()] },
            failure_detector_config: FailureDetectorConfig {
                initial_interval: interval,
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V1,
        };
        handles.push(
            spawn_chitchat(config, Vec::new(), &transport)
                .await
                .unwrap(),
        );
    }
    let t_last = Instant::now();
    // Watchers are taken out of the lock before awaiting on them (awaiting under it deadlocks).
    let mut watchers = Vec::new();
    for h in &handles {
        let chitchat = h.chitchat();
        let w = chitchat.lock().await.live_nodes_watcher();
        watchers.push(w);
    }
    let converged = poll_until("chitchat converges", async || {
        watchers.iter().all(|w| w.borrow().len() == n)
    })
    .await;
    let (converge, converge_total) = (converged.saturating_duration_since(t_last), converged - t0);

    let id0 = handles[0].chitchat_id().clone();
    let t1 = Instant::now();
    handles[0]
        .chitchat()
        .lock()
        .await
        .self_node_state()
        .set("actor", "billing");
    let chitchats: Vec<_> = handles.iter().map(|h| h.chitchat()).collect();
    let seen = poll_until("chitchat propagates a key", async || {
        for c in &chitchats {
            let guard = c.lock().await;
            if guard
                .node_state(&id0)
                .and_then(|s| s.get("actor"))
                .is_none()
            {
                return false;
            }
        }
        true
    })
    .await;
    let propagate = seen - t1;

    let b0 = bytes.load(Ordering::Relaxed);
    let idle = Duration::from_secs(3);
    tokio::time::sleep(idle).await;
    let b1 = bytes.load(Ordering::Relaxed);
    for h in handles {
        let _ = h.shutdown().await;
    }
    Figures {
        converge,
        converge_total,
        propagate,
        idle_bytes_per_node_s: (b1 - b0) as f64 / n as f64 / idle.as_secs_f64(),
    }
}

async fn ours_run(n: usize) -> Figures {
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let config = |i: usize, seeds: Vec<String>| NodeConfig {
        data_dir: dirs[i].path().to_path_buf(),
        node_id: Some(NodeId::new(format!("g{i}"))),
        seeds,
        ..NodeConfig::default()
    };
    // The seed first (others need its address), then everyone else at once, as chitchat.
    let t0 = Instant::now();
    let seed = Node::start(config(0, vec![])).await.unwrap().0;
    let seed_addr = seed.addr().to_owned();
    let rest = (1..n).map(|i| Node::start(config(i, vec![seed_addr.clone()])));
    let mut nodes = vec![seed];
    for started in futures_join_all(rest).await {
        nodes.push(started.unwrap().0);
    }
    let t_last = Instant::now();
    // Each node's count of alive members, as published (a watch, read without asking the
    // node: chitchat's side reads its live-nodes watcher the same way). Asking every node
    // for its member list every 2 ms loaded the runtime whose work is being timed.
    let converged = poll_until("gossip-roster converges", async || {
        nodes.iter().all(|x| x.quorum().alive as usize == n)
    })
    .await;
    let (converge, converge_total) = (converged.saturating_duration_since(t_last), converged - t0);

    let t1 = Instant::now();
    nodes[0].register_actor("billing").await.unwrap();
    let seen = poll_until("gossip-roster propagates an actor", async || {
        for x in &nodes {
            if x.locate("billing").await.unwrap().is_empty() {
                return false;
            }
        }
        true
    })
    .await;
    let propagate = seen - t1;

    async fn sent(nodes: &[Node]) -> u64 {
        let mut total = 0;
        for x in nodes {
            total += x.status().await.unwrap().bytes_sent;
        }
        total
    }
    let b0 = sent(&nodes).await;
    let idle = Duration::from_secs(3);
    tokio::time::sleep(idle).await;
    let b1 = sent(&nodes).await;
    for node in nodes {
        node.shutdown().await.unwrap();
    }
    Figures {
        converge,
        converge_total,
        propagate,
        idle_bytes_per_node_s: (b1 - b0) as f64 / n as f64 / idle.as_secs_f64(),
    }
}

/// Ours as users run it: N `gossip-node` processes (release binary, defaults), started as
/// the others (the seed, then all at once). Times from the nodes' own logs and WALs, idle
/// bytes from their `/metrics` (see `benches/support/procs.rs`).
fn procs_run(n: usize) -> Figures {
    let mut c = procs::ProcCluster::start(n, "r");
    c.wait_alive(n, None);
    c.register(0, "billing");
    std::thread::sleep(Duration::from_millis(500));
    let (_, b0) = c.sent();
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let (_, b1) = c.sent();
    let idle = t.elapsed();
    let wals = c.stop_and_read();
    let cold = procs::cold_start(&c, &wals);
    let propagate = procs::propagation_ms(&c, &wals, 0, "billing").map_or(NEVER, |ms| {
        // Whole milliseconds: count the record's millisecond as a full one.
        Duration::from_millis(ms.max(1))
    });
    Figures {
        converge: cold.from_last_start,
        converge_total: cold.from_first_start,
        propagate,
        idle_bytes_per_node_s: (b1 - b0) / n as f64 / idle.as_secs_f64(),
    }
}

/// Median of each figure over repeated runs.
fn median(mut runs: Vec<Figures>) -> Figures {
    let mid = runs.len() / 2;
    runs.sort_by_key(|f| f.converge);
    let converge = runs[mid].converge;
    runs.sort_by_key(|f| f.converge_total);
    let converge_total = runs[mid].converge_total;
    runs.sort_by_key(|f| f.propagate);
    let propagate = runs[mid].propagate;
    runs.sort_by(|a, b| a.idle_bytes_per_node_s.total_cmp(&b.idle_bytes_per_node_s));
    Figures {
        converge,
        converge_total,
        propagate,
        idle_bytes_per_node_s: runs[mid].idle_bytes_per_node_s,
    }
}

/// A figure of `f`, or `None` when it never came.
fn got(f: &Figures, pick: &dyn Fn(&Figures) -> f64) -> Option<f64> {
    let v = pick(f);
    (v < NEVER.as_secs_f64()).then_some(v)
}

fn main() {
    let sizes: Vec<usize> = std::env::var("GOSSIP_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![5, 20, 50]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("\n## gossip-roster vs chitchat 0.13.0 and foca 2.0.0 (same run, loopback, median of 3; ratio = ours / best peer, ours as N processes / ours in one process)\n");
    println!("| N | metric | ours, N processes | ours, one process | chitchat 100 ms | chitchat 10 ms | foca (LAN config) | best peer | ratio | goal | |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let reps = 3;
        let ours = median((0..reps).map(|_| rt.block_on(ours_run(n))).collect());
        let real = median((0..reps).map(|_| procs_run(n)).collect());
        if std::env::var_os("COMPARE_ONLY_OURS").is_some() {
            for (what, f) in [("one process", &ours), ("N processes", &real)] {
                println!(
                    "| {n} | ours only, {what} | cold start {:.1} ms (from first start {:.1} ms), value {:.1} ms, idle {:.0} B/node/s |",
                    f.converge.as_secs_f64() * 1e3,
                    f.converge_total.as_secs_f64() * 1e3,
                    f.propagate.as_secs_f64() * 1e3,
                    f.idle_bytes_per_node_s
                );
            }
            continue;
        }
        let slow = median(
            (0..reps)
                .map(|_| rt.block_on(chitchat_run(n, Duration::from_millis(100))))
                .collect(),
        );
        let fast = median(
            (0..reps)
                .map(|_| rt.block_on(chitchat_run(n, Duration::from_millis(10))))
                .collect(),
        );
        let foca = median(
            (0..reps)
                .map(|_| rt.block_on(foca_side::foca_run(n)))
                .collect(),
        );
        let peers = [&slow, &fast, &foca];
        let ms = |s: Option<f64>| match s {
            None => "not all within 10 s".to_string(),
            Some(s) => format!("{:.1} ms", s * 1e3),
        };
        let count = |b: Option<f64>| b.map_or("-".to_string(), |b| format!("{b:.0}"));
        // Goal per metric: ours <= factor x the reference (the best peer, or foca for idle
        // bytes); met only if both of ours meet it.
        let row = |metric: &str,
                   pick: &dyn Fn(&Figures) -> f64,
                   show: &dyn Fn(Option<f64>) -> String,
                   reference: Option<f64>,
                   reference_name: &str,
                   factor: f64| {
            let (p, o) = (got(&real, pick), got(&ours, pick));
            let ratio = |x: Option<f64>| match (x, reference) {
                (Some(x), Some(r)) if r > 0.0 => format!("{:.2}", x / r),
                _ => "-".to_string(),
            };
            let met = match (p, o, reference) {
                (Some(p), Some(o), Some(r)) if p <= factor * r && o <= factor * r => "met",
                (_, _, None) => "-",
                _ => "NOT met",
            };
            let mut line = format!("| {n} | {metric} | {} | {} |", show(p), show(o));
            for t in peers {
                line += &format!(" {} |", show(got(t, pick)));
            }
            line += &format!(
                " {} ({reference_name}) | {} / {} | <= {factor}x | {met} |",
                show(reference),
                ratio(p),
                ratio(o)
            );
            println!("{line}");
        };
        let best = |pick: &dyn Fn(&Figures) -> f64| -> (Option<f64>, &'static str) {
            let named = [(&slow, "chitchat 100 ms"), (&fast, "chitchat 10 ms"), (&foca, "foca")];
            named
                .iter()
                .filter_map(|(f, name)| got(f, pick).map(|v| (v, *name)))
                .min_by(|a, b| a.0.total_cmp(&b.0))
                .map_or((None, "none"), |(v, name)| (Some(v), name))
        };
        let converge = |f: &Figures| f.converge.as_secs_f64();
        let total = |f: &Figures| f.converge_total.as_secs_f64();
        let propagate = |f: &Figures| f.propagate.as_secs_f64();
        let idle = |f: &Figures| f.idle_bytes_per_node_s;
        let (r, name) = best(&converge);
        row("cold start: all know all, from the last node's start", &converge, &ms, r, name, 0.5);
        let (r, name) = best(&total);
        row("cold start: all know all, from the first node's start", &total, &ms, r, name, 0.5);
        let (r, name) = best(&propagate);
        row("value set on one, seen by all", &propagate, &ms, r, name, 0.5);
        row("idle bytes sent per node per s", &idle, &count, got(&foca, &idle), "foca", 5.0);
    }
}
