//! Turning what Swarm and operators write into the model: the JSON arrays `docker node
//! inspect`, `docker service inspect` and the Engine API's `GET /tasks` return (parsed with
//! `bollard-stubs`' models, so the field names are Docker's own), and a compact TOML (or JSON
//! object) form for hand-written clusters.
//!
//! Every error names the file and the field: `nodes.json:1:230: [3].Spec.Role: unknown
//! variant…`, `services.toml: TOML parse error at line 7, column 1 … unknown field`. Parsing
//! only — the caller reads the file — so the engine crate stays free of I/O.

mod compact;
pub mod docker;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use thiserror::Error;

use crate::model::{Cluster, Dataset, Node, Service, Task};

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum IngestError {
    /// JSON that does not parse or does not have Docker's shape.
    #[error("{file}:{line}:{column}: {path}: {message}")]
    Json {
        file: String,
        line: usize,
        column: usize,
        path: String,
        message: String,
    },
    /// The compact form: toml's message carries the line, column and key.
    #[error("{file}: {message}")]
    Toml { file: String, message: String },
    /// Well-formed input with a bad value.
    #[error("{file}: {path}: {message}")]
    Value {
        file: String,
        path: String,
        message: String,
    },
}

impl IngestError {
    fn value(file: &str, path: impl Into<String>, message: impl Into<String>) -> Self {
        IngestError::Value {
            file: file.to_string(),
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Parses JSON, naming the path of a bad field (`[3].Spec.Role`) and its line and column.
fn json<T: serde::de::DeserializeOwned>(file: &str, text: &str) -> Result<T, IngestError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        IngestError::Json {
            file: file.to_string(),
            line: inner.line(),
            column: inner.column(),
            path: if path == "." {
                "(top level)".into()
            } else {
                path
            },
            message: inner.to_string(),
        }
    })
}

/// How a file is written, told from its first significant byte.
enum Format {
    /// A JSON array: Docker's output (or, for datasets, an array of dataset records).
    DockerJson,
    /// A JSON object with the compact sections.
    CompactJson,
    Toml,
}

fn format_of(text: &str) -> Format {
    let t = text.trim_start();
    match t.as_bytes().first() {
        Some(b'[') if !is_toml_header(t.lines().next().unwrap_or("")) => Format::DockerJson,
        Some(b'{') => Format::CompactJson,
        _ => Format::Toml,
    }
}

/// `[name]` or `[[name]]` (optionally followed by a comment): a TOML table header, which a
/// JSON array's first line never is.
fn is_toml_header(line: &str) -> bool {
    let line = line.split('#').next().unwrap_or("").trim();
    let inner = line
        .strip_prefix("[[")
        .and_then(|l| l.strip_suffix("]]"))
        .or_else(|| line.strip_prefix('[').and_then(|l| l.strip_suffix(']')));
    inner.is_some_and(|name| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '"'))
    })
}

fn compact(file: &str, text: &str) -> Result<compact::File, IngestError> {
    match format_of(text) {
        Format::CompactJson => compact::from_json(file, text),
        _ => compact::from_toml(file, text),
    }
}

/// Nodes from `docker node inspect` JSON or a compact file's `[[nodes]]`.
pub fn nodes(file: &str, text: &str) -> Result<Vec<Node>, IngestError> {
    let nodes = match format_of(text) {
        Format::DockerJson => docker::nodes(file, text)?,
        _ => compact(file, text)?.nodes(file)?,
    };
    unique(file, "node id", nodes.iter().map(|n| n.id.0.as_str()))?;
    Ok(nodes)
}

/// Services from `docker service inspect` JSON or a compact file's `[[services]]`.
pub fn services(file: &str, text: &str) -> Result<Vec<Service>, IngestError> {
    let services = match format_of(text) {
        Format::DockerJson => docker::services(file, text)?,
        _ => compact(file, text)?.services(file)?,
    };
    unique(
        file,
        "service name",
        services.iter().map(|s| s.name.as_str()),
    )?;
    unique(file, "service id", services.iter().map(|s| s.id.0.as_str()))?;
    Ok(services)
}

/// Tasks from the Engine API's `/tasks` JSON or a compact file's `[[tasks]]` (which name their
/// service by name: see [`resolve_service_names`]).
pub fn tasks(file: &str, text: &str) -> Result<Vec<Task>, IngestError> {
    let tasks = match format_of(text) {
        Format::DockerJson => docker::tasks(file, text)?,
        _ => compact(file, text)?.tasks(file)?,
    };
    unique(
        file,
        "task id",
        tasks
            .iter()
            .map(|t| t.id.as_str())
            .filter(|id| !id.is_empty()),
    )?;
    Ok(tasks)
}

/// Berth's dataset records: a compact file's `[[datasets]]`, or a JSON array of them.
pub fn datasets(file: &str, text: &str) -> Result<Vec<Dataset>, IngestError> {
    let datasets = match format_of(text) {
        Format::DockerJson => compact::datasets_from_json_array(file, text)?,
        _ => compact(file, text)?.datasets(file)?,
    };
    unique(
        file,
        "dataset name",
        datasets.iter().map(|d| d.name.as_str()),
    )?;
    Ok(datasets)
}

/// One compact file holding every section.
pub fn cluster(file: &str, text: &str) -> Result<Cluster, IngestError> {
    if let Format::DockerJson = format_of(text) {
        return Err(IngestError::value(
            file,
            "",
            "a whole-cluster file is compact TOML or a JSON object; pass docker's arrays with --nodes/--services/--tasks",
        ));
    }
    let c = compact(file, text)?;
    let nodes = c.nodes(file)?;
    let services = c.services(file)?;
    let mut tasks = c.tasks(file)?;
    let datasets = c.datasets(file)?;
    unique(file, "node id", nodes.iter().map(|n| n.id.0.as_str()))?;
    unique(
        file,
        "service name",
        services.iter().map(|s| s.name.as_str()),
    )?;
    unique(
        file,
        "dataset name",
        datasets.iter().map(|d| d.name.as_str()),
    )?;
    resolve_service_names(&mut tasks, &services);
    Ok(Cluster {
        nodes,
        services,
        tasks,
        datasets,
    })
}

/// Compact task files name their service by name; Docker's by ID. Rewrites names to IDs where
/// a task's service matches no ID but does match a name.
pub fn resolve_service_names(tasks: &mut [Task], services: &[Service]) {
    for t in tasks {
        if !services.iter().any(|s| s.id == t.service_id)
            && let Some(s) = services.iter().find(|s| s.name == t.service_id.0)
        {
            t.service_id = s.id.clone();
        }
    }
}

fn unique<'a>(
    file: &str,
    what: &str,
    keys: impl Iterator<Item = &'a str>,
) -> Result<(), IngestError> {
    let mut seen = BTreeSet::new();
    for k in keys {
        if !seen.insert(k) {
            return Err(IngestError::value(
                file,
                what,
                format!("`{k}` appears twice"),
            ));
        }
    }
    Ok(())
}
