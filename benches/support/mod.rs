//! Shared by the cluster benchmarks: cluster sizes from the environment, and a cluster of
//! real nodes (library, WebSockets on 127.0.0.1, WALs in temp dirs) started through one seed.
#![allow(dead_code)]

pub mod procs;

use gossip_roster::{Node, NodeConfig, NodeId};
use std::path::Path;
use std::time::{Duration, Instant};

/// `GOSSIP_BENCH_SIZES=5,20` or the default 5, 20, 50.
pub fn sizes() -> Vec<usize> {
    std::env::var("GOSSIP_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![5, 20, 50])
}

/// The runtime the cluster benchmarks run on; `None` when cargo only lists benchmarks
/// (`--list`).
pub fn runtime() -> Option<tokio::runtime::Runtime> {
    if std::env::args().any(|a| a == "--list") {
        return None;
    }
    Some(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap(),
    )
}

/// Default settings (fsync batch) for node `id` in `dir`.
pub fn config(dir: &Path, id: &str, seeds: Vec<String>) -> NodeConfig {
    NodeConfig {
        data_dir: dir.to_path_buf(),
        node_id: Some(NodeId::new(id)),
        seeds,
        ..NodeConfig::default()
    }
}

/// Starts `n` nodes, each seeded with the first, and waits until every one sees all `n`.
pub async fn start_cluster(n: usize) -> (Vec<Node>, Vec<tempfile::TempDir>) {
    let mut dirs = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let dir = tempfile::tempdir().unwrap();
        let seeds = nodes
            .first()
            .map(|s| vec![s.addr().to_owned()])
            .unwrap_or_default();
        nodes.push(
            Node::start(config(dir.path(), &format!("n{i:03}"), seeds))
                .await
                .unwrap()
                .0,
        );
        dirs.push(dir);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut all = true;
        for x in &nodes {
            all &= x.members().await.unwrap().len() == n;
        }
        if all {
            break;
        }
        assert!(Instant::now() < deadline, "cluster of {n} did not converge");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (nodes, dirs)
}

/// The value at quantile `p` of `sorted` (nearest rank).
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The tail figure `sorted` supports: its p99 with at least 100 samples, else its max,
/// named as such (a "p99" of 4 samples is the max of 4).
pub fn tail<T: Copy>(sorted: &[T]) -> (&'static str, T) {
    if sorted.len() >= 100 {
        ("p99", percentile(sorted, 0.99))
    } else {
        ("max", *sorted.last().unwrap())
    }
}

/// Which cluster the benchmarks run: `GOSSIP_BENCH_MODE=inproc` (N nodes in one process),
/// `procs` (N `gossip-node` processes) or both (the default).
pub fn modes() -> (bool, bool) {
    match std::env::var("GOSSIP_BENCH_MODE").as_deref() {
        Ok("inproc") => (true, false),
        Ok("procs") => (false, true),
        _ => (true, true),
    }
}
