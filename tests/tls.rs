//! TLS (`wss://`) with certificates generated inside the test: nodes with certificates of the
//! cluster CA join and gossip; a node whose certificate comes from another CA, a plain
//! `ws://` node, and admin clients without a trusted certificate are all refused.

mod common;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use std::path::{Path, PathBuf};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ca {
            cert: params.self_signed(&key).unwrap(),
            key,
        }
    }

    /// Writes cert.pem, key.pem and ca.pem for a certificate naming 127.0.0.1.
    fn issue(&self, dir: &Path, name: &str) -> [PathBuf; 3] {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &self.cert, &self.key)
            .unwrap();
        let paths = [
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
            dir.join(format!("{name}-ca.crt")),
        ];
        std::fs::write(&paths[0], cert.pem()).unwrap();
        std::fs::write(&paths[1], key.serialize_pem()).unwrap();
        std::fs::write(&paths[2], self.cert.pem()).unwrap();
        paths
    }
}

fn tls_args(p: &[PathBuf; 3]) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        p[0].to_str().unwrap().into(),
        "--tls-key".into(),
        p[1].to_str().unwrap().into(),
        "--tls-ca".into(),
        p[2].to_str().unwrap().into(),
    ]
}

#[test]
fn nodes_of_one_ca_gossip_over_wss_and_strangers_are_refused() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let other_ca = Ca::new();
    let (a_tls, b_tls, admin_tls) = (
        ca.issue(certs.path(), "a"),
        ca.issue(certs.path(), "b"),
        ca.issue(certs.path(), "admin"),
    );
    let stranger_tls = other_ca.issue(certs.path(), "stranger");

    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let start = |dir: &Path, id: &str, tls: Option<&[PathBuf; 3]>, seed: Option<&str>| {
        let mut args: Vec<String> = vec!["--node-id".into(), id.into()];
        if let Some(t) = tls {
            args.extend(tls_args(t));
        }
        if let Some(s) = seed {
            args.extend(["--seed".into(), s.into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        NodeProc::start_net(dir, &args).unwrap_or_else(|log| panic!("{id}:\n{log}"))
    };
    let a = start(dirs[0].path(), "a", Some(&a_tls), None);
    assert!(a.addr.starts_with("wss://"), "{}", a.addr);
    let b = start(dirs[1].path(), "b", Some(&b_tls), Some(&a.addr));

    let admin_args = tls_args(&admin_tls);
    let admin_args: Vec<&str> = admin_args.iter().map(String::as_str).collect();
    eventually("a and b see each other over TLS", || {
        members(&a.addr, &admin_args).is_some_and(|r| r.as_array().unwrap().len() == 2)
    });
    let out = admin(
        &[
            &["actors", "add", "--connect", &b.addr],
            &admin_args[..],
            &["billing"],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    eventually("a locates billing on b", || {
        let out = admin(
            &[
                &["locate", "--connect", &a.addr, "billing", "--json"],
                &admin_args[..],
            ]
            .concat(),
        );
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"b\"")
    });

    // A certificate from another CA, and a plain node, do not get in.
    let mut stranger = start(
        dirs[2].path(),
        "stranger",
        Some(&stranger_tls),
        Some(&a.addr),
    );
    let mut plain = start(dirs[3].path(), "plain", None, Some(&a.addr));
    stranger
        .wait_for("TLS")
        .expect("the stranger logs the refusal");
    plain
        .wait_for("speaks TLS")
        .expect("the plain node logs why it cannot dial");
    // Admin clients need a trusted certificate too.
    let out = admin(&["members", "--connect", &a.addr]);
    assert!(!out.status.success(), "plain admin got in");
    let st = tls_args(&stranger_tls);
    let st: Vec<&str> = st.iter().map(String::as_str).collect();
    assert!(members(&a.addr, &st).is_none(), "a stranger's admin got in");
    let ids: Vec<String> = members(&a.addr, &admin_args)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    drop((b, stranger, plain));
}
