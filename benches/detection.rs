//! Failure-detection benchmark: N real nodes (library, WebSockets on 127.0.0.1, defaults
//! everywhere) in one process; one is stopped abruptly (its connections and port close, as
//! when a process dies) and we time until every other node has declared it dead. Repeated on
//! fresh clusters; prints median and p99 per N, and false positives (anyone else declared
//! dead) seen meanwhile.
//!
//! `cargo bench --bench detection` (or `tools/bench-detection`); `GOSSIP_BENCH_SIZES=5,20`
//! picks the sizes (default 5,20,50).

mod support;
use gossip_roster::{ClusterEvent, MembershipChange};
use std::time::{Duration, Instant};
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

fn main() {
    let Some(rt) = support::runtime() else {
        return;
    };
    let sizes = support::sizes();
    println!("\n## detection summary (defaults: probe 300 ms, timeout 150 ms, 3 indirect, suspicion mult 3)\n");
    println!("| N | kills | detection median | p99 | false positives |");
    println!("|---|---|---|---|---|");
    for n in sizes {
        let kills = if n <= 5 {
            15
        } else if n <= 20 {
            8
        } else {
            4
        };
        let mut times = Vec::new();
        let mut fp = 0;
        for _ in 0..kills {
            let (d, f) = rt.block_on(one_kill(n));
            times.push(d);
            fp += f;
        }
        times.sort();
        let pick = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
        println!(
            "| {n} | {kills} | {:.2} s | {:.2} s | {fp} |",
            pick(0.5).as_secs_f64(),
            pick(0.99).as_secs_f64()
        );
    }
}
