//! Storage benchmarks: WAL append per fsync policy beside the raw disk, replay, apply/merge,
//! and open + recover of a 1M-record data dir.
//!
//! `cargo bench --bench storage` runs the criterion groups, then prints a summary table
//! measured in the same run (the raw `write` + `fdatasync` loop is the physical limit the
//! `always` policy is compared with). `GOSSIP_BENCH_QUICK=1` shrinks the 1M-record cases.

/// mimalloc: recovery and merge are allocation-heavy, and glibc's arenas contend across the
/// WAL reader and apply threads (measured: ~30% of replay time in malloc/free).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, BatchSize, Criterion, Throughput};
use gossip_roster::roster::RosterBuilder;
use gossip_roster::store::recovery::scan_wal;
use gossip_roster::store::{FsyncPolicy, Store, StoreConfig, WalConfig};
use gossip_roster::{ClusterEvent, NodeId, Roster};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Events to write per append call (one group-commit batch for a single caller).
const BATCH: usize = 64;

fn big_n() -> u64 {
    if std::env::var_os("GOSSIP_BENCH_QUICK").is_some() {
        100_000
    } else {
        1_000_000
    }
}

/// The default mix: 1,000 nodes announcing, adding and removing actors from a pool of 16
/// service names each (actor churn), and liveness changes.
fn events(count: u64) -> Vec<ClusterEvent> {
    events_with_pool(count, 16)
}

/// `pool` actor names: with 1,261 (13 x 97) every node ends up with over a thousand entries,
/// an adversarial case for the merge (reported beside the default).
fn events_with_pool(count: u64, pool: u64) -> Vec<ClusterEvent> {
    (1..=count)
        .map(|i| {
            let n = i % 1000;
            let node = NodeId::new(format!("node-{n:04}"));
            let version = i / 1000 + 1;
            let actor = if pool == 16 {
                format!("service-{}", (i / 1000 + n) % 16)
            } else {
                format!("service-{}/{}", i % 13, i % 97)
            };
            match i % 8 {
                0 => ClusterEvent::NodeSuspected {
                    node,
                    generation: 1,
                    incarnation: version,
                    by: None,
                },
                1 => ClusterEvent::NodeAlive {
                    node,
                    generation: 1,
                    incarnation: version + 1,
                },
                2 | 3 => ClusterEvent::ActorRemoved {
                    node,
                    generation: 1,
                    version,
                    actor,
                },
                _ if version == 1 => ClusterEvent::NewNode {
                    node,
                    generation: 1,
                    version,
                    addr: format!("ws://10.0.{}.{}:7000", n / 256, n % 256),
                    actors: [actor].into(),
                },
                _ => ClusterEvent::ActorAdded {
                    node,
                    generation: 1,
                    version,
                    actor,
                },
            }
        })
        .collect()
}

fn store_config(policy: FsyncPolicy) -> StoreConfig {
    StoreConfig {
        wal: WalConfig {
            policy,
            ..WalConfig::default()
        },
        compact_after_records: u64::MAX,
        compact_after_bytes: u64::MAX,
    }
}

fn encoded_len(evs: &[ClusterEvent]) -> usize {
    let mut buf = Vec::new();
    for (i, e) in evs.iter().enumerate() {
        gossip_roster::store::segment::encode_record(
            &mut buf,
            &gossip_roster::store::segment::WalRecord {
                lsn: i as u64 + 1,
                unix_ms: 1_700_000_000_000,
                event: e.clone(),
            },
        );
    }
    buf.len()
}

/// Appends `evs` in BATCH-sized calls; `pipelined` submits all before waiting (many callers).
fn append_all(store: &Store, evs: &[ClusterEvent], pipelined: bool) {
    if pipelined {
        let pending: Vec<_> = evs
            .chunks(BATCH)
            .map(|c| store.append(c.to_vec()))
            .collect();
        for p in pending {
            p.wait().unwrap();
        }
    } else {
        for c in evs.chunks(BATCH) {
            store.append(c.to_vec()).wait().unwrap();
        }
    }
}

/// The physical limit: write `batches` buffers of `bytes` and fdatasync after each.
fn raw_write_fdatasync(dir: &Path, batches: usize, bytes: usize) -> Duration {
    let buf = vec![0x5au8; bytes];
    let mut f = std::fs::File::create(dir.join("raw")).unwrap();
    let start = Instant::now();
    for _ in 0..batches {
        f.write_all(&buf).unwrap();
        f.sync_data().unwrap();
    }
    start.elapsed()
}

