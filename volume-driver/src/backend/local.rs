//! How a node brings its copy of a node-local dataset (`layout`) up to the current epoch: pull it
//! from the node holding the newest whole copy, adopt its own standby copy (`replicated`,
//! promoted), or start empty (new, or recreated).

use std::path::PathBuf;

use berth_control_model::wire::VolumeRecord;

use super::layout::Layout;
use super::{BackendError, io};
use crate::transfer::TransferOptions;

/// Makes this node's copy current for `d` (whose primary is `node`) and returns its path: a
/// new or recreated dataset gets an empty directory (a recreated one's older copy is discarded);
/// a promoted standby's copy is adopted as it stands; a moved one is pulled from the node
/// holding the newest whole copy, or is already here when this node holds it.
pub async fn prepare(
    layout: &Layout,
    d: &VolumeRecord,
    node: &str,
    opts: &TransferOptions,
) -> Result<PathBuf, BackendError> {
    let id = &d.dataset_id;
    let data = layout.data_dir(id);
    if layout.local_epoch(id) == Some(d.epoch) {
        return Ok(data);
    }
    if d.recreated {
        layout.remove(id)?;
        std::fs::create_dir_all(&data).map_err(io(&data))?;
    } else if d.promoted {
        if !data.is_dir() {
            return Err(BackendError::NoStandbyCopy {
                dataset: id.clone(),
            });
        }
        if layout.standby_epoch(id).is_none() {
            // Stopped mid-ship: every file is a whole version the primary held, newer than
            // the recorded position, but the files may come from two ships.
            tracing::warn!(dataset = %id, "promoting a standby copy whose last ship did not complete");
        }
        let partial =
            crate::transfer::remove_partials(&data).map_err(|source| BackendError::Transfer {
                dataset: id.clone(),
                source_node: node.to_string(),
                source,
            })?;
        if partial > 0 {
            tracing::info!(dataset = %id, files = partial, "removed an interrupted ship's partial files");
        }
    } else {
        match &d.source {
            Some(src) if src.node != node => {
                let addr = src.transfer.clone().ok_or_else(|| BackendError::NoSource {
                    dataset: id.clone(),
                    source_node: src.node.clone(),
                })?;
                let started = std::time::Instant::now();
                // Whatever this node held is about to be replaced by the newest copy.
                layout.clear_standby(id)?;
                let stats = crate::transfer::pull(&addr, id, src.epoch, layout, opts).await;
                let m = crate::metrics::agent();
                match &stats {
                    Ok(s) => {
                        m.moves.with_label_values(&["ok"]).inc();
                        m.move_bytes.inc_by(s.bytes);
                    }
                    Err(_) => m.moves.with_label_values(&["failed"]).inc(),
                }
                let stats = stats.map_err(|source| BackendError::Transfer {
                    dataset: id.clone(),
                    source_node: src.node.clone(),
                    source,
                })?;
                tracing::info!(dataset = %id, from = %src.node, copied = stats.copied, skipped = stats.skipped, hashed = stats.hashed,
                    bytes = stats.bytes, removed = stats.removed, ms = started.elapsed().as_millis() as u64,
                    "dataset pulled");
            }
            Some(src) => {
                // This node holds the newest copy itself (a move back before the other node
                // ever finished its copy), but only if its copy is the one of that epoch.
                let have = layout.local_epoch(id);
                if let Some(want) = src.epoch
                    && have != Some(want)
                {
                    return Err(BackendError::StaleCopy {
                        dataset: id.clone(),
                        have,
                        want,
                    });
                }
            }
            None => std::fs::create_dir_all(&data).map_err(io(&data))?,
        }
    }
    layout.set_epoch(id, d.epoch)?;
    Ok(data)
}
