//! Claim paths: the validated [`ClaimPath`] newtype and the lookup of a path in verified claims.
//!
//! A path names a claim at the top level (`repository`), inside nested objects with dots
//! (`kubernetes.io.serviceaccount.name` in a Kubernetes token, whose claims hold
//! `"kubernetes.io": {"serviceaccount": {"name": ...}}`), or a key that itself contains dots or
//! slashes (`kubernetes.io/serviceaccount/namespace`, as in zot's example token).
//!
//! **Lookup algorithm.** At each object level, with `rest` the part of the path not consumed yet:
//! 1. the whole of `rest` as one key: if present, that value is the answer, whatever it is
//!    (including an object or `null`);
//! 2. otherwise every split of `rest` at a dot, longest key first: if the key before the dot
//!    names an *object*, descend into it with the part after the dot; the first descent that
//!    finds a value wins. Keys that name non-objects are skipped.
//!
//! So with `{"a.b": 1, "a": {"b": 2}}` the path `a.b` finds `1`, and `a.b.c` in
//! `{"a.b": {"c": 3}, "a": {"b": {"c": 4}}}` finds `3`. A claims tree is a tree (no sharing), so
//! each descent reaches a distinct object of the token: the work is bounded by the number of
//! objects in the token times the number of segments, never exponential.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

/// Longest accepted claim path, in bytes.
pub const MAX_PATH_BYTES: usize = 512;
/// Most segments (dot-separated parts) in a claim path; bounds the lookup's recursion.
pub const MAX_PATH_SEGMENTS: usize = 32;

/// Why a string is not a claim path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("claim path is empty")]
    Empty,
    #[error("claim path {0:?} has an empty segment (a leading, trailing or doubled dot)")]
    EmptySegment(String),
    #[error("claim path is {0} bytes long; the limit is {MAX_PATH_BYTES}")]
    TooLong(usize),
    #[error("claim path has {0} segments; the limit is {MAX_PATH_SEGMENTS}")]
    TooManySegments(usize),
}

/// A validated claim path: non-empty, no empty segments, at most [`MAX_PATH_BYTES`] bytes and
/// [`MAX_PATH_SEGMENTS`] segments. The positions of its dots are kept so a lookup allocates
/// nothing.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClaimPath {
    text: String,
    dots: Box<[usize]>,
}

impl ClaimPath {
    /// Validates a path.
    pub fn parse(path: &str) -> Result<ClaimPath, PathError> {
        if path.is_empty() {
            return Err(PathError::Empty);
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong(path.len()));
        }
        if path.split('.').any(str::is_empty) {
            return Err(PathError::EmptySegment(path.to_owned()));
        }
        let dots: Box<[usize]> = path.match_indices('.').map(|(i, _)| i).collect();
        if dots.len() + 1 > MAX_PATH_SEGMENTS {
            return Err(PathError::TooManySegments(dots.len() + 1));
        }
        Ok(ClaimPath { text: path.to_owned(), dots })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Finds the claim this path names (see the module documentation for the algorithm).
    pub fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        find(claims, &self.text, 0, &self.dots)
    }
}

impl FromStr for ClaimPath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ClaimPath::parse(s)
    }
}

impl fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClaimPath({:?})", self.text)
    }
}

/// Finds a claim by an unvalidated path string with the same algorithm as
/// [`ClaimPath::lookup`] (used for the audit claims of a provider). Prefer a [`ClaimPath`].
pub fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let dots: Vec<usize> = path.match_indices('.').map(|(i, _)| i).take(MAX_PATH_SEGMENTS).collect();
    find(claims, path, 0, &dots)
}

/// `path[start..]` in `obj`; `dots` are the positions (in `path`) of the dots after `start`.
fn find<'a>(obj: &'a Map<String, Value>, path: &str, start: usize, dots: &[usize]) -> Option<&'a Value> {
    let rest = path.get(start..)?;
    if let Some(v) = obj.get(rest) {
        return Some(v);
    }
    for (i, &dot) in dots.iter().enumerate().rev() {
        let Some(key) = path.get(start..dot) else { continue };
        if let Some(Value::Object(inner)) = obj.get(key) {
            if let Some(v) = find(inner, path, dot + 1, &dots[i + 1..]) {
                return Some(v);
            }
        }
    }
    None
}
