//! Swarm's placement constraint syntax (`--constraint node.labels.zone==a`), parsed and matched
//! exactly as SwarmKit's `manager/constraint` does, so a constraint means the same thing under
//! Berth as under Swarm:
//!
//! - operators `==` and `!=` only; `==` is looked for first, so `a!==b` is a key error;
//! - keys match `^[a-z_][a-z0-9\-_.]+$` case-insensitively, values
//!   `^[a-z0-9:\-_\s.*()?+\[\]\\^$|/]+$`; both are trimmed;
//! - key names compare case-insensitively, label *names* after the prefix case-sensitively,
//!   values case-insensitively;
//! - a missing label (or hostname, platform) matches as the empty string, so `!=` holds;
//! - a key outside the known set parses but matches no node (Swarm accepts it at create time);
//!   [`Constraint::is_known_key`] lets `explain` point that out.
//!
//! Parsing errors carry the offending token, so `berth plan` can name it.

use std::fmt;
use std::net::IpAddr;

use thiserror::Error;

use crate::model::Node;

pub const NODE_LABEL_PREFIX: &str = "node.labels.";
pub const ENGINE_LABEL_PREFIX: &str = "engine.labels.";

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConstraintError {
    #[error("constraint `{expr}`: expected one operator from ==, !=")]
    NoOperator { expr: String },
    #[error("constraint `{expr}`: key '{key}' is invalid")]
    InvalidKey { expr: String, key: String },
    #[error("constraint `{expr}`: value '{value}' is invalid")]
    InvalidValue { expr: String, value: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    Eq,
    NotEq,
}

impl Operator {
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Eq => "==",
            Operator::NotEq => "!=",
        }
    }
}

/// What a constraint key refers to, resolved once at parse time instead of per node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    Id,
    Hostname,
    Ip,
    Role,
    Os,
    Arch,
    /// The label name keeps its case: Swarm matches label names case-sensitively.
    NodeLabel(String),
    EngineLabel(String),
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Constraint {
    /// The key as written (trimmed), for messages.
    pub key: String,
    pub operator: Operator,
    pub value: String,
    resolved: Key,
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.key, self.operator.as_str(), self.value)
    }
}

/// Parses a list of constraint expressions; the first bad one is the error.
pub fn parse_all<S: AsRef<str>>(exprs: &[S]) -> Result<Vec<Constraint>, ConstraintError> {
    exprs
        .iter()
        .map(|e| Constraint::parse(e.as_ref()))
        .collect()
}

impl Constraint {
    pub fn parse(expr: &str) -> Result<Constraint, ConstraintError> {
        for op in [Operator::Eq, Operator::NotEq] {
            let Some((key, value)) = expr.split_once(op.as_str()) else {
                continue;
            };
            let key = key.trim();
            if !valid_key(key) {
                return Err(ConstraintError::InvalidKey {
                    expr: expr.to_string(),
                    key: key.to_string(),
                });
            }
            let value = value.trim();
            if !valid_value(value) {
                return Err(ConstraintError::InvalidValue {
                    expr: expr.to_string(),
                    value: value.to_string(),
                });
            }
            return Ok(Constraint {
                key: key.to_string(),
                operator: op,
                value: value.to_string(),
                resolved: resolve(key),
            });
        }
        Err(ConstraintError::NoOperator {
            expr: expr.to_string(),
        })
    }

    /// Whether Swarm knows this key; an unknown key matches no node.
    pub fn is_known_key(&self) -> bool {
        self.resolved != Key::Unknown
    }

    /// For a key Swarm does not know, the known key it most likely meant (a typo such as
    /// `node.lables.zone` → `node.labels.zone`), if one is close. Swarm accepts such a
    /// constraint silently and places nothing, so a caller should warn when it loads one.
    pub fn suggest_key(&self) -> Option<String> {
        if self.is_known_key() {
            return None;
        }
        let lower = self.key.to_ascii_lowercase();
        const EXACT: [&str; 6] = [
            "node.id",
            "node.hostname",
            "node.ip",
            "node.role",
            "node.platform.os",
            "node.platform.arch",
        ];
        // A label key is a prefix and a name: compare only the prefix part of what was written
        // (its first two dot-separated parts), and keep the label name as written.
        let mut best: Option<(usize, String)> = None;
        let mut consider = |distance: usize, key: String| {
            if best
                .as_ref()
                .is_none_or(|(d, k)| (distance, &key) < (*d, k))
            {
                best = Some((distance, key));
            }
        };
        for k in EXACT {
            consider(strsim::damerau_levenshtein(&lower, k), k.to_string());
        }
        let parts: Vec<&str> = self.key.splitn(3, '.').collect();
        if let [a, b, name] = parts[..] {
            let written = format!("{a}.{b}.").to_ascii_lowercase();
            for prefix in [NODE_LABEL_PREFIX, ENGINE_LABEL_PREFIX] {
                consider(
                    strsim::damerau_levenshtein(&written, prefix),
                    format!("{prefix}{name}"),
                );
            }
        }
        // Within two edits (a swap counts as one) is a typo; further is a different idea.
        best.filter(|(d, _)| *d <= 2).map(|(_, k)| k)
    }

