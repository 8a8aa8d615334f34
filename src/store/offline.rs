//! Read-only access to a data dir for `gossip-log`: the node must not be running, and
//! nothing on disk changes (the snapshot is read from a private copy).

use super::lock::DirLock;
use super::migrate;
use super::recovery::{self, WalScan};
use super::segment::WalRecord;
use super::snapshot::{Meta, Snapshot};
use crate::error::{Error, Result};
use crate::event::Lsn;
use crate::roster::{Roster, RosterBuilder};
use std::path::{Path, PathBuf};

pub struct Offline {
    dir: PathBuf,
    _lock: DirLock,
    pub snapshot: Snapshot,
    pub meta: Meta,
    pub schema_version: u32,
}

impl Offline {
    pub fn open(dir: &Path) -> Result<Offline> {
        super::existing_dir(dir)?;
        if !dir.join("wal").is_dir() && !dir.join("snapshot").is_dir() {
            return Err(Error::BadDataDir {
                dir: dir.to_path_buf(),
                reason: "not a gossip-roster data dir (no wal/ or snapshot/ inside)".into(),
            });
        }
        let lock = DirLock::acquire(dir)?;
        migrate::check_marker(dir)?;
        recovery::check_segment_versions(dir)?;
        let snapshot = Snapshot::open_copy(&dir.join("snapshot"))?;
        let schema_version = migrate::bring_up_to_date(dir, &snapshot, true)?.version;
        let meta = snapshot.meta()?;
        Ok(Offline {
            dir: dir.to_path_buf(),
            _lock: lock,
            snapshot,
            meta,
            schema_version,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the whole WAL, passing records above `after_lsn`. Changes nothing.
    pub fn scan(
        &self,
        after_lsn: Lsn,
        on_record: impl FnMut(&Path, u64, WalRecord),
        progress: impl FnMut(u64) + Send,
    ) -> Result<WalScan> {
        recovery::scan_wal(
            &self.dir,
            self.meta.snapshot_lsn,
            after_lsn,
            on_record,
            progress,
        )
    }

    /// Total bytes of WAL segments, for progress bars.
    pub fn wal_bytes(&self) -> u64 {
        super::segment::list_segments(&self.dir.join("wal"))
            .map(|segs| {
                segs.iter()
                    .filter_map(|(_, p)| std::fs::metadata(p).ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// The roster as the node would rebuild it, optionally only up to `upto` (inclusive).
    /// Going back before the snapshot needs the WAL from LSN 1.
    pub fn replay(
        &self,
        upto: Option<Lsn>,
        progress: impl FnMut(u64) + Send,
    ) -> Result<(Roster, Lsn, WalScan)> {
        let upto = upto.unwrap_or(Lsn::MAX);
        let (roster, base) = if upto >= self.meta.snapshot_lsn {
            (self.snapshot.load_roster()?, self.meta.snapshot_lsn)
        } else {
            (Roster::new(), 0)
        };
        let mut roster = RosterBuilder::new(roster);
        let mut last = base;
        let scan = self.scan(
            base,
            |_, _, rec| {
                if rec.lsn <= upto {
                    roster.apply(&rec.event);
                    last = rec.lsn;
                }
            },
            progress,
        )?;
        if base == 0 && self.meta.snapshot_lsn > 0 {
            let oldest = scan.oldest_lsn().unwrap_or(self.meta.snapshot_lsn + 1);
            if oldest > 1 {
                return Err(Error::Compacted {
                    requested: upto,
                    oldest,
                });
            }
        }
        Ok((roster.finish(), last, scan))
    }
}
