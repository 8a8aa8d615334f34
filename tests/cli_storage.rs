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
    // `verify --json` answers in JSON even when it cannot check (it printed nothing).
    let out = gossip_log(&["verify", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let verdict: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(verdict["status"], "unchecked", "{verdict}");
    let reason = verdict["reason"].as_str().unwrap();
    assert!(reason.contains("in use by another process"), "{reason}");
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

/// [`node_dir`], then one more run killed with SIGKILL after it logged its announcement:
/// 9 records, of which the last (LSN 9) was written after the last clean stop (LSN 8). Only
/// damage can cut the WAL below a clean stop (it syncs the WAL and records how far); a crash
/// can leave a torn tail after it.
fn crashed_node_dir(actors: &[&str]) -> tempfile::TempDir {
    let dir = node_dir(actors);
    let mut node = NodeProc::start(dir.path(), &["--fsync", "always"]).unwrap();
    node.signal("KILL");
    node.child.wait().unwrap();
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

    // Torn tail: a run killed after its announcement (LSN 9), whose last record is cut
    // short. (Below the last clean stop, the same cut is refused: see
    // a_wal_cut_below_what_the_data_dir_proves_is_refused.)
    let mut node = NodeProc::start(dir.path(), &["--fsync", "always"]).unwrap();
    node.signal("KILL");
    node.child.wait().unwrap();
    let seg = segment(dir.path());
    let bytes = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &bytes[..bytes.len() - 5]).unwrap();
    let out = gossip_log(&["verify", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "torn");
    assert_eq!(v["detail"]["lsn"], 9);
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
    assert!(
        stdout(&out).contains("backup taken while the node was stopped"),
        "{}",
        stdout(&out)
    );
    let err = NodeProc::start(dir.path(), &[]).err().unwrap();
    assert!(
        err.contains("WAL corruption")
            && err.contains("offset 32")
            && err.contains("gossip-log verify")
            && err.contains("backup taken while the node was stopped")
            && err.contains("move it aside"),
        "{err}"
    );
    // compact cannot compact it; it is not the node, so it does not "refuse to start".
    let out = gossip_log(&["compact"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot compact {}", dir.path().display()))
            && err.contains("WAL corruption")
            && err.contains("backup taken while the node was stopped")
            && !err.contains("Refusing to start"),
        "{err}"
    );
    // dump prints nothing past the damage and fails; a read-only tool cannot read, it does
    // not refuse to start.
    let out = gossip_log(&["dump"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("WAL corruption"));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("Refusing to start"),
        "{}",
        stderr(&out)
    );
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
    // Cuts above the last clean stop are torn tails, cuts below it corruption: both paths.
    let base = crashed_node_dir(&["a", "b", "c"]);
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
        ("create-after-stamp", Some(true)),
        ("create-after-wal-segment", Some(true)),
        // Stamp and identity are staged, not flushed: whether sled wrote them to its file
        // before the abort is sled's business (it did in our runs). Either way, verify's
        // word and the next start must agree.
        ("create-after-dir-sync", None),
        ("create-after-snapshot-sync", Some(false)),
        ("create-done", Some(false)),
        ("wal-first-sync-before-dir-sync", Some(false)),
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
        // gossip-log tells a half-created dir from a clean one.
        let verify = gossip_log(&["verify"], &data);
        assert_eq!(
            verify.status.code(),
            Some(0),
            "{point}: {}",
            stderr(&verify)
        );
        let said = stdout(&verify);
        let half_created = said.starts_with("half-created");
        assert!(half_created || said.starts_with("clean"), "{point}: {said}");
        let identity_lost = identity_lost.unwrap_or(half_created);
        assert_eq!(half_created, identity_lost, "{point}: {said}");

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

/// A node that registered actors through its admin port and was killed with SIGKILL: its
/// changes are in the WAL only (no compaction, no clean stop).
fn killed_node_with_actors() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut node =
        NodeProc::start_net(dir.path(), &["--node-id", "n1", "--fsync", "always"]).unwrap();
    let out = admin(&["actors", "add", "--connect", &node.addr, "a1", "a2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    node.signal("KILL");
    node.child.wait().unwrap();
    assert_eq!(
        member(&replay_json(dir.path()), "n1")["actors"],
        serde_json::json!(["a1", "a2"])
    );
    dir
}

/// What every reader of a damaged dir must say: verify reports it (exit 4, naming `what`),
/// the node refuses to start naming it too, and the read-only tools say they cannot read it.
fn assert_refused_everywhere(dir: &std::path::Path, what: &str, node_args: &[&str]) {
    let out = gossip_log(&["verify"], dir);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).starts_with("CORRUPT") && stdout(&out).contains(what),
        "{}",
        stdout(&out)
    );
    let out = gossip_log(&["verify", "--json"], dir);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "corrupt", "{v}");
    let log = NodeProc::start(dir, node_args)
        .err()
        .unwrap_or_else(|| panic!("the node started on a dir with {what}"));
    assert!(log.contains(what), "{log}");
    assert!(!log.contains("node started"), "{log}");
    for cmd in ["dump", "stats", "replay"] {
        let out = gossip_log(&[cmd], dir);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let err = stderr(&out);
        assert!(
            err.contains("cannot read") && err.contains(what),
            "{cmd}: {err}"
        );
        assert!(!err.contains("Refusing to start"), "{cmd}: {err}");
    }
}

/// B1: `wal/` deleted from a dir that has an identity and changes only in its WAL. The node
/// used to start with an empty roster; now it refuses, and verify says which part is gone.
#[test]
fn a_deleted_wal_dir_is_refused_not_started_empty() {
    let dir = killed_node_with_actors();
    let wal = dir.path().join("wal");
    std::fs::remove_dir_all(&wal).unwrap();
    assert_refused_everywhere(
        dir.path(),
        &format!("{} is missing", wal.display()),
        &["--node-id", "n1"],
    );
    assert!(!wal.exists(), "the refusal created nothing");
}

/// B2: `snapshot/` deleted from a used dir. The node used to make up a new identity (a new
/// node id without --node-id); now it refuses, and nothing is recreated.
#[test]
fn a_deleted_snapshot_is_refused_not_rebuilt_with_a_new_identity() {
    let dir = killed_node_with_actors();
    let snap = dir.path().join("snapshot");
    std::fs::remove_dir_all(&snap).unwrap();
    assert_refused_everywhere(dir.path(), &format!("{} is missing", snap.display()), &[]);
    assert!(!snap.exists(), "the refusal created nothing");
    // A file in its place is named as such (a trial was told "missing").
    std::fs::write(&snap, b"").unwrap();
    assert_refused_everywhere(
        dir.path(),
        &format!("{} is not a directory", snap.display()),
        &[],
    );
}

/// B3: where the data dir proves the WAL reached an LSN (the snapshot's, after `gossip-log
/// compact`; the last clean stop's), a WAL cut or deleted below it is refused by the node and
/// verify alike. A missing middle segment is refused as before. A clean cut of the very end,
/// above both, is undetectable: the node starts with the records before the cut.
#[test]
fn a_wal_cut_below_what_the_data_dir_proves_is_refused() {
    let lengths = |bytes: &[u8]| {
        // Offsets where each record ends.
        let mut ends = Vec::new();
        let mut at = 32;
        while at < bytes.len() {
            at += 8 + u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            ends.push(at);
        }
        ends
    };
    // The last clean stop (LSN 8) proves the WAL reached it: a cut at a record boundary
    // below it (LSN 7 kept) is refused, though the segment itself reads clean.
    let base = crashed_node_dir(&["a"]);
    let cut_after = |dir: &std::path::Path, records: usize| {
        let seg = segment(dir);
        let bytes = std::fs::read(&seg).unwrap();
        std::fs::write(&seg, &bytes[..lengths(&bytes)[records - 1]]).unwrap();
    };
    let work = tempfile::tempdir().unwrap();
    copy_tree(base.path(), work.path());
    cut_after(work.path(), 7);
    assert_refused_everywhere(
        work.path(),
        "stopped cleanly with the WAL synced up to LSN 8",
        &[],
    );

    // Above the clean stop, after a crash, the same clean cut is the documented limit: the
    // node starts with LSN 1..=8 and the lost record 9 is not noticed.
    let work = tempfile::tempdir().unwrap();
    copy_tree(base.path(), work.path());
    cut_after(work.path(), 8);
    assert_eq!(gossip_log(&["verify"], work.path()).status.code(), Some(0));
    let node = NodeProc::start(work.path(), &[]).unwrap();
    assert!(
        node.lines.last().unwrap().contains("last_lsn=8"),
        "{:?}",
        node.lines
    );
    assert_eq!(node.stop(), 0);

    // After `gossip-log compact` the snapshot proves LSN 8: the newest (here the only)
    // segment deleted is refused, not started from the snapshot alone.
    let work = tempfile::tempdir().unwrap();
    copy_tree(base.path(), work.path());
    cut_after(work.path(), 8);
    assert!(gossip_log(&["compact"], work.path()).status.success());
    std::fs::remove_file(segment(work.path())).unwrap();
    assert_refused_everywhere(work.path(), "snapshot covers up to LSN 8", &[]);

    // Many segments: the newest deleted after a compaction, and a middle one deleted.
    let dir = tempfile::tempdir().unwrap();
    for i in 0..6 {
        let node = NodeProc::start(
            dir.path(),
            &[
                "--node-id",
                "n1",
                "--actor",
                &format!("a{i}"),
                "--segment-bytes",
                "64",
            ],
        )
        .unwrap();
        assert_eq!(node.stop(), 0);
    }
    let segs = |dir: &std::path::Path| {
        let mut v: Vec<_> = std::fs::read_dir(dir.join("wal"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        v.sort();
        v
    };
    assert!(segs(dir.path()).len() >= 4, "{:?}", segs(dir.path()));
    let work = tempfile::tempdir().unwrap();
    copy_tree(dir.path(), work.path());
    let middle = segs(work.path())[1].clone();
    std::fs::remove_file(&middle).unwrap();
    assert_refused_everywhere(work.path(), "a segment was lost", &[]);
    let work = tempfile::tempdir().unwrap();
    copy_tree(dir.path(), work.path());
    assert!(gossip_log(&["compact"], work.path()).status.success());
    std::fs::remove_file(segs(work.path()).pop().unwrap()).unwrap();
    assert_refused_everywhere(work.path(), "snapshot covers up to LSN 12", &[]);
}

/// B4: a read-only copy of a data dir (a backup restored with `chmod -R a-w`) is read by
/// `verify`, `dump`, `stats` and `replay` as a user who cannot write it, each saying the lock
/// was taken read-only; they used to fail on opening `LOCK` for writing. Root ignores file
/// modes, so as root the tools run as `nobody` (setpriv).
#[test]
fn read_only_tools_read_a_read_only_copy() {
    let dir = node_dir(&["a"]);
    let chmod = |mode: &str| {
        let ok = std::process::Command::new("chmod")
            .args(["-R", mode])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "chmod {mode}");
    };
    chmod("a-w,a+rX");
    let root = stdout(&std::process::Command::new("id").arg("-u").output().unwrap()).trim() == "0";
    for cmd in ["verify", "dump", "stats", "replay"] {
        let mut run = if root {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", LOG]);
            c
        } else {
            std::process::Command::new(LOG)
        };
        let out = run
            .arg(cmd)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmd}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("not writable: LOCK was locked read-only"),
            "{cmd}: {}",
            stderr(&out)
        );
        if cmd == "verify" {
            assert!(stdout(&out).starts_with("clean"), "{}", stdout(&out));
        }
    }
    // The read-only lock still excludes a running node (the dir made read-only under it).
    chmod("u+w");
    let node = NodeProc::start(dir.path(), &[]).unwrap();
    chmod("a-w,a+rX");
    let mut run = if root {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", LOG]);
        c
    } else {
        std::process::Command::new(LOG)
    };
    let out = run
        .arg("verify")
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("in use by another process"),
        "{}",
        stderr(&out)
    );
    chmod("u+w");
    assert_eq!(node.stop(), 0);
}

