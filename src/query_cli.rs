//! `artstore query`: the query role, and its index tools (`reindex`, `check-index`,
//! the hidden `extract-worker`).

use crate::cli::{self, QueryAction, QueryArgs, QueryCmd};
use artstore_query::config::QueryConfig;
use artstore_query::feed::{self, ReindexReport};
use artstore_query::index::layout;
use artstore_query::server::{self, QueryDeps, QueryServer};
use artstore_shared::auth::{JwksSource, TokenVerifier, VerifierConfig};
use artstore_shared::clock::SystemClock;
use artstore_shared::telemetry;
use indicatif::{ProgressBar, ProgressStyle};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Runs `artstore query …` (except `extract-worker`, which runs before the runtime).
pub async fn run(cmd: QueryCmd) -> anyhow::Result<ExitCode> {
    match cmd.action {
        None => serve(cmd.run).await.map(|()| ExitCode::SUCCESS),
        Some(QueryAction::Reindex(a)) => reindex(a.common, a.element.as_deref(), a.fresh).await,
        Some(QueryAction::CheckIndex(a)) => check_index(a.common, a.repair).await,
        Some(QueryAction::ExtractWorker) => anyhow::bail!("extract-worker runs only as a child of the query role"),
    }
}

fn settings(args: QueryArgs) -> anyhow::Result<QueryConfig> {
    let file = crate::read_config(args.config.as_deref())?;
    let cfg = args.merge(file.query);
    artstore_shared::tls::trust_ca(cfg.tls_ca.as_deref())?;
    Ok(cfg)
}

/// How the role starts its extraction workers: this very binary.
fn extractor(cfg: &QueryConfig) -> anyhow::Result<artstore_query::extractor::ExtractorConfig> {
    let exe = std::env::current_exe().map_err(|e| anyhow::anyhow!("cannot find the artstore binary: {e}"))?;
    Ok(server::extractor_config(cfg, exe, vec!["query".into(), "extract-worker".into()]))
}

fn deps(cfg: &QueryConfig, verifier: Arc<TokenVerifier>) -> anyhow::Result<QueryDeps> {
    let pool = artstore_query::extractor::Extractor::processes(extractor(cfg)?);
    Ok(QueryDeps { verifier, token: None, bus: None, extractor: Some(Arc::new(pool)), discovery: None })
}

async fn serve(args: QueryArgs) -> anyhow::Result<()> {
    let cfg = settings(args)?;
    telemetry::init(cfg.log_format, "info,tantivy=warn");
    let verifier = crate::role_verifier(cfg.jwks.as_deref(), &cfg.issuer, &cfg.audience, cfg.jwks_max_age_secs).await?;
    let tls = crate::server_tls(cfg.tls_cert.as_deref(), cfg.tls_key.as_deref())?;
    let listener = crate::listen(&cfg.listen).await?;
    let d = deps(&cfg, verifier)?;
    let cert = cfg.tls_cert.clone();
    let server = QueryServer::build(cfg, d).await?;
    let shutdown = artstore_storage_element::server::shutdown_signal();
    match (tls, cert) {
        (Some(t), Some(c)) => {
            artstore_shared::tls::export_expiry(&server.health, c.as_path())?;
            server.run(artstore_shared::tls::TlsListener::new(listener, t)?, shutdown).await
        }
        _ => server.run(listener, shutdown).await,
    }
}

/// Tools do not verify tokens; they only need the sources.
fn tool_sources(cfg: &QueryConfig) -> anyhow::Result<Arc<feed::Sources>> {
    let root = server::index_dir(cfg)?;
    let verifier =
        Arc::new(TokenVerifier::new(JwksSource::parse(""), VerifierConfig::default(), Arc::new(SystemClock)));
    let mut d = deps(cfg, verifier)?;
    server::sources(cfg, &root, &mut d)
}

