//! Checks the deployment files in `deploy/` against the binary: every command line in the
//! compose file and the systemd units parses as `artstore` parses it, every config file it
//! names is accepted (unknown keys are errors), every `ARTSTORE_*` variable set is one the
//! binary reads, each role ends up with the values it cannot start without, and the
//! checked-in nginx configuration is what `artstore proxy-config` prints for the topology.

use crate::cli::{Cli, Command, FileConfig};
use clap::{CommandFactory, Parser};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every `ARTSTORE_*` variable the binary reads: the flags' variables, plus the ones read
/// directly.
fn known_env() -> BTreeSet<String> {
    fn walk(c: &clap::Command, out: &mut BTreeSet<String>) {
        for a in c.get_arguments() {
            if let Some(e) = a.get_env() {
                out.insert(e.to_string_lossy().into_owned());
            }
        }
        for s in c.get_subcommands() {
            walk(s, out);
        }
    }
    let mut out = BTreeSet::from(["ARTSTORE_ADMIN_PASSWORD".to_owned()]);
    walk(&Cli::command(), &mut out);
    out
}

/// A config file named in a command line (`/etc/artstore/X.toml`), read from deploy/config.
fn config_for(args: &[String], origin: &str) -> FileConfig {
    let Some(i) = args.iter().position(|a| a == "--config") else {
        return FileConfig::default();
    };
    let name = Path::new(&args[i + 1]).file_name().unwrap();
    let path = deploy().join("config").join(name);
    crate::read_config(Some(&path)).unwrap_or_else(|e| panic!("{origin}: {e:#}"))
}

