//! `gossip-node`: run a gossip-roster node in the foreground.

/// mimalloc: recovery and merge are allocation-heavy, and glibc's arenas contend across the
/// WAL reader and apply threads (measured: ~30% of replay time in malloc/free).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{Context, Result};
use clap::Parser;
use gossip_roster::store::{FsyncPolicy, StoreConfig, WalConfig};
use gossip_roster::{Node, NodeConfig, NodeId};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "gossip-node", version, about = "Run a gossip-roster node")]
struct RunArgs {
    /// Where the node keeps its WAL, snapshot and identity (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to listen on, HOST:PORT (port 0 picks a free one).
    #[arg(long)]
    listen: String,
    /// Address others dial; default ws://<listen>.
    #[arg(long)]
    advertise: Option<String>,
    /// Node id; default: generated once, then persisted in the data dir.
    #[arg(long)]
    node_id: Option<String>,
    /// An actor this node hosts from the start (repeatable).
    #[arg(long = "actor", value_name = "NAME")]
    actors: Vec<String>,
    /// Durability of the WAL: always (fsync per batch), batch (fsync at most every
    /// --fsync-interval-ms), never (the OS decides).
    #[arg(long, default_value = "batch")]
    fsync: FsyncPolicy,
    /// Longest wait for an fsync under --fsync batch.
    #[arg(long, default_value_t = 5)]
    fsync_interval_ms: u64,
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = RunArgs::parse();
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
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gossip-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> Result<()> {
    // Signal handlers first: a SIGTERM that arrives during start-up still stops us cleanly.
    let stop = shutdown_signal()?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr()?;
    let advertise = args
        .advertise
        .clone()
        .unwrap_or_else(|| format!("ws://{local}"));
    let config = NodeConfig {
        data_dir: args.data_dir.clone(),
        advertise: advertise.clone(),
        node_id: args.node_id.clone().map(NodeId::new),
        actors: args.actors.clone(),
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
        ..NodeConfig::default()
    };
    let (node, info) = Node::start(config)
        .await
        .with_context(|| format!("cannot open data dir {}", args.data_dir.display()))?;
    tracing::info!(
        node = %info.identity.id,
        generation = info.identity.generation,
        listen = %local,
        advertise = %advertise,
        new_data_dir = info.created,
        members = info.recovered_members,
        replayed = info.replayed,
        last_lsn = info.last_lsn,
        fsync = %args.fsync,
        "node started"
    );
    // The gossip protocol over this port is not served yet: connections are closed at once
    // rather than left hanging.
    let accept = async move {
        loop {
            if let Ok((stream, peer)) = listener.accept().await {
                tracing::debug!(%peer, "closing connection: gossip is not served by this build yet");
                drop(stream);
            }
        }
    };
    let compaction = node.run_compaction(Duration::from_secs(1), stop);
    tokio::select! {
        _ = compaction => {}
        _ = accept => {}
    }
    tracing::info!("shutting down: syncing the WAL");
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
