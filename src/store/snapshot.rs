//! The sled snapshot: the roster as of `snapshot_lsn`, plus the node's identity.
//!
//! Trees: `meta` (schema_version, node_id, generation, snapshot_lsn, prev_snapshot_lsn,
//! largest_cluster, wal_synced_lsn),
//! `nodes` (node id -> rmp-serde `NodeRecord`), and `actors`, which data dirs written before
//! held a derived index in and which compaction now empties (the index is rebuilt in memory
//! at load). A snapshot is written in one cross-tree transaction.
//!
//! sled 0.34's `flush()` ends in `sync_file_range`, which does not flush the drive's cache
//! (sled issue #1452), so [`Snapshot::make_durable`] also fsyncs every file and directory
//! of the database itself.

use crate::error::{Error, Result};
use crate::event::{Generation, Lsn, NodeId};
use crate::roster::{NodeRecord, Roster};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What the `meta` tree holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// `None` only for a database that was never initialised.
    pub schema_version: Option<u32>,
    pub node_id: Option<NodeId>,
    pub generation: Option<Generation>,
    /// The roster in `nodes` includes every record up to here.
    pub snapshot_lsn: Lsn,
    /// The snapshot before this one; the WAL is kept back to here.
    pub prev_snapshot_lsn: Lsn,
    /// Largest recent cluster size, the base of the quorum (0: never recorded).
    pub largest_cluster: u64,
    /// The WAL was synced up to here when the store last closed cleanly (0: never): a WAL
    /// that ends below it lost records to damage (see `parts.rs`).
    pub wal_synced_lsn: Lsn,
}

pub struct Snapshot {
    dir: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    nodes: sled::Tree,
    actors: sled::Tree,
    /// Keeps a read-only copy's files alive for as long as the database is open.
    _copy: Option<tempfile::TempDir>,
}

const K_SCHEMA: &str = "schema_version";
const K_NODE_ID: &str = "node_id";
const K_GENERATION: &str = "generation";
const K_SNAPSHOT_LSN: &str = "snapshot_lsn";
const K_PREV_SNAPSHOT_LSN: &str = "prev_snapshot_lsn";
const K_LARGEST_CLUSTER: &str = "largest_cluster";
const K_WAL_SYNCED_LSN: &str = "wal_synced_lsn";

/// sled's page cache, in bytes.
const SLED_CACHE_BYTES: u64 = 16 << 20;

impl Snapshot {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Snapshot> {
        Self::open_at(dir, dir, None)
    }

    /// Opens a private copy, so that reading never changes a byte of `dir` (sled writes
    /// housekeeping files even when only read). For the offline read-only tools. A missing
    /// `dir` reads as a new, empty database: what a dir whose creation was cut short holds
    /// (`parts::inspect` refuses the case where it is damage).
    pub fn open_copy(dir: &Path) -> Result<Snapshot> {
        let copy = tempfile::tempdir().map_err(Error::io(std::env::temp_dir()))?;
        let target = copy.path().join("snapshot");
        if dir.exists() {
            copy_dir(dir, &target)?;
        }
        let mut snap = Self::open_at(&target, dir, Some(copy))?;
        snap.dir = dir.to_path_buf();
        Ok(snap)
    }

