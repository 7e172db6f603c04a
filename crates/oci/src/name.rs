//! Repository names, tags and references, validated once at the edge against the spec's grammar.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// Longest repository name accepted (the spec's recommended limit, hostname excluded).
pub const MAX_NAME_LEN: usize = 255;

/// Why a name, tag or reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("repository name {0:?} is invalid: use lowercase path components [a-z0-9] joined by '/', with '.', '_', '__' or '-' inside a component, at most 255 characters")]
    InvalidName(String),
    #[error("tag {0:?} is invalid: use [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}")]
    InvalidTag(String),
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// A repository name such as `library/app` or `a/b/c/d/e/f/g/h/i`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

fn valid_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // a separator run
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl RepoName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The first path component (Berth's project, from issue 3 on).
    pub fn first_component(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

impl FromStr for RepoName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > MAX_NAME_LEN || !s.split('/').all(valid_component) {
            return Err(NameError::InvalidName(s.into()));
        }
        Ok(RepoName(s.to_owned()))
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoName({})", self.0)
    }
}

/// A tag such as `v1.2.3` or `latest`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b[1..].iter().all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-');
        if ok {
            Ok(Tag(s.to_owned()))
        } else {
            Err(NameError::InvalidTag(s.into()))
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({})", self.0)
    }
}

/// The `<reference>` of a manifest URL: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names() {
        let good = [
            "a", "library/app", "a/b/c/d/e/f/g/h/i", "my-app", "my--app", "my_app", "my__app", "my.app",
            "0", "a0/b1", "x.y_z-w",
        ];
        let bad = [
            "", "A", "Library/app", "a//b", "/a", "a/", "-a", "a-", "a..b", "a___b", "a_.b", "a b", "a/../b",
            "..", "a:b", "a@b", "ä",
        ];
        for g in good {
            assert!(g.parse::<RepoName>().is_ok(), "{g} should be valid");
        }
        for b in bad {
            assert!(b.parse::<RepoName>().is_err(), "{b:?} should be invalid");
        }
        let long = "a".repeat(256);
        assert!(long.parse::<RepoName>().is_err());
        assert!("a".repeat(255).parse::<RepoName>().is_ok());
        assert_eq!("library/app".parse::<RepoName>().unwrap().first_component(), "library");
    }

    #[test]
    fn tags() {
        for g in ["latest", "v1.2.3", "_x", "A-b_c.d", &"a".repeat(128)] {
            assert!(g.parse::<Tag>().is_ok(), "{g}");
        }
        for b in ["", ".x", "-x", "a/b", "a:b", "a+b", &"a".repeat(129)] {
            assert!(b.parse::<Tag>().is_err(), "{b}");
        }
    }

    #[test]
    fn references() {
        assert!(matches!("latest".parse::<Reference>(), Ok(Reference::Tag(_))));
        assert!(matches!(
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse::<Reference>(),
            Ok(Reference::Digest(_))
        ));
        assert!("sha256:xyz".parse::<Reference>().is_err());
    }
}
