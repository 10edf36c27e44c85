//! Reading the input files. The only place the CLI touches the filesystem; parsing itself is
//! the engine's `ingest` module, so the daemon and the simulator read the same formats.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

use berth_scheduler::constraint::{ConstraintError, parse_all};
use berth_scheduler::ingest;
use berth_scheduler::ingest::{ArrayReader, IngestError};
use berth_scheduler::model::LabelError;
use berth_scheduler::model::{Cluster, Node, Task};
use berth_scheduler::schedule::PlanError;

use super::Input;

pub struct Loaded {
    pub cluster: Cluster,
    nodes: PathBuf,
    services: PathBuf,
    tasks: Option<PathBuf>,
    datasets: Option<PathBuf>,
    /// The text of the services file, to point at the line of a bad label or constraint.
    services_text: String,
}

fn read(path: &Path) -> Result<(String, String)> {
    let text =
        fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    Ok((path.display().to_string(), text))
}

/// How much of a file is read at a time: large enough that a 200 MB node list costs few
/// reads, small enough that it never sits in memory whole.
const CHUNK: usize = 1 << 20;

/// A file that is either one of Docker's JSON arrays, streamed through `reader` chunk by chunk,
/// or the compact form, read whole and handed to `whole`.
fn read_streamed<T>(
    path: &Path,
    reader: fn(&str) -> ArrayReader<T>,
    whole: fn(&str, &str) -> Result<Vec<T>, IngestError>,
) -> Result<Vec<T>> {
    let name = path.display().to_string();
    let cannot = || format!("{name}: cannot read");
    let mut file = File::open(path).with_context(cannot)?;
    let mut buf = vec![0u8; CHUNK];
    let mut head = 0;
    // The first chunk decides the format.
    while head < CHUNK {
        match file.read(&mut buf[head..]).with_context(cannot)? {
            0 => break,
            n => head += n,
        }
    }
    if !ingest::is_docker_json(&buf[..head]) {
        buf.truncate(head);
        file.read_to_end(&mut buf).with_context(cannot)?;
        let text = String::from_utf8(buf).with_context(cannot)?;
        return Ok(whole(&name, &text)?);
    }
    let mut r = reader(&name);
    if let Ok(meta) = file.metadata() {
        r.size_hint(meta.len());
    }
    r.feed(&buf[..head])?;
    loop {
        match file.read(&mut buf).with_context(cannot)? {
            0 => break,
            n => r.feed(&buf[..n])?,
        }
    }
    Ok(r.finish()?)
}

fn read_nodes(path: &Path) -> Result<Vec<Node>> {
    read_streamed(path, ingest::node_reader, ingest::nodes)
}

fn read_tasks(path: &Path) -> Result<Vec<Task>> {
    read_streamed(path, ingest::task_reader, ingest::tasks)
}

pub fn load(input: &Input) -> Result<Loaded> {
    let loaded = load_files(input)?;
    loaded.warn();
    Ok(loaded)
}

fn load_files(input: &Input) -> Result<Loaded> {
    if let Some(path) = &input.cluster {
        let (name, text) = read(path)?;
        let mut cluster = ingest::cluster(&name, &text)?;
        if let Some(p) = &input.tasks {
            cluster.tasks.extend(read_tasks(p)?);
        }
        if let Some(p) = &input.datasets {
            let (n, t) = read(p)?;
            cluster.datasets.extend(ingest::datasets(&n, &t)?);
        }
        return Ok(Loaded {
            cluster,
            nodes: path.clone(),
            services: path.clone(),
            tasks: input.tasks.clone().or_else(|| Some(path.clone())),
            datasets: input.datasets.clone().or_else(|| Some(path.clone())),
            services_text: text,
        });
    }
    let nodes_path = input
        .nodes
        .clone()
        .ok_or_else(|| anyhow!("--nodes is required"))?;
    let services_path = input
        .services
        .clone()
        .ok_or_else(|| anyhow!("--services is required"))?;
    let nodes = read_nodes(&nodes_path)?;
    // Read whole: its text points errors at the line of a bad label or constraint.
    let (n, services_text) = read(&services_path)?;
    let services = ingest::services(&n, &services_text)?;
    let mut tasks = Vec::new();
    if let Some(p) = &input.tasks {
        tasks = read_tasks(p)?;
    }
    let mut datasets = Vec::new();
    if let Some(p) = &input.datasets {
        let (n, t) = read(p)?;
        datasets = ingest::datasets(&n, &t)?;
    }
    ingest::resolve_service_names(&mut tasks, &services);
    Ok(Loaded {
        cluster: Cluster {
            nodes,
            services,
            tasks,
            datasets,
        },
        nodes: nodes_path,
        services: services_path,
        tasks: input.tasks.clone(),
        datasets: input.datasets.clone(),
        services_text,
    })
}

