//! Reading the input files. The only place the CLI touches the filesystem; parsing itself is
//! the engine's `ingest` module, so the daemon and the simulator read the same formats.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

use berth_scheduler::ingest;
use berth_scheduler::model::Cluster;
use berth_scheduler::schedule::PlanError;

use super::Input;

pub struct Loaded {
    pub cluster: Cluster,
    nodes: PathBuf,
    services: PathBuf,
    tasks: Option<PathBuf>,
    datasets: Option<PathBuf>,
}

fn read(path: &Path) -> Result<(String, String)> {
    let text =
        fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    Ok((path.display().to_string(), text))
}

pub fn load(input: &Input) -> Result<Loaded> {
    if let Some(path) = &input.cluster {
        let (name, text) = read(path)?;
        let mut cluster = ingest::cluster(&name, &text)?;
        if let Some(p) = &input.tasks {
            let (n, t) = read(p)?;
            cluster.tasks.extend(ingest::tasks(&n, &t)?);
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
    let (n, t) = read(&nodes_path)?;
    let nodes = ingest::nodes(&n, &t)?;
    let (n, t) = read(&services_path)?;
    let services = ingest::services(&n, &t)?;
    let mut tasks = Vec::new();
    if let Some(p) = &input.tasks {
        let (n, t) = read(p)?;
        tasks = ingest::tasks(&n, &t)?;
    }
    let mut datasets = Vec::new();
    if let Some(p) = &input.datasets {
        let (n, t) = read(p)?;
        datasets = ingest::datasets(&n, &t)?;
    }
    // Compact task files name services by name; Docker's name them by ID.
    for t in &mut tasks {
        if !services.iter().any(|s| s.id == t.service_id)
            && let Some(s) = services.iter().find(|s| s.name == t.service_id.0)
        {
            t.service_id = s.id.clone();
        }
    }
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
    })
}

impl Loaded {
    /// Prefixes an engine error with the file it came from.
    pub fn blame(&self, err: &PlanError) -> anyhow::Error {
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