/// Parses `args` (without the program name) as the binary does and checks the resolved
/// configuration of the role.
fn check_command(args: &[String], env: &[String], origin: &str) {
    let known = known_env();
    for e in env.iter().filter(|e| e.starts_with("ARTSTORE_")) {
        assert!(known.contains(e), "{origin}: {e} is not a variable artstore reads");
    }
    let argv = std::iter::once("artstore".to_owned()).chain(args.iter().cloned());
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{origin}: artstore refuses {args:?}:\n{e}"));
    let file = config_for(args, origin);
    let set = |name: &str| env.iter().any(|e| e == name);
    match cli.command {
        Command::Admin(cmd) => {
            assert!(cmd.action.is_none(), "{origin}: not a server command");
            let cfg = cmd.run.merge(file.admin);
            assert!(cfg.data.is_some(), "{origin}: the admin node has no data folder");
            assert!(cfg.node_id > 0, "{origin}: no node id");
            assert!(cfg.peers.is_some(), "{origin}: no peers");
            assert!(cfg.cluster_secret.is_some() || set("ARTSTORE_CLUSTER_SECRET"), "{origin}: no cluster secret");
        }
        Command::StorageElement(cmd) => {
            assert!(cmd.action.is_none(), "{origin}: not a server command");
            let cfg = cmd.run.merge(file.storage_element);
            assert!(cfg.data.is_some(), "{origin}: the element has no data folder");
            assert!(cfg.jwks.is_some(), "{origin}: the element has no key source");
            assert!(cfg.cache.is_some() || set("ARTSTORE_CACHE"), "{origin}: the element has no PostgreSQL cache");
        }
        Command::Ingester(a) => {
            let cfg = a.merge(file.ingester);
            assert!(cfg.data.is_some() && cfg.jwks.is_some(), "{origin}: the ingester needs data and jwks");
            assert!(cfg.redis.is_some(), "{origin}: the ingester finds no elements without redis");
        }
        Command::Query(cmd) => {
            assert!(cmd.action.is_none(), "{origin}: not a server command");
            let cfg = cmd.run.merge(file.query);
            assert!(cfg.index.is_some() && cfg.jwks.is_some(), "{origin}: the query role needs index and jwks");
            assert!(cfg.client_id.is_some() && set("ARTSTORE_CLIENT_SECRET"), "{origin}: no service account");
        }
        other => panic!("{origin}: {other:?} is not a role"),
    }
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn compose_services_use_commands_flags_and_keys_the_binary_accepts() {
    let compose = yaml(&deploy().join("docker-compose.yml"));
    let services = compose["services"].as_object().expect("services");
    let mut roles = BTreeSet::new();
    for (name, svc) in services {
        if svc["image"].as_str() != Some("artstore:latest") {
            continue;
        }
        let args: Vec<String> = svc["command"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: command as a list"))
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        let env: Vec<String> = svc["environment"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        // The config file it names is mounted from deploy/config.
        if let Some(i) = args.iter().position(|a| a == "--config") {
            let mounted = svc["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .any(|v| v.split(':').nth(1) == Some(args[i + 1].as_str()) && v.starts_with("./config/"));
            assert!(mounted, "{name}: {} is not mounted from ./config", args[i + 1]);
        }
        check_command(&args, &env, &format!("docker-compose.yml service {name}"));
        roles.insert(args[0].clone());
    }
    assert_eq!(roles, BTreeSet::from(["admin", "ingester", "query", "storage-element"].map(String::from)));
    for dep in ["front", "postgres", "redis", "kafka"] {
        assert!(services.contains_key(dep), "the compose file has no {dep}");
    }
}

#[test]
fn systemd_units_start_commands_the_binary_accepts() {
    let mut seen = 0;
    for entry in std::fs::read_dir(deploy().join("systemd")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let instance = if path.to_string_lossy().contains("admin@") { "1" } else { "se-1" };
        let exec = text.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
        let mut words = exec.split_whitespace().map(|w| w.replace("%i", instance));
        assert_eq!(words.next().as_deref(), Some("/usr/local/bin/artstore"), "{}", path.display());
        let args: Vec<String> = words.collect();
        // Variables the unit's EnvironmentFile is documented to hold.
        let env: Vec<String> = ["ARTSTORE_CLUSTER_SECRET", "ARTSTORE_CACHE", "ARTSTORE_CLIENT_SECRET"]
            .into_iter()
            .filter(|v| text.contains(v))
            .map(String::from)
            .collect();
        check_command(&args, &env, &path.display().to_string());
        for must in ["NoNewPrivileges=yes", "ProtectSystem=strict", "User=artstore", "StateDirectory="] {
            assert!(text.contains(must), "{}: no {must}", path.display());
        }
        systemd_verify(&path, &text, instance);
        seen += 1;
    }
    assert_eq!(seen, 4);
}

/// `systemd-analyze verify` on a copy of the unit (as an instance for templates, with an
/// executable that exists here): every directive known, every value valid.
fn systemd_verify(path: &Path, text: &str, instance: &str) {
    let Ok(out) = std::process::Command::new("systemd-analyze").arg("--version").output() else {
        assert!(std::env::var_os("CI").is_none(), "systemd-analyze is missing (Debian's systemd package)");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let name = path.file_name().unwrap().to_string_lossy().replace("@.", &format!("@{instance}."));
    let copy = dir.path().join(name);
    std::fs::write(&copy, text.replace("/usr/local/bin/artstore", "/bin/true")).unwrap();
    let out = std::process::Command::new("systemd-analyze").arg("verify").arg(&copy).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "{}: systemd-analyze verify says:\n{said}", path.display());
}

#[test]
fn every_example_config_is_accepted() {
    for entry in std::fs::read_dir(deploy().join("config")).unwrap() {
        let path = entry.unwrap().path();
        crate::read_config(Some(&path)).unwrap_or_else(|e| panic!("{e:#}"));
    }
}

#[test]
fn the_compose_front_proxy_config_is_what_proxy_config_prints() {
    let want = artstore_shared::front_proxy::nginx(&artstore_shared::front_proxy::ProxyConfig {
        listen: "8080".into(),
        admin: vec!["admin-1:8090".into(), "admin-2:8090".into(), "admin-3:8090".into()],
        ingester: vec!["ingester:8082".into()],
        query: vec!["query:8083".into()],
        ..Default::default()
    });
    let have = std::fs::read_to_string(deploy().join("nginx/artstore.conf")).unwrap();
    assert!(
        have == want,
        "deploy/nginx/artstore.conf is out of date: regenerate it with\n  artstore proxy-config --listen 8080 \
         --admin admin-1:8090,admin-2:8090,admin-3:8090 --ingester ingester:8082 --query query:8083 > deploy/nginx/artstore.conf"
    );
}
