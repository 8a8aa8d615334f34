//! The dashboard served at `/` of `--http-listen`, against real `gossip-node` processes:
//! its authentication and read-only surface over plain HTTP, its live data as JSON, and
//! (in Debian's chromium, through `tests/dashboard/e2e.mjs`) the page itself following a
//! 3-node cluster as a member dies.
//!
//! The browser test needs `/usr/bin/chromium` (or `GOSSIP_CHROMIUM`), `node`, and
//! `npm ci --prefix tests/dashboard` (playwright-core); `.ci/run` installs all three. When
//! one is missing it fails under `CI=true` or `GOSSIP_REQUIRE_BROWSER=1`, and otherwise
//! says SKIPPED on stderr and passes.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .redirects(0)
        .build()
}

/// Status, headers asked for, and body of one request.
fn call(
    req: ureq::Request,
    body: Option<&str>,
    want: &[&str],
) -> (u16, Vec<Option<String>>, String) {
    let res = match body {
        Some(b) => req.set("content-type", "application/json").send_string(b),
        None => req.call(),
    };
    let r = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let headers = want
        .iter()
        .map(|h| r.header(h).map(str::to_owned))
        .collect();
    (r.status(), headers, r.into_string().unwrap_or_default())
}

fn get(http: &str, path: &str) -> ureq::Request {
    agent().get(&format!("http://{http}{path}"))
}

fn post(http: &str, path: &str) -> ureq::Request {
    agent().post(&format!("http://{http}{path}"))
}

fn token(secret_file: &Path) -> String {
    let out = admin(&[
        "dashboard-token",
        "--secret-file",
        secret_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_owned()
}

fn secret_file(dir: &TempDir) -> PathBuf {
    let path = dir.path().join("secret");
    std::fs::write(&path, "dashboard test secret\n").unwrap();
    path
}

/// A cluster of three nodes with fixed ids, each with an HTTP endpoint.
fn cluster(dirs: &[TempDir], extra: &[&str]) -> Vec<NodeProc> {
    let ids = ["dash-a", "dash-b", "dash-c"];
    let mut nodes: Vec<NodeProc> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let mut args = vec!["--http-listen", "127.0.0.1:0", "--node-id", id];
        args.extend(extra);
        let seed = nodes.first().map(|n| n.addr.clone());
        if let Some(seed) = &seed {
            args.extend(["--seed", seed.as_str()]);
        }
        nodes.push(NodeProc::start_net(dirs[i].path(), &args).expect("node starts"));
    }
    for n in &nodes {
        eventually("three alive everywhere", || {
            members(&n.addr, &admin_extra(extra))
                .is_some_and(|m| id_states(&m).iter().filter(|(_, s)| s == "alive").count() == 3)
        });
    }
    nodes
}

/// The admin flags (`--secret-file F`) among a node's flags.
fn admin_extra<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    extra
        .windows(2)
        .filter(|w| w[0] == "--secret-file")
        .flat_map(|w| [w[0], w[1]])
        .collect()
}

