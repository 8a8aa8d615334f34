//! Check commands (`--check ACTOR=COMMAND`): the driver runs each one every interval with
//! `sh -c`, and its result enters the machine as a local command, like any other health
//! change. Exit 0 is passing, 1 warning, anything else (a signal, a timeout, a command that
//! cannot start) critical; the note is the first line of its output.

use crate::health::{self, Health};
use crate::machine::{Command, Reply};
use crate::peers::{Ctx, Input};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::oneshot;

/// One check: what runs, for which actor, how often, for how long at most.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub actor: String,
    /// Run with `sh -c`.
    pub command: String,
    pub interval: Duration,
    pub timeout: Duration,
}

impl HealthCheck {
    /// Defaults of `--check-interval` and `--check-timeout`.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// Parses `ACTOR=COMMAND` (the command may contain `=`).
    pub fn parse(s: &str, interval: Duration, timeout: Duration) -> Result<HealthCheck, String> {
        let (actor, command) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not ACTOR=COMMAND"))?;
        crate::names::validate_actor_name(actor).map_err(|e| format!("check of {actor:?}: {e}"))?;
        if command.trim().is_empty() {
            return Err(format!("the check of {actor:?} has an empty command"));
        }
        if interval.is_zero() || timeout.is_zero() {
            return Err("check interval and timeout must be longer than zero".into());
        }
        Ok(HealthCheck {
            actor: actor.to_owned(),
            command: command.to_owned(),
            interval,
            timeout,
        })
    }
}

/// Output of a check kept for its note: the note is one short line, and a chatty check
/// (`yes`) must not grow the node's memory. The rest is read and dropped, so the check
/// never blocks on a full pipe.
const KEPT_OUTPUT_BYTES: usize = 8 * 1024;

/// Runs the command once: its health and note. It runs in a process group of its own, and
/// when it ends or times out the whole group is killed: a check leaves no process behind
/// (a timed-out `sh -c 'sleep 100'` would otherwise leave its `sleep` to init).
pub async fn run_once(check: &HealthCheck) -> (Health, String) {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&check.command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return (Health::Critical, format!("check could not start: {e}")),
    };
    // Killed however this ends: exit, timeout, or this future dropped (the node stopping
    // mid-check).
    let group = GroupGuard::new(child.id());
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let finished = async {
        let exit = async {
            let status = child.wait().await;
            group.kill();
            status
        };
        tokio::join!(exit, read_capped(stdout), read_capped(stderr))
    };
    match tokio::time::timeout(check.timeout, finished).await {
        Err(_) => {
            group.kill();
            let _ = child.wait().await;
            (
                Health::Critical,
                format!("check timed out after {:?}", check.timeout),
            )
        }
        Ok((Err(e), _, _)) => (Health::Critical, format!("check failed: {e}")),
        Ok((Ok(status), out, err)) => {
            let mut note = health::note_from_output(&out);
            if note.is_empty() {
                note = health::note_from_output(&err);
            }
            (Health::from_exit_code(status.code()), note)
        }
    }
}

