//! Failure points: named places in storage code where a test can make us crash or fail.
//!
//! `GOSSIP_ROSTER_FAILPOINT=<name>` makes a real process abort at that point (no destructors,
//! no flushes: as close to `kill -9` as a process can do to itself); in-process tests use
//! [`fail_at`] on their own thread. With neither set, `hit` is one relaxed load.

use crate::error::{Error, Result};
use std::cell::RefCell;
use std::sync::OnceLock;

thread_local! {
    static LOCAL: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn from_env() -> Option<&'static str> {
    static ENV: OnceLock<Option<String>> = OnceLock::new();
    ENV.get_or_init(|| {
        std::env::var("GOSSIP_ROSTER_FAILPOINT")
            .ok()
            .filter(|s| !s.is_empty())
    })
    .as_deref()
}

/// Called at a failure point: aborts the process (env) or returns an error (thread-local).
pub fn hit(name: &'static str) -> Result<()> {
    if from_env() == Some(name) {
        eprintln!("failure point {name}: aborting");
        std::process::abort();
    }
    let armed = LOCAL.with(|l| l.borrow().as_deref() == Some(name));
    if armed {
        return Err(Error::FailPoint(name));
    }
    Ok(())
}

/// Runs `f` with the failure point `name` armed on this thread.
pub fn fail_at<T>(name: &str, f: impl FnOnce() -> T) -> T {
    LOCAL.with(|l| *l.borrow_mut() = Some(name.to_owned()));
    let out = f();
    LOCAL.with(|l| *l.borrow_mut() = None);
    out
}
