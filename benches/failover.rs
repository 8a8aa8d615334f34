//! Failover benchmark: N real nodes (library, WebSockets on 127.0.0.1, defaults) in one
//! process, every node offering the same 100 singletons.
//!
//! - **Owner failover:** the owner of a singleton is stopped abruptly (its connections close,
//!   as when a process dies); timed until every survivor has announced (`OwnerChanged`) a new
//!   owner for every singleton the victim owned, and checked that they all name the same one.
//! - **TTL lapse:** a host stops renewing an actor's health TTL; timed from the deadline until
//!   `locate` on every node leaves that host out.
//!
//! `cargo bench --bench failover`; `GOSSIP_BENCH_SIZES=5,20` picks the sizes (default 5,20),
//! `GOSSIP_BENCH_KILLS=N` the samples per size (default 15 at N <= 5, else 8). A p99 is
//! printed only from 100 samples up; below that the high figure is the maximum, named so.

mod support;
use gossip_roster::owner::OwnerChanged;
use gossip_roster::{Node, NodeId};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SINGLETONS: usize = 100;

fn names() -> Vec<String> {
    (0..SINGLETONS).map(|i| format!("s{i}")).collect()
}

async fn owners(node: &Node) -> Option<Vec<Option<NodeId>>> {
    let mut all = Vec::new();
    for a in names() {
        all.push(node.owner(&a).await.ok()?);
    }
    Some(all)
}

/// Waits until every node names the same owner for every singleton; returns it.
async fn agreed(nodes: &[Node]) -> Vec<NodeId> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut views = Vec::new();
        for n in nodes {
            views.push(owners(n).await);
        }
        if let Some(Some(first)) = views.first() {
            if views.iter().all(|v| v.as_ref() == Some(first)) && first.iter().all(Option::is_some)
            {
                return first.iter().flatten().cloned().collect();
            }
        }
        assert!(Instant::now() < deadline, "owners never agreed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One kill of an owner: time until every survivor announced new owners for all it owned.
async fn one_failover(n: usize) -> Duration {
    let (mut nodes, _dirs) = support::start_cluster(n).await;
    for node in &nodes {
        node.add_actors(names()).await.unwrap();
    }
    let before = agreed(&nodes).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim_id = before[0].clone();
    let owned: BTreeSet<String> = names()
        .into_iter()
        .zip(&before)
        .filter(|(_, o)| **o == victim_id)
        .map(|(a, _)| a)
        .collect();
    let at = nodes.iter().position(|x| *x.id() == victim_id).unwrap();
    let victim = nodes.remove(at);
    let mut subs: Vec<broadcast::Receiver<OwnerChanged>> =
        nodes.iter().map(|x| x.subscribe_owners()).collect();
    let t0 = Instant::now();
    victim.shutdown().await.unwrap();
    let mut last = t0;
    for rx in subs.iter_mut() {
        let mut moved = BTreeSet::new();
        while moved.len() < owned.len() {
            match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
                Ok(Ok(c)) if c.from.as_ref() == Some(&victim_id) && c.to.is_some() => {
                    moved.insert(c.actor);
                }
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                other => panic!("no new owner: {other:?}"),
            }
        }
        last = last.max(Instant::now());
    }
    let took = last - t0;
    let after = agreed(&nodes).await;
    assert!(after.iter().all(|o| *o != victim_id));
    for node in nodes {
        node.shutdown().await.unwrap();
    }
    took
}

/// One TTL lapse: time from the deadline until no node's `locate` lists the host.
async fn one_lapse(n: usize) -> Duration {
    let (nodes, _dirs) = support::start_cluster(n).await;
    for node in &nodes {
        node.add_actors(vec!["x".into()]).await.unwrap();
    }
    let ttl = Duration::from_millis(500);
    let host = &nodes[0];
    host.set_health_ttl("x", Some(ttl)).await.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(ttl / 3).await;
        host.pass_ttl("x").await.unwrap();
    }
    let deadline = Instant::now() + ttl;
    let deadline_guard = deadline + Duration::from_secs(60);
    loop {
        let mut gone = true;
        for x in &nodes {
            gone &= !x.locate("x").await.unwrap().contains(host.id());
        }
        if gone {
            break;
        }
        assert!(Instant::now() < deadline_guard, "the lapse never spread");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = Instant::now().saturating_duration_since(deadline);
    for node in nodes {
        node.shutdown().await.unwrap();
    }
    took
}

/// Median and the high figure: the p99 when there are samples enough for one, else the max.
fn summary(mut times: Vec<Duration>) -> (Duration, String) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = times[(times.len() - 1) / 2];
    let high = if times.len() >= 100 {
        let at = (times.len() * 99).div_ceil(100) - 1;
        format!("p99 {:.0} ms", ms(times[at]))
    } else {
        format!("max {:.0} ms", ms(times[times.len() - 1]))
    };
    (median, high)
}

fn main() {
    let Some(rt) = support::runtime() else {
        return;
    };
    let sizes = std::env::var("GOSSIP_BENCH_SIZES")
        .map(|_| support::sizes())
        .unwrap_or_else(|_| vec![5, 20]);
    println!("\n## failover summary (defaults; {SINGLETONS} singletons on every node)\n");
    println!("| N | kills | owner kill -> new owner on all survivors: median | high | TTL lapses | lapse -> left out of locate everywhere: median | high |");
    println!("|---|---|---|---|---|---|---|");
    for n in sizes {
        let kills: usize = std::env::var("GOSSIP_BENCH_KILLS")
            .ok()
            .and_then(|k| k.parse().ok())
            .unwrap_or(if n <= 5 { 15 } else { 8 });
        let failovers: Vec<Duration> = (0..kills).map(|_| rt.block_on(one_failover(n))).collect();
        let lapses: Vec<Duration> = (0..kills).map(|_| rt.block_on(one_lapse(n))).collect();
        let (fm, fx) = summary(failovers);
        let (lm, lx) = summary(lapses);
        println!(
            "| {n} | {kills} | {:.0} ms | {fx} | {kills} | {:.0} ms | {lx} |",
            fm.as_secs_f64() * 1e3,
            lm.as_secs_f64() * 1e3,
        );
    }
}
