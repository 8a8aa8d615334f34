//! Read-only access to a data dir for `gossip-log`: the node must not be running, and
//! nothing on disk changes (the snapshot is read from a private copy).

use super::lock::DirLock;
use super::migrate;
use super::parts::{self, Parts};
use super::recovery::{self, WalScan};
use super::segment::WalRecord;
use super::snapshot::{Meta, Snapshot};
use crate::error::{Error, Result};
use crate::event::Lsn;
use crate::roster::{Roster, RosterBuilder};
use std::path::{Path, PathBuf};

pub struct Offline {
    dir: PathBuf,
    lock: DirLock,
    pub snapshot: Snapshot,
    pub meta: Meta,
    pub schema_version: u32,
    parts: Parts,
}

impl Offline {
    pub fn open(dir: &Path) -> Result<Offline> {
        super::existing_dir(dir)?;
        // An unreadable dir is not "not a data dir": say why it cannot be read.
        std::fs::read_dir(dir).map_err(Error::io(dir))?;
        if !dir.join("wal").is_dir() && !dir.join("snapshot").is_dir() {
            return Err(Error::BadDataDir {
                dir: dir.to_path_buf(),
                reason: "not a gossip-roster data dir (no wal/ or snapshot/ inside)".into(),
            });
        }
        let lock = DirLock::acquire_for_reading(dir)?;
        migrate::check_marker(dir)?;
        // The same checks as the node's start, so that both always agree (see parts.rs).
        let parts = parts::inspect(dir)?;
        if parts.wal_dir {
            recovery::check_segment_versions(dir)?;
        }
        let snapshot = Snapshot::open_copy(&dir.join("snapshot"))?;
        let meta = snapshot.meta()?;
        // As the node would open it: with an identity to keep.
        parts::check_with_meta(dir, &parts, &meta, true)?;
        let schema_version = migrate::bring_up_to_date(dir, &snapshot, true)?.version;
        Ok(Offline {
            dir: dir.to_path_buf(),
            lock,
            snapshot,
            meta,
            schema_version,
            parts,
        })
    }

    /// A dir whose creation a crash cut short before its commit point (sled holds no stamp
    /// or no identity, and nothing was ever logged): the node's next start finishes creating
    /// it. (A library-made dir without identity but with records is not half-created.)
    pub fn half_created(&self) -> bool {
        (self.meta.schema_version.is_none() || self.meta.node_id.is_none()) && self.parts.unused()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Set when the dir is not writable and the lock was taken read-only or not at all.
    pub fn read_only_note(&self) -> Option<&'static str> {
        self.lock.read_only_note()
    }

    /// Reads the whole WAL, passing records above `after_lsn`, with the node's checks: a
    /// WAL that ends below what the snapshot proves it held is corruption. Changes nothing.
    pub fn scan(
        &self,
        after_lsn: Lsn,
        on_record: impl FnMut(&Path, u64, WalRecord),
        progress: impl FnMut(u64) + Send,
    ) -> Result<WalScan> {
        if !self.parts.wal_dir {
            // Only a half-created dir gets here (`check_with_meta` refuses the others).
            return Ok(WalScan::default());
        }
        let scan = recovery::scan_wal(
            &self.dir,
            self.meta.snapshot_lsn,
            after_lsn,
            on_record,
            progress,
        )?;
        parts::check_wal_end(&self.dir, &scan, &self.meta)?;
        Ok(scan)
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
