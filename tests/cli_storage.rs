//! The real binaries on real data dirs: identity, durability across restarts, the lock,
//! a busy port, and `gossip-log` on clean, torn, corrupt, missing and locked dirs.

mod common;
use common::*;
use serde_json::Value;

fn member<'a>(roster: &'a Value, id: &str) -> &'a Value {
    roster
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {roster}"))
}

#[test]
fn node_persists_identity_and_actors_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(
        dir.path(),
        &["--node-id", "alpha", "--actor", "a", "--actor", "b"],
    )
    .unwrap();
    assert_eq!(node.stop(), 0, "SIGTERM exits 0");

    // SIGTERM is a graceful leave, recorded durably.
    let roster = replay_json(dir.path());
    let me = member(&roster, "alpha");
    assert_eq!(me["actors"], serde_json::json!(["a", "b"]));
    assert_eq!(me["state"], "left");
    let generation = me["generation"].as_u64().unwrap();
    let version = me["version"].as_u64().unwrap();

    // Restart without --node-id: same id; `left` is final for a generation, so a new one,
    // whose versions continue from the old; registered actors kept.
    let node = NodeProc::start(dir.path(), &["--actor", "c", "--fsync", "always"]).unwrap();
    let mut node = node;
    node.signal("KILL");
    node.child.wait().unwrap();
    let roster = replay_json(dir.path());
    let me = member(&roster, "alpha");
    assert_eq!(me["actors"], serde_json::json!(["a", "b", "c"]));
    assert_eq!(me["state"], "alive");
    let new_generation = me["generation"].as_u64().unwrap();
    assert!(new_generation > generation);
    assert!(me["version"].as_u64().unwrap() > version);

    // After a crash (no leave), the same generation continues.
    let node = NodeProc::start(dir.path(), &[]).unwrap();
    assert_eq!(node.stop(), 0);
    let me = member(&replay_json(dir.path()), "alpha").clone();
    assert_eq!(me["generation"].as_u64().unwrap(), new_generation);
    assert_eq!(me["state"], "left");

    // A different --node-id on this dir is refused.
    let err = NodeProc::start(dir.path(), &["--node-id", "beta"])
        .err()
        .unwrap();
    assert!(err.contains("belongs to alpha"), "{err}");

    // dump shows the events, in LSN order, with the contract's fields.
    let out = gossip_log(&["dump", "--json"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["lsn"], 1);
    assert_eq!(lines[0]["kind"], "NewNode");
    assert_eq!(lines[0]["node"], "alpha");
    assert_eq!(lines[1]["kind"], "NodeLeft");
    assert_eq!(lines[2]["kind"], "NewNode");
    assert_eq!(lines[2]["actors"], serde_json::json!(["a", "b", "c"]));
    let plain = stdout(&gossip_log(
        &["dump", "--from", "2", "--to", "2"],
        dir.path(),
    ));
    assert_eq!(plain.lines().count(), 1, "{plain}");
    assert!(
        plain.contains("NodeLeft") && plain.contains("node=alpha"),
        "{plain}"
    );
}

#[test]
fn a_second_node_on_the_same_dir_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let first = NodeProc::start(dir.path(), &[]).unwrap();
    let err = NodeProc::start(dir.path(), &[]).err().unwrap();
    assert!(err.contains("in use by another process"), "{err}");
    assert!(err.contains(&format!("pid {}", first.child.id())), "{err}");
    // gossip-log refuses a live node's dir too.
    let out = gossip_log(&["stats"], dir.path());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("in use by another process"),
        "{}",
        stderr(&out)
    );
    assert_eq!(first.stop(), 0);
}

#[test]
fn a_busy_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(NODE)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cannot listen on") && err.contains("in use"),
        "{err}"
    );
    assert_eq!(
        err.matches("Address already in use").count(),
        1,
        "each cause once: {err}"
    );
}

#[test]
fn gossip_log_on_missing_and_foreign_dirs_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    for cmd in ["dump", "verify", "replay", "stats", "compact"] {
        let out = gossip_log(&[cmd], &missing);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        assert!(
            stderr(&out).contains("does not exist"),
            "{cmd}: {}",
            stderr(&out)
        );
    }
    let out = gossip_log(&["verify"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not a gossip-roster data dir"),
        "{}",
        stderr(&out)
    );
}

/// Writes a data dir with a few records through the real node.
fn node_dir(actors: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--node-id", "n1", "--fsync", "always"];
    for a in actors {
        args.extend(["--actor", a]);
    }
    let node = NodeProc::start(dir.path(), &args).unwrap();
    assert_eq!(node.stop(), 0);
    // Each run logs its announcement and, on SIGTERM, its leave: 8 records in all.
    for extra in ["x1", "x2", "x3"] {
        let node = NodeProc::start(dir.path(), &["--actor", extra]).unwrap();
        assert_eq!(node.stop(), 0);
    }
    dir
}

fn segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segs.sort();
    segs.pop().unwrap()
}

