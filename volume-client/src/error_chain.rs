//! An error with its causes on one line (`outer: cause: root cause`), the form every log line
//! and HTTP error body of the volume services uses.

/// `e` and each of its sources, joined by ": "; a cause whose text the line already holds
/// (a `#[error("…: {0}")]` that also names it as `#[source]`) is said once.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("reading the manifest")]
        Read(#[source] std::io::Error),
        #[error("decoding: {0}")]
        Said(#[source] std::io::Error),
    }

    #[test]
    fn causes_follow_the_error_once_each() {
        let io = || std::io::Error::other("disk on fire");
        assert_eq!(
            chain(&Outer::Read(io())),
            "reading the manifest: disk on fire"
        );
        assert_eq!(chain(&Outer::Said(io())), "decoding: disk on fire");
        assert_eq!(chain(&io()), "disk on fire");
    }
}
