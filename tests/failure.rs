//! Failure detection with real `gossip-node` processes on 127.0.0.1: a killed node is
//! declared dead by all (its actors no longer located) and comes back alive with a higher
//! incarnation; a node that goes silent without closing its connections (SIGSTOP) is
//! declared dead too, and refutes when it resumes; a frozen node that resumes while only
//! suspected is never declared dead (checked in every WAL); a node that loses most of the
//! cluster says it is not in the majority, and recovers. Every wait polls for a condition;
//! nothing asserts a duration.

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

/// A node frozen with SIGSTOP: its process and connections stay open, it just goes silent.
/// Dropping the guard (also when the test panics) sends SIGCONT, so no process is left
/// stopped; `NodeProc`'s own drop then kills it.
struct Frozen<'a>(&'a NodeProc);

impl<'a> Frozen<'a> {
    fn new(node: &'a NodeProc) -> Self {
        node.signal("STOP");
        Frozen(node)
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.child.id().to_string()])
            .status();
    }
}

/// Stops the nodes gracefully (their WALs synced) and returns every `NodeDead` event about
/// `id` that any of them logged: each node logs every change it applied, so a declaration
/// of death anywhere, even one refuted a moment later, is in some WAL.
fn dead_declarations(nodes: Vec<NodeProc>, dirs: &[tempfile::TempDir], id: &str) -> Vec<Value> {
    for n in nodes {
        assert_eq!(n.stop(), 0, "a graceful stop exits 0");
    }
    let mut found = Vec::new();
    for dir in dirs {
        let out = gossip_log(&["dump", "--json"], dir.path());
        assert!(out.status.success(), "dump: {}", stderr(&out));
        let records: Vec<Value> = stdout(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(!records.is_empty(), "every node logged its own arrival");
        eprintln!(
            "DBG {:?}",
            records
                .iter()
                .map(|r| format!("{} {} {}", r["kind"], r["node"], r["incarnation"]))
                .collect::<Vec<_>>()
        );
        found.extend(
            records
                .into_iter()
                .filter(|r| r["kind"] == "NodeDead" && r["node"] == id),
        );
    }
    found
}

fn locate(addr: &str, actor: &str) -> Vec<String> {
    let out = admin(&["locate", "--connect", addr, actor, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let hosts: Value = serde_json::from_slice(&out.stdout).unwrap();
    hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_killed_node_is_declared_dead_and_comes_back_with_a_higher_incarnation() {
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = cluster(&dirs, &[]);
    // The victim hosts an actor, found from everywhere while it lives.
    let out = admin(&["actors", "add", "--connect", &nodes[4].addr, "billing"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for n in &nodes {
        eventually("billing located on n4", || {
            locate(&n.addr, "billing") == ["n4"]
        });
    }
    let mut victim = nodes.remove(4);
    victim.signal("KILL");
    victim.child.wait().unwrap();
    drop(victim);
    let mut dead_at = 0;
    for n in &nodes {
        eventually(&format!("{} declares n4 dead", n.addr), || {
            members(&n.addr, &[]).is_some_and(|r| match state_of(&r, "n4") {
                Some((s, inc)) if s == "dead" => {
                    dead_at = dead_at.max(inc);
                    true
                }
                _ => false,
            })
        });
        // locate never answers with a dead node's actors.
        assert_eq!(locate(&n.addr, "billing"), Vec::<String>::new());
    }
    // Restarted on its data dir (no seed): it refutes with a higher incarnation, and its
    // actor is found again.
    let back = NodeProc::start_net(dirs[4].path(), &[]).unwrap();
    for n in nodes.iter().chain([&back]) {
        eventually(&format!("{} sees n4 alive again", n.addr), || {
            members(&n.addr, &[]).is_some_and(|r| {
                state_of(&r, "n4").is_some_and(|(s, inc)| s == "alive" && inc > dead_at)
            })
        });
        eventually("billing located on n4 again", || {
            locate(&n.addr, "billing") == ["n4"]
        });
    }
}

#[test]
fn a_silent_node_with_open_connections_is_declared_dead_and_refutes_when_it_resumes() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = cluster(&dirs, &[]);
    let silent = &nodes[3];
    let frozen = Frozen::new(silent);
    // No connection closes (the process lives): only unanswered probes can tell.
    let mut dead_at = 0;
    for n in &nodes[..3] {
        eventually(&format!("{} declares the silent n3 dead", n.addr), || {
            members(&n.addr, &[]).is_some_and(|r| match state_of(&r, "n3") {
                Some((s, inc)) if s == "dead" => {
                    dead_at = dead_at.max(inc);
                    true
                }
                _ => false,
            })
        });
    }
    drop(frozen);
    for n in &nodes {
        eventually(&format!("{} sees n3 alive again", n.addr), || {
            members(&n.addr, &[]).is_some_and(|r| {
                state_of(&r, "n3").is_some_and(|(s, inc)| s == "alive" && inc > dead_at)
            })
        });
    }
}

#[test]
fn a_frozen_node_that_resumes_within_its_suspicion_is_never_declared_dead() {
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    // A minimum suspicion of 100 x 300 ms = 30 s: far longer than it takes to see the
    // suspicion and resume the node. The test waits for conditions, never for durations.
    let nodes = cluster(&dirs, &["--suspicion-mult", "100"]);
    let frozen = Frozen::new(&nodes[3]);
    eventually("someone suspects the frozen n3", || {
        nodes[..3].iter().any(|n| {
            members(&n.addr, &[])
                .is_some_and(|r| state_of(&r, "n3").is_some_and(|(s, _)| s == "suspect"))
        })
    });
    drop(frozen);
    // It hears the suspicion and refutes: alive everywhere, with a higher incarnation.
    for n in &nodes {
        eventually("n3 alive everywhere after refuting", || {
            members(&n.addr, &[]).is_some_and(|r| {
                state_of(&r, "n3").is_some_and(|(s, inc)| s == "alive" && inc >= 1)
            })
        });
    }
    // Never declared dead by anyone, not even for a moment (every WAL, checked whole).
    let dead = dead_declarations(nodes, &dirs, "n3");
    assert!(dead.is_empty(), "n3 was declared dead: {dead:?}");
}

#[test]
fn a_node_cut_off_from_the_majority_says_so_and_recovers() {
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes = cluster(&dirs, &[]);
    assert_eq!(status(&nodes[0].addr)["in_majority"], true);
    assert_eq!(status(&nodes[0].addr)["largest_cluster"], 5);
    // Three of five go silent (frozen): the two left see too few members.
    let frozen: Vec<Frozen> = nodes[2..].iter().map(Frozen::new).collect();
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
    drop(frozen);
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
