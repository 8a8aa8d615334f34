//! Failure-detection benchmark: N real nodes (library, WebSockets on 127.0.0.1, defaults
//! everywhere) in one process; one is stopped abruptly (its connections and port close, as
//! when a process dies) and we time until every other node has declared it dead. Repeated on
//! fresh clusters; prints median and p99 per N, and false positives (anyone else declared
//! dead) seen meanwhile.
//!
//! The same with N real `gossip-node` processes: the victim is killed (-9: the kernel closes
//! its sockets, which hints its peers) or stopped (SIGSTOP: silent, its connections stay
//! open, so only the probes can tell). Times come from the nodes' WALs.
//!
//! `cargo bench --bench detection` (or `tools/bench-detection`); `GOSSIP_BENCH_SIZES=5,20`
//! picks the sizes (default 5,20,50), `GOSSIP_BENCH_MODE=inproc|procs` one kind of cluster.
//! With fewer than 100 failures the tail printed is the max, named so.

mod support;
use gossip_roster::{ClusterEvent, MembershipChange};
use std::time::{Duration, Instant};
use support::procs;
use tokio::sync::broadcast;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One kill: returns (time until all others hold the victim dead, false positives).
async fn one_kill(n: usize) -> (Duration, usize) {
    let (mut nodes, _dirs) = support::start_cluster(n).await;
    // Let the cluster settle (stable, probes running) before the kill.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = nodes.remove(n / 2);
    let victim_id = victim.id().clone();
    let mut subs: Vec<broadcast::Receiver<MembershipChange>> =
        nodes.iter().map(|x| x.subscribe()).collect();
    let t0 = Instant::now();
    victim.shutdown().await.unwrap();
    let mut false_positives = 0;
    let mut last = t0;
    for rx in subs.iter_mut() {
        loop {
            match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
                Ok(Ok(c)) => match &c.event {
                    ClusterEvent::NodeDead { node, .. } if *node == victim_id => {
                        last = last.max(Instant::now());
                        break;
                    }
                    ClusterEvent::NodeDead { .. } => false_positives += 1,
                    _ => {}
                },
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                other => panic!("the victim was never declared dead: {other:?}"),
            }
        }
    }
    let detection = last - t0;
    for node in nodes {
        node.shutdown().await.unwrap();
    }
    (detection, false_positives)
}

/// Failures per N: fewer at larger N, where each needs a fresh cluster.
fn kills(n: usize) -> usize {
    if n <= 5 {
        15
    } else if n <= 20 {
        8
    } else {
        4
    }
}

fn row(what: &str, n: usize, mut times: Vec<Duration>, fp: usize) {
    times.sort();
    let (tail_name, tail_value) = support::tail(&times);
    println!(
        "| {what} | {n} | {} | {:.2} s | {tail_name} {:.2} s | {fp} |",
        times.len(),
        support::percentile(&times, 0.5).as_secs_f64(),
        tail_value.as_secs_f64()
    );
}

fn main() {
    let Some(rt) = support::runtime() else {
        return;
    };
    let sizes = support::sizes();
    let (inproc, real) = support::modes();
    println!("\n## detection summary (defaults: probe 300 ms, timeout 150 ms, 3 indirect, suspicion mult 3)\n");
    println!("| cluster, failure | N | failures | detection median | tail | false positives |");
    println!("|---|---|---|---|---|---|");
    for n in sizes {
        if inproc {
            let (mut times, mut fp) = (Vec::new(), 0);
            for _ in 0..kills(n) {
                let (d, f) = rt.block_on(one_kill(n));
                times.push(d);
                fp += f;
            }
            row(
                "one process, victim shut down (connections close)",
                n,
                times,
                fp,
            );
        }
        if real {
            for (how, what) in [
                (
                    procs::Failure::Kill,
                    "processes, victim kill -9 (kernel closes its sockets)",
                ),
                (
                    procs::Failure::Stop,
                    "processes, victim SIGSTOP (silent, connections stay open)",
                ),
            ] {
                let (mut times, mut fp) = (Vec::new(), 0);
                for _ in 0..kills(n) {
                    let (d, f) = procs::detection(n, how);
                    times.push(d);
                    fp += f;
                }
                row(what, n, times, fp);
            }
        }
    }
}
