//! The HTTP endpoint of real `gossip-node` processes: `/metrics` parsed as Prometheus text,
//! counters that move as the cluster works, `/health` and `/ready` with their reasons.

mod common;

use common::*;
use prometheus_parse::{Scrape, Value};
use tempfile::TempDir;

/// Scrapes `/metrics` and parses it with a Prometheus text parser.
fn scrape(node: &NodeProc) -> Scrape {
    let (code, body) = http_get(&node.http, "/metrics").expect("/metrics answers");
    assert_eq!(code, 200, "{body}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("valid Prometheus text")
}

/// The value of `name` whose labels include all of `labels` (counters, gauges; a histogram
/// gives its count).
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = s
        .samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Value::Summary(_) => panic!("{name} is a summary"),
        })
        .collect();
    assert_eq!(found.len(), 1, "one sample of {name}{labels:?}: {found:?}");
    found[0]
}

fn start(dir: &TempDir, extra: &[&str]) -> NodeProc {
    let mut args = vec!["--http-listen", "127.0.0.1:0"];
    args.extend(extra);
    NodeProc::start_net(dir.path(), &args).expect("node starts")
}

fn alive_count(node: &NodeProc) -> usize {
    members(&node.addr, &[]).map_or(0, |m| {
        id_states(&m)
            .iter()
            .filter(|(_, state)| state == "alive")
            .count()
    })
}

#[test]
fn metrics_are_prometheus_text_and_move_as_the_cluster_works() {
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let a = start(&dirs[0], &[]);
    let b = start(&dirs[1], &["--seed", &a.addr]);
    let c = start(&dirs[2], &["--seed", &a.addr]);
    for n in [&a, &b, &c] {
        eventually("three alive everywhere", || alive_count(n) == 3);
    }
    let before = scrape(&a);
    eventually("a's scrape shows three alive", || {
        value(&scrape(&a), "gossip_members", &[("state", "alive")]) == 3.0
    });
    assert_eq!(value(&before, "gossip_in_majority", &[]), 1.0);
    assert_eq!(value(&before, "gossip_joined", &[]), 1.0);
    assert!(value(&before, "gossip_largest_cluster", &[]) >= 3.0);
    assert!(value(&before, "gossip_wal_fsync_seconds", &[]) >= 1.0);
    assert!(value(&before, "gossip_wal_write_seconds", &[]) >= 1.0);

    // Probes run, answered directly; frames of each kind are counted both ways.
    eventually("probes answered and counted", || {
        let s = scrape(&a);
        value(&s, "gossip_probes_total", &[("outcome", "ack")]) >= 3.0
            && value(&s, "gossip_frames_sent_total", &[("kind", "ping")]) >= 3.0
            && value(&s, "gossip_frames_received_total", &[("kind", "ack")]) >= 3.0
            && value(&s, "gossip_sent_bytes_total", &[("kind", "ping")]) > 0.0
    });

    // An admin change: an admin frame in, a WAL batch written, events gossiped out.
    let s1 = scrape(&a);
    let out = admin(&["actors", "add", "--connect", &a.addr, "billing"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s2 = scrape(&a);
    assert!(
        value(&s2, "gossip_frames_received_total", &[("kind", "admin")])
            > value(&s1, "gossip_frames_received_total", &[("kind", "admin")])
    );
    // ... its reply out, and the admin connection's handshake both ways (a black-box trial
    // found these stuck at 0).
    for (name, kind) in [
        ("gossip_frames_sent_total", "admin"),
        ("gossip_sent_bytes_total", "admin"),
        ("gossip_frames_sent_total", "handshake"),
        ("gossip_frames_received_total", "handshake"),
        ("gossip_received_bytes_total", "handshake"),
    ] {
        assert!(
            value(&s2, name, &[("kind", kind)]) > value(&s1, name, &[("kind", kind)]),
            "{name}{{kind={kind}}} moves"
        );
    }
    assert!(
        value(&s2, "gossip_wal_batches_total", &[]) > value(&s1, "gossip_wal_batches_total", &[])
    );
    eventually("the actor's event went out", || {
        value(
            &scrape(&a),
            "gossip_frames_sent_total",
            &[("kind", "events")],
        ) > value(&s1, "gossip_frames_sent_total", &[("kind", "events")])
    });

    // A crash is suspected and declared dead by someone; a's view shows it.
    let mut c = c;
    c.child.kill().unwrap();
    c.child.wait().unwrap();
    eventually("the crash is counted", || {
        let (sa, sb) = (scrape(&a), scrape(&b));
        let raised =
            value(&sa, "gossip_suspicions_total", &[]) + value(&sb, "gossip_suspicions_total", &[]);
        raised >= 1.0 && value(&sa, "gossip_members", &[("state", "dead")]) == 1.0
    });
    let s = scrape(&a);
    assert_eq!(value(&s, "gossip_members", &[("state", "alive")]), 2.0);
    assert_eq!(
        value(&s, "gossip_in_majority", &[]),
        1.0,
        "2 of 3 is a majority"
    );
}

#[test]
fn ready_says_why_until_joined_and_in_the_majority() {
    // A seed nobody answers at: alive (health 200) but not joined (ready 503, says why).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = format!("ws://{}", closed.local_addr().unwrap());
    drop(closed);
    let lone_dir = TempDir::new().unwrap();
    let lone = start(&lone_dir, &["--seed", &nobody]);
    assert_eq!(http_get(&lone.http, "/health").unwrap().0, 200);
    let (code, body) = http_get(&lone.http, "/ready").unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("not joined"), "{body}");
    drop(lone);

    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let a = start(&dirs[0], &[]);
    let b = start(&dirs[1], &["--seed", &a.addr]);
    let c = start(&dirs[2], &["--seed", &a.addr]);
    for n in [&a, &b, &c] {
        eventually("ready everywhere", || {
            http_get(&n.http, "/ready").is_some_and(|(code, _)| code == 200)
        });
    }
    // Two of three crash: the survivor is alone in a cluster of three.
    for mut n in [b, c] {
        n.child.kill().unwrap();
        n.child.wait().unwrap();
    }
    eventually("the survivor is not ready", || {
        http_get(&a.http, "/ready")
            .is_some_and(|(code, body)| code == 503 && body.contains("not in the majority"))
    });
    assert_eq!(
        http_get(&a.http, "/health").unwrap().0,
        200,
        "still serving"
    );
    let s = scrape(&a);
    assert_eq!(value(&s, "gossip_in_majority", &[]), 0.0);
}

#[test]
fn an_http_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap().to_string();
    let dir = TempDir::new().unwrap();
    let out = std::process::Command::new(NODE)
        .args(["--data-dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--http-listen", &at])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&at) && err.contains("--http-listen") && err.contains("in use"),
        "{err}"
    );
}

