//! `gossip-node`: run a gossip-roster node, or talk to a running one.

/// mimalloc: recovery and merge are allocation-heavy, and glibc's arenas contend across the
/// WAL reader and apply threads (measured: ~30% of replay time in malloc/free).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "shared/logging.rs"]
mod logging;
#[path = "shared/members.rs"]
mod members;
#[path = "shared/reload.rs"]
mod reload;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use gossip_roster::admin;
use gossip_roster::message::{AdminReply, AdminRequest};
use gossip_roster::store::{FsyncPolicy, StoreConfig, WalConfig};
use gossip_roster::tls::Tls;
use gossip_roster::transport::TransportConfig;
use gossip_roster::{CredentialFiles, TlsFiles};
use gossip_roster::{GossipConfig, Node, NodeConfig, NodeId, SwimConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "gossip-node",
    version,
    about = "Run a gossip-roster node, or ask a running one (members, actors, locate, status)",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Where the node keeps its WAL, snapshot and identity (created if missing).
    #[arg(long, required = true)]
    data_dir: Option<PathBuf>,
    /// Address to listen on, HOST:PORT (port 0 picks a free one).
    #[arg(long, required = true)]
    listen: Option<String>,
    /// Serve /metrics (Prometheus), /health and /ready over HTTP on HOST:PORT (off by
    /// default; no authentication: bind it where only operators reach).
    #[arg(long, value_name = "HOST:PORT")]
    http_listen: Option<String>,
    /// Address others dial; default ws://<listen>.
    #[arg(long)]
    advertise: Option<String>,
    /// Node id; default: generated once, then persisted in the data dir.
    #[arg(long)]
    node_id: Option<String>,
    /// Any member to join through, ws://HOST:PORT (repeatable). Not needed once the data
    /// dir knows peers.
    #[arg(long = "seed", value_name = "URL")]
    seeds: Vec<String>,
    /// An actor this node hosts from the start (repeatable).
    #[arg(long = "actor", value_name = "NAME")]
    actors: Vec<String>,
    /// A tag of this node, set at start (repeatable; tags set earlier are kept). Keys: at
    /// most 128 bytes of a-z A-Z 0-9 _ . - /; values: at most 1024 bytes.
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = gossip_roster::tags::parse_tag)]
    tags: Vec<(String, String)>,
    /// A check command whose result is the actor's health (repeatable), run with `sh -c`
    /// every --check-interval: exit 0 passing, 1 warning, else (or a timeout) critical; the
    /// first line of its output is the note.
    #[arg(long = "check", value_name = "ACTOR=COMMAND")]
    checks: Vec<String>,
    /// Seconds between runs of each --check.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    check_interval: u64,
    /// Seconds a --check may run before it counts as critical.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    check_timeout: u64,
    /// Cluster name: peers of another cluster are refused.
    #[arg(long, default_value = "default")]
    cluster: String,
    /// File holding the cluster secret peers and admin clients must prove: one secret a line,
    /// the first the one we prove with, all accepted (a rotation lists new and old). Reread,
    /// with the TLS files, on SIGHUP.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Durability of the WAL: always (fsync per batch), batch (fsync at most every
    /// --fsync-interval-ms), never (the OS decides).
    #[arg(long, default_value = "batch")]
    fsync: FsyncPolicy,
    /// Longest wait for an fsync under --fsync batch.
    #[arg(long, default_value_t = 5)]
    fsync_interval_ms: u64,
    /// Batching window of gossip: how long a new event waits for company.
    #[arg(long, default_value_t = 2)]
    gossip_window_ms: u64,
    /// Peers each gossip round goes to.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    fanout: u32,
    /// Interval of anti-entropy (digest exchange with one random peer) up to 32 members;
    /// one interval more per doubling of the cluster beyond.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    anti_entropy_ms: u64,
    /// Failure detection: one member is probed this often.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    probe_interval_ms: u64,
    /// Wait for a direct ack before asking others to probe (ping-req).
    #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u64).range(1..))]
    probe_timeout_ms: u64,
    /// Members asked to probe on our behalf.
    #[arg(long, default_value_t = 3)]
    indirect_checks: usize,
    /// Suspicion lasts from mult * max(1, log10 N) * interval (with confirmations) up to
    /// --suspicion-max-mult times that (without).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    suspicion_mult: u32,
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..))]
    suspicion_max_mult: u32,
    /// Dead and left members are forgotten after this many seconds.
    #[arg(long, default_value_t = 3600)]
    tombstone_ttl_s: u64,
    /// A member alive this long without a flip counts as stable.
    #[arg(long, default_value_t = 30)]
    stable_after_s: u64,
    /// Largest frame accepted (and sent), in bytes; at least 65536. Larger gossip, deltas
    /// and admin answers are split to fit.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(65536..=(1 << 30)))]
    max_frame_bytes: u64,
    /// Most inbound connections at once.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Start a new WAL segment past this many bytes.
    #[arg(long, default_value_t = 64 << 20)]
    segment_bytes: u64,
    /// Compact once this many records were logged since the last snapshot.
    #[arg(long, default_value_t = 100_000)]
    compact_records: u64,
    /// Compact once this many WAL bytes were written since the last snapshot.
    #[arg(long, default_value_t = 64 << 20)]
    compact_bytes: u64,
}

