//! What the parts of a data dir prove about each other: the checks that tell a state a crash
//! can leave (completed or cut on the next start) from damage (refused).
//!
//! A part is missing or short either because a crash (process kill or power loss) came before
//! it was durable, or because someone or something removed it. The order in which the parts
//! become durable decides which absences a crash can explain:
//!
//! ```text
//! creation (Store::open_with_identity)      later
//! 1 mkdir DIR, LOCK, mkdir wal/ and         6 records appended; the WAL's first sync is an
//!   snapshot/, fsync DIR                      fsync of the segment and of wal/
//! 2 sled opened in snapshot/ (conf, db)     7 compaction: WAL synced, then snapshot_lsn in
//! 3 stamp staged, SCHEMA written              sled, then covered segments deleted (never the
//! 4 first segment (header only) written,    newest)
//!   fsync of it and of wal/, identity       8 clean close: WAL synced, then wal_synced_lsn
//!   staged                                    in sled, flushed
//! 5 fsync DIR (SCHEMA), then sled flush +
//!   fsync: stamp and identity durable (the
//!   commit point)
//! ```
//! So: `wal/` and `snapshot/` are durable before sled writes a byte (sled may write its
//! files before it is asked to flush, so its content can reach the disk any time after 2);
//! nothing is appended to the WAL before the stamp is durable in sled; `snapshot_lsn` and
//! `wal_synced_lsn` are only ever written once the WAL is synced past them, and no later
//! step removes those records (compaction keeps the newest segment, and a torn tail only
//! ever holds records written after the last sync).
//!
//! | found at open                                              | a crash can leave it?       | verdict                    |
//! |------------------------------------------------------------|-----------------------------|----------------------------|
//! | no `snapshot/`, `wal/` absent or only a header-only first  | yes: power loss before the  | half-created: completed    |
//! |   segment                                                  |   fsync of 1, or of 5       |                            |
//! | no `snapshot/` (or no sled `db` in it), `wal/` holds a     | no: records come after 5    | refused: snapshot missing  |
//! |   segment with records or any later segment                |                             |                            |
//! | `snapshot/` without stamp or identity (sled recreated or   | no: the stamp is durable    | refused when an identity   |
//! |   reset), WAL used as above                                |   before any record         |   would be made up (node)  |
//! | `snapshot/` without stamp or identity, no `wal/`           | yes: power loss before the  | half-created: completed    |
//! |                                                            |   fsync of 1                |                            |
//! | sled holds a stamp or an identity, no `wal/`               | no: `wal/` durable before   | refused: `wal/` missing    |
//! |                                                            |   sled writes anything      |                            |
//! | identity, `wal/` without any segment                       | no: the first segment is    | refused: segments missing  |
//! |                                                            |   durable before the        |   (with a mark in sled: as |
//! |                                                            |   identity is staged (4),   |   the WAL end below, next  |
//! |                                                            |   the newest is always kept |   row)                     |
//! | stamp, only a header-only first segment, nothing compacted,| yes: power loss before the  | accepted: nothing in it    |
//! |   never closed cleanly                                     |   WAL's first sync (6)      |   was ever synced (its     |
//! |                                                            |                             |   records cut off looks    |
//! |                                                            |                             |   the same)                |
//! | WAL ends (last good record, or before an empty newest      | no: both are written after  | refused as WAL corruption  |
//! |   segment) below `snapshot_lsn` or `wal_synced_lsn`        |   the WAL is synced past    |   ([`check_wal_end`])      |
//! | a segment starts after a gap the snapshot does not cover   | no                          | refused (`scan_wal`)       |
//! | the newest segment ends at a record boundary, at or above  | yes: the end of any log     | accepted: undetectable     |
//! |   both marks                                               |                             |                            |
//!
//! The last row is the limit of any WAL without an external witness: a clean cut of its very
//! end (or the deletion of its newest segment) looks exactly like a log that ended there.
//! The two marks in sled narrow it to records written after the last compaction or clean stop.
//!
//! Data dirs created by a build before this order (DIR synced after sled) had a power-loss
//! window at creation, before anything was logged, in which `wal/` could be lost while the
//! stamp was kept; such a dir is refused as damaged (move it aside: it holds nothing). The
//! same holds for a build that left the first segment unsynced at creation (a power loss
//! right after it could lose the segment but keep the identity): refused as segments
//! missing, and it holds nothing either.

use super::recovery::WalScan;
use super::segment::{self, HEADER_LEN};
use super::snapshot::Meta;
use crate::error::{Absence, Error, Result};
use crate::event::Lsn;
use std::path::{Path, PathBuf};

/// What the file system shows of a data dir, before sled is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parts {
    pub wal_dir: bool,
    /// `wal/` holds at least one segment.
    pub wal_segments: bool,
    pub snapshot_dir: bool,
    /// A segment that proves records were appended (see [`wal_used`]), if any.
    pub wal_used: Option<PathBuf>,
}

impl Parts {
    /// Neither the WAL nor the snapshot shows that anything was ever written: a new dir, or
    /// one whose creation a crash cut short.
    pub fn unused(&self) -> bool {
        self.wal_used.is_none()
    }
}

