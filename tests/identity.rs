//! A second process that claims the node id of a live member (its own data dir, the same
//! `--node-id`), with real `gossip-node` processes on 127.0.0.1 (free ports; every process
//! killed when the test ends, even on a panic): it must stop with a non-zero exit code and
//! a message naming the id and the live holder's address, and the cluster must keep the
//! real node's address and actors throughout.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process started by hand (not through `NodeProc`: it may exit before it ever logs
/// "node started"); killed on drop if still running.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, id: &str, extra: &[&str]) -> NodeProc {
    let mut args = vec!["--node-id", id];
    args.extend(extra);
    NodeProc::start_net(dir, &args).unwrap_or_else(|log| panic!("{id} did not start:\n{log}"))
}

fn member<'a>(roster: &'a Value, id: &str) -> Option<&'a Value> {
    roster.as_array()?.iter().find(|m| m["id"] == id)
}

/// What is wrong with `addr`'s view of f4 (its address, state and actor, and where it
/// locates f4's actor), or `None` when it is the real f4's.
fn wrong_view_of_f4(addr: &str, real_addr: &str) -> Option<String> {
    let Some(r) = members(addr, &[]) else {
        return Some(format!("{addr}: members failed"));
    };
    let Some(f4) = member(&r, "f4") else {
        return Some(format!("{addr}: f4 not listed"));
    };
    let actors: Vec<&str> = f4["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    if f4["addr"] != real_addr || f4["state"] != "alive" || actors != ["f4-actor"] {
        return Some(format!(
            "{addr}: f4 at {} {} with actors {actors:?} (real: {real_addr}, alive, [f4-actor])",
            f4["addr"], f4["state"]
        ));
    }
    let out = admin(&["locate", "--connect", addr, "f4-actor", "--json"]);
    if !out.status.success() {
        return Some(format!("{addr}: locate failed: {}", stderr(&out)));
    }
    let hosts: Value = serde_json::from_slice(&out.stdout).unwrap();
    let hosts: Vec<(String, String)> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["addr"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    if hosts != [("f4".to_owned(), real_addr.to_owned())] {
        return Some(format!(
            "{addr}: locate f4-actor gives {hosts:?}, not f4 at {real_addr}"
        ));
    }
    None
}

#[test]
fn a_second_process_with_a_live_node_id_exits_and_the_cluster_keeps_the_real_one() {
    impostor_run(false);
}

/// The same, with the impostor seeded to the real holder of the id itself (found by a
/// black-box trial: it used to stay up and later take the id over).
#[test]
fn a_second_process_seeded_to_the_live_holder_of_its_id_exits_too() {
    impostor_run(true);
}

fn impostor_run(seed_to_holder: bool) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let g1 = start(dirs[0].path(), "g1", &[]);
    let mut f4 = start(
        dirs[1].path(),
        "f4",
        &["--seed", &g1.addr, "--actor", "f4-actor"],
    );
    let real = f4.addr.clone();
    eventually("g1 sees the real f4 with its actor", || {
        wrong_view_of_f4(&g1.addr, &real).is_none() && wrong_view_of_f4(&f4.addr, &real).is_none()
    });

    // The impostor: another data dir, the same id, seeded to the cluster.
    let log_path = dirs[2].path().join("impostor.log");
    let mut impostor = Proc(
        Command::new(NODE)
            .arg("--data-dir")
            .arg(dirs[2].path().join("data"))
            .args(["--listen", "127.0.0.1:0", "--node-id", "f4"])
            .args(["--seed", if seed_to_holder { &f4.addr } else { &g1.addr }])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("spawn gossip-node"),
    );

    // Watch the cluster's view of f4 until the impostor exits (bounded), and a while after.
    let started = Instant::now();
    let mut exit = None;
    let mut wrong: Vec<String> = Vec::new();
    let mut checks = 0;
    let mut watch_after_exit = None;
    loop {
        if exit.is_none() {
            exit = impostor.0.try_wait().unwrap();
            if exit.is_some() {
                println!(
                    "impostor exited after {:.1} s with {:?}",
                    started.elapsed().as_secs_f64(),
                    exit
                );
                watch_after_exit = Some(Instant::now() + Duration::from_secs(3));
            }
        }
        for addr in [&g1.addr, &f4.addr] {
            checks += 1;
            if let Some(w) = wrong_view_of_f4(addr, &real) {
                if wrong.len() < 10 {
                    println!("at {:.1} s: {w}", started.elapsed().as_secs_f64());
                }
                wrong.push(w);
            }
        }
        let done = match watch_after_exit {
            Some(until) => Instant::now() > until,
            None => started.elapsed() > Duration::from_secs(20),
        };
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let real_f4_running = f4.child.try_wait().unwrap().is_none();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    println!("impostor's stderr:\n{log}");
    println!(
        "cluster's view of f4: {} wrong of {checks} checks; real f4 still running: {real_f4_running}",
        wrong.len()
    );

    let mut failures = Vec::new();
    match exit {
        None => failures.push("the impostor was still running after 20 s".to_owned()),
        Some(st) if st.success() => failures.push(format!("the impostor exited with {st}")),
        Some(_) => {}
    }
    if !(log.contains("f4") && log.contains(&real)) {
        failures.push(format!(
            "the impostor's output does not name the id f4 and the live holder {real}"
        ));
    }
    if !wrong.is_empty() {
        failures.push(format!(
            "the cluster's view of f4 was wrong {} times of {checks}, first: {}",
            wrong.len(),
            wrong[0]
        ));
    }
    if !real_f4_running {
        failures.push("the real f4 is no longer running".to_owned());
    }
    drop(impostor);
    drop((g1, f4));
    assert!(failures.is_empty(), "{failures:#?}");
}
