//! Docker's JSON arrays read element by element, in chunks as they arrive: a `docker node
//! inspect` of 100k nodes is 195 MB, and neither it nor Docker's full model of it ever sits
//! in memory whole.
//!
//! A small scanner finds where each top-level element ends (bracket depth, strings, escapes);
//! the element's bytes are then parsed by the fast path ([`Element::fast`]: only the fields
//! the engine reads, strings borrowed from the bytes, everything else skipped unparsed). An
//! element the fast path refuses — a bad value, a wrong type, a syntax error — is parsed again
//! through `bollard-stubs`' full model ([`Element::precise`]), whose error names the field
//! exactly as before; positions are shifted from the element to the file. So the fast path
//! never decides what an error says, and an input either path accepts maps to the same model
//! (tested in `ingest::tests`).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use super::IngestError;
use super::docker::FieldError;
use crate::FastMap;
use crate::model::EnginePlugin;

/// Why the precise path refused an element.
pub(super) enum Refusal {
    /// Not JSON, or not Docker's shape: serde's error, positioned inside the element.
    Json {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// Docker's shape, but a value the model cannot take.
    Field(FieldError),
}

impl Refusal {
    pub(super) fn json(e: serde_path_to_error::Error<serde_json::Error>) -> Refusal {
        let path = e.path().to_string();
        let inner = e.into_inner();
        Refusal::Json {
            path,
            line: inner.line(),
            column: inner.column(),
            message: strip_position(&inner),
        }
    }
}

/// serde_json's message without its trailing " at line L column C", which is relative to
/// the element here; the file's own position is added back by the caller.
fn strip_position(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    msg.strip_suffix(&suffix).unwrap_or(&msg).to_string()
}

/// One kind of array element: a node, a service or a task.
pub(super) trait Element: Sized {
    /// Only what the engine reads; `None` for anything unusual, which `precise` then explains.
    fn fast(bytes: &[u8], shared: &mut Shared) -> Option<Self>;
    /// Docker's full model, for the exact error (or, should the fast path have been too
    /// strict, the value).
    fn precise(bytes: &[u8]) -> Result<Self, Refusal>;
    /// Checks across the whole array (unique IDs).
    fn check_all(file: &str, all: &[Self]) -> Result<(), IngestError>;
}

/// Values many elements share, kept once: engine plugin lists (every node of one engine build
/// lists the same 17 plugins).
#[derive(Default)]
pub(super) struct Shared {
    /// By hash of the list; lookups only, never iterated, so hash order decides nothing.
    plugins: FastMap<u64, Vec<Arc<[EnginePlugin]>>>,
    /// The text of the list returned last, and the list: consecutive nodes nearly always
    /// list the same plugins, and equal text is the same list without parsing it.
    last: Option<(String, Arc<[EnginePlugin]>)>,
}

impl Shared {
    /// The shared list written `raw`; `parse` reads the text's (type, name) pairs when it is
    /// not the last one seen (`None`: not a plugin list).
    pub(super) fn plugins<'r>(
        &mut self,
        raw: &'r str,
        parse: impl FnOnce(&'r str) -> Option<Vec<(&'r str, &'r str)>>,
    ) -> Option<Arc<[EnginePlugin]>> {
        if let Some((text, list)) = &self.last
            && text == raw
        {
            return Some(Arc::clone(list));
        }
        let list = parse(raw)?;
        let shared = self.intern(&list);
        self.last = Some((raw.to_string(), Arc::clone(&shared)));
        Some(shared)
    }

