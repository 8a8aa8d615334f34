//! Logging set-up shared by the binaries: to stderr (stdout is for results), colour only on
//! a terminal, `RUST_LOG` overrides the level.

use std::io::Write as _;

pub fn init(default_level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A write that fails (the reader of a piped stderr is gone: `2>&1 | head`, a log
        // shipper that died) loses the line. Reported, it was an `eprintln!` into that same
        // closed pipe, which panicked: the node died at its next log line.
        .log_internal_errors(false)
        .init();
}

/// A message to stderr that cannot panic: `eprintln!` panics when stderr is a closed pipe,
/// which would turn an exit code of 1 or 2 into a panic's 101.
pub fn say(message: std::fmt::Arguments) {
    let _ = writeln!(std::io::stderr(), "{message}");
}
