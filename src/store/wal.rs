//! The WAL writer: one thread, group commit, one fdatasync per batch.
//!
//! Callers hand events to the thread and get a future that resolves once the events are
//! durable under the [`FsyncPolicy`]. The thread drains everything waiting into one batch,
//! writes it with one `write`, syncs once, then acknowledges the whole batch, so many
//! concurrent callers share one fsync. It uses `std::fs` on purpose: tokio's file type
//! reports write errors late.
//!
//! A failed write or fsync stops the writer for good: after a failed fsync the kernel may
//! have dropped the dirty pages, so a retry that "succeeds" would be a lie. Every later call
//! gets [`Error::WalFailed`]; the node stops and recovers from the log on restart.

use super::recovery::{sync_dir, SegmentInfo};
use super::segment::{self, WalRecord, HEADER_LEN};
use crate::error::{Error, Result};
use crate::event::{ClusterEvent, Lsn};
use prometheus_client::metrics::histogram::Histogram;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::oneshot;

/// When an acknowledged append is on stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// fdatasync every batch before acknowledging it: survives power loss.
    Always,
    /// Acknowledge once written to the OS (survives a process crash); fdatasync at most every
    /// `batch_interval`, so a power loss can lose at most that window.
    #[default]
    Batch,
    /// Acknowledge once written to the OS; the OS decides when it reaches the disk.
    Never,
}

impl FsyncPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Batch => "batch",
            FsyncPolicy::Never => "never",
        }
    }
}

impl FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "batch" => Ok(FsyncPolicy::Batch),
            "never" => Ok(FsyncPolicy::Never),
            other => Err(format!(
                "unknown fsync policy {other:?} (always, batch, never)"
            )),
        }
    }
}

impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug)]
pub struct WalConfig {
    pub policy: FsyncPolicy,
    /// Longest a written batch waits for its fdatasync under `Batch`.
    pub batch_interval: Duration,
    /// A new segment starts once the current one passes this size.
    pub segment_max_bytes: u64,
    /// Most events taken into one batch.
    pub max_batch_events: usize,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            policy: FsyncPolicy::Batch,
            batch_interval: Duration::from_millis(5),
            segment_max_bytes: 64 << 20,
            max_batch_events: 8192,
        }
    }
}

/// Counters the writer publishes; read without locking.
#[derive(Debug)]
pub struct WalStats {
    /// Last LSN written to the OS.
    pub last_lsn: AtomicU64,
    /// Last LSN known to be fdatasync'ed.
    pub durable_lsn: AtomicU64,
    pub bytes_written: AtomicU64,
    pub batches: AtomicU64,
    pub fsyncs: AtomicU64,
    /// First LSN of the segment being written.
    pub current_segment: AtomicU64,
    /// Latency of each batch's write to the OS, and of each fsync (seconds).
    pub write_seconds: Histogram,
    pub fsync_seconds: Histogram,
    failed: Mutex<Option<String>>,
}

impl Default for WalStats {
    fn default() -> Self {
        WalStats {
            last_lsn: AtomicU64::new(0),
            durable_lsn: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            current_segment: AtomicU64::new(0),
            write_seconds: crate::metrics::wal_write_histogram(),
            fsync_seconds: crate::metrics::wal_fsync_histogram(),
            failed: Mutex::new(None),
        }
    }
}

impl WalStats {
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().unwrap().clone()
    }
}

enum Command {
    Append {
        events: Vec<ClusterEvent>,
        done: oneshot::Sender<Result<Lsn>>,
    },
    Sync {
        done: oneshot::Sender<Result<Lsn>>,
    },
}

/// Resolves to the LSN of the last event of an append (or of a sync) once durable under
/// the policy. Usable from async code (`.await`) and from plain threads ([`Pending::wait`]).
#[must_use = "an append is acknowledged only when this resolves"]
pub struct Pending(oneshot::Receiver<Result<Lsn>>);

impl Pending {
    /// Blocks the current thread until acknowledged. Not for use inside an async task.
    pub fn wait(self) -> Result<Lsn> {
        self.0
            .blocking_recv()
            .unwrap_or_else(|_| Err(writer_gone()))
    }
}

impl Future for Pending {
    type Output = Result<Lsn>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(writer_gone())))
    }
}

fn writer_gone() -> Error {
    Error::WalFailed("the WAL writer has stopped".into())
}

