//! Crash loop: a real `gossip-node` takes a stream of actor adds and removes through its admin
//! port while being killed with SIGKILL at random instants (small segments and a low
//! compaction threshold make rollovers and compactions frequent, so kills land in them too).
//! An oracle records what was acknowledged; after every restart each acknowledged change must
//! be there, and the data dir must open. At the end `gossip-log verify` must be clean.
//!
//! 20 cycles by default; `GOSSIP_CRASH_CYCLES=1000 cargo test --release --test crash_loop --
//! --nocapture` (or `tools/crash-loop 1000`) for the long run.

mod common;
use common::*;
use gossip_roster::admin;
use gossip_roster::message::{AdminReply, AdminRequest};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// What we know of one actor: the last acknowledged state, and whether a request whose
/// outcome we never learned (the node died mid-request) came after it.
#[derive(Clone, Copy, Debug, Default)]
struct Known {
    present: bool,
    uncertain: bool,
}

fn hosted(addr: &str) -> Vec<String> {
    let roster = members(addr, &[]).expect("the restarted node answers");
    roster
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "crashy")
        .map(|m| {
            m["actors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn acknowledged_changes_survive_kill_9_at_random_instants() {
    let cycles: usize = std::env::var("GOSSIP_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("GOSSIP_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut oracle: BTreeMap<String, Known> = BTreeMap::new();
    let flags = [
        "--node-id",
        "crashy",
        "--segment-bytes",
        "2048",
        "--compact-records",
        "40",
    ];
    let (mut acked, mut lost_in_flight) = (0u64, 0u64);

    for cycle in 0..cycles {
        let policy = ["always", "batch", "never"][cycle % 3];
        let mut args = flags.to_vec();
        args.extend(["--fsync", policy]);
        let node = NodeProc::start_net(dir.path(), &args)
            .unwrap_or_else(|log| panic!("cycle {cycle}: the dir must open:\n{log}"));

        // Everything acknowledged so far is there.
        let now: Vec<String> = hosted(&node.addr);
        for (actor, k) in &oracle {
            if !k.uncertain {
                assert_eq!(
                    now.contains(actor),
                    k.present,
                    "cycle {cycle}: {actor} (acknowledged {})",
                    if k.present { "added" } else { "removed" }
                );
            }
        }
        // Settle the uncertain ones with what the node actually has.
        for (actor, k) in oracle.iter_mut() {
            k.present = now.contains(actor);
            k.uncertain = false;
        }

        // Kill at a random instant while requests stream in.
        let pid = node.child.id();
        let kill_after = std::time::Duration::from_millis(rng.gen_range(20..300));
        let killer = std::thread::spawn(move || {
            std::thread::sleep(kill_after);
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        });
        let addr = node.addr.clone();
        rt.block_on(async {
            loop {
                let actor = format!("a{}", rng.gen_range(0..60));
                let add = !oracle.get(&actor).is_some_and(|k| k.present) || rng.gen_bool(0.2);
                let req = if add {
                    AdminRequest::AddActors {
                        actors: vec![actor.clone()],
                    }
                } else {
                    AdminRequest::RemoveActors {
                        actors: vec![actor.clone()],
                    }
                };
                let entry = oracle.entry(actor).or_default();
                match admin::request(&addr, None, None, req).await {
                    Ok(AdminReply::ActorsChanged { .. }) => {
                        *entry = Known {
                            present: add,
                            uncertain: false,
                        };
                        acked += 1;
                    }
                    Ok(other) => panic!("unexpected reply {other:?}"),
                    Err(_) => {
                        // The node died under this request: its outcome is unknown.
                        entry.uncertain = true;
                        lost_in_flight += 1;
                        break;
                    }
                }
            }
        });
        killer.join().unwrap();
        let mut node = node;
        let _ = node.child.wait();
    }
    // Final check through the offline tools.
    let out = gossip_log(&["verify"], dir.path());
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "verify: {}",
        stdout(&out)
    );
    let roster = replay_json(dir.path());
    let me = roster
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "crashy")
        .unwrap();
    let on_disk: Vec<&str> = me["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for (actor, k) in &oracle {
        if !k.uncertain {
            assert_eq!(
                on_disk.contains(&actor.as_str()),
                k.present,
                "{actor} on disk"
            );
        }
    }
    eprintln!("crash loop: {cycles} kill -9 cycles, {acked} acknowledged changes, {lost_in_flight} in flight at a kill, none lost");
}
