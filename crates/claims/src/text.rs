//! How a claim value compares with the strings of `equals`, `glob` and `oneOf`, and how values
//! are shown in reasons.
//!
//! A string compares as itself; a number as its JSON text as `serde_json` prints it (integers in
//! decimal: `47561171`; other numbers in the shortest form that reads back the same: `1.5`);
//! a boolean as `true` or `false`. An array compares element by element and matches when any
//! element does (`aud: ["x", "y"]`); only its strings, numbers and booleans take part (nested
//! arrays, objects and `null` inside it are skipped). An object or `null` has no text and never
//! matches.

use serde_json::Value;

/// Calls `hit` with each comparable text of `v` until it returns true; returns whether one did.
/// `seen` counts the texts offered (so a caller can tell "no text at all" from "no match").
pub(crate) fn any_text(v: &Value, seen: &mut usize, mut hit: impl FnMut(&str) -> bool) -> bool {
    match v {
        Value::Array(items) => items.iter().any(|item| scalar_text(item, seen, &mut hit)),
        other => scalar_text(other, seen, &mut hit),
    }
}

fn scalar_text(v: &Value, seen: &mut usize, hit: &mut impl FnMut(&str) -> bool) -> bool {
    match v {
        Value::String(s) => {
            *seen += 1;
            hit(s)
        }
        Value::Number(n) => {
            *seen += 1;
            hit(&n.to_string())
        }
        Value::Bool(b) => {
            *seen += 1;
            hit(if *b { "true" } else { "false" })
        }
        Value::Array(_) | Value::Object(_) | Value::Null => false,
    }
}

/// Longest value shown in a reason, in bytes (before the ellipsis).
const SHOW_BYTES: usize = 200;

/// A claim value as compact JSON for a reason, cut (at a character boundary) if long.
pub(crate) fn show(v: &Value) -> String {
    cut(v.to_string())
}

/// Cuts a text for a reason at a character boundary.
pub(crate) fn cut(mut s: String) -> String {
    if s.len() > SHOW_BYTES {
        let mut end = SHOW_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}