pub(crate) const RESTORE_OR_START_OVER: &str =
    "Restore it from a backup of this data dir taken while the \
     node was stopped. If it is truly lost, move the data dir aside and start the node on an \
     empty one (with the same --node-id it rejoins under a new generation and relearns the \
     roster from its peers)";

/// What to do about a damaged WAL, for every message that reports one (the node's, and
/// `gossip-log`'s).
pub const WAL_NEXT_STEP: &str = "To go on, restore the data dir from a backup taken while \
     the node was stopped, or move it aside (keeping the damaged segment for inspection) and \
     start the node on an empty one: with the same --node-id it rejoins under a new \
     generation and relearns the roster from its peers";

/// A file of the data dir that fails its own checks: refused as damage, with what to do.
pub(crate) fn damaged(dir: &Path, file: PathBuf, reason: String) -> Error {
    Error::Damaged {
        dir: dir.to_path_buf(),
        file,
        reason,
        advice: format!("{RESTORE_OR_START_OVER}."),
    }
}

/// Reads which parts exist and refuses a missing snapshot where the WAL shows it existed.
/// Changes nothing.
pub fn inspect(dir: &Path) -> Result<Parts> {
    let wal = dir.join("wal");
    let snapshot = dir.join("snapshot");
    let wal_dir = wal.is_dir();
    let segments = match wal_dir {
        true => segment::list_segments(&wal).map_err(Error::io(&wal))?,
        false => Vec::new(),
    };
    let wal_used = wal_used(&segments)?;
    // sled creates `db` when it creates the database; a `snapshot/` without it is as empty.
    let snapshot_dir = snapshot.join("db").is_file();
    let parts = Parts {
        wal_dir,
        wal_segments: !segments.is_empty(),
        snapshot_dir,
        wal_used,
    };
    if !parts.snapshot_dir {
        if let Some(seg) = &parts.wal_used {
            return Err(missing_snapshot(dir, seg));
        }
    }
    Ok(parts)
}

/// The first segment that proves records were appended: one longer than its header, or any
/// but a first segment at LSN 1. Creation leaves one header-only segment at LSN 1 (step 4),
/// and nothing longer before its commit point.
fn wal_used(segments: &[(Lsn, PathBuf)]) -> Result<Option<PathBuf>> {
    for (first_lsn, path) in segments {
        let len = std::fs::metadata(path).map_err(Error::io(path))?.len();
        if *first_lsn != 1 || len > HEADER_LEN as u64 {
            return Ok(Some(path.clone()));
        }
    }
    Ok(None)
}

fn wal_in_use(segment: &Path) -> String {
    format!(
        "the WAL shows the dir was in use ({} holds records, and records are only written \
         after the snapshot database is created and synced)",
        segment.display()
    )
}

const SNAPSHOT_NOT_REBUILT: &str = "The snapshot holds the node's identity and the roster \
     compaction took out of the WAL, so it is not rebuilt from the WAL";

fn missing_snapshot(dir: &Path, segment: &Path) -> Error {
    let part = dir.join("snapshot");
    // A file in its place is not "missing": say what is there (a trial was told "missing").
    let absence = if part.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
        &Absence {
            state: "is not a directory",
            how: "Something replaced the sled database directory with a file",
        }
    } else {
        &Absence {
            state: "is missing",
            how: "It was deleted or lost",
        }
    };
    Error::MissingPart {
        dir: dir.to_path_buf(),
        part,
        absence,
        evidence: wal_in_use(segment),
        advice: format!("{SNAPSHOT_NOT_REBUILT}. {RESTORE_OR_START_OVER}."),
    }
}

/// sled opened the database file as an empty database: the file is there, so it was not
/// lost, but what it held is gone (sled starts afresh on files that fail its checks).
fn empty_snapshot(dir: &Path, segment: &Path) -> Error {
    Error::MissingPart {
        dir: dir.to_path_buf(),
        part: dir.join("snapshot").join("db"),
        absence: &Absence {
            state: "opens as an empty database (neither schema stamp nor identity)",
            how: "The database was reset, replaced or damaged (sled discards a database \
                  whose files fail its own checks, and a single flipped bit can do that)",
        },
        evidence: wal_in_use(segment),
        advice: format!("{SNAPSHOT_NOT_REBUILT}. {RESTORE_OR_START_OVER}."),
    }
}

