//! Frozen data dirs of every schema version open with today's code.
//!
//! `migrations/fixtures/vN` was written by the real store (regenerate only when the vN
//! format itself is being defined: `cargo test --test migrations -- --ignored`).

mod common;
use common::copy_tree;
use gossip_roster::store::{Store, StoreConfig};
use gossip_roster::{ClusterEvent, Health, MemberState, NodeId, Roster};
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
    assert_eq!(rec.schema_version, 2, "migrated to the current version");
    assert_eq!(
        std::fs::read_to_string(work.path().join("SCHEMA")).unwrap(),
        "2\n"
    );
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

/// The events of the v2 fixture: v1's, with tags and health on both sides of the snapshot.
fn v2_events() -> Vec<ClusterEvent> {
    let n = NodeId::new;
    let mut events = v1_events();
    let tags_and_health = vec![
        ClusterEvent::TagSet {
            node: n("beta"),
            generation: 200,
            version: 2,
            key: "zone".into(),
            value: Some("eu-1".into()),
        },
        ClusterEvent::HealthSet {
            node: n("beta"),
            generation: 200,
            version: 3,
            actor: "billing".into(),
            health: Health::Warning,
            note: "queue deep".into(),
        },
    ];
    events.splice(V2_SNAPSHOT_AT - 2..V2_SNAPSHOT_AT - 2, tags_and_health);
    events.extend([
        ClusterEvent::TagSet {
            node: n("beta"),
            generation: 201,
            version: 2,
            key: "zone".into(),
            value: Some("eu-2".into()),
        },
        ClusterEvent::TagSet {
            node: n("beta"),
            generation: 201,
            version: 3,
            key: "rack".into(),
            value: Some("r7".into()),
        },
        ClusterEvent::TagSet {
            node: n("beta"),
            generation: 201,
            version: 4,
            key: "rack".into(),
            value: None,
        },
        ClusterEvent::HealthSet {
            node: n("beta"),
            generation: 201,
            version: 5,
            actor: "ledger".into(),
            health: Health::Critical,
            note: "disk full".into(),
        },
    ]);
    events
}
const V2_SNAPSHOT_AT: usize = V1_SNAPSHOT_AT + 2;

#[test]
fn v2_fixture_opens_with_the_same_roster() {
    let work = tempfile::tempdir().unwrap();
    copy_tree(&fixture(2), work.path());
    let (_store, rec) = Store::open_existing(work.path(), StoreConfig::default()).unwrap();
    assert_eq!(rec.schema_version, 2);
    assert_eq!(rec.snapshot_lsn, V2_SNAPSHOT_AT as u64);
    assert_eq!(rec.replayed, (v2_events().len() - V2_SNAPSHOT_AT) as u64);
    assert_eq!(rec.roster, roster_of(&v2_events()));
    let beta = NodeId::new("beta");
    assert_eq!(
        rec.roster.tags(&beta).unwrap(),
        [("zone".to_string(), "eu-2".to_string())].into()
    );
    assert_eq!(
        rec.roster.actor_health(&beta, "ledger"),
        Some(Health::Critical)
    );
    assert!(rec.roster.locate("ledger").is_empty(), "critical");
}

#[test]
#[ignore = "regenerates the frozen v2 fixture; run only when defining the v2 format"]
fn regenerate_v2_fixture() {
    write_fixture(2, &v2_events(), V2_SNAPSHOT_AT);
}

/// Writes a fixture with today's store: only the current version's can be regenerated (the
/// v1 fixture is frozen; this code writes schema 2).
fn write_fixture(version: u32, events: &[ClusterEvent], snapshot_at: usize) {
    assert_eq!(
        version,
        gossip_roster::store::migrate::SCHEMA_VERSION,
        "only the current schema's fixture can be written"
    );
    let dir = fixture(version);
    let _ = std::fs::remove_dir_all(&dir);
    let events = events.to_vec();
    {
        let (store, _) = Store::open(&dir, StoreConfig::default()).unwrap();
        store.set_identity(&NodeId::new("alpha"), 100).unwrap();
        store.append(events[..snapshot_at].to_vec()).wait().unwrap();
        store.compact(|| roster_of(&events[..snapshot_at])).unwrap();
        store.append(events[snapshot_at..].to_vec()).wait().unwrap();
        store.close().unwrap();
    }
    std::fs::remove_file(dir.join("LOCK")).unwrap();
}
