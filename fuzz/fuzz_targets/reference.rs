//! Fuzzes the `FromStr` parsers of `RepoName`, `Tag`, `Reference` and `Digest`.
//!
//! Invariants checked on every input (arbitrary bytes, skipped unless valid UTF-8):
//! - anything accepted prints (Display) to exactly the input and re-parses equal;
//! - an accepted `RepoName` is at most 255 bytes of `[a-z0-9._/-]`;
//! - an accepted `Digest` is `sha256` with 64 or `sha512` with 128 lowercase hex characters;
//! - a `Reference` is a digest exactly when the input has a ':', else a tag;
//! - differential: each parser accepts exactly what the spec's regular expression accepts.
#![no_main]

use std::fmt::Display;
use std::str::FromStr;
use std::sync::LazyLock;

use berth_oci::{Algorithm, Digest, Reference, RepoName, Tag};
use libfuzzer_sys::fuzz_target;
use regex::Regex;

// The distribution spec's grammars, anchored (Rust's `$` is end of text only).
static NAME_RE: LazyLock<Regex> = LazyLock::new(|| {
    let comp = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*";
    Regex::new(&format!(r"^{comp}(?:/{comp})*$")).unwrap()
});
static TAG_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$").unwrap());
static DIGEST_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$").unwrap());

/// Display gives back the input, and the printed form re-parses to an equal value.
fn round_trips<T: FromStr + Display + PartialEq + std::fmt::Debug>(s: &str, v: &T) {
    let printed = v.to_string();
    assert_eq!(printed, s, "{v:?} prints differently from its input");
    match printed.parse::<T>() {
        Ok(again) => assert_eq!(&again, v, "{printed:?} re-parses to a different value"),
        Err(_) => panic!("{printed:?} was accepted once but not when re-parsed"),
    }
}

fn check_digest(s: &str, d: &Digest) {
    round_trips(s, d);
    assert_eq!(d.as_str(), s);
    let want = match d.algorithm() {
        Algorithm::Sha256 => ("sha256", 64),
        Algorithm::Sha512 => ("sha512", 128),
    };
    assert!(s.starts_with(want.0) && s[want.0.len()..].starts_with(':'), "{s:?}: algorithm {:?}", d.algorithm());
    assert_eq!(d.hex().len(), want.1, "{s:?}: hex length");
    assert!(d.hex().bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')), "{s:?}: hex not lowercase hex");
    assert_eq!(format!("{}:{}", want.0, d.hex()), s);
}

fn check(s: &str) {
    match s.parse::<RepoName>() {
        Ok(n) => {
            round_trips(s, &n);
            assert!(n.as_str().len() <= berth_oci::name::MAX_NAME_LEN, "{s:?}: accepted a name over 255 bytes");
            assert!(
                n.as_str().bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'/' | b'-')),
                "{s:?}: accepted a name with a character outside [a-z0-9._/-]"
            );
            assert!(NAME_RE.is_match(s), "{s:?}: accepted a name the spec's grammar refuses");
            let first = n.first_component();
            assert!(!first.is_empty() && !first.contains('/') && s.starts_with(first), "{s:?}: first component {first:?}");
        }
        Err(_) => assert!(
            s.len() > berth_oci::name::MAX_NAME_LEN || !NAME_RE.is_match(s),
            "{s:?}: refused a name the spec's grammar accepts"
        ),
    }

    let tag = s.parse::<Tag>();
    match &tag {
        Ok(t) => {
            round_trips(s, t);
            assert!(TAG_RE.is_match(s), "{s:?}: accepted a tag the spec's grammar refuses");
        }
        Err(_) => assert!(!TAG_RE.is_match(s), "{s:?}: refused a tag the spec's grammar accepts"),
    }

    let digest = s.parse::<Digest>();
    match &digest {
        Ok(d) => {
            check_digest(s, d);
            assert!(DIGEST_RE.is_match(s), "{s:?}: accepted a digest outside sha256/sha512 lowercase hex");
        }
        Err(_) => assert!(!DIGEST_RE.is_match(s), "{s:?}: refused a valid sha256/sha512 digest"),
    }

    match s.parse::<Reference>() {
        Ok(r) => {
            round_trips(s, &r);
            match &r {
                Reference::Tag(t) => {
                    assert!(!s.contains(':'), "{s:?}: a tag reference with a ':'");
                    assert_eq!(Some(t), tag.as_ref().ok());
                }
                Reference::Digest(d) => {
                    assert!(s.contains(':'), "{s:?}: a digest reference without a ':'");
                    check_digest(s, d);
                    assert_eq!(Some(d), digest.as_ref().ok());
                }
            }
        }
        Err(_) => {
            // Refused as a reference iff refused by the parser it dispatches to.
            if s.contains(':') {
                assert!(digest.is_err(), "{s:?}: a valid digest refused as a reference");
            } else {
                assert!(tag.is_err(), "{s:?}: a valid tag refused as a reference");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        check(s);
    }
});
