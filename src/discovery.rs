//! Seed discovery through DNS. A seed given by name (`ws://NAME:PORT`) stands for every
//! address the name resolves to (all A and AAAA records: a Kubernetes headless service), and
//! an SRV seed (`dns+srv://_gossip._tcp.NAME`) for every target and port it lists. The
//! machine never resolves anything: [`run`] resolves here, in the driver's world, and hands
//! the addresses found to the machine ([`crate::machine::Machine::set_seeds`]).
//!
//! Names are resolved at start, then again every 5 s doubling to 30 s (with jitter) for as
//! long as the node knows no live peer; the delay starts over at 5 s whenever the node finds
//! itself alone again. A name that does not resolve is logged (WARN, once a minute per name
//! unless the reason changes) and retried on the same schedule; the node keeps running.
//!
//! With TLS, a seed found by name is dialed at its address but verified against the name
//! (the name, not the address, is what a certificate for a service holds).

use rand::Rng;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::{mpsc, watch};

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;

/// The scheme of an SRV seed: `dns+srv://_gossip._tcp.NAME`.
pub const SRV_SCHEME: &str = "dns+srv://";
/// First re-resolution delay while no live peer is known, and its cap.
pub const RESOLVE_EVERY_FIRST: Duration = Duration::from_secs(5);
pub const RESOLVE_EVERY_MAX: Duration = Duration::from_secs(30);
/// A failing name is logged at WARN at most this often (and whenever its reason changes).
const WARN_EVERY: Duration = Duration::from_secs(60);
/// Cached answers are kept no longer than this (re-resolution must see pods come and go).
const MAX_TTL: Duration = Duration::from_secs(5);

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DiscoveryError {
    #[error("{0:?}: not a seed (ws://HOST:PORT, wss://HOST:PORT or dns+srv://NAME)")]
    BadSeed(String),
    #[error("DNS configuration: {0}")]
    Config(String),
}

/// One seed as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seed {
    /// An address with an IP literal: used as given.
    Address(String),
    /// `ws://NAME:PORT` (or `wss://`): every address the name resolves to.
    Name {
        secure: bool,
        host: String,
        port: u16,
    },
    /// `dns+srv://NAME`: every target and port of the SRV record; the scheme follows the
    /// node's TLS setting.
    Srv { name: String },
}

impl Seed {
    /// Parses a configured seed. IP literals stay addresses; anything else is a name.
    pub fn parse(s: &str) -> Result<Seed, DiscoveryError> {
        let bad = || DiscoveryError::BadSeed(s.to_owned());
        if let Some(name) = s.strip_prefix(SRV_SCHEME) {
            let name = name.trim_end_matches('/');
            if name.is_empty() || name.contains(['/', ':']) {
                return Err(bad());
            }
            return Ok(Seed::Srv { name: name.into() });
        }
        let target = crate::transport::host_port(s).map_err(|_| bad())?;
        let (host, port) = target.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if bare.is_empty() {
            return Err(bad());
        }
        if bare.parse::<IpAddr>().is_ok() {
            return Ok(Seed::Address(s.trim_end_matches('/').to_owned()));
        }
        if host.starts_with('[') || bare.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(bad());
        }
        Ok(Seed::Name {
            secure: s.starts_with("wss://"),
            host: bare.to_owned(),
            port,
        })
    }

    /// Whether this seed must be resolved (a name or an SRV record).
    pub fn needs_resolution(&self) -> bool {
        !matches!(self, Seed::Address(_))
    }

    /// What logs call this seed.
    fn label(&self) -> String {
        match self {
            Seed::Address(a) => a.clone(),
            Seed::Name { host, port, .. } => format!("{host}:{port}"),
            Seed::Srv { name } => format!("{SRV_SCHEME}{name}"),
        }
    }
}

/// One address found: what the machine dials, and the name a TLS peer must prove.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    pub addr: String,
    pub server_name: String,
}

/// The URL of one resolved address: `ws://10.0.0.5:7100`, `wss://[fd00::5]:7100`.
pub fn address_url(secure: bool, ip: IpAddr, port: u16) -> String {
    let scheme = if secure { "wss" } else { "ws" };
    format!("{scheme}://{}", SocketAddr::new(ip, port))
}

/// Which DNS server answers: the system's (`/etc/resolv.conf`; under `ip netns exec NS`,
/// `/etc/netns/NS/resolv.conf`), or one given server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DnsServer {
    #[default]
    System,
    At(SocketAddr),
}

/// Resolves seeds; keeps one resolver (and its cache, capped at [`MAX_TTL`]).
pub struct Resolver {
    server: DnsServer,
    inner: Option<TokioResolver>,
}

