//! A real network partition: five `gossip-node` processes, each in a network namespace this
//! test creates, on two bridges joined by one link. Cutting the link splits 3 from 2; the
//! minority must say it is not in the majority; after healing every roster is the same.
//!
//! Needs root and `ip netns` (skipped, with a message, where unavailable). All addresses are
//! inside the namespaces (10.77.0.0/24); nothing leaves this machine.

mod common;
use common::*;
use serde_json::Value;
use std::process::Command;

struct Net {
    prefix: String,
    names: Vec<String>,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

impl Net {
    /// hub namespace with bridges `a` (nodes 0..3) and `b` (nodes 3..5), joined by a veth.
    fn create(n: usize, split: usize) -> Option<Net> {
        let prefix = format!("gr{}", std::process::id() % 100_000);
        let hub = format!("{prefix}hub");
        if !ip(&["netns", "add", &hub]) {
            return None;
        }
        let mut net = Net {
            prefix: prefix.clone(),
            names: vec![hub.clone()],
        };
        let ok = ip(&[
            "netns", "exec", &hub, "ip", "link", "add", "bra", "type", "bridge",
        ]) && ip(&[
            "netns", "exec", &hub, "ip", "link", "add", "brb", "type", "bridge",
        ]) && ip(&[
            "netns", "exec", &hub, "ip", "link", "add", "cut-a", "type", "veth", "peer", "name",
            "cut-b",
        ]) && ip(&[
            "netns", "exec", &hub, "ip", "link", "set", "cut-a", "master", "bra",
        ]) && ip(&[
            "netns", "exec", &hub, "ip", "link", "set", "cut-b", "master", "brb",
        ]) && ["bra", "brb", "cut-a", "cut-b"]
            .iter()
            .all(|l| ip(&["netns", "exec", &hub, "ip", "link", "set", l, "up"]));
        if !ok {
            return None;
        }
        for i in 0..n {
            let ns = format!("{prefix}n{i}");
            let (h, inner) = (format!("{prefix}h{i}"), format!("{prefix}v{i}"));
            let bridge = if i < split { "bra" } else { "brb" };
            let addr = format!("10.77.0.{}/24", i + 1);
            net.names.push(ns.clone());
            let ok = ip(&["netns", "add", &ns])
                && ip(&["link", "add", &h, "type", "veth", "peer", "name", &inner])
                && ip(&["link", "set", &h, "netns", &hub])
                && ip(&["link", "set", &inner, "netns", &ns])
                && ip(&[
                    "netns", "exec", &hub, "ip", "link", "set", &h, "master", bridge,
                ])
                && ip(&["netns", "exec", &hub, "ip", "link", "set", &h, "up"])
                && ip(&[
                    "netns", "exec", &ns, "ip", "addr", "add", &addr, "dev", &inner,
                ])
                && ip(&["netns", "exec", &ns, "ip", "link", "set", &inner, "up"])
                && ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
            if !ok {
                return None;
            }
        }
        Some(net)
    }

    fn node_ns(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }

    fn link(&self, up: bool) {
        let hub = &self.names[0];
        assert!(ip(&[
            "netns",
            "exec",
            hub,
            "ip",
            "link",
            "set",
            "cut-a",
            if up { "up" } else { "down" }
        ]));
    }

    /// `gossip-node <args>` run inside node `i`'s namespace.
    fn admin(&self, i: usize, args: &[&str]) -> Option<Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.node_ns(i), NODE])
            .args(args)
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.names.iter().rev() {
            ip(&["netns", "del", ns]);
        }
    }
}

fn addr(i: usize) -> String {
    format!("ws://10.77.0.{}:7000", i + 1)
}

#[test]
fn a_partitioned_minority_knows_it_and_the_healed_cluster_agrees() {
    let (n, split) = (5, 3);
    let Some(net) = Net::create(n, split) else {
        eprintln!("SKIPPED: cannot create network namespaces here (needs root and `ip netns`)");
        return;
    };
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let mut cmd = Command::new("ip");
        let listen = format!("10.77.0.{}:7000", i + 1);
        let id = format!("p{i}");
        cmd.args(["netns", "exec", &net.node_ns(i), NODE, "--data-dir"])
            .arg(dir.path())
            .args(["--listen", &listen, "--node-id", &id]);
        if i > 0 {
            cmd.args(["--seed", &addr(0)]);
        }
        nodes.push(NodeProc::spawn(cmd).unwrap_or_else(|log| panic!("p{i}:\n{log}")));
    }
    let status = |i: usize| net.admin(i, &["status", "--connect", &addr(i), "--json"]);
    for i in 0..n {
        eventually("everyone sees five alive", || {
            status(i).is_some_and(|s| s["alive"] == 5)
        });
    }

    net.link(false);
    for i in split..n {
        eventually(&format!("p{i} knows it is in the minority"), || {
            status(i).is_some_and(|s| {
                s["in_majority"] == false && s["alive"] == 2 && s["largest_cluster"] == 5
            })
        });
    }
    for i in 0..split {
        eventually(&format!("p{i} stays in the majority"), || {
            status(i).is_some_and(|s| s["in_majority"] == true && s["dead"] == 2)
        });
    }

    net.link(true);
    for i in 0..n {
        eventually(&format!("p{i} sees all five alive again"), || {
            status(i).is_some_and(|s| s["alive"] == 5 && s["in_majority"] == true)
        });
    }
    let views: Vec<_> = (0..n)
        .map(|i| {
            id_states(
                &net.admin(i, &["members", "--connect", &addr(i), "--json"])
                    .unwrap(),
            )
        })
        .collect();
    assert_same_views(&views);
    drop(nodes);
}
