//! `gossip-node`: run a gossip-roster node, or talk to a running one.

/// mimalloc: recovery and merge are allocation-heavy, and glibc's arenas contend across the
/// WAL reader and apply threads (measured: ~30% of replay time in malloc/free).
/// Built with `no_thp` (Cargo.toml): with transparent huge pages mimalloc's first arena was
/// backed by 2 MiB pages, each zeroed on first touch, so a fresh node held 48 MB resident
/// before doing anything and spent most of its start-up CPU zeroing them (3.4 MB and a third
/// of the CPU without; 10 fresh nodes at once on 2 cores: 300 -> 185 ms until all started).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "shared/config.rs"]
mod config;
#[path = "shared/logging.rs"]
mod logging;
#[path = "shared/members.rs"]
mod members;
#[path = "shared/reload.rs"]
mod reload;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use gossip_roster::admin;
use gossip_roster::discovery::DnsServer;
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
    subcommand_negates_reqs = true,
    after_help = SETTINGS_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

/// How run settings combine; printed under `--help`.
const SETTINGS_HELP: &str = "\
Settings: every run flag also comes from the environment, GOSSIP_ + the flag in upper snake \
case (--data-dir: GOSSIP_DATA_DIR; repeatable flags take a comma-separated list: \
GOSSIP_SEED=ws://a:7100,ws://b:7100), and from a TOML file (--config FILE or GOSSIP_CONFIG) \
whose keys are the flag names (data-dir = \"/var/lib/gossip\", seed = [\"ws://a:7100\"]). \
Precedence: flag > env > file > default. `gossip-node config --print` shows the effective \
settings and where each came from.";

