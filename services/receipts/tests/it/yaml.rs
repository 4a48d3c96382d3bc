//! YAML documents of the repository (`docs/asyncapi.yaml`, `deploy/prometheus/*.yml`) as JSON
//! values, the shape the JSON Schema validator and the checks read.

use std::path::{Path, PathBuf};

use serde_json::{Map, Number, Value};
use yaml_rust2::{Yaml, YamlLoader};

pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The single document of the YAML file at `path` (relative to the repository root).
pub(crate) fn load(path: &str) -> Value {
    let text = std::fs::read_to_string(repo().join(path))
        .unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let mut documents =
        YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"));
    assert_eq!(documents.len(), 1, "{path} holds one document");
    to_json(path, &documents.remove(0))
}

fn to_json(path: &str, yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::Number((*i).into()),
        Yaml::Real(text) => Value::Number(
            text.parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .unwrap_or_else(|| panic!("{path}: {text} is not a finite number")),
        ),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(items.iter().map(|item| to_json(path, item)).collect()),
        Yaml::Hash(hash) => {
            let mut map = Map::new();
            for (key, value) in hash {
                let key = match key {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    other => panic!("{path}: unexpected mapping key {other:?}"),
                };
                map.insert(key, to_json(path, value));
            }
            Value::Object(map)
        }
        other => panic!("{path}: unexpected YAML node {other:?}"),
    }
}