/// What one round found, and what failed (name, reason).
#[derive(Debug, Default)]
pub struct Resolved {
    pub found: Vec<Found>,
    pub failures: Vec<(String, String)>,
}

impl Resolver {
    pub fn new(server: DnsServer) -> Resolver {
        Resolver {
            server,
            inner: None,
        }
    }

    /// The resolver, built on first use (and again after a failure to read the system
    /// configuration: /etc/resolv.conf may appear later).
    fn resolver(&mut self) -> Result<&TokioResolver, DiscoveryError> {
        if self.inner.is_none() {
            let provider = TokioRuntimeProvider::default();
            let mut builder = match self.server {
                DnsServer::System => TokioResolver::builder(provider)
                    .map_err(|e| DiscoveryError::Config(format!("/etc/resolv.conf: {e}")))?,
                DnsServer::At(at) => {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = at.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = at.port();
                    let ns = NameServerConfig::new(at.ip(), true, vec![udp, tcp]);
                    TokioResolver::builder_with_config(
                        ResolverConfig::from_name_servers(vec![ns]),
                        provider,
                    )
                }
            };
            let opts = builder.options_mut();
            opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
            opts.positive_max_ttl = Some(MAX_TTL);
            opts.negative_max_ttl = Some(MAX_TTL);
            opts.timeout = Duration::from_secs(2);
            let built = builder
                .build()
                .map_err(|e| DiscoveryError::Config(e.to_string()))?;
            self.inner = Some(built);
        }
        Ok(self.inner.as_ref().expect("built above"))
    }

    /// Resolves every seed that needs it; `tls` picks the scheme of SRV seeds.
    pub async fn resolve(&mut self, seeds: &[Seed], tls: bool) -> Resolved {
        let mut out = Resolved::default();
        let resolver = match self.resolver() {
            Ok(r) => r.clone(),
            Err(e) => {
                for s in seeds.iter().filter(|s| s.needs_resolution()) {
                    out.failures.push((s.label(), e.to_string()));
                }
                return out;
            }
        };
        for seed in seeds {
            match seed {
                Seed::Address(_) => {}
                Seed::Name { secure, host, port } => match lookup_ips(&resolver, host).await {
                    Ok(ips) => out.found.extend(ips.into_iter().map(|ip| Found {
                        addr: address_url(*secure, ip, *port),
                        server_name: host.clone(),
                    })),
                    Err(reason) => out.failures.push((seed.label(), reason)),
                },
                Seed::Srv { name } => match resolver.srv_lookup(name.as_str()).await {
                    Ok(lookup) => {
                        let targets: Vec<(String, u16)> = lookup
                            .answers()
                            .iter()
                            .filter_map(|r| match &r.data {
                                RData::SRV(srv) => Some((
                                    srv.target.to_utf8().trim_end_matches('.').to_owned(),
                                    srv.port,
                                )),
                                _ => None,
                            })
                            .collect();
                        if targets.is_empty() {
                            out.failures
                                .push((seed.label(), "no SRV records".to_owned()));
                        }
                        for (target, port) in targets {
                            match lookup_ips(&resolver, &target).await {
                                Ok(ips) => out.found.extend(ips.into_iter().map(|ip| Found {
                                    addr: address_url(tls, ip, port),
                                    server_name: target.clone(),
                                })),
                                Err(reason) => out
                                    .failures
                                    .push((format!("{} (target {target})", seed.label()), reason)),
                            }
                        }
                    }
                    Err(e) => out.failures.push((seed.label(), reason(&e))),
                },
            }
        }
        out.found.sort();
        out.found.dedup_by(|a, b| a.addr == b.addr);
        out
    }
}

async fn lookup_ips(resolver: &TokioResolver, host: &str) -> Result<Vec<IpAddr>, String> {
    let ips: Vec<IpAddr> = resolver
        .lookup_ip(host)
        .await
        .map_err(|e| reason(&e))?
        .into_iter()
        .collect();
    if ips.is_empty() {
        return Err("no A or AAAA records".into());
    }
    Ok(ips)
}

/// A lookup error in one line ("no records" is worded plainly: its own text is a dump).
fn reason(e: &hickory_resolver::net::NetError) -> String {
    if e.is_no_records_found() {
        "no such name, or no records of that type".to_owned()
    } else {
        e.to_string()
    }
}

/// Logs failing names at WARN at most once a minute each (or when the reason changes), and
/// once at INFO when a failing name resolves again.
#[derive(Default)]
struct FailureLog {
    last: HashMap<String, (Instant, String)>,
}

