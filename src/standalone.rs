//! `artstore standalone`: the whole product in one process on one port. A one-node admin
//! cluster, one storage element (on an internal listener), the ingester, the query role and
//! the web UI, wired with the in-process event bus and a fixed element list, and served by
//! the public routing table ([`artstore_shared::routing`]).

use crate::cli::StandaloneArgs;
use crate::{listen, read_config, verifier_from};
use anyhow::Context as _;
use artstore_admin::config::AdminConfig;
use artstore_admin::network::Faults;
use artstore_admin::server::AdminServer;
use artstore_shared::Clock;
use artstore_shared::auth::{JWKS_FILE, JwksSource, LocalSigner};
use artstore_shared::clock::SystemClock;
use artstore_shared::routing::{Routes, Target, one_port};
use artstore_shared::telemetry;
use artstore_shared::tls::PeerAddr;
use artstore_storage_element::config::ElementConfig;
use artstore_storage_element::server::{Element, shutdown_signal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The folders of a standalone installation.
pub(crate) struct StandalonePaths {
    pub keys: PathBuf,
    pub element: PathBuf,
    pub admin: PathBuf,
    pub ingester: PathBuf,
    pub query: PathBuf,
}

pub(crate) fn standalone_paths(data: &Path) -> StandalonePaths {
    StandalonePaths {
        keys: data.join("keys"),
        element: data.join("element"),
        admin: data.join("admin"),
        ingester: data.join("ingester"),
        query: data.join("query"),
    }
}

/// The id standalone registers its element under.
const STANDALONE_ELEMENT_ID: &str = "standalone";

pub(crate) async fn run(args: StandaloneArgs) -> anyhow::Result<()> {
    let file = read_config(args.config.as_deref())?;
    let cfg = args.merge(file.standalone);
    telemetry::init(cfg.log_format, "info,openraft=warn");
    let paths = standalone_paths(&cfg.data);
    let signer = LocalSigner::load_or_create(&paths.keys).with_context(|| format!("{}", paths.keys.display()))?;

    // The one public listener serves each role as soon as it is built: the element below
    // reads the admin's keys through it.
    let listener = listen(&cfg.listen).await?;
    let addr = listener.local_addr()?;
    let public = format!("http://{addr}");
    let routes = Routes::default();
    let app = one_port(routes.clone()).into_make_service_with_connect_info::<PeerAddr>();
    let server =
        tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await });

    // A one-node admin cluster: users log in there and get tokens.
    let admin_cfg = AdminConfig {
        data: Some(paths.admin.clone()),
        listen: addr.to_string(),
        log_format: cfg.log_format,
        ..Default::default()
    };
    let admin = AdminServer::build(admin_cfg, Faults::default()).await?;
    let node = admin.node.clone();
    routes.set(Target::Admin, admin.router.clone());
    let extra_admin = match &cfg.admin_listen {
        Some(a) => Some(serve_extra(a, admin.router.clone()).await?),
        None => None,
    };
    node.wait_ready(Duration::from_secs(60)).await?;

    // The storage element on its internal listener; it verifies the admin's tokens and
    // those of `artstore token` (the local key).
    let element_listener = listen(&cfg.element_listen).await?;
    let element_addr = element_listener.local_addr()?;
    let element_url = format!("http://{element_addr}");
    let element_cfg = ElementConfig {
        data: Some(paths.element.clone()),
        listen: element_addr.to_string(),
        admin_url: Some(public.clone()),
        element_id: Some(STANDALONE_ELEMENT_ID.to_owned()),
        log_format: cfg.log_format,
        ..Default::default()
    };
    let source = JwksSource::Any(vec![
        JwksSource::Url(format!("{public}/.well-known/jwks.json")),
        JwksSource::File(paths.keys.join(JWKS_FILE)),
    ]);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let verifier = verifier_from(source, &element_cfg, clock.clone());
    verifier.load().await?;
    // The element's own clock (a test clock in fault drills; tokens keep the wall clock).
    let element = Element::build(element_cfg, verifier.clone(), artstore_shared::clock::from_env()).await?;
    register_standalone_element(&node, &element_url, element.store.mode().as_str()).await?;
    let bus = element.bus.clone();
    let element_health = element.health.clone();
    let element_task = tokio::spawn(element.run(element_listener, shutdown_signal()));
    let elements = format!("{STANDALONE_ELEMENT_ID}={element_url}");

    // The ingester: uploads and writes on existing documents, to the one element.
    let ingester_cfg = artstore_ingester::config::IngesterConfig {
        data: Some(paths.ingester.clone()),
        listen: addr.to_string(),
        admin_url: Some(public.clone()),
        elements: Some(elements.clone()),
        log_format: cfg.log_format,
        ..Default::default()
    };
    let ingester = artstore_ingester::server::IngesterServer::build(ingester_cfg, verifier.clone()).await?;
    let ingester_workers = ingester.spawn_workers();
    routes.set(Target::Ingester, ingester.router.clone());

    // The query role, fed by the element's in-process events; it reads the element under a
    // token it signs itself with the local key.
    let query_cfg = artstore_query::config::QueryConfig {
        index: Some(paths.query.clone()),
        listen: addr.to_string(),
        log_format: cfg.log_format,
        reconcile_on_start: true,
        ..Default::default()
    };
    let local = LocalSigner::load_or_create(&paths.keys).with_context(|| format!("{}", paths.keys.display()))?;
    let mint: artstore_shared::clients::MintFn = Box::new(move || {
        let ttl = Duration::from_secs(900);
        local
            .issue("query", &["reader".to_owned()], ttl, chrono::Utc::now())
            .map(|t| (t, ttl))
            .map_err(|e| e.to_string())
    });
    let exe = std::env::current_exe().context("cannot find the artstore binary for extraction workers")?;
    let pool = artstore_query::extractor::Extractor::processes(artstore_query::server::extractor_config(
        &query_cfg,
        exe,
        vec!["query".into(), "extract-worker".into()],
    ));
    let discovery: Arc<dyn artstore_shared::discovery::Discovery> =
        Arc::new(artstore_shared::discovery::StaticDiscovery::start(
            vec![(STANDALONE_ELEMENT_ID.to_owned(), element_url.clone())],
            Default::default(),
        ));
    let query = artstore_query::server::QueryServer::build(
        query_cfg,
        artstore_query::server::QueryDeps {
            verifier,
            token: Some(artstore_shared::clients::ServiceToken::minted(mint)),
            bus: Some(bus),
            extractor: Some(Arc::new(pool)),
            discovery: Some(discovery),
        },
    )
    .await?;
    let query_workers = query.spawn_workers();
    routes.set(Target::Query, query.router.clone());
    let extra_query = match &cfg.query_listen {
        Some(a) => Some(serve_extra(a, query.router.clone()).await?),
        None => None,
    };

    // The one port's readiness is every role's.
    let roles = vec![
        ("admin", admin.health.clone()),
        ("element", element_health),
        ("ingester", ingester.health.clone()),
        ("query", query.health.clone()),
    ];
    routes.set(Target::Admin, artstore_shared::health::combined_ready(roles).fallback_service(admin.router.clone()));

    // The web UI, a client of the same port.
    let ui = artstore_ui::UiState::new(artstore_ui::UiConfig { api: public.clone(), secure_cookies: false })?;
    routes.set(Target::Ui, artstore_ui::router(ui));

    let data = cfg.data.display();
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "artstore".to_owned());
    let password = match node.generated_password() {
        Some(p) => format!("{p}   (generated now, shown once)"),
        None if std::env::var_os("ARTSTORE_ADMIN_PASSWORD").is_some() => {
            "the one in ARTSTORE_ADMIN_PASSWORD at the first start".to_owned()
        }
        None => "(set at first start: ARTSTORE_ADMIN_PASSWORD or the one printed then)".to_owned(),
    };
    eprintln!(
        "\nArtStore standalone is running\n  open:            {public}/   (web UI and the whole API on this one port)\n  login:           user admin, password {password}\n  data:            {data}\n  storage element: {element_url}   (internal)\n  get a token:     curl -s -d grant_type=password -d username=admin -d password=... {public}/api/v1/auth/token\n  local token:     {exe} token --data {data} --role admin   (key id {})\n",
        signer.kid()
    );

    let served = server.await.context("the listener task failed")?;
    for extra in [extra_admin, extra_query].into_iter().flatten() {
        let _ = extra.await;
    }
    query_workers.stop().await;
    ingester_workers.stop().await;
    let _ = element_task.await;
    admin.stop().await;
    served.map_err(Into::into)
}

