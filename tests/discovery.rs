//! Seeds found through DNS, on loopback: a real DNS server (dnsmasq on 127.0.0.1 at a free
//! port, given to the nodes with `--dns-server`) answers a name with several addresses and
//! an SRV record with targets and ports. Nodes listen on distinct loopback addresses
//! (127.0.0.2, .3, ...) with one port, as pods behind a headless service do.
//!
//! Over TLS, an address found by name is verified against the name.
//!
//! Needs dnsmasq (`.ci/run` installs it). Without it the tests print `SKIPPED: <why>` and
//! pass, unless `GOSSIP_REQUIRE_NETNS=1` is set: then they fail.

mod common;
use common::dns::{dnsmasq_missing, skip, Dnsmasq};
use common::*;
use gossip_roster::discovery::{DnsServer, Found, Resolver, Seed};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;

/// A port free on 127.0.0.1 for UDP and TCP just now, below the ephemeral range (where
/// the other tests' outgoing connections take theirs). dnsmasq takes it next; a clash
/// makes it exit, and [`dns`] tries another.
fn free_port() -> u16 {
    use rand::Rng;
    loop {
        let port = rand::thread_rng().gen_range(20_000..32_000);
        if UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
}

/// dnsmasq on 127.0.0.1 with `records` (one must be `probe.test`), once it answers
/// (through our resolver).
fn dns(records: &[String], log: &Path) -> (Dnsmasq, SocketAddr) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let probe = [Seed::parse("ws://probe.test:1").unwrap()];
    for _ in 0..10 {
        let port = free_port();
        let mut server = Dnsmasq::start(
            std::process::Command::new("dnsmasq"),
            "127.0.0.1",
            port,
            records,
            log,
        );
        let at = SocketAddr::from(([127, 0, 0, 1], port));
        let mut answered = false;
        eventually("dnsmasq answers or exits", || {
            let mut r = Resolver::new(DnsServer::At(at));
            answered = !rt.block_on(r.resolve(&probe, false)).found.is_empty();
            answered || !server.running()
        });
        if answered {
            return (server, at);
        }
    }
    panic!(
        "dnsmasq never started: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_and_an_srv_record_resolve_to_every_address_and_port() {
    let test = "a_name_and_an_srv_record_resolve_to_every_address_and_port";
    if let Some(why) = dnsmasq_missing() {
        return skip(test, &why);
    }
    let scratch = tempfile::tempdir().unwrap();
    let records: Vec<String> = [
        "--host-record=probe.test,127.0.0.1",
        "--host-record=gossip.test,127.0.0.2",
        "--host-record=gossip.test,127.0.0.3",
        "--host-record=gossip.test,127.0.0.4",
        "--host-record=a.gossip.test,127.0.0.2",
        "--host-record=b.gossip.test,127.0.0.3",
        "--srv-host=_gossip._tcp.gossip.test,a.gossip.test,7101",
        "--srv-host=_gossip._tcp.gossip.test,b.gossip.test,7102",
    ]
    .map(String::from)
    .to_vec();
    let (_server, at) =
        tokio::task::block_in_place(|| dns(&records, &scratch.path().join("dnsmasq.log")));
    let seeds: Vec<Seed> = [
        "ws://gossip.test:7100",
        "dns+srv://_gossip._tcp.gossip.test",
        "ws://nowhere.gossip.test:7100",
        "ws://127.0.0.9:7100",
    ]
    .iter()
    .map(|s| Seed::parse(s).unwrap())
    .collect();
    let found = |addr: &str, name: &str| Found {
        addr: addr.into(),
        server_name: name.into(),
    };
    let mut r = Resolver::new(DnsServer::At(at));
    let out = r.resolve(&seeds, false).await;
    assert_eq!(
        out.found,
        [
            found("ws://127.0.0.2:7100", "gossip.test"),
            found("ws://127.0.0.2:7101", "a.gossip.test"),
            found("ws://127.0.0.3:7100", "gossip.test"),
            found("ws://127.0.0.3:7102", "b.gossip.test"),
            found("ws://127.0.0.4:7100", "gossip.test"),
        ]
    );
    // The name that does not resolve is named; the literal address needed no lookup.
    assert_eq!(out.failures.len(), 1, "{:?}", out.failures);
    assert_eq!(out.failures[0].0, "nowhere.gossip.test:7100");
    // With TLS, SRV targets are dialed as wss:// and verified against the target's name.
    let out = r.resolve(&seeds[1..2], true).await;
    assert_eq!(
        out.found,
        [
            found("wss://127.0.0.2:7101", "a.gossip.test"),
            found("wss://127.0.0.3:7102", "b.gossip.test"),
        ]
    );
}

fn start(dir: &Path, listen: &str, extra: &[&str]) -> NodeProc {
    let mut args = vec!["--listen", listen];
    args.extend(extra);
    NodeProc::start_net(dir, &args).unwrap_or_else(|log| panic!("{listen}:\n{log}"))
}

fn alive(addr: &str) -> usize {
    members(addr, &[]).map_or(0, |m| {
        id_states(&m).iter().filter(|(_, s)| s == "alive").count()
    })
}

#[test]
fn a_node_dials_every_address_of_its_seed_name_and_every_srv_target() {
    let test = "a_node_dials_every_address_of_its_seed_name_and_every_srv_target";
    if let Some(why) = dnsmasq_missing() {
        return skip(test, &why);
    }
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    // Two separate one-node clusters on one port, at .2 and .4.
    let a = start(dirs[0].path(), "127.0.0.2:0", &[]);
    let port = a.addr.rsplit_once(':').unwrap().1.to_owned();
    let c = start(dirs[1].path(), &format!("127.0.0.4:{port}"), &[]);
    let records: Vec<String> = vec![
        "--host-record=probe.test,127.0.0.1".into(),
        "--host-record=gossip.test,127.0.0.2".into(),
        "--host-record=gossip.test,127.0.0.3".into(),
        "--host-record=gossip.test,127.0.0.4".into(),
        "--host-record=a.gossip.test,127.0.0.2".into(),
        format!("--srv-host=_gossip._tcp.gossip.test,a.gossip.test,{port}"),
    ];
    let scratch = tempfile::tempdir().unwrap();
    let (_server, at) = dns(&records, &scratch.path().join("dnsmasq.log"));
    let dns_server = at.to_string();

    // B (at .3) knows only the name: it must dial both .2 and .4 (after joining one it
    // stops looking; the other would stay a cluster of its own) and so merge the two.
    let seed = format!("ws://gossip.test:{port}");
    let b = start(
        dirs[2].path(),
        &format!("127.0.0.3:{port}"),
        &["--seed", &seed, "--dns-server", &dns_server],
    );
    for n in [&a, &b, &c] {
        eventually(&format!("{} sees three alive", n.addr), || {
            alive(&n.addr) == 3
        });
    }

    // D knows only an SRV name, whose one target is a.
    let d = start(
        dirs[3].path(),
        "127.0.0.5:0",
        &[
            "--seed-srv",
            "_gossip._tcp.gossip.test",
            "--dns-server",
            &dns_server,
        ],
    );
    for n in [&a, &b, &c, &d] {
        eventually(&format!("{} sees four alive", n.addr), || {
            alive(&n.addr) == 4
        });
    }

    // E's only seed does not resolve: it says so, naming it, and keeps running.
    let mut e = start(
        dirs[4].path(),
        "127.0.0.6:0",
        &[
            "--seed",
            &format!("ws://nowhere.gossip.test:{port}"),
            "--dns-server",
            &dns_server,
        ],
    );
    // (It may come before the "node started" line that `start` waited for.)
    let early = e
        .lines
        .iter()
        .find(|l| l.contains("does not resolve"))
        .cloned();
    let warned = early
        .or_else(|| e.wait_for("does not resolve").ok())
        .expect("a WARN about the seed name");
    assert!(warned.contains("nowhere.gossip.test"), "{warned}");
    assert!(warned.contains("WARN"), "{warned}");
    assert_eq!(alive(&e.addr), 1, "E answers, alone");
    assert!(e.child.try_wait().unwrap().is_none(), "E keeps running");
    drop((a, b, c, d, e));
}

/// A CA and certificates for the given names (DNS names or IPs), written as PEM files.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new() -> Ca {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ca {
            cert: params.self_signed(&key).unwrap(),
            key,
        }
    }

    /// `--tls-cert`, `--tls-key` and `--tls-ca` arguments for a certificate naming `names`.
    fn issue(&self, dir: &Path, file: &str, names: &[&str]) -> Vec<String> {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.cert, &self.key)
            .unwrap();
        let paths = [
            dir.join(format!("{file}.crt")),
            dir.join(format!("{file}.key")),
            dir.join("ca.crt"),
        ];
        std::fs::write(&paths[0], cert.pem()).unwrap();
        std::fs::write(&paths[1], key.serialize_pem()).unwrap();
        std::fs::write(&paths[2], self.cert.pem()).unwrap();
        let p = |i: usize| paths[i].to_str().unwrap().to_owned();
        vec![
            "--tls-cert".into(),
            p(0),
            "--tls-key".into(),
            p(1),
            "--tls-ca".into(),
            p(2),
        ]
    }
}

