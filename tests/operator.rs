//! Operator commands against real processes: `remove` (force-leave of a dead member, refused
//! for a live one unless `--force`) and `leave` (a node asked to leave gracefully and stop).

mod common;

use common::*;
use tempfile::TempDir;

fn state_of(node: &NodeProc, id: &str) -> Option<String> {
    let m = members(&node.addr, &[])?;
    id_states(&m)
        .into_iter()
        .find(|(i, _)| i == id)
        .map(|(_, s)| s)
}

fn generation_of(node: &NodeProc, id: &str) -> Option<u64> {
    let m = members(&node.addr, &[])?;
    m.as_array()?
        .iter()
        .find(|x| x["id"] == id)
        .and_then(|x| x["generation"].as_u64())
}

fn status_json(node: &NodeProc) -> serde_json::Value {
    let out = admin(&["status", "--connect", &node.addr, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn start(dir: &TempDir, id: &str, seed: Option<&str>) -> NodeProc {
    let mut args = vec!["--node-id", id];
    if let Some(s) = seed {
        args.extend(["--seed", s]);
    }
    NodeProc::start_net(dir.path(), &args).expect("node starts")
}

#[test]
fn remove_marks_a_dead_member_left_everywhere_and_refuses_a_live_one() {
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let a = start(&dirs[0], "a", None);
    let b = start(&dirs[1], "b", Some(&a.addr));
    let mut c = start(&dirs[2], "c", Some(&a.addr));
    for n in [&a, &b, &c] {
        for id in ["a", "b", "c"] {
            eventually("all alive", || state_of(n, id).as_deref() == Some("alive"));
        }
    }

    // Refused: a live member, this node itself, a stranger.
    for (target, why) in [
        ("c", "not dead"),
        ("a", "this node"),
        ("zed", "not a member"),
    ] {
        let out = admin(&["remove", "--connect", &a.addr, target]);
        assert!(!out.status.success(), "remove {target} must be refused");
        assert!(stderr(&out).contains(why), "{target}: {}", stderr(&out));
    }
    assert_eq!(
        state_of(&b, "c").as_deref(),
        Some("alive"),
        "nothing changed"
    );

    c.child.kill().unwrap();
    c.child.wait().unwrap();
    eventually("c is dead on a", || {
        state_of(&a, "c").as_deref() == Some("dead")
    });
    assert_eq!(status_json(&a)["largest_cluster"], 3);
    let out = admin(&["remove", "--connect", &a.addr, "c"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("removed c (was dead)"),
        "{}",
        stdout(&out)
    );
    for n in [&a, &b] {
        eventually("c is left everywhere", || {
            state_of(n, "c").as_deref() == Some("left")
        });
        eventually("the quorum no longer counts c", || {
            status_json(n)["largest_cluster"] == 2
        });
    }
    let out = admin(&["remove", "--connect", &b.addr, "c"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already left"), "{}", stderr(&out));
}

#[test]
fn remove_force_of_a_live_member_makes_it_rejoin_under_a_new_generation() {
    let dirs: Vec<TempDir> = (0..2).map(|_| TempDir::new().unwrap()).collect();
    let a = start(&dirs[0], "a", None);
    let b = start(&dirs[1], "b", Some(&a.addr));
    eventually("b alive on a", || {
        state_of(&a, "b").as_deref() == Some("alive")
    });
    let before = generation_of(&a, "b").unwrap();
    let out = admin(&["remove", "--connect", &a.addr, "b", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("was alive"), "{}", stdout(&out));
    eventually("b is back, alive, in a newer generation", || {
        state_of(&a, "b").as_deref() == Some("alive")
            && generation_of(&a, "b").is_some_and(|g| g > before)
    });
    assert_eq!(
        generation_of(&b, "b"),
        generation_of(&a, "b"),
        "both agree on b's generation"
    );
}

#[test]
fn leave_makes_the_node_leave_gracefully_and_exit_zero() {
    let dirs: Vec<TempDir> = (0..2).map(|_| TempDir::new().unwrap()).collect();
    let a = start(&dirs[0], "a", None);
    let mut b = start(&dirs[1], "b", Some(&a.addr));
    eventually("b alive on a", || {
        state_of(&a, "b").as_deref() == Some("alive")
    });
    let out = admin(&["leave", "--connect", &b.addr]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("left the cluster"),
        "{}",
        stdout(&out)
    );
    let status = b.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "a requested leave is a clean exit");
    b.wait_for("stopped").ok();
    assert!(
        b.lines.iter().any(|l| l.contains("admin client's request")),
        "{:?}",
        b.lines
    );
    eventually("a holds b as left", || {
        state_of(&a, "b").as_deref() == Some("left")
    });
}
