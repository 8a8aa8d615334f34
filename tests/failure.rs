//! Failure detection with real `gossip-node` processes on 127.0.0.1: a killed node is
//! declared dead by all and comes back alive with a higher incarnation; a briefly frozen
//! node (SIGSTOP) is never declared dead; a node that loses most of the cluster says it is
//! not in the majority, and recovers.

mod common;
use common::*;
use serde_json::Value;

fn state_of(roster: &Value, id: &str) -> Option<(String, u64)> {
    roster.as_array()?.iter().find(|m| m["id"] == id).map(|m| {
        (
            m["state"].as_str().unwrap().to_owned(),
            m["incarnation"].as_u64().unwrap(),
        )
    })
}

fn status(addr: &str) -> Value {
    let out = admin(&["status", "--connect", addr, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Five nodes joined through the first; returns them once all see five alive.
fn cluster(dirs: &[tempfile::TempDir], extra: &[&str]) -> Vec<NodeProc> {
    let mut nodes: Vec<NodeProc> = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let id = format!("n{i}");
        let mut args = vec!["--node-id", id.as_str()];
        let seed;
        if let Some(first) = nodes.first() {
            seed = first.addr.clone();
            args.extend(["--seed", seed.as_str()]);
        }
        args.extend(extra);
        nodes.push(NodeProc::start_net(dir.path(), &args).unwrap());
    }
    for n in &nodes {
        eventually("all five alive", || {
            members(&n.addr, &[]).is_some_and(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .filter(|m| m["state"] == "alive")
                    .count()
                    == dirs.len()
            })
        });
    }
    nodes
}

#[test]
fn a_killed_node_is_declared_dead_and_comes_back_with_a_higher_incarnation() {
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = cluster(&dirs, &[]);
    let victim = nodes.remove(4);
    let mut victim = victim;
    victim.signal("KILL");
    victim.child.wait().unwrap();
    drop(victim);
    for n in &nodes {
        eventually(&format!("{} declares n4 dead", n.addr), || {
            members(&n.addr, &[])
                .is_some_and(|r| state_of(&r, "n4").is_some_and(|(s, _)| s == "dead"))
        });
    }
    // locate never answers with a dead node's actors.
    // Restarted on its data dir (no seed): it refutes with a higher incarnation.
    let back = NodeProc::start_net(dirs[4].path(), &[]).unwrap();
    for n in nodes.iter().chain([&back]) {
        eventually(&format!("{} sees n4 alive again", n.addr), || {
            members(&n.addr, &[]).is_some_and(|r| {
                state_of(&r, "n4").is_some_and(|(s, inc)| s == "alive" && inc >= 1)
            })
        });
    }
}

#[test]
fn a_briefly_frozen_node_is_never_declared_dead() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    // A longer minimum suspicion (6 x 300 ms = 1.8 s) than the freeze (400 ms), with margin
    // for a loaded machine.
    let nodes = cluster(&dirs, &["--suspicion-mult", "6"]);
    let frozen = &nodes[3];
    frozen.signal("STOP");
    std::thread::sleep(std::time::Duration::from_millis(400));
    frozen.signal("CONT");
    // Watch every roster for a while: n3 may be suspected, never declared dead.
    let watch_until = std::time::Instant::now() + std::time::Duration::from_secs(4);
    while std::time::Instant::now() < watch_until {
        for n in &nodes[..3] {
            if let Some(r) = members(&n.addr, &[]) {
                let (state, _) = state_of(&r, "n3").unwrap();
                assert_ne!(state, "dead", "{} declared the frozen node dead", n.addr);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for n in &nodes {
        eventually("n3 alive everywhere", || {
            members(&n.addr, &[])
                .is_some_and(|r| state_of(&r, "n3").is_some_and(|(s, _)| s == "alive"))
        });
    }
}

#[test]
fn a_node_cut_off_from_the_majority_says_so_and_recovers() {
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = cluster(&dirs, &[]);
    assert_eq!(status(&nodes[0].addr)["in_majority"], true);
    assert_eq!(status(&nodes[0].addr)["largest_cluster"], 5);
    // Three of five go silent (frozen): the two left see too few members.
    for n in &nodes[2..] {
        n.signal("STOP");
    }
    for n in &nodes[..2] {
        eventually(
            &format!("{} reports it is not in the majority", n.addr),
            || {
                let s = status(&n.addr);
                s["in_majority"] == false && s["dead"] == 3 && s["largest_cluster"] == 5
            },
        );
    }
    // Healed: everyone refutes, every roster agrees again, the majority is back.
    for n in &nodes[2..] {
        n.signal("CONT");
    }
    for n in &nodes {
        eventually(
            &format!("{} back in the majority with all alive", n.addr),
            || {
                let s = status(&n.addr);
                s["in_majority"] == true && s["alive"] == 5
            },
        );
    }
    let views: Vec<_> = nodes
        .iter()
        .map(|n| id_states(&members(&n.addr, &[]).unwrap()))
        .collect();
    assert_same_views(&views);
}