#[derive(Args, Debug)]
struct Conn {
    /// The node to ask, ws://HOST:PORT (wss:// with TLS).
    #[arg(long)]
    connect: String,
    /// Secret file, when the node has one (one secret a line; the first proves).
    #[arg(long)]
    secret_file: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
}

/// TLS (wss://): all three or none. Peers must present a certificate signed by the CA.
#[derive(Args, Debug)]
struct TlsArgs {
    /// PEM certificate (chain) of this node or client.
    #[arg(long, requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires_all = ["tls_cert", "tls_ca"])]
    tls_key: Option<PathBuf>,
    /// PEM certificate(s) of the CA that peers' certificates must chain to.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    fn files(&self) -> Option<TlsFiles> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(c), Some(k), Some(a)) => Some(TlsFiles {
                cert: c.clone(),
                key: k.clone(),
                ca: a.clone(),
            }),
            _ => None,
        }
    }

    fn load(&self) -> Result<Option<Arc<Tls>>> {
        match self.files() {
            Some(f) => Ok(Some(Arc::new(
                Tls::from_files(&f.cert, &f.key, &f.ca).map_err(|e| anyhow::anyhow!("TLS: {e}"))?,
            ))),
            None => Ok(None),
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the roster a node sees.
    Members {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
    /// Register or remove actors on a node (durable before it returns).
    Actors {
        #[command(subcommand)]
        op: ActorsOp,
    },
    /// Which live nodes host an actor: passing ones first, then warning ones; critical
    /// ones only with --include-critical (last).
    Locate {
        #[command(flatten)]
        conn: Conn,
        actor: String,
        /// Only nodes with this tag (repeatable: all must match).
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = gossip_roster::tags::parse_tag)]
        tags: Vec<(String, String)>,
        /// Hosts whose actor is critical too.
        #[arg(long)]
        include_critical: bool,
        #[arg(long)]
        json: bool,
    },
    /// Set or unset tags of the node at --connect (durable before it answers).
    Tags {
        #[command(subcommand)]
        op: TagsOp,
    },
    /// Set the health of an actor on the node at --connect (durable before it answers).
    Health {
        #[command(subcommand)]
        op: HealthOp,
    },
    /// Force-leave a member: mark it `left` cluster-wide so it is no longer probed or
    /// counted in the quorum (for a node that is gone for good). Refused for a member that
    /// is not dead unless --force.
    Remove {
        #[command(flatten)]
        conn: Conn,
        /// The member's node id (see `members`).
        node: String,
        /// Also for a member that is alive or suspect: it is marked left, and a live one
        /// rejoins under a new generation (to stop a node, use `leave` instead).
        #[arg(long)]
        force: bool,
    },
    /// Ask the node at --connect to leave the cluster gracefully and stop (exit 0).
    Leave {
        #[command(flatten)]
        conn: Conn,
    },
    /// Node id, generation, incarnation, member counts, WAL and snapshot figures, uptime.
    Status {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ActorsOp {
    /// Register actors on the node (durable before it answers).
    Add {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        names: Names,
    },
    /// Stop hosting actors on the node (durable before it answers).
    Remove {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        names: Names,
    },
}

#[derive(Subcommand, Debug)]
enum TagsOp {
    /// Set tags: KEY=VALUE...
    Set {
        #[command(flatten)]
        conn: Conn,
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = gossip_roster::tags::parse_tag)]
        tags: Vec<(String, String)>,
    },
    /// Unset tags: KEY...
    Unset {
        #[command(flatten)]
        conn: Conn,
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum HealthOp {
    /// Set an actor's health: passing, warning or critical.
    Set {
        #[command(flatten)]
        conn: Conn,
        actor: String,
        health: gossip_roster::Health,
        /// A short note (at most 256 bytes).
        #[arg(long, default_value = "")]
        note: String,
    },
}

/// Actor names: on the command line, or one a line from a file (`-`: standard input).
#[derive(Args, Debug)]
struct Names {
    /// Actor names (see README for the rules).
    #[arg(required_unless_present = "file")]
    names: Vec<String>,
    /// Read names from FILE, one a line (`-` for standard input); for more names than a
    /// command line holds.
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
}

impl Names {
    /// The names, in order, each once.
    fn load(self) -> Result<Vec<String>> {
        let mut all = self.names;
        if let Some(path) = self.file {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading names from stdin")?
            } else {
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading names from {}", path.display()))?
            };
            all.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_owned));
        }
        let mut seen = std::collections::HashSet::new();
        all.retain(|n| seen.insert(n.clone()));
        Ok(all)
    }
}