/// Also serves one role's router on its own address (`--admin-listen`, `--query-listen`).
async fn serve_extra(addr: &str, router: axum::Router) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = listen(addr).await?;
    let app = router.into_make_service_with_connect_info::<PeerAddr>();
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await {
            tracing::warn!(error = %e, "extra listener failed");
        }
    }))
}

/// Makes sure the admin's registry knows the standalone element at its current internal
/// address (so mode changes through the admin reach it).
async fn register_standalone_element(node: &artstore_admin::node::Node, url: &str, mode: &str) -> anyhow::Result<()> {
    let known = node.read(|s| s.elements.get(STANDALONE_ELEMENT_ID).map(|e| e.url.clone()));
    let op = match known {
        Some(u) if u == url => return Ok(()),
        Some(_) => artstore_admin::state::Op::UpdateElement {
            id: STANDALONE_ELEMENT_ID.to_owned(),
            url: Some(url.to_owned()),
            capacity_bytes: None,
            weight: None,
            dc: None,
            labels: None,
        },
        None => {
            let now = chrono::Utc::now();
            artstore_admin::state::Op::CreateElement {
                element: artstore_admin::state::Element {
                    id: STANDALONE_ELEMENT_ID.to_owned(),
                    url: url.to_owned(),
                    mode: mode.to_owned(),
                    capacity_bytes: 0,
                    weight: 1,
                    dc: String::new(),
                    labels: Default::default(),
                    created_at: now,
                    updated_at: now,
                },
            }
        }
    };
    node.write(artstore_admin::node::SYSTEM_ACTOR, None, op)
        .await
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("registering the standalone element: {}", e.detail))
}
