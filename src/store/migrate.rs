//! Schema versions of the data dir, and the steps that move an older one forward.
//!
//! The version lives in two places: `DIR/SCHEMA` (one line, readable without opening sled,
//! so that a dir from a newer release is refused before a single byte of it is touched; sled
//! writes housekeeping files even on a read-only open) and `meta.schema_version` in the
//! snapshot, which is authoritative. History and fixtures: `migrations/` at the repo root.

use super::snapshot::Snapshot;
use crate::error::{Error, Result};
use std::path::Path;

/// The schema this build writes. 2: the WAL may hold `TagSet` and `HealthSet` records and
/// snapshot records carry `tags` and `health` (an older build must refuse such a dir, not
/// fail on its first unknown record).
pub const SCHEMA_VERSION: u32 = 2;
pub const SCHEMA_FILE: &str = "SCHEMA";

/// A step from version `n` to `n + 1`, run with the dir locked and the snapshot open.
type Step = fn(dir: &Path, snapshot: &Snapshot) -> Result<()>;

/// `STEPS[i]` moves version `i + 1` to `i + 2`.
const STEPS: &[Step] = &[v1_to_v2];
const _: () = assert!(STEPS.len() as u32 + 1 == SCHEMA_VERSION);

/// Version 2 only adds: every v1 record decodes as it is, and a v1 snapshot record reads
/// with no tags and no health. Nothing to rewrite; the new version is stamped.
fn v1_to_v2(_dir: &Path, _snapshot: &Snapshot) -> Result<()> {
    Ok(())
}

/// Reads `DIR/SCHEMA`; refuses a newer version before anything else is opened.
///
/// A blank marker (empty, or NUL bytes only) counts as missing: it is what a power loss can
/// leave of a marker whose contents never reached the disk (a new dir's marker is not
/// fsynced, see [`write_marker`]). sled's `meta.schema_version` stays authoritative, and
/// [`bring_up_to_date`] writes the marker again.
pub fn check_marker(dir: &Path) -> Result<Option<u32>> {
    let path = dir.join(SCHEMA_FILE);
    let text = match std::fs::read(&path) {
        Ok(bytes) if bytes.iter().all(|&b| b == 0 || b.is_ascii_whitespace()) => {
            tracing::warn!(file = %path.display(), "blank schema marker (never reached the disk); sled decides");
            return Ok(None);
        }
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path)(e)),
    };
    // Anything but a version (or a blank) is damage: this build only ever writes a version
    // through a rename, so no crash leaves a partial one.
    let found: u32 = match text.trim().parse() {
        Ok(0) | Err(_) => {
            let shown: String = text.trim().chars().take(40).collect();
            return Err(super::parts::damaged(
                dir,
                path,
                format!("it holds {shown:?}, not a schema version"),
            ));
        }
        Ok(found) => found,
    };
    refuse_newer(dir, found)?;
    Ok(Some(found))
}

fn refuse_newer(dir: &Path, found: u32) -> Result<()> {
    if found > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            dir: dir.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == 0 {
        return Err(Error::BadDataDir {
            dir: dir.to_path_buf(),
            reason: "schema version 0 does not exist".into(),
        });
    }
    Ok(())
}

/// What [`bring_up_to_date`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpToDate {
    pub version: u32,
    /// The database had no version: it was stamped [`SCHEMA_VERSION`], but neither the stamp
    /// nor the marker is durable yet. The caller's next flush (with the identity, in
    /// `Store::open_with_identity`) makes the stamp durable; until then a crash leaves a
    /// database without a version, which the next open stamps again: a new dir holds
    /// nothing a stamp could misdescribe.
    pub stamped_new: bool,
}

/// Brings an opened data dir to [`SCHEMA_VERSION`]: stamps a new one, migrates an older one
/// step by step, refuses a newer one. With `read_only`, only checks.
pub fn bring_up_to_date(dir: &Path, snapshot: &Snapshot, read_only: bool) -> Result<UpToDate> {
    let stored = snapshot.meta()?.schema_version;
    let mut version = match stored {
        Some(v) => {
            refuse_newer(dir, v)?;
            v
        }
        None => SCHEMA_VERSION,
    };
    let stamped_new = stored.is_none() && !read_only;
    if read_only {
        return Ok(UpToDate {
            version,
            stamped_new,
        });
    }
    while version < SCHEMA_VERSION {
        tracing::info!(from = version, to = version + 1, "migrating data dir");
        STEPS[version as usize - 1](dir, snapshot)?;
        version += 1;
        snapshot.set_schema_version(version)?;
    }
    if stamped_new {
        snapshot.stage_schema_version(version)?;
    }
    write_marker(dir, version, !stamped_new)?;
    Ok(UpToDate {
        version,
        stamped_new,
    })
}

/// Writes `DIR/SCHEMA` through a temporary file and a rename, so that no process ever reads
/// half a marker. With `durable`, the file and the directory are fsynced too: a migrated
/// dir's marker then never lags behind its sled stamp, so an older build is refused before it
/// opens sled. A new dir's marker is not (`durable = false`): it can only say the version
/// this build stamps, a lost or blank one is rewritten by the next open (see
/// [`check_marker`]), and the data dir's fsync in `Store::open_with_identity` makes the
/// rename durable with everything else.
fn write_marker(dir: &Path, version: u32, durable: bool) -> Result<()> {
    let path = dir.join(SCHEMA_FILE);
    if std::fs::read_to_string(&path).is_ok_and(|t| t.trim() == version.to_string()) {
        return Ok(());
    }
    let tmp = dir.join(format!("{SCHEMA_FILE}.tmp"));
    std::fs::write(&tmp, format!("{version}\n"))
        .and_then(|_| match durable {
            true => std::fs::File::open(&tmp)?.sync_all(),
            false => Ok(()),
        })
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(Error::io(&path))?;
    if durable {
        super::recovery::sync_dir(dir)?;
    }
    Ok(())
}