/// The flags of a node run. Each also comes from `GOSSIP_<FLAG>` and from the config file
/// (see [`config`]): a new flag needs nothing more than its `#[arg(long)]`.
#[derive(Args, Debug)]
struct RunArgs {
    /// TOML file of settings, keys named like the flags (data-dir = "/var/lib/gossip").
    /// Flags and environment variables override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the node keeps its WAL, snapshot and identity (created if missing).
    #[arg(long, required = true)]
    data_dir: Option<PathBuf>,
    /// Address to listen on, HOST:PORT (port 0 picks a free one).
    #[arg(long, required = true)]
    listen: Option<String>,
    /// Serve /metrics (Prometheus), /health, /ready and the live dashboard (/) over HTTP on
    /// HOST:PORT (off by default). Probes and metrics need no authentication: bind it where
    /// only operators reach. With --secret-file the dashboard asks for its token
    /// (`gossip-node dashboard-token`).
    #[arg(long, value_name = "HOST:PORT")]
    http_listen: Option<String>,
    /// Split-brain downing: off, keep-majority (the side seeing more than half of the
    /// largest recent cluster goes on; an exact half: the side with the lowest member id),
    /// or static-quorum=N (a side seeing at least N members goes on). The losing side marks
    /// itself down; the winner declares the unreachable dead and forgets them.
    #[arg(long, default_value = "off", value_name = "STRATEGY")]
    downing: gossip_roster::machine::downing::Strategy,
    /// How long (seconds) the set of reachable members must hold still before a side is
    /// judged (also spelt --downing-stable-after).
    #[arg(long, alias = "downing-stable-after", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=DAY_S))]
    downing_stable_after_s: u64,
    /// Address others dial, HOST:PORT or ws://HOST:PORT (wss:// with TLS). Default: the
    /// listen address; for 0.0.0.0 or [::], the address of the interface that routes out.
    #[arg(long, value_parser = parse_addr)]
    advertise: Option<String>,
    /// Node id; default: generated once, then persisted in the data dir.
    #[arg(long)]
    node_id: Option<String>,
    /// Any member to join through, HOST:PORT or ws://HOST:PORT (repeatable). HOST may be a
    /// DNS name: every A/AAAA address it resolves to is dialed, re-resolved while no live
    /// peer is known. Tried together with the peers the data dir remembers.
    #[arg(long = "seed", value_name = "URL", value_parser = parse_addr)]
    seeds: Vec<String>,
    /// A DNS SRV name listing members, e.g. _gossip._tcp.gossip.example (repeatable):
    /// every target and port is dialed. Same as --seed dns+srv://NAME.
    #[arg(long = "seed-srv", value_name = "NAME")]
    seed_srv: Vec<String>,
    /// DNS server for seed names, IP:PORT; default: the system's (/etc/resolv.conf).
    #[arg(long, value_name = "IP:PORT")]
    dns_server: Option<std::net::SocketAddr>,
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
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=DAY_S))]
    check_interval: u64,
    /// Seconds a --check may run before it counts as critical.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=DAY_S))]
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
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    fsync_interval_ms: u64,
    /// Batching window of gossip: how long a new event waits for company.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    gossip_window_ms: u64,
    /// Peers each gossip round goes to.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    fanout: u32,
    /// Interval of anti-entropy (digest exchange with one random peer) up to 32 members;
    /// one interval more per doubling of the cluster beyond.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=HOUR_MS))]
    anti_entropy_ms: u64,
    /// Failure detection: one member is probed this often.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=MINUTE_MS))]
    probe_interval_ms: u64,
    /// Wait for a direct ack before asking others to probe (ping-req).
    #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u64).range(1..=MINUTE_MS))]
    probe_timeout_ms: u64,
    /// Members asked to probe on our behalf.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=32))]
    indirect_checks: u32,
    /// Suspicion lasts from mult * max(1, log10 min(N, 20)) * interval (with confirmations)
    /// up to --suspicion-max-mult times that (without).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    suspicion_mult: u32,
    /// The longest suspicion, as a multiple of the shortest.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=1000))]
    suspicion_max_mult: u32,
    /// Dead and left members are forgotten after this many seconds (at least 10).
    #[arg(long, default_value_t = 3600, value_parser = within(10, YEAR_S))]
    tombstone_ttl_s: u64,
    /// A member alive this long without a flip counts as stable.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=YEAR_S))]
    stable_after_s: u64,
    /// Largest frame accepted (and sent), in bytes; at least 65536. Larger gossip, deltas
    /// and admin answers are split to fit.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(65536..=(1 << 30)))]
    max_frame_bytes: u64,
    /// Most inbound connections at once (at least 16).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(16..=1_000_000))]
    max_connections: u32,
    /// Start a new WAL segment past this many bytes (at least 65536).
    #[arg(long, default_value_t = 64 << 20, value_parser = within(65536, 1 << 40))]
    segment_bytes: u64,
    /// Compact once this many records were logged since the last snapshot (at least 1000).
    #[arg(long, default_value_t = 100_000, value_parser = within(1000, 1 << 40))]
    compact_records: u64,
    /// Compact once this many WAL bytes were written since the last snapshot (at least
    /// 65536).
    #[arg(long, default_value_t = 64 << 20, value_parser = within(65536, 1 << 40))]
    compact_bytes: u64,
}

#[derive(Args, Debug)]
struct Conn {
    /// The node to ask, HOST:PORT or ws://HOST:PORT (wss:// with TLS), as --seed takes it.
    #[arg(long, env = "GOSSIP_CONNECT", value_parser = parse_addr)]
    connect: String,
    /// Secret file, when the node has one (one secret a line; the first proves).
    #[arg(long, env = "GOSSIP_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
}

