//! `docker-compose.yml` cannot be run here (no Docker engine), so it is checked the way Compose
//! would read it: every service runs a binary this workspace builds and the image copies, and
//! every service's configuration — `deploy/receipts.toml` plus the `RECEIPTS_*` variables the
//! compose file sets — loads and validates, with no variable that names an unknown key.
//!
//! The file documents `docker compose up --scale …` in its header; what makes that work is
//! checked here too: a scaled service has no `container_name` and no fixed host port (a host
//! port range covers its replicas), mounts no named or bind volume (sled allows one process per
//! directory, so each replica gets its own anonymous volume), and keeps its data directory inside
//! that volume; a service scaled by consumer group has a partition for every replica; and
//! README.md shows the same command.

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

/// The `environment` mapping of a (merged) service as name and value.
fn environment(name: &str, service: &BTreeMap<String, Yaml>) -> Vec<(String, String)> {
    match service.get("environment") {
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
    }
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

/// The configuration `service` loads, as JSON, after checking that every variable names a key.
fn check_config<T: DeserializeOwned + Serialize + Default + Validate>(
    service: &str,
    env: &[(String, String)],
) -> serde_json::Value {
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
    let config = Loader::new()
        .file(repo().join("deploy/receipts.toml"))
        .env_from(env.iter().cloned())
        .load::<T>()
        .unwrap_or_else(|e| panic!("{service}: the compose configuration does not load: {e}"));
    serde_json::to_value(config).unwrap()
}

/// The checked configuration of the service `name`, which runs `command`.
fn service_config(name: &str, command: &str, env: &[(String, String)]) -> serde_json::Value {
    match command {
        "receipts-ingest" => check_config::<receipts_ingest::config::IngestConfig>(name, env),
        "receipts-projector" => check_config::<receipts_projector::ProjectorConfig>(name, env),
        "receipts-query" => check_config::<receipts_query::QueryConfig>(name, env),
        "receipts-dispatcher" => check_config::<receipts_dispatcher::DispatcherConfig>(name, env),
        other => panic!("{name}: unknown binary {other}"),
    }
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
        let env = environment(name, &service);
        service_config(name, command, &env);
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

/// The scale command the header documents, and its `--scale service=N` pairs.
fn documented_scale(text: &str) -> (String, BTreeMap<String, u16>) {
    let line = text
        .lines()
        .take_while(|line| line.starts_with('#'))
        .find(|line| line.contains("docker compose up") && line.contains("--scale"))
        .expect("the header documents a `docker compose up --scale` command");
    let command = line.trim_start_matches('#').trim().to_owned();
    let words: Vec<&str> = command.split_whitespace().collect();
    let mut scale = BTreeMap::new();
    for pair in words.windows(2) {
        if pair[0] == "--scale" {
            let (service, replicas) = pair[1].split_once('=').expect("--scale SERVICE=N");
            let replicas = replicas.parse().expect("a number of replicas");
            scale.insert(service.to_owned(), replicas);
        }
    }
    (command, scale)
}

/// How many replicas can publish a `ports` entry side by side: as many as the host port range
/// is wide, one for a fixed host port, any number (None) when Docker picks the host port.
fn host_ports(entry: &Yaml) -> Option<u32> {
    let published = match entry {
        Yaml::Integer(_) => return None,
        Yaml::String(spec) => {
            // [ip:][host:]container[/protocol]
            let spec = spec.split('/').next().unwrap();
            spec.rsplit(':').nth(1).unwrap_or("").to_owned()
        }
        Yaml::Hash(_) => match &entry["published"] {
            Yaml::Integer(port) => port.to_string(),
            Yaml::String(port) => port.clone(),
            _ => String::new(),
        },
        other => panic!("unexpected ports entry {other:?}"),
    };
    if published.is_empty() {
        return None;
    }
    let port = |p: &str| -> u32 { p.parse().unwrap_or_else(|_| panic!("host port {p}")) };
    Some(match published.split_once('-') {
        Some((low, high)) => port(high) - port(low) + 1,
        None => 1,
    })
}

/// The source of a `volumes` entry (None for an anonymous volume) and where it is mounted.
fn mount(entry: &Yaml) -> (Option<String>, PathBuf) {
    match entry {
        Yaml::String(spec) => match spec.split_once(':') {
            None => (None, PathBuf::from(spec)),
            Some((source, rest)) => {
                let target = rest.split(':').next().unwrap();
                (Some(source.to_owned()), PathBuf::from(target))
            }
        },
        Yaml::Hash(_) => {
            let target = entry["target"].as_str().expect("a mount target");
            (
                entry["source"].as_str().map(str::to_owned),
                PathBuf::from(target),
            )
        }
        other => panic!("unexpected volumes entry {other:?}"),
    }
}

#[test]
fn the_documented_scale_command_works_with_the_compose_file() {
    let text = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    let docs = YamlLoader::load_from_str(&text).expect("docker-compose.yml is valid YAML");
    let services = &docs[0]["services"];
    let (command, scale) = documented_scale(&text);
    for stateful in ["projector", "dispatcher", "query"] {
        assert!(
            scale.get(stateful).is_some_and(|&n| n > 1),
            "`{command}` scales no {stateful}"
        );
    }
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains(&command),
        "README.md does not show the compose file's `{command}`"
    );

    for (name, &replicas) in &scale {
        let service = merged(&services[name.as_str()]);
        assert!(
            !service.is_empty(),
            "{name}: `{command}` scales no such service"
        );
        assert!(
            !service.contains_key("container_name"),
            "{name}: a container_name names one container, so a second replica cannot start"
        );
        if let Some(Yaml::Array(ports)) = service.get("ports") {
            for entry in ports {
                if let Some(width) = host_ports(entry) {
                    assert!(
                        width >= u32::from(replicas),
                        "{name}: {entry:?} has host ports for {width} of its {replicas} replicas"
                    );
                }
            }
        }
        let mounts: Vec<(Option<String>, PathBuf)> = match service.get("volumes") {
            Some(Yaml::Array(volumes)) => volumes.iter().map(mount).collect(),
            _ => Vec::new(),
        };
        for (source, target) in &mounts {
            if let Some(source) = source {
                panic!(
                    "{name}: {} is mounted from {source}, which every replica would share \
                     (sled allows one process per directory)",
                    target.display()
                );
            }
        }

        let binary = service["command"][0].as_str().unwrap();
        let config = service_config(name, binary, &environment(name, &service));
        if let Some(data_dir) = config.get("data_dir") {
            let data_dir = Path::new(data_dir.as_str().unwrap());
            assert!(
                data_dir.is_absolute() && mounts.iter().any(|(_, at)| data_dir.starts_with(at)),
                "{name}: the data directory {} is not inside a volume of the replica's own",
                data_dir.display()
            );
        }
        // Replicas in one consumer group split the partitions; one without a partition idles.
        if config.get("group_id").is_some() {
            let partitions = config["create_topics_partitions"].as_i64().unwrap();
            assert!(
                partitions >= i64::from(replicas),
                "{name}: {replicas} replicas share {partitions} partitions"
            );
        }
    }
}