#[test]
fn verify_reports_clean_torn_and_corrupt_and_the_node_agrees() {
    let dir = node_dir(&["a"]);
    let out = gossip_log(&["verify"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).starts_with("clean: 1 segments, 8 records"),
        "{}",
        stdout(&out)
    );

    // Torn tail: cut the last record short.
    let seg = segment(dir.path());
    let bytes = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &bytes[..bytes.len() - 5]).unwrap();
    let out = gossip_log(&["verify", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "torn");
    assert_eq!(v["detail"]["lsn"], 8);
    // The node cuts it (keeping a .broken copy) and starts; verify is clean again.
    let node = NodeProc::start(dir.path(), &[]).unwrap();
    assert!(
        node.lines
            .iter()
            .any(|l| l.contains("torn WAL tail truncated")),
        "{:?}",
        node.lines
    );
    assert_eq!(node.stop(), 0);
    assert!(seg.with_extension("log.broken").exists());
    assert_eq!(gossip_log(&["verify"], dir.path()).status.code(), Some(0));

    // Corruption: a flipped byte in the first record, followed by good ones.
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[32 + 12] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();
    let out = gossip_log(&["verify"], dir.path());
    assert_eq!(out.status.code(), Some(4), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("offset 32 (LSN 1)"),
        "{}",
        stdout(&out)
    );
    let err = NodeProc::start(dir.path(), &[]).err().unwrap();
    assert!(
        err.contains("WAL corruption")
            && err.contains("offset 32")
            && err.contains("gossip-log verify"),
        "{err}"
    );
    // dump prints nothing past the damage and fails.
    let out = gossip_log(&["dump"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("WAL corruption"));
}

#[test]
fn compact_then_replay_and_stats_agree() {
    let dir = node_dir(&["a", "b"]);
    let before = replay_json(dir.path());
    let out = gossip_log(&["compact", "--json"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["snapshot_lsn"], 8);
    assert_eq!(replay_json(dir.path()), before);
    let stats: Value =
        serde_json::from_slice(&gossip_log(&["stats", "--json"], dir.path()).stdout).unwrap();
    assert_eq!(stats["snapshot_lsn"], 8);
    assert_eq!(stats["last_lsn"], 8);
    assert_eq!(stats["node_id"], "n1");
    assert_eq!(stats["schema_version"], 2);
    // --upto before the snapshot still works while the WAL reaches back to LSN 1.
    let out = gossip_log(&["replay", "--json", "--upto", "1"], dir.path());
    let early: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        member(&early, "n1")["actors"],
        serde_json::json!(["a", "b"])
    );
}

#[test]
fn gossip_log_compact_killed_at_every_step_leaves_a_dir_that_replays_the_same() {
    let points = [
        "compact-start",
        "compact-after-snapshot-write",
        "compact-after-snapshot-sync",
        "compact-after-segment-delete",
        "compact-done",
    ];
    for point in points {
        // Small segments so that compaction has segments to delete.
        let dir = tempfile::tempdir().unwrap();
        let node =
            NodeProc::start(dir.path(), &["--node-id", "n1", "--segment-bytes", "64"]).unwrap();
        assert_eq!(node.stop(), 0);
        for i in 0..6 {
            let node = NodeProc::start(
                dir.path(),
                &["--actor", &format!("a{i}"), "--segment-bytes", "64"],
            )
            .unwrap();
            assert_eq!(node.stop(), 0);
            if i == 2 {
                assert!(gossip_log(&["compact"], dir.path()).status.success());
            }
        }
        let before = replay_json(dir.path());
        let out = std::process::Command::new(LOG)
            .args(["compact", "--data-dir"])
            .arg(dir.path())
            .env("GOSSIP_ROSTER_FAILPOINT", point)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{point}: the process should have aborted"
        );
        assert_eq!(replay_json(dir.path()), before, "after a crash at {point}");
        assert_eq!(
            gossip_log(&["verify"], dir.path()).status.code(),
            Some(0),
            "{point}"
        );
    }
}

/// On a sample of truncations and byte flips of a real node-written segment, `gossip-log
/// verify` and the node agree: clean or torn (verify 0 or 3) → the node starts (cutting a torn
/// tail); corrupt (verify 4) → the node refuses, naming the same file and offset.
#[test]
fn verify_and_the_node_agree_on_damaged_logs() {
    let base = node_dir(&["a", "b", "c"]);
    let seg = segment(base.path());
    let clean = std::fs::read(&seg).unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for k in 0..12 {
        let cut = 30 + k * (clean.len() - 30) / 12;
        cases.push((format!("cut at {cut}"), clean[..cut].to_vec()));
        let at = 33 + k * (clean.len() - 34) / 12;
        let mut flipped = clean.clone();
        flipped[at] ^= 0x10;
        cases.push((format!("flip at {at}"), flipped));
    }
    for (what, bytes) in cases {
        let work = tempfile::tempdir().unwrap();
        copy_tree(base.path(), work.path());
        let seg = segment(work.path());
        std::fs::write(&seg, &bytes).unwrap();
        let verify = gossip_log(&["verify", "--json"], work.path());
        let code = verify.status.code().unwrap();
        let report: Value = serde_json::from_slice(&verify.stdout).unwrap();
        let started = NodeProc::start(work.path(), &[]);
        match code {
            0 | 3 => {
                let node = started.unwrap_or_else(|log| {
                    panic!("{what}: verify said {code} but the node refused:\n{log}")
                });
                assert_eq!(node.stop(), 0);
            }
            4 => {
                let log = started
                    .err()
                    .unwrap_or_else(|| panic!("{what}: verify said corrupt but the node started"));
                let offset = report["detail"]["offset"].as_u64().unwrap();
                assert!(log.contains(&format!("offset {offset}")), "{what}: {log}");
                assert!(
                    log.contains(seg.file_name().unwrap().to_str().unwrap()),
                    "{what}: {log}"
                );
            }
            other => panic!("{what}: verify exit {other}: {}", stdout(&verify)),
        }
    }
}