fn bench_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_append");
    g.sample_size(10);
    for (policy, n, pipelined) in [
        (FsyncPolicy::Never, 65_536u64, true),
        (FsyncPolicy::Batch, 65_536, true),
        (FsyncPolicy::Always, 64 * 64, false),
    ] {
        let evs = events(n);
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("{policy}"), |b| {
            b.iter_batched(
                || {
                    let dir = tempfile::tempdir().unwrap();
                    let (store, _) = Store::open(dir.path(), store_config(policy)).unwrap();
                    (dir, store)
                },
                |(dir, store)| {
                    append_all(&store, &evs, pipelined);
                    (dir, store)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn prepare_dir(n: u64, pool: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(dir.path(), store_config(FsyncPolicy::Never)).unwrap();
    let evs = events_with_pool(n, pool);
    for chunk in evs.chunks(8192) {
        drop(store.append(chunk.to_vec()));
    }
    store.close().unwrap();
    dir
}

/// Replays a data dir's whole WAL into a roster, as recovery does.
fn replay(dir: &Path) -> Roster {
    let mut roster = RosterBuilder::new(Roster::new());
    scan_wal(
        dir,
        0,
        0,
        |_, _, r| {
            roster.apply(&r.event);
        },
        |_| {},
    )
    .unwrap();
    roster.finish()
}

fn bench_replay_and_open(c: &mut Criterion) {
    let n = big_n();
    let dir = prepare_dir(n, 16);
    let mut g = c.benchmark_group("recovery");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n));
    g.bench_function(format!("replay_{n}"), |b| b.iter(|| replay(dir.path())));
    g.bench_function(format!("open_recover_{n}"), |b| {
        b.iter(|| {
            let (store, rec) =
                Store::open_existing(dir.path(), store_config(FsyncPolicy::Never)).unwrap();
            assert_eq!(rec.last_lsn, n);
            drop(store);
        })
    });
    g.finish();
}

fn bench_apply(c: &mut Criterion) {
    let evs = events(200_000);
    let mut g = c.benchmark_group("roster");
    g.throughput(Throughput::Elements(evs.len() as u64));
    g.sample_size(10);
    g.bench_function("apply_200k", |b| {
        b.iter(|| {
            let mut r = Roster::new();
            for e in &evs {
                r.apply(e);
            }
            r
        })
    });
    g.finish();
}

criterion_group!(benches, bench_append, bench_apply, bench_replay_and_open);

/// Runs of every figure in the summary; the median is printed.
const RUNS: usize = 5;

/// Median of `runs` timings of `f` (files already in the page cache unless `f` drops it).
fn median_of(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut t: Vec<Duration> = (0..runs).map(|_| f()).collect();
    t.sort();
    t[t.len() / 2]
}

/// Writes back dirty pages and drops the page cache, so the next read comes from the disk.
/// Needs root; `false` when it could not.
fn drop_page_cache() -> bool {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

/// One table, measured in this run, with the targets next to the figures.
fn summary() {
    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    let mut rows: Vec<(String, String, String, String)> = Vec::new();

    // Buffered append (never; pipelined callers).
    let evs = events(262_144);
    let bytes = encoded_len(&evs) as f64;
    for policy in [FsyncPolicy::Never, FsyncPolicy::Batch] {
        let d = median_of(RUNS, || {
            let dir = tempfile::tempdir().unwrap();
            let (store, _) = Store::open(dir.path(), store_config(policy)).unwrap();
            let t = Instant::now();
            append_all(&store, &evs, true);
            t.elapsed()
        });
        let r = rate(evs.len() as u64, d);
        rows.push((
            format!("WAL append, fsync={policy} (batches of {BATCH}, pipelined)"),
            format!(
                "{:.2} M events/s, {:.0} MB/s",
                r / 1e6,
                bytes / d.as_secs_f64() / 1e6
            ),
            if policy == FsyncPolicy::Never {
                "> 1 M events/s".into()
            } else {
                "-".into()
            },
            if policy == FsyncPolicy::Never {
                met(r > 1e6)
            } else {
                String::new()
            },
        ));
    }

    // always vs the raw disk, same batch size, same byte count, one caller.
    let batches = 256;
    let evs = events((BATCH * batches) as u64);
    let batch_bytes = encoded_len(&evs) / batches;
    let dir = tempfile::tempdir().unwrap();
    let raw = median_of(RUNS, || {
        raw_write_fdatasync(dir.path(), batches, batch_bytes)
    });
    let ours = median_of(RUNS, || {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), store_config(FsyncPolicy::Always)).unwrap();
        let t = Instant::now();
        append_all(&store, &evs, false);
        t.elapsed()
    });
    let ratio = ours.as_secs_f64() / raw.as_secs_f64();
    rows.push((
        format!("raw write+fdatasync, {batch_bytes} B x {batches}"),
        format!(
            "{:.0} batches/s ({:.0} events/s)",
            rate(batches as u64, raw),
            rate(evs.len() as u64, raw)
        ),
        "physical limit".into(),
        String::new(),
    ));
    rows.push((
        format!("WAL append, fsync=always, {BATCH} events/batch, one caller"),
        format!(
            "{:.0} batches/s ({:.0} events/s), {ratio:.2}x raw time",
            rate(batches as u64, ours),
            rate(evs.len() as u64, ours)
        ),
        "within 2x of raw".into(),
        met(ratio <= 2.0),
    ));

    // Group commit under concurrency: 8 callers, always.
    let evs = events(16_384);
    let d = median_of(RUNS, || {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), store_config(FsyncPolicy::Always)).unwrap();
        let t = Instant::now();
        std::thread::scope(|s| {
            for chunk in evs.chunks(evs.len() / 8) {
                let store = &store;
                s.spawn(move || {
                    for c in chunk.chunks(8) {
                        store.append(c.to_vec()).wait().unwrap();
                    }
                });
            }
        });
        t.elapsed()
    });
    rows.push((
        "WAL append, fsync=always, 8 concurrent callers x 8 events".into(),
        format!("{:.0} events/s (group commit)", rate(evs.len() as u64, d)),
        "-".into(),
        String::new(),
    ));

    // Apply / merge, both mixes.
    for (pool, label) in [
        (16, "16 actor names/node"),
        (1261, "adversarial: 1,261 actor names/node"),
    ] {
        let evs = events_with_pool(1_000_000, pool);
        let d = median_of(RUNS, || {
            let t = Instant::now();
            let mut r = Roster::new();
            for e in &evs {
                r.apply(e);
            }
            t.elapsed()
        });
        rows.push((
            format!("roster apply/merge (indexed), 1M events, {label}"),
            format!("{:.2} M events/s", rate(evs.len() as u64, d) / 1e6),
            "-".into(),
            String::new(),
        ));
    }

    // Replay and open+recover of a big data dir, default mix and adversarial mix.
    let n = big_n();
    for (pool, label) in [
        (16, "16 actor names/node"),
        (1261, "adversarial: 1,261 actor names/node"),
    ] {
        let dir = prepare_dir(n, pool);
        let d = median_of(RUNS, || {
            let t = Instant::now();
            let _ = replay(dir.path());
            t.elapsed()
        });
        let r = rate(n, d);
        let target = pool == 16;
        rows.push((
            format!("replay (read + CRC + decode + apply), {n} records, {label}"),
            format!("{:.2} M events/s", r / 1e6),
            if target {
                "> 2 M events/s".into()
            } else {
                "-".into()
            },
            if target { met(r > 2e6) } else { String::new() },
        ));
        let d = median_of(RUNS, || {
            let t = Instant::now();
            let (store, _) =
                Store::open_existing(dir.path(), store_config(FsyncPolicy::Never)).unwrap();
            let e = t.elapsed();
            drop(store);
            e
        });
        rows.push((
            format!("open + recover, {n} records in the WAL, {label} (warm page cache)"),
            format!("{:.0} ms", d.as_secs_f64() * 1e3),
            if target {
                "< 500 ms (1M)".into()
            } else {
                "-".into()
            },
            if target {
                met(d < Duration::from_millis(500))
            } else {
                String::new()
            },
        ));
        // The same from the disk: what a node restarted after a reboot (or whose files were
        // evicted) pays.
        let mut cold = Vec::new();
        for _ in 0..3 {
            if !drop_page_cache() {
                break;
            }
            let t = Instant::now();
            let (store, _) =
                Store::open_existing(dir.path(), store_config(FsyncPolicy::Never)).unwrap();
            cold.push(t.elapsed());
            drop(store);
        }
        cold.sort();
        rows.push((
            format!(
                "open + recover, {n} records in the WAL, {label} (cold page cache, median of 3)"
            ),
            match cold.get(1) {
                Some(d) => format!("{:.0} ms", d.as_secs_f64() * 1e3),
                None => "not measured (dropping the page cache needs root)".into(),
            },
            "-".into(),
            String::new(),
        ));
    }

    println!("\n## storage summary (median of {RUNS} runs on a warm page cache unless a row says cold; this machine, this run)\n");
    println!("| what | measured | target | |");
    println!("|---|---|---|---|");
    for (what, fig, target, ok) in rows {
        println!("| {what} | {fig} | {target} | {ok} |");
    }
}

fn met(ok: bool) -> String {
    if ok {
        "met".into()
    } else {
        "NOT met".into()
    }
}

fn main() {
    let only_summary = std::env::args().any(|a| a == "--summary");
    if !only_summary {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    summary();
}
