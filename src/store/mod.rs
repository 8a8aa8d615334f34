//! The durable store of a data dir: lock, schema check, sled snapshot, WAL, compaction.
//!
//! ```text
//! DIR/LOCK                        held by the running process (pid inside)
//! DIR/SCHEMA                      schema version, readable without opening sled
//! DIR/wal/<20-digit LSN>.log      WAL segments (see segment.rs)
//! DIR/snapshot/                   sled database (see snapshot.rs)
//! ```
//! Recovery = load the snapshot, replay WAL records after `snapshot_lsn`, cut a torn tail
//! (after copying it to `.broken`), refuse anything else that is damaged, including parts
//! missing that the other parts prove existed (see parts.rs for which states a crash can
//! leave and which only damage can).

pub mod compaction;
pub mod failpoint;
pub mod lock;
pub mod migrate;
pub mod offline;
pub mod parts;
pub mod recovery;
pub mod segment;
pub mod snapshot;
pub mod wal;

#[cfg(test)]
mod tests;

pub use compaction::CompactionReport;
pub use recovery::{TornTail, WalScan};
pub use wal::{FsyncPolicy, Pending, Wal, WalConfig, WalStats};

use crate::error::{Error, Result};
use crate::event::{ClusterEvent, Generation, Lsn, NodeId};
use crate::roster::{Roster, RosterBuilder};
use lock::DirLock;
use snapshot::{Meta, Snapshot};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub wal: WalConfig,
    /// Compact once this many records were logged since the last snapshot...
    pub compact_after_records: u64,
    /// ...or once the WAL since the last snapshot passes this many bytes.
    pub compact_after_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            wal: WalConfig::default(),
            compact_after_records: 100_000,
            compact_after_bytes: 64 << 20,
        }
    }
}

/// What recovery found and did.
#[derive(Clone, Debug)]
pub struct Recovered {
    pub roster: Roster,
    pub snapshot_lsn: Lsn,
    /// Highest LSN in the data dir; the next record gets `last_lsn + 1`.
    pub last_lsn: Lsn,
    /// WAL records applied on top of the snapshot.
    pub replayed: u64,
    /// A torn tail that was cut, and where the damaged file was copied first.
    pub repaired: Option<(TornTail, PathBuf)>,
    pub schema_version: u32,
    /// The dir had no identity and got one from [`Store::open_with_identity`].
    pub identity_created: bool,
}

/// An open, locked data dir.
pub struct Store {
    dir: PathBuf,
    _lock: DirLock,
    snapshot: Snapshot,
    wal: Wal,
    config: StoreConfig,
    /// `(snapshot_lsn, WAL bytes written when it was taken)`, for the compaction trigger.
    last_compaction: Mutex<(Lsn, u64)>,
}

/// `dir` is a directory: refused as missing, or as not a directory.
pub(crate) fn existing_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        Ok(())
    } else if dir.exists() {
        Err(Error::NotADirectory(dir.to_path_buf()))
    } else {
        Err(Error::NoDataDir(dir.to_path_buf()))
    }
}

/// Failure points of a data dir's creation, in order (see [`Store::open_with_identity`]).
pub const CREATION_FAILPOINTS: &[&str] = &[
    "create-after-stamp",
    "create-after-wal-segment",
    "create-after-dir-sync",
    "create-after-snapshot-sync",
    "create-done",
];

/// fsyncs the newest segment of `wal_dir` and `wal_dir` itself (a new dir's first segment,
/// before its identity is committed).
fn sync_newest_segment(wal_dir: &Path) -> Result<()> {
    let segments = segment::list_segments(wal_dir).map_err(Error::io(wal_dir))?;
    if let Some((_, path)) = segments.last() {
        std::fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(Error::io(path))?;
    }
    recovery::sync_dir(wal_dir)
}

