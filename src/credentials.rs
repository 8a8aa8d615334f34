//! What a node proves and checks in its handshakes (cluster secrets, TLS identity), held so
//! it can be replaced while the node runs: each new handshake reads the current credentials,
//! established connections keep the ones they were opened with. This is how a secret or a
//! certificate is rotated without downtime (`gossip-node` reloads on SIGHUP).

use crate::error::{Error, Result};
use crate::secrets::Secrets;
use crate::tls::Tls;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// One set of credentials: the cluster secrets (none: no proof asked or given) and the TLS
/// identity (none: plain `ws://`).
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub secrets: Option<Secrets>,
    pub tls: Option<Arc<Tls>>,
}

impl Credentials {
    /// For logs: how many secrets (never their content) and which certificate.
    pub fn describe(&self) -> String {
        let secrets = match &self.secrets {
            None => "no cluster secret".to_owned(),
            Some(s) if s.len() == 1 => "1 cluster secret".to_owned(),
            Some(s) => format!("{} cluster secrets", s.len()),
        };
        match &self.tls {
            None => format!("{secrets}, no TLS"),
            Some(tls) => format!("{secrets}, TLS {}", tls.summary()),
        }
    }
}

/// The PEM files of a TLS identity (see [`Tls::from_files`]).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Where credentials are read from, so they can be read again to rotate them.
#[derive(Clone, Debug, Default)]
pub struct CredentialFiles {
    pub secret_file: Option<PathBuf>,
    pub tls: Option<TlsFiles>,
}

impl CredentialFiles {
    /// Reads every file; any missing or malformed one is an error (nothing half-loaded).
    pub fn load(&self) -> Result<Credentials> {
        let secrets = self
            .secret_file
            .as_deref()
            .map(Secrets::read_file)
            .transpose()?;
        let tls = match &self.tls {
            None => None,
            Some(f) => Some(Arc::new(
                Tls::from_files(&f.cert, &f.key, &f.ca).map_err(Error::Tls)?,
            )),
        };
        Ok(Credentials { secrets, tls })
    }
}

/// The credentials all handshakes of a node read, replaceable at runtime. Clones share the
/// same credentials: a [`crate::transport::TransportConfig`] cloned into a node keeps the
/// embedder's handle working.
#[derive(Clone, Default)]
pub struct SharedCredentials(Arc<RwLock<Arc<Credentials>>>);

impl std::fmt::Debug for SharedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedCredentials({})", self.current().describe())
    }
}

impl From<Credentials> for SharedCredentials {
    fn from(c: Credentials) -> Self {
        SharedCredentials::new(c)
    }
}

impl SharedCredentials {
    pub fn new(credentials: Credentials) -> SharedCredentials {
        SharedCredentials(Arc::new(RwLock::new(Arc::new(credentials))))
    }

    /// The credentials a handshake starting now uses.
    pub fn current(&self) -> Arc<Credentials> {
        // A writer only swaps an Arc and cannot panic midway: a poisoned lock holds a whole value.
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes `new` the credentials of every handshake from now on. Refused (the current ones
    /// stay) when it would turn TLS or the cluster secret on or off: the node's advertised
    /// scheme and its peers' expectations depend on those; that takes a restart.
    pub fn replace(&self, new: Credentials) -> Result<()> {
        let mut current = self.0.write().unwrap_or_else(|p| p.into_inner());
        if current.tls.is_some() != new.tls.is_some() {
            return Err(Error::Config(format!(
                "cannot turn TLS {} while running; restart the node for that",
                if new.tls.is_some() { "on" } else { "off" }
            )));
        }
        if current.secrets.is_some() != new.secrets.is_some() {
            return Err(Error::Config(format!(
                "cannot {} the cluster secret while running; restart the node for that",
                if new.secrets.is_some() { "add" } else { "drop" }
            )));
        }
        *current = Arc::new(new);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_secret(s: &str) -> Credentials {
        Credentials {
            secrets: Some(Secrets::single(s).unwrap()),
            tls: None,
        }
    }

    #[test]
    fn replacing_swaps_for_every_clone_and_refuses_dropping_the_secret() {
        let shared = SharedCredentials::new(with_secret("A"));
        let clone = shared.clone();
        let two = Credentials {
            secrets: Some(Secrets::parse(b"B\nA").unwrap()),
            tls: None,
        };
        shared.replace(two).unwrap();
        assert_eq!(clone.current().secrets.as_ref().unwrap().len(), 2);
        assert_eq!(clone.current().describe(), "2 cluster secrets, no TLS");
        let err = shared.replace(Credentials::default()).unwrap_err();
        assert!(err.to_string().contains("drop the cluster secret"), "{err}");
        assert_eq!(clone.current().secrets.as_ref().unwrap().len(), 2);
        let none = SharedCredentials::default();
        assert!(none.replace(with_secret("A")).is_err());
        assert!(none.current().secrets.is_none());
    }

    #[test]
    fn loading_reads_every_file_or_fails_whole() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "B\nA\n").unwrap();
        let mut files = CredentialFiles {
            secret_file: Some(secret.clone()),
            tls: None,
        };
        assert_eq!(
            files.load().unwrap().describe(),
            "2 cluster secrets, no TLS"
        );
        std::fs::write(&secret, "# nothing yet\n").unwrap();
        let err = files.load().unwrap_err().to_string();
        assert!(err.contains("no secret in it"), "{err}");
        std::fs::write(&secret, "B\n").unwrap();
        files.tls = Some(TlsFiles {
            cert: dir.path().join("missing.crt"),
            key: dir.path().join("missing.key"),
            ca: dir.path().join("missing-ca.crt"),
        });
        let err = files.load().unwrap_err().to_string();
        assert!(
            err.starts_with("TLS: ") && err.contains("missing.crt"),
            "{err}"
        );
    }
}