/// A node seeded with an address its seed does not advertise (a Kubernetes Service, a
/// proxy, NAT; here 127.0.0.2 for a node that listens on every address and advertises
/// 127.0.0.1) dialed it anew at every seed check, every 2 s for good, each time replacing its
/// connection to that member (black-box trial, 2026-12-04). Once a dial reached a member,
/// the seed is met: no more handshakes.
#[test]
fn a_seed_dialed_at_another_address_is_not_dialed_again_once_met() {
    let dirs: Vec<TempDir> = (0..2).map(|_| TempDir::new().unwrap()).collect();
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let advertise = format!("ws://127.0.0.1:{port}");
    let a = start(&dirs[0], &["--listen", &listen, "--advertise", &advertise]);
    let alias = format!("ws://127.0.0.2:{port}");
    let b = start(&dirs[1], &["--seed", &alias]);
    for n in [&a, &b] {
        eventually("both alive everywhere", || alive_count(n) == 2);
    }
    let handshakes = || {
        value(
            &scrape(&a),
            "gossip_frames_received_total",
            &[("kind", "handshake")],
        )
    };
    // Past the first seed checks (0.2 s doubling), then three of the 2 s ones.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let settled = handshakes();
    std::thread::sleep(std::time::Duration::from_secs(7));
    assert_eq!(handshakes(), settled, "handshakes with a after b met it");
    drop(b);
}

/// A dead member's address given to a new node (a pod's IP reused; here C listens on every
/// address, so the dead A's 127.0.0.1 reaches it): B dialed it now and then to reconnect
/// with A and reached C instead, and C dialed it and reached itself, warning "refused a
/// member" each time: about a handshake a second for as long as A was remembered (black-box
/// trial, 2026-12-04). Now a dial meant for A that another node answers is not made again.
#[test]
fn a_dead_members_address_taken_by_a_new_node_is_not_dialed_for_it_again() {
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let a = start(
        &dirs[0],
        &[
            "--listen",
            &listen,
            "--advertise",
            &format!("ws://127.0.0.1:{port}"),
        ],
    );
    let mut b = start(&dirs[1], &["--seed", &a.addr]);
    eventually("b sees a", || alive_count(&b) == 2);
    a.signal("KILL");
    drop(a);
    eventually("b declares a dead", || {
        members(&b.addr, &[]).is_some_and(|m| id_states(&m).iter().any(|(_, s)| s == "dead"))
    });
    let c_advertise = format!("ws://127.0.0.3:{port}");
    let mut c = start(
        &dirs[2],
        &[
            "--listen",
            &listen,
            "--advertise",
            &c_advertise,
            "--seed",
            &b.addr,
        ],
    );
    for n in [&b, &c] {
        eventually("b and c alive everywhere", || alive_count(n) == 2);
    }
    // One dial each tells (reconnect tries come one anti-entropy round in four).
    b.wait_for("a dead member's address answers as another node")
        .unwrap();
    c.wait_for("this address reaches this node itself").unwrap();
    let handshakes = || {
        value(
            &scrape(&c),
            "gossip_frames_received_total",
            &[("kind", "handshake")],
        )
    };
    let settled = handshakes();
    std::thread::sleep(std::time::Duration::from_secs(8));
    assert_eq!(
        handshakes(),
        settled,
        "handshakes at c, 8 s after it joined"
    );
    let warned: Vec<&String> = c
        .log_so_far()
        .iter()
        .filter(|l| l.contains("refused a member"))
        .collect();
    assert!(warned.is_empty(), "{warned:?}");
}

/// An admin command pointed at a node's HTTP port said "websocket: HTTP error: 200 OK"
/// (black-box trial): it now says what it reached.
#[test]
fn an_admin_command_at_the_http_port_says_it_is_not_the_listen_port() {
    let dir = TempDir::new().unwrap();
    let a = start(&dir, &[]);
    let out = admin(&["members", "--connect", &a.http]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(
            "answered HTTP 200 instead of a WebSocket upgrade: not a node's --listen port"
        ),
        "{err}"
    );
}
