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

/// Runs the command once: its health and note.
pub async fn run_once(check: &HealthCheck) -> (Health, String) {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&check.command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => return (Health::Critical, format!("check could not start: {e}")),
    };
    match tokio::time::timeout(check.timeout, child.wait_with_output()).await {
        Err(_) => (
            Health::Critical,
            format!("check timed out after {:?}", check.timeout),
        ),
        Ok(Err(e)) => (Health::Critical, format!("check failed: {e}")),
        Ok(Ok(out)) => {
            let mut note = health::note_from_output(&out.stdout);
            if note.is_empty() {
                note = health::note_from_output(&out.stderr);
            }
            (Health::from_exit_code(out.status.code()), note)
        }
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