/// TLS (wss://): all three or none. Peers must present a certificate signed by the CA.
#[derive(Args, Debug)]
struct TlsArgs {
    /// PEM certificate (chain) of this node or client.
    #[arg(long, env = "GOSSIP_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "GOSSIP_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    tls_key: Option<PathBuf>,
    /// PEM certificate(s) of the CA that peers' certificates must chain to.
    #[arg(long, env = "GOSSIP_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
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
    /// The owner of a singleton actor: of its hosts that are up, not critical and on the
    /// winning side, the one every node picks by rendezvous hashing. Refused while the node
    /// asked is down or not in the majority.
    Owner {
        #[command(flatten)]
        conn: Conn,
        /// Actor names (several: one line each, or one JSON array).
        #[arg(required = true)]
        actors: Vec<String>,
        #[arg(long)]
        json: bool,
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
    /// Print the token that opens the dashboard (http://<--http-listen>/) of nodes with this
    /// secret file: an HMAC of a fixed label under the first secret, not the secret itself.
    /// Paste it into the page's login form, or send it as `Authorization: Bearer TOKEN`.
    DashboardToken {
        /// The cluster's secret file (one secret a line; the first issues the token).
        #[arg(long, env = "GOSSIP_SECRET_FILE")]
        secret_file: PathBuf,
    },
    /// The effective run settings (flags, GOSSIP_* variables, --config file, defaults) and
    /// where each came from. Takes the same flags as a run; prints the secret file's path,
    /// never the secret.
    Config {
        /// Print the settings (TOML by default).
        #[arg(long, required = true)]
        print: bool,
        /// As JSON: { "flag": { "value": .., "source": "flag|env|file|default|unset" } }.
        #[arg(long, conflicts_with = "toml")]
        json: bool,
        /// As a TOML file giving the same settings, each line commented with its source.
        #[arg(long)]
        toml: bool,
        #[command(flatten)]
        run: Box<RunArgs>,
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
        // `actors add -` read as a name registered an actor called "-" (black-box trial).
        if self.names.iter().any(|n| n == "-") {
            anyhow::bail!(
                "\"-\" as a name: to read names from standard input, give --file - (one a line)"
            );
        }
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

/// The error as one line, each cause once: the library quotes a cause in its message or
/// exposes it as its source, never both (see `gossip_roster::Error`), so the chain is
/// printed as it is.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
}

/// Test suites shrink WAL segments, compaction thresholds and tombstone lifetimes far below
/// what a deployment should run with; this variable (like `GOSSIP_ROSTER_FAILPOINT`) lets
/// them go down to 1.
const TEST_LIMITS_ENV: &str = "GOSSIP_ROSTER_TEST_LIMITS";

/// Upper bounds of the time flags: far beyond any useful setting, low enough that the
/// timeouts computed from them (a suspicion is interval x mult x max-mult) cannot overflow.
const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
const DAY_S: u64 = 86_400;
const YEAR_S: u64 = 366 * DAY_S;

/// A number in `min..=max`; the minimum is 1 under [`TEST_LIMITS_ENV`].
fn within(
    min: u64,
    max: u64,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |s| {
        let n: u64 = s
            .parse()
            .map_err(|e| format!("{s:?} is not a number: {e}"))?;
        let floor = if std::env::var_os(TEST_LIMITS_ENV).is_some() {
            1
        } else {
            min
        };
        if n < floor {
            return Err(format!("{n} is below the minimum of {floor}"));
        }
        if n > max {
            return Err(format!("{n} is above the maximum of {max}"));
        }
        Ok(n)
    }
}

/// An address flag: `ws://HOST:PORT`, `wss://HOST:PORT`, or `HOST:PORT` (given the scheme
/// of the node's transport by [`with_scheme`]). Any other scheme is refused.
fn parse_addr(s: &str) -> Result<String, String> {
    if let Some((scheme, _)) = s.split_once("://") {
        if scheme != "ws" && scheme != "wss" {
            return Err(format!(
                "unknown scheme {scheme}:// (give ws://HOST:PORT, wss://HOST:PORT or HOST:PORT)"
            ));
        }
        gossip_roster::transport::host_port(s).map_err(|e| e.to_string())?;
    } else {
        gossip_roster::transport::host_port(&format!("ws://{s}"))
            .map_err(|_| format!("{s:?} is not HOST:PORT or ws://HOST:PORT"))?;
    }
    Ok(s.to_owned())
}

/// `HOST:PORT` as `ws://HOST:PORT` (`wss://` with TLS); an address with a scheme as it is.
fn with_scheme(addr: String, tls: bool) -> String {
    if addr.contains("://") {
        addr
    } else {
        format!("{}://{addr}", if tls { "wss" } else { "ws" })
    }
}

/// The command line as parsed, with what `config --print` needs to say where values came from.
struct Parsed {
    cli: Cli,
    command: clap::Command,
    matches: clap::ArgMatches,
    file: Option<config::FileValues>,
}

/// Parses flags, `GOSSIP_*` variables and the config file into one command line (see
/// [`config`]). A clap error (or --help) exits here, with clap's own output and code.
fn parse() -> Result<Parsed> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let run_ids: Vec<String> = Cli::command()
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    let mut command = config::with_env(Cli::command()).mut_subcommand("config", |sub| {
        config::none_required(config::with_env_for(sub, &run_ids))
    });
    let file = match config::config_path(&args) {
        Some(path) => Some(config::load(&path, &command)?),
        None => None,
    };
    if let Some(file) = &file {
        command =
            config::apply(command, file).mut_subcommand("config", |sub| config::apply(sub, file));
    }
    let matches = command
        .clone()
        .try_get_matches_from(args)
        .unwrap_or_else(|e| e.exit());
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    Ok(Parsed {
        cli,
        command,
        matches,
        file,
    })
}

/// `config --print`: each run setting, its value and its source.
fn print_config(parsed: &Parsed, json: bool) -> Result<()> {
    let sub = parsed
        .command
        .find_subcommand("config")
        .expect("the config subcommand exists");
    let matches = parsed
        .matches
        .subcommand_matches("config")
        .expect("called for the config subcommand");
    // The run settings only (the subcommand's own --print/--json/--toml are not), in the
    // order of --help.
    let order: Vec<String> = Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    let mut settings: Vec<config::Setting> = config::effective(sub, matches, parsed.file.as_ref())
        .into_iter()
        .filter(|s| order.contains(&s.key))
        .collect();
    settings.sort_by_key(|s| order.iter().position(|k| *k == s.key));
    let text = if json {
        serde_json::to_string_pretty(&config::to_json(&settings))? + "\n"
    } else {
        config::to_toml(&settings)
    };
    use std::io::Write as _;
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

fn main() -> ExitCode {
    logging::init("info");
    let parsed = match parse() {
        Ok(p) => p,
        Err(e) => {
            logging::say(format_args!("gossip-node: {}", one_line(&e)));
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Config { json, .. }) = &parsed.cli.command {
        return finish(print_config(&parsed, *json));
    }
    let cli = parsed.cli;
    if cli.command.is_some() {
        // An admin command's output piped into `head` or `grep -q` ends quietly when the
        // pipe closes, as any Unix filter does (Rust ignores SIGPIPE, and the next print
        // panics). Its sockets are unaffected: they write with MSG_NOSIGNAL.
        // SAFETY: restoring a signal's default disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            logging::say(format_args!("gossip-node: cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    finish(match cli.command {
        None => runtime.block_on(run(cli.run)),
        Some(cmd) => runtime.block_on(admin_command(cmd)),
    })
}

/// The exit: 0, or 1 with the error on one line.
fn finish(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`| head`) is not an error worth a message.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            logging::say(format_args!("gossip-node: {}", one_line(&e)));
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
    if let Some(path) = &args.config {
        tracing::info!(config = %path.display(), "settings from a config file (flags and GOSSIP_* variables override it)");
    }
    let tls = credentials.tls.is_some();
    let mut seeds: Vec<String> = args
        .seeds
        .into_iter()
        .map(|s| with_scheme(s, tls))
        .collect();
    for seed in &seeds {
        gossip_roster::discovery::Seed::parse(seed).with_context(|| format!("--seed {seed}"))?;
    }
    for name in &args.seed_srv {
        let seed = format!("{}{name}", gossip_roster::discovery::SRV_SCHEME);
        gossip_roster::discovery::Seed::parse(&seed)
            .with_context(|| format!("--seed-srv {name}"))?;
        seeds.push(seed);
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
        advertise: args.advertise.map(|a| with_scheme(a, tls)),
        node_id: args.node_id.map(NodeId::new),
        actors: args.actors,
        tags,
        checks,
        seeds,
        dns_server: args.dns_server.map_or(DnsServer::System, DnsServer::At),
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
            indirect_checks: args.indirect_checks as usize,
            suspicion_mult: args.suspicion_mult,
            suspicion_max_mult: args.suspicion_max_mult,
            tombstone_ttl: Duration::from_secs(args.tombstone_ttl_s),
            stable_after: Duration::from_secs(args.stable_after_s),
            ..SwimConfig::default()
        },
        max_connections: args.max_connections as usize,
        http_listen: args.http_listen,
        downing: gossip_roster::machine::downing::DowningConfig {
            strategy: args.downing,
            stable_after: Duration::from_secs(args.downing_stable_after_s),
        },
        ..NodeConfig::default()
    };
    let fsync = config.store.wal.policy;
    let (node, info) = Node::start(config).await.map_err(|e| {
        // A bad setting or a busy port is not about the data dir: name it only when it is.
        let about_settings = matches!(
            e,
            gossip_roster::Error::Config(_) | gossip_roster::Error::Listen { .. }
        );
        let e = anyhow::Error::new(e);
        if about_settings {
            e.context("cannot start")
        } else {
            e.context(format!("cannot start on data dir {}", data_dir.display()))
        }
    })?;
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

impl Conn {
    /// The URL to dial: --connect with the scheme of our transport when it has none.
    fn url(&self) -> String {
        with_scheme(self.connect.clone(), self.tls.files().is_some())
    }