#[test]
fn with_a_secret_the_data_needs_the_token_in_a_header_or_cookie_never_the_url() {
    let dir = TempDir::new().unwrap();
    let secret = secret_file(&dir);
    let data = TempDir::new().unwrap();
    let node = NodeProc::start_net(
        data.path(),
        &[
            "--http-listen",
            "127.0.0.1:0",
            "--secret-file",
            secret.to_str().unwrap(),
        ],
    )
    .expect("node starts");
    let http = node.http.clone();
    let token = token(&secret);
    assert_eq!(token.len(), 64, "{token}");
    assert!(!token.contains("secret"));

    // The page and its assets are public (they hold no data), with a strict CSP.
    let (code, h, body) = call(
        get(&http, "/"),
        None,
        &["content-security-policy", "content-type"],
    );
    assert_eq!(code, 200);
    assert!(body.contains("/assets/app.js"), "{body}");
    assert!(h[0].as_deref().unwrap().contains("default-src 'none'"));
    assert!(h[1].as_deref().unwrap().starts_with("text/html"));
    for asset in ["/assets/app.js", "/assets/style.css"] {
        assert_eq!(call(get(&http, asset), None, &[]).0, 200, "{asset}");
    }

    // The data is not, without the token; a token in the URL is not read.
    let (code, _, body) = call(get(&http, "/api/snapshot"), None, &[]);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("dashboard-token"), "{body}");
    let in_url = format!("/api/snapshot?token={token}");
    assert_eq!(call(get(&http, &in_url), None, &[]).0, 401);
    assert_eq!(call(get(&http, "/api/stream"), None, &[]).0, 401);
    let wrong =
        get(&http, "/api/snapshot").set("authorization", &format!("Bearer {}", "0".repeat(64)));
    assert_eq!(call(wrong, None, &[]).0, 401);
    let (_, _, session) = call(get(&http, "/api/session"), None, &[]);
    let session: serde_json::Value = serde_json::from_str(&session).unwrap();
    assert_eq!(session["token_required"], true);
    assert_eq!(session["authenticated"], false);

    // Bearer works.
    let bearer = get(&http, "/api/snapshot").set("authorization", &format!("Bearer {token}"));
    let (code, _, body) = call(bearer, None, &[]);
    assert_eq!(code, 200, "{body}");
    let snap: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["members"].as_array().unwrap().len(), 1);

    // Login: a wrong token is refused without a cookie; the right one sets an HttpOnly,
    // SameSite=Strict cookie that then opens the data.
    let (code, h, _) = call(
        post(&http, "/api/login"),
        Some(r#"{"token":"nope"}"#),
        &["set-cookie"],
    );
    assert_eq!((code, h[0].clone()), (401, None));
    let body = format!(r#"{{"token":"{token}"}}"#);
    let (code, h, _) = call(post(&http, "/api/login"), Some(&body), &["set-cookie"]);
    assert_eq!(code, 204);
    let cookie = h[0].clone().expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let (code, _, _) = call(get(&http, "/api/snapshot").set("cookie", &pair), None, &[]);
    assert_eq!(code, 200);
    let (_, _, session) = call(get(&http, "/api/session").set("cookie", &pair), None, &[]);
    assert!(session.contains(r#""authenticated":true"#), "{session}");

    // Read-only: nothing else takes a POST.
    for path in ["/api/snapshot", "/api/stream", "/"] {
        let (code, _, _) = call(post(&http, path).set("cookie", &pair), Some("{}"), &[]);
        assert_eq!(code, 405, "POST {path}");
    }
    // The probes stay open for Kubernetes and Prometheus.
    assert_eq!(call(get(&http, "/health"), None, &[]).0, 200);

    // An open stream ends once a reload drops the secret its token came from (found by a
    // black-box trial: it kept streaming), and the scheme's case does not matter.
    let open = get(&http, "/api/stream")
        .set("authorization", &format!("bearer {token}"))
        .call()
        .expect("the stream opens");
    let mut body = std::io::BufReader::new(open.into_reader());
    let mut line = String::new();
    use std::io::BufRead;
    body.read_line(&mut line).unwrap();
    assert!(line.starts_with("data:"), "{line}");
    let rotated = dir.path().join("rotated");
    std::fs::write(&rotated, "a new secret\n").unwrap();
    std::fs::rename(&rotated, &secret).unwrap();
    node.signal("HUP");
    // Figures go out every 2 s: the stream must end within a few of them.
    let ended = std::thread::spawn(move || loop {
        line.clear();
        match body.read_line(&mut line) {
            Ok(0) => return Ok(()),
            // The agent's 20 s timeout: still open.
            Err(e) => return Err(e.to_string()),
            Ok(_) => {}
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ended.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stream of a revoked token is still open"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ended
        .join()
        .unwrap()
        .expect("the stream ends, not times out");
    let bearer = get(&http, "/api/snapshot").set("authorization", &format!("Bearer {token}"));
    assert_eq!(call(bearer, None, &[]).0, 401, "the old token is refused");
}

#[test]
fn without_a_secret_the_data_is_open_and_shows_members_actors_owners_and_the_feed() {
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let nodes = cluster(&dirs, &[]);
    let http = nodes[0].http.clone();
    let (_, _, session) = call(get(&http, "/api/session"), None, &[]);
    assert!(session.contains(r#""token_required":false"#), "{session}");
    let out = admin(&["actors", "add", "--connect", &nodes[1].addr, "billing"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let snapshot = || -> serde_json::Value {
        let (code, _, body) = call(get(&http, "/api/snapshot"), None, &[]);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    eventually("the snapshot shows billing on dash-b, owned", || {
        let s = snapshot();
        s["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "dash-b" && m["actors"] == serde_json::json!([["billing", 0, 1]]))
    });
    let s = snapshot();
    assert_eq!(s["self"]["id"], "dash-a");
    assert_eq!(s["status"]["in_majority"], true);
    let members = s["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m["state"] == "alive"));
    // dash-b and dash-c joined after dash-a's dashboard started: the feed has their joins.
    let feed = s["feed"].as_array().unwrap();
    for id in ["dash-b", "dash-c"] {
        assert!(
            feed.iter().any(|e| e["kind"] == "join" && e["node"] == id),
            "{feed:?}"
        );
    }
}

/// Where the browser pieces are, or why the test cannot run here.
fn browser_setup() -> Result<(PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("GOSSIP_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!(
            "{} not found (apt-get install chromium)",
            chromium.display()
        ));
    }
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok {
        return Err("node (Node.js) not found".into());
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard");
    if !dir.join("node_modules/playwright-core").exists() {
        return Err("playwright-core missing (npm ci --prefix tests/dashboard)".into());
    }
    Ok((chromium, dir))
}

fn browser_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("GOSSIP_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

#[test]
fn the_page_follows_a_real_cluster_in_chromium() {
    let (chromium, script_dir) = match browser_setup() {
        Ok(found) => found,
        Err(why) if browser_required() => panic!("the browser test must run here: {why}"),
        Err(why) => {
            // Straight to stderr, past the harness's capture, so the skip is seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: the dashboard browser test: {why}"
            );
            return;
        }
    };
    let secret_dir = TempDir::new().unwrap();
    let secret = secret_file(&secret_dir);
    let secret = secret.to_str().unwrap();
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let extra = ["--secret-file", secret];
    let nodes = cluster(&dirs, &extra);
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("dashboard-screenshots");
    let victim = &nodes[2];
    let config = serde_json::json!({
        "url": format!("http://{}/", nodes[0].http),
        "token": token(Path::new(secret)),
        "node_bin": NODE,
        "connect": nodes[0].addr,
        "admin_args": ["--secret-file", secret],
        "ids": ["dash-a", "dash-b", "dash-c"],
        "victim": { "id": "dash-c", "pid": victim.child.id() },
        "shots": shots,
        "chromium": chromium,
    });
    let out = Command::new("node")
        .arg(script_dir.join("e2e.mjs"))
        .arg(config.to_string())
        .output()
        .expect("run node");
    let (so, se) = (stdout(&out), stderr(&out));
    eprintln!("{so}{se}");
    assert!(
        out.status.success(),
        "the browser test failed (screenshots in {}):\n{so}{se}",
        shots.display()
    );
    for name in [
        "1-three-alive",
        "2-actor-added",
        "3-victim-suspect",
        "4-victim-dead",
        "5-search",
    ] {
        assert!(shots.join(format!("{name}.png")).exists(), "{name}.png");
    }
}