async fn wait_for_elements(sources: &feed::Sources) {
    for _ in 0..50 {
        if !sources.discovery.elements().is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_report(r: &ReindexReport) {
    println!(
        "reindex: {} element(s), {} listed, {} indexed, {} already current, {} extraction failure(s), {} error(s){} in {:.1} s",
        r.elements,
        r.listed,
        r.indexed,
        r.up_to_date,
        r.extraction_failed,
        r.errors,
        if r.resumed { ", resumed" } else { "" },
        r.seconds
    );
}

async fn reindex(args: QueryArgs, element: Option<&str>, fresh: bool) -> anyhow::Result<ExitCode> {
    let cfg = settings(args)?;
    telemetry::init(cfg.log_format, "warn");
    let root = server::index_dir(&cfg)?;
    let sources = tool_sources(&cfg)?;
    let (index, _) = layout::open_live(&root)?;
    let mut writer = index.writer(cfg.writer_heap_mib << 20).map_err(|e| anyhow::anyhow!("{}: {e}", root.display()))?;
    if fresh {
        writer.clear()?;
        let (w, r) = feed::commit(writer, Some(String::new())).await;
        r?;
        writer = w;
    }
    wait_for_elements(&sources).await;
    let pb = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    let pb2 = pb.clone();
    let progress = move |r: &ReindexReport, el: &str| {
        pb2.set_message(format!(
            "element {el}: {} listed, {} indexed, {} current, {} extraction failures, {:.0} docs/s",
            r.listed,
            r.indexed,
            r.up_to_date,
            r.extraction_failed,
            r.listed as f64 / r.seconds.max(0.001)
        ));
    };
    let result = feed::reindex(writer, &sources, element, &progress).await;
    pb.finish_and_clear();
    match result {
        Ok((w, report)) => {
            tokio::task::spawn_blocking(move || w.close()).await??;
            print_report(&report);
            Ok(if report.errors == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Err((w, e)) => {
            let _ = tokio::task::spawn_blocking(move || w.close()).await;
            anyhow::bail!("{}: reindex stopped: {e} (run it again to resume)", root.display())
        }
    }
}

async fn check_index(args: QueryArgs, repair: bool) -> anyhow::Result<ExitCode> {
    let cfg = settings(args)?;
    telemetry::init(cfg.log_format, "warn");
    let root = server::index_dir(&cfg)?;
    let sources = tool_sources(&cfg)?;
    let (index, _) = layout::open_live(&root)?;
    let writer = if repair {
        Some(index.writer(cfg.writer_heap_mib << 20).map_err(|e| anyhow::anyhow!("{}: {e}", root.display()))?)
    } else {
        None
    };
    wait_for_elements(&sources).await;
    let (writer, report) = feed::check(writer, &index, &sources, repair).await?;
    if let Some(w) = writer {
        tokio::task::spawn_blocking(move || w.close()).await??;
    }
    for d in &report.drift {
        let detail = match d.kind {
            "missing" => format!(
                "element {} holds revision {}",
                d.element_id.as_deref().unwrap_or("?"),
                d.element_revision.unwrap_or(0)
            ),
            "stale" => format!(
                "index has revision {}, element {} holds {}",
                d.index_revision.unwrap_or(0),
                d.element_id.as_deref().unwrap_or("?"),
                d.element_revision.unwrap_or(0)
            ),
            _ => format!("index has revision {}, no element holds it", d.index_revision.unwrap_or(0)),
        };
        println!("{} {}: {detail}", d.kind, d.file_id);
    }
    let count = |k: &str| report.drift.iter().filter(|d| d.kind == k).count();
    println!(
        "check-index: {} element(s), {} listed, {} in the index; {} missing, {} extra, {} stale{}",
        report.elements,
        report.listed,
        report.indexed,
        count("missing"),
        count("extra"),
        count("stale"),
        if repair { format!("; {} repaired", report.repaired) } else { String::new() }
    );
    Ok(if report.drift.is_empty() || repair { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Whether the command line asks for an extraction worker.
pub fn is_extract_worker(cli: &cli::Cli) -> bool {
    matches!(&cli.command, cli::Command::Query(q) if matches!(q.action, Some(QueryAction::ExtractWorker)))
}