    fn intern(&mut self, list: &[(&str, &str)]) -> Arc<[EnginePlugin]> {
        let same = |known: &Arc<[EnginePlugin]>| {
            known.len() == list.len()
                && known
                    .iter()
                    .zip(list)
                    .all(|(p, (kind, name))| p.kind == *kind && p.name == *name)
        };
        let mut h = DefaultHasher::new();
        for (kind, name) in list {
            kind.hash(&mut h);
            name.hash(&mut h);
        }
        let bucket = self.plugins.entry(h.finish()).or_default();
        if let Some(known) = bucket.iter().find(|k| same(k)) {
            return Arc::clone(known);
        }
        let new: Arc<[EnginePlugin]> = list
            .iter()
            .map(|(kind, name)| EnginePlugin {
                kind: kind.to_string(),
                name: name.to_string(),
            })
            .collect();
        bucket.push(Arc::clone(&new));
        new
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening `[`.
    Start,
    /// After `[` (`comma` false) or `,` (true): an element or, after `[`, the closing `]`.
    Open { comma: bool },
    /// Inside an element.
    Value,
    /// After an element: `,` or `]`.
    After,
    /// After the closing `]`: only whitespace.
    Done,
}

/// Where an element's bytes end, tracked across chunks.
#[derive(Clone, Copy, Default)]
struct Scan {
    depth: u32,
    in_str: bool,
    escaped: bool,
    /// A bare number or literal: it ends at the first delimiter.
    bare: bool,
}

/// A JSON array of `T`, fed in chunks; [`ArrayReader::finish`] returns the elements.
pub struct ArrayReader<T> {
    file: String,
    /// Bytes not yet consumed.
    buf: Vec<u8>,
    /// How far into `buf` scanning got.
    pos: usize,
    /// Where in `buf` the open element starts.
    start: usize,
    state: State,
    scan: Scan,
    /// Line (1-based) and byte offset of its start, relative to `buf[0]` (the offset is
    /// negative when the line began in bytes already dropped).
    line: usize,
    line_start: isize,
    index: usize,
    shared: Shared,
    out: Vec<T>,
    /// The input's size, if the caller knows it: the first element's size then tells how
    /// many to make room for (a 100k-node list would otherwise grow by copying 17 times).
    size_hint: Option<u64>,
    // `T`'s `Element` methods, held so that the reader's own API needs no private trait.
    fast: fn(&[u8], &mut Shared) -> Option<T>,
    precise: fn(&[u8]) -> Result<T, Refusal>,
    check_all: fn(&str, &[T]) -> Result<(), IngestError>,
}

impl<T> ArrayReader<T> {
    pub(super) fn new(file: &str) -> Self
    where
        T: Element,
    {
        ArrayReader {
            fast: T::fast,
            precise: T::precise,
            check_all: T::check_all,
            file: file.to_string(),
            buf: Vec::new(),
            pos: 0,
            start: 0,
            state: State::Start,
            scan: Scan::default(),
            line: 1,
            line_start: 0,
            index: 0,
            shared: Shared::default(),
            out: Vec::new(),
            size_hint: None,
        }
    }

    /// The whole input's length in bytes, when known before reading it.
    pub fn size_hint(&mut self, bytes: u64) {
        self.size_hint = Some(bytes);
    }

    /// Takes the next bytes of the file.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), IngestError> {
        self.buf.extend_from_slice(chunk);
        self.run()?;
        // Drop what is consumed, once per chunk; an open element stays, from its first byte.
        let keep_from = if self.state == State::Value {
            self.start
        } else {
            self.pos
        };
        if keep_from > 0 {
            self.advance_lines(keep_from);
            self.buf.drain(..keep_from);
            self.pos -= keep_from;
            self.start = 0;
        }
        Ok(())
    }

    /// The elements, once the whole file has been fed.
    pub fn finish(self) -> Result<Vec<T>, IngestError> {
        match self.state {
            State::Done => {
                (self.check_all)(&self.file, &self.out)?;
                Ok(self.out)
            }
            State::Value => {
                // Cut off inside an element: the precise parser says where and how.
                match (self.precise)(&self.buf[self.start..]) {
                    Err(r) => Err(self.refusal(r, self.start)),
                    Ok(_) => Err(self.structural("EOF while parsing a list", self.buf.len())),
                }
            }
            _ => {
                let at = self.buf.len();
                Err(self.structural("EOF while parsing a list", at))
            }
        }
    }

    fn run(&mut self) -> Result<(), IngestError> {
        while self.pos < self.buf.len() {
            match self.state {
                State::Start => {
                    let b = self.buf[self.pos];
                    if is_ws(b) {
                        self.pos += 1;
                    } else if b == b'[' {
                        self.pos += 1;
                        self.state = State::Open { comma: false };
                    } else {
                        return Err(
                            self.structural("invalid type: expected a JSON array", self.pos + 1)
                        );
                    }
                }
                State::Open { comma } => {
                    let b = self.buf[self.pos];
                    if is_ws(b) {
                        self.pos += 1;
                    } else if b == b']' {
                        if comma {
                            return Err(self.structural("trailing comma", self.pos + 1));
                        }
                        self.pos += 1;
                        self.state = State::Done;
                    } else {
                        self.start = self.pos;
                        self.scan = Scan {
                            bare: !matches!(b, b'{' | b'[' | b'"'),
                            ..Scan::default()
                        };
                        self.state = State::Value;
                    }
                }
                State::Value => {
                    if let Some(end) = self.scan_value() {
                        self.element(end)?;
                        self.pos = end;
                        self.state = State::After;
                    }
                }
                State::After => {
                    let b = self.buf[self.pos];
                    if is_ws(b) {
                        self.pos += 1;
                    } else if b == b',' {
                        self.pos += 1;
                        self.state = State::Open { comma: true };
                    } else if b == b']' {
                        self.pos += 1;
                        self.state = State::Done;
                    } else {
                        return Err(self.structural("expected `,` or `]`", self.pos + 1));
                    }
                }
                State::Done => {
                    if is_ws(self.buf[self.pos]) {
                        self.pos += 1;
                    } else {
                        return Err(self.structural("trailing characters", self.pos + 1));
                    }
                }
            }
        }
        Ok(())
    }

