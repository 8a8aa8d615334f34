//! Cluster secrets and the proof rule of the handshake, kept apart from the socket code so the
//! rule can be tested on its own.
//!
//! A secret file holds one secret a line; blank lines and lines starting with `#` are
//! ignored, and each line is trimmed of surrounding whitespace. The first secret is the
//! current one: a node proves with it whenever the other side knows it. Every listed secret is
//! accepted. Listing the new secret first and the old one second lets a cluster rotate its
//! secret node by node without a partition (README, "Rotating the cluster secret").
//!
//! How the two sides find a secret both know without revealing any (labels and nonces as in
//! [`crate::transport`]):
//! * the listener sends one HMAC per secret it holds, its first first;
//! * the dialer takes the first of its own secrets under which any of those HMACs verifies
//!   (none: authentication fails) and answers with one HMAC under that secret;
//! * the listener accepts that answer if it verifies under any of its secrets.
//!
//! So two nodes connect when they share at least one secret, and prove with the first secret
//! of the dialer's list that both share. Every comparison is constant-time.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;

/// Bytes of one proof (an HMAC-SHA256).
pub const PROOF_LEN: usize = 32;
/// Most secrets one file may list: a rotation needs two; the cap bounds the listener's proofs.
pub const MAX_SECRETS: usize = 16;
/// What the dashboard token is an HMAC of (see [`Secrets::dashboard_token`]).
const DASHBOARD_LABEL: &[u8] = b"gossip-roster dashboard token v1";

/// Why a list of secrets is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "no secret in it (one secret a line; blank lines and lines starting with # are ignored)"
    )]
    Empty,
    #[error("{0} secrets listed; at most {MAX_SECRETS} are allowed")]
    TooMany(usize),
    /// The file could not be read (missing, a directory, no permission).
    #[error("cannot read it: {0}")]
    Unreadable(String),
}

/// A non-empty list of cluster secrets, the first the one we prove with. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets(Arc<[Vec<u8>]>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} listed)", self.0.len())
    }
}

impl Secrets {
    /// The given secrets, first the one we prove with; empty entries are an error.
    pub fn new(list: Vec<Vec<u8>>) -> Result<Secrets, SecretsError> {
        if list.is_empty() || list.iter().any(Vec::is_empty) {
            return Err(SecretsError::Empty);
        }
        if list.len() > MAX_SECRETS {
            return Err(SecretsError::TooMany(list.len()));
        }
        Ok(Secrets(list.into()))
    }

    /// A single secret (what a one-line file holds).
    pub fn single(secret: impl Into<Vec<u8>>) -> Result<Secrets, SecretsError> {
        Secrets::new(vec![secret.into()])
    }

    /// Parses a secret file's contents (format in the module doc).
    pub fn parse(text: &[u8]) -> Result<Secrets, SecretsError> {
        let list = text
            .split(|b| *b == b'\n')
            .map(<[u8]>::trim_ascii)
            .filter(|line| !line.is_empty() && !line.starts_with(b"#"))
            .map(<[u8]>::to_vec)
            .collect();
        Secrets::new(list)
    }

    /// Reads a secret file (format in the module doc).
    pub fn read_file(path: &std::path::Path) -> crate::Result<Secrets> {
        let secret_file = |reason| crate::Error::SecretFile {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path)
            .map_err(|e| secret_file(SecretsError::Unreadable(e.to_string())))?;
        Secrets::parse(&bytes).map_err(secret_file)
    }