/// Handle to the writer thread. Dropping it flushes, syncs and joins the thread.
pub struct Wal {
    tx: Option<mpsc::Sender<Command>>,
    stats: Arc<WalStats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Wal {
    /// Starts the writer so that the next record gets `next_lsn`. It appends to `last`
    /// (the newest segment, already repaired) when that ends right before `next_lsn`,
    /// and starts a new segment otherwise.
    pub fn start(
        wal_dir: &Path,
        next_lsn: Lsn,
        last: Option<&SegmentInfo>,
        config: WalConfig,
    ) -> Result<Wal> {
        let stats = Arc::new(WalStats::default());
        stats.last_lsn.store(next_lsn - 1, Ordering::Relaxed);
        stats.durable_lsn.store(next_lsn - 1, Ordering::Relaxed);
        let (file, segment_first, segment_len) = match last {
            Some(seg) if seg.last_lsn() + 1 == next_lsn => {
                let path = seg.path.as_path();
                let file = OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map_err(Error::io(path))?;
                let len = file.metadata().map_err(Error::io(path))?.len();
                (file, seg.first_lsn, len)
            }
            _ => (
                create_segment(wal_dir, next_lsn)?,
                next_lsn,
                HEADER_LEN as u64,
            ),
        };
        stats
            .current_segment
            .store(segment_first, Ordering::Relaxed);
        let writer = Writer {
            wal_dir: wal_dir.to_path_buf(),
            file,
            segment_durable: false,
            segment_len,
            next_lsn,
            config,
            buf: Vec::with_capacity(1 << 20),
            unsynced_since: None,
            stats: stats.clone(),
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(Error::io(wal_dir))?;
        Ok(Wal {
            tx: Some(tx),
            stats,
            thread: Some(thread),
        })
    }

    /// Queues events; they get consecutive LSNs in order.
    pub fn append(&self, events: Vec<ClusterEvent>) -> Pending {
        let (done, rx) = oneshot::channel();
        self.send(Command::Append { events, done });
        Pending(rx)
    }

    /// Writes and fdatasyncs everything queued so far, whatever the policy.
    pub fn sync(&self) -> Pending {
        let (done, rx) = oneshot::channel();
        self.send(Command::Sync { done });
        Pending(rx)
    }

    fn send(&self, cmd: Command) {
        if let Err(mpsc::SendError(cmd)) = self.tx.as_ref().expect("open").send(cmd) {
            let done = match cmd {
                Command::Append { done, .. } | Command::Sync { done } => done,
            };
            let _ = done.send(Err(writer_gone()));
        }
    }

    pub fn stats(&self) -> &Arc<WalStats> {
        &self.stats
    }

    /// Syncs what is queued and stops the writer, reporting a failure if there was one.
    pub fn close(mut self) -> Result<()> {
        let synced = self.sync().wait();
        self.shutdown();
        synced.map(|_| ())
    }

    fn shutdown(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Creates `wal_dir/<first_lsn>.log` with its header, not synced: the segment's first sync
/// ([`Writer::sync`]) makes header, records and directory entry durable together, before
/// anything in it is acknowledged as durable. Syncing here too would cost two more fsyncs per
/// segment for no acknowledgement: until that first sync the segment holds nothing anyone
/// was promised. A power loss before it can leave the segment missing, short or with a blank
/// header; recovery reads each as a torn tail of nothing (see `recovery::scan_wal`). The one
/// exception is a new data dir's first segment, which `Store::open_with_identity` syncs
/// before the identity is written, so that an identity with no segment is always damage
/// (see `parts.rs`).
fn create_segment(wal_dir: &Path, first_lsn: Lsn) -> Result<File> {
    let path = wal_dir.join(segment::segment_name(first_lsn));
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(Error::io(&path))?;
    file.write_all(&segment::encode_header(first_lsn))
        .map_err(Error::io(&path))?;
    Ok(file)
}

struct Writer {
    wal_dir: PathBuf,
    file: File,
    /// Whether the current segment's header and directory entry are known durable. False
    /// for a new segment (see [`create_segment`]) and for the segment a start appends to (a
    /// previous run may have crashed before syncing it): its first sync covers them.
    segment_durable: bool,
    segment_len: u64,
    next_lsn: Lsn,
    config: WalConfig,
    buf: Vec<u8>,
    /// Set while written data waits for its fdatasync (policy `Batch`).
    unsynced_since: Option<Instant>,
    stats: Arc<WalStats>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        loop {
            let first = match self.unsynced_since {
                Some(since) => {
                    let due = since + self.config.batch_interval;
                    match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                        Ok(cmd) => cmd,
                        Err(RecvTimeoutError::Timeout) => {
                            self.sync_or_fail();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match rx.recv() {
                    Ok(cmd) => cmd,
                    Err(_) => break,
                },
            };
            let mut batch = vec![first];
            let mut events = batch_events(&batch[0]);
            while events < self.config.max_batch_events {
                match rx.try_recv() {
                    Ok(cmd) => {
                        events += batch_events(&cmd);
                        batch.push(cmd);
                    }
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
        // Channel closed: a clean stop leaves nothing unsynced.
        if self.unsynced_since.is_some() {
            self.sync_or_fail();
        }
    }

    /// Writes one batch, syncs it as the policy says, then acknowledges every caller in it.
    fn commit(&mut self, batch: Vec<Command>) {
        if let Some(reason) = self.stats.failure() {
            for cmd in batch {
                let done = match cmd {
                    Command::Append { done, .. } | Command::Sync { done } => done,
                };
                let _ = done.send(Err(Error::WalFailed(reason.clone())));
            }
            return;
        }
        let unix_ms = unix_ms();
        let mut acks = Vec::with_capacity(batch.len());
        let mut force_sync = false;
        let first_lsn = self.next_lsn;
        self.buf.clear();
        for cmd in batch {
            match cmd {
                Command::Append { events, done } => {
                    for event in events {
                        let record = WalRecord {
                            lsn: self.next_lsn,
                            unix_ms,
                            event,
                        };
                        segment::encode_record(&mut self.buf, &record);
                        self.next_lsn += 1;
                    }
                    acks.push((done, self.next_lsn - 1));
                }
                Command::Sync { done } => {
                    force_sync = true;
                    acks.push((done, self.next_lsn - 1));
                }
            }
        }
        let result = self.write_batch(first_lsn).and_then(|_| {
            let sync_now = force_sync
                || self.config.policy == FsyncPolicy::Always
                || (self.config.policy == FsyncPolicy::Batch
                    && self
                        .unsynced_since
                        .is_some_and(|t| t.elapsed() >= self.config.batch_interval));
            if sync_now {
                self.sync()
            } else {
                if self.config.policy == FsyncPolicy::Batch && self.unsynced_since.is_none() {
                    self.unsynced_since = Some(Instant::now());
                }
                Ok(())
            }
        });
        if let Err(e) = &result {
            self.fail(e.to_string());
        }
        for (done, lsn) in acks {
            let _ = done.send(match &result {
                Ok(()) => Ok(lsn),
                Err(e) => Err(Error::WalFailed(e.to_string())),
            });
        }
    }

    fn write_batch(&mut self, first_lsn: Lsn) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let rollover = self.segment_len > HEADER_LEN as u64
            && self.segment_len + self.buf.len() as u64 > self.config.segment_max_bytes;
        if rollover {
            // The old segment is made complete on disk before the next one exists, so only
            // the newest segment can ever have a torn tail.
            self.sync()?;
            crate::store::failpoint::hit("wal-rollover-before-create")?;
            self.file = create_segment(&self.wal_dir, first_lsn)?;
            self.segment_durable = false;
            self.segment_len = HEADER_LEN as u64;
            self.stats
                .current_segment
                .store(first_lsn, Ordering::Relaxed);
        }
        let path = || {
            self.wal_dir.join(segment::segment_name(
                self.stats.current_segment.load(Ordering::Relaxed),
            ))
        };
        let started = Instant::now();
        self.file.write_all(&self.buf).map_err(Error::io(path()))?;
        self.stats
            .write_seconds
            .observe(started.elapsed().as_secs_f64());
        self.segment_len += self.buf.len() as u64;
        self.stats
            .bytes_written
            .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_lsn
            .store(self.next_lsn - 1, Ordering::Release);
        Ok(())
    }

    /// fdatasync of the current segment. The first one of a segment is an fsync of the file
    /// (size and blocks of a new file included) and of the WAL directory (its entry).
    fn sync(&mut self) -> Result<()> {
        let path = self.wal_dir.clone();
        let started = Instant::now();
        if self.segment_durable {
            self.file.sync_data().map_err(Error::io(path))?;
        } else {
            self.file.sync_all().map_err(Error::io(&path))?;
            crate::store::failpoint::hit("wal-first-sync-before-dir-sync")?;
            sync_dir(&self.wal_dir)?;
            self.segment_durable = true;
        }
        self.stats
            .fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        self.unsynced_since = None;
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .durable_lsn
            .store(self.next_lsn - 1, Ordering::Release);
        Ok(())
    }

    fn sync_or_fail(&mut self) {
        if let Err(e) = self.sync() {
            self.fail(e.to_string());
        }
    }

    fn fail(&mut self, reason: String) {
        tracing::error!(%reason, "WAL writer failed; no further appends will be acknowledged");
        self.unsynced_since = None;
        *self.stats.failed.lock().unwrap() = Some(reason);
    }
}

fn batch_events(cmd: &Command) -> usize {
    match cmd {
        Command::Append { events, .. } => events.len().max(1),
        Command::Sync { .. } => 1,
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
