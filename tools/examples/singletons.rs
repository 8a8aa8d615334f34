//! A small actor system on gossip-roster: every node offers the same singletons; for each,
//! exactly one node in the cluster runs its worker. The application renews a health TTL for
//! each singleton (a worker that stops renewing turns critical and hands over), follows
//! `OwnerChanged` to start or stop workers, and stops them all while its side of a
//! partition is down.
//!
//! ```text
//! cargo run --example singletons -- --data-dir /tmp/s1 --listen 127.0.0.1:7101
//! cargo run --example singletons -- --data-dir /tmp/s2 --listen 127.0.0.1:7102 --seed 127.0.0.1:7101
//! cargo run --example singletons -- --data-dir /tmp/s3 --listen 127.0.0.1:7103 --seed 127.0.0.1:7101
//! ```
//! Each prints `start worker X` / `stop worker X` as ownership moves; kill one (Ctrl-C is a
//! graceful leave, `kill -9` a crash) and watch its workers start elsewhere.
//! `--stall ACTOR` stops renewing that singleton's TTL after 10 s, to watch a failover
//! triggered by health alone.

use gossip_roster::machine::downing::{DowningConfig, Strategy};
use gossip_roster::{Node, NodeConfig};
use std::collections::BTreeSet;
use std::time::Duration;

const SINGLETONS: [&str; 3] = ["scheduler", "billing-leader", "mailer"];
/// A singleton whose worker does not renew within this is critical and moves.
const TTL: Duration = Duration::from_secs(3);

struct Args {
    data_dir: String,
    listen: String,
    seeds: Vec<String>,
    stall: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut data_dir, mut listen, mut seeds, mut stall) = (None, None, Vec::new(), None);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--data-dir" => data_dir = Some(value()?),
            "--listen" => listen = Some(value()?),
            "--seed" => seeds.push(format!("ws://{}", value()?)),
            "--stall" => stall = Some(value()?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        data_dir: data_dir.ok_or("--data-dir is required")?,
        listen: listen.ok_or("--listen is required")?,
        seeds,
        stall,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let (node, info) = Node::start(NodeConfig {
        data_dir: args.data_dir.into(),
        listen: args.listen,
        seeds: args.seeds,
        actors: SINGLETONS.iter().map(|s| s.to_string()).collect(),
        downing: DowningConfig {
            strategy: Strategy::KeepMajority,
            stable_after: Duration::from_secs(5),
        },
        ..NodeConfig::default()
    })
    .await?;
    let me = info.identity.id.clone();
    println!("{me} at {}", info.addr);

    // Health: each worker proves it is alive by renewing its TTL.
    for s in SINGLETONS {
        node.set_health_ttl(s, Some(TTL)).await?;
    }
    let renewer = node.clone();
    let stall = args.stall.clone();
    let started = tokio::time::Instant::now();
    tokio::spawn(async move {
        loop {
            for s in SINGLETONS {
                let stalled =
                    stall.as_deref() == Some(s) && started.elapsed() > Duration::from_secs(10);
                if !stalled && renewer.pass_ttl(s).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(TTL / 3).await;
        }
    });

    // Workers follow ownership: start what we own, stop what we lost. Subscribe first, then
    // read the current owners, so no change falls between the two.
    let mut owners = node.subscribe_owners();
    let mut down = node.watch_down();
    let mut running = BTreeSet::new();
    for s in SINGLETONS {
        while let Err(e) = node.owner(s).await {
            println!("waiting for a majority to name owners: {e}");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let owner = node.owner(s).await?;
        println!("owner of {s}: {owner:?}");
        if owner == Some(me.clone()) {
            println!("start worker {s}");
            running.insert(s.to_string());
        }
    }
    loop {
        tokio::select! {
            change = owners.recv() => {
                let Ok(c) = change else { break };
                println!("owner of {}: {:?} -> {:?}", c.actor, c.from, c.to);
                if c.to.as_ref() == Some(&me) && running.insert(c.actor.clone()) {
                    println!("start worker {}", c.actor);
                } else if c.to.as_ref() != Some(&me) && running.remove(&c.actor) {
                    println!("stop worker {}", c.actor);
                }
            }
            Ok(()) = down.changed() => {
                if let Some(why) = down.borrow().clone() {
                    println!("this side is down ({why}): stopping every worker");
                    for s in std::mem::take(&mut running) {
                        println!("stop worker {s}");
                    }
                } else {
                    println!("up again");
                    for s in SINGLETONS {
                        if node.owner(s).await.ok().flatten() == Some(me.clone()) && running.insert(s.to_string()) {
                            println!("start worker {s}");
                        }
                    }
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    for s in std::mem::take(&mut running) {
        println!("stop worker {s}");
    }
    node.leave().await?;
    node.shutdown().await?;
    Ok(())
}
