//! `gossip-log`: inspect and repair a gossip-roster data dir offline.
//!
//! Every command takes the data dir's lock, so it refuses to run beside a live node.
//! `dump`, `verify`, `replay` and `stats` change nothing on disk; `compact` writes.

/// mimalloc: recovery and merge are allocation-heavy, and glibc's arenas contend across the
/// WAL reader and apply threads (measured: ~30% of replay time in malloc/free).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "shared/logging.rs"]
mod logging;
#[path = "shared/members.rs"]
mod members;

use anyhow::Result;
use clap::{Parser, Subcommand};
use gossip_roster::store::offline::Offline;
use gossip_roster::store::parts::WAL_NEXT_STEP;
use gossip_roster::store::{Store, StoreConfig, WalScan};
use gossip_roster::{Error, Lsn};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

#[derive(Parser)]
#[command(
    name = "gossip-log",
    version,
    about = "Inspect and repair a gossip-roster data dir (the node must not be running)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print WAL records, one a line: LSN, time, event kind, fields.
    Dump {
        #[arg(long)]
        data_dir: PathBuf,
        /// One JSON object a line (JSON Lines).
        #[arg(long)]
        json: bool,
        /// First LSN to print.
        #[arg(long)]
        from: Option<Lsn>,
        /// Last LSN to print.
        #[arg(long)]
        to: Option<Lsn>,
    },
    /// Check every record, segment header, LSN continuity, the snapshot, and that no part
    /// is missing that the others prove existed (wal/, snapshot/, the WAL's newest records).
    /// Exit 0 clean (or half-created: a crash cut its creation short; the node finishes it),
    /// 3 torn tail (the node will cut it on start), 4 corruption or a missing part (the node
    /// refuses to start); 1 when it could not check at all (missing or locked dir).
    Verify {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Print the roster rebuilt from disk, as the node would see it at start.
    Replay {
        #[arg(long)]
        data_dir: PathBuf,
        /// Same shape as `gossip-node members --json`.
        #[arg(long)]
        json: bool,
        /// Stop after this LSN.
        #[arg(long)]
        upto: Option<Lsn>,
    },
    /// Write a snapshot of everything logged and drop covered WAL segments.
    Compact {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Segments, records, bytes, snapshot LSN, schema version, identity.
    Stats {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    logging::init("warn");
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dump {
            data_dir,
            json,
            from,
            to,
        } => dump(&data_dir, json, from, to),
        Command::Verify { data_dir, json } => verify(&data_dir, json),
        Command::Replay {
            data_dir,
            json,
            upto,
        } => replay(&data_dir, json, upto),
        Command::Compact { data_dir, json } => compact(&data_dir, json),
        Command::Stats { data_dir, json } => stats(&data_dir, json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // A closed pipe (`| head`) is not an error worth a message.
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            logging::say(format_args!("gossip-log: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// A progress bar on stderr, only when a person is watching (not when piped or redirected).
fn progress(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() || total < (8 << 20) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total).with_message(what.to_owned());
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn timestamp(unix_ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}

/// Opens `dir` for a read-only command, saying so on stderr when the dir is not writable
/// (the lock was then taken read-only, or not at all).
fn open_offline(dir: &Path) -> Result<Offline, Error> {
    let offline = Offline::open(dir)?;
    if let Some(note) = offline.read_only_note() {
        logging::say(format_args!("gossip-log: {note}"));
    }
    Ok(offline)
}

/// An error of a read-only command: it could not read the dir (it refuses nothing itself).
fn cannot_read(dir: &Path, e: Error) -> anyhow::Error {
    cannot("read", dir, e)
}

/// An error of a command that could not `what` (read, compact) the dir: WAL corruption is
/// told as what it means for the node and what to do, without the node's "Refusing to start".
fn cannot(what: &str, dir: &Path, e: Error) -> anyhow::Error {
    match e {
        Error::Corrupt {
            file,
            offset,
            lsn,
            reason,
            ..
        } => anyhow::anyhow!(
            "cannot {what} {}: WAL corruption in {} at offset {offset} (LSN {lsn}): {reason}. \
             The node refuses to start on this data dir; see `gossip-log verify --data-dir {}`. \
             {WAL_NEXT_STEP}.",
            dir.display(),
            file.display(),
            dir.display()
        ),
        e => anyhow::Error::new(e).context(format!("cannot {what} {}", dir.display())),
    }
}

fn dump(dir: &Path, json: bool, from: Option<Lsn>, to: Option<Lsn>) -> Result<ExitCode> {
    let from = from.unwrap_or(0);
    let to = to.unwrap_or(Lsn::MAX);
    if from > to {
        anyhow::bail!("--from {from} is after --to {to}: nothing to dump");
    }
    let offline = open_offline(dir).map_err(|e| cannot_read(dir, e))?;
    let bar = progress(offline.wal_bytes(), "reading WAL");
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    let mut write_err: Option<std::io::Error> = None;
    let scan = offline.scan(
        from.saturating_sub(1),
        |_, _, rec| {
            if write_err.is_some() || rec.lsn < from || rec.lsn > to {
                return;
            }
            let line = if json {
                let mut obj = rec.event.to_json();
                obj.insert("lsn".into(), json!(rec.lsn));
                obj.insert("unix_ms".into(), json!(rec.unix_ms));
                serde_json::Value::Object(obj).to_string()
            } else {
                format!("{:>10}  {}  {}", rec.lsn, timestamp(rec.unix_ms), rec.event)
            };
            if let Err(e) = writeln!(out, "{line}") {
                write_err = Some(e);
            }
        },
        |n| bar.set_position(n),
    );
    bar.finish_and_clear();
    out.flush()?;
    if let Some(e) = write_err {
        return Err(e.into());
    }
    if let Some(torn) = scan.map_err(|e| cannot_read(dir, e))?.torn {
        logging::say(format_args!(
            "gossip-log: torn tail in {} at offset {} (LSN {}): {}; the node will cut it on start",
            torn.path.display(),
            torn.valid_len,
            torn.lsn,
            torn.reason
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(dir: &Path, json: bool) -> Result<ExitCode> {
    let offline = match open_offline(dir) {
        Ok(offline) => offline,
        Err(e @ (Error::MissingPart { .. } | Error::Damaged { .. })) => {
            return Ok(refused_part(&e, json))
        }
        // A script reading `--json` gets JSON whatever the verdict (trial: a locked dir
        // printed nothing on stdout).
        Err(e) if json => {
            println!(
                "{}",
                json!({ "status": "unchecked", "reason": e.to_string() })
            );
            logging::say(format_args!("gossip-log: {e}"));
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.into()),
    };
    let bar = progress(offline.wal_bytes(), "verifying");
    let roster = offline.snapshot.load_roster();
    let scan = offline.scan(u64::MAX, |_, _, _| {}, |n| bar.set_position(n));
    bar.finish_and_clear();
    let (status, code, detail) = match (&roster, &scan) {
        (Err(e @ Error::Damaged { .. }), _) => return Ok(refused_part(e, json)),
        (Err(e), _) => (
            "corrupt",
            4,
            json!({ "reason": e.to_string(), "file": offline.snapshot.dir() }),
        ),
        (
            _,
            Err(Error::Corrupt {
                file,
                offset,
                lsn,
                reason,
                ..
            }),
        ) => (
            "corrupt",
            4,
            json!({ "file": file, "offset": offset, "lsn": lsn, "reason": reason }),
        ),
        (_, Err(e)) => return Err(anyhow::anyhow!("{e}")),
        (_, Ok(WalScan { torn: Some(t), .. })) => (
            "torn",
            3,
            json!({ "file": t.path, "offset": t.valid_len, "lsn": t.lsn, "reason": t.reason,
                    "bytes_to_cut": t.file_len - t.valid_len }),
        ),
        (_, Ok(_)) if offline.half_created() => ("half-created", 0, json!({})),
        (_, Ok(_)) => ("clean", 0, json!({})),
    };
    let summary = scan.as_ref().ok().map(|s| {
        json!({
            "segments": s.segments.len(),
            "records": s.total_records(),
            "first_lsn": s.oldest_lsn(),
            "last_lsn": s.last_lsn,
        })
    });
    if json {
        let mut obj = json!({ "status": status, "snapshot_lsn": offline.meta.snapshot_lsn,
                              "schema_version": offline.schema_version });
        obj.as_object_mut().unwrap().insert("detail".into(), detail);
        if let Some(s) = summary {
            obj.as_object_mut().unwrap().insert("wal".into(), s);
        }
        println!("{obj}");
    } else {
        match status {
            "clean" => {
                let s = scan.as_ref().unwrap();
                println!(
                    "clean: {} segments, {} records (LSN {}..={}), snapshot at LSN {}, schema {}",
                    s.segments.len(),
                    s.total_records(),
                    s.oldest_lsn().unwrap_or(0),
                    s.last_lsn,
                    offline.meta.snapshot_lsn,
                    offline.schema_version
                );
            }
            "half-created" => println!(
                "half-created: a crash cut this data dir's creation short, before its commit \
                 point (the snapshot holds no identity yet, and nothing was ever logged). Not damage: the node finishes creating it on its next start, with a \
                 new identity (the same id if --node-id is given)."
            ),
            "torn" => println!(
                "torn tail: {} at offset {} (LSN {}): {}. The node will copy the segment to .broken \
                 and cut {} bytes on start. After a crash this is a write that never completed \
                 (nothing acknowledged under fsync=always is lost); on a damaged disk it may be \
                 acknowledged data: keep the .broken copy.",
                detail["file"].as_str().unwrap_or_default(),
                detail["offset"],
                detail["lsn"],
                detail["reason"].as_str().unwrap_or_default(),
                detail["bytes_to_cut"]
            ),
            _ => println!(
                "CORRUPT: {} at offset {} (LSN {}): {}. The node refuses to start on this data \
                 dir. {WAL_NEXT_STEP}.",
                detail["file"].as_str().unwrap_or_default(),
                detail["offset"],
                detail["lsn"],
                detail["reason"].as_str().unwrap_or_default()
            ),
        }
    }
    Ok(ExitCode::from(code))
}

/// `verify`'s verdict on a part that is missing or damaged (the node refuses the dir):
/// exit 4, `CORRUPT` and the whole message (which part, why, what to do).
fn refused_part(e: &Error, json: bool) -> ExitCode {
    let detail = match e {
        Error::MissingPart { part, .. } => json!({ "missing": part, "reason": e.to_string() }),
        Error::Damaged { file, .. } => json!({ "file": file, "reason": e.to_string() }),
        _ => json!({ "reason": e.to_string() }),
    };
    if json {
        println!("{}", json!({ "status": "corrupt", "detail": detail }));
    } else {
        println!("CORRUPT: {e}");
    }
    ExitCode::from(4)
}

fn replay(dir: &Path, json: bool, upto: Option<Lsn>) -> Result<ExitCode> {
    let offline = open_offline(dir).map_err(|e| cannot_read(dir, e))?;
    let bar = progress(offline.wal_bytes(), "replaying");
    let result = offline.replay(upto, |n| bar.set_position(n));
    bar.finish_and_clear();
    let (roster, last, _) = result.map_err(|e| cannot_read(dir, e))?;
    members::print(&roster.members(), json, true)?;
    if !json {
        logging::say(format_args!(
            "({} members, as of LSN {last})",
            roster.members().len()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn compact(dir: &Path, json: bool) -> Result<ExitCode> {
    let (store, recovered) =
        Store::open_existing(dir, StoreConfig::default()).map_err(|e| cannot("compact", dir, e))?;
    if let Some((torn, copy)) = &recovered.repaired {
        logging::say(format_args!(
            "gossip-log: cut a torn tail of {} at offset {} (copy kept at {})",
            torn.path.display(),
            torn.valid_len,
            copy.display()
        ));
    }
    let report = store.compact(|| recovered.roster.clone())?;
    store.close()?;
    if json {
        println!(
            "{}",
            json!({ "snapshot_lsn": report.snapshot_lsn, "prev_snapshot_lsn": report.prev_snapshot_lsn,
                    "members": report.members, "segments_deleted": report.segments_deleted,
                    "bytes_deleted": report.bytes_deleted })
        );
    } else {
        println!(
            "snapshot at LSN {} ({} members); deleted {} segments ({} bytes); WAL kept back to LSN {}",
            report.snapshot_lsn,
            report.members,
            report.segments_deleted,
            report.bytes_deleted,
            report.prev_snapshot_lsn + 1
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn stats(dir: &Path, json: bool) -> Result<ExitCode> {
    let offline = open_offline(dir).map_err(|e| cannot_read(dir, e))?;
    let bar = progress(offline.wal_bytes(), "reading WAL");
    let scan = offline.scan(u64::MAX, |_, _, _| {}, |n| bar.set_position(n));
    bar.finish_and_clear();
    let scan = match scan {
        Ok(scan) => scan,
        Err(e @ Error::Corrupt { .. }) => return damaged_stats(&offline, json, e),
        Err(e) => return Err(cannot_read(dir, e)),
    };
    let members = offline.snapshot.load_roster()?.num_records();
    let meta = &offline.meta;
    let snapshot_bytes = dir_size(&dir.join("snapshot"));
    if json {
        println!(
            "{}",
            json!({
                "schema_version": offline.schema_version,
                "node_id": meta.node_id.as_ref().map(|n| n.as_str()),
                "generation": meta.generation,
                "segments": scan.segments.len(),
                "records": scan.total_records(),
                "wal_bytes": scan.total_bytes(),
                "first_lsn": scan.oldest_lsn(),
                "last_lsn": scan.last_lsn.max(meta.snapshot_lsn),
                "snapshot_lsn": meta.snapshot_lsn,
                "prev_snapshot_lsn": meta.prev_snapshot_lsn,
                "wal_synced_lsn": meta.wal_synced_lsn,
                "snapshot_members": members,
                "snapshot_bytes": snapshot_bytes,
                "torn_tail": scan.torn.is_some(),
            })
        );
    } else {
        let id = meta.node_id.as_ref().map(|n| n.as_str()).unwrap_or("-");
        println!("schema version   {}", offline.schema_version);
        println!(
            "node             {id} (generation {})",
            meta.generation.unwrap_or(0)
        );
        println!("segments         {}", scan.segments.len());
        println!("records          {}", scan.total_records());
        println!("wal bytes        {}", scan.total_bytes());
        println!(
            "lsn range        {}..={}",
            scan.oldest_lsn().unwrap_or(0),
            scan.last_lsn.max(meta.snapshot_lsn)
        );
        println!(
            "snapshot lsn     {} (previous {})",
            meta.snapshot_lsn, meta.prev_snapshot_lsn
        );
        println!("snapshot         {members} members, {snapshot_bytes} bytes");
        if let Some(t) = &scan.torn {
            println!(
                "torn tail        {} at offset {}",
                t.path.display(),
                t.valid_len
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `stats` of a WAL damaged past its tail: what the records before the damage hold, then
/// the error (exit non-zero), so the good prefix is not hidden by the damage.
fn damaged_stats(offline: &Offline, json: bool, error: Error) -> Result<ExitCode> {
    let (mut records, mut first, mut last) = (0u64, None, 0);
    let mut segments = std::collections::BTreeSet::new();
    // The same scan again, now counting: it stops at the same damage.
    let _ = offline.scan(
        0,
        |path, _, rec| {
            records += 1;
            first.get_or_insert(rec.lsn);
            last = rec.lsn;
            segments.insert(path.to_path_buf());
        },
        |_| {},
    );
    let Error::Corrupt {
        file,
        offset,
        lsn,
        reason,
        ..
    } = &error
    else {
        return Err(error.into());
    };
    let meta = &offline.meta;
    let id = meta.node_id.as_ref().map(|n| n.as_str());
    if json {
        println!(
            "{}",
            json!({
                "schema_version": offline.schema_version,
                "node_id": id,
                "generation": meta.generation,
                "segments": segments.len(),
                "records": records,
                "first_lsn": first,
                "last_lsn": last,
                "snapshot_lsn": meta.snapshot_lsn,
                "prev_snapshot_lsn": meta.prev_snapshot_lsn,
                "corrupt": { "file": file, "offset": offset, "lsn": lsn, "reason": reason },
            })
        );
    } else {
        println!("schema version   {}", offline.schema_version);
        println!(
            "node             {} (generation {})",
            id.unwrap_or("-"),
            meta.generation.unwrap_or(0)
        );
        println!("segments         {} (up to the damage)", segments.len());
        println!("records          {records} (up to the damage)");
        println!("lsn range        {}..={last}", first.unwrap_or(0));
        println!(
            "snapshot lsn     {} (previous {})",
            meta.snapshot_lsn, meta.prev_snapshot_lsn
        );
        println!(
            "CORRUPT          {} at offset {offset} (LSN {lsn}): {reason}",
            file.display()
        );
    }
    std::io::stdout().flush()?;
    Err(cannot_read(offline.dir(), error))
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_size(&e.path()),
                    _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                })
                .sum()
        })
        .unwrap_or(0)
}
