//! The fencing rules in one place. Every handoff increments a dataset's epoch; a mount must
//! present the current epoch and be on the primary, and a mounted dataset moves only when its
//! holder has been declared dead. This is what Flocker lacked: a stale node cannot write.

/// What a fencing check sees about a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence<'a> {
    pub primary: &'a str,
    pub epoch: u64,
    pub mounted_on: Option<&'a str>,
}

/// Why a mount or a move was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FenceError {
    #[error(
        "fenced: node {node} may not mount dataset {dataset} (current primary is {primary} at epoch {epoch}, asked for epoch {asked})"
    )]
    NotPrimary {
        dataset: String,
        node: String,
        primary: String,
        epoch: u64,
        asked: u64,
    },
    #[error(
        "dataset {dataset} is mounted on {holder} (primary {primary} at epoch {epoch}); unmount it, or declare {holder} dead and move with force"
    )]
    InUse {
        dataset: String,
        holder: String,
        primary: String,
        epoch: u64,
    },
    #[error("dataset {dataset} is leased to {holder}; release the lease first")]
    Leased { dataset: String, holder: String },
}

/// A dataset's holder as a failover planner is shown it (`berth run` from the control
/// service's records, the simulator from the model it runs): the planner's dataset has one
/// primary and one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned<'a> {
    pub primary: Option<&'a str>,
    pub epoch: u64,
    /// Fenced and assigned to nobody since: `primary` is the node fenced away from and `epoch`
    /// the one before that fence.
    pub fenced: bool,
}

/// The planner's view of a dataset whose primary at `epoch` is `primary_now` (`None` while
/// fenced) and whose last fence was against `fenced_from`. A dataset fenced and not assigned
/// yet (a failover cut short) is shown as it was before the fence — its last holder at the
/// epoch before — and marked fenced: the plan's fence of that holder is then a replay the
/// service answers as done, and the plan assigns it (to a new node, or to the same one again)
/// at the fence's epoch before anything mounts it.
pub fn as_planned<'a>(
    primary_now: Option<&'a str>,
    fenced_from: Option<&'a str>,
    epoch: u64,
) -> Planned<'a> {
    match (primary_now, fenced_from) {
        (Some(p), _) => Planned {
            primary: Some(p),
            epoch,
            fenced: false,
        },
        (None, Some(from)) => Planned {
            primary: Some(from),
            epoch: epoch.saturating_sub(1),
            fenced: true,
        },
        (None, None) => Planned {
            primary: None,
            epoch,
            fenced: false,
        },
    }
}

/// May `node` mount `dataset` presenting `asked` epoch?
pub fn check_mount(dataset: &str, f: &Fence<'_>, node: &str, asked: u64) -> Result<(), FenceError> {
    if f.primary != node || f.epoch != asked {
        return Err(FenceError::NotPrimary {
            dataset: dataset.to_string(),
            node: node.to_string(),
            primary: f.primary.to_string(),
            epoch: f.epoch,
            asked,
        });
    }
    match f.mounted_on {
        Some(h) if h != node => Err(FenceError::InUse {
            dataset: dataset.to_string(),
            holder: h.to_string(),
            primary: f.primary.to_string(),
            epoch: f.epoch,
        }),
        _ => Ok(()),
    }
}

/// May the dataset's primary change? `holder_dead` says whether the mount holder has been
/// declared dead; `force` is the operator's explicit failover request.
pub fn check_move(
    dataset: &str,
    f: &Fence<'_>,
    lease_holder: Option<&str>,
    holder_dead: bool,
    force: bool,
) -> Result<(), FenceError> {
    if let Some(h) = lease_holder {
        return Err(FenceError::Leased {
            dataset: dataset.to_string(),
            holder: h.to_string(),
        });
    }
    match f.mounted_on {
        Some(h) if !(force && holder_dead) => Err(FenceError::InUse {
            dataset: dataset.to_string(),
            holder: h.to_string(),
            primary: f.primary.to_string(),
            epoch: f.epoch,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_rules() {
        let f = Fence {
            primary: "b",
            epoch: 2,
            mounted_on: None,
        };
        assert!(check_mount("d", &f, "b", 2).is_ok());
        let e = check_mount("d", &f, "a", 1).expect_err("stale node is fenced");
        assert!(
            e.to_string().contains("current primary is b at epoch 2"),
            "{e}"
        );
        assert!(
            check_mount("d", &f, "b", 1).is_err(),
            "old epoch on the primary is refused"
        );
        let held = Fence {
            mounted_on: Some("a"),
            ..f.clone()
        };
        assert!(
            check_mount("d", &held, "b", 2).is_err(),
            "never two writable mounts"
        );
    }

    #[test]
    fn move_rules() {
        let free = Fence {
            primary: "a",
            epoch: 1,
            mounted_on: None,
        };
        assert!(check_move("d", &free, None, false, false).is_ok());
        assert!(check_move("d", &free, Some("a"), false, true).is_err());
        let held = Fence {
            mounted_on: Some("a"),
            ..free
        };
        assert!(check_move("d", &held, None, false, false).is_err());
        assert!(
            check_move("d", &held, None, false, true).is_err(),
            "force needs a dead holder"
        );
        assert!(
            check_move("d", &held, None, true, false).is_err(),
            "dead holder needs force"
        );
        assert!(check_move("d", &held, None, true, true).is_ok());
    }
}
