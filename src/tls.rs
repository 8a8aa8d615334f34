//! Optional TLS (`wss://`) with rustls: both sides present a certificate and both verify
//! the other's against the cluster CA (mutual TLS). The cluster secret, when also set, still
//! runs its challenge-response inside the encrypted channel.

use std::io::BufReader;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A node's TLS identity and trust: its certificate chain and key, and the CA its peers'
/// certificates must chain to.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    summary: String,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls({})", self.summary)
    }
}

/// SHA-256 of a certificate, as `openssl x509 -noout -fingerprint -sha256` prints it.
fn fingerprint(cert: &CertificateDer<'_>) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(cert.as_ref());
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate inside", path.display()));
    }
    Ok(certs)
}

impl Tls {
    /// Loads PEM files: `cert` (chain), `key` (PKCS#8, PKCS#1 or SEC1), `ca` (trusted roots).
    pub fn from_files(cert: &Path, key: &Path, ca: &Path) -> Result<Tls, String> {
        let chain = read_certs(cert)?;
        let key_file = std::fs::File::open(key).map_err(|e| format!("{}: {e}", key.display()))?;
        let key: PrivateKeyDer<'static> =
            rustls_pemfile::private_key(&mut BufReader::new(key_file))
                .map_err(|e| format!("{}: {e}", key.display()))?
                .ok_or_else(|| format!("{}: no PEM private key inside", key.display()))?;
        let mut roots = RootCertStore::empty();
        let cas = read_certs(ca)?;
        let summary = format!(
            "certificate sha256 {} (chain of {}), {} CA certificate(s)",
            fingerprint(&chain[0]),
            chain.len(),
            cas.len()
        );
        for c in cas {
            roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| format!("client verifier: {e}"))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("certificate and key do not match: {e}"))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("certificate and key do not match: {e}"))?;
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            summary,
        })
    }

    /// For logs: the SHA-256 fingerprint of our certificate, its chain length, the CA count.
    pub fn summary(&self) -> &str {
        &self.summary
    }

    pub(crate) async fn accept(&self, tcp: TcpStream) -> std::io::Result<Stream> {
        Ok(Stream::Server(Box::new(self.acceptor.accept(tcp).await?)))
    }

    /// Connects to `host`; the peer's certificate must name it (IP or DNS SAN).
    pub(crate) async fn connect(&self, host: &str, tcp: TcpStream) -> std::io::Result<Stream> {
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Ok(Stream::Client(Box::new(
            self.connector.connect(name, tcp).await?,
        )))
    }
}

/// A connection's byte stream: plain TCP, or TLS on either side.
pub enum Stream {
    Plain(TcpStream),
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Stream::Plain($s) => $e,
            Stream::Server($s) => $e,
            Stream::Client($s) => $e,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}
