//! Real `gossip-node` processes on 127.0.0.1 (free ports; killed when the test ends): joining
//! through one seed, actor propagation, restart rejoin, catch-up, cluster names and secrets.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;

fn ids_alive(roster: &Value) -> Vec<String> {
    let mut ids: Vec<String> = roster
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["state"] == "alive")
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn locate(addr: &str, actor: &str) -> Vec<String> {
    let out = admin(&["locate", "--connect", addr, actor, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

fn start(dir: &Path, id: &str, extra: &[&str]) -> NodeProc {
    let mut args = vec!["--node-id", id];
    args.extend(extra);
    NodeProc::start_net(dir, &args).unwrap_or_else(|log| panic!("{id} did not start:\n{log}"))
}

#[test]
fn five_nodes_join_through_one_seed_and_locate_actors_everywhere() {
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let seed = start(dirs[0].path(), "n0", &[]);
    let mut nodes = vec![seed];
    for (i, dir) in dirs.iter().enumerate().skip(1) {
        let seed_addr = nodes[0].addr.clone();
        nodes.push(start(dir.path(), &format!("n{i}"), &["--seed", &seed_addr]));
    }
    let all: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
    for n in &nodes {
        eventually(&format!("{} sees all five alive", n.addr), || {
            members(&n.addr, &[]).is_some_and(|r| ids_alive(&r) == all)
        });
    }
    // Addresses travel with the members.
    let roster = members(&nodes[2].addr, &[]).unwrap();
    for n in &nodes {
        assert!(roster
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["addr"] == n.addr.as_str()));
    }

    // An actor registered on n3 is located from every node.
    let out = admin(&[
        "actors",
        "add",
        "--connect",
        &nodes[3].addr,
        "billing",
        "search",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "added billing\nadded search\n");
    for n in &nodes {
        eventually(&format!("{} locates billing on n3", n.addr), || {
            locate(&n.addr, "billing") == ["n3"]
        });
    }
    let out = admin(&["actors", "remove", "--connect", &nodes[3].addr, "billing"]);
    assert!(out.status.success());
    for n in &nodes {
        eventually("billing is gone everywhere", || {
            locate(&n.addr, "billing").is_empty()
        });
    }

    // status reports the node and the counts.
    let out = admin(&["status", "--connect", &nodes[1].addr, "--json"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["node_id"], "n1");
    assert_eq!(status["alive"], 5);

    // A graceful stop is seen as `left` by the others.
    let n4 = nodes.pop().unwrap();
    assert_eq!(n4.stop(), 0);
    eventually("n4 is left everywhere", || {
        nodes.iter().all(|n| {
            members(&n.addr, &[]).is_some_and(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["id"] == "n4" && m["state"] == "left")
            })
        })
    });
}

#[test]
fn a_restarted_node_rejoins_without_seeds_and_catches_up() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start(dirs[0].path(), "a", &[]);
    let b = start(dirs[1].path(), "b", &["--seed", &a.addr]);
    let c = start(dirs[2].path(), "c", &["--seed", &a.addr]);
    let (a_addr, b_addr, c_addr) = (a.addr.clone(), b.addr.clone(), c.addr.clone());
    eventually("three members", || {
        members(&c_addr, &[]).is_some_and(|r| ids_alive(&r).len() == 3)
    });

    // c crashes; meanwhile the cluster changes.
    let mut c = c;
    c.signal("KILL");
    c.child.wait().unwrap();
    drop(c);
    assert!(admin(&["actors", "add", "--connect", &b_addr, "ledger"])
        .status
        .success());

    // c restarts on its data dir with no seed (on a new port): same id, and it learns what
    // it missed from the peers it remembers; they learn its new address.
    let c = NodeProc::start_net(dirs[2].path(), &[]).unwrap();
    assert_ne!(c.addr, c_addr);
    let status: Value =
        serde_json::from_slice(&admin(&["status", "--connect", &c.addr, "--json"]).stdout).unwrap();
    assert_eq!(status["node_id"], "c");
    eventually("c catches up", || locate(&c.addr, "ledger") == ["b"]);
    eventually("a sees c at its new address", || {
        members(&a_addr, &[]).is_some_and(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .any(|m| m["id"] == "c" && m["addr"] == c.addr.as_str())
        })
    });
    drop((a, b));
}

#[test]
fn different_cluster_names_refuse_each_other() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let a = start(d1.path(), "a", &["--cluster", "blue"]);
    let mut b = start(d2.path(), "b", &["--cluster", "green", "--seed", &a.addr]);
    b.wait_for("cluster mismatch").expect("b logs the refusal");
    let roster = members(&b.addr, &[]).unwrap();
    assert_eq!(
        ids_alive(&roster),
        ["b"],
        "nothing from the other cluster got in"
    );
    assert_eq!(ids_alive(&members(&a.addr, &[]).unwrap()), ["a"]);
}

#[test]
fn a_wrong_secret_is_refused_for_peers_and_admin() {
    let keys = tempfile::tempdir().unwrap();
    let good = keys.path().join("good");
    let bad = keys.path().join("bad");
    std::fs::write(&good, "correct horse battery staple\n").unwrap();
    std::fs::write(&bad, "wrong").unwrap();
    let (good, bad) = (good.to_str().unwrap(), bad.to_str().unwrap());
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let d3 = tempfile::tempdir().unwrap();
    let a = start(d1.path(), "a", &["--secret-file", good]);
    let b = start(d2.path(), "b", &["--secret-file", good, "--seed", &a.addr]);
    let mut c = start(d3.path(), "c", &["--secret-file", bad, "--seed", &a.addr]);
    eventually("a and b joined", || {
        members(&a.addr, &["--secret-file", good]).is_some_and(|r| ids_alive(&r) == ["a", "b"])
    });
    c.wait_for("authentication").expect("c logs the refusal");
    // Admin without the secret, or with the wrong one, is refused.
    let out = admin(&["members", "--connect", &a.addr]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("authentication"), "{}", stderr(&out));
    assert!(members(&a.addr, &["--secret-file", bad]).is_none());
    assert_eq!(
        ids_alive(&members(&a.addr, &["--secret-file", good]).unwrap()),
        ["a", "b"]
    );
    drop((b, c));
}
