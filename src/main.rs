//! `artstore`: one binary, several roles. This file only parses arguments, merges
//! configuration (defaults < TOML file < `ARTSTORE_*` variables < flags) and wires roles.

mod bench;
mod bench_admin;
mod bench_ingester;
mod bench_load;
mod bench_query;
mod cli;
#[cfg(test)]
mod deploy_check;
mod query_cli;
mod standalone;

use anyhow::Context as _;
use artstore_admin::network::Faults;
use artstore_admin::server::AdminServer;
use artstore_shared::Clock;
use artstore_shared::auth::{JwksSource, LocalSigner, SIGNING_KEY_FILE, TokenVerifier, VerifierConfig};
use artstore_shared::clock::SystemClock;
use artstore_shared::telemetry;
use artstore_storage_element::config::ElementConfig;
use artstore_storage_element::server::{Element, shutdown_signal};
use clap::Parser as _;
use cli::{AdminAction, AdminArgs, Cli, Command, ConfigAction, ElementAction, ElementArgs, FileConfig, TokenArgs};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// mimalloc gives freed buffers back: with glibc's allocator a long streamed upload left
/// the process holding up to a GiB of freed chunks across its arenas (measured by
/// `bench ingester`), though no more than a few MiB were live at any time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if query_cli::is_extract_worker(&cli) {
        // A child of the query role: no runtime, no threads, its own limits.
        return match artstore_query::extractor::worker_main() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("artstore extract-worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("artstore: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // One line that names the file and the reason.
            eprintln!("artstore: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Standalone(args) => standalone::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::StorageElement(cmd) => match cmd.action {
            None => storage_element(cmd.run).await.map(|()| ExitCode::SUCCESS),
            Some(ElementAction::Verify(a)) => Ok(cli::verify(&a.data, a.cold_root.as_deref())?),
            Some(ElementAction::VerifyAudit(a)) => Ok(cli::verify_audit(&a.data)?),
            Some(ElementAction::RebuildCache(a)) => cli::rebuild_cache(&a).await,
            Some(ElementAction::CheckCache(a)) => cli::check_cache(&a).await,
        },
        Command::Admin(cmd) => match cmd.action {
            None => admin(cmd.run).await.map(|()| ExitCode::SUCCESS),
            Some(AdminAction::VerifyAudit(a)) => cli::admin_verify_audit(&a.data, a.public_key.as_deref()),
        },
        Command::Ingester(args) => ingester(*args).await.map(|()| ExitCode::SUCCESS),
        Command::Query(cmd) => query_cli::run(*cmd).await,
        Command::Token(args) => token(args).map(|()| ExitCode::SUCCESS),
        Command::ProxyConfig(a) => {
            print!(
                "{}",
                artstore_shared::front_proxy::nginx(&artstore_shared::front_proxy::ProxyConfig {
                    listen: a.listen,
                    admin: a.admin,
                    ingester: a.ingester,
                    query: a.query,
                    ui: a.ui,
                    tls_cert: a.tls_cert,
                    tls_key: a.tls_key,
                    upstream_ca: a.upstream_ca,
                    upstream_name: a.upstream_name,
                })
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Config { action: ConfigAction::Example } => {
            print!("{}", cli::EXAMPLE_CONFIG);
            Ok(ExitCode::SUCCESS)
        }
        Command::Config { action: ConfigAction::Check { file } } => match read_config(Some(&file)) {
            Ok(_) => {
                println!("{}: ok", file.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e:#}");
                Ok(ExitCode::from(1))
            }
        },
        Command::Bench(args) => bench::run(args).await.map(|()| ExitCode::SUCCESS),
    }
}

pub(crate) fn read_config(path: Option<&Path>) -> anyhow::Result<FileConfig> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        // One line: where, then what (the error's own text draws the line with a caret).
        let what = e.message().trim().replace('\n', " ");
        match e.span().map(|s| text[..s.start].matches('\n').count() + 1) {
            Some(line) => anyhow::anyhow!("{}: line {line}: {what}", path.display()),
            None => anyhow::anyhow!("{}: {what}", path.display()),
        }
    })
}

fn verifier_from(source: JwksSource, cfg: &ElementConfig, clock: Arc<dyn Clock>) -> Arc<TokenVerifier> {
    let vc = VerifierConfig {
        issuer: cfg.issuer.clone(),
        audience: cfg.audience.clone(),
        max_key_age: Duration::from_secs(cfg.jwks_max_age_secs.max(1)),
        ..Default::default()
    };
    Arc::new(TokenVerifier::new(source, vc, clock))
}

fn verifier(jwks: &str, cfg: &ElementConfig, clock: Arc<dyn Clock>) -> Arc<TokenVerifier> {
    verifier_from(JwksSource::parse(jwks), cfg, clock)
}

async fn admin(args: AdminArgs) -> anyhow::Result<()> {
    let file = read_config(args.config.as_deref())?;
    let cfg = args.merge(file.admin);
    telemetry::init(cfg.log_format, "info,openraft=warn");
    artstore_shared::tls::trust_ca(cfg.tls_ca.as_deref())?;
    let tls = server_tls(cfg.tls_cert.as_deref(), cfg.tls_key.as_deref())?;
    let listener = listen(&cfg.listen).await?;
    let ui = match &cfg.ui_api {
        Some(api) => Some(artstore_ui::router(artstore_ui::UiState::new(artstore_ui::UiConfig {
            api: api.clone(),
            secure_cookies: tls.is_some() || api.starts_with("https://"),
        })?)),
        None => None,
    };
    let cert = cfg.tls_cert.clone();
    let mut server = AdminServer::build(cfg, Faults::default()).await?;
    if let Some(c) = &cert {
        artstore_shared::tls::export_expiry(&server.health, c)?;
    }
    if let Some(ui) = ui {
        // Admin routes first (and Raft's); every other path is the UI's.
        server.router = server.router.clone().fallback_service(ui);
    }
    server.run_with(listener, tls, shutdown_signal()).await
}

