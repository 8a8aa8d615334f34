//! The node runtime: the pure roster and the durable store wired with tokio.
//!
//! Discipline (raft-rs's persist-before-send): a change is applied to the in-memory roster,
//! appended to the WAL, and only acknowledged (or, with the network, gossiped) once the
//! append resolves under the fsync policy. The roster lock is a `std` mutex that is never
//! held across an `.await`, so no caller can deadlock on it.

use crate::error::{Error, Result};
use crate::event::{ClusterEvent, Generation, Lsn, NodeId};
use crate::local::Identity;
use crate::roster::{Applied, Member, Roster};
use crate::store::{CompactionReport, Store, StoreConfig};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Everything needed to start a node. `Default` gives documented defaults.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    /// The address others dial (`ws://host:port`).
    pub advertise: String,
    /// `None`: use the id stored in the data dir, or generate one on first start.
    pub node_id: Option<NodeId>,
    /// Actors hosted from the start (added if not already registered).
    pub actors: Vec<String>,
    pub store: StoreConfig,
    /// How often the compaction thresholds are checked.
    pub compaction_check: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("gossip-data"),
            advertise: "ws://127.0.0.1:7000".into(),
            node_id: None,
            actors: Vec::new(),
            store: StoreConfig::default(),
            compaction_check: Duration::from_secs(1),
        }
    }
}

/// What start-up found, for logs and status.
#[derive(Clone, Debug)]
pub struct StartInfo {
    pub identity: Identity,
    /// True when the data dir was new.
    pub created: bool,
    pub recovered_members: usize,
    pub replayed: u64,
    pub last_lsn: Lsn,
    pub repaired_torn_tail: bool,
}

struct Shared {
    store: Store,
    roster: Mutex<Roster>,
    identity: Identity,
}

/// A running node. Cheap to clone; all clones drive the same node.
#[derive(Clone)]
pub struct Node {
    shared: Arc<Shared>,
}

impl Node {
    /// Opens (or creates) the data dir, recovers the roster, and brings our own record up to
    /// date. Must be called inside a tokio runtime.
    pub async fn start(config: NodeConfig) -> Result<(Node, StartInfo)> {
        let store_config = config.store.clone();
        let dir = config.data_dir.clone();
        let (store, recovered) =
            tokio::task::spawn_blocking(move || Store::open(&dir, store_config))
                .await
                .expect("store open does not panic")?;
        let mut created = false;
        let identity = match store.identity()? {
            Some((stored, generation)) => {
                if let Some(given) = config.node_id.as_ref().filter(|g| **g != stored) {
                    return Err(Error::NodeIdMismatch {
                        stored: stored.to_string(),
                        given: given.to_string(),
                    });
                }
                Identity {
                    id: stored,
                    generation,
                }
            }
            None => {
                created = true;
                let identity = Identity {
                    id: config.node_id.clone().unwrap_or_else(NodeId::random),
                    generation: crate::store::wal::unix_ms(),
                };
                store.set_identity(&identity.id, identity.generation)?;
                identity
            }
        };
        // A graceful leave ends a generation for good; coming back is a new life.
        let identity = if identity.has_left(&recovered.roster) {
            let generation = crate::store::wal::unix_ms().max(identity.generation + 1);
            store.set_identity(&identity.id, generation)?;
            tracing::info!(
                generation,
                "left the cluster last time; rejoining as a new generation"
            );
            Identity {
                generation,
                ..identity
            }
        } else {
            identity
        };
        let info = StartInfo {
            identity: identity.clone(),
            created,
            recovered_members: recovered.roster.members().len(),
            replayed: recovered.replayed,
            last_lsn: recovered.last_lsn,
            repaired_torn_tail: recovered.repaired.is_some(),
        };
        let node = Node {
            shared: Arc::new(Shared {
                store,
                roster: Mutex::new(recovered.roster),
                identity,
            }),
        };
        let events = {
            let roster = node.shared.roster.lock().unwrap();
            node.shared
                .identity
                .startup_events(&roster, &config.advertise, &config.actors)
        };
        node.apply_and_log(events).await?;
        Ok((node, info))
    }

    pub fn id(&self) -> &NodeId {
        &self.shared.identity.id
    }

