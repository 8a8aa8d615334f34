//! gossip-roster: a gossip node that keeps a durable cluster roster.
//!
//! The roster (which nodes exist, where they live, which actors each hosts, who is alive)
//! is a join-semilattice ([`roster`]): events merge in any order to the same result. Every
//! change a node applies is written to a write-ahead log and compacted into a sled snapshot
//! ([`store`]), so a restarted node comes back with its last known roster.
//!
//! ```
//! use gossip_roster::{ClusterEvent, NodeId, Roster, Applied};
//!
//! let mut roster = Roster::new();
//! let hello = ClusterEvent::NewNode {
//!     node: NodeId::new("n1"),
//!     generation: 1,
//!     version: 1,
//!     addr: "ws://127.0.0.1:7001".into(),
//!     actors: ["billing".to_string()].into(),
//! };
//! assert_eq!(roster.apply(&hello), Applied::Changed);
//! assert_eq!(roster.apply(&hello), Applied::Stale); // duplicates change nothing
//! assert_eq!(roster.locate("billing"), vec![NodeId::new("n1")]);
//! ```

pub mod admin;
mod admin_server;
mod advertise;
pub mod checks;
pub mod credentials;
pub mod dashboard;
pub mod discovery;
pub mod error;
pub mod event;
pub mod gossip;
mod growth;
pub mod health;
pub mod http;
pub mod local;
pub mod machine;
pub mod message;
pub mod metrics;
pub mod names;
pub mod node;
pub mod owner;
mod peers;
pub mod quorum;
pub mod roster;
pub mod secrets;
pub mod store;
pub mod swim;
pub mod tags;
pub mod tls;
pub mod transport;

pub use checks::HealthCheck;
pub use credentials::{CredentialFiles, Credentials, SharedCredentials, TlsFiles};
pub use error::{Error, Result};
pub use event::{ClusterEvent, Generation, Incarnation, Lsn, MemberState, NodeId, Version};
pub use health::{ActorHealth, Health};
pub use local::Identity;
pub use machine::{GossipConfig, Machine, MachineConfig, MembershipChange};
pub use node::{Node, NodeConfig, StartInfo, StopReason};
pub use quorum::Quorum;
pub use roster::{Applied, LocateQuery, Member, Roster};
pub use secrets::Secrets;
pub use store::{FsyncPolicy, Recovered, Store, StoreConfig};
pub use swim::SwimConfig;
