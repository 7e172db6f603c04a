//! Client-supplied strings on their way into logs, the audit log and error messages: capped in
//! length and stripped of control characters, so a client can neither grow the database nor forge
//! log lines.

use std::borrow::Cow;

/// User names, robot names and subjects as logged or audited.
pub const MAX_LOGGED_NAME: usize = 128;
/// Request paths in the access log.
pub const MAX_LOGGED_PATH: usize = 512;
/// Free-text messages (refusal reasons that may quote client input).
pub const MAX_LOGGED_MESSAGE: usize = 1024;

/// `s` with control characters replaced by `?` and cut to at most `max` bytes (on a character
/// boundary), with the original length appended when it was cut.
pub fn cap(s: &str, max: usize) -> Cow<'_, str> {
    let clean = !s.chars().any(char::is_control);
    if clean && s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(max) + 24);
    for c in s.chars() {
        let c = if c.is_control() { '?' } else { c };
        if out.len() + c.len_utf8() > max {
            out.push_str(&format!("…({} bytes)", s.len()));
            return Cow::Owned(out);
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// [`cap`] into an owned string.
pub fn capped(s: &str, max: usize) -> String {
    cap(s, max).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_table() {
        let long = "a".repeat(400_000);
        let cases: Vec<(&str, usize, &str)> = vec![
            ("alice", 128, "alice"),
            ("", 8, ""),
            ("abcdefgh", 8, "abcdefgh"),
            ("abcdefghi", 8, "abcdefgh…(9 bytes)"),
            ("ab\ncd\x1b[31m", 64, "ab?cd?[31m"),
            ("ééééé", 5, "éé…(10 bytes)"),
        ];
        for (input, max, want) in cases {
            assert_eq!(cap(input, max), want, "{input:?}");
        }
        let c = cap(&long, MAX_LOGGED_NAME);
        assert!(c.len() < MAX_LOGGED_NAME + 24, "{}", c.len());
        assert!(c.ends_with("…(400000 bytes)"));
        assert!(matches!(cap("plain", 10), Cow::Borrowed(_)));
    }
}
