//! The admin interface at any size, with real `gossip-node` processes on 127.0.0.1 (free
//! ports; killed when the test ends, even on a panic): 100,000 actors registered on one node
//! in one `actors add` call; `members --json` and `locate` on it answer with all of them;
//! a node that joins lists them all too. Also: replies and records past the 1 MiB frame cap
//! (a few thousand long actor names), and one call of 20,000 names answering in time.
//!
//! The tests of this file run one at a time (they are CPU-heavy on a two-core machine, and
//! one of them checks that a call answers before the client's timeout).

mod common;
use common::*;
use serde_json::Value;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The outcome of an admin command run with a bound.
struct Run {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `gossip-node <args>`, killing it after `limit` (a bound against hangs: the client
/// has its own reply timeout). `Err` when it could not be started at all (e.g. E2BIG).
fn run(args: &[&str], limit: Duration) -> std::io::Result<Run> {
    let start = Instant::now();
    let mut child = Command::new(NODE)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Run {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        took: start.elapsed(),
    })
}

impl Run {
    fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// One line saying how it went (the error, not the output).
    fn summary(&self) -> String {
        let outcome = match self.status {
            None => "still running, killed".to_owned(),
            Some(st) => st.to_string(),
        };
        format!(
            "{outcome} after {:.1} s; stdout {} bytes; stderr: {}",
            self.took.as_secs_f64(),
            self.stdout.len(),
            self.stderr.trim()
        )
    }
}

fn start(dir: &std::path::Path, id: &str, extra: &[&str]) -> NodeProc {
    let mut args = vec!["--node-id", id];
    args.extend(extra);
    NodeProc::start_net(dir, &args).unwrap_or_else(|log| panic!("{id} did not start:\n{log}"))
}

/// The actors `members --json` of `addr` lists on `id`, or what went wrong.
fn actors_on(addr: &str, id: &str) -> Result<Vec<String>, String> {
    let r = run(&["members", "--connect", addr, "--json"], LIMIT).unwrap();
    if !r.ok() {
        return Err(format!("members --json on {addr}: {}", r.summary()));
    }
    let v: Value = serde_json::from_str(&r.stdout).map_err(|e| format!("not JSON: {e}"))?;
    let m = v
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .ok_or_else(|| format!("{addr} does not list {id}"))?;
    Ok(m["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect())
}

/// `locate ACTOR --json` on `addr`: the ids of the hosts, or what went wrong.
fn locate(addr: &str, actor: &str) -> Result<Vec<String>, String> {
    let r = run(&["locate", "--connect", addr, actor, "--json"], LIMIT).unwrap();
    if !r.ok() {
        return Err(format!("locate {actor} on {addr}: {}", r.summary()));
    }
    let v: Value = serde_json::from_str(&r.stdout).map_err(|e| format!("not JSON: {e}"))?;
    Ok(v.as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect())
}

/// Bound on any one admin command (the client gives up on a reply after 30 s itself).
const LIMIT: Duration = Duration::from_secs(90);

/// Polls until `id` has exactly `want` actors on `addr` or `limit` passes; the last
/// observation as the error.
fn wait_for_actors(addr: &str, id: &str, want: &[String], limit: Duration) -> Result<(), String> {
    let start = Instant::now();
    let mut want: Vec<&str> = want.iter().map(String::as_str).collect();
    want.sort_unstable();
    loop {
        let seen = match actors_on(addr, id) {
            Ok(mut actors) => {
                actors.sort_unstable();
                if actors == want {
                    println!(
                        "{addr} lists the {} actors of {id} after {:.1} s",
                        want.len(),
                        start.elapsed().as_secs_f64()
                    );
                    return Ok(());
                }
                format!("{} of {} actors of {id}", actors.len(), want.len())
            }
            Err(e) => e,
        };
        if start.elapsed() > limit {
            return Err(format!(
                "after {:.0} s, {addr} answers: {seen}",
                start.elapsed().as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Registers `names` on `addr` in one `actors add` call; the failure if it did not answer
/// with success and an `added` line per name.
fn add_in_one_call(addr: &str, names: &[String]) -> Result<Run, String> {
    let mut args = vec!["actors", "add", "--connect", addr];
    args.extend(names.iter().map(String::as_str));
    let r = run(&args, LIMIT).map_err(|e| format!("could not run the client: {e}"))?;
    println!(
        "actors add of {} names in one call: {}",
        names.len(),
        r.summary()
    );
    let added = r.stdout.lines().filter(|l| l.starts_with("added ")).count();
    if !r.ok() || added != names.len() {
        return Err(format!(
            "one call of {} names: {added} `added` lines; {}",
            names.len(),
            r.summary()
        ));
    }
    Ok(r)
}

#[test]
fn one_call_of_20000_actors_answers_with_success() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), "s1", &[]);
    let names: Vec<String> = (0..20_000).map(|i| format!("actor{i:05}")).collect();
    let result = add_in_one_call(&node.addr, &names);
    drop(node);
    result.unwrap();
}

#[test]
fn a_node_with_100000_actors_answers_members_and_locate_and_a_joiner_lists_them_all() {
    let _serial = serial();
    const N: usize = 100_000;
    // 10 bytes each: 100,000 of them fit in one command line (about 1.9 MB with the
    // pointers, under Linux's 2 MB for an 8 MB stack).
    let names: Vec<String> = (0..N).map(|i| format!("actor{i:05}")).collect();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let s1 = start(dirs[0].path(), "s1", &[]);
    let mut failures: Vec<String> = Vec::new();

    // Registration: one call of 100,000 names (several of 20,000 if the command line
    // cannot hold them; that is the client's limit, not the node's).
    let start_at = Instant::now();
    match add_in_one_call(&s1.addr, &names) {
        Ok(_) => {}
        Err(e) if e.contains("could not run the client") => {
            println!("{e}; registering in calls of 20,000 instead");
            for chunk in names.chunks(20_000) {
                if let Err(e) = add_in_one_call(&s1.addr, chunk) {
                    failures.push(e);
                }
            }
        }
        // A reply that did not come in time: the node may still be at it (waited for below).
        Err(e) if e.contains("timed out") || e.contains("still running") => failures.push(e),
        // Refused or dropped: nothing will come of it.
        Err(e) => {
            drop(s1);
            panic!("{e}");
        }
    }
    // Whatever the calls answered, the node must end up with all of them (bounded).
    let left = Duration::from_secs(60).saturating_sub(start_at.elapsed());
    if let Err(e) = wait_for_actors(&s1.addr, "s1", &names, left) {
        failures.push(format!("registration of {N} actors: {e}"));
        drop(s1);
        panic!("{failures:#?}");
    }

    // members --json and locate on the node itself.
    match actors_on(&s1.addr, "s1") {
        Ok(a) if a.len() == N => {}
        Ok(a) => failures.push(format!("members --json lists {} actors on s1", a.len())),
        Err(e) => failures.push(e),
    }
    for actor in ["actor00000", "actor54321", "actor99999"] {
        match locate(&s1.addr, actor) {
            Ok(hosts) if hosts == ["s1"] => {}
            Ok(hosts) => failures.push(format!("locate {actor}: {hosts:?}, not [s1]")),
            Err(e) => failures.push(e),
        }
    }

    // A node that joins lists them all.
    let s2 = start(dirs[1].path(), "s2", &["--seed", &s1.addr]);
    if let Err(e) = wait_for_actors(&s2.addr, "s1", &names, Duration::from_secs(60)) {
        failures.push(format!("the joined node s2: {e}"));
    }
    match locate(&s2.addr, "actor54321") {
        Ok(hosts) if hosts == ["s1"] => {}
        Ok(hosts) => failures.push(format!("locate actor54321 on s2: {hosts:?}, not [s1]")),
        Err(e) => failures.push(e),
    }
    drop((s1, s2));
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The same limits reached with few actors: 2,000 names of 600 bytes make a record (and a
/// `members` reply) of about 1.2 MB, past the default 1 MiB frame cap.
#[test]
fn members_locate_and_a_joiner_work_past_one_mebibyte_of_actor_names() {
    let _serial = serial();
    const N: usize = 2000;
    let pad = "p".repeat(590);
    let names: Vec<String> = (0..N).map(|i| format!("{pad}-{i:05}")).collect();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let s1 = start(dirs[0].path(), "s1", &[]);
    let mut failures: Vec<String> = Vec::new();
    for chunk in names.chunks(200) {
        add_in_one_call(&s1.addr, chunk).unwrap();
    }
    match actors_on(&s1.addr, "s1") {
        Ok(a) if a.len() == N => println!("members --json on s1 lists the {N} actors"),
        Ok(a) => failures.push(format!("members --json lists {} actors on s1", a.len())),
        Err(e) => failures.push(e),
    }
    let short = |e: String| e.replace(&pad, "p..p");
    match locate(&s1.addr, &names[N / 2]) {
        Ok(hosts) if hosts == ["s1"] => println!("locate on s1 answers [s1]"),
        Ok(hosts) => failures.push(format!("locate on s1: {hosts:?}, not [s1]")),
        Err(e) => failures.push(short(e)),
    }
    let s2 = start(dirs[1].path(), "s2", &["--seed", &s1.addr]);
    if let Err(e) = wait_for_actors(&s2.addr, "s1", &names, Duration::from_secs(30)) {
        failures.push(format!("the joined node s2: {e}"));
    }
    match locate(&s2.addr, &names[N / 2]) {
        Ok(hosts) if hosts == ["s1"] => println!("locate on s2 answers [s1]"),
        Ok(hosts) => failures.push(format!("locate on s2: {hosts:?}, not [s1]")),
        Err(e) => failures.push(short(e)),
    }
    drop((s1, s2));
    assert!(failures.is_empty(), "{failures:#?}");
}
