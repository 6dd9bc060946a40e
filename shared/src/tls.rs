//! TLS on a listener (rustls), when a certificate and key are configured. Handshakes run
//! in their own tasks so a slow or hostile client never holds up the accept loop.

use axum::serve::Listener;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A listener's TLS configuration.
pub type ServerTls = Arc<rustls::ServerConfig>;

/// Loads a PEM certificate chain and private key into a server configuration.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{}: no certificate in the file", cert.display());
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The peer address of a connection, plain or TLS, for `into_make_service_with_connect_info`
/// (axum's own `SocketAddr` impl covers plain TCP only).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// A plain TCP listener whose connections send small writes at once (`TCP_NODELAY`): a
/// reply never waits for the peer's delayed acknowledgement.
pub struct NoDelayListener(pub TcpListener);

impl Listener for NoDelayListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, peer) = Listener::accept(&mut self.0).await;
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "TCP_NODELAY refused");
        }
        (stream, peer)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, NoDelayListener>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, NoDelayListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for PeerAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// CA certificates every HTTP client of this process trusts besides the system's (see
/// [`trust_ca`]).
static EXTRA_ROOTS: std::sync::OnceLock<Vec<reqwest::Certificate>> = std::sync::OnceLock::new();

fn read_ca(path: &Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{}: no certificate in the file", path.display());
    Ok(certs)
}

/// Makes every HTTP client this process builds afterwards ([`http_client`]: calls to other
/// roles, key sets, policies, probes) trust the CA certificates in the PEM file `ca` — the
/// cluster's private CA. Called once at a role's start, before its clients are built; a
/// later call changes nothing.
pub fn trust_ca(ca: Option<&Path>) -> anyhow::Result<()> {
    if let Some(path) = ca {
        let certs = read_ca(path)?;
        let n = certs.len();
        if EXTRA_ROOTS.set(certs).is_ok() {
            tracing::info!(file = %path.display(), certificates = n, "trusting the cluster's CA for calls to other roles");
        }
    }
    Ok(())
}

/// An HTTP client builder for calls to other roles: it trusts the CA of [`trust_ca`].
pub fn http_client() -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder();
    for c in EXTRA_ROOTS.get().map(Vec::as_slice).unwrap_or_default() {
        b = b.add_root_certificate(c.clone());
    }
    b
}

/// An HTTP client builder that also trusts the CA certificates in the PEM file `ca` (for
/// calls between ArtStore roles behind a private CA).
pub fn client_builder(ca: Option<&Path>) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut b = http_client();
    if let Some(path) = ca {
        for c in read_ca(path)? {
            b = b.add_root_certificate(c);
        }
    }
    Ok(b)
}

/// When the first certificate of a PEM file stops being valid.
pub fn certificate_not_after(cert: &Path) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let der = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{}: no certificate in the file", cert.display()))?
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
    chrono::DateTime::from_timestamp(parsed.validity().not_after.timestamp(), 0)
        .ok_or_else(|| anyhow::anyhow!("{}: the certificate's end of validity is out of range", cert.display()))
}

/// Puts the serving certificate's end of validity on `/metrics`
/// (`artstore_tls_certificate_expiry_timestamp_seconds`), for the expiry alert, and warns in
/// the log when it is less than 30 days away.
pub fn export_expiry(health: &crate::health::Health, cert: &Path) -> anyhow::Result<()> {
    let not_after = certificate_not_after(cert)?;
    health
        .metrics()
        .gauge(
            "tls_certificate_expiry_timestamp_seconds",
            "When the certificate this role serves with stops being valid",
        )
        .set(not_after.timestamp());
    let left = not_after - chrono::Utc::now();
    if left < chrono::Duration::days(30) {
        tracing::warn!(file = %cert.display(), not_after = %not_after, days_left = left.num_days(), "the TLS certificate expires soon");
    }
    Ok(())
}

/// A TCP listener whose connections are TLS.
pub struct TlsListener {
    local: SocketAddr,
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Wraps a bound TCP listener.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => {
                        if let Err(e) = c.0.set_nodelay(true) {
                            tracing::debug!(error = %e, "TCP_NODELAY refused");
                        }
                        c
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                        Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { local, rx, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task never ends on its own; if it did, there is nothing more to serve.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_https_with_the_configured_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        let cfg = server_config(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let listener = TlsListener::new(tcp, cfg).unwrap();
        let app = axum::Router::new().route("/health/live", axum::routing::get(|| async { "live" }));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap())
            .build()
            .unwrap();
        let r = client.get(format!("https://localhost:{port}/health/live")).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "live");
        // Plain HTTP to the TLS port gets no answer.
        assert!(reqwest::get(format!("http://127.0.0.1:{port}/health/live")).await.is_err());
        // A bad key file names the file.
        std::fs::write(dir.path().join("bad.pem"), "not a key").unwrap();
        let e = server_config(&dir.path().join("cert.pem"), &dir.path().join("bad.pem")).unwrap_err();
        assert!(e.to_string().contains("bad.pem"), "{e}");
    }
}
