//! Restarts of real `gossip-node` processes on 127.0.0.1 (free ports; killed when the test
//! ends, even on a panic):
//!
//! - a node of three restarted on its data dir (SIGTERM, or kill -9; the node hosting 3,000
//!   actors, or the seed) must not leave the cluster gossiping more than before: idle bytes
//!   per node per second after the restart stay within twice the idle bytes before it (plus
//!   a small absolute slack);
//! - a node that crashed, was declared dead and then reaped by the others (short
//!   `--tombstone-ttl-s`) and restarts on its data dir is listed alive again and its actor
//!   located on it.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// Starts a node with `args` (which include `--listen`); retries for a while if the port is
/// still held (a restart right after the previous process on that port exited).
fn start(dir: &Path, args: &[&str]) -> NodeProc {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match NodeProc::start_net(dir, args) {
            Ok(node) => return node,
            Err(log) if log.contains("in use") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(log) => panic!("node {args:?} did not start:\n{log}"),
        }
    }
}

fn status(addr: &str) -> Option<Value> {
    let out = admin(&["status", "--connect", addr, "--json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn member<'a>(roster: &'a Value, id: &str) -> Option<&'a Value> {
    roster.as_array()?.iter().find(|m| m["id"] == id)
}

fn actor_count(m: &Value) -> usize {
    m["actors"].as_array().map_or(0, Vec::len)
}

/// `locate ACTOR --json`: the ids of its hosts, or the error.
fn locate(addr: &str, actor: &str) -> Result<Vec<String>, String> {
    let out = admin(&["locate", "--connect", addr, actor, "--json"]);
    if !out.status.success() {
        return Err(stderr(&out));
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    Ok(v.as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect())
}

/// Polls `check` (which says what it saw when it does not hold) until it holds or `limit`
/// passes; then fails with the last observation. A bound against hangs, not a timing claim.
fn eventually_within(what: &str, limit: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match check() {
            Ok(()) => {
                println!("{what}: after {:.1} s", start.elapsed().as_secs_f64());
                return;
            }
            Err(seen) if start.elapsed() > limit => {
                panic!("never happened within {limit:?}: {what}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Waits (bounded) for a process we signalled to exit; kills it if it does not.
fn wait_exit(mut node: NodeProc, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(st) = node.child.try_wait().unwrap() {
            return Some(st.code().unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Idle bytes sent per second by each node (`status.bytes_sent` over `window`).
fn idle_rates(addrs: &[&str], window: Duration) -> Vec<f64> {
    let sample = |addr: &str| -> (Instant, u64) {
        let s = status(addr).unwrap_or_else(|| panic!("status of {addr} failed"));
        (Instant::now(), s["bytes_sent"].as_u64().unwrap())
    };
    let before: Vec<_> = addrs.iter().map(|a| sample(a)).collect();
    std::thread::sleep(window);
    let after: Vec<_> = addrs.iter().map(|a| sample(a)).collect();
    before
        .iter()
        .zip(&after)
        .map(|((t0, b0), (t1, b1))| (b1 - b0) as f64 / (*t1 - *t0).as_secs_f64())
        .collect()
}

const ACTORS: usize = 3000;
const WINDOW: Duration = Duration::from_secs(5);
const SETTLE: Duration = Duration::from_secs(5);
/// Absolute slack (bytes per second) on top of 2x the baseline.
const SLACK: f64 = 2048.0;

/// Every node sees a, b, c alive, b with all its actors, and `id` in the generation `gen` it
/// reports itself.
fn converged(addrs: &[&str], id: &str, gen: u64) -> Result<(), String> {
    for addr in addrs {
        let r = members(addr, &[]).ok_or_else(|| format!("members of {addr} failed"))?;
        for id in ["a", "b", "c"] {
            let m = member(&r, id).ok_or_else(|| format!("{addr} does not list {id}"))?;
            if m["state"] != "alive" {
                return Err(format!("{addr} holds {id} {}", m["state"]));
            }
        }
        let b = actor_count(member(&r, "b").unwrap());
        if b != ACTORS {
            return Err(format!("{addr} lists {b} actors on b"));
        }
        let g = &member(&r, id).unwrap()["generation"];
        if g != gen {
            return Err(format!(
                "{addr} holds {id} in generation {g}, it is in {gen}"
            ));
        }
    }
    Ok(())
}

/// a, b and c (b and c seeded to a), 3,000 actors on b; then `restarted` (a or b) is stopped
/// with `signal` and started again with the same command (same data dir, port and seeds).
fn idle_traffic_after_a_restart(restarted: &str, signal: &str) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let listen_a = format!("127.0.0.1:{}", free_port());
    let a_args = ["--node-id", "a", "--listen", listen_a.as_str()];
    let a = start(dirs[0].path(), &a_args);
    let a_addr = a.addr.clone();
    let listen_b = format!("127.0.0.1:{}", free_port());
    let b_args = ["--node-id", "b", "--listen", &listen_b, "--seed", &a_addr];
    let b = start(dirs[1].path(), &b_args);
    let b_addr = b.addr.clone();
    let c = start(
        dirs[2].path(),
        &[
            "--node-id",
            "c",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            &a_addr,
        ],
    );
    let c_addr = c.addr.clone();
    let addrs = [a_addr.as_str(), b_addr.as_str(), c_addr.as_str()];

    let names: Vec<String> = (0..ACTORS).map(|i| format!("actor{i:05}")).collect();
    for chunk in names.chunks(500) {
        let mut args = vec!["actors", "add", "--connect", &b_addr];
        args.extend(chunk.iter().map(String::as_str));
        let out = admin(&args);
        assert!(out.status.success(), "actors add: {}", stderr(&out));
    }
    let (dir, args, addr): (&Path, &[&str], &str) = match restarted {
        "a" => (dirs[0].path(), &a_args, &a_addr),
        _ => (dirs[1].path(), &b_args, &b_addr),
    };
    let gen = status(addr).unwrap()["generation"].as_u64().unwrap();
    eventually_within(
        "all three see a, b, c alive and b's 3000 actors",
        Duration::from_secs(60),
        || converged(&addrs, restarted, gen),
    );
    std::thread::sleep(SETTLE);
    let before = idle_rates(&addrs, WINDOW);
    println!("idle bytes/s per node (a, b, c) before the restart of {restarted}: {before:.0?}");

    // It stops (SIGTERM or kill -9) and starts again with the same command.
    let (node, others) = match restarted {
        "a" => (a, [b, c]),
        _ => (b, [a, c]),
    };
    node.signal(signal);
    let code = wait_exit(node, Duration::from_secs(30));
    println!("{restarted} exited after SIG{signal} with {code:?}");
    let node = start(dir, args);
    assert_eq!(node.addr, addr, "same --listen, same address");
    let gen = status(addr).unwrap()["generation"].as_u64().unwrap();
    eventually_within(
        &format!("all three see the restarted {restarted} alive, and b's 3000 actors"),
        Duration::from_secs(60),
        || converged(&addrs, restarted, gen),
    );
    std::thread::sleep(SETTLE);
    let after = idle_rates(&addrs, WINDOW);
    println!("idle bytes/s per node (a, b, c) after the restart of {restarted}: {after:.0?}");

    let too_much: Vec<String> = ["a", "b", "c"]
        .iter()
        .zip(before.iter().zip(&after))
        .filter(|(_, (b, a))| **a > 2.0 * **b + SLACK)
        .map(|(id, (b, a))| format!("{id}: {a:.0} B/s after, {b:.0} B/s before"))
        .collect();
    assert!(
        too_much.is_empty(),
        "idle traffic after a restart of {restarted} (SIG{signal}) is more than 2x the \
         baseline + {SLACK} B/s: {too_much:?}"
    );
    drop((node, others));
}

/// The node hosting the 3,000 actors (b, seeded to a) stops gracefully and comes back (as a
/// new generation, its actors carried over).
#[test]
fn idle_traffic_after_a_graceful_restart_of_the_actor_host_stays_at_the_baseline() {
    idle_traffic_after_a_restart("b", "TERM");
}

#[test]
fn idle_traffic_after_a_crash_and_restart_of_the_actor_host_stays_at_the_baseline() {
    idle_traffic_after_a_restart("b", "KILL");
}

/// The seed (a, no actors) restarts.
#[test]
fn idle_traffic_after_a_graceful_restart_of_the_seed_stays_at_the_baseline() {
    idle_traffic_after_a_restart("a", "TERM");
}

#[test]
fn idle_traffic_after_a_crash_and_restart_of_the_seed_stays_at_the_baseline() {
    idle_traffic_after_a_restart("a", "KILL");
}

#[test]
fn a_reaped_node_that_restarts_is_alive_again_and_hosts_its_actor() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ttl = ["--tombstone-ttl-s", "3"];
    let mut t1_args = vec!["--node-id", "t1", "--listen", "127.0.0.1:0"];
    t1_args.extend(ttl);
    let t1 = start(dirs[0].path(), &t1_args);
    let mut t2_args = vec!["--node-id", "t2", "--listen", "127.0.0.1:0"];
    t2_args.extend(["--seed", &t1.addr]);
    t2_args.extend(ttl);
    let t2 = start(dirs[1].path(), &t2_args);
    let listen_t3 = format!("127.0.0.1:{}", free_port());
    let mut t3_args = vec!["--node-id", "t3", "--listen", &listen_t3, "--actor", "x"];
    t3_args.extend(["--seed", &t1.addr]);
    t3_args.extend(ttl);
    let t3 = start(dirs[2].path(), &t3_args);
    let others = [t1.addr.as_str(), t2.addr.as_str()];

    let t3_state = |addr: &str| -> Result<Option<String>, String> {
        let r = members(addr, &[]).ok_or_else(|| format!("members of {addr} failed"))?;
        Ok(member(&r, "t3").map(|m| m["state"].as_str().unwrap().to_owned()))
    };
    for addr in others {
        eventually_within(
            &format!("{addr} sees t3 alive"),
            Duration::from_secs(60),
            || match t3_state(addr)? {
                Some(s) if s == "alive" => Ok(()),
                other => Err(format!("t3: {other:?}")),
            },
        );
    }
    eventually_within(
        "t1 locates x on t3",
        Duration::from_secs(60),
        || match locate(others[0], "x")? {
            hosts if hosts == ["t3"] => Ok(()),
            hosts => Err(format!("hosts of x: {hosts:?}")),
        },
    );

    // t3 crashes: declared dead, then reaped after the 3 s tombstone TTL.
    let mut t3 = t3;
    t3.signal("KILL");
    t3.child.wait().unwrap();
    drop(t3);
    for addr in others {
        eventually_within(
            &format!("{addr} holds t3 dead"),
            Duration::from_secs(60),
            || match t3_state(addr)? {
                Some(s) if s == "dead" => Ok(()),
                other => Err(format!("t3: {other:?}")),
            },
        );
    }
    for addr in others {
        eventually_within(
            &format!("{addr} has reaped t3"),
            Duration::from_secs(60),
            || match t3_state(addr)? {
                None => Ok(()),
                other => Err(format!("t3: {other:?}")),
            },
        );
    }

    // t3 restarts on its data dir with the same command.
    let t3 = start(dirs[2].path(), &t3_args);
    let t3_status = status(&t3.addr).unwrap();
    println!(
        "t3 restarted: generation {}, incarnation {}",
        t3_status["generation"], t3_status["incarnation"]
    );
    let view = |addr: &str| -> String {
        let r = members(addr, &[]);
        let t3 = r.as_ref().and_then(|r| member(r, "t3")).cloned();
        format!("{addr}: t3 = {t3:?}")
    };
    let result = std::panic::catch_unwind(|| {
        for addr in others {
            eventually_within(
                &format!("{addr} lists t3 alive again"),
                Duration::from_secs(30),
                || match t3_state(addr)? {
                    Some(s) if s == "alive" => Ok(()),
                    other => Err(format!("t3: {other:?}")),
                },
            );
        }
        eventually_within(
            "t1 locates x on t3 again",
            Duration::from_secs(30),
            || match locate(others[0], "x")? {
                hosts if hosts == ["t3"] => Ok(()),
                hosts => Err(format!("hosts of x: {hosts:?}")),
            },
        );
    });
    if result.is_err() {
        println!("views of t3: {} | {}", view(others[0]), view(others[1]));
        println!(
            "t3's own roster: {:?}",
            members(&t3.addr, &[]).map(|r| id_states(&r))
        );
    }
    drop((t1, t2, t3));
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// The hosted actors of `id` as `addr` sees them, sorted (empty when it is not listed).
fn actors_of(addr: &str, id: &str) -> Result<(Vec<String>, u64), String> {
    let r = members(addr, &[]).ok_or_else(|| format!("members of {addr} failed"))?;
    let m = member(&r, id).ok_or_else(|| format!("{id} is not listed by {addr}"))?;
    let mut actors: Vec<String> = m["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    actors.sort();
    Ok((actors, m["version"].as_u64().unwrap()))
}

/// A node restored from an older copy of its data dir (the peers hold newer versions of its
/// record: actors it registered after the copy was taken) wins its record back: the cluster
/// ends with the content of the restored dir, at versions above any the peers held.
#[test]
fn a_data_dir_restored_from_an_older_copy_wins_its_record_back() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start(
        dirs[0].path(),
        &["--node-id", "a", "--listen", "127.0.0.1:0"],
    );
    let listen_b = format!("127.0.0.1:{}", free_port());
    let b_args = ["--node-id", "b", "--listen", &listen_b, "--seed", &a.addr];
    let b = start(dirs[1].path(), &b_args);
    assert!(admin(&["actors", "add", "--connect", &b.addr, "old"])
        .status
        .success());
    eventually_within(
        "a sees b's old actor",
        Duration::from_secs(30),
        || match actors_of(&a.addr, "b")? {
            (actors, _) if actors == ["old"] => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // The copy: taken of a stopped node (kill -9: no leave), as a backup would be.
    let mut b = b;
    b.signal("KILL");
    b.child.wait().unwrap();
    drop(b);
    let copy = tempfile::tempdir().unwrap();
    copy_tree(dirs[1].path(), copy.path());
    let b = start(dirs[1].path(), &b_args);
    assert!(
        admin(&["actors", "add", "--connect", &b.addr, "new1", "new2"])
            .status
            .success()
    );
    assert!(admin(&["actors", "remove", "--connect", &b.addr, "old"])
        .status
        .success());
    let mut newer = 0;
    eventually_within(
        "a sees b's newer actors",
        Duration::from_secs(30),
        || match actors_of(&a.addr, "b")? {
            (actors, v) if actors == ["new1", "new2"] => {
                newer = v;
                Ok(())
            }
            other => Err(format!("{other:?}")),
        },
    );
    // Restore the older copy in place and restart on it.
    let mut b = b;
    b.signal("KILL");
    b.child.wait().unwrap();
    drop(b);
    std::fs::remove_dir_all(dirs[1].path()).unwrap();
    copy_tree(copy.path(), dirs[1].path());
    let b = start(dirs[1].path(), &b_args);
    for addr in [a.addr.as_str(), b.addr.as_str()] {
        eventually_within(
            &format!("{addr} holds b's restored content above version {newer}"),
            Duration::from_secs(30),
            || match actors_of(addr, "b")? {
                (actors, v) if actors == ["old"] && v > newer => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }
    assert_eq!(locate(&a.addr, "old").unwrap(), ["b"]);
    assert!(locate(&a.addr, "new1").unwrap().is_empty());
}