/// F3: every WAL segment deleted (not `wal/` itself) from a node killed before any compaction
/// or clean stop. Creation now makes the first segment durable before the identity, so an
/// identity with no segment is damage; it used to start empty under the same identity, and
/// verify called it clean.
#[test]
fn every_wal_segment_deleted_is_refused_not_started_empty() {
    let dir = killed_node_with_actors();
    let wal = dir.path().join("wal");
    for seg in std::fs::read_dir(&wal).unwrap() {
        std::fs::remove_file(seg.unwrap().path()).unwrap();
    }
    let what = format!("{} holds no segment", wal.display());
    assert_refused_everywhere(dir.path(), &what, &["--node-id", "n1"]);
    let out = gossip_log(&["verify"], dir.path());
    assert!(stdout(&out).contains("backup"), "{}", stdout(&out));
    assert_eq!(
        std::fs::read_dir(&wal).unwrap().count(),
        0,
        "nothing created"
    );
}

/// F2b/F6: a compacted dir whose sled database fails sled's checks (a flipped byte, a cut
/// file) or whose `SCHEMA` is not a version: verify says CORRUPT (exit 4, not 1 "could not
/// check"), and every reader names the file and says what to do.
#[test]
fn a_damaged_snapshot_database_or_schema_marker_is_refused_as_corruption() {
    let dir = node_dir(&["a", "b"]);
    let out = gossip_log(&["compact"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let db = dir.path().join("snapshot").join("db");
    let good = std::fs::read(&db).unwrap();
    let damaged = format!("{} is damaged", db.display());
    let check = |what: &str| {
        assert_refused_everywhere(dir.path(), what, &[]);
        let out = gossip_log(&["verify"], dir.path());
        assert!(
            stdout(&out).contains("backup") && stdout(&out).contains("move the data dir aside"),
            "{}",
            stdout(&out)
        );
    };
    // (Other damage sled reports the same way, a cut file among them: see the store's
    // a_corrupt_snapshot_database_or_marker_is_refused_as_damage.)
    let mut bytes = good.clone();
    bytes[100] ^= 0x5a;
    std::fs::write(&db, &bytes).unwrap();
    check(&damaged);
    std::fs::write(&db, &good).unwrap();
    let schema = dir.path().join("SCHEMA");
    std::fs::write(&schema, "xyz\n").unwrap();
    check(&format!("{} is damaged", schema.display()));
    std::fs::write(&schema, "2\n").unwrap();
    assert_eq!(gossip_log(&["verify"], dir.path()).status.code(), Some(0));
}
