//! Crash loop: a real `gossip-node` takes a stream of actor adds and removes (one to eight
//! names a request, so several records a batch) through its admin port while being killed with SIGKILL at random instants (small segments and a low
//! compaction threshold make rollovers and compactions frequent, so kills land in them too).
//! An oracle records what was acknowledged; after every restart each acknowledged change must
//! be there, and the data dir must open. At the end `gossip-log verify` must be clean.
//!
//! Every cycle must acknowledge at least one add before its kill (the kill's random delay
//! starts at the first one). A refusal (an admin error reply, a rejected handshake, a
//! protocol error) fails the test; only a broken connection after our SIGKILL, from a node
//! that then turns out to have died of that SIGKILL, counts as a request lost to the kill.
//!
//! 20 cycles by default; `GOSSIP_CRASH_CYCLES=1000 cargo test --release --test crash_loop --
//! --nocapture` (or `tools/crash-loop 1000`) for the long run.

mod common;
use common::*;
use gossip_roster::admin;
use gossip_roster::message::{AdminReply, AdminRequest};
use gossip_roster::transport::TransportError;
use gossip_roster::Error;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

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
    let (mut acked, mut acked_adds, mut lost_in_flight) = (0u64, 0u64, 0u64);
    let mut checked = 0u64;

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
                checked += 1;
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

        // Kill at a random instant while requests stream in: the clock starts at the first
        // acknowledged add of the cycle (or after 60 s without one, which fails the cycle),
        // so every cycle acknowledges something before its kill.
        let pid = node.child.id();
        let kill_after = std::time::Duration::from_millis(rng.gen_range(20..300));
        let killed = Arc::new(AtomicBool::new(false));
        let (first_ack, first_ack_rx) = mpsc::channel::<()>();
        let killer = {
            let killed = killed.clone();
            std::thread::spawn(move || {
                let _ = first_ack_rx.recv_timeout(std::time::Duration::from_secs(60));
                std::thread::sleep(kill_after);
                killed.store(true, Ordering::SeqCst);
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            })
        };
        let addr = node.addr.clone();
        let mut adds_this_cycle = 0u64;
        let failure = rt.block_on(async {
            loop {
                // One to eight names per request: a request of several is one batch of
                // records in the WAL, and a compaction may run while it waits for its fsync.
                let k = rng.gen_range(1..=8);
                let mut names: Vec<String> = Vec::with_capacity(k);
                while names.len() < k {
                    let actor = format!("a{}", rng.gen_range(0..60));
                    if !names.contains(&actor) {
                        names.push(actor);
                    }
                }
                let add = names
                    .iter()
                    .any(|a| !oracle.get(a).is_some_and(|k| k.present))
                    || rng.gen_bool(0.2);
                let req = if add {
                    AdminRequest::AddActors {
                        actors: names.clone(),
                    }
                } else {
                    AdminRequest::RemoveActors {
                        actors: names.clone(),
                    }
                };
                let actor = names.join(",");
                match admin::request(&addr, None, None, req).await {
                    Ok(AdminReply::ActorsChanged { .. }) => {
                        for name in &names {
                            *oracle.entry(name.clone()).or_default() = Known {
                                present: add,
                                uncertain: false,
                            };
                        }
                        acked += names.len() as u64;
                        if add {
                            adds_this_cycle += 1;
                            let _ = first_ack.send(());
                        }
                    }
                    Ok(other) => panic!("cycle {cycle}: unexpected reply {other:?}"),
                    // The node died under this request: its outcome is unknown. Only a
                    // broken connection can be the kill; whether it was is checked below.
                    Err(Error::Transport(t))
                        if matches!(
                            *t,
                            TransportError::Io(_) | TransportError::Ws(_) | TransportError::Closed
                        ) =>
                    {
                        for name in &names {
                            oracle.entry(name.clone()).or_default().uncertain = true;
                        }
                        lost_in_flight += 1;
                        break format!("{actor}: {t}");
                    }
                    // An answer from a node that is up (an admin error reply, a rejected
                    // handshake, a protocol error): a refusal, never a kill.
                    Err(e) => panic!(
                        "cycle {cycle}: the node refused {} {actor}: {e}",
                        if add { "adding" } else { "removing" }
                    ),
                }
            }
        });
        // The broken connection must be our kill: the kill was sent before it, and the node
        // died of SIGKILL (not of an exit of its own).
        assert!(
            killed.load(Ordering::SeqCst),
            "cycle {cycle}: the connection broke before the kill ({failure})"
        );
        killer.join().unwrap();
        let mut node = node;
        let status = node.child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "cycle {cycle}: the node was not killed by us but ended with {status} ({failure})"
        );
        assert!(
            adds_this_cycle > 0,
            "cycle {cycle}: no add was acknowledged before the kill ({failure})"
        );
        acked_adds += adds_this_cycle;
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
    assert!(
        acked_adds >= cycles as u64,
        "every cycle acknowledged an add"
    );
    assert!(
        checked > 0
            && oracle
                .iter()
                .any(|(a, k)| !k.uncertain && k.present && on_disk.contains(&a.as_str())),
        "acknowledged adds were checked after restarts and are on disk"
    );
    eprintln!("crash loop: {cycles} kill -9 cycles, {acked} acknowledged changes ({acked_adds} adds), {lost_in_flight} in flight at a kill, none lost");
}
