//! Tags and actor health against real processes: tags set at start and by the CLI, seen by
//! another node and filtering `locate`; a check command whose exit code moves an actor
//! between passing, warning and critical as another node sees it; bad input refused.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use tempfile::TempDir;

fn member<'a>(roster: &'a Value, id: &str) -> Option<&'a Value> {
    roster.as_array()?.iter().find(|m| m["id"] == id)
}

/// The tags of `id` as `node` sees them (`None` until it lists `id`).
fn tags_seen(node: &NodeProc, id: &str) -> Option<Value> {
    let m = members(&node.addr, &[])?;
    member(&m, id).map(|m| m["tags"].clone())
}

/// `(status, note)` of `actor` on `id` as `node` sees it.
fn health_seen(node: &NodeProc, id: &str, actor: &str) -> Option<(String, String)> {
    let m = members(&node.addr, &[])?;
    let h = &member(&m, id)?["health"][actor];
    Some((
        h["status"].as_str()?.to_owned(),
        h["note"].as_str()?.to_owned(),
    ))
}

/// Ids `locate` on `node` returns, in order.
fn locate(node: &NodeProc, actor: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["locate", "--connect", &node.addr, actor, "--json"];
    args.extend(extra);
    let out = admin(&args);
    assert!(out.status.success(), "locate: {}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

fn start(dir: &Path, args: &[&str]) -> NodeProc {
    NodeProc::start_net(dir, args).expect("node starts")
}

#[test]
fn tags_set_at_start_and_by_the_cli_are_seen_elsewhere_and_filter_locate() {
    let dirs: Vec<TempDir> = (0..2).map(|_| TempDir::new().unwrap()).collect();
    let a = start(
        dirs[0].path(),
        &[
            "--node-id",
            "a",
            "--actor",
            "svc",
            "--tag",
            "zone=eu",
            "--tag",
            "tier=gold",
        ],
    );
    let b = start(
        dirs[1].path(),
        &[
            "--node-id",
            "b",
            "--actor",
            "svc",
            "--tag",
            "zone=us",
            "--seed",
            &a.addr,
        ],
    );
    eventually("b sees a's start-up tags", || {
        tags_seen(&b, "a") == Some(serde_json::json!({"tier": "gold", "zone": "eu"}))
    });

    let out = admin(&["tags", "set", "--connect", &a.addr, "zone=us", "rack=r1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "set rack\nset zone\n");
    let out = admin(&["tags", "unset", "--connect", &a.addr, "tier", "absent"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "unset tier\n");
    eventually("b sees a's new tags", || {
        tags_seen(&b, "a") == Some(serde_json::json!({"rack": "r1", "zone": "us"}))
    });

    assert_eq!(locate(&b, "svc", &["--tag", "zone=us"]), ["a", "b"]);
    assert_eq!(
        locate(&b, "svc", &["--tag", "zone=us", "--tag", "rack=r1"]),
        ["a"]
    );
    assert!(locate(&b, "svc", &["--tag", "zone=eu"]).is_empty());
    assert!(locate(&b, "svc", &["--tag", "rack=r2"]).is_empty());

    let out = admin(&["members", "--connect", &b.addr]);
    let text = stdout(&out);
    assert!(
        text.contains("TAGS") && text.contains("rack=r1,zone=us"),
        "{text}"
    );

    // Refused with a clear error, nothing changed.
    let long_value = format!("k={}", "v".repeat(1025));
    let too_many: Vec<String> = (0..65).map(|i| format!("k{i}=x")).collect();
    let mut many_args = vec!["tags", "set", "--connect", &a.addr];
    many_args.extend(too_many.iter().map(String::as_str));
    for (args, why) in [
        (
            vec!["tags", "set", "--connect", &a.addr, "bad key=v"],
            "keys use only",
        ),
        (
            vec!["tags", "set", "--connect", &a.addr, "novalue"],
            "is not KEY=VALUE",
        ),
        (
            vec!["tags", "set", "--connect", &a.addr, &long_value],
            "over the limit of 1024",
        ),
        (many_args, "at most 64 tags"),
        (
            vec!["tags", "unset", "--connect", &a.addr, "bad!"],
            "keys use only",
        ),
        (
            vec!["locate", "--connect", &a.addr, "svc", "--tag", "=x"],
            "must not be empty",
        ),
    ] {
        let out = admin(&args);
        assert!(!out.status.success(), "{args:?} must be refused");
        let err = stderr(&out);
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.contains(why),
            "{args:?}: the first line says why: {err}"
        );
    }
    assert_eq!(
        tags_seen(&a, "a"),
        Some(serde_json::json!({"rack": "r1", "zone": "us"}))
    );
    // A bad tag at start: the node does not start, and says why in one line.
    let dir = TempDir::new().unwrap();
    let out = std::process::Command::new(NODE)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tag",
            "zone/ok=1",
            "--tag",
            "bad key=1",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("keys use only"), "{}", stderr(&out));

    // Tags survive a restart.
    drop(b);
    let b = start(dirs[1].path(), &["--node-id", "b"]);
    assert_eq!(tags_seen(&b, "b"), Some(serde_json::json!({"zone": "us"})));
}

#[test]
fn a_check_command_moves_health_and_locate_follows_it_on_another_node() {
    let dirs: Vec<TempDir> = (0..2).map(|_| TempDir::new().unwrap()).collect();
    let script = dirs[0].path().join("check.sh");
    let write = |body: &str| {
        let tmp = script.with_extension("tmp");
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, &script).unwrap();
    };
    write("echo all good; exit 0\n");
    let check = format!("svc=sh {}", script.display());
    let a = start(
        dirs[0].path(),
        &[
            "--node-id",
            "a",
            "--actor",
            "svc",
            "--check",
            &check,
            "--check-interval",
            "1",
            "--check-timeout",
            "1",
        ],
    );
    let mut b = start(
        dirs[1].path(),
        &["--node-id", "b", "--actor", "svc", "--seed", &a.addr],
    );
    let seen = |b: &NodeProc, status: &str, note: &str| {
        health_seen(b, "a", "svc") == Some((status.to_owned(), note.to_owned()))
    };
    eventually("passing with the first line as note", || {
        seen(&b, "passing", "all good")
    });
    assert_eq!(locate(&b, "svc", &[]), ["a", "b"]);

    write("echo disk at 91%; echo second line; exit 1\n");
    eventually("warning", || seen(&b, "warning", "disk at 91%"));
    assert_eq!(locate(&b, "svc", &[]), ["b", "a"], "passing hosts first");
    b.wait_for("actor health changed").unwrap();

    write("echo down >&2; exit 2\n");
    eventually("critical", || seen(&b, "critical", "down"));
    assert_eq!(locate(&b, "svc", &[]), ["b"], "a critical host is left out");
    assert_eq!(locate(&b, "svc", &["--include-critical"]), ["b", "a"]);
    let text = stdout(&admin(&["members", "--connect", &b.addr]));
    assert!(text.contains("svc(critical: down)"), "{text}");

    write("sleep 30\n");
    eventually("a timeout is critical", || {
        health_seen(&b, "a", "svc").is_some_and(|(s, n)| s == "critical" && n.contains("timed out"))
    });

    write("exit 0\n");
    eventually("passing again", || seen(&b, "passing", ""));
    assert_eq!(locate(&b, "svc", &[]), ["a", "b"]);

    // Set by hand on b; seen on a. Unknown actors and bad notes are refused.
    let out = admin(&[
        "health",
        "set",
        "--connect",
        &b.addr,
        "svc",
        "warning",
        "--note",
        "draining",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "svc now warning\n");
    eventually("a sees b warning", || {
        health_seen(&a, "b", "svc") == Some(("warning".into(), "draining".into()))
    });
    let long_note = "n".repeat(257);
    for (args, why) in [
        (
            vec!["health", "set", "--connect", &b.addr, "nope", "critical"],
            "does not host actor \"nope\"",
        ),
        (
            vec!["health", "set", "--connect", &b.addr, "svc", "sick"],
            "not a health",
        ),
        (
            vec![
                "health",
                "set",
                "--connect",
                &b.addr,
                "svc",
                "critical",
                "--note",
                &long_note,
            ],
            "over the limit of 256",
        ),
    ] {
        let out = admin(&args);
        assert!(!out.status.success(), "{args:?} must be refused");
        assert!(stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
    }
}