    pub fn generation(&self) -> Generation {
        self.shared.identity.generation
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// Applies events and logs those that changed the roster; resolves once durable.
    /// Returns the events that were new.
    pub async fn apply_and_log(&self, events: Vec<ClusterEvent>) -> Result<Vec<ClusterEvent>> {
        let changed: Vec<ClusterEvent> = {
            let mut roster = self.shared.roster.lock().unwrap();
            events
                .into_iter()
                .filter(|e| roster.apply(e) == Applied::Changed)
                .collect()
        };
        if !changed.is_empty() {
            self.shared.store.append(changed.clone()).await?;
        }
        Ok(changed)
    }

    /// Registers an actor on this node; resolves once durable. False if already hosted.
    pub async fn register_actor(&self, actor: &str) -> Result<bool> {
        self.change_own_record(|id, roster| id.add_actor(roster, actor))
            .await
    }

    /// Unregisters an actor; resolves once durable. False if it was not hosted here.
    pub async fn unregister_actor(&self, actor: &str) -> Result<bool> {
        self.change_own_record(|id, roster| id.remove_actor(roster, actor))
            .await
    }

    async fn change_own_record(
        &self,
        change: impl FnOnce(&Identity, &Roster) -> Option<ClusterEvent>,
    ) -> Result<bool> {
        let event = {
            let mut roster = self.shared.roster.lock().unwrap();
            match change(&self.shared.identity, &roster) {
                Some(e) => {
                    roster.apply(&e);
                    e
                }
                None => return Ok(false),
            }
        };
        self.shared.store.append(vec![event]).await?;
        Ok(true)
    }

    /// Live hosts of an actor.
    pub fn locate(&self, actor: &str) -> Vec<NodeId> {
        self.shared.roster.lock().unwrap().locate(actor)
    }

    pub fn members(&self) -> Vec<Member> {
        self.shared.roster.lock().unwrap().members()
    }

    /// A copy of the whole roster.
    pub fn roster(&self) -> Roster {
        self.shared.roster.lock().unwrap().clone()
    }

    /// Compacts now if a threshold was passed. Blocking work runs off the executor.
    pub async fn compact_if_needed(&self) -> Result<Option<CompactionReport>> {
        if !self.shared.store.needs_compaction() {
            return Ok(None);
        }
        self.compact().await.map(Some)
    }

    pub async fn compact(&self) -> Result<CompactionReport> {
        let node = self.clone();
        tokio::task::spawn_blocking(move || {
            let shared = &node.shared;
            shared
                .store
                .compact(|| shared.roster.lock().unwrap().clone())
        })
        .await
        .expect("compaction does not panic")
    }

    /// Runs the periodic compaction check until `stop` resolves.
    pub async fn run_compaction(
        &self,
        every: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = tick.tick() => {
                    if let Err(e) = self.compact_if_needed().await {
                        tracing::error!(error = %e, "compaction failed");
                    }
                }
            }
        }
    }

    /// Syncs the WAL and releases the data dir. Other clones must be dropped first.
    pub async fn shutdown(self) -> Result<()> {
        let shared = Arc::try_unwrap(self.shared).map_err(|_| Error::StillShared)?;
        tokio::task::spawn_blocking(move || shared.store.close())
            .await
            .expect("close does not panic")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path) -> NodeConfig {
        NodeConfig {
            data_dir: dir.to_path_buf(),
            advertise: "ws://127.0.0.1:7001".into(),
            actors: vec!["boot".into()],
            ..NodeConfig::default()
        }
    }

    #[tokio::test]
    async fn register_locate_restart_and_leave_starts_a_new_generation() {
        let dir = tempfile::tempdir().unwrap();
        let (node, info) = Node::start(config(dir.path())).await.unwrap();
        assert!(info.created);
        let me = info.identity.id.clone();
        assert!(node.register_actor("billing").await.unwrap());
        assert!(
            !node.register_actor("billing").await.unwrap(),
            "already hosted"
        );
        assert_eq!(node.locate("billing"), vec![me.clone()]);
        assert!(node.unregister_actor("boot").await.unwrap());
        assert!(node.locate("boot").is_empty());
        node.shutdown().await.unwrap();

        // Restart: same identity, registered actors kept, `boot` re-added (it is a start actor).
        let (node, info) = Node::start(config(dir.path())).await.unwrap();
        assert!(!info.created);
        assert_eq!(info.identity.id, me);
        let member = node.members().into_iter().find(|m| m.id == me).unwrap();
        assert_eq!(member.actors, vec!["billing", "boot"]);
        let generation = node.generation();

        // Recorded as left: the next start is a new generation with a fresh record.
        let left = ClusterEvent::NodeLeft {
            node: me.clone(),
            generation,
            incarnation: 0,
        };
        node.apply_and_log(vec![left]).await.unwrap();
        node.shutdown().await.unwrap();
        let (node, info) = Node::start(config(dir.path())).await.unwrap();
        assert!(info.identity.generation > generation);
        let member = node.members().into_iter().find(|m| m.id == me).unwrap();
        assert_eq!(
            (member.state, member.actors),
            (crate::MemberState::Alive, vec!["boot".to_string()])
        );
        node.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn compaction_runs_off_the_executor_and_keeps_the_roster() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        cfg.store.compact_after_records = 10;
        let (node, _) = Node::start(cfg.clone()).await.unwrap();
        for i in 0..25 {
            node.register_actor(&format!("a{i}")).await.unwrap();
        }
        let report = node
            .compact_if_needed()
            .await
            .unwrap()
            .expect("threshold passed");
        assert_eq!(report.snapshot_lsn, 26);
        assert!(node.compact_if_needed().await.unwrap().is_none());
        let before = node.roster();
        node.shutdown().await.unwrap();
        let (node, info) = Node::start(cfg).await.unwrap();
        assert_eq!(info.replayed, 0);
        assert_eq!(node.roster(), before);
        node.shutdown().await.unwrap();
    }
}