/// A crash in the middle of a segment rollover (the old segment synced, the new one not yet
/// created): the restarted node has every acknowledged change and a clean log.
#[test]
fn a_crash_during_segment_rollover_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(NODE);
    cmd.arg("--data-dir")
        .arg(dir.path())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--node-id",
            "roll",
            "--segment-bytes",
            "300",
        ])
        .env("GOSSIP_ROSTER_FAILPOINT", "wal-rollover-before-create");
    let mut node = NodeProc::spawn(cmd).unwrap();
    let mut acked = Vec::new();
    for i in 0..100 {
        let name = format!("actor{i}");
        let out = admin(&["actors", "add", "--connect", &node.addr, &name]);
        if !out.status.success() {
            break;
        }
        acked.push(name);
    }
    let status = node.child.wait().unwrap();
    assert!(
        !status.success(),
        "the node must have aborted at the rollover"
    );
    assert!(!acked.is_empty());
    let node = NodeProc::start(dir.path(), &[]).unwrap();
    assert_eq!(node.stop(), 0);
    let roster = replay_json(dir.path());
    let me = roster
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "roll")
        .unwrap();
    for a in &acked {
        assert!(
            me["actors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == a.as_str()),
            "{a} lost"
        );
    }
    assert_eq!(gossip_log(&["verify"], dir.path()).status.code(), Some(0));
}

/// The `generation=` of a "node started" line.
fn started_generation(node: &NodeProc) -> String {
    let line = node
        .lines
        .iter()
        .find(|l| l.contains("node started"))
        .expect("a start line");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("generation="))
        .expect("generation=")
        .to_owned()
}

/// A real process aborted (no flush, no destructor) at every step of creating its data dir,
/// and at the WAL's first sync, which now makes the first segment durable: the next start
/// completes the dir (a new identity only if the crash came before the identity was flushed),
/// the one after finds it complete and unchanged, and `gossip-log verify` finds it clean.
#[test]
fn a_crash_at_every_step_of_creating_a_data_dir_is_completed_by_the_next_start() {
    let points = [
        ("create-after-stamp", true),
        ("create-after-wal-segment", true),
        ("create-after-snapshot-sync", false),
        ("create-done", false),
        ("wal-first-sync-before-dir-sync", false),
    ];
    for (point, identity_lost) in points {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("d");
        let mut cmd = std::process::Command::new(NODE);
        cmd.arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "--node-id", "fresh"])
            .env("GOSSIP_ROSTER_FAILPOINT", point);
        // The WAL's first sync may come just before or just after the start line.
        let log = match NodeProc::spawn(cmd) {
            Err(log) => log,
            Ok(mut node) => {
                let status = node.child.wait().unwrap();
                assert!(!status.success(), "{point}: the node should have aborted");
                while let Ok(line) = node.stderr.recv() {
                    node.lines.push(line);
                }
                node.lines.join("\n")
            }
        };
        assert!(
            log.contains(&format!("failure point {point}")),
            "{point}: {log}"
        );

        let mut node = NodeProc::start(&data, &["--node-id", "fresh"]).unwrap();
        let line = node.lines.last().unwrap().clone();
        assert!(
            line.contains(&format!("new_data_dir={identity_lost}")),
            "{point}: {line}"
        );
        let generation = started_generation(&node);
        // SIGKILL, not a graceful leave (which would start a new generation).
        node.child.kill().unwrap();
        node.child.wait().unwrap();

        let mut node = NodeProc::start(&data, &["--node-id", "fresh"]).unwrap();
        let line = node.lines.last().unwrap().clone();
        assert!(line.contains("new_data_dir=false"), "{point}: {line}");
        assert_eq!(started_generation(&node), generation, "{point}");
        node.child.kill().unwrap();
        node.child.wait().unwrap();

        let verify = gossip_log(&["verify"], &data);
        assert_eq!(
            verify.status.code(),
            Some(0),
            "{point}: {}",
            stderr(&verify)
        );
        member(&replay_json(&data), "fresh");
    }
}