    /// Opens the database in `dir`; errors name `shown` (the data dir's, for a copy).
    fn open_at(dir: &Path, shown: &Path, copy: Option<tempfile::TempDir>) -> Result<Snapshot> {
        // No background flusher: the WAL makes changes durable and snapshots are flushed
        // explicitly, and without that thread a closed database lets go of its file at once.
        // A small page cache: the roster lives in memory anyway, and sled's default (1 GiB)
        // kept every page a compaction wrote resident (measured: 100,000 actors took a
        // node from 108 to 585 MiB after its first compaction).
        let config = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::LowSpace)
            .cache_capacity(SLED_CACHE_BYTES)
            .flush_every_ms(None);
        // Our DIR/LOCK already excludes other processes; sled's own file lock can still be
        // held for a moment by a database of this process that is being dropped.
        let mut attempts = 0;
        let db = loop {
            match config.open() {
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock") && attempts < 200 =>
                {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other.map_err(sled_error(shown))?,
            }
        };
        Ok(Snapshot {
            dir: dir.to_path_buf(),
            meta: db.open_tree("meta").map_err(sled_error(shown))?,
            nodes: db.open_tree("nodes").map_err(sled_error(shown))?,
            actors: db.open_tree("actors").map_err(sled_error(shown))?,
            db,
            _copy: copy,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn meta(&self) -> Result<Meta> {
        Ok(Meta {
            schema_version: self.get_u64(K_SCHEMA)?.map(|v| v as u32),
            node_id: self
                .meta
                .get(K_NODE_ID)
                .map_err(sled_error(&self.dir))?
                .map(|v| {
                    String::from_utf8(v.to_vec()).map_err(|_| Error::BadSnapshot {
                        key: "meta/node_id".into(),
                        reason: "not UTF-8".into(),
                    })
                })
                .transpose()?
                .map(NodeId::new),
            generation: self.get_u64(K_GENERATION)?,
            snapshot_lsn: self.get_u64(K_SNAPSHOT_LSN)?.unwrap_or(0),
            prev_snapshot_lsn: self.get_u64(K_PREV_SNAPSHOT_LSN)?.unwrap_or(0),
            largest_cluster: self.get_u64(K_LARGEST_CLUSTER)?.unwrap_or(0),
            wal_synced_lsn: self.get_u64(K_WAL_SYNCED_LSN)?.unwrap_or(0),
        })
    }

    fn get_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.meta.get(key).map_err(sled_error(&self.dir))? {
            None => Ok(None),
            Some(v) => {
                let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| Error::BadSnapshot {
                    key: format!("meta/{key}"),
                    reason: format!("expected 8 bytes, found {}", v.len()),
                })?;
                Ok(Some(u64::from_be_bytes(bytes)))
            }
        }
    }

    pub fn set_schema_version(&self, version: u32) -> Result<()> {
        self.stage_schema_version(version)?;
        self.make_durable()
    }

    /// Writes the schema version without making it durable: a new database's stamp, which
    /// reaches the disk with the identity in one [`Snapshot::make_durable`] (see
    /// `Store::open_with_identity`). sled recovers its log in order, so a later flush covers
    /// this write too; until then a crash leaves a database with neither, which the next
    /// open stamps again.
    pub fn stage_schema_version(&self, version: u32) -> Result<()> {
        self.meta
            .insert(K_SCHEMA, &(version as u64).to_be_bytes())?;
        Ok(())
    }

    /// Records who this data dir belongs to; durable before it returns.
    pub fn set_identity(&self, id: &NodeId, generation: Generation) -> Result<()> {
        self.stage_identity(id, generation)?;
        self.make_durable()
    }

    /// Writes the identity (one batch: id and generation together) without making it
    /// durable; the caller's next [`Snapshot::make_durable`] does.
    pub fn stage_identity(&self, id: &NodeId, generation: Generation) -> Result<()> {
        let mut batch = sled::Batch::default();
        batch.insert(K_NODE_ID, id.as_str().as_bytes());
        batch.insert(K_GENERATION, &generation.to_be_bytes());
        self.meta.apply_batch(batch)?;
        Ok(())
    }

    /// Records that the WAL is synced up to `lsn` (a clean close); durable with the caller's
    /// next [`Snapshot::make_durable`]. Never lowers the stored value.
    pub fn stage_wal_synced_lsn(&self, lsn: Lsn) -> Result<()> {
        if lsn > self.get_u64(K_WAL_SYNCED_LSN)?.unwrap_or(0) {
            self.meta.insert(K_WAL_SYNCED_LSN, &lsn.to_be_bytes())?;
        }
        Ok(())
    }

    /// Records the largest recent cluster size (quorum base); durable before it returns.
    pub fn set_largest_cluster(&self, size: u64) -> Result<()> {
        self.meta.insert(K_LARGEST_CLUSTER, &size.to_be_bytes())?;
        self.make_durable()
    }

    /// Reads the stored roster. A record that does not decode is an error, never skipped.
    pub fn load_roster(&self) -> Result<Roster> {
        let mut records = Vec::with_capacity(self.nodes.len());
        for item in self.nodes.iter() {
            let (k, v) = item.map_err(sled_error(&self.dir))?;
            let id =
                NodeId::new(
                    String::from_utf8(k.to_vec()).map_err(|_| Error::BadSnapshot {
                        key: format!("nodes/{k:?}"),
                        reason: "node id is not UTF-8".into(),
                    })?,
                );
            let rec: NodeRecord = rmp_serde::from_slice(&v).map_err(|e| Error::BadSnapshot {
                key: format!("nodes/{id}"),
                reason: e.to_string(),
            })?;
            records.push((id, rec));
        }
        Ok(Roster::from_records(records))
    }

    /// Replaces the stored roster with `roster` as of `lsn`, all in one transaction.
    /// Not durable until [`Snapshot::make_durable`].
    pub fn write(&self, roster: &Roster, lsn: Lsn, prev_lsn: Lsn) -> Result<()> {
        let mut nodes = sled::Batch::default();
        let mut live_keys = BTreeSet::new();
        for (id, rec) in roster.iter_records() {
            nodes.insert(
                id.as_str().as_bytes(),
                rmp_serde::to_vec(rec).expect("encodes"),
            );
            live_keys.insert(id.as_str().as_bytes().to_vec());
        }
        for key in self.nodes.iter().keys() {
            let key = key?;
            if !live_keys.contains(key.as_ref()) {
                nodes.remove(key);
            }
        }
        // The actor index is derived and rebuilt in memory at load; it is no longer stored
        // (sled held ~4.5 KB of memory per indexed key: 100,000 actors cost a node 450 MiB
        // after its first compaction). Data dirs written before keep an `actors` tree,
        // emptied here.
        let mut actors = sled::Batch::default();
        for key in self.actors.iter().keys() {
            actors.remove(key?);
        }
        let mut meta = sled::Batch::default();
        meta.insert(K_SNAPSHOT_LSN, &lsn.to_be_bytes());
        meta.insert(K_PREV_SNAPSHOT_LSN, &prev_lsn.to_be_bytes());
        (&self.meta, &self.nodes, &self.actors)
            .transaction(|(m, n, a)| {
                m.apply_batch(&meta)?;
                n.apply_batch(&nodes)?;
                a.apply_batch(&actors)?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => Error::Snapshot(e),
                TransactionError::Abort(()) => unreachable!("the transaction never aborts"),
            })
    }

    /// sled flush, then fsync every file and directory of the database (see module doc).
    pub fn make_durable(&self) -> Result<()> {
        self.db.flush()?;
        sync_tree(&self.dir)
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

/// sled's own error, or, when sled found its files damaged (`Corruption`, or a
/// `ReportableBug`, which sled 0.34 also raises on some malformed files), [`Error::Damaged`]
/// naming the database file of `dir` and what to do.
fn sled_error(dir: &Path) -> impl Fn(sled::Error) -> Error + '_ {
    move |e| {
        let reason = match e {
            sled::Error::Corruption { at, .. } => format!(
                "sled read corrupted data from it{} (its checksums or structure fail)",
                at.map(|at| format!(" (at {at:?})")).unwrap_or_default()
            ),
            sled::Error::ReportableBug(what) => format!("sled cannot read it: {what}"),
            e => return Error::Snapshot(e),
        };
        super::parts::damaged(dir.parent().unwrap_or(dir), dir.join("db"), reason)
    }
}

fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let entry = entry.map_err(Error::io(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(Error::io(&path))?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(Error::io(&path))?;
        }
    }
    super::recovery::sync_dir(dir)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(Error::io(to))?;
    for entry in std::fs::read_dir(from).map_err(Error::io(from))? {
        let entry = entry.map_err(Error::io(from))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().map_err(Error::io(&src))?.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(Error::io(&src))?;
            // The copy keeps the source's mode: a read-only source (a restored backup) would
            // give sled a copy it cannot open for writing.
            let mut perms = std::fs::metadata(&dst)
                .map_err(Error::io(&dst))?
                .permissions();
            if perms.readonly() {
                #[allow(clippy::permissions_set_readonly_false)]
                perms.set_readonly(false);
                std::fs::set_permissions(&dst, perms).map_err(Error::io(&dst))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::ClusterEvent;

    fn roster(actors: &[&str]) -> Roster {
        let mut r = Roster::new();
        r.apply(&ClusterEvent::NewNode {
            node: NodeId::new("a"),
            generation: 1,
            version: 1,
            addr: "ws://127.0.0.1:1".into(),
            actors: actors.iter().map(|s| s.to_string()).collect(),
        });
        r
    }

    #[test]
    fn write_replaces_roster_and_lsn_atomically_and_empties_an_old_index() {
        let dir = tempfile::tempdir().unwrap();
        let snap = Snapshot::open(dir.path()).unwrap();
        // A data dir written before the index was dropped holds index keys.
        snap.actors.insert(b"x\0a", &[][..]).unwrap();
        snap.write(&roster(&["x", "y"]), 10, 0).unwrap();
        snap.write(&roster(&["y"]), 20, 10).unwrap();
        snap.make_durable().unwrap();
        drop(snap);
        let snap = Snapshot::open(dir.path()).unwrap();
        assert_eq!(snap.load_roster().unwrap(), roster(&["y"]));
        assert_eq!(snap.actors.len(), 0, "the derived index is not stored");
        assert_eq!(
            snap.load_roster().unwrap().locate("y"),
            vec![NodeId::new("a")]
        );
        let meta = snap.meta().unwrap();
        assert_eq!((meta.snapshot_lsn, meta.prev_snapshot_lsn), (20, 10));
    }

    #[test]
    fn a_copy_reads_the_same_and_leaves_the_original_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let snap = Snapshot::open(dir.path()).unwrap();
        snap.set_identity(&NodeId::new("me"), 7).unwrap();
        drop(snap);
        let before = dir_fingerprint(dir.path());
        let copy = Snapshot::open_copy(dir.path()).unwrap();
        assert_eq!(copy.meta().unwrap().generation, Some(7));
        drop(copy);
        assert_eq!(dir_fingerprint(dir.path()), before);
    }

    pub(crate) fn dir_fingerprint(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                out.extend(dir_fingerprint(&p));
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
        out.sort();
        out
    }
}