impl Store {
    /// Opens `dir`, creating it if missing, and recovers the roster. A new dir gets no
    /// identity (see [`Store::open_with_identity`]); its schema stamp is made durable here.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<(Store, Recovered)> {
        Self::create_dir(dir)?;
        Self::open_inner(dir, config, None)
    }

    /// Opens `dir`, creating it if missing; a dir without an identity gets `identity()`.
    ///
    /// A new dir becomes complete with one sled flush and one round of fsyncs at the end,
    /// after every file is written: the schema stamp and the identity are flushed together
    /// (they used to be two flushes, eight fsyncs). The identity is the commit point: once
    /// it is durable the dir is complete (schema version, identity, a WAL that reads); a
    /// crash before it leaves a dir without an identity, which the next start completes the
    /// same way (a new stamp, a new identity, the same `--node-id` if one is given).
    ///
    /// `wal/` and `snapshot/` are made durable entries of the data dir (one more fsync of
    /// it, right after they are created) before sled is opened, so a dir whose sled says it
    /// was created but that has no `wal/` is damage, never a crash state, and is refused
    /// (parts.rs holds the whole table).
    pub fn open_with_identity(
        dir: &Path,
        config: StoreConfig,
        identity: impl FnOnce() -> (NodeId, Generation),
    ) -> Result<(Store, Recovered)> {
        Self::create_dir(dir)?;
        Self::open_inner(dir, config, Some(Box::new(identity)))
    }

    fn create_dir(dir: &Path) -> Result<()> {
        if dir.exists() && !dir.is_dir() {
            return Err(Error::NotADirectory(dir.to_path_buf()));
        }
        std::fs::create_dir_all(dir).map_err(Error::io(dir))
    }

    /// Opens a data dir that must already exist.
    pub fn open_existing(dir: &Path, config: StoreConfig) -> Result<(Store, Recovered)> {
        Self::open_inner(dir, config, None)
    }

    fn open_inner(
        dir: &Path,
        config: StoreConfig,
        identity: Option<Box<dyn FnOnce() -> (NodeId, Generation) + '_>>,
    ) -> Result<(Store, Recovered)> {
        existing_dir(dir)?;
        let lock = DirLock::acquire(dir)?;
        migrate::check_marker(dir)?;
        // Which parts exist, and what they prove, before anything is created or written.
        let parts = parts::inspect(dir)?;
        let wal_dir = dir.join("wal");
        // A newer release's segments are refused before sled is opened.
        if parts.wal_dir {
            recovery::check_segment_versions(dir)?;
        }
        if parts.snapshot_dir && !parts.wal_segments {
            // Rare (a new dir has neither; a created one always has a segment): sled is read
            // from a private copy, so that a refusal leaves every byte of the dir as it was
            // (sled writes even when read).
            let copy = Snapshot::open_copy(&dir.join("snapshot"))?;
            parts::check_with_meta(dir, &parts, &copy.meta()?, identity.is_some())?;
        }
        // A new dir, or one whose creation was cut short: `wal/` and `snapshot/` become
        // durable entries before sled is opened, because sled may write its files (the stamp
        // among them) before it is asked to flush; so a durable stamp or identity with no
        // `wal/` is always damage (parts.rs). One fsync, at creation only.
        let mut created = false;
        for part in [wal_dir.clone(), dir.join("snapshot")] {
            if !part.is_dir() {
                std::fs::create_dir_all(&part).map_err(Error::io(&part))?;
                created = true;
            }
        }
        if created {
            recovery::sync_dir(dir)?;
        }
        let snapshot = Snapshot::open(&dir.join("snapshot"))?;
        parts::check_with_meta(dir, &parts, &snapshot.meta()?, identity.is_some())?;
        let up_to_date = migrate::bring_up_to_date(dir, &snapshot, false)?;
        let schema_version = up_to_date.version;
        if up_to_date.stamped_new {
            failpoint::hit("create-after-stamp")?;
        }
        let meta = snapshot.meta()?;
        let mut roster = RosterBuilder::new(snapshot.load_roster()?);
        let mut replayed = 0;
        let scan = recovery::scan_wal(
            dir,
            meta.snapshot_lsn,
            meta.snapshot_lsn,
            |_, _, rec| {
                roster.apply(&rec.event);
                replayed += 1;
            },
            |_| {},
        )?;
        // Before a torn tail is cut: a WAL that ends below what sled proves it held is refused.
        parts::check_wal_end(dir, &scan, &meta)?;
        let repaired = match &scan.torn {
            Some(torn) => {
                let broken = recovery::repair_torn_tail(torn)?;
                tracing::warn!(
                    file = %torn.path.display(),
                    offset = torn.valid_len,
                    lsn = torn.lsn,
                    reason = %torn.reason,
                    copy = %broken.display(),
                    "torn WAL tail truncated at the last good record"
                );
                Some((torn.clone(), broken))
            }
            None => None,
        };
        let roster = roster.finish();
        let last_lsn = scan.last_lsn.max(meta.snapshot_lsn);
        // The newest segment that still exists after repair, to append to.
        let wal = Wal::start(
            &wal_dir,
            last_lsn + 1,
            scan.segments.last(),
            config.wal.clone(),
        )?;
        if up_to_date.stamped_new {
            failpoint::hit("create-after-wal-segment")?;
        }
        let makes_identity =
            identity.is_some() && (meta.node_id.is_none() || meta.generation.is_none());
        if up_to_date.stamped_new || makes_identity {
            // The newest segment (a new dir's header-only first one) and its entry in `wal/`
            // are durable before the identity is even staged (sled may write it to its files
            // before the flush below): an identity with no segment at all is then always
            // damage, never what a power loss leaves, and is refused (parts.rs). Before, a
            // never-compacted dir whose WAL was deleted looked like a creation whose first
            // segment never reached the disk, and started empty under the same identity.
            sync_newest_segment(&wal_dir)?;
        }
        let new_identity = match identity {
            Some(make) if meta.node_id.is_none() || meta.generation.is_none() => {
                let (id, generation) = make();
                snapshot.stage_identity(&id, generation)?;
                true
            }
            _ => false,
        };
        if up_to_date.stamped_new || new_identity {
            // The one durable point of a new dir. Every file and directory is written by now
            // (LOCK, SCHEMA, wal/, its first segment, snapshot/), and `wal/` and `snapshot/`
            // were made durable entries before sled was opened (see above). What each sync
            // covers:
            // - (the first WAL segment and `wal/` were synced above, before the identity);
            // - fsync of the data dir: the entry `SCHEMA` (and `LOCK`);
            // - sled flush + fsync of its files and `snapshot/` (make_durable): the stamp and
            //   the identity, and sled's `conf`, which sled needs to open the database. This
            //   is the commit point.
            // Not synced here, on purpose:
            // - the marker's contents (a blank marker reads as missing, see check_marker);
            // - `LOCK`: an OS lock, its contents are only for the error message.
            recovery::sync_dir(dir)?;
            failpoint::hit("create-after-dir-sync")?;
            snapshot.make_durable()?;
            failpoint::hit("create-after-snapshot-sync")?;
            failpoint::hit("create-done")?;
        }
        let recovered = Recovered {
            roster,
            snapshot_lsn: meta.snapshot_lsn,
            last_lsn,
            replayed,
            repaired,
            schema_version,
            identity_created: new_identity,
        };
        let store = Store {
            dir: dir.to_path_buf(),
            _lock: lock,
            snapshot,
            wal,
            config,
            last_compaction: Mutex::new((meta.snapshot_lsn, 0)),
        };
        Ok((store, recovered))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn meta(&self) -> Result<Meta> {
        self.snapshot.meta()
    }

    /// The node id and generation stored in this dir, if any.
    pub fn identity(&self) -> Result<Option<(NodeId, Generation)>> {
        let meta = self.snapshot.meta()?;
        Ok(meta.node_id.zip(meta.generation))
    }

    /// Stores the identity, durably. Called once, when the data dir is new.
    pub fn set_identity(&self, id: &NodeId, generation: Generation) -> Result<()> {
        self.snapshot.set_identity(id, generation)
    }

    /// Records the largest recent cluster size (the quorum base), durably.
    pub fn set_largest_cluster(&self, size: u64) -> Result<()> {
        self.snapshot.set_largest_cluster(size)
    }

    /// Logs events; the result resolves once they are durable under the policy.
    pub fn append(&self, events: Vec<ClusterEvent>) -> Pending {
        self.wal.append(events)
    }

    /// Forces everything logged so far to disk.
    pub fn sync(&self) -> Pending {
        self.wal.sync()
    }

    pub fn wal_stats(&self) -> &Arc<WalStats> {
        self.wal.stats()
    }

    /// Whether the log since the last snapshot passed a compaction threshold.
    pub fn needs_compaction(&self) -> bool {
        let (snap_lsn, bytes_then) = *self.last_compaction.lock().unwrap();
        let stats = self.wal.stats();
        let records = stats
            .last_lsn
            .load(Ordering::Relaxed)
            .saturating_sub(snap_lsn);
        let bytes = stats.bytes_written.load(Ordering::Relaxed) - bytes_then;
        records >= self.config.compact_after_records || bytes >= self.config.compact_after_bytes
    }

    /// Snapshots the roster and drops covered WAL segments. `roster` is called once the WAL
    /// is synced, and must return a roster holding every event logged so far (events are
    /// applied before they are appended, so a copy taken then does; it may hold more, as
    /// replay is idempotent). Blocking: run it off the async executor.
    pub fn compact(&self, roster: impl FnOnce() -> Roster) -> Result<CompactionReport> {
        let lsn = self.wal.sync().wait()?;
        let bytes = self.wal.stats().bytes_written.load(Ordering::Relaxed);
        let roster = roster();
        let report = compaction::compact(&self.dir, &self.snapshot, &roster, lsn)?;
        *self.last_compaction.lock().unwrap() = (report.snapshot_lsn, bytes);
        tracing::info!(?report, "compacted");
        Ok(report)
    }

    /// Snapshots `roster`, which holds every record up to `covers` (it may hold more, as
    /// replay is idempotent), and drops covered WAL segments. The WAL is synced first, so
    /// the snapshot never claims records that are not durable. Blocking.
    pub fn compact_at(&self, roster: &Roster, covers: Lsn) -> Result<CompactionReport> {
        self.wal.sync().wait()?;
        let bytes = self.wal.stats().bytes_written.load(Ordering::Relaxed);
        let report = compaction::compact(&self.dir, &self.snapshot, roster, covers)?;
        *self.last_compaction.lock().unwrap() = (report.snapshot_lsn, bytes);
        tracing::info!(?report, "compacted");
        Ok(report)
    }

    /// Syncs the WAL, then records in the snapshot (durably) how far it is synced: a WAL
    /// found shorter at the next start lost records to damage and is refused (parts.rs).
    /// For a clean stop while other handles to the store may remain; appends after it are
    /// fine (the mark is a lower bound).
    pub fn mark_clean_stop(&self) -> Result<()> {
        let lsn = self.wal.sync().wait()?;
        self.snapshot.stage_wal_synced_lsn(lsn)?;
        self.snapshot.make_durable()
    }

    /// A clean stop ([`Store::mark_clean_stop`]), then stops the WAL writer and releases
    /// the lock.
    pub fn close(self) -> Result<()> {
        self.mark_clean_stop()?;
        self.wal.close()
    }
}