/// The error as one line: each cause once (a library error whose message already quotes
/// its cause is not followed by that cause again).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn main() -> ExitCode {
    logging::init("info");
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gossip-node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        None => runtime.block_on(run(cli.run)),
        Some(cmd) => runtime.block_on(admin_command(cmd)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gossip-node: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> Result<()> {
    // Signal handlers first: a SIGTERM that arrives during start-up still stops us cleanly.
    let stop = shutdown_signal()?;
    let hangups = reload::hangups()?;
    let data_dir = args.data_dir.expect("required by clap");
    let credential_files = CredentialFiles {
        secret_file: args.secret_file.clone(),
        tls: args.tls.files(),
    };
    let credentials = credential_files.load()?;
    tracing::info!(credentials = %credentials.describe(), "credentials loaded");
    if let Some(id) = &args.node_id {
        gossip_roster::names::validate_node_id(id).with_context(|| format!("--node-id {id:?}"))?;
    }
    for actor in &args.actors {
        gossip_roster::names::validate_actor_name(actor)
            .with_context(|| format!("--actor {actor:?}"))?;
    }
    for seed in &args.seeds {
        gossip_roster::transport::host_port(seed).with_context(|| format!("--seed {seed}"))?;
    }
    let tags: std::collections::BTreeMap<String, String> = args.tags.into_iter().collect();
    gossip_roster::tags::check_totals(tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .context("--tag")?;
    let checks = args
        .checks
        .iter()
        .map(|c| {
            gossip_roster::HealthCheck::parse(
                c,
                Duration::from_secs(args.check_interval),
                Duration::from_secs(args.check_timeout),
            )
            .map_err(|e| anyhow::anyhow!("--check: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let config = NodeConfig {
        data_dir: data_dir.clone(),
        listen: args.listen.expect("required by clap"),
        advertise: args.advertise,
        node_id: args.node_id.map(NodeId::new),
        actors: args.actors,
        tags,
        checks,
        seeds: args.seeds,
        transport: TransportConfig {
            cluster: args.cluster,
            credentials: credentials.into(),
            max_frame_bytes: args.max_frame_bytes as usize,
            ..TransportConfig::default()
        },
        gossip: GossipConfig {
            window: Duration::from_millis(args.gossip_window_ms),
            fanout: args.fanout as usize,
            anti_entropy_interval: Duration::from_millis(args.anti_entropy_ms),
            ..GossipConfig::default()
        },
        store: StoreConfig {
            wal: WalConfig {
                policy: args.fsync,
                batch_interval: Duration::from_millis(args.fsync_interval_ms),
                segment_max_bytes: args.segment_bytes,
                ..WalConfig::default()
            },
            compact_after_records: args.compact_records,
            compact_after_bytes: args.compact_bytes,
        },
        swim: SwimConfig {
            probe_interval: Duration::from_millis(args.probe_interval_ms),
            probe_timeout: Duration::from_millis(args.probe_timeout_ms),
            indirect_checks: args.indirect_checks,
            suspicion_mult: args.suspicion_mult,
            suspicion_max_mult: args.suspicion_max_mult,
            tombstone_ttl: Duration::from_secs(args.tombstone_ttl_s),
            stable_after: Duration::from_secs(args.stable_after_s),
            ..SwimConfig::default()
        },
        max_connections: args.max_connections,
        http_listen: args.http_listen,
        ..NodeConfig::default()
    };
    let fsync = config.store.wal.policy;
    let (node, info) = Node::start(config)
        .await
        .with_context(|| format!("cannot start on data dir {}", data_dir.display()))?;
    tracing::info!(
        node = %info.identity.id,
        generation = info.identity.generation,
        listen = %info.listen,
        advertise = %info.addr,
        new_data_dir = info.created,
        members = info.recovered_members,
        replayed = info.replayed,
        last_lsn = info.last_lsn,
        %fsync,
        http = info.http.map(|a| a.to_string()),
        "node started"
    );
    tokio::spawn(reload::reload_on_hangup(
        hangups,
        node.clone(),
        credential_files,
    ));
    tokio::select! {
        _ = stop => {}
        reason = node.stopped() => {
            if reason == gossip_roster::StopReason::Left {
                tracing::info!("left the cluster at an admin client's request; stopping");
                node.shutdown().await.context("shutdown")?;
                tracing::info!("stopped");
                return Ok(());
            }
            // A moment for admin clients waiting on a change to hear why.
            tokio::time::sleep(Duration::from_millis(100)).await;
            // Stopped by itself (the WAL failed, our id is taken): exit non-zero at once,
            // so a supervisor restarts us (recovery from the log) or a human sees why.
            let error = reason.into_error().map_or_else(|| anyhow::anyhow!("the node stopped"), anyhow::Error::from);
            return Err(error.context("the node stopped"));
        }
    }
    tracing::info!("leaving the cluster");
    if let Err(e) = node.leave().await {
        tracing::warn!(error = %e, "could not announce the leave");
    }
    node.shutdown().await.context("shutdown")?;
    tracing::info!("stopped");
    Ok(())
}

/// Installs SIGINT and SIGTERM handlers now; the future resolves on either.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

async fn ask(conn: &Conn, req: AdminRequest) -> Result<AdminReply> {
    let secret = conn
        .secret_file
        .as_deref()
        .map(admin::read_secret)
        .transpose()?;
    admin::request(&conn.connect, secret, conn.tls.load()?, req)
        .await
        .with_context(|| format!("asking {}", conn.connect))
}

async fn admin_command(cmd: Command) -> Result<()> {
    match cmd {
        Command::Members { conn, json } => match ask(&conn, AdminRequest::Members).await? {
            AdminReply::Members(m) => members::print(&m, json, false),
            other => unexpected(other),
        },
        Command::Locate {
            conn,
            actor,
            tags,
            include_critical,
            json,
        } => {
            let req = AdminRequest::Locate {
                actor,
                tags,
                include_critical,
            };
            match ask(&conn, req).await? {
                AdminReply::Located(m) => members::print(&m, json, false),
                other => unexpected(other),
            }
        }
        Command::Tags { op } => {
            let (conn, req) = match op {
                TagsOp::Set { conn, tags } => (conn, AdminRequest::SetTags { tags }),
                TagsOp::Unset { conn, keys } => {
                    for k in &keys {
                        gossip_roster::tags::validate_key(k)?;
                    }
                    (conn, AdminRequest::UnsetTags { keys })
                }
            };
            let set = matches!(req, AdminRequest::SetTags { .. });
            match ask(&conn, req).await? {
                AdminReply::TagsChanged { changed } => {
                    let word = if set { "set" } else { "unset" };
                    if changed.is_empty() {
                        println!("unchanged");
                    }
                    for k in changed {
                        println!("{word} {k}");
                    }
                    Ok(())
                }
                AdminReply::Error(e) => anyhow::bail!("{e}"),
                other => unexpected(other),
            }
        }
        Command::Health {
            op:
                HealthOp::Set {
                    conn,
                    actor,
                    health,
                    note,
                },
        } => {
            gossip_roster::health::validate_note(&note)?;
            let req = AdminRequest::SetHealth {
                actor: actor.clone(),
                health,
                note,
            };
            match ask(&conn, req).await? {
                AdminReply::HealthChanged { changed } => {
                    let word = if changed { "now" } else { "already" };
                    println!("{actor} {word} {health}");
                    Ok(())
                }
                AdminReply::Error(e) => anyhow::bail!("{e}"),
                other => unexpected(other),
            }
        }
        Command::Actors { op } => {
            let (conn, names, add) = match op {
                ActorsOp::Add { conn, names } => (conn, names.load()?, true),
                ActorsOp::Remove { conn, names } => (conn, names.load()?, false),
            };
            let secret = conn
                .secret_file
                .as_deref()
                .map(admin::read_secret)
                .transpose()?;
            let changed =
                admin::change_actors(&conn.connect, secret, conn.tls.load()?, names.clone(), add)
                    .await
                    .with_context(|| format!("asking {}", conn.connect))?;
            let changed: std::collections::HashSet<String> = changed.into_iter().collect();
            let word = if add { "added" } else { "removed" };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            use std::io::Write as _;
            for n in &names {
                if changed.contains(n) {
                    writeln!(out, "{word} {n}")?;
                } else {
                    writeln!(
                        out,
                        "unchanged {n} (already {})",
                        if add { "hosted" } else { "absent" }
                    )?;
                }
            }
            Ok(())
        }
        Command::Remove { conn, node, force } => {
            gossip_roster::names::validate_node_id(&node)
                .with_context(|| format!("node id {node:?}"))?;
            let req = AdminRequest::Remove {
                node: NodeId::new(node),
                force,
            };
            match ask(&conn, req).await? {
                AdminReply::Removed { node, was } => {
                    println!("removed {node} (was {was}): marked left cluster-wide");
                    Ok(())
                }
                AdminReply::Error(e) => anyhow::bail!("{e}"),
                other => unexpected(other),
            }
        }
        Command::Leave { conn } => match ask(&conn, AdminRequest::Leave).await? {
            AdminReply::Left => {
                println!("{} left the cluster and is stopping", conn.connect);
                Ok(())
            }
            AdminReply::Error(e) => anyhow::bail!("{e}"),
            other => unexpected(other),
        },
        Command::Status { conn, json } => match ask(&conn, AdminRequest::Status).await? {
            AdminReply::Status(s) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&s)?);
                } else {
                    println!(
                        "node          {} (generation {}, incarnation {})",
                        s.node_id, s.generation, s.incarnation
                    );
                    println!("address       {} in cluster {:?}", s.addr, s.cluster);
                    println!(
                        "members       {} alive, {} suspect, {} dead, {} left",
                        s.alive, s.suspect, s.dead, s.left
                    );
                    println!(
                        "connections   {} ({} frames, {} bytes sent)",
                        s.connections, s.frames_sent, s.bytes_sent
                    );
                    println!(
                        "wal           last LSN {}, durable LSN {}, {} bytes written, fsync {}",
                        s.wal_last_lsn, s.wal_durable_lsn, s.wal_bytes_written, s.fsync_policy
                    );
                    println!("snapshot      LSN {}", s.snapshot_lsn);
                    println!("uptime        {:.1} s", s.uptime_ms as f64 / 1000.0);
                }
                Ok(())
            }
            other => unexpected(other),
        },
    }
}

fn unexpected(reply: AdminReply) -> Result<()> {
    anyhow::bail!("unexpected reply from the node: {reply:?}")
}
