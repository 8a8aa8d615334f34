//! Helpers for tests that run the real binaries.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub mod dns;
pub mod netns;

pub const NODE: &str = env!("CARGO_BIN_EXE_gossip-node");
pub const LOG: &str = env!("CARGO_BIN_EXE_gossip-log");

/// A `gossip-node` process; killed on drop if still running.
pub struct NodeProc {
    pub child: Child,
    pub stderr: mpsc::Receiver<String>,
    pub lines: Vec<String>,
    /// The address it advertises (from its "node started" line).
    pub addr: String,
    /// `HOST:PORT` of its HTTP endpoint, when started with `--http-listen`.
    pub http: String,
}

impl NodeProc {
    /// Starts a node and waits until it logs that it started (or exits).
    /// Without `--advertise` in `extra`, a fixed one is used so that restarts on a new free
    /// port do not re-announce the address (storage tests count records).
    pub fn start(dir: &Path, extra: &[&str]) -> Result<NodeProc, String> {
        if extra.contains(&"--advertise") {
            Self::start_net(dir, extra)
        } else {
            let mut args = extra.to_vec();
            args.extend(["--advertise", "ws://127.0.0.1:7000"]);
            Self::start_net(dir, &args)
        }
    }

    /// Starts a node on a free loopback port, advertising its real address.
    pub fn start_net(dir: &Path, extra: &[&str]) -> Result<NodeProc, String> {
        let mut cmd = Command::new(NODE);
        cmd.arg("--data-dir").arg(dir);
        if !extra.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(extra);
        Self::spawn(cmd)
    }

    /// Runs a prepared `gossip-node` command and waits for its "node started" line.
    pub fn spawn(mut cmd: Command) -> Result<NodeProc, String> {
        if !cmd.get_envs().any(|(k, _)| k == "RUST_LOG") {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd
            .env("NO_COLOR", "1")
            // Tests shrink segments, compaction thresholds and tombstone lifetimes.
            .env("GOSSIP_ROSTER_TEST_LIMITS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gossip-node");
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = NodeProc {
            child,
            stderr: rx,
            lines: Vec::new(),
            addr: String::new(),
            http: String::new(),
        };
        match node.wait_for("node started") {
            Ok(line) => {
                node.addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("advertise="))
                    .unwrap_or_default()
                    .to_owned();
                node.http = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("http="))
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_owned();
                Ok(node)
            }
            Err(_) => {
                let _ = node.child.kill();
                let _ = node.child.wait();
                node.drain();
                Err(node.lines.join("\n"))
            }
        }
    }

    /// Waits (bounded, so a bug cannot hang the suite) for a stderr line containing `needle`:
    /// 60 s in all, however many other lines the node logs meanwhile.
    pub fn wait_for(&mut self, needle: &str) -> Result<String, ()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.lines.push(line.clone());
                    if line.contains(needle) {
                        return Ok(line);
                    }
                }
                Err(_) => return Err(()),
            }
        }
    }

    /// Every stderr line logged so far (waits 200 ms for more).
    pub fn log_so_far(&mut self) -> &[String] {
        self.drain();
        &self.lines
    }

    fn drain(&mut self) {
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(200)) {
            self.lines.push(line);
        }
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Stops reading the node's stderr: the pipe closes at the next line the node writes,
    /// as when the reader of `gossip-node ... 2>&1 | head` is gone.
    pub fn close_log(&mut self) {
        self.stderr = mpsc::channel().1;
    }

    /// SIGTERM, then the exit code.
    pub fn stop(mut self) -> i32 {
        self.signal("TERM");
        let status = self.child.wait().unwrap();
        status.code().unwrap_or(-1)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `gossip-log` with the given args.
pub fn gossip_log(args: &[&str], dir: &Path) -> Output {
    Command::new(LOG)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .expect("run gossip-log")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `gossip-log replay --json`, parsed.
pub fn replay_json(dir: &Path) -> serde_json::Value {
    let out = gossip_log(&["replay", "--json"], dir);
    assert!(out.status.success(), "replay failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("replay --json is JSON")
}

/// Runs `gossip-node <args>` (an admin subcommand) and returns its output.
pub fn admin(args: &[&str]) -> Output {
    Command::new(NODE)
        .args(args)
        .output()
        .expect("run gossip-node")
}

/// `gossip-node members --json` of the node at `addr`, or `None` if it did not answer.
pub fn members(addr: &str, extra: &[&str]) -> Option<serde_json::Value> {
    let mut args = vec!["members", "--connect", addr, "--json"];
    args.extend(extra);
    let out = admin(&args);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// Polls `check` every 20 ms until it holds; gives up after 60 s (a bound so that a bug fails
/// the test instead of hanging it, not a timing assertion).
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !check() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never happened: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `(id, state)` of every member of a `members --json` answer, in order.
pub fn id_states(roster: &serde_json::Value) -> Vec<(String, String)> {
    roster
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_owned(),
                m["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Asserts every node's view is the same.
pub fn assert_same_views(views: &[Vec<(String, String)>]) {
    assert!(
        views.windows(2).all(|w| w[0] == w[1]),
        "rosters differ: {views:?}"
    );
}

/// Copies a data dir (without its LOCK) to `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_tree(&src, &dst);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// GET `http://{at}{path}`: the status code and the body (any status; `None` if the
/// request itself failed, e.g. nothing listens).
pub fn http_get(at: &str, path: &str) -> Option<(u16, String)> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    match agent.get(&format!("http://{at}{path}")).call() {
        Ok(r) => Some((r.status(), r.into_string().ok()?)),
        Err(ureq::Error::Status(code, r)) => Some((code, r.into_string().ok()?)),
        Err(_) => None,
    }
}

/// A loopback port that was free a moment ago (for a node restarted on the same port, or
/// one that listens on every address and advertises its loopback one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The value of `name` in a Prometheus text body, for the one sample whose labels include
/// all of `labels` (a histogram gives its count); `None` if there is not exactly one.
pub fn metric(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    use prometheus_parse::{Scrape, Value};
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).ok()?;
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .filter_map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
            Value::Histogram(buckets) => buckets.last().map(|b| b.count),
            Value::Summary(_) => None,
        })
        .collect();
    (found.len() == 1).then(|| found[0])
}
