//! Compaction: write the roster as a snapshot, make it durable, then drop WAL segments.
//!
//! Order matters and every step is a failure point (see `failpoint.rs`):
//! 1. make the current snapshot durable (it becomes the "previous" one);
//! 2. write roster + `snapshot_lsn` + `prev_snapshot_lsn` in one sled transaction;
//! 3. sled flush + fsync of every sled file and directory;
//! 4. delete segments whose records are all covered by the *previous* snapshot;
//! 5. fsync the WAL directory.
//!
//! Step 4 keeps one snapshot's worth of WAL on purpose: should the newest snapshot not have
//! reached the disk after all (sled issue #1452 is why we do not trust `flush()` alone), the
//! previous snapshot plus the kept WAL rebuild the same roster. A crash at any instant leaves
//! a dir that recovers to the same roster; `tests/compaction_crash.rs` checks each step.

use super::failpoint;
use super::recovery::sync_dir;
use super::segment;
use super::snapshot::Snapshot;
use crate::error::{Error, Result};
use crate::event::Lsn;
use crate::roster::Roster;
use std::path::Path;

/// What a compaction did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactionReport {
    pub snapshot_lsn: Lsn,
    pub prev_snapshot_lsn: Lsn,
    pub members: usize,
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
}

/// Snapshots `roster`, which must include every record up to `lsn`, then drops covered WAL.
pub fn compact(
    data_dir: &Path,
    snapshot: &Snapshot,
    roster: &Roster,
    lsn: Lsn,
) -> Result<CompactionReport> {
    failpoint::hit("compact-start")?;
    snapshot.make_durable()?;
    let prev = snapshot.meta()?.snapshot_lsn;
    let lsn = lsn.max(prev);
    snapshot.write(roster, lsn, prev)?;
    failpoint::hit("compact-after-snapshot-write")?;
    snapshot.make_durable()?;
    failpoint::hit("compact-after-snapshot-sync")?;

    let wal_dir = data_dir.join("wal");
    let segments = segment::list_segments(&wal_dir).map_err(Error::io(&wal_dir))?;
    let mut deleted = 0;
    let mut bytes_deleted = 0;
    // A segment ends where the next begins; the newest is never deleted (the writer owns it).
    for pair in segments.windows(2) {
        let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
        if next_first - 1 > prev {
            break;
        }
        bytes_deleted += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        std::fs::remove_file(path).map_err(Error::io(path))?;
        deleted += 1;
        failpoint::hit("compact-after-segment-delete")?;
    }
    if deleted > 0 {
        sync_dir(&wal_dir)?;
    }
    failpoint::hit("compact-done")?;
    Ok(CompactionReport {
        snapshot_lsn: lsn,
        prev_snapshot_lsn: prev,
        members: roster.num_records(),
        segments_deleted: deleted,
        bytes_deleted,
    })
}

/// Every failure point of [`compact`], in order.
pub const FAILPOINTS: &[&str] = &[
    "compact-start",
    "compact-after-snapshot-write",
    "compact-after-snapshot-sync",
    "compact-after-segment-delete",
    "compact-done",
];
