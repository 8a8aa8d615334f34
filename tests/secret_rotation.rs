//! Rotating credentials of running `gossip-node` processes on 127.0.0.1 with SIGHUP: a
//! secret rolled through a 3-node cluster (A, then "B then A", then B) without any member
//! leaving `alive`; reloads that fail (empty secret file, garbage TLS file) keep the node
//! serving with what it had; a good reload swaps secret and certificate for new connections.

mod common;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Failure detection slow enough that a loaded test machine does not suspect anyone: the
/// test is about handshakes, and a suspicion would fail it.
const PATIENT: [&str; 4] = ["--probe-interval-ms", "2000", "--probe-timeout-ms", "1000"];

fn start(dir: &Path, id: &str, secret_file: &Path, extra: &[&str]) -> NodeProc {
    let mut args = vec![
        "--node-id",
        id,
        "--secret-file",
        secret_file.to_str().unwrap(),
    ];
    args.extend(PATIENT);
    args.extend(extra);
    NodeProc::start_net(dir, &args).unwrap_or_else(|log| panic!("{id} did not start:\n{log}"))
}

fn write(path: &Path, text: &str) {
    // Written beside and renamed over, as an operator's tooling would: a SIGHUP never sees a
    // half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `(id, state)` of the roster of the node at `addr`, asked with `secret_file`; `Err` with
/// the admin client's error when it was refused.
fn roster(addr: &str, secret_file: &Path) -> Result<Vec<(String, String)>, String> {
    let out = admin(&[
        "members",
        "--connect",
        addr,
        "--json",
        "--secret-file",
        secret_file.to_str().unwrap(),
    ]);
    if !out.status.success() {
        return Err(stderr(&out));
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    Ok(id_states(&v))
}

fn alive(roster: &[(String, String)], id: &str) -> bool {
    roster.iter().any(|(i, s)| i == id && s == "alive")
}

/// Status (JSON) of the node at `addr`, asked with `secret_file`.
fn status(addr: &str, secret_file: &Path) -> Result<Value, String> {
    let out = admin(&[
        "status",
        "--connect",
        addr,
        "--json",
        "--secret-file",
        secret_file.to_str().unwrap(),
    ]);
    if !out.status.success() {
        return Err(stderr(&out));
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

/// Asks every node, over and over until stopped, whether it sees n1, n2 and n3 alive;
/// records every answer that does not (or a refused admin call) as a violation.
struct Watcher {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    violations: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// `secret_file` must be accepted by every node at every step of the rotation.
    fn start(addrs: Vec<String>, secret_file: PathBuf) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let (stop2, rounds2, violations2) = (stop.clone(), rounds.clone(), violations.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                for addr in &addrs {
                    match roster(addr, &secret_file) {
                        Ok(r) if ["n1", "n2", "n3"].iter().all(|id| alive(&r, id)) => {}
                        Ok(r) => violations2
                            .lock()
                            .unwrap()
                            .push(format!("{addr} sees {r:?}")),
                        Err(e) => violations2
                            .lock()
                            .unwrap()
                            .push(format!("{addr} refused the watcher: {e}")),
                    }
                    match status(addr, &secret_file) {
                        Ok(s) if s["alive"].as_u64() >= Some(3) => {}
                        Ok(s) => violations2
                            .lock()
                            .unwrap()
                            .push(format!("{addr} status counts {} alive", s["alive"])),
                        Err(e) => violations2
                            .lock()
                            .unwrap()
                            .push(format!("{addr} refused the watcher's status: {e}")),
                    }
                }
                rounds2.fetch_add(1, Ordering::SeqCst);
            }
        });
        Watcher {
            stop,
            rounds,
            violations,
            thread: Some(thread),
        }
    }

    /// Waits for a whole round of checks that began after this call (so each step of the
    /// rotation is watched at least once), and fails on any violation so far.
    fn checked_round(&self, step: &str) {
        let seen = self.rounds.load(Ordering::SeqCst);
        eventually(&format!("a full watch round after {step}"), || {
            self.rounds.load(Ordering::SeqCst) >= seen + 2
        });
        let v = self.violations.lock().unwrap().clone();
        assert!(v.is_empty(), "after {step}: {v:#?}");
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        let v = self.violations.lock().unwrap().clone();
        assert!(v.is_empty(), "{v:#?}");
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_secret_rolls_through_a_running_cluster_without_a_partition() {
    let keys = tempfile::tempdir().unwrap();
    let key = |name: &str, text: &str| {
        let p = keys.path().join(name);
        write(&p, text);
        p
    };
    let (only_a, only_b, both) = (key("a", "A\n"), key("b", "B\n"), key("ba", "B\nA\n"));
    let files: Vec<PathBuf> = (1..=3).map(|i| key(&format!("n{i}"), "A\n")).collect();
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();

    let n1 = start(dirs[0].path(), "n1", &files[0], &[]);
    let n2 = start(dirs[1].path(), "n2", &files[1], &["--seed", &n1.addr]);
    let n3 = start(dirs[2].path(), "n3", &files[2], &["--seed", &n1.addr]);
    let nodes = [n1, n2, n3];
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    for addr in &addrs {
        eventually(&format!("{addr} sees all three alive"), || {
            roster(addr, &only_a).is_ok_and(|r| ["n1", "n2", "n3"].iter().all(|id| alive(&r, id)))
        });
    }
    // An admin file listing both secrets is accepted at every step: it watches throughout.
    let watcher = Watcher::start(addrs.clone(), both.clone());
    watcher.checked_round("the start");

    // Phase 1, node by node: accept B, prove with B where the other side knows it.
    for (i, node) in nodes.iter().enumerate() {
        write(
            &files[i],
            "# new first, old until every node has the new one\nB\nA\n",
        );
        node.signal("HUP");
        watcher.checked_round(&format!("n{} got B then A", i + 1));
        if i == 0 {
            // A node joining now with only A meets n1 (both) and n2, n3 (A): all shake hands.
            let n4 = start(dirs[3].path(), "n4", &only_a, &["--seed", &addrs[0]]);
            for addr in &addrs {
                eventually(&format!("{addr} sees n4 alive"), || {
                    roster(addr, &both).is_ok_and(|r| alive(&r, "n4"))
                });
            }
            assert_eq!(n4.stop(), 0);
            watcher.checked_round("n4 left");
        }
    }
    // In the middle every node takes the old secret and the new one, from admin clients too.
    for addr in &addrs {
        for secret in [&only_a, &only_b] {
            let r = roster(addr, secret).unwrap_or_else(|e| panic!("{addr}: {e}"));
            assert!(["n1", "n2", "n3"].iter().all(|id| alive(&r, id)), "{r:?}");
        }
    }

    // Phase 2, node by node: drop A.
    for (i, node) in nodes.iter().enumerate() {
        write(&files[i], "B\n");
        node.signal("HUP");
        watcher.checked_round(&format!("n{} kept only B", i + 1));
    }
    watcher.finish();
    for addr in &addrs {
        let r = roster(addr, &only_b).unwrap_or_else(|e| panic!("{addr}: {e}"));
        assert!(["n1", "n2", "n3"].iter().all(|id| alive(&r, id)), "{r:?}");
        let refused = roster(addr, &only_a).unwrap_err();
        assert!(refused.contains("authentication"), "{refused}");
    }
    // Each node logged what it reloaded: how many secrets, never a secret.
    let mut nodes = nodes;
    for node in &mut nodes {
        node.wait_for("1 cluster secret").unwrap();
        assert!(node.lines.iter().any(|l| l.contains("2 cluster secrets")));
    }

    // n4 comes back with only the old secret: refused, and the cluster does not count it in.
    let mut n4 = start(dirs[3].path(), "n4", &only_a, &[]);
    n4.wait_for("authentication failed")
        .expect("n4 logs why it is refused");
    for addr in &addrs {
        let r = roster(addr, &only_b).unwrap();
        assert!(!alive(&r, "n4"), "{addr} counts n4 in: {r:?}");
    }
    drop(n4);
    drop(nodes);
}

/// A CA for the reload test, and certificates it signs for 127.0.0.1.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ca {
            cert: params.self_signed(&key).unwrap(),
            key,
        }
    }

    /// Writes `<name>.crt`, `<name>.key` and `ca.crt` into `dir`; returns their paths.
    fn issue(&self, dir: &Path, name: &str) -> [PathBuf; 3] {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &self.cert, &self.key)
            .unwrap();
        let paths = [
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
            dir.join("ca.crt"),
        ];
        write(&paths[0], &cert.pem());
        write(&paths[1], &key.serialize_pem());
        write(&paths[2], &self.cert.pem());
        paths
    }
}