#[test]
fn over_tls_an_address_found_by_name_is_verified_against_the_name() {
    let test = "over_tls_an_address_found_by_name_is_verified_against_the_name";
    if let Some(why) = dnsmasq_missing() {
        return skip(test, &why);
    }
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    // A's certificate names the service only, not its address: B can verify A only by the
    // name it resolved. B's names its address (A dials B back at its advertised address).
    let a_tls = ca.issue(certs.path(), "a", &["gossip.test"]);
    let b_tls = ca.issue(certs.path(), "b", &["127.0.0.3"]);
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a_args: Vec<&str> = a_tls.iter().map(String::as_str).collect();
    let a = start(dirs[0].path(), "127.0.0.2:0", &a_args);
    let port = a.addr.rsplit_once(':').unwrap().1.to_owned();
    let records: Vec<String> = vec![
        "--host-record=probe.test,127.0.0.1".into(),
        "--host-record=gossip.test,127.0.0.2".into(),
    ];
    let scratch = tempfile::tempdir().unwrap();
    let (_server, at) = dns(&records, &scratch.path().join("dnsmasq.log"));
    let seed = format!("wss://gossip.test:{port}");
    let dns_server = at.to_string();
    let mut b_args: Vec<&str> = b_tls.iter().map(String::as_str).collect();
    b_args.extend(["--seed", &seed, "--dns-server", &dns_server]);
    let b = start(dirs[1].path(), "127.0.0.3:0", &b_args);
    assert!(b.addr.starts_with("wss://127.0.0.3:"), "{}", b.addr);
    let admin_tls: Vec<&str> = b_tls.iter().map(String::as_str).collect();
    eventually("B lists A and itself alive over wss://", || {
        members(&b.addr, &admin_tls)
            .is_some_and(|m| id_states(&m).iter().filter(|(_, s)| s == "alive").count() == 2)
    });
    drop((a, b));
}