    /// How many secrets are listed.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a list is never empty (for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn mac(secret: &[u8], label: &[u8], first: &[u8; 32], second: &[u8; 32]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(label);
        mac.update(first);
        mac.update(second);
        mac
    }

    /// One proof under our secret number `index`.
    pub(crate) fn prove_with(
        &self,
        index: usize,
        label: &[u8],
        first: &[u8; 32],
        second: &[u8; 32],
    ) -> Vec<u8> {
        Self::mac(&self.0[index], label, first, second)
            .finalize()
            .into_bytes()
            .to_vec()
    }

    /// One proof per secret, first first, concatenated (the listener's side).
    pub(crate) fn prove_each(&self, label: &[u8], first: &[u8; 32], second: &[u8; 32]) -> Vec<u8> {
        (0..self.len())
            .flat_map(|i| self.prove_with(i, label, first, second))
            .collect()
    }

    /// Whether `proof` (one HMAC) verifies under any of our secrets.
    pub(crate) fn accepts(
        &self,
        label: &[u8],
        first: &[u8; 32],
        second: &[u8; 32],
        proof: &[u8],
    ) -> bool {
        // Every secret is tried, so the time taken does not say which one matched.
        self.0.iter().fold(false, |ok, secret| {
            let matches = Self::mac(secret, label, first, second)
                .verify_slice(proof)
                .is_ok();
            ok | matches
        })
    }

    /// The dashboard's bearer token (hex): an HMAC of a fixed label under our first secret.
    /// It opens the read-only dashboard and nothing else: it proves no handshake, and the
    /// secret cannot be recovered from it. A rotation (a new first secret) changes it.
    pub fn dashboard_token(&self) -> String {
        Self::token_under(&self.0[0])
    }

    fn token_under(secret: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
        mac.update(DASHBOARD_LABEL);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Whether `token` is the dashboard token of any of our secrets (so one issued before a
    /// rotation keeps working while the old secret is still listed). Constant-time.
    pub fn accepts_dashboard_token(&self, token: &str) -> bool {
        self.0.iter().fold(false, |ok, secret| {
            let want = Self::token_under(secret);
            let same = want.len() == token.len()
                && want
                    .bytes()
                    .zip(token.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0;
            ok | same
        })
    }

    /// The first of our secrets under which any of `proofs` (concatenated HMACs, at most
    /// [`MAX_SECRETS`]) verifies: the one to answer with. `None` when we share none, or when
    /// `proofs` is not a whole number of HMACs.
    pub(crate) fn first_shared(
        &self,
        label: &[u8],
        first: &[u8; 32],
        second: &[u8; 32],
        proofs: &[u8],
    ) -> Option<usize> {
        if proofs.is_empty()
            || !proofs.len().is_multiple_of(PROOF_LEN)
            || proofs.len() / PROOF_LEN > MAX_SECRETS
        {
            return None;
        }
        let mut found = None;
        for (index, secret) in self.0.iter().enumerate() {
            let mut matches = false;
            for proof in proofs.chunks_exact(PROOF_LEN) {
                matches |= Self::mac(secret, label, first, second)
                    .verify_slice(proof)
                    .is_ok();
            }
            if matches && found.is_none() {
                found = Some(index);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: &[u8] = b"listener";
    const D: &[u8] = b"dialer";

    fn s(list: &[&str]) -> Secrets {
        Secrets::new(list.iter().map(|x| x.as_bytes().to_vec()).collect()).unwrap()
    }

    /// One handshake's proofs between a listener and a dialer: `Some(index)` of the dialer's
    /// secret both proved with, or `None` when either side refuses.
    fn exchange(listener: &Secrets, dialer: &Secrets) -> Option<usize> {
        let (nd, nl): ([u8; 32], [u8; 32]) = (rand::random(), rand::random());
        let proofs = listener.prove_each(L, &nd, &nl);
        let index = dialer.first_shared(L, &nd, &nl, &proofs)?;
        let answer = dialer.prove_with(index, D, &nl, &nd);
        listener.accepts(D, &nl, &nd, &answer).then_some(index)
    }

    #[test]
    fn the_file_format_is_one_secret_a_line() {
        let parsed =
            Secrets::parse(b"# rotated 2026-01\n\n  new secret \t\r\nold\n#old2\n").unwrap();
        assert_eq!(parsed, s(&["new secret", "old"]));
        // A file written before rotation existed: one secret, surrounding whitespace trimmed.
        assert_eq!(Secrets::parse(b"  k\n").unwrap(), s(&["k"]));
        assert_eq!(Secrets::parse(b""), Err(SecretsError::Empty));
        assert_eq!(
            Secrets::parse(b"\n  \n# only a comment\n"),
            Err(SecretsError::Empty)
        );
        let many: String = (0..=MAX_SECRETS).map(|i| format!("s{i}\n")).collect();
        assert_eq!(
            Secrets::parse(many.as_bytes()),
            Err(SecretsError::TooMany(MAX_SECRETS + 1))
        );
        assert_eq!(
            Secrets::new(vec![b"a".to_vec(), vec![]]),
            Err(SecretsError::Empty)
        );
        assert_eq!(format!("{:?}", s(&["hidden"])), "Secrets(1 listed)");
    }

    #[test]
    fn the_first_secret_proves_and_any_listed_one_is_accepted() {
        let (nd, nl) = ([1; 32], [2; 32]);
        let both = s(&["B", "A"]);
        // Our proof is made with the first secret: a holder of B alone accepts it, of A not.
        let proof = both.prove_with(0, D, &nl, &nd);
        assert!(s(&["B"]).accepts(D, &nl, &nd, &proof));
        assert!(!s(&["A"]).accepts(D, &nl, &nd, &proof));
        // A proof with either listed secret is accepted.
        for one in ["A", "B"] {
            let p = s(&[one]).prove_with(0, D, &nl, &nd);
            assert!(both.accepts(D, &nl, &nd, &p), "{one}");
        }
        // Bound to its label and nonces.
        assert!(!both.accepts(L, &nl, &nd, &proof));
        assert!(!both.accepts(D, &nd, &nl, &proof));
        assert!(!both.accepts(D, &nl, &nd, &proof[..31]));
        assert!(!both.accepts(D, &nl, &nd, &[]));
    }

    #[test]
    fn nodes_sharing_a_secret_connect_and_prefer_the_first() {
        // Every pair of a rolling rotation A -> "B, A" -> B that shares a secret connects.
        assert_eq!(exchange(&s(&["A"]), &s(&["B", "A"])), Some(1));
        assert_eq!(exchange(&s(&["B", "A"]), &s(&["A"])), Some(0));
        assert_eq!(exchange(&s(&["B", "A"]), &s(&["B", "A"])), Some(0));
        assert_eq!(exchange(&s(&["B"]), &s(&["B", "A"])), Some(0));
        assert_eq!(exchange(&s(&["B", "A"]), &s(&["B"])), Some(0));
        // The dialer's order decides when both know both.
        assert_eq!(exchange(&s(&["B", "A"]), &s(&["A", "B"])), Some(0));
    }

    #[test]
    fn a_peer_knowing_none_of_our_secrets_is_refused() {
        // Old-only and new-only refuse each other, both ways round.
        assert_eq!(exchange(&s(&["A"]), &s(&["B"])), None);
        assert_eq!(exchange(&s(&["B"]), &s(&["A"])), None);
        assert_eq!(exchange(&s(&["B", "A"]), &s(&["C"])), None);
        assert_eq!(exchange(&s(&["C"]), &s(&["B", "A"])), None);
    }

    #[test]
    fn the_dashboard_token_is_derived_from_any_listed_secret() {
        let old = s(&["A"]).dashboard_token();
        let new = s(&["B"]).dashboard_token();
        assert_eq!(old.len(), 64);
        assert_ne!(old, new);
        assert!(!old.contains('A'), "not the secret itself");
        let rotating = s(&["B", "A"]);
        assert_eq!(
            rotating.dashboard_token(),
            new,
            "the first secret issues it"
        );
        assert!(rotating.accepts_dashboard_token(&old));
        assert!(rotating.accepts_dashboard_token(&new));
        assert!(!s(&["B"]).accepts_dashboard_token(&old));
        assert!(!rotating.accepts_dashboard_token(&new[..63]));
        assert!(!rotating.accepts_dashboard_token(""));
        assert!(!rotating.accepts_dashboard_token("B"));
    }

    #[test]
    fn malformed_listener_proofs_share_nothing() {
        let (nd, nl) = ([3; 32], [4; 32]);
        let me = s(&["A"]);
        let good = me.prove_each(L, &nd, &nl);
        assert_eq!(me.first_shared(L, &nd, &nl, &good), Some(0));
        assert_eq!(me.first_shared(L, &nd, &nl, &[]), None);
        assert_eq!(me.first_shared(L, &nd, &nl, &good[..31]), None);
        let mut padded = good.clone();
        padded.push(0);
        assert_eq!(me.first_shared(L, &nd, &nl, &padded), None);
        let too_many = good.repeat(MAX_SECRETS + 1);
        assert_eq!(me.first_shared(L, &nd, &nl, &too_many), None);
        // The dialer's proof is not a listener's one.
        let dialer_proof = me.prove_with(0, D, &nd, &nl);
        assert_eq!(me.first_shared(L, &nd, &nl, &dialer_proof), None);
    }
}
