//! The library's one error type. Each variant says what happened and where; none of them
//! leaves the data dir changed unless its text says so.
//!
//! A cause is either quoted in the message or exposed as `source()`, never both: a printer
//! that walks the chain (anyhow's `{:#}`, the binaries) then says each cause once. This type
//! quotes them, so `%e` in a log line is complete by itself.

use crate::event::Lsn;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("data dir {0} does not exist")]
    NoDataDir(PathBuf),

    #[error("data dir {0} is not a directory")]
    NotADirectory(PathBuf),

    #[error("data dir {dir} is in use by another process{}: stop it first", pid_suffix(*.pid))]
    Locked { dir: PathBuf, pid: Option<u32> },

    /// `what` says which listener: the gossip port, or the HTTP endpoint.
    #[error("cannot listen on {addr} ({what}): {cause}")]
    Listen {
        addr: String,
        what: &'static str,
        cause: std::io::Error,
    },

    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// The log is damaged in a way that is not a torn tail. Nothing was changed.
    #[error(
        "WAL corruption in {file} at offset {offset} (LSN {lsn}): {reason}. Refusing to start; \
         inspect with `gossip-log verify --data-dir {data_dir}`. {}",
        crate::store::parts::WAL_NEXT_STEP
    )]
    Corrupt {
        data_dir: PathBuf,
        file: PathBuf,
        offset: u64,
        lsn: Lsn,
        reason: String,
    },

    /// The data dir was written by a newer release. Nothing was changed.
    #[error(
        "data dir {dir} has schema version {found}, newer than this build supports ({supported}); \
         refusing to open it (nothing was changed)"
    )]
    SchemaTooNew {
        dir: PathBuf,
        found: u32,
        supported: u32,
    },

    #[error("data dir {dir}: {reason}")]
    BadDataDir { dir: PathBuf, reason: String },

    /// A part of the data dir is gone that its other parts prove existed (see
    /// `store/parts.rs`): damage, not a crash state. Nothing was changed.
    #[error(
        "{} {}, but {evidence}. {}; a crash cannot cause this. The node refuses to start on \
         this data dir. {advice}",
        .part.display(), .absence.state, .absence.how
    )]
    MissingPart {
        dir: PathBuf,
        part: PathBuf,
        /// What is found in its place, and what can have caused it.
        absence: &'static Absence,
        evidence: String,
        advice: String,
    },

    /// A file of the data dir fails its own checks (the sled database, the `SCHEMA` marker):
    /// damage, not a crash state. Nothing was changed.
    #[error(
        "{} is damaged: {reason}. The node refuses to start on this data dir. {advice}",
        .file.display()
    )]
    Damaged {
        dir: PathBuf,
        file: PathBuf,
        reason: String,
        advice: String,
    },

    #[error("snapshot database: {0}")]
    Snapshot(sled::Error),

    #[error("snapshot record {key}: {reason}")]
    BadSnapshot { key: String, reason: String },

    /// The WAL writer hit an IO error (a failed fsync among them) and stopped for good:
    /// the kernel may have dropped the dirty pages, so retrying could lie about durability.
    #[error("WAL writer stopped after an IO error: {0}; restart to recover from the log")]
    WalFailed(String),

    #[error("requested LSN {requested} is no longer in the WAL (the oldest kept is {oldest})")]
    Compacted { requested: Lsn, oldest: Lsn },

    #[error("node id mismatch: the data dir belongs to {stored}, but --node-id is {given}")]
    NodeIdMismatch { stored: String, given: String },

    #[error("secret file {path}: {reason}")]
    SecretFile {
        path: PathBuf,
        reason: crate::secrets::SecretsError,
    },

    #[error("TLS: {0}")]
    Tls(String),

    #[error("{0}")]
    Transport(Box<crate::transport::TransportError>),

    #[error("the node answered with an error: {0}")]
    Remote(String),

    #[error("node id {0}")]
    IdInUse(String),

    #[error("configuration: {0}")]
    Config(String),

    #[error("invalid actor name: {0}")]
    InvalidName(crate::names::NameError),

    #[error("invalid tag: {0}")]
    InvalidTag(#[from] crate::tags::TagError),

    #[error("health: {0}")]
    Health(#[from] crate::health::HealthError),

    #[error("the node has stopped: {0}")]
    Stopped(String),

    #[error("refused: {0}")]
    Refused(String),

    #[error("this node is down (split-brain downing): {0}")]
    Down(String),

    #[error("{0}")]
    NotInMajority(String),

    #[error("aborted at failure point {0}")]
    FailPoint(&'static str),
}

/// What is left of a part of the data dir that is gone ([`Error::MissingPart`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Absence {
    /// "is missing", or what is left in its place.
    pub state: &'static str,
    /// What can have caused it: "It was deleted or lost", or, for a part that is there but
    /// empty, "It was reset, replaced or damaged (...)".
    pub how: &'static str,
}

fn pid_suffix(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |cause| Error::Io { path, cause }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Snapshot(e)
    }
}

impl From<crate::names::NameError> for Error {
    fn from(e: crate::names::NameError) -> Self {
        Error::InvalidName(e)
    }
}

impl From<crate::transport::TransportError> for Error {
    fn from(e: crate::transport::TransportError) -> Self {
        Error::Transport(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Printed with its whole chain, as the binaries print errors, each cause shows once.
    #[test]
    fn a_chain_prints_each_cause_once() {
        let busy = || std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let once = |e: anyhow::Error, cause: &str| {
            let line = format!("{:#}", e.context("cannot start"));
            assert_eq!(line.matches(cause).count(), 1, "{line}");
        };
        let cause = busy().to_string();
        once(
            Error::Listen {
                addr: "127.0.0.1:1".into(),
                what: "--listen",
                cause: busy(),
            }
            .into(),
            &cause,
        );
        once(Error::io("/d")(busy()).into(), &cause);
        let transport = crate::transport::TransportError::from(busy());
        once(Error::from(transport).into(), &cause);
        let name = crate::names::validate_actor_name("").unwrap_err();
        once(Error::from(name.clone()).into(), &name.to_string());
    }
}
