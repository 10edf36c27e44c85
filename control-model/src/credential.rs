//! Per-node credentials derived from the cluster secret, so an agent can act only for its own
//! node: `berth-node.<node>.<mac>`, the MAC a keyed blake3 of the node ID under a key derived
//! from the cluster token. The operator issues one per node at join (`berth-volume credential`);
//! the node never holds the cluster token, so it cannot mint another node's credential, and the
//! control service checks one without storing anything.

/// The `WWW-Authenticate` value of every 401 the volume services answer (RFC 6750): the
/// caller is told to present a bearer token, the cluster token or a node credential.
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"berth\"";

const CONTEXT: &str = "berth-volume 2026 node credential v1";
const PREFIX: &str = "berth-node.";

fn key(cluster_token: &str) -> [u8; 32] {
    blake3::derive_key(CONTEXT, cluster_token.as_bytes())
}

/// The credential of `node` under `cluster_token`.
pub fn issue(cluster_token: &str, node: &str) -> String {
    let mac = blake3::keyed_hash(&key(cluster_token), node.as_bytes());
    format!("{PREFIX}{node}.{}", mac.to_hex())
}

/// The node `presented` is a valid credential of, if it is one.
pub fn verify(cluster_token: &str, presented: &str) -> Option<String> {
    let (node, mac) = presented.strip_prefix(PREFIX)?.rsplit_once('.')?;
    if node.is_empty() {
        return None;
    }
    let given = blake3::Hash::from_hex(mac).ok()?;
    // blake3::Hash compares in constant time.
    (blake3::keyed_hash(&key(cluster_token), node.as_bytes()) == given).then(|| node.to_string())
}

/// Whether `presented` equals `token`, without an early exit that leaks how much matched.
pub fn same_token(presented: &str, token: &str) -> bool {
    blake3::hash(presented.as_bytes()) == blake3::hash(token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_names_its_node_and_only_under_its_secret() {
        let c = issue("s3cret", "node-a");
        assert!(c.starts_with("berth-node.node-a."), "{c}");
        assert_eq!(verify("s3cret", &c).as_deref(), Some("node-a"));
        assert_eq!(verify("other", &c), None, "another cluster's secret");
        let forged = c.replace("node-a", "node-b");
        assert_eq!(verify("s3cret", &forged), None, "renamed");
        for bad in [
            "",
            "s3cret",
            "berth-node.",
            "berth-node.node-a",
            "berth-node..00",
        ] {
            assert_eq!(verify("s3cret", bad), None, "{bad:?}");
        }
        let dotted = issue("s3cret", "n.1");
        assert_eq!(verify("s3cret", &dotted).as_deref(), Some("n.1"));
        assert!(same_token("abc", "abc") && !same_token("abc", "abd"));
    }
}
