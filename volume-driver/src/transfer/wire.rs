//! The framing of a transfer stream: one HTTP response body carrying many files, so a move
//! costs one request instead of one per file and both ends work in parallel.
//!
//! ```text
//! frame   := u32-le header-length, header (JSON of `Frame`)
//! File    := frame, then exactly `size` bytes, then the 32-byte blake3 of those bytes
//! stream  := File* (Error | End)
//! ```
//!
//! The trailing digest is taken by the source from the bytes it read off its disk; the receiver
//! hashes what it received and compares, so corruption anywhere in between is caught. A stream
//! that stops without `End` or `Error` is a truncated one (the source died).

use std::io::Read;

use serde::{Deserialize, Serialize};

/// Longest header the receiver accepts; a path is at most a few KiB.
pub const MAX_HEADER: u32 = 1 << 20;

/// Bytes the source puts in one body chunk.
pub const CHUNK: usize = 256 * 1024;

/// One file's metadata as the source saw it when it opened the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHead {
    pub path: String,
    pub size: u64,
    pub mtime_ns: u128,
    pub mode: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<super::Owner>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frame {
    File(FileHead),
    /// The source could not go on (a file vanished, a read failed); the message says why.
    Error(String),
    /// Every requested file was sent.
    End {
        files: u64,
    },
}

/// Appends `f`'s encoding to `out`.
pub fn encode(f: &Frame, out: &mut Vec<u8>) {
    let json = serde_json::to_vec(f).expect("a frame always serialises");
    let len = u32::try_from(json.len()).expect("header under 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&json);
}

/// Why a stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("stream ended early (the source stopped mid-transfer)")]
    Truncated,
    #[error("stream read failed")]
    Io(#[source] std::io::Error),
    #[error("bad frame: {0}")]
    Bad(String),
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<(), WireError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => WireError::Truncated,
        _ => WireError::Io(e),
    })
}

/// Reads the next frame header.
pub fn decode(r: &mut impl Read) -> Result<Frame, WireError> {
    let mut len = [0u8; 4];
    read_exact(r, &mut len)?;
    let len = u32::from_le_bytes(len);
    if len > MAX_HEADER {
        return Err(WireError::Bad(format!(
            "header of {len} bytes (limit {MAX_HEADER})"
        )));
    }
    let mut json = vec![0u8; len as usize];
    read_exact(r, &mut json)?;
    serde_json::from_slice(&json).map_err(|e| WireError::Bad(e.to_string()))
}

/// Reads the 32-byte digest that follows a file's bytes.
pub fn read_digest(r: &mut impl Read) -> Result<[u8; 32], WireError> {
    let mut d = [0u8; 32];
    read_exact(r, &mut d)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_truncation_is_named() {
        let head = Frame::File(FileHead {
            path: "a/b".into(),
            size: 3,
            mtime_ns: 7,
            mode: 0o644,
            owner: Some(super::super::Owner { uid: 70, gid: 70 }),
        });
        let mut buf = Vec::new();
        encode(&head, &mut buf);
        buf.extend_from_slice(b"xyz");
        buf.extend_from_slice(blake3::hash(b"xyz").as_bytes());
        encode(&Frame::End { files: 1 }, &mut buf);
        let mut r = &buf[..];
        assert_eq!(decode(&mut r).expect("head"), head);
        let mut body = [0u8; 3];
        r.read_exact(&mut body).expect("body");
        assert_eq!(
            read_digest(&mut r).expect("digest"),
            *blake3::hash(b"xyz").as_bytes()
        );
        assert_eq!(decode(&mut r).expect("end"), Frame::End { files: 1 });
        assert!(matches!(decode(&mut r), Err(WireError::Truncated)));
        let mut short = &buf[..6];
        assert!(matches!(decode(&mut short), Err(WireError::Truncated)));
        let huge = (MAX_HEADER + 1).to_le_bytes();
        assert!(matches!(decode(&mut &huge[..]), Err(WireError::Bad(_))));
    }
}
