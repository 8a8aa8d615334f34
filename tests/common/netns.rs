//! Hosts in network namespaces, for tests that run nodes as if on separate machines: a hub
//! namespace holding bridges, and one namespace per host wired to a bridge by a veth pair.
//! Names carry a tag, the test's pid and a count (parallel runs, parallel tests of one
//! binary and leftovers do not clash); every
//! namespace, stray veth and `/etc/netns` file is removed on drop, also when the test fails.
//! All addresses live inside the namespaces; nothing leaves this machine.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// Runs `ip ARGS`; whether it succeeded.
pub fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `ip ARGS`; on failure, says which command failed and why.
pub fn ip_or(args: &[&str]) -> Result<(), String> {
    match Command::new("ip").args(args).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run `ip {}`: {e}", args.join(" "))),
    }
}

/// Whether namespaces can be made here: `None` if they can, or why not.
pub fn cannot_run() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok().and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse::<u32>()
            .ok()
    });
    if uid != Some(0) {
        return Some(format!(
            "needs root to create network namespaces (uid {uid:?})"
        ));
    }
    if let Err(e) = ip_or(&["netns", "list"]) {
        return Some(format!("needs `ip netns`: {e}"));
    }
    None
}

pub struct Net {
    prefix: String,
    /// Namespaces created, the hub first.
    names: Vec<String>,
    /// A veth created in the root namespace and not yet moved into the hub.
    root_links: Vec<String>,
    /// `/etc/netns/<ns>` folders written.
    etc: Vec<PathBuf>,
}

impl Net {
    /// An empty network: the hub namespace only. `tag` (a few letters) names the test;
    /// the pid and a count keep networks of parallel tests (one process or many) apart.
    pub fn new(tag: &str) -> Result<Net, String> {
        static NETS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let k = NETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10;
        let prefix = format!("{tag}{}{k}", std::process::id() % 100_000);
        let hub = format!("{prefix}hub");
        ip_or(&["netns", "add", &hub])?;
        Ok(Net {
            prefix,
            names: vec![hub],
            root_links: Vec::new(),
            etc: Vec::new(),
        })
    }

    pub fn hub(&self) -> &str {
        &self.names[0]
    }

    /// `ip ARGS` inside the hub.
    pub fn in_hub(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["netns", "exec", self.hub(), "ip"];
        all.extend(args);
        ip_or(&all)
    }

    /// A bridge in the hub, up, with `cidr` as the hub's own address on it if given.
    pub fn add_bridge(&self, name: &str, cidr: Option<&str>) -> Result<(), String> {
        self.in_hub(&["link", "add", name, "type", "bridge"])?;
        if let Some(cidr) = cidr {
            self.in_hub(&["addr", "add", cidr, "dev", name])?;
        }
        self.in_hub(&["link", "set", name, "up"])?;
        self.in_hub(&["link", "set", "lo", "up"])
    }

    /// Host `i`: its own namespace, with address `cidr` on a veth whose other end
    /// ([`Net::host_link`]) is on `bridge` in the hub.
    pub fn add_host(&mut self, i: usize, bridge: &str, cidr: &str) -> Result<(), String> {
        let ns = self.host_ns(i);
        let (outer, inner) = (self.host_link(i), format!("{}v{i}", self.prefix));
        ip_or(&["netns", "add", &ns])?;
        self.names.push(ns.clone());
        ip_or(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ])?;
        self.root_links.push(outer.clone());
        ip_or(&["link", "set", &inner, "netns", &ns])?;
        ip_or(&["link", "set", &outer, "netns", self.hub()])?;
        self.root_links.pop();
        self.in_hub(&["link", "set", &outer, "master", bridge])?;
        self.in_hub(&["link", "set", &outer, "up"])?;
        for args in [
            &["addr", "add", cidr, "dev", &inner][..],
            &["link", "set", &inner, "up"],
            &["link", "set", "lo", "up"],
        ] {
            let mut all = vec!["netns", "exec", ns.as_str(), "ip"];
            all.extend(args);
            ip_or(&all)?;
        }
        Ok(())
    }

    pub fn host_ns(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }

    /// The hub's end of host `i`'s veth: setting it down cuts the host off.
    pub fn host_link(&self, i: usize) -> String {
        format!("{}h{i}", self.prefix)
    }

    /// Sets a link in the hub up or down.
    pub fn set_link(&self, link: &str, up: bool) {
        self.in_hub(&["link", "set", link, if up { "up" } else { "down" }])
            .unwrap();
    }

    /// Host `i` resolves names through `nameserver`: `ip netns exec` mounts
    /// `/etc/netns/<ns>/resolv.conf` over `/etc/resolv.conf`.
    pub fn set_resolver(&mut self, i: usize, nameserver: &str) -> Result<(), String> {
        let dir = PathBuf::from("/etc/netns").join(self.host_ns(i));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        self.etc.push(dir.clone());
        let file = dir.join("resolv.conf");
        std::fs::write(&file, format!("nameserver {nameserver}\n"))
            .map_err(|e| format!("{}: {e}", file.display()))
    }

    /// `program` run inside the hub (`None`) or host `i`'s namespace.
    pub fn command(&self, host: Option<usize>, program: &str) -> Command {
        let ns = host.map_or_else(|| self.hub().to_owned(), |i| self.host_ns(i));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns, program]);
        cmd
    }

    /// `gossip-node ARGS` (an admin subcommand) run inside host `i`: its output as JSON, or
    /// `None` if it failed or printed no JSON.
    pub fn admin(&self, i: usize, args: &[&str]) -> Option<Value> {
        let out = self
            .command(Some(i), super::NODE)
            .args(args)
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }
}

impl Net {
    /// GET `http://{at}{path}` from inside host `i` (a thread that joins its namespace):
    /// the status code and body, `None` if nothing answered.
    pub fn http_get(&self, i: usize, at: &str, path: &str) -> Option<(u16, String)> {
        let file = PathBuf::from("/run/netns").join(self.host_ns(i));
        let (at, path) = (at.to_owned(), path.to_owned());
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let ns = std::fs::File::open(&file).unwrap();
            // SAFETY: setns on a valid namespace fd; it changes this thread only.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "setns {}: {}",
                file.display(),
                std::io::Error::last_os_error()
            );
            super::http_get(&at, &path)
        })
        .join()
        .unwrap()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for link in &self.root_links {
            ip(&["link", "del", link]);
        }
        for ns in self.names.iter().rev() {
            ip(&["netns", "del", ns]);
        }
        for dir in &self.etc {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