fn tls_args(p: &[PathBuf; 3]) -> Vec<&str> {
    vec![
        "--tls-cert",
        p[0].to_str().unwrap(),
        "--tls-key",
        p[1].to_str().unwrap(),
        "--tls-ca",
        p[2].to_str().unwrap(),
    ]
}

/// The node's answer to `status`, asked over TLS as `client` with `secret_file`.
fn tls_status(addr: &str, secret_file: &Path, client: &[PathBuf; 3]) -> Result<Value, String> {
    let mut args = vec![
        "status",
        "--connect",
        addr,
        "--json",
        "--secret-file",
        secret_file.to_str().unwrap(),
    ];
    args.extend(tls_args(client));
    let out = admin(&args);
    if !out.status.success() {
        return Err(stderr(&out));
    }
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn a_failed_reload_keeps_the_node_serving_with_what_it_had() {
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let node_tls = ca.issue(files.path(), "node");
    let client = ca.issue(files.path(), "client");
    let secret = files.path().join("secret");
    let (only_a, only_b) = (files.path().join("a"), files.path().join("b"));
    write(&secret, "A\n");
    write(&only_a, "A\n");
    write(&only_b, "B\n");
    let mut node = start(dir.path(), "solo", &secret, &tls_args(&node_tls));
    assert!(node.addr.starts_with("wss://"), "{}", node.addr);
    tls_status(&node.addr, &only_a, &client).unwrap();
    let first_cert = node
        .lines
        .iter()
        .find(|l| l.contains("credentials loaded"))
        .cloned()
        .expect("the start-up logs its credentials");

    // An empty secret file: refused, the node keeps A.
    write(&secret, "");
    node.signal("HUP");
    let line = node.wait_for("reloading the credentials failed").unwrap();
    assert!(
        line.contains("ERROR") && line.contains("no secret in it"),
        "{line}"
    );
    assert!(node.child.try_wait().unwrap().is_none(), "the node died");
    tls_status(&node.addr, &only_a, &client).unwrap();
    assert!(tls_status(&node.addr, &only_b, &client).is_err());

    // A garbage certificate (with a good secret file): refused whole, A still the secret.
    write(&secret, "B\n");
    let cert = std::fs::read_to_string(&node_tls[0]).unwrap();
    write(&node_tls[0], "not a certificate\n");
    node.signal("HUP");
    let line = node.wait_for("reloading the credentials failed").unwrap();
    assert!(line.contains("node.crt"), "{line}");
    tls_status(&node.addr, &only_a, &client).unwrap();
    assert!(tls_status(&node.addr, &only_b, &client).is_err());

    // A missing key file: the same.
    write(&node_tls[0], &cert);
    let key = std::fs::read_to_string(&node_tls[1]).unwrap();
    std::fs::remove_file(&node_tls[1]).unwrap();
    node.signal("HUP");
    let line = node.wait_for("reloading the credentials failed").unwrap();
    assert!(line.contains("node.key"), "{line}");
    tls_status(&node.addr, &only_a, &client).unwrap();

    // Good files again, with a new certificate: both swap in for new connections.
    write(&node_tls[1], &key);
    let renewed = ca.issue(files.path(), "node");
    node.signal("HUP");
    let line = node.wait_for("credentials reloaded").unwrap();
    assert!(line.contains("1 cluster secret"), "{line}");
    let fingerprint = |l: &str| l.split("sha256 ").nth(1).map(|s| s[..95].to_owned());
    assert_ne!(fingerprint(&line), fingerprint(&first_cert), "{line}");
    assert!(fingerprint(&line).is_some());
    assert_eq!(renewed[0], node_tls[0]);
    tls_status(&node.addr, &only_b, &client).unwrap();
    let refused = tls_status(&node.addr, &only_a, &client).unwrap_err();
    assert!(refused.contains("authentication"), "{refused}");
    assert_eq!(node.stop(), 0);
}