    /// Swarm's `Constraint.Match`: case-insensitive equality against any candidate.
    fn matches_str(&self, what: &str) -> bool {
        let equal = self.value.eq_ignore_ascii_case(what) || unicode_eq_fold(&self.value, what);
        match self.operator {
            Operator::Eq => equal,
            Operator::NotEq => !equal,
        }
    }

    /// Swarm's `NodeMatches` for this one constraint.
    pub fn matches(&self, node: &Node) -> bool {
        match &self.resolved {
            Key::Id => self.matches_str(node.id.as_str()),
            Key::Hostname => self.matches_str(&node.hostname),
            Key::Ip => self.matches_ip(&node.addr),
            Key::Role => self.matches_str(node.role.as_str()),
            Key::Os => self.matches_str(&node.platform.os),
            Key::Arch => self.matches_str(&node.platform.architecture),
            Key::NodeLabel(name) => {
                self.matches_str(node.labels.get(name).map(String::as_str).unwrap_or(""))
            }
            Key::EngineLabel(name) => self.matches_str(
                node.engine_labels
                    .get(name)
                    .map(String::as_str)
                    .unwrap_or(""),
            ),
            Key::Unknown => false,
        }
    }

    /// `node.ip` takes an address or a CIDR; anything else matches no node, like Swarm.
    fn matches_ip(&self, node_addr: &str) -> bool {
        let node_ip: Option<IpAddr> = node_addr.parse().ok();
        let hit = if let Ok(ip) = self.value.parse::<IpAddr>() {
            Some(node_ip == Some(ip))
        } else {
            parse_cidr(&self.value)
                .map(|(net, bits)| node_ip.is_some_and(|ip| cidr_contains(net, bits, ip)))
        };
        match (hit, self.operator) {
            (None, _) => false,
            (Some(within), Operator::Eq) => within,
            (Some(within), Operator::NotEq) => !within,
        }
    }
}

/// Every constraint holds (Swarm ANDs them).
pub fn node_matches(constraints: &[Constraint], node: &Node) -> bool {
    constraints.iter().all(|c| c.matches(node))
}

fn resolve(key: &str) -> Key {
    let lower = key.to_ascii_lowercase();
    match lower.as_str() {
        "node.id" => Key::Id,
        "node.hostname" => Key::Hostname,
        "node.ip" => Key::Ip,
        "node.role" => Key::Role,
        "node.platform.os" => Key::Os,
        "node.platform.arch" => Key::Arch,
        _ if lower.len() > NODE_LABEL_PREFIX.len() && lower.starts_with(NODE_LABEL_PREFIX) => {
            Key::NodeLabel(key[NODE_LABEL_PREFIX.len()..].to_string())
        }
        _ if lower.len() > ENGINE_LABEL_PREFIX.len() && lower.starts_with(ENGINE_LABEL_PREFIX) => {
            Key::EngineLabel(key[ENGINE_LABEL_PREFIX.len()..].to_string())
        }
        _ => Key::Unknown,
    }
}

/// `^(?i)[a-z_][a-z0-9\-_.]+$`
fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() >= 2
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// `^(?i)[a-z0-9:\-_\s\.\*\(\)\?\+\[\]\\\^\$\|\/]+$` — Go's `\s` is `[\t\n\f\r ]`.
fn valid_value(value: &str) -> bool {
    !value.is_empty()
        && value.bytes().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    b':' | b'-'
                        | b'_'
                        | b'\t'
                        | b'\n'
                        | b'\x0c'
                        | b'\r'
                        | b' '
                        | b'.'
                        | b'*'
                        | b'('
                        | b')'
                        | b'?'
                        | b'+'
                        | b'['
                        | b']'
                        | b'\\'
                        | b'^'
                        | b'$'
                        | b'|'
                        | b'/'
                )
        })
}

/// Go's `strings.EqualFold` for the non-ASCII case; values are ASCII after validation but node
/// fields (hostnames, labels) need not be.
fn unicode_eq_fold(a: &str, b: &str) -> bool {
    a.chars().count() == b.chars().count()
        && a.chars()
            .zip(b.chars())
            .all(|(x, y)| x == y || x.to_lowercase().eq(y.to_lowercase()))
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = s.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((addr, bits))
}

fn cidr_contains(net: IpAddr, bits: u8, ip: IpAddr) -> bool {
    // Go's net.IPNet.Contains treats an IPv4-mapped IPv6 address as IPv4.
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
