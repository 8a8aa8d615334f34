//! Real `gossip-node` processes for the benchmarks, as users run them: one process per node
//! on 127.0.0.1, each with its own data dir, `/metrics` endpoint and log. The figures come
//! from what the nodes record themselves, read after the run so that measuring does not
//! load the two cores: WAL record times (milliseconds, `unix_ms` of each record), log line
//! times (microseconds, `RUST_LOG=info,gossip_roster::peers=debug`) and `/metrics` counters.
//!
//! Shared by `benches/` and `tools/compare` (which includes this file by path): it needs
//! only std and the gossip-roster library.
#![allow(dead_code)]

use gossip_roster::store::offline::Offline;
use gossip_roster::ClusterEvent;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The `gossip-node` binary: `GOSSIP_NODE_BIN`, else the one cargo built for this bench.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("GOSSIP_NODE_BIN") {
        return p.into();
    }
    match option_env!("CARGO_BIN_EXE_gossip-node") {
        Some(p) => p.into(),
        None => {
            panic!("set GOSSIP_NODE_BIN to a gossip-node binary (cargo build --release --bins)")
        }
    }
}

/// Wall-clock microseconds since the epoch: the one clock every process on the machine shares.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// `2026-12-02T04:40:00.123456Z` (tracing's default timestamp) as microseconds since the
/// epoch; `None` for anything else.
pub fn parse_rfc3339_us(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut frac_us = 0i64;
    if b[19] == b'.' {
        let digits: String = s[20..].chars().take_while(|c| c.is_ascii_digit()).collect();
        let six: String = digits
            .chars()
            .chain(std::iter::repeat('0'))
            .take(6)
            .collect();
        frac_us = six.parse().ok()?;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some((secs * 1_000_000 + frac_us) as u64)
}

/// A `gossip-node` process; killed (and its data dir removed) on drop.
pub struct Proc {
    pub id: String,
    pub child: Child,
    pub dir: tempfile::TempDir,
    /// The address it advertises, from its "node started" line.
    pub addr: String,
    /// `HOST:PORT` of its HTTP endpoint.
    pub http: String,
    /// When the bench spawned it.
    pub spawned_us: u64,
    /// Its "node started" line's own timestamp: listener bound, data dir open, own record
    /// durable.
    pub started_us: u64,
    /// Times of its "connected" lines (a handshake done, either direction).
    connected: Arc<Mutex<Vec<u64>>>,
    started: mpsc::Receiver<String>,
}

impl Proc {
    /// Spawns a node with defaults (`fsync=batch`) on a free port; does not wait for it.
    pub fn spawn(id: &str, seeds: &[String]) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(binary());
        cmd.arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(["--node-id", id]);
        for s in seeds {
            cmd.args(["--seed", s]);
        }
        let spawned_us = now_us();
        let mut child = cmd
            .env("RUST_LOG", "info,gossip_roster::peers=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gossip-node (GOSSIP_NODE_BIN)");
        let err = child.stderr.take().unwrap();
        let connected = Arc::new(Mutex::new(Vec::new()));
        let (tx, started) = mpsc::channel();
        let seen = connected.clone();
        // Reads the log for as long as the process runs (a full pipe would stall it).
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if line.contains(": connected ") {
                    if let Some(t) = line.split_whitespace().next().and_then(parse_rfc3339_us) {
                        seen.lock().unwrap().push(t);
                    }
                } else if line.contains("node started") || line.contains("Error") {
                    let _ = tx.send(line);
                }
            }
        });
        Proc {
            id: id.to_owned(),
            child,
            dir,
            addr: String::new(),
            http: String::new(),
            spawned_us,
            started_us: 0,
            connected,
            started,
        }
    }

    /// Waits (60 s at most) for the "node started" line and takes the addresses from it.
    pub fn wait_started(&mut self) {
        let line = self
            .started
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{} did not start", self.id));
        assert!(line.contains("node started"), "{} failed: {line}", self.id);
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_default()
                .trim_matches('"')
                .to_owned()
        };
        self.addr = field("advertise=");
        self.http = field("http=");
        self.started_us = line
            .split_whitespace()
            .next()
            .and_then(parse_rfc3339_us)
            .expect("a timestamped log line");
    }

    /// Its `/metrics` page, or `None` if it did not answer within a second.
    pub fn metrics(&self) -> Option<String> {
        let addr = self.http.parse().ok()?;
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.http
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out.split_once("\r\n\r\n")?.1.to_owned())
    }

    /// Sends a signal (`STOP`, `CONT`, ...) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} {}", self.id);
    }

    /// SIGKILL, then waits for the exit (the WAL is in the page cache: nothing written is
    /// lost, and the data dir can be read).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Times of its handshakes done, sorted.
    pub fn connected_us(&self) -> Vec<u64> {
        let mut v = self.connected.lock().unwrap().clone();
        v.sort();
        v
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The sum of every series of `name` (all label sets) in a Prometheus text page.
pub fn metric_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One series of `name` with exactly `labels` (`state="alive"`).
pub fn metric_with(page: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// The records of a stopped node's WAL: (unix ms, event).
pub fn wal(dir: &Path) -> Vec<(u64, ClusterEvent)> {
    let offline = Offline::open(dir).expect("open a stopped node's data dir");
    let mut out = Vec::new();
    offline
        .scan(0, |_, _, rec| out.push((rec.unix_ms, rec.event)), |_| {})
        .expect("scan the WAL");
    out
}

/// N processes: the seed first (the others need its address), then every other at once,
/// each seeded with it, as the comparison starts every system.
pub struct ProcCluster {
    pub procs: Vec<Proc>,
    /// When the seed was spawned.
    pub first_spawn_us: u64,
}

impl ProcCluster {
    pub fn start(n: usize, prefix: &str) -> ProcCluster {
        let first_spawn_us = now_us();
        let mut seed = Proc::spawn(&format!("{prefix}000"), &[]);
        seed.wait_started();
        let seeds = vec![seed.addr.clone()];
        let mut procs = vec![seed];
        for i in 1..n {
            procs.push(Proc::spawn(&format!("{prefix}{i:03}"), &seeds));
        }
        for p in procs.iter_mut().skip(1) {
            p.wait_started();
        }
        ProcCluster {
            procs,
            first_spawn_us,
        }
    }

    /// Polls every node's `/metrics` in turn (one request every 5 ms at most, so as not to
    /// load the cores being measured) until each counts `alive` alive members; 60 s at most.
    pub fn wait_alive(&self, alive: usize, skip: Option<usize>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for (i, p) in self.procs.iter().enumerate() {
            if Some(i) == skip {
                continue;
            }
            loop {
                let n = p
                    .metrics()
                    .and_then(|m| metric_with(&m, "gossip_members", "state=\"alive\""));
                if n == Some(alive as f64) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} never saw {alive} alive",
                    p.id
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// (frames, bytes) sent to members by every node so far, from `/metrics`.
    pub fn sent(&self) -> (f64, f64) {
        let (mut f, mut b) = (0.0, 0.0);
        for p in &self.procs {
            let m = p.metrics().expect("/metrics answers");
            f += metric_sum(&m, "gossip_frames_sent_total");
            b += metric_sum(&m, "gossip_sent_bytes_total");
        }
        (f, b)
    }

    /// Registers `actor` on node `i` through the admin CLI (durable before it returns).
    pub fn register(&self, i: usize, actor: &str) {
        let out = Command::new(binary())
            .args(["actors", "add", "--connect", &self.procs[i].addr, actor])
            .output()
            .expect("run gossip-node actors add");
        assert!(
            out.status.success(),
            "actors add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Kills every node and reads their WALs (in node order).
    pub fn stop_and_read(&mut self) -> Vec<Vec<(u64, ClusterEvent)>> {
        for p in self.procs.iter_mut() {
            p.kill();
        }
        self.procs.iter().map(|p| wal(p.dir.path())).collect()
    }
}

/// Where a cold start's time goes, per node, in microseconds from its spawn; and the
/// cluster-wide convergence.
pub struct ColdStart {
    /// Process start, listener bound, data dir open, own record durable ("node started").
    pub started: Vec<u64>,
    /// First handshake done (either direction).
    pub first_handshake: Vec<u64>,
    /// First record about another member in its WAL (first sync).
    pub first_sync: Vec<u64>,
    /// Its WAL names every member.
    pub knows_all: Vec<u64>,
    /// All know all, from the last node's "node started".
    pub from_last_start: Duration,
    /// All know all, from the seed's spawn.
    pub from_first_start: Duration,
}

/// The cold-start stages of a cluster started by [`ProcCluster::start`], from the logs and
/// the WALs `wals` read after it converged.
pub fn cold_start(c: &ProcCluster, wals: &[Vec<(u64, ClusterEvent)>]) -> ColdStart {
    let n = c.procs.len();
    let mut s = ColdStart {
        started: Vec::new(),
        first_handshake: Vec::new(),
        first_sync: Vec::new(),
        knows_all: Vec::new(),
        from_last_start: Duration::ZERO,
        from_first_start: Duration::ZERO,
    };
    let mut all_at = 0u64;
    for (p, wal) in c.procs.iter().zip(wals) {
        let rel = |t_us: u64| t_us.saturating_sub(p.spawned_us);
        s.started.push(rel(p.started_us));
        s.first_handshake.push(
            p.connected_us()
                .first()
                .map(|&t| rel(t))
                .unwrap_or(u64::MAX),
        );
        let mut known = HashSet::new();
        let mut first_other = None;
        let mut all = None;
        for (ms, e) in wal {
            let who = e.node().as_str();
            if who != p.id && first_other.is_none() {
                first_other = Some(ms * 1000);
            }
            known.insert(who.to_owned());
            if known.len() == n {
                all = Some(ms * 1000);
                break;
            }
        }
        let all = all.unwrap_or_else(|| panic!("{} never knew all {n}", p.id));
        all_at = all_at.max(all);
        s.first_sync.push(rel(first_other.unwrap_or(all)));
        s.knows_all.push(rel(all));
    }
    let last_start = c.procs.iter().map(|p| p.started_us).max().unwrap();
    // WAL times are whole milliseconds: the record's millisecond ends at +999 µs.
    let all_at = all_at + 999;
    s.from_last_start = Duration::from_micros(all_at.saturating_sub(last_start));
    s.from_first_start = Duration::from_micros(all_at - c.first_spawn_us);
    s
}

/// Milliseconds from `origin`'s record of `actor` until the last other node recorded it
/// (from the WALs, whole milliseconds).
pub fn propagation_ms(
    c: &ProcCluster,
    wals: &[Vec<(u64, ClusterEvent)>],
    origin: usize,
    actor: &str,
) -> Option<u64> {
    let origin_id = c.procs[origin].id.as_str();
    let first = |wal: &[(u64, ClusterEvent)]| {
        wal.iter().find_map(|(ms, e)| {
            let has = match e {
                ClusterEvent::ActorAdded { node, actor: a, .. } => {
                    node.as_str() == origin_id && a == actor
                }
                ClusterEvent::NewNode { node, actors, .. } => {
                    node.as_str() == origin_id && actors.contains(actor)
                }
                _ => false,
            };
            has.then_some(*ms)
        })
    };
    let t0 = first(&wals[origin])?;
    let mut last = t0;
    for (i, w) in wals.iter().enumerate() {
        if i != origin {
            last = last.max(first(w)?);
        }
    }
    Some(last - t0)
}

/// How the detection victim goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Failure {
    /// SIGKILL: the kernel closes its sockets, which hints its peers.
    Kill,
    /// SIGSTOP: silent, its connections stay open; no hint.
    Stop,
}

/// One detection run on a fresh cluster of `n` processes: the middle node fails as `how`
/// says; returns the time until every other node recorded it dead (from their WALs) and the
/// false positives (any other member recorded dead meanwhile).
pub fn detection(n: usize, how: Failure) -> (Duration, usize) {
    let mut c = ProcCluster::start(n, "d");
    c.wait_alive(n, None);
    // Let the cluster settle (stable, probes running) before the failure.
    std::thread::sleep(Duration::from_secs(2));
    let v = n / 2;
    let victim = c.procs[v].id.clone();
    let t0_us = now_us();
    match how {
        Failure::Kill => {
            let _ = c.procs[v].child.kill();
        }
        Failure::Stop => c.procs[v].signal("STOP"),
    }
    // Until every other node holds the victim dead (its record in the WAL may lag the gauge
    // by a commit; the WAL gives the time).
    let deadline = Instant::now() + Duration::from_secs(60);
    for (i, p) in c.procs.iter().enumerate() {
        if i == v {
            continue;
        }
        loop {
            let dead = p
                .metrics()
                .and_then(|m| metric_with(&m, "gossip_members", "state=\"dead\""));
            if dead.is_some_and(|d| d >= 1.0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never declared the victim dead",
                p.id
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The gauge moves when the machine applies the death; its WAL record follows at the next
    // commit.
    std::thread::sleep(Duration::from_millis(300));
    let wals = c.stop_and_read();
    let (mut last_ms, mut false_positives) = (0u64, 0);
    for (i, w) in wals.iter().enumerate() {
        if i == v {
            continue;
        }
        let dead_at = w.iter().find_map(|(ms, e)| match e {
            ClusterEvent::NodeDead { node, .. } if node.as_str() == victim => Some(*ms),
            _ => None,
        });
        let Some(dead_at) = dead_at else {
            let tail: Vec<String> = w
                .iter()
                .rev()
                .take(8)
                .map(|(ms, e)| format!("{ms} {e}"))
                .collect();
            panic!(
                "{}: the victim {victim}'s death is not in the WAL; its last records: {tail:#?}",
                c.procs[i].id
            );
        };
        last_ms = last_ms.max(dead_at);
        false_positives += w
            .iter()
            .filter(|(ms, e)| {
                *ms * 1000 >= t0_us
                    && matches!(e, ClusterEvent::NodeDead { node, .. } if node.as_str() != victim)
            })
            .count();
    }
    (
        Duration::from_micros((last_ms * 1000 + 999).saturating_sub(t0_us)),
        false_positives,
    )
}
