//! Turning what Swarm and operators write into the model: the JSON arrays `docker node
//! inspect`, `docker service inspect` and the Engine API's `GET /tasks` return (read element
//! by element as the caller feeds chunks, only the fields placement uses; `bollard-stubs`'
//! models, whose field names are Docker's own, decide every error), and a compact TOML (or
//! JSON object) form for hand-written clusters.
//!
//! Every error names the file and the field: `nodes.json:1:230: [3].Spec.Role: unknown
//! variant…`, `services.toml: TOML parse error at line 7, column 1 … unknown field`. Parsing
//! only — the caller reads the file and feeds its bytes — so the engine crate stays free of
//! I/O.

mod compact;
pub mod docker;
mod fast;
mod stream;
#[cfg(test)]
mod tests;

pub use stream::ArrayReader;

use crate::{FastMap, FastSet};

use thiserror::Error;

use crate::model::{Cluster, Dataset, Node, Service, ServiceId, Task};

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

/// Whether a file starting with `head` (its first chunk is enough) is one of Docker's JSON
/// arrays, to be read with an [`ArrayReader`]; anything else is the compact form.
pub fn is_docker_json(head: &[u8]) -> bool {
    let head = match std::str::from_utf8(head) {
        Ok(s) => s,
        // Cut inside a character at the chunk's end: the text before it decides.
        Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default(),
    };
    matches!(format_of(head), Format::DockerJson)
}

/// A reader of `docker node inspect` output, fed in chunks.
pub fn node_reader(file: &str) -> ArrayReader<Node> {
    ArrayReader::new(file)
}

/// A reader of the Engine API's `/tasks` output, fed in chunks.
pub fn task_reader(file: &str) -> ArrayReader<Task> {
    ArrayReader::new(file)
}

/// A reader of `docker service inspect` output, fed in chunks.
pub fn service_reader(file: &str) -> ArrayReader<Service> {
    ArrayReader::new(file)
}

/// A whole Docker JSON array held in memory.
fn docker_array<T: stream::Element>(file: &str, text: &str) -> Result<Vec<T>, IngestError> {
    let mut r = ArrayReader::new(file);
    r.feed(text.as_bytes())?;
    r.finish()
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
        Format::DockerJson => return docker_array(file, text),
        _ => compact(file, text)?.nodes(file)?,
    };
    check_nodes(file, &nodes)?;
    Ok(nodes)
}

fn check_nodes(file: &str, nodes: &[Node]) -> Result<(), IngestError> {
    unique(file, "node id", nodes.iter().map(|n| n.id.0.as_str()))
}

fn check_services(file: &str, services: &[Service]) -> Result<(), IngestError> {
    unique(
        file,
        "service name",
        services.iter().map(|s| s.name.as_str()),
    )?;
    unique(file, "service id", services.iter().map(|s| s.id.0.as_str()))
}

fn check_tasks(file: &str, tasks: &[Task]) -> Result<(), IngestError> {
    unique(
        file,
        "task id",
        tasks
            .iter()
            .map(|t| t.id.as_str())
            .filter(|id| !id.is_empty()),
    )
}

/// Services from `docker service inspect` JSON or a compact file's `[[services]]`.
pub fn services(file: &str, text: &str) -> Result<Vec<Service>, IngestError> {
    let services = match format_of(text) {
        Format::DockerJson => return docker_array(file, text),
        _ => compact(file, text)?.services(file)?,
    };
    check_services(file, &services)?;
    Ok(services)
}

/// Tasks from the Engine API's `/tasks` JSON or a compact file's `[[tasks]]` (which name their
/// service by name: see [`resolve_service_names`]).
pub fn tasks(file: &str, text: &str) -> Result<Vec<Task>, IngestError> {
    let tasks = match format_of(text) {
        Format::DockerJson => return docker_array(file, text),
        _ => compact(file, text)?.tasks(file)?,
    };
    check_tasks(file, &tasks)?;
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
    // Indexed once: 100k tasks of 100 services.
    let ids: FastSet<&str> = services.iter().map(|s| s.id.0.as_str()).collect();
    let by_name: FastMap<&str, &ServiceId> =
        services.iter().map(|s| (s.name.as_str(), &s.id)).collect();
    for t in tasks {
        if !ids.contains(t.service_id.0.as_str())
            && let Some(id) = by_name.get(t.service_id.0.as_str())
        {
            t.service_id = (*id).clone();
        }
    }
}

/// The first key given twice, in input order. A hash set (membership only, never iterated):
/// 100k task IDs.
fn unique<'a>(
    file: &str,
    what: &str,
    keys: impl Iterator<Item = &'a str>,
) -> Result<(), IngestError> {
    let mut seen = FastSet::default();
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
