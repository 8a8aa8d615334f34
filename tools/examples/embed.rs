//! Embedding gossip-roster in an actor system: two nodes in one process, an actor registered
//! on one and located from the other, a membership subscription, and a graceful leave.
//!
//! `cargo run --example embed`

use gossip_roster::{ClusterEvent, Node, NodeConfig, NodeId};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dirs = (tempfile::tempdir()?, tempfile::tempdir()?);

    // A first node starts a new cluster; a second one joins through it.
    let (a, _) = Node::start(NodeConfig {
        data_dir: dirs.0.path().to_path_buf(),
        node_id: Some(NodeId::new("a")),
        ..NodeConfig::default()
    })
    .await?;
    let (b, _) = Node::start(NodeConfig {
        data_dir: dirs.1.path().to_path_buf(),
        node_id: Some(NodeId::new("b")),
        seeds: vec![a.addr().to_owned()],
        ..NodeConfig::default()
    })
    .await?;

    // Watch b's view of the cluster.
    let mut changes = b.subscribe();
    let watcher = tokio::spawn(async move {
        while let Ok(change) = changes.recv().await {
            println!("b saw: {} (its actors: {:?})", change.event, change.actors);
            if matches!(change.event, ClusterEvent::NodeLeft { .. }) {
                break;
            }
        }
    });

    // Register an actor on a (durable when this returns) and find it from b.
    a.register_actor("billing").await?;
    while b.locate("billing").await?.is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!("billing lives on {:?}", b.locate("billing").await?);
    for m in b.members().await? {
        println!("member {} at {} is {}", m.id, m.addr, m.state);
    }

    // a leaves gracefully; b hears it.
    a.leave().await?;
    a.shutdown().await?;
    watcher.await?;
    b.shutdown().await?;
    Ok(())
}