    /// Scans the open element from `pos`; returns its end once the element is complete.
    fn scan_value(&mut self) -> Option<usize> {
        let buf = &self.buf;
        let s = &mut self.scan;
        let mut i = self.pos;
        while i < buf.len() {
            if s.escaped {
                s.escaped = false;
                i += 1;
                continue;
            }
            if s.in_str {
                match memchr::memchr2(b'"', b'\\', &buf[i..]) {
                    None => i = buf.len(),
                    Some(k) => {
                        i += k;
                        if buf[i] == b'\\' {
                            s.escaped = true;
                        } else {
                            s.in_str = false;
                            if s.depth == 0 {
                                return Some(i + 1); // a bare string element
                            }
                        }
                        i += 1;
                    }
                }
                continue;
            }
            let b = buf[i];
            if s.bare {
                if is_ws(b) || b == b',' || b == b']' {
                    return Some(i);
                }
                i += 1;
                continue;
            }
            match b {
                b'"' => s.in_str = true,
                b'{' | b'[' => s.depth += 1,
                b'}' | b']' => {
                    s.depth = s.depth.saturating_sub(1);
                    if s.depth == 0 {
                        return Some(i + 1);
                    }
                }
                _ => {}
            }
            i += 1;
        }
        self.pos = i;
        None
    }

    fn element(&mut self, end: usize) -> Result<(), IngestError> {
        let bytes = &self.buf[self.start..end];
        let value = match (self.fast)(bytes, &mut self.shared) {
            Some(v) => v,
            None => match (self.precise)(bytes) {
                Ok(v) => v,
                Err(r) => return Err(self.refusal(r, self.start)),
            },
        };
        if let (0, Some(total)) = (self.index, self.size_hint) {
            let each = (end - self.start).max(1) as u64;
            // Capped: the hint sizes a buffer, it must not let a bad hint exhaust memory.
            self.out.reserve((total / each).min(1 << 24) as usize);
        }
        self.out.push(value);
        self.index += 1;
        Ok(())
    }

    /// Moves the line bookkeeping past `n` bytes of `buf` about to be dropped.
    fn advance_lines(&mut self, n: usize) {
        let dropped = &self.buf[..n];
        let newlines = memchr::memchr_iter(b'\n', dropped).count();
        self.line += newlines;
        self.line_start = match memchr::memrchr(b'\n', dropped) {
            Some(k) => k as isize + 1 - n as isize,
            None => self.line_start - n as isize,
        };
    }

    /// Line and column (1-based, in bytes) of `buf[at]`, as serde_json counts them.
    fn position(&self, at: usize) -> (usize, usize) {
        let before = &self.buf[..at.min(self.buf.len())];
        let line = self.line + memchr::memchr_iter(b'\n', before).count();
        let start = match memchr::memrchr(b'\n', before) {
            Some(k) => k as isize + 1,
            None => self.line_start,
        };
        (line, (at as isize - start) as usize)
    }

    /// An error in the array's own punctuation, at byte `at` (1-based column convention).
    fn structural(&self, what: &str, at: usize) -> IngestError {
        let (line, column) = self.position(at);
        IngestError::Json {
            file: self.file.clone(),
            line,
            column,
            path: "(top level)".into(),
            message: format!("{what} at line {line} column {column}"),
        }
    }

    /// The precise path's refusal of the element starting at `buf[start]`, placed in the file.
    fn refusal(&self, r: Refusal, start: usize) -> IngestError {
        let i = self.index;
        match r {
            Refusal::Field(e) => IngestError::Value {
                file: self.file.clone(),
                path: format!("[{i}].{}", e.path),
                message: e.why,
            },
            Refusal::Json {
                path,
                line: rel_line,
                column: rel_col,
                message,
            } => {
                let (start_line, start_col) = self.position(start + 1);
                let (line, column) = if rel_line <= 1 {
                    (start_line, start_col - 1 + rel_col)
                } else {
                    (start_line + rel_line - 1, rel_col)
                };
                let path = if path == "." {
                    format!("[{i}]")
                } else {
                    format!("[{i}].{path}")
                };
                IngestError::Json {
                    file: self.file.clone(),
                    line,
                    column,
                    path,
                    message: format!("{message} at line {line} column {column}"),
                }
            }
        }
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}
