//! A running `gossip-node` against bad input: garbage before and after the handshake,
//! oversized frames, wrong frames in the handshake, events about itself. It closes the
//! offending connection and keeps answering; nothing of the bad input gets into its roster,
//! and a forged claim on its own record is answered by writing its own content above it.

mod common;
use common::*;
use futures_util::SinkExt;
use gossip_roster::message::{Frame, Role};
use gossip_roster::transport::{self, TransportConfig};
use gossip_roster::{ClusterEvent, NodeId};
use std::io::{Read, Write};
use tokio_tungstenite::tungstenite::Message;

fn intruder() -> Role {
    Role::Member {
        id: NodeId::new("intruder"),
        generation: 1,
        addr: "ws://127.0.0.1:9".into(),
    }
}

/// The node answers admin requests and still has exactly its own record.
fn assert_healthy(addr: &str) {
    let roster = members(addr, &[]).expect("the node still answers");
    let ids: Vec<&str> = roster
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["target"], "nothing from the bad connections got in");
}

/// The node's own record as it reports it: generation, version, address and actors.
#[derive(Debug, PartialEq)]
struct Own {
    generation: u64,
    version: u64,
    addr: String,
    actors: serde_json::Value,
}

fn own_record(addr: &str) -> Own {
    let roster = members(addr, &[]).expect("the node answers");
    let me = roster
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "target")
        .expect("the node lists itself")
        .clone();
    Own {
        generation: me["generation"].as_u64().unwrap(),
        version: me["version"].as_u64().unwrap(),
        addr: me["addr"].as_str().unwrap().to_owned(),
        actors: me["actors"].clone(),
    }
}

/// The node's last LSN, through its status (the dir is locked while it runs).
fn wal_records(node: &NodeProc) -> usize {
    let out = admin(&["status", "--connect", &node.addr, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["wal_last_lsn"].as_u64().unwrap() as usize
}

#[test]
fn garbage_oversized_and_out_of_order_frames_close_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::start_net(
        dir.path(),
        &["--node-id", "target", "--max-frame-bytes", "65536"],
    )
    .unwrap();
    let addr = node.addr.clone();
    let own = own_record(&addr);
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Raw bytes and plain HTTP instead of a WebSocket upgrade.
    let host = addr.strip_prefix("ws://").unwrap();
    for payload in [
        &b"\x00\x01\x02garbage\xff\xfe"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let mut s = std::net::TcpStream::connect(host).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        s.write_all(payload).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf); // closed by the node (maybe after an HTTP error)
    }
    assert_healthy(&addr);

    rt.block_on(async {
        let cfg = TransportConfig::default();
        // After the handshake: undecodable bytes, a text frame, an oversized frame, and a
        // handshake frame out of place. Each closes that connection.
        let bad: Vec<Message> = vec![
            Message::Binary(vec![0xc1, 0xff, 0x00]),
            Message::Text("hello".into()),
            Message::Binary(vec![0x90; 200_000]),
            Message::Binary(Frame::Proof { proof: vec![] }.encode()),
        ];
        for msg in bad {
            let (mut ws, _) = transport::dial(&addr, &intruder(), &cfg).await.unwrap();
            let _ = ws.send(msg).await;
            let closed =
                tokio::time::timeout(std::time::Duration::from_secs(30), transport::recv(&mut ws))
                    .await;
            assert!(
                !matches!(closed, Ok(Ok(Some(_)))),
                "the node must close the connection, got {closed:?}"
            );
        }
        // Valid frames that claim to be about the node itself (data only it may write), and
        // FRESH: its own generation with the next version, and its generation plus one. Were
        // they accepted, the roster would host "evil" and the WAL would grow.
        let (mut ws, _) = transport::dial(&addr, &intruder(), &cfg).await.unwrap();
        let forged = vec![
            ClusterEvent::ActorAdded {
                node: NodeId::new("target"),
                generation: own.generation,
                version: own.version + 1,
                actor: "evil".into(),
            },
            ClusterEvent::NewNode {
                node: NodeId::new("target"),
                generation: own.generation + 1,
                version: own.version + 1,
                addr: "ws://127.0.0.1:9".into(),
                actors: ["evil2".to_string()].into(),
            },
        ];
        transport::send(&mut ws, &Frame::Events(forged))
            .await
            .unwrap();
        // A digest on the same connection: frames of a connection are handled in order, so
        // its answer (Sync) proves the events were handled before it.
        transport::send(&mut ws, &Frame::Digest(Vec::new()))
            .await
            .unwrap();
        loop {
            let frame =
                tokio::time::timeout(std::time::Duration::from_secs(30), transport::recv(&mut ws))
                    .await
                    .expect("the node answers the digest")
                    .expect("the connection stays open")
                    .expect("the node answers the digest before closing");
            if matches!(frame, Frame::Sync { .. }) {
                break;
            }
        }
        let _ = ws.close(None).await;
    });
    assert_healthy(&addr);
    // The owner answers a claim on its record by writing its own content above it (a peer
    // may hold versions the owner lost; forged or not, the owner's content wins): the
    // content is untouched and the record sits above the forged versions and generation.
    let after = own_record(&addr);
    assert_eq!(
        (&after.addr, &after.actors),
        (&own.addr, &own.actors),
        "our own content is untouched"
    );
    assert!(
        after.generation > own.generation + 1,
        "our record was taken back above the forged generation: {after:?}"
    );
    for actor in ["evil", "evil2"] {
        let out = admin(&["locate", "--connect", &addr, actor]);
        assert_eq!(
            stdout(&out).lines().count(),
            1,
            "only the header: {}",
            stdout(&out)
        );
    }
    assert!(node.wait_for("handshake failed").is_ok());
}