/// `line:col` (1-based) of the first `needle` quoted in `text` after the service's quoted name,
/// else anywhere: the services file gives every label and constraint as a quoted string, the
/// name first (`Spec.Name` before `Spec.Labels` in Docker's JSON; `name` before `labels` in the
/// compact form).
fn locate(text: &str, service: &str, needle: &str) -> Option<(usize, usize)> {
    let quoted = |s: &str| format!("\"{s}");
    let after = text.find(&quoted(service)).unwrap_or(0);
    let at = text[after..]
        .find(&quoted(needle))
        .map(|i| after + i)
        .or_else(|| text.find(&quoted(needle)))?
        + 1;
    let line = text[..at].matches('\n').count() + 1;
    let col = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    Some((line, col))
}

impl Loaded {
    /// A cluster read from a running Swarm: an error is blamed on `source` (the Docker
    /// endpoint), as there is no file to point into.
    pub fn from_swarm(cluster: Cluster, source: &str) -> Loaded {
        let source = PathBuf::from(source);
        Loaded {
            cluster,
            nodes: source.clone(),
            services: source.clone(),
            tasks: Some(source.clone()),
            datasets: Some(source),
            services_text: String::new(),
        }
    }

    /// Warns on stderr about what Swarm would accept silently but almost certainly is a
    /// mistake: a constraint key Swarm does not know matches no node, so its tasks would stay
    /// pending (or, already running, never be checked again).
    fn warn(&self) {
        for svc in &self.cluster.services {
            let Ok(constraints) = parse_all(&svc.placement.constraints) else {
                continue; // a parse error is reported by the plan itself
            };
            for c in constraints.iter().filter(|c| !c.is_known_key()) {
                let hint = c
                    .suggest_key()
                    .map(|k| format!("; did you mean `{k}`?"))
                    .unwrap_or_default();
                eprintln!(
                    "berth: warning: {}: service `{}`: constraint `{c}`: Swarm knows no key `{}`, \
                     so no node matches it{hint}",
                    self.position(&svc.name, &c.to_string()),
                    svc.name,
                    c.key,
                );
            }
        }
    }

    /// `FILE:LINE:COL` of `needle` in the services file, or the file alone if not found.
    fn position(&self, service: &str, needle: &str) -> String {
        let file = self.services.display();
        match locate(&self.services_text, service, needle) {
            Some((line, col)) => format!("{file}:{line}:{col}"),
            None => file.to_string(),
        }
    }

    /// Prefixes an engine error with the file it came from, and for a bad label or constraint
    /// the line and column where it is written.
    pub fn blame(&self, err: &PlanError) -> anyhow::Error {
        let needle = match err {
            PlanError::Labels { service, source } => match source {
                LabelError::Unknown { label } => Some((service, label.clone())),
                LabelError::Invalid { label, .. } | LabelError::NeedsStateful { label } => {
                    Some((service, label.to_string()))
                }
                LabelError::MissingVolume => None,
            },
            PlanError::Constraint { service, source } => match source {
                ConstraintError::NoOperator { expr }
                | ConstraintError::InvalidKey { expr, .. }
                | ConstraintError::InvalidValue { expr, .. } => Some((service, expr.clone())),
            },
            _ => None,
        };
        if let Some((service, needle)) = needle {
            return anyhow!("{}: {err}", self.position(service, &needle));
        }
        let file = match err {
            PlanError::DuplicateNode(_) => Some(&self.nodes),
            PlanError::UnknownService { .. } | PlanError::UnknownNode { .. } if matches!(err, PlanError::UnknownNode { what, .. } if what.starts_with("dataset")) => {
                self.datasets.as_ref()
            }
            PlanError::UnknownService { .. } | PlanError::UnknownNode { .. } => self.tasks.as_ref(),
            PlanError::Dataset { .. } => self.datasets.as_ref().or(self.tasks.as_ref()),
            PlanError::NoSuchService(_) => None,
            PlanError::Labels { .. }
            | PlanError::Constraint { .. }
            | PlanError::Dependency(_)
            | PlanError::DuplicateService(_) => Some(&self.services),
        };
        match file {
            Some(f) => anyhow!("{}: {err}", f.display()),
            None => anyhow!("{err}"),
        }
    }
}
