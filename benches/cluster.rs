//! Cluster benchmark: N real nodes (the library, real WebSockets on 127.0.0.1, real WALs in
//! temp dirs) in one process. Prints one markdown table:
//!
//! * join: time from a new node's start until every existing member has its `NewNode`;
//! * actor propagation: time from `register_actor` on one node until every other node has
//!   applied the `ActorAdded` (p50 / p99 over many registrations);
//! * traffic: frames and bytes sent per node per second, idle and under a steady stream of
//!   registrations.
//!
//! `cargo bench --bench cluster` (or `tools/bench-cluster`). `GOSSIP_BENCH_SIZES=5,20` picks
//! the cluster sizes (default 5,20,50).

mod support;
use gossip_roster::{ClusterEvent, MembershipChange, Node, NodeId};
use std::time::{Duration, Instant};
use support::config;
use tokio::sync::broadcast;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Cluster {
    nodes: Vec<Node>,
    subs: Vec<broadcast::Receiver<MembershipChange>>,
    _dirs: Vec<tempfile::TempDir>,
}

/// Waits until `rx` yields an event matching `pred`; returns when it did.
async fn wait_for(
    rx: &mut broadcast::Receiver<MembershipChange>,
    pred: impl Fn(&ClusterEvent) -> bool,
) -> Instant {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Ok(c)) if pred(&c.event) => return Instant::now(),
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            other => panic!("event never arrived: {other:?}"),
        }
    }
}

async fn start_cluster(n: usize) -> Cluster {
    let (nodes, dirs) = support::start_cluster(n).await;
    let subs = nodes.iter().map(|x| x.subscribe()).collect();
    Cluster {
        nodes,
        subs,
        _dirs: dirs,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

async fn traffic(c: &Cluster) -> (u64, u64) {
    let (mut f, mut b) = (0, 0);
    for n in &c.nodes {
        let s = n.status().await.unwrap();
        f += s.frames_sent;
        b += s.bytes_sent;
    }
    (f, b)
}

async fn measure(n: usize) -> Vec<(String, String)> {
    let mut c = start_cluster(n).await;
    let mut rows = Vec::new();

    // Join: a new node's NewNode reaches every existing member.
    let mut joins = Vec::new();
    let mut extra_dirs = Vec::new();
    let mut joined = Vec::new();
    for j in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let id = NodeId::new(format!("join{j}"));
        let seed = c.nodes[j % n].addr().to_owned();
        let t0 = Instant::now();
        let (node, _) = Node::start(config(dir.path(), id.as_str(), vec![seed]))
            .await
            .unwrap();
        let mut last = t0;
        for rx in c.subs.iter_mut() {
            let at = wait_for(
                rx,
                |e| matches!(e, ClusterEvent::NewNode { node, .. } if *node == id),
            )
            .await;
            last = last.max(at);
        }
        joins.push(last - t0);
        extra_dirs.push(dir);
        joined.push(node);
    }
    // The joiners leave again so the next measurements run at exactly n members.
    for node in joined {
        node.leave().await.unwrap();
        node.shutdown().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for rx in c.subs.iter_mut() {
        while rx.try_recv().is_ok() {}
    }
    joins.sort();
    rows.push((
        format!("N={n}: new node in every roster (median of 5 joins)"),
        ms(percentile(&joins, 0.5)),
    ));

    // Idle traffic.
    let (f0, b0) = traffic(&c).await;
    let idle = Duration::from_secs(3);
    tokio::time::sleep(idle).await;
    let (f1, b1) = traffic(&c).await;
    let per = |x: u64, d: Duration| x as f64 / n as f64 / d.as_secs_f64();
    rows.push((
        format!("N={n}: idle traffic per node"),
        format!(
            "{:.1} frames/s, {:.0} B/s",
            per(f1 - f0, idle),
            per(b1 - b0, idle)
        ),
    ));

    // Actor propagation to all other nodes.
    let registrations = if n <= 5 {
        300
    } else if n <= 20 {
        150
    } else {
        60
    };
    let mut to_all = Vec::new();
    let (f0, b0) = traffic(&c).await;
    let t_busy = Instant::now();
    for k in 0..registrations {
        let origin = k % n;
        let actor = format!("actor-{k}");
        let t0 = Instant::now();
        assert!(c.nodes[origin].register_actor(&actor).await.unwrap());
        let mut last = t0;
        for (i, rx) in c.subs.iter_mut().enumerate() {
            let at = wait_for(
                rx,
                |e| matches!(e, ClusterEvent::ActorAdded { actor: a, .. } if *a == actor),
            )
            .await;
            if i != origin {
                last = last.max(at);
            }
        }
        to_all.push(last - t0);
    }
    let busy = t_busy.elapsed();
    let (f1, b1) = traffic(&c).await;
    to_all.sort();
    rows.push((
        format!("N={n}: actor registration seen by all, p50 / p99 ({registrations} runs)"),
        format!(
            "{} / {}",
            ms(percentile(&to_all, 0.5)),
            ms(percentile(&to_all, 0.99))
        ),
    ));
    rows.push((
        format!(
            "N={n}: traffic per node under change ({:.0} registrations/s)",
            registrations as f64 / busy.as_secs_f64()
        ),
        format!(
            "{:.1} frames/s, {:.0} B/s",
            per(f1 - f0, busy),
            per(b1 - b0, busy)
        ),
    ));
    for node in c.nodes.drain(..) {
        node.shutdown().await.unwrap();
    }
    rows
}

fn main() {
    let Some(rt) = support::runtime() else {
        return;
    };
    let sizes = support::sizes();
    let mut rows = Vec::new();
    for n in sizes {
        rows.extend(rt.block_on(measure(n)));
    }
    println!("\n## cluster summary (one process, real WebSockets on loopback, this run)\n");
    println!("| what | measured |");
    println!("|---|---|");
    for (what, fig) in rows {
        println!("| {what} | {fig} |");
    }
}
