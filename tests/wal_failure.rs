//! A WAL that fails under a running node ends the process, with the real `gossip-node` on
//! 127.0.0.1: its data dir is a 1 MiB tmpfs the test mounts (it runs as root; unmounted when
//! the test ends, even on a panic), actors are registered until the disk is full, and then
//! the node must exit by itself with a non-zero code and a one-line error; restarted once
//! the disk has room, it still hosts every actor whose registration was acknowledged.
//!
//! Without the right to mount, the test fails and says so, unless `GOSSIP_SKIP_MOUNT=1`.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmpfs mounted on a directory; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount failed: {}", stderr(&out).trim()));
        }
        Ok(Tmpfs(dir.to_owned()))
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(out.status.success(), "remount: {}", stderr(&out));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Moves the lines a node printed so far into `node.lines`.
fn collect_lines(node: &mut NodeProc, wait: Duration) {
    while let Ok(line) = node.stderr.recv_timeout(wait) {
        node.lines.push(line);
    }
}

#[test]
fn a_failed_wal_ends_the_process_and_acknowledged_actors_survive_the_restart() {
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let disk = match Tmpfs::mount(&mnt, "1m") {
        Ok(disk) => disk,
        Err(e) if std::env::var("GOSSIP_SKIP_MOUNT").as_deref() == Ok("1") => {
            println!("SKIPPED: cannot mount a tmpfs ({e}) and GOSSIP_SKIP_MOUNT=1");
            return;
        }
        Err(e) => panic!(
            "this test mounts a small tmpfs as the data dir (it needs root): {e}; \
             set GOSSIP_SKIP_MOUNT=1 to skip it"
        ),
    };
    let data = mnt.join("data");
    let args = ["--node-id", "w1", "--listen", "127.0.0.1:0"];
    let mut node = NodeProc::start_net(&data, &args).expect("node starts on the tmpfs");

    // Register actors (names of 20 bytes, 1,000 a call) until a call fails: the disk is full.
    // Keep what was acknowledged. (Short names keep the node's record, which `members`
    // returns, well under the 1 MiB frame cap: that limit is tests/admin_size.rs's matter.)
    let mut acked: Vec<String> = Vec::new();
    let mut failed = None;
    for call in 0..100 {
        let names: Vec<String> = (0..1000)
            .map(|i| format!("wal-actor-{call:03}-{i:04}-"))
            .collect();
        let mut cmd = vec!["actors", "add", "--connect", &node.addr];
        cmd.extend(names.iter().map(String::as_str));
        let out = admin(&cmd);
        if out.status.success() {
            assert_eq!(stdout(&out).lines().count(), names.len());
            acked.extend(names);
        } else {
            failed = Some(stderr(&out));
            break;
        }
    }
    let failed_at = Instant::now();
    let failure = failed.expect("the 1 MiB disk never filled up");
    println!(
        "{} actors acknowledged; the next call failed: {}",
        acked.len(),
        failure.trim()
    );

    // The node must stop by itself (bounded wait).
    let mut exit = None;
    while failed_at.elapsed() < Duration::from_secs(10) {
        if let Some(st) = node.child.try_wait().unwrap() {
            exit = Some(st);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut failures = Vec::new();
    match exit {
        Some(st) => {
            println!(
                "the node exited {:.1} s after the failed call: {st}",
                failed_at.elapsed().as_secs_f64()
            );
            collect_lines(&mut node, Duration::from_millis(500));
            if st.success() {
                failures.push(format!("the node exited with {st} after its WAL failed"));
            }
            let last = node
                .lines
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .cloned()
                .unwrap_or_default();
            println!("its last line: {last}");
            if !last.to_lowercase().contains("wal") {
                failures.push(format!(
                    "the node's last line does not say the WAL failed: {last:?}"
                ));
            }
        }
        None => {
            collect_lines(&mut node, Duration::from_millis(200));
            let tail: Vec<&String> = node.lines.iter().rev().take(3).rev().collect();
            println!("the node is still running 10 s after its WAL failed; last lines: {tail:#?}");
            failures.push("the node was still running 10 s after its WAL failed".to_owned());
            node.signal("KILL");
            node.child.wait().unwrap();
        }
    }
    drop(node);

    // Restart with room on the disk: every acknowledged actor is still registered.
    disk.resize("64m");
    let node = NodeProc::start_net(&data, &args).expect("node restarts after the disk grew");
    let deadline = Instant::now() + Duration::from_secs(30);
    let roster = loop {
        let out = admin(&["members", "--connect", &node.addr, "--json"]);
        if out.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "members after the restart: {}",
            stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let hosted: std::collections::HashSet<&str> = roster
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "w1")
        .expect("w1 in its own roster")["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|a| !hosted.contains(a.as_str()))
        .collect();
    println!(
        "after the restart: {} actors hosted, {} of {} acknowledged ones missing",
        hosted.len(),
        lost.len(),
        acked.len()
    );
    if !lost.is_empty() {
        failures.push(format!(
            "{} acknowledged actors lost, e.g. {}",
            lost.len(),
            lost[0]
        ));
    }
    drop(node);
    drop(disk);
    assert!(failures.is_empty(), "{failures:#?}");
}