/// With sled open (its `meta` read before anything is written to it): refuses a missing
/// `wal/` while sled says the dir was created, and, when the opener needs an identity
/// (`needs_identity`: the node, and `gossip-log` speaking for it), a database that holds
/// neither stamp nor identity while the WAL was used: sled recreated or reset, where going
/// on would make up a new identity. (A library open without identity rebuilds such a
/// roster from the WAL, as before.) Changes nothing.
pub fn check_with_meta(dir: &Path, parts: &Parts, meta: &Meta, needs_identity: bool) -> Result<()> {
    if needs_identity && meta.schema_version.is_none() && meta.node_id.is_none() {
        if let Some(seg) = &parts.wal_used {
            return Err(empty_snapshot(dir, seg));
        }
    }
    let created = meta.schema_version.is_some() || meta.node_id.is_some();
    if created && !parts.wal_dir {
        let mut evidence = created_evidence(meta);
        evidence += ", and wal/ is made durable before that";
        if meta.snapshot_lsn > 0 {
            evidence += &format!(
                "; records after the snapshot's LSN {} are lost with it",
                meta.snapshot_lsn
            );
        }
        return Err(Error::MissingPart {
            dir: dir.to_path_buf(),
            part: dir.join("wal"),
            absence: &Absence {
                state: "is missing",
                how: "It was deleted or lost",
            },
            evidence,
            advice: format!(
                "The WAL holds every change since the last compaction; starting without it \
                 would silently drop them. {RESTORE_OR_START_OVER}."
            ),
        });
    }
    // The identity, not the stamp: the stamp is staged before the first segment exists (a
    // crash can leave it with none), the identity only once that segment is durable. (Where
    // a compaction or a clean stop left a mark, `check_wal_end` refuses it, saying which
    // records are gone.)
    if meta.node_id.is_some() && parts.wal_dir && !parts.wal_segments && must_reach(meta) == 0 {
        return Err(Error::MissingPart {
            dir: dir.to_path_buf(),
            part: dir.join("wal"),
            absence: &Absence {
                state: "holds no segment",
                how: "Its segments were deleted or lost",
            },
            evidence: format!(
                "{}, and its first segment and wal/ are synced before that (a WAL always \
                 keeps at least its newest segment)",
                created_evidence(meta)
            ),
            advice: format!(
                "Nothing was compacted, so the WAL held every change this node logged; \
                 starting without it would silently drop them. {RESTORE_OR_START_OVER}."
            ),
        });
    }
    Ok(())
}

fn created_evidence(meta: &Meta) -> String {
    let mut evidence = String::from("the snapshot database says the dir was created");
    if let Some(id) = &meta.node_id {
        evidence += &format!(" (node {id}, generation {})", meta.generation.unwrap_or(0));
    }
    evidence
}

/// The LSN the WAL must reach: both marks are written only after the WAL was synced past them.
pub fn must_reach(meta: &Meta) -> Lsn {
    meta.snapshot_lsn.max(meta.wal_synced_lsn)
}

/// Refuses a WAL that ends below what the snapshot proves it held (see the table above), as
/// corruption of its newest segment, and a created dir's first segment that has lost its
/// header. Run on a scan before its torn tail is cut.
pub fn check_wal_end(dir: &Path, scan: &WalScan, meta: &Meta) -> Result<()> {
    // A blank or short header reads as a torn tail of nothing: what a power loss leaves of
    // a segment created after the dir. Not of the dir's first segment (LSN 1): that one is
    // synced before the identity is written (`Store::open_with_identity`), so in a dir with
    // an identity it was damaged afterwards, and cutting it would drop every record it held.
    if let Some(torn) = &scan.torn {
        if torn.valid_len == 0 && torn.lsn == 1 && meta.node_id.is_some() {
            return Err(Error::Corrupt {
                data_dir: dir.to_path_buf(),
                file: torn.path.clone(),
                offset: 0,
                lsn: 1,
                reason: format!(
                    "the dir's first segment {}, but {}, and that segment is synced before \
                     that: it was overwritten or cut afterwards, and the records it held are \
                     lost",
                    if torn.file_len < super::segment::HEADER_LEN as u64 {
                        format!("is cut short to {} bytes", torn.file_len)
                    } else {
                        format!("is blank ({} bytes of zeros)", torn.file_len)
                    },
                    created_evidence(meta)
                ),
            });
        }
    }
    let end = scan.end_lsn();
    let need = must_reach(meta);
    if end >= need {
        return Ok(());
    }
    let (file, offset) = match (&scan.torn, scan.segments.last()) {
        (Some(torn), _) => (torn.path.clone(), torn.valid_len),
        (None, Some(last)) => (last.path.clone(), last.bytes),
        (None, None) => (dir.join("wal"), 0),
    };
    let witness = if meta.snapshot_lsn >= meta.wal_synced_lsn {
        format!("the snapshot covers up to LSN {}", meta.snapshot_lsn)
    } else {
        format!(
            "the node last stopped cleanly with the WAL synced up to LSN {}",
            meta.wal_synced_lsn
        )
    };
    let shows = match &scan.torn {
        Some(_) => format!("ends at LSN {end} before a damaged tail"),
        None if scan.segments.is_empty() => "holds no segment".to_owned(),
        None => format!("ends at LSN {end}"),
    };
    Err(Error::Corrupt {
        data_dir: dir.to_path_buf(),
        file,
        offset,
        lsn: end + 1,
        reason: format!(
            "the WAL {shows}, but {witness}: its newest segment was cut or deleted ({}, and \
             any after, missing)",
            match need - end {
                1 => format!("record {need} is"),
                _ => format!("records {} to {need} are", end + 1),
            }
        ),
    })
}
