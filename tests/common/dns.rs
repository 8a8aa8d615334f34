//! A real DNS server for discovery tests: dnsmasq answering only from its command line (no
//! upstream, no /etc/hosts, no config file), killed on drop.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Whether dnsmasq is installed: `None` if it is, or why not.
pub fn dnsmasq_missing() -> Option<String> {
    let ok = Command::new("dnsmasq")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    (!ok).then(|| "needs dnsmasq (apt-get install dnsmasq-base; .ci/run does)".to_owned())
}

/// A test that cannot run here: fails if `GOSSIP_REQUIRE_NETNS=1` (CI sets it), else says
/// `SKIPPED: <test>: <why>` straight to stderr (past the harness's capture) and returns.
pub fn skip(test: &str, why: &str) {
    if std::env::var_os("GOSSIP_REQUIRE_NETNS").is_some_and(|v| v == "1") {
        panic!("{test} cannot run here ({why}) and GOSSIP_REQUIRE_NETNS=1 is set");
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {why}");
}

pub struct Dnsmasq {
    child: Child,
}

impl Dnsmasq {
    /// Starts dnsmasq through `cmd` (`dnsmasq`, or `ip netns exec NS dnsmasq`) on
    /// `ip:port`, with `records` as extra options (`--host-record=...`, `--srv-host=...`).
    /// Everything under `test` is answered locally (an empty answer, never a refusal).
    pub fn start(mut cmd: Command, ip: &str, port: u16, records: &[String], log: &Path) -> Dnsmasq {
        cmd.args([
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--keep-in-foreground",
            "--bind-interfaces",
            "--user=root",
            "--group=root",
            "--local=/test/",
            "--log-facility=-",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--listen-address={ip}"))
        .args(records);
        let file = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::from(file))
            .spawn()
            .expect("spawn dnsmasq");
        Dnsmasq { child }
    }

    /// Whether it is still running (it exits at once if it cannot bind).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
