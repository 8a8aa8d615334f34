//! Frozen data dirs of every schema version open with today's code.
//!
//! `migrations/fixtures/v1` was written by the real store (regenerate only when the v1
//! format itself is being defined: `cargo test --test migrations -- --ignored`).

mod common;
use common::copy_tree;
use gossip_roster::store::{Store, StoreConfig};
use gossip_roster::{ClusterEvent, MemberState, NodeId, Roster};
use std::path::{Path, PathBuf};

fn fixture(version: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("migrations/fixtures/v{version}"))
}

/// The events of the v1 fixture: every kind, three nodes, a generation change.
fn v1_events() -> Vec<ClusterEvent> {
    let n = NodeId::new;
    let actors = |a: &[&str]| a.iter().map(|s| s.to_string()).collect();
    vec![
        ClusterEvent::NewNode {
            node: n("alpha"),
            generation: 100,
            version: 1,
            addr: "ws://10.0.0.1:7000".into(),
            actors: actors(&["billing", "audit"]),
        },
        ClusterEvent::NewNode {
            node: n("beta"),
            generation: 200,
            version: 1,
            addr: "ws://10.0.0.2:7000".into(),
            actors: actors(&["billing"]),
        },
        ClusterEvent::ActorAdded {
            node: n("alpha"),
            generation: 100,
            version: 2,
            actor: "search".into(),
        },
        ClusterEvent::ActorRemoved {
            node: n("alpha"),
            generation: 100,
            version: 3,
            actor: "audit".into(),
        },
        ClusterEvent::NodeSuspected {
            node: n("beta"),
            generation: 200,
            incarnation: 0,
            by: Some(n("gamma")),
        },
        ClusterEvent::NodeAlive {
            node: n("beta"),
            generation: 200,
            incarnation: 1,
        },
        ClusterEvent::NewNode {
            node: n("gamma"),
            generation: 300,
            version: 1,
            addr: "ws://10.0.0.3:7000".into(),
            actors: actors(&["cache"]),
        },
        // -- the snapshot is taken here; what follows stays in the WAL --
        ClusterEvent::NodeDead {
            node: n("gamma"),
            generation: 300,
            incarnation: 0,
        },
        ClusterEvent::NewNode {
            node: n("beta"),
            generation: 201,
            version: 1,
            addr: "ws://10.0.0.2:7001".into(),
            actors: actors(&["ledger"]),
        },
        ClusterEvent::NodeLeft {
            node: n("alpha"),
            generation: 100,
            incarnation: 0,
        },
    ]
}
const V1_SNAPSHOT_AT: usize = 7;

fn roster_of(events: &[ClusterEvent]) -> Roster {
    let mut r = Roster::new();
    for e in events {
        r.apply(e);
    }
    r
}

#[test]
fn v1_fixture_opens_with_the_same_roster() {
    let work = tempfile::tempdir().unwrap();
    copy_tree(&fixture(1), work.path());
    let (store, rec) = Store::open_existing(work.path(), StoreConfig::default()).unwrap();
    assert_eq!(rec.schema_version, 1);
    assert_eq!(rec.snapshot_lsn, V1_SNAPSHOT_AT as u64);
    assert_eq!(rec.replayed, (v1_events().len() - V1_SNAPSHOT_AT) as u64);
    assert!(rec.repaired.is_none());
    assert_eq!(rec.roster, roster_of(&v1_events()));
    let (id, generation) = store.identity().unwrap().unwrap();
    assert_eq!((id.as_str(), generation), ("alpha", 100));
    // Spot checks, so the fixture cannot silently drift into something trivial.
    let beta = rec.roster.member(&NodeId::new("beta")).unwrap();
    assert_eq!(
        (beta.generation, beta.actors.clone()),
        (201, vec!["ledger".to_string()])
    );
    assert_eq!(
        rec.roster.member(&NodeId::new("gamma")).unwrap().state,
        MemberState::Dead
    );
    assert_eq!(
        rec.roster.member(&NodeId::new("alpha")).unwrap().state,
        MemberState::Left
    );
    assert!(rec.roster.locate("cache").is_empty());
    assert_eq!(rec.roster.locate("ledger"), vec![NodeId::new("beta")]);
}

#[test]
fn v1_fixture_verifies_clean_with_gossip_log() {
    let work = tempfile::tempdir().unwrap();
    copy_tree(&fixture(1), work.path());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gossip-log"))
        .args(["verify", "--data-dir"])
        .arg(work.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
#[ignore = "regenerates the frozen v1 fixture; run only when defining the v1 format"]
fn regenerate_v1_fixture() {
    let dir = fixture(1);
    let _ = std::fs::remove_dir_all(&dir);
    let events = v1_events();
    {
        let (store, _) = Store::open(&dir, StoreConfig::default()).unwrap();
        store.set_identity(&NodeId::new("alpha"), 100).unwrap();
        store
            .append(events[..V1_SNAPSHOT_AT].to_vec())
            .wait()
            .unwrap();
        store
            .compact(|| roster_of(&events[..V1_SNAPSHOT_AT]))
            .unwrap();
        store
            .append(events[V1_SNAPSHOT_AT..].to_vec())
            .wait()
            .unwrap();
        store.close().unwrap();
    }
    std::fs::remove_file(dir.join("LOCK")).unwrap();
}