/// Reads `pipe` to its end, keeping the first [`KEPT_OUTPUT_BYTES`].
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return kept;
    };
    let mut buf = [0u8; 8 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = KEPT_OUTPUT_BYTES.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// A check's process group (its id is the shell's pid: `process_group(0)`), sent SIGKILL
/// once: when asked, or when dropped unasked (the check's future dropped mid-run). Once,
/// because after the group is gone its id may in time name another process's group.
struct GroupGuard {
    pgid: Option<libc::pid_t>,
    done: std::sync::atomic::AtomicBool,
}

impl GroupGuard {
    fn new(pid: Option<u32>) -> GroupGuard {
        GroupGuard {
            pgid: pid.and_then(|p| libc::pid_t::try_from(p).ok()),
            done: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn kill(&self) {
        let first = !self.done.swap(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(pgid) = self.pgid.filter(|_| first) {
            // SAFETY: killpg has no memory effects; a group that is gone already gives
            // ESRCH, which is fine to ignore.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `check` until the node stops, first at once, then every interval.
pub(crate) async fn run(ctx: Arc<Ctx>, check: HealthCheck) {
    let mut refused = false;
    loop {
        let (health, note) = tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            r = run_once(&check) => r,
        };
        let (tx, rx) = oneshot::channel();
        let command = Command::SetHealth {
            actor: check.actor.clone(),
            health,
            note,
        };
        if ctx
            .data
            .send(Input::Command { command, reply: tx })
            .await
            .is_err()
        {
            return;
        }
        match rx.await {
            Ok(Reply::InvalidHealth(e)) if !refused => {
                tracing::warn!(actor = %check.actor, "health check result refused: {e}");
                refused = true;
            }
            Ok(Reply::HealthChanged(_)) => refused = false,
            Ok(_) => {}
            Err(_) => return,
        }
        tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            _ = tokio::time::sleep(check.interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(command: &str, timeout: Duration) -> HealthCheck {
        HealthCheck::parse(&format!("x={command}"), Duration::from_secs(1), timeout).unwrap()
    }

    /// Whether `pid` still runs (a zombie waiting for its reaper does not).
    fn running(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(") ")
                .next()
                .is_some_and(|rest| !rest.starts_with('Z'))
        })
    }

    /// Panics unless every pid in the file (one a line) is gone soon: killed at once, their
    /// reaper may take a moment to collect them.
    async fn assert_all_gone(pid_file: &std::path::Path, what: &str) {
        let pids = std::fs::read_to_string(pid_file).unwrap();
        let pids: Vec<&str> = pids.lines().map(str::trim).collect();
        assert!(!pids.is_empty(), "no pid written");
        for _ in 0..200 {
            if !pids.iter().any(|p| running(p)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what} still run: {pids:?}");
    }

    #[tokio::test]
    async fn a_chatty_check_keeps_a_bounded_note_and_still_passes() {
        // Two MiB of output before exit 0: read to the end (no blocked pipe), kept short.
        let (health, note) = run_once(&check(
            "echo all good; head -c 2097152 /dev/zero; exit 0",
            Duration::from_secs(30),
        ))
        .await;
        assert_eq!((health, note.as_str()), (Health::Passing, "all good"));
        let kept = read_capped(Some(&[7u8; 1 << 20][..])).await;
        assert_eq!(kept.len(), KEPT_OUTPUT_BYTES);
    }

    #[tokio::test]
    async fn a_timed_out_check_leaves_no_process_behind() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let command = format!(
            "sleep 300 & echo $! > {p}; sleep 300 & echo $! >> {p}; wait",
            p = pids.display()
        );
        let (health, note) = run_once(&check(&command, Duration::from_millis(500))).await;
        assert_eq!(health, Health::Critical);
        assert!(note.contains("timed out"), "{note}");
        assert_eq!(std::fs::read_to_string(&pids).unwrap().lines().count(), 2);
        assert_all_gone(&pids, "the check's children").await;
    }

    #[tokio::test]
    async fn a_check_cut_short_by_a_stopping_node_leaves_no_process_behind() {
        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("pid");
        let command = format!("sleep 300 & echo $! > {}; wait", pid.display());
        let c = check(&command, Duration::from_secs(60));
        let run = run_once(&c);
        // The node stops after a moment: the check's future is dropped mid-run.
        let cut = tokio::time::timeout(Duration::from_millis(500), run).await;
        assert!(cut.is_err(), "the check was still running");
        assert_all_gone(&pid, "the check's child, after the stop,").await;
    }

    #[tokio::test]
    async fn what_a_finished_check_started_in_the_background_is_stopped_too() {
        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("pid");
        let command = format!("sleep 300 & echo $! > {}; echo fine", pid.display());
        let (health, note) = run_once(&check(&command, Duration::from_secs(30))).await;
        assert_eq!((health, note.as_str()), (Health::Passing, "fine"));
        assert_all_gone(&pid, "the background sleep").await;
    }
}