/// A role's TLS: a server configuration when both a certificate and a key are set.
pub(crate) fn server_tls(
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> anyhow::Result<Option<artstore_shared::tls::ServerTls>> {
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some(artstore_shared::tls::server_config(c, k)?)),
        (None, None) => Ok(None),
        _ => anyhow::bail!("TLS needs both tls_cert and tls_key (--tls-cert, --tls-key)"),
    }
}

pub(crate) async fn listen(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))
}

async fn storage_element(args: ElementArgs) -> anyhow::Result<()> {
    let file = read_config(args.config.as_deref())?;
    let cfg = args.merge(file.storage_element);
    telemetry::init(cfg.log_format, "info");
    artstore_shared::tls::trust_ca(cfg.tls_ca.as_deref())?;
    let jwks = cfg.jwks.clone().ok_or_else(|| {
        anyhow::anyhow!("no key set: give --jwks PATH_OR_URL (or jwks in the config, or ARTSTORE_JWKS)")
    })?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let verifier = verifier(&jwks, &cfg, clock.clone());
    // A key set that cannot be read now is worth a warning, not a refusal: the admin
    // may start later, and the verifier retries on the first token.
    match verifier.load().await {
        Ok(n) => tracing::info!(keys = n, source = %jwks, "loaded token signing keys"),
        Err(e) => tracing::warn!(error = %e, "key set not loaded yet; will retry on first request"),
    }
    let listener = listen(&cfg.listen).await?;
    let tls = server_tls(cfg.tls_cert.as_deref(), cfg.tls_key.as_deref())?;
    // The element's own clock (a test clock in fault drills; tokens keep the wall clock).
    let cert = cfg.tls_cert.clone();
    let element = Element::build(cfg, verifier, artstore_shared::clock::from_env()).await?;
    if let Some(c) = &cert {
        artstore_shared::tls::export_expiry(&element.health, c)?;
    }
    match tls {
        Some(t) => element.run(artstore_shared::tls::TlsListener::new(listener, t)?, shutdown_signal()).await,
        None => element.run(listener, shutdown_signal()).await,
    }
}

/// The token verifier of a role that reads its keys from `--jwks` (a file or the admin's
/// URL); keys not loadable yet are fetched on the first request.
pub(crate) async fn role_verifier(
    jwks: Option<&str>,
    issuer: &str,
    audience: &str,
    max_age_secs: u64,
) -> anyhow::Result<Arc<TokenVerifier>> {
    let jwks = jwks.ok_or_else(|| {
        anyhow::anyhow!("no key set: give --jwks PATH_OR_URL (or jwks in the config, or ARTSTORE_JWKS)")
    })?;
    let vc = VerifierConfig {
        issuer: issuer.to_owned(),
        audience: audience.to_owned(),
        max_key_age: Duration::from_secs(max_age_secs.max(1)),
        ..Default::default()
    };
    let verifier = Arc::new(TokenVerifier::new(JwksSource::parse(jwks), vc, Arc::new(SystemClock)));
    match verifier.load().await {
        Ok(n) => tracing::info!(keys = n, source = %jwks, "loaded token signing keys"),
        Err(e) => tracing::warn!(error = %e, "key set not loaded yet; will retry on first request"),
    }
    Ok(verifier)
}

async fn ingester(args: cli::IngesterArgs) -> anyhow::Result<()> {
    let file = read_config(args.config.as_deref())?;
    let cfg = args.merge(file.ingester);
    telemetry::init(cfg.log_format, "info");
    artstore_shared::tls::trust_ca(cfg.tls_ca.as_deref())?;
    let tls = server_tls(cfg.tls_cert.as_deref(), cfg.tls_key.as_deref())?;
    let verifier = role_verifier(cfg.jwks.as_deref(), &cfg.issuer, &cfg.audience, cfg.jwks_max_age_secs).await?;
    let listener = listen(&cfg.listen).await?;
    let cert = cfg.tls_cert.clone();
    let server = artstore_ingester::server::IngesterServer::build(cfg, verifier).await?;
    match (tls, cert) {
        (Some(t), Some(c)) => {
            artstore_shared::tls::export_expiry(&server.health, &c)?;
            server.run(artstore_shared::tls::TlsListener::new(listener, t)?, shutdown_signal()).await
        }
        _ => server.run(listener, shutdown_signal()).await,
    }
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    let keys = standalone::standalone_paths(&args.data).keys;
    let key_path = keys.join(SIGNING_KEY_FILE);
    let der = std::fs::read(&key_path).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e} (start `artstore standalone --data {}` once to create the signing key)",
            key_path.display(),
            args.data.display()
        )
    })?;
    let signer = LocalSigner::from_pkcs8(&der).with_context(|| format!("{}", key_path.display()))?;
    let roles = if args.role.is_empty() { vec!["admin".to_owned()] } else { args.role.clone() };
    for r in &roles {
        let known = artstore_shared::auth::Role::parse(r).is_some()
            || r == artstore_shared::auth::RETENTION_BYPASS_PERMISSION
            || r == artstore_shared::auth::LIFT_HOLD_PERMISSION;
        anyhow::ensure!(
            known,
            "unknown role {r:?} (reader, writer, operator, admin, auditor, retention:bypass, legal-hold:lift)"
        );
    }
    let subject = args.subject.clone().unwrap_or_else(|| roles[0].clone());
    let t = signer.issue(&subject, &roles, Duration::from_secs(args.ttl_secs), chrono::Utc::now())?;
    println!("{t}");
    Ok(())
}
