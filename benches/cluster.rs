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
use support::procs::{self, ProcCluster};
use support::{config, percentile, tail};
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
    let (tail_name, tail_value) = tail(&to_all);
    rows.push((
        format!("N={n}: actor registration seen by all, p50 / {tail_name} ({registrations} runs)"),
        format!("{} / {}", ms(percentile(&to_all, 0.5)), ms(tail_value)),
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

/// A table row: what, measured.
type Row = (String, String);

/// Median and max of per-node stage times (µs) as "median / max ms".
fn stage(v: &[u64]) -> String {
    let mut v = v.to_vec();
    v.sort();
    let f = |us: u64| {
        if us == u64::MAX {
            "never".to_string()
        } else {
            format!("{:.1}", us as f64 / 1e3)
        }
    };
    format!("{} / {} ms", f(percentile(&v, 0.5)), f(*v.last().unwrap()))
}

/// The same figures from N real `gossip-node` processes (defaults, `fsync=batch`), started
/// as the comparison starts every system (the seed, then all others at once), with where a
/// cold start's time goes. Times come from the nodes' own logs and WALs (see `procs`).
fn measure_procs(n: usize) -> (Vec<Row>, Vec<Row>) {
    let mut c = ProcCluster::start(n, "p");
    c.wait_alive(n, None);
    let mut rows = Vec::new();

    std::thread::sleep(Duration::from_secs(1));
    let idle = Duration::from_secs(3);
    let t = Instant::now();
    let (f0, b0) = c.sent();
    std::thread::sleep(idle);
    let (f1, b1) = c.sent();
    let secs = t.elapsed().as_secs_f64() * n as f64;
    let idle_row = (
        format!("N={n}: idle traffic per node"),
        format!(
            "{:.1} frames/s, {:.0} B/s",
            (f1 - f0) / secs,
            (b1 - b0) / secs
        ),
    );

    // One registration at a time through the admin CLI, 150 ms apart (more than any
    // propagation seen): the WALs say when each node applied it.
    let registrations = 100;
    for k in 0..registrations {
        c.register(k % n, &format!("pa-{k}"));
        std::thread::sleep(Duration::from_millis(150));
    }
    let wals = c.stop_and_read();
    let cold = procs::cold_start(&c, &wals);
    let mut to_all: Vec<u64> = (0..registrations)
        .map(|k| {
            procs::propagation_ms(&c, &wals, k % n, &format!("pa-{k}"))
                .unwrap_or_else(|| panic!("pa-{k} never reached every node"))
        })
        .collect();
    to_all.sort();
    let (tail_name, tail_value) = tail(&to_all);

    rows.push((
        format!("N={n}: cold start, all know all: from the last node's start / from the first's"),
        format!(
            "{} / {}",
            if cold.from_last_start.is_zero() {
                "0 (all knew all before the last node logged its start)".to_string()
            } else {
                ms(cold.from_last_start)
            },
            ms(cold.from_first_start)
        ),
    ));
    rows.push((
        format!("N={n}: actor registration seen by all, p50 / {tail_name} ({registrations} runs, WAL times in whole ms)"),
        format!("{} ms / {} ms", percentile(&to_all, 0.5), tail_value),
    ));
    rows.push(idle_row);
    let stages = vec![
        (
            format!("N={n}: node started (exec, listener, data dir, own record durable)"),
            stage(&cold.started),
        ),
        (
            format!("N={n}: first handshake done"),
            stage(&cold.first_handshake),
        ),
        (
            format!("N={n}: first record about another member (first sync)"),
            stage(&cold.first_sync),
        ),
        (format!("N={n}: knows every member"), stage(&cold.knows_all)),
    ];
    (rows, stages)
}

fn main() {
    let Some(rt) = support::runtime() else {
        return;
    };
    let sizes = support::sizes();
    let (inproc, real) = support::modes();
    let mut rows = Vec::new();
    if inproc {
        for &n in &sizes {
            rows.extend(rt.block_on(measure(n)));
        }
    }
    let (mut prows, mut stages) = (Vec::new(), Vec::new());
    if real {
        for &n in &sizes {
            let (r, s) = measure_procs(n);
            prows.extend(r);
            stages.extend(s);
        }
    }
    println!("\n## cluster summary (real WebSockets on loopback, this run)\n");
    if inproc {
        println!("N nodes in one process, one runtime:\n");
        println!("| what | measured |");
        println!("|---|---|");
        for (what, fig) in rows {
            println!("| {what} | {fig} |");
        }
        println!();
    }
    if real {
        println!("N `gossip-node` processes (as users run them):\n");
        println!("| what | measured |");
        println!("|---|---|");
        for (what, fig) in prows {
            println!("| {what} | {fig} |");
        }
        println!("\nWhere a cold start's time goes (N processes; per node, from its own spawn; median / max over the nodes):\n");
        println!("| stage | median / max |");
        println!("|---|---|");
        for (what, fig) in stages {
            println!("| {what} | {fig} |");
        }
    }
}
