//! `docker-compose.yml` cannot be run here (no Docker engine), so it is checked the way Compose
//! would read it: every service runs a binary this workspace builds and the image copies, and
//! every service's configuration — `deploy/receipts.toml` plus the `RECEIPTS_*` variables the
//! compose file sets — loads and validates, with no variable that names an unknown key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use receipts_runtime::config::{Loader, Validate};
use serde::Serialize;
use serde::de::DeserializeOwned;
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn key(name: &str) -> Yaml {
    Yaml::String(name.to_owned())
}

/// A service's mapping with YAML merge keys (`<<: *service`) applied.
fn merged(service: &Yaml) -> BTreeMap<String, Yaml> {
    let mut out = BTreeMap::new();
    let Yaml::Hash(hash) = service else {
        return out;
    };
    if let Some(Yaml::Hash(base)) = hash.get(&key("<<")) {
        for (k, v) in base {
            out.insert(k.as_str().unwrap().to_owned(), v.clone());
        }
    }
    for (k, v) in hash {
        if k.as_str() != Some("<<") {
            out.insert(k.as_str().unwrap().to_owned(), v.clone());
        }
    }
    out
}

/// Whether the dotted `path` is a key of the serialised default configuration.
fn knows(defaults: &serde_json::Value, path: &[String]) -> bool {
    let mut at = defaults;
    for part in path {
        match at.get(part.as_str()) {
            Some(next) => at = next,
            None => return false,
        }
    }
    true
}

fn check_config<T: DeserializeOwned + Serialize + Default + Validate>(
    service: &str,
    env: &[(String, String)],
) {
    let defaults = serde_json::to_value(T::default()).unwrap();
    for (name, _) in env {
        let path: Vec<String> = name
            .trim_start_matches("RECEIPTS_")
            .split("__")
            .map(|p| p.to_ascii_lowercase())
            .collect();
        assert!(
            name == "RECEIPTS_CONFIG" || knows(&defaults, &path),
            "{service}: {name} names no configuration key"
        );
    }
    Loader::new()
        .file(repo().join("deploy/receipts.toml"))
        .env_from(env.iter().cloned())
        .load::<T>()
        .unwrap_or_else(|e| panic!("{service}: the compose configuration does not load: {e}"));
}

#[test]
fn the_compose_file_runs_our_binaries_with_valid_configuration() {
    let text = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    let docs = YamlLoader::load_from_str(&text).expect("docker-compose.yml is valid YAML");
    let services = &docs[0]["services"];
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let Yaml::Hash(services) = services else {
        panic!("no services")
    };
    let mut checked = Vec::new();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        let service = merged(service);
        if service.contains_key("image") {
            continue; // Kafka itself
        }
        let command = service["command"][0]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no command"));
        assert!(
            dockerfile.contains(&format!("target/release/{command}")),
            "{name}: the image does not contain {command}"
        );
        let env: Vec<(String, String)> = match service.get("environment") {
            Some(Yaml::Hash(vars)) => vars
                .iter()
                .map(|(k, v)| {
                    let value = match v {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        other => panic!("{name}: unexpected value {other:?}"),
                    };
                    (k.as_str().unwrap().to_owned(), value)
                })
                .collect(),
            _ => Vec::new(),
        };
        match command {
            "receipts-ingest" => check_config::<receipts_ingest::config::IngestConfig>(name, &env),
            "receipts-projector" => check_config::<receipts_projector::ProjectorConfig>(name, &env),
            "receipts-query" => check_config::<receipts_query::QueryConfig>(name, &env),
            "receipts-dispatcher" => {
                check_config::<receipts_dispatcher::DispatcherConfig>(name, &env)
            }
            other => panic!("{name}: unknown binary {other}"),
        }
        checked.push(command.to_owned());
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "receipts-dispatcher",
            "receipts-ingest",
            "receipts-projector",
            "receipts-query"
        ]
    );
}