#[test]
fn silent_connections_do_not_block_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start_net(dir.path(), &["--node-id", "target"]).unwrap();
    let host = node.addr.strip_prefix("ws://").unwrap().to_owned();
    // Twenty connections that never say a word.
    let idle: Vec<_> = (0..20)
        .map(|_| std::net::TcpStream::connect(&host).unwrap())
        .collect();
    assert_healthy(&node.addr);
    drop(idle);
}

#[test]
fn ten_thousand_connection_attempts_leave_the_node_answering() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start_net(dir.path(), &["--node-id", "target"]).unwrap();
    let host = node.addr.strip_prefix("ws://").unwrap().to_owned();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let host = host.clone();
            std::thread::spawn(move || {
                let mut ok = 0;
                for _ in 0..5000 {
                    if let Ok(s) = std::net::TcpStream::connect(&host) {
                        ok += 1;
                        drop(s);
                    }
                }
                ok
            })
        })
        .collect();
    let connected: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(
        connected > 9_000,
        "only {connected} connections went through"
    );
    assert_healthy(&node.addr);
}

#[test]
fn a_peer_claiming_our_id_is_closed_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start_net(dir.path(), &["--node-id", "target"]).unwrap();
    let before = wal_records(&node);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let impostor = Role::Member {
            id: NodeId::new("target"),
            generation: u64::MAX,
            addr: "ws://127.0.0.1:9".into(),
        };
        let (mut ws, _) = transport::dial(&node.addr, &impostor, &TransportConfig::default())
            .await
            .unwrap();
        let _ = transport::send(
            &mut ws,
            &Frame::Events(vec![ClusterEvent::NewNode {
                node: NodeId::new("target"),
                generation: u64::MAX,
                version: 1,
                addr: "ws://127.0.0.1:9".into(),
                actors: ["evil".to_string()].into(),
            }]),
        )
        .await;
        let closed =
            tokio::time::timeout(std::time::Duration::from_secs(30), transport::recv(&mut ws))
                .await;
        // Refused with a reason, or closed: never an answer.
        assert!(
            matches!(closed, Ok(Ok(Some(Frame::Reject { ref reason }))) if reason.contains("target"))
                || !matches!(closed, Ok(Ok(Some(_)))),
            "{closed:?}"
        );
    });
    assert_healthy(&node.addr);
    assert_eq!(wal_records(&node), before);
}

