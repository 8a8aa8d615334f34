//! Settings from flags, `GOSSIP_*` variables and a `--config` TOML file, through the real
//! binary: precedence (flag > env > file > default), file errors naming file, key and line,
//! and `gossip-node config --print`.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// `gossip-node <args>` with `env` set (and no GOSSIP_* inherited from the test's own
/// environment).
fn node_cmd(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(NODE);
    for (k, _) in std::env::vars() {
        if k.starts_with("GOSSIP_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).envs(env.iter().copied());
    cmd
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    node_cmd(args, env).output().expect("run gossip-node")
}

/// `config --print --json`, parsed.
fn print_json(args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut all = vec!["config", "--print", "--json"];
    all.extend(args);
    let out = run(&all, env);
    assert!(out.status.success(), "config --print: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("config --print --json is JSON")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "node.toml",
        "cluster = \"from-file\"\n\
         fsync-interval-ms = 11\n\
         gossip_window_ms = 12\n\
         seed = [\"127.0.0.1:7101\", \"ws://127.0.0.1:7102\"]\n\
         data-dir = \"/var/lib/gossip\"\n\
         listen = \"127.0.0.1:0\"\n",
    );
    let env = [
        ("GOSSIP_CONFIG", file.as_str()),
        ("GOSSIP_CLUSTER", "from-env"),
        ("GOSSIP_FSYNC_INTERVAL_MS", "21"),
        ("GOSSIP_ACTOR", "a1,a2"),
    ];
    let c = print_json(&["--cluster", "from-flag"], &env);
    let got = |key: &str| (c[key]["value"].clone(), c[key]["source"].clone());
    assert_eq!(got("cluster"), ("from-flag".into(), "flag".into()));
    assert_eq!(got("fsync-interval-ms"), ("21".into(), "env".into()));
    assert_eq!(got("gossip-window-ms"), ("12".into(), "file".into()));
    assert_eq!(got("probe-interval-ms"), ("300".into(), "default".into()));
    assert_eq!(got("config"), (file.as_str().into(), "env".into()));
    assert_eq!(
        got("seed"),
        (
            serde_json::json!(["127.0.0.1:7101", "ws://127.0.0.1:7102"]),
            "file".into()
        )
    );
    assert_eq!(
        got("actor"),
        (serde_json::json!(["a1", "a2"]), "env".into())
    );
    assert_eq!(got("advertise"), (Value::Null, "unset".into()));
    // Tags and checks may hold commas: their variables take one value a line.
    let c = print_json(
        &[],
        &[
            ("GOSSIP_TAG", "zone=a,b\nrack=r1"),
            ("GOSSIP_CHECK", "svc=test 1, 2\ndb=true"),
        ],
    );
    assert_eq!(
        c["tag"]["value"],
        serde_json::json!(["zone=a,b", "rack=r1"])
    );
    assert_eq!(
        c["check"]["value"],
        serde_json::json!(["svc=test 1, 2", "db=true"])
    );

    // A real run takes the same values: data dir and listen from env and file, the cluster
    // name from the flag over the variable over the file.
    let data = dir.path().join("data");
    let file = write(
        dir.path(),
        "run.toml",
        "cluster = \"from-file\"\nlisten = \"127.0.0.1:0\"\n",
    );
    let cmd = node_cmd(
        &["--cluster", "from-flag"],
        &[
            ("GOSSIP_CONFIG", file.as_str()),
            ("GOSSIP_CLUSTER", "from-env"),
            ("GOSSIP_DATA_DIR", data.to_str().unwrap()),
        ],
    );
    let node = NodeProc::spawn(cmd).unwrap();
    let out = admin(&["status", "--json", "--connect", &node.addr]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["cluster"], "from-flag");
    assert!(data.is_dir(), "the data dir from GOSSIP_DATA_DIR");
    // Admin commands take --connect from GOSSIP_CONNECT.
    let out = run(&["status", "--json"], &[("GOSSIP_CONNECT", &node.addr)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(node.stop(), 0);

    // Without the flag the variable wins over the file; without both, the file.
    let c = print_json(&[], &env);
    assert_eq!(c["cluster"]["value"], "from-env");
    let c = print_json(&["--config", &file], &[]);
    assert_eq!(
        (&c["cluster"]["value"], &c["cluster"]["source"]),
        (&"from-file".into(), &"file".into())
    );
    assert_eq!(
        c["data-dir"]["value"],
        Value::Null,
        "run.toml has no data dir"
    );
}

#[test]
fn file_errors_name_the_file_the_key_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "data-dir = \"/x\"\nlisten = \"127.0.0.1:0\"\nfanuot = 3\n",
            "line 3, key `fanuot`: unknown key",
        ),
        (
            "data-dir = \"/x\"\nfanout = 0\n",
            "line 2, key `fanout`: invalid value '0'",
        ),
        (
            "fsync = \"sometimes\"\n",
            "line 1, key `fsync`: invalid value 'sometimes'",
        ),
        (
            "\n\ncluster = [\"a\", \"b\"]\n",
            "line 3, key `cluster`: expected one value, got an array",
        ),
        (
            "[listen]\nport = 1\n",
            "key `listen`: expected a value, got a table",
        ),
        (
            "seed = [1.5, {}]\n",
            "key `seed`: expected a string, number or boolean",
        ),
        (
            "data-dir = \"/x\"\ndata_dir = \"/y\"\n",
            "key `data_dir`: given twice",
        ),
        ("data-dir = /x\n", "line 1:"),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let file = write(dir.path(), &format!("bad{i}.toml"), text);
        for args in [
            vec!["--config", file.as_str()],
            vec!["config", "--print", "--config", file.as_str()],
        ] {
            let out = run(&args, &[]);
            let err = stderr(&out);
            assert!(!out.status.success(), "{text:?} accepted");
            assert!(
                err.contains(&format!("config file {file}")) && err.contains(expected),
                "{text:?}: {err}"
            );
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        }
    }
    let missing = dir.path().join("missing.toml");
    let out = run(&[], &[("GOSSIP_CONFIG", missing.to_str().unwrap())]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("config file {}: No such file", missing.display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_values_from_env_are_refused_like_flags() {
    let out = run(
        &["--data-dir", "/x", "--listen", "127.0.0.1:0"],
        &[("GOSSIP_SEGMENT_BYTES", "0")],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--segment-bytes"), "{}", stderr(&out));
}

#[test]
fn config_print_shows_sources_and_round_trips_but_never_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let secret = write(dir.path(), "secret", "hunter2-do-not-print\n");
    let file = write(
        dir.path(),
        "node.toml",
        &format!("secret-file = \"{secret}\"\nmax_connections = 64\n"),
    );
    let args = [
        "config",
        "--print",
        "--config",
        &file,
        "--data-dir",
        "/var/lib/gossip",
    ];
    let out = run(
        &args,
        &[
            ("GOSSIP_LISTEN", "0.0.0.0:7100"),
            ("GOSSIP_SEED", "a:1,b:2"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for line in [
        "data-dir = \"/var/lib/gossip\"  # flag",
        "listen = \"0.0.0.0:7100\"  # env",
        &format!("secret-file = \"{secret}\"  # file"),
        "max-connections = 64  # file",
        "seed = [\"a:1\", \"b:2\"]  # env",
        "cluster = \"default\"  # default",
        "# advertise is not set",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    assert!(!text.contains("hunter2"), "the secret leaked:\n{text}");

    // The printed settings, used as a config file, give the same settings.
    let printed = write(dir.path(), "printed.toml", &text);
    let again = run(&["config", "--print", "--config", &printed], &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    let values = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("config ="))
            .map(|l| l.split("  #").next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(values(&stdout(&again)), values(&text));
    let toml = run(&["config", "--print", "--toml", "--config", &printed], &[]);
    assert_eq!(
        stdout(&toml),
        stdout(&again),
        "--toml is the default format"
    );
}
