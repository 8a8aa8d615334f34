//! The library's one error type. Each variant says what happened and where; none of them
//! leaves the data dir changed unless its text says so.

use crate::event::Lsn;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("data dir {0} does not exist")]
    NoDataDir(PathBuf),

    #[error("data dir {dir} is in use by another process{}: stop it first", pid_suffix(*.pid))]
    Locked { dir: PathBuf, pid: Option<u32> },

    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The log is damaged in a way that is not a torn tail. Nothing was changed.
    #[error(
        "WAL corruption in {file} at offset {offset} (LSN {lsn}): {reason}. Refusing to start; \
         inspect with `gossip-log verify --data-dir {data_dir}`"
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

    #[error("snapshot database: {0}")]
    Snapshot(#[from] sled::Error),

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
    InvalidName(#[from] crate::names::NameError),

    #[error("invalid tag: {0}")]
    InvalidTag(#[from] crate::tags::TagError),

    #[error("health: {0}")]
    Health(#[from] crate::health::HealthError),

    #[error("the node has stopped: {0}")]
    Stopped(String),

    #[error("refused: {0}")]
    Refused(String),

    #[error("aborted at failure point {0}")]
    FailPoint(&'static str),
}

fn pid_suffix(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

impl From<crate::transport::TransportError> for Error {
    fn from(e: crate::transport::TransportError) -> Self {
        Error::Transport(Box::new(e))
    }
}
