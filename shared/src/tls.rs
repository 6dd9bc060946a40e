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

/// Loads a PEM certificate chain and private key into a server configuration. The files
/// are read again at each handshake (a few KiB, next to the handshake's cost): a renewed certificate and key are
/// served from the next connection on, without a restart. New files that do not load (a
/// half-written pair, a key that does not match) are logged and the previous pair is kept.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let resolver = ReloadingCert::load(cert, key, provider.clone())?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("tls: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Reads a certificate chain and its private key, checked to belong together.
fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> anyhow::Result<rustls::sign::CertifiedKey> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{}: no certificate in the file", cert.display());
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    rustls::sign::CertifiedKey::from_der(certs, key_der, provider)
        .map_err(|e| anyhow::anyhow!("{} with {}: {e}", cert.display(), key.display()))
}

/// A version of the two files: their bytes (a few KiB; modification times can be too coarse
/// to tell two quick writes of the same length apart).
type Stamp = Option<(Vec<u8>, Vec<u8>)>;

fn stamp(cert: &Path, key: &Path) -> Stamp {
    Some((std::fs::read(cert).ok()?, std::fs::read(key).ok()?))
}

/// The serving certificate, reloaded when its files change.
#[derive(Debug)]
struct ReloadingCert {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// The pair served, and the files' stamp last looked at (loaded or not).
    current: std::sync::RwLock<(Arc<rustls::sign::CertifiedKey>, Stamp)>,
}

impl ReloadingCert {
    fn load(cert: &Path, key: &Path, provider: Arc<rustls::crypto::CryptoProvider>) -> anyhow::Result<Self> {
        let seen = stamp(cert, key);
        let pair = load_pair(cert, key, &provider)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            current: std::sync::RwLock::new((Arc::new(pair), seen)),
        })
    }

    /// The pair to serve: the files' if they changed and load, else the one served so far.
    fn pair(&self) -> Arc<rustls::sign::CertifiedKey> {
        let now = stamp(&self.cert, &self.key);
        {
            let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
            if cur.1 == now || now.is_none() {
                return cur.0.clone();
            }
        }
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        if cur.1 != now {
            cur.1 = now;
            match load_pair(&self.cert, &self.key, &self.provider) {
                Ok(pair) => {
                    tracing::info!(file = %self.cert.display(), "TLS certificate reloaded");
                    cur.0 = Arc::new(pair);
                }
                Err(e) => {
                    tracing::error!(error = %e, "the changed TLS certificate or key does not load; still serving the previous one")
                }
            }
        }
        cur.0.clone()
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.pair())
    }
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
/// The file is read again every minute (a renewed certificate is served without a restart).
pub fn export_expiry(health: &crate::health::Health, cert: &Path) -> anyhow::Result<()> {
    let not_after = certificate_not_after(cert)?;
    let gauge = health.metrics().gauge(
        "tls_certificate_expiry_timestamp_seconds",
        "When the certificate this role serves with stops being valid",
    );
    gauge.set(not_after.timestamp());
    warn_if_expiring(cert, not_after);
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let cert = cert.to_owned();
        rt.spawn(async move {
            let mut shown = not_after;
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                match certificate_not_after(&cert) {
                    Ok(t) if t != shown => {
                        gauge.set(t.timestamp());
                        warn_if_expiring(&cert, t);
                        shown = t;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "certificate not read for the expiry metric"),
                }
            }
        });
    }
    Ok(())
}

fn warn_if_expiring(cert: &Path, not_after: chrono::DateTime<chrono::Utc>) {
    let left = not_after - chrono::Utc::now();
    if left < chrono::Duration::days(30) {
        tracing::warn!(file = %cert.display(), not_after = %not_after, days_left = left.num_days(), "the TLS certificate expires soon");
    }
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

    /// A certificate signed by `ca` for localhost, valid `days` days, and its key (PEM).
    fn leaf(ca: &rcgen::CertifiedIssuer<'_, rcgen::KeyPair>, days: i64) -> (String, String) {
        use chrono::Datelike as _;
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let day = (chrono::Utc::now() + chrono::Duration::days(days)).date_naive();
        p.not_after = rcgen::date_time_ymd(day.year(), day.month() as u8, day.day() as u8);
        let key = rcgen::KeyPair::generate().unwrap();
        (p.signed_by(&key, ca).unwrap().pem(), key.serialize_pem())
    }

    /// A renewed certificate is served from the next connection on, without a restart;
    /// files that do not load leave the previous pair in service.
    #[tokio::test]
    async fn a_renewed_certificate_is_served_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let install = |pair: &(String, String)| {
            std::fs::write(&cert, &pair.0).unwrap();
            std::fs::write(&key, &pair.1).unwrap();
        };
        let (old, renewed) = (leaf(&ca, 10), leaf(&ca, 400));
        install(&old);
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let listener = TlsListener::new(tcp, server_config(&cert, &key).unwrap()).unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        // Days the certificate served on a new connection has left.
        let days_left = || async {
            let client = reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
                .tls_info(true)
                .build()
                .unwrap();
            let r = client.get(format!("https://localhost:{port}/")).send().await.unwrap();
            let der = r.extensions().get::<reqwest::tls::TlsInfo>().unwrap().peer_certificate().unwrap().to_vec();
            let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
            (c.validity().not_after.timestamp() - chrono::Utc::now().timestamp()) / 86400
        };
        assert!((9..=10).contains(&days_left().await));
        install(&renewed);
        assert!((399..=400).contains(&days_left().await), "the renewed certificate is served");
        // A key that is not the certificate's, then a broken key: the renewed pair stays.
        std::fs::write(&key, &old.1).unwrap();
        assert!((399..=400).contains(&days_left().await));
        std::fs::write(&key, "half a key").unwrap();
        assert!((399..=400).contains(&days_left().await));
        install(&old);
        assert!((9..=10).contains(&days_left().await), "a good pair is taken up again");
    }
}