    /// The secret of --secret-file, if given (an unreadable file names the flag).
    fn secret(&self) -> Result<Option<gossip_roster::secrets::Secrets>> {
        self.secret_file
            .as_deref()
            .map(|path| {
                admin::read_secret(path)
                    .with_context(|| format!("--secret-file {}", path.display()))
            })
            .transpose()
    }
}

async fn ask(conn: &Conn, req: AdminRequest) -> Result<AdminReply> {
    let secret = conn.secret()?;
    let url = conn.url();
    admin::request(&url, secret, conn.tls.load()?, req)
        .await
        .with_context(|| format!("asking {url}"))
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
                actor: actor.clone(),
                tags,
                include_critical,
            };
            match ask(&conn, req).await? {
                AdminReply::Located(m) => members::print_focused(&m, json, false, Some(&actor)),
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
            let secret = conn.secret()?;
            let changed =
                admin::change_actors(&conn.url(), secret, conn.tls.load()?, names.clone(), add)
                    .await
                    .with_context(|| format!("asking {}", conn.url()))?;
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
        Command::Owner { conn, actors, json } => {
            for actor in &actors {
                gossip_roster::names::validate_actor_name(actor)
                    .with_context(|| format!("actor {actor:?}"))?;
            }
            let single = actors.len() == 1;
            match ask(&conn, AdminRequest::Owners { actors }).await? {
                AdminReply::Owners(owners) => {
                    if json {
                        let list: Vec<_> = owners
                            .iter()
                            .map(|(actor, owner)| serde_json::json!({ "actor": actor, "owner": owner }))
                            .collect();
                        if single {
                            println!("{}", list[0]);
                        } else {
                            println!("{}", serde_json::Value::Array(list));
                        }
                    } else {
                        for (actor, owner) in owners {
                            let who = owner.map_or_else(
                                || "(none: no host is up and not critical)".to_owned(),
                                |o| o.to_string(),
                            );
                            if single {
                                println!("{who}");
                            } else {
                                println!("{actor}\t{who}");
                            }
                        }
                    }
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
        Command::Config { .. } => unreachable!("config --print runs in main, before any runtime"),
        Command::DashboardToken { secret_file } => {
            let secrets = admin::read_secret(&secret_file)?;
            println!("{}", secrets.dashboard_token());
            Ok(())
        }
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
                    println!(
                        "quorum        {} ({} alive of the largest recent cluster, {})",
                        if s.in_majority {
                            "in the majority"
                        } else {
                            "NOT in the majority"
                        },
                        s.alive,
                        s.largest_cluster
                    );
                    // The same verdict /ready gives, in the same words.
                    println!(
                        "ready         {}",
                        gossip_roster::http::not_ready_reason(&s)
                            .map_or("yes".to_owned(), |why| format!("no: {why}"))
                    );
                    println!(
                        "health        awareness {} ({})",
                        s.awareness,
                        if s.awareness == 0 {
                            "healthy"
                        } else {
                            "slow: our own timeouts are stretched"
                        }
                    );
                    let flapping: Vec<String> = s
                        .flapping
                        .iter()
                        .map(|(id, flips)| format!("{id} ({flips} flips)"))
                        .collect();
                    println!(
                        "stability     {} stable, flapping: {}",
                        s.stable,
                        if flapping.is_empty() {
                            "none".to_owned()
                        } else {
                            flapping.join(", ")
                        }
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