/// `(state, generation, actors)` of member `id` as the node at `addr` lists it.
fn member_view(addr: &str, id: &str) -> Option<(String, u64, serde_json::Value)> {
    let roster = members(addr, &[])?;
    let m = roster.as_array()?.iter().find(|m| m["id"] == id)?.clone();
    Some((
        m["state"].as_str()?.to_owned(),
        m["generation"].as_u64()?,
        m["actors"].clone(),
    ))
}

/// Found by a black-box trial: one frame from anyone who could connect (no secret set), with
/// numbers at `u64::MAX`, made a live node dead for good (its refutation wrapped to 0), took
/// another's id (generation) or its address and actors (version). Such numbers are dropped;
/// the highest accepted incarnation moves the accused node to a new generation, alive.
#[test]
fn forged_numbers_no_node_can_reach_change_nothing_and_the_highest_accepted_are_outgrown() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = NodeProc::start_net(da.path(), &["--node-id", "a", "--actor", "billing"]).unwrap();
    let b = NodeProc::start_net(db.path(), &["--node-id", "b", "--seed", &a.addr]).unwrap();
    eventually("b lists a alive", || {
        member_view(&b.addr, "a").is_some_and(|(s, _, _)| s == "alive")
    });
    let (_, gen_a, _) = member_view(&b.addr, "a").unwrap();
    let send = |events: Vec<ClusterEvent>| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let (mut ws, _) = transport::dial(&b.addr, &intruder(), &TransportConfig::default())
                .await
                .unwrap();
            transport::send(&mut ws, &Frame::Events(events))
                .await
                .unwrap();
            // Give the node the frame before the connection goes.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        });
    };
    send(vec![
        ClusterEvent::NodeDead {
            node: NodeId::new("a"),
            generation: gen_a,
            incarnation: u64::MAX,
        },
        ClusterEvent::NewNode {
            node: NodeId::new("g"),
            generation: u64::MAX,
            version: 1,
            addr: "ws://127.0.0.1:9".into(),
            actors: ["fake".to_string()].into(),
        },
        ClusterEvent::ActorAdded {
            node: NodeId::new("a"),
            generation: gen_a,
            version: u64::MAX,
            actor: "stolen".into(),
        },
    ]);
    for at in [&a.addr, &b.addr] {
        let (state, generation, actors) = member_view(at, "a").unwrap();
        assert_eq!((state.as_str(), generation), ("alive", gen_a), "{at}");
        assert_eq!(actors, serde_json::json!(["billing"]), "{at}");
        assert!(member_view(at, "g").is_none(), "{at}");
    }
    // The highest incarnation a peer accepts: a cannot say alive above it, so it goes on
    // under a new generation, alive on both, with its actor.
    send(vec![ClusterEvent::NodeDead {
        node: NodeId::new("a"),
        generation: gen_a,
        incarnation: gossip_roster::machine::plausible::MAX_INCARNATION,
    }]);
    eventually("a alive again under a new generation on both", || {
        [&a.addr, &b.addr].iter().all(|at| {
            member_view(at, "a").is_some_and(|(s, g, actors)| {
                s == "alive" && g > gen_a && actors == serde_json::json!(["billing"])
            })
        })
    });
}

/// Found by a trial: 200 idle connections to a node with a cap of 16 wrote 185 warnings.
#[test]
fn connections_over_the_cap_are_warned_of_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::start_net(dir.path(), &["--max-connections", "16"]).unwrap();
    let at = node.addr.trim_start_matches("ws://").to_owned();
    let held: Vec<std::net::TcpStream> = (0..60)
        .filter_map(|_| std::net::TcpStream::connect(&at).ok())
        .collect();
    assert!(held.len() > 16);
    node.wait_for("connection cap").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let warned = node
        .log_so_far()
        .iter()
        .filter(|l| l.contains("connection cap") && l.contains("WARN"))
        .count();
    assert_eq!(warned, 1);
    drop(held);
}
