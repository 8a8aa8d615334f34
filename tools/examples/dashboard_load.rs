//! A node whose roster holds many members and actors, to measure the dashboard with
//! (`tools/dashboard/measure`). One real node serves the dashboard; the other members are
//! records injected as if a peer had gossiped them (`NewNode` with their actors), at
//! addresses nobody listens on. Failure detection is slowed to one probe an hour so they
//! stay alive while the page is measured: the roster, the owners and the page are real,
//! the other members' processes are not.
//!
//! `cargo run --release --example dashboard_load -- MEMBERS ACTORS` prints `http=ADDR` once
//! the roster is loaded, then serves until stdin closes.

use gossip_roster::{ClusterEvent, Node, NodeConfig, NodeId, SwimConfig};
use std::collections::BTreeSet;
use std::io::Read;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let members: usize = args.next().map_or(Ok(1000), |a| a.parse())?;
    let actors: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    if members == 0 {
        return Err("MEMBERS must be at least 1 (this node)".into());
    }
    let per = actors / members;
    let dir = tempfile::tempdir()?;
    let (node, info) = Node::start(NodeConfig {
        data_dir: dir.path().to_path_buf(),
        node_id: Some(NodeId::new("m0000")),
        http_listen: Some("127.0.0.1:0".into()),
        swim: SwimConfig {
            probe_interval: Duration::from_secs(3600),
            ..SwimConfig::default()
        },
        ..NodeConfig::default()
    })
    .await?;
    let started = Instant::now();
    // Our own share first, in calls of 10,000 names.
    let own: Vec<String> = (0..actors - per * (members - 1))
        .map(|k| format!("m0000-actor-{k:05}"))
        .collect();
    for chunk in own.chunks(10_000) {
        node.add_actors(chunk.to_vec()).await?;
    }
    // The others, 50 members an injection.
    let others: Vec<ClusterEvent> = (1..members)
        .map(|i| ClusterEvent::NewNode {
            node: NodeId::new(format!("m{i:04}")),
            generation: 1,
            version: 1,
            addr: format!("ws://10.255.{}.{}:7000", i / 250, i % 250 + 1),
            actors: (0..per)
                .map(|k| format!("m{i:04}-actor-{k:05}"))
                .collect::<BTreeSet<_>>(),
        })
        .collect();
    for chunk in others.chunks(50) {
        gossip_roster::node::inject(&node, NodeId::new("m0001"), chunk.to_vec()).await?;
    }
    let status = node.status().await?;
    let total: usize = node.members().await?.iter().map(|m| m.actors.len()).sum();
    eprintln!(
        "loaded {} members ({} alive), {total} actors in {:.1} s",
        status.alive + status.suspect + status.dead + status.left,
        status.alive,
        started.elapsed().as_secs_f64()
    );
    let http = info.http.ok_or("no HTTP endpoint")?;
    println!("http={http}");
    // Serve until stdin closes (the measuring script ends).
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await?;
    node.shutdown().await?;
    Ok(())
}