impl FailureLog {
    fn report(&mut self, resolved: &Resolved, seeds: &[Seed]) {
        let now = Instant::now();
        for (name, reason) in &resolved.failures {
            let due = self
                .last
                .get(name)
                .is_none_or(|(at, r)| r != reason || now.duration_since(*at) >= WARN_EVERY);
            if due {
                tracing::warn!(seed = %name, %reason, "a seed name does not resolve; retrying");
                self.last.insert(name.clone(), (now, reason.clone()));
            } else {
                tracing::debug!(seed = %name, %reason, "a seed name still does not resolve");
            }
        }
        for seed in seeds {
            let label = seed.label();
            let failing = resolved
                .failures
                .iter()
                .any(|(n, _)| *n == label || n.starts_with(&format!("{label} ")));
            if !failing && self.last.remove(&label).is_some() {
                tracing::info!(seed = %label, "a seed name resolves again");
            }
        }
    }
}

/// Where discovery reports: the addresses found (for the machine) and the TLS names of
/// those addresses (for the dialer).
pub(crate) struct Sink {
    pub(crate) found: mpsc::Sender<crate::peers::Input>,
    pub(crate) names: Arc<std::sync::Mutex<HashMap<String, String>>>,
}

/// Resolves `seeds` now, then again on the schedule in the module doc while `wanted` says
/// the node needs seeds; ends when `cancel` fires.
pub(crate) async fn run(
    seeds: Vec<Seed>,
    tls: bool,
    server: DnsServer,
    mut wanted: watch::Receiver<bool>,
    sink: Sink,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut resolver = Resolver::new(server);
    let mut log = FailureLog::default();
    let mut delay = RESOLVE_EVERY_FIRST;
    loop {
        let resolved = resolver.resolve(&seeds, tls).await;
        log.report(&resolved, &seeds);
        tracing::debug!(found = resolved.found.len(), "seeds resolved");
        if let Ok(mut names) = sink.names.lock() {
            *names = resolved
                .found
                .iter()
                .map(|f| (f.addr.clone(), f.server_name.clone()))
                .collect();
        }
        let addrs = resolved.found.into_iter().map(|f| f.addr).collect();
        if sink
            .found
            .send(crate::peers::Input::Discovered(addrs))
            .await
            .is_err()
        {
            return;
        }
        let pause = delay.mul_f64(rand::thread_rng().gen_range(0.8..1.2));
        delay = (delay * 2).min(RESOLVE_EVERY_MAX);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        // Known peers: nothing to resolve until the node is alone again (then start over).
        if !*wanted.borrow_and_update() {
            delay = RESOLVE_EVERY_FIRST;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    changed = wanted.changed() => if changed.is_err() { return },
                }
                if *wanted.borrow_and_update() {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_into_addresses_names_and_srv_records() {
        assert_eq!(
            Seed::parse("ws://10.0.0.1:7100").unwrap(),
            Seed::Address("ws://10.0.0.1:7100".into())
        );
        assert_eq!(
            Seed::parse("wss://[fd00::1]:7100/").unwrap(),
            Seed::Address("wss://[fd00::1]:7100".into())
        );
        assert_eq!(
            Seed::parse("ws://gossip.default.svc.cluster.local:7100").unwrap(),
            Seed::Name {
                secure: false,
                host: "gossip.default.svc.cluster.local".into(),
                port: 7100
            }
        );
        assert_eq!(
            Seed::parse("dns+srv://_gossip._tcp.gossip.test").unwrap(),
            Seed::Srv {
                name: "_gossip._tcp.gossip.test".into()
            }
        );
        for bad in [
            "gossip.test:7100",
            "ws://gossip.test",
            "ws://gossip.test:port",
            "ws://:7100",
            "ws://gossip.test:70000",
            "dns+srv://",
            "dns+srv://name:7100",
            "http://gossip.test:7100",
        ] {
            assert_eq!(
                Seed::parse(bad),
                Err(DiscoveryError::BadSeed(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn resolved_addresses_become_urls_with_brackets_for_ipv6() {
        assert_eq!(
            address_url(false, "10.0.0.5".parse().unwrap(), 7100),
            "ws://10.0.0.5:7100"
        );
        assert_eq!(
            address_url(true, "fd00::5".parse().unwrap(), 7100),
            "wss://[fd00::5]:7100"
        );
    }

    #[tokio::test]
    async fn a_name_nobody_answers_for_is_a_failure_with_its_name_not_a_hang() {
        // A DNS server address where nothing listens: the lookup fails within its timeout.
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Resolver::new(DnsServer::At(SocketAddr::from(([127, 0, 0, 1], port))));
        let seeds = [Seed::parse("ws://gossip.invalid:7100").unwrap()];
        let out = r.resolve(&seeds, false).await;
        assert!(out.found.is_empty());
        assert_eq!(out.failures.len(), 1);
        assert_eq!(out.failures[0].0, "gossip.invalid:7100");
    }
}
