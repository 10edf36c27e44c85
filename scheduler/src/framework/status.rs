//! The outcome of a plugin call. "Does not fit" is a `Status`, never an `Err`: it is the normal
//! answer for most nodes, and its reason is what a human reads in `berth explain`.

use std::fmt;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Code {
    Success,
    /// The plugin does not apply to this task (returned by pre-filter).
    Skip,
    /// Not now; another placement elsewhere could change that.
    Unschedulable,
    /// No node will do until something outside the scheduler changes (an operator, a node
    /// coming back).
    UnschedulableAndUnresolvable,
}

/// A reason as counted in "0/5 nodes available: 3 insufficient memory, …". Static for fixed
/// wordings; shared for wordings built once per cycle (a constraint, a dataset), so counting
/// them per node allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Reason {
    pub fn as_str(&self) -> &str {
        match self {
            Reason::Static(s) => s,
            Reason::Shared(s) => s,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Reason {
    fn from(s: String) -> Self {
        Reason::Shared(s.into())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reason: Option<Reason>,
    /// The plugin that produced a failure, for `explain`.
    pub plugin: &'static str,
}

impl Status {
    pub const SUCCESS: Status = Status {
        code: Code::Success,
        reason: None,
        plugin: "",
    };
    pub const SKIP: Status = Status {
        code: Code::Skip,
        reason: None,
        plugin: "",
    };

    pub fn unschedulable(plugin: &'static str, reason: Reason) -> Status {
        Status {
            code: Code::Unschedulable,
            reason: Some(reason),
            plugin,
        }
    }

    pub fn unresolvable(plugin: &'static str, reason: Reason) -> Status {
        Status {
            code: Code::UnschedulableAndUnresolvable,
            reason: Some(reason),
            plugin,
        }
    }

    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }

    pub fn is_skip(&self) -> bool {
        self.code == Code::Skip
    }
}
