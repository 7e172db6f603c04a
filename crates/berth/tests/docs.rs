//! The documentation checked against the code, so that what a reader copies works:
//!
//! - Every message quoted in a troubleshooting table of `docs/**/*.md` is one Berth produces: it
//!   appears in a string literal of a Berth crate (`crates/*/src/**/*.rs`, not the test tools
//!   `berth-testkit` and `berth-conformance`, not `#[cfg(test)]` code).
//! - No page promises a feature that does not exist.
//! - The shell snippets of the README and the federation pages that use only the `berth` CLI run
//!   as written against a fresh Berth, with `berth` on the PATH as the README says.
//! - Robot names (`robot$…`) in shell commands are single-quoted (a shell expands `$library`).
//!
//! The troubleshooting convention (also in the failure messages): under a heading that contains
//! "Troubleshooting", the first cell of each table row quotes messages in backticks. Text outside
//! the backticks is commentary. Placeholders inside a quote: `…` (or `...`) for any text,
//! `<name>`, and single capital letters such as `N` for values. A quote may be an excerpt of a
//! longer message. A message of another program is marked by the program's name and a colon
//! before the first backtick (`kubelet: \`…\``); those listed in [`EXTERNAL`] are not checked,
//! `plugin:` means Berth's own `berth-credential-provider`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{run, Berth};

// ------------------------------------------------------------------------------------------
// Rust string literals

/// A string literal of a source file: its line and its value (escapes resolved).
#[derive(Debug, Clone, PartialEq)]
struct Literal {
    line: usize,
    text: String,
}

/// The string literals of `src` (normal, raw and byte strings), without those inside comments
/// and `#[cfg(test)]` items.
fn string_literals(src: &str) -> Vec<Literal> {
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let at = |k: usize| chars.get(k).map(|&(_, c)| c);
    // `code` is the source with literals and comments blanked, for finding `#[cfg(test)]` items.
    let mut code: Vec<char> = chars.iter().map(|&(_, c)| c).collect();
    let mut found: Vec<(usize, String)> = Vec::new(); // (char index, text)
    let mut k = 0;
    while k < chars.len() {
        let c = chars[k].1;
        let ident_before = |k: usize| k > 0 && (chars[k - 1].1.is_alphanumeric() || chars[k - 1].1 == '_');
        if c == '/' && at(k + 1) == Some('/') {
            let start = k;
            while k < chars.len() && chars[k].1 != '\n' {
                k += 1;
            }
            code[start..k].fill(' ');
            continue;
        }
        if c == '/' && at(k + 1) == Some('*') {
            let (start, mut depth) = (k, 0);
            while k < chars.len() {
                if chars[k].1 == '/' && at(k + 1) == Some('*') {
                    depth += 1;
                    k += 2;
                } else if chars[k].1 == '*' && at(k + 1) == Some('/') {
                    depth -= 1;
                    k += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    k += 1;
                }
            }
            code[start..k.min(chars.len())].fill(' ');
            continue;
        }
        if c == 'r' && !ident_before(k) || (c == 'b' && at(k + 1) == Some('r') && !ident_before(k)) {
            // A raw string: r"…", r#"…"#, br"…".
            let mut j = if c == 'b' { k + 2 } else { k + 1 };
            let mut hashes = 0;
            while at(j) == Some('#') {
                hashes += 1;
                j += 1;
            }
            if at(j) == Some('"') {
                let start = k;
                let body = j + 1;
                let mut end = body;
                'scan: while end < chars.len() {
                    if chars[end].1 == '"' && (1..=hashes).all(|h| at(end + h) == Some('#')) {
                        break 'scan;
                    }
                    end += 1;
                }
                found.push((start, chars[body..end.min(chars.len())].iter().map(|&(_, c)| c).collect()));
                k = (end + 1 + hashes).min(chars.len());
                code[start..k].fill(' ');
                continue;
            }
        }
        if c == '"' {
            let start = k;
            let mut text = String::new();
            k += 1;
            while k < chars.len() && chars[k].1 != '"' {
                if chars[k].1 == '\\' {
                    let e = at(k + 1).unwrap_or(' ');
                    k += 2;
                    match e {
                        'n' => text.push('\n'),
                        't' => text.push('\t'),
                        'r' => text.push('\r'),
                        '0' => text.push('\0'),
                        'x' => {
                            let hex: String = chars[k..(k + 2).min(chars.len())].iter().map(|&(_, c)| c).collect();
                            text.push(u8::from_str_radix(&hex, 16).map(char::from).unwrap_or('?'));
                            k += 2;
                        }
                        'u' => {
                            let close = (k..chars.len()).find(|&j| chars[j].1 == '}').unwrap_or(k);
                            let hex: String = chars[(k + 1).min(close)..close].iter().map(|&(_, c)| c).collect();
                            text.push(u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32).unwrap_or('?'));
                            k = close + 1;
                        }
                        '\n' => {
                            while k < chars.len() && chars[k].1.is_whitespace() {
                                k += 1;
                            }
                        }
                        other => text.push(other),
                    }
                } else {
                    text.push(chars[k].1);
                    k += 1;
                }
            }
            k = (k + 1).min(chars.len());
            code[start..k].fill(' ');
            found.push((start, text));
            continue;
        }
        if c == '\'' {
            // A char literal ('x', '\n', '"') or a lifetime ('a).
            if at(k + 1) == Some('\\') {
                let close = (k + 3..chars.len()).find(|&j| chars[j].1 == '\'').unwrap_or(k + 2);
                code[k..=close.min(chars.len() - 1)].fill(' ');
                k = close + 1;
                continue;
            }
            if at(k + 2) == Some('\'') {
                code[k..k + 3].fill(' ');
                k += 3;
                continue;
            }
        }
        k += 1;
    }
    // `#[cfg(test)]` items: from the attribute to the end of the item's braces (or its `;`).
    let code: String = code.into_iter().collect();
    let code_chars: Vec<char> = code.chars().collect();
    let mut excluded: Vec<(usize, usize)> = Vec::new();
    let needle: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut k = 0;
    while k + needle.len() <= code_chars.len() {
        if code_chars[k..k + needle.len()] == needle[..] {
            let start = k;
            let mut j = k + needle.len();
            while j < code_chars.len() && code_chars[j] != '{' && code_chars[j] != ';' {
                j += 1;
            }
            if j < code_chars.len() && code_chars[j] == '{' {
                let mut depth = 0;
                while j < code_chars.len() {
                    match code_chars[j] {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
            }
            excluded.push((start, j));
            k = j.max(k + 1);
        } else {
            k += 1;
        }
    }
    let mut line_of = Vec::with_capacity(chars.len());
    let mut line = 1;
    for &(_, c) in &chars {
        line_of.push(line);
        if c == '\n' {
            line += 1;
        }
    }
    found
        .into_iter()
        .filter(|(pos, _)| !excluded.iter().any(|&(a, b)| (a..=b).contains(pos)))
        .map(|(pos, text)| Literal { line: line_of[pos], text })
        .collect()
}

// ------------------------------------------------------------------------------------------
// Patterns: a doc quote against a code literal

/// One element of a pattern: a literal character or a hole (any text).
#[derive(Debug, Clone, Copy, PartialEq)]
enum P {
    C(char),
    Hole,
}

/// A code literal as a pattern: format arguments (`{}`, `{name:?}`) are holes; `{{`/`}}` are
/// braces.
fn code_pattern(lit: &str) -> Vec<P> {
    let cs: Vec<char> = lit.chars().collect();
    let mut out = Vec::new();
    let mut k = 0;
    while k < cs.len() {
        match (cs[k], cs.get(k + 1)) {
            ('{', Some('{')) | ('}', Some('}')) => {
                out.push(P::C(cs[k]));
                k += 2;
            }
            ('{', _) => {
                let close = (k..cs.len()).find(|&j| cs[j] == '}').unwrap_or(cs.len() - 1);
                out.push(P::Hole);
                k = close + 1;
            }
            (c, _) => {
                out.push(P::C(c));
                k += 1;
            }
        }
    }
    out
}

/// A doc quote as a pattern whose holes are the placeholders `…` (or `...`), `<name>` and single
/// capital letters.
fn quote_pattern(quote: &str) -> Vec<P> {
    let text = quote.replace("...", "…");
    let cs: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut k = 0;
    while k < cs.len() {
        if cs[k] == '…' {
            out.push(P::Hole);
            k += 1;
            continue;
        }
        let rest: String = cs[k..].iter().collect();
        let (mut p, used) = plain_pattern(&rest, true);
        out.append(&mut p);
        k += used;
    }
    out
}

/// The quote split at `…` (or `...`) into trimmed fragments: for messages the docs compose of
/// several pieces of the code (an error code, then a message).
fn quote_fragments(quote: &str) -> Vec<Vec<P>> {
    quote.replace("...", "…").split('…').map(|frag| plain_pattern(frag.trim(), false).0).collect()
}

/// The pattern of `text` up to its first `…` (all of it when `stop_at_ellipsis` is false), and
/// how many characters that was. Holes: `<name>` and single capital letters.
fn plain_pattern(text: &str, stop_at_ellipsis: bool) -> (Vec<P>, usize) {
    let all: Vec<char> = text.chars().collect();
    let end = if stop_at_ellipsis { all.iter().position(|&c| c == '…').unwrap_or(all.len()) } else { all.len() };
    let cs = &all[..end];
    let word_char = |j: Option<&char>| j.is_some_and(|c| c.is_alphanumeric() || *c == '_');
    let mut out = Vec::new();
    let mut k = 0;
    while k < cs.len() {
        let c = cs[k];
        if c == '<' {
            if let Some(close) = (k + 1..cs.len()).find(|&j| cs[j] == '>') {
                if close > k + 1 && cs[k + 1..close].iter().all(|c| c.is_alphanumeric() || "-_ ".contains(*c)) {
                    out.push(P::Hole);
                    k = close + 1;
                    continue;
                }
            }
        }
        if c.is_ascii_uppercase() && !word_char(k.checked_sub(1).and_then(|j| cs.get(j))) && !word_char(cs.get(k + 1)) {
            out.push(P::Hole);
        } else {
            out.push(P::C(c));
        }
        k += 1;
    }
    (out, end)
}

/// The literal characters of a pattern.
fn literal_count(p: &[P]) -> usize {
    p.iter().filter(|e| matches!(e, P::C(_))).count()
}

/// The most characters of `frag` that can be matched by literal characters of `code` when
/// `frag` is placed somewhere inside an instance of `code` (holes of either side absorb any
/// text); `None` if it cannot be placed at all.
fn match_score(frag: &[P], code: &[P]) -> Option<usize> {
    let mut a = vec![P::Hole];
    a.extend_from_slice(frag);
    a.push(P::Hole);
    let (n, m) = (a.len(), code.len());
    const NO: i32 = i32::MIN / 2;
    let mut f = vec![vec![NO; m + 1]; n + 1];
    f[n][m] = 0;
    for i in (0..=n).rev() {
        for j in (0..=m).rev() {
            if i == n && j == m {
                continue;
            }
            let mut best = NO;
            if i < n && a[i] == P::Hole {
                best = best.max(f[i + 1][j]);
                if j < m {
                    best = best.max(f[i][j + 1]);
                }
            }
            if j < m && code[j] == P::Hole {
                best = best.max(f[i][j + 1]);
                if i < n {
                    best = best.max(f[i + 1][j]);
                }
            }
            if i < n && j < m {
                if let (P::C(x), P::C(y)) = (a[i], code[j]) {
                    if x == y {
                        best = best.max(1 + f[i + 1][j + 1]);
                    }
                }
            }
            f[i][j] = best;
        }
    }
    (f[0][0] >= 0).then_some(f[0][0] as usize)
}

/// Whether `frag` is found in `code`: it fits, and enough of its characters are the code's own
/// text rather than values filling the code's holes (12, or half of them, and at least 4).
fn fragment_found(frag: &[P], code: &[P]) -> bool {
    let need = literal_count(frag);
    match_score(frag, code).is_some_and(|s| (s >= 12 || s * 2 >= need) && s >= need.min(4))
}

/// A quote as clients print Berth's errors, `<code in lower case>: <message>` (docker:
/// `unauthorized: authentication required`), without the code: the message is Berth's.
fn strip_client_code<'a>(quote: &'a str, codes: &[String]) -> &'a str {
    match quote.split_once(": ") {
        Some((code, message)) if codes.iter().any(|c| c.eq_ignore_ascii_case(&code.replace(' ', "_"))) => message,
        _ => quote,
    }
}

/// Words (4+ letters) of a fragment, for a cheap first filter.
fn words(frag: &[P]) -> Vec<String> {
    let text: String = frag.iter().map(|e| if let P::C(c) = e { *c } else { ' ' }).collect();
    text.split(|c: char| !c.is_alphabetic()).filter(|w| w.len() >= 4).map(str::to_owned).collect()
}

/// Fragments that carry too little text to check (`", "`, `" s"`).
fn checkable(frag: &[P]) -> bool {
    frag.iter().filter(|e| matches!(e, P::C(c) if c.is_alphanumeric())).count() >= 4
}

/// The Berth source files whose literals count: `crates/*/src/**/*.rs` except the test tools.
fn berth_sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for c in std::fs::read_dir(support::repo_root().join("crates")).unwrap().filter_map(|e| e.ok()) {
        let name = c.file_name().to_string_lossy().into_owned();
        if ["testkit", "conformance"].contains(&name.as_str()) {
            continue;
        }
        let src = c.path().join("src");
        if src.is_dir() {
            walk(&src, &mut out);
        }
    }
    out.sort();
    out
}

// ------------------------------------------------------------------------------------------
// Markdown

/// Programs whose messages the docs may quote, marked `name:` before the quote; not checked.
const EXTERNAL: &[&str] = &["kubelet", "GitHub", "GitLab", "Forgejo", "Flux", "docker", "containerd", "kubectl", "skopeo", "podman"];
/// Labels that name Berth's own programs: checked like unlabelled quotes.
const BERTH_LABELS: &[&str] = &["plugin", "berth", "berth-credential-provider"];

/// A quote in a troubleshooting table: its line and text, and the program label if any.
#[derive(Debug, Clone, PartialEq)]
struct Quote {
    line: usize,
    label: Option<String>,
    text: String,
}

/// The first cell of a table row (`| a | b |` → `a`), honouring `\|`.
fn first_cell(row: &str) -> &str {
    let body = row.trim().strip_prefix('|').unwrap_or(row);
    let bytes = body.as_bytes();
    let mut k = 0;
    while k < bytes.len() {
        match bytes[k] {
            b'\\' => k += 2,
            b'|' => return body[..k].trim(),
            _ => k += 1,
        }
    }
    body.trim()
}

/// The backtick quotes of the first cells of the tables under "Troubleshooting" headings.
fn troubleshooting_quotes(md: &str) -> Vec<Quote> {
    let mut out = Vec::new();
    let mut section: Option<usize> = None; // heading level of the troubleshooting section
    let mut fence = false;
    let mut prev_table = false;
    for (n, line) in md.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
            continue;
        }
        if fence {
            continue;
        }
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if hashes > 0 && line[hashes..].starts_with(' ') {
            if section.is_some_and(|l| hashes <= l) {
                section = None;
            }
            if line.to_lowercase().contains("troubleshooting") {
                section = Some(hashes);
            }
            prev_table = false;
            continue;
        }
        let is_row = line.trim_start().starts_with('|');
        let header = is_row && !prev_table;
        prev_table = is_row;
        if section.is_none() || !is_row || header {
            continue;
        }
        let cell = first_cell(line);
        if cell.chars().all(|c| "-: |".contains(c)) {
            continue;
        }
        let before = cell.split('`').next().unwrap_or("").trim();
        let label = before.strip_suffix(':').map(|l| l.trim().to_owned());
        for (k, part) in cell.split('`').enumerate() {
            if k % 2 == 1 && !part.is_empty() {
                out.push(Quote { line: n + 1, label: label.clone(), text: part.replace("\\|", "|") });
            }
        }
    }
    out
}

fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "md") {
                out.push(p);
            }
        }
    }
    let root = support::repo_root();
    let mut out = vec![root.join("README.md")];
    walk(&root.join("docs"), &mut out);
    out.sort();
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(support::repo_root()).unwrap_or(p).display().to_string()
}

// ------------------------------------------------------------------------------------------
// The checks

#[test]
fn every_troubleshooting_message_is_one_berth_produces() {
    let mut literals: Vec<(String, Literal, Vec<P>)> = Vec::new();
    for f in berth_sources() {
        let src = std::fs::read_to_string(&f).unwrap();
        for l in string_literals(&src) {
            if l.text.chars().count() >= 4 {
                let p = code_pattern(&l.text);
                literals.push((rel(&f), l, p));
            }
        }
    }
    let codes: Vec<String> = string_literals(&std::fs::read_to_string(support::repo_root().join("crates/oci/src/error.rs")).unwrap())
        .into_iter()
        .map(|l| l.text)
        .filter(|t| t.len() > 3 && t.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(codes.contains(&"DENIED".to_owned()), "no OCI error codes found in crates/oci/src/error.rs: {codes:?}");
    assert!(literals.len() > 500, "found only {} string literals in crates/*/src: is the lexer broken?", literals.len());
    let mut checked = 0;
    let mut problems = Vec::new();
    for md in markdown_files() {
        let text = std::fs::read_to_string(&md).unwrap();
        for q in troubleshooting_quotes(&text) {
            match q.label.as_deref() {
                Some(l) if EXTERNAL.contains(&l) => continue,
                Some(l) if !BERTH_LABELS.contains(&l) => {
                    problems.push(format!(
                        "{}:{}: unknown program label {l:?} before `{}`: add it to EXTERNAL (another program's message) or BERTH_LABELS in crates/berth/tests/docs.rs",
                        rel(&md),
                        q.line,
                        q.text
                    ));
                    continue;
                }
                _ => {}
            }
            checked += 1;
            let quote = strip_client_code(&q.text, &codes);
            // First the literals that share words with the quote (fast), then all of them (the
            // quote's words may all be values, `<user> may not push <repo>`).
            let found_in = |frag: &[P]| {
                let ws = words(frag);
                literals.iter().any(|(_, l, p)| {
                    let hits = ws.iter().filter(|w| l.text.contains(w.as_str())).count();
                    hits >= ws.len().min(2) && fragment_found(frag, p)
                }) || literals.iter().any(|(_, _, p)| fragment_found(frag, p))
            };
            if found_in(&quote_pattern(quote)) {
                continue;
            }
            let missing = quote_fragments(quote).into_iter().filter(|f| checkable(f)).find(|f| !found_in(f));
            if let Some(frag) = missing {
                let shown: String = frag.iter().map(|e| if let P::C(c) = e { *c } else { '…' }).collect();
                let ws = words(&frag);
                let closest = literals
                    .iter()
                    .filter_map(|(f, l, p)| match_score(&frag, p).map(|s| ((ws.iter().filter(|w| l.text.contains(w.as_str())).count(), s), f, l)))
                    .max_by_key(|(s, _, _)| *s)
                    .map(|(_, f, l)| format!("{f}:{}: {:?}", l.line, l.text))
                    .unwrap_or_else(|| "none".into());
                problems.push(format!(
                    "{}:{}: `{}`: the text {shown:?} is in no string literal of crates/*/src (closest: {closest}). \
                     Quote Berth's message verbatim (placeholders: … or ..., <name>, single capital letters), \
                     or label another program's message (`kubelet: \\`…\\``)",
                    rel(&md),
                    q.line,
                    q.text
                ));
            }
        }
    }
    assert!(checked >= 20, "found only {checked} quoted messages in troubleshooting tables: is the extraction broken?");
    assert!(problems.is_empty(), "{} quoted message(s) differ from the code:\n{}", problems.len(), problems.join("\n"));
}

/// Phrases that promise what Berth does not have, with what is true instead.
const UNFOUNDED: &[(&str, &str)] = &[
    ("issue 3", "issue numbers are not features; say what exists now"),
];

/// Pages other engineers are rewriting while this check was added (issue 8); remove each from
/// this list once its unfounded phrases are gone.
const UNFOUNDED_NOT_YET_CHECKED: &[&str] = &[];

#[test]
fn no_page_promises_a_feature_that_does_not_exist() {
    let mut problems = Vec::new();
    for md in markdown_files().into_iter().filter(|f| !UNFOUNDED_NOT_YET_CHECKED.contains(&rel(f).as_str())) {
        let text = std::fs::read_to_string(&md).unwrap();
        for (n, line) in text.lines().enumerate() {
            let lower = line.to_lowercase();
            for (phrase, truth) in UNFOUNDED {
                if lower.contains(phrase) {
                    problems.push(format!("{}:{}: {phrase:?}: {truth}\n    {}", rel(&md), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The shell snippets of `md`: (line of the fence, the commands with continuation lines joined,
/// comments and blank lines dropped).
fn shell_blocks(md: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, Vec<String>)> = None;
    let mut pending = String::new();
    for (n, line) in md.lines().enumerate() {
        let t = line.trim_start();
        if let Some(lang) = t.strip_prefix("```") {
            match current.take() {
                Some(block) => out.push(block),
                None if ["sh", "bash", "shell"].contains(&lang.trim()) => current = Some((n + 1, Vec::new())),
                None => current = Some((n + 1, vec!["<not a shell block>".into()])),
            }
            continue;
        }
        if let Some((_, cmds)) = current.as_mut() {
            if cmds.first().is_some_and(|c| c == "<not a shell block>") {
                continue;
            }
            match t.strip_suffix('\\') {
                Some(head) => pending.push_str(head),
                None => {
                    pending.push_str(t);
                    let cmd = std::mem::take(&mut pending);
                    if !cmd.trim().is_empty() && !cmd.trim_start().starts_with('#') {
                        cmds.push(cmd.trim().to_owned());
                    }
                }
            }
        }
    }
    out.retain(|(_, cmds)| cmds.first().is_none_or(|c| c != "<not a shell block>"));
    out
}

/// Whether byte `pos` of `line` is inside single quotes (where a shell does not expand `$`).
fn in_single_quotes(line: &str, pos: usize) -> bool {
    let (mut single, mut double) = (false, false);
    let mut escaped = false;
    for c in line[..pos].chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if !single => escaped = true,
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            _ => {}
        }
    }
    single
}

/// Commands that inline code spans may show; `robot$…` in them must be single-quoted.
const SHELL_WORDS: &[&str] = &["berth ", "docker ", "podman ", "skopeo ", "echo ", "curl ", "kubectl ", "oras "];

#[test]
fn robot_names_in_shell_commands_are_single_quoted() {
    let root = support::repo_root();
    let mut lines_to_check: Vec<(String, usize, String)> = Vec::new();
    for md in markdown_files() {
        let text = std::fs::read_to_string(&md).unwrap();
        let mut fence: Option<bool> = None; // Some(is_shell)
        for (n, line) in text.lines().enumerate() {
            if let Some(lang) = line.trim_start().strip_prefix("```") {
                fence = match fence {
                    Some(_) => None,
                    None => Some(["sh", "bash", "shell", "console"].contains(&lang.trim())),
                };
                continue;
            }
            match fence {
                Some(true) => lines_to_check.push((rel(&md), n + 1, line.to_owned())),
                Some(false) => {}
                None => {
                    for (k, span) in line.split('`').enumerate() {
                        if k % 2 == 1 && SHELL_WORDS.iter().any(|w| span.starts_with(w)) {
                            lines_to_check.push((rel(&md), n + 1, span.to_owned()));
                        }
                    }
                }
            }
        }
    }
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut examples = Vec::new();
    walk(&root.join("examples"), &mut examples);
    for f in examples.iter().filter(|f| f.file_name().is_some_and(|n| n != "berth.yaml" && n != "README.md")) {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            lines_to_check.push((rel(f), n + 1, line.to_owned()));
        }
    }
    assert!(lines_to_check.len() > 100, "found only {} shell lines: is the extraction broken?", lines_to_check.len());
    let problems: Vec<String> = lines_to_check
        .iter()
        .flat_map(|(f, n, line)| {
            line.match_indices("robot$")
                .filter(|(pos, _)| !in_single_quotes(line, *pos))
                .map(move |_| format!("{f}:{n}: quote the robot name in single quotes ('robot$…'), a shell expands $…: {}", line.trim()))
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Where a push fails because the OIDC token stored by an earlier `docker login` expired: for
/// every `docker push` in `lines`, the nearest earlier `docker login` must come after any
/// `docker build` and in the same CI step, and where the job requests its token with
/// `ACTIONS_ID_TOKEN_REQUEST_URL` (GitHub, Forgejo), that request must be in that step too.
fn stale_logins(lines: &[&str]) -> Vec<usize> {
    let step_boundary = |l: &str| {
        let t = l.trim_start();
        ["- name:", "- uses:", "- run:", "steps:"].iter().any(|b| t.starts_with(b))
    };
    let requests_token = lines.iter().any(|l| l.contains("ACTIONS_ID_TOKEN_REQUEST_URL"));
    let mut bad = Vec::new();
    for (i, _) in lines.iter().enumerate().filter(|(_, l)| l.contains("docker push")) {
        let mut ok = false;
        for j in (0..i).rev() {
            let prev = lines[j];
            if prev.contains("docker login") {
                // The login's step: its own line, up to the step's first line.
                ok = !requests_token
                    || (0..=j).rev().take_while(|&k| k == j || !step_boundary(lines[k])).any(|k| lines[k].contains("ACTIONS_ID_TOKEN_REQUEST_URL"));
                break;
            }
            if prev.contains("docker build") || step_boundary(prev) {
                break;
            }
        }
        if !ok {
            bad.push(i + 1);
        }
    }
    bad
}

#[test]
fn ci_snippets_log_in_right_before_the_push() {
    let root = support::repo_root();
    let mut sources: Vec<(String, Vec<String>)> = Vec::new();
    for f in ["examples/github-actions/workflow.yml", "examples/forgejo-actions/workflow.yml", "examples/gitlab-ci/.gitlab-ci.yml"] {
        sources.push((f.to_owned(), std::fs::read_to_string(root.join(f)).unwrap().lines().map(str::to_owned).collect()));
    }
    for page in ["docs/platforms/github-actions.md", "docs/platforms/gitlab-ci.md", "docs/platforms/forgejo-actions.md", "docs/federation.md", "README.md"] {
        // Each fenced block on its own.
        let text = std::fs::read_to_string(root.join(page)).unwrap();
        let mut block: Option<Vec<String>> = None;
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                match block.take() {
                    Some(b) => sources.push((page.to_owned(), b)),
                    None => block = Some(Vec::new()),
                }
            } else if let Some(b) = block.as_mut() {
                b.push(line.to_owned());
            }
        }
    }
    let mut pushes = 0;
    let mut problems = Vec::new();
    for (f, lines) in &sources {
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        pushes += lines.iter().filter(|l| l.contains("docker push")).count();
        for n in stale_logins(&lines) {
            problems.push(format!(
                "{f}: `{}`: request the token and `docker login` right before this push, in the same step and after the build: \
                 docker sends the stored token only when the push starts, and GitHub's expire after 5 minutes",
                lines[n - 1].trim()
            ));
        }
    }
    assert!(pushes >= 6, "found only {pushes} docker push lines: is the extraction broken?");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn stale_logins_by_table() {
    let cases: &[(&str, Vec<usize>)] = &[
        // Login first, build, then push: the token may have expired.
        ("steps:\n  - name: Log in\n    run: |\n      TOKEN=$(curl \"$ACTIONS_ID_TOKEN_REQUEST_URL\")\n      echo \"$TOKEN\" | docker login\n  - name: Build and push\n    run: |\n      docker build .\n      docker push x", vec![9]),
        // Build, then token, login and push in one step.
        ("steps:\n  - run: docker build .\n  - run: |\n      TOKEN=$(curl \"$ACTIONS_ID_TOKEN_REQUEST_URL\")\n      echo \"$TOKEN\" | docker login\n      docker push x", vec![]),
        // The token requested in an earlier step, login and push later.
        ("steps:\n  - run: TOKEN=$(curl \"$ACTIONS_ID_TOKEN_REQUEST_URL\") >> $GITHUB_ENV\n  - run: docker build .\n  - run: |\n      echo \"$TOKEN\" | docker login\n      docker push x", vec![6]),
        // GitLab: script lines; the ID token comes with the job.
        ("script:\n  - docker build .\n  - echo \"$ID_TOKEN\" | docker login\n  - docker push x", vec![]),
        ("script:\n  - echo \"$ID_TOKEN\" | docker login\n  - docker build .\n  - docker push x", vec![4]),
        ("docker push x", vec![1]),
    ];
    for (text, want) in cases {
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(&stale_logins(&lines), want, "{text}");
    }
}

/// The pages whose `berth`-only snippets are self-contained setups, run as written.
const RUNNABLE_PAGES: &[&str] = &["README.md", "docs/federation.md", "docs/platforms/github-actions.md", "docs/platforms/gitlab-ci.md", "docs/platforms/forgejo-actions.md"];

#[test]
fn berth_cli_snippets_run_as_written() {
    let root = support::repo_root();
    // `berth` on the PATH, as the README's `export PATH="$PWD/target/release:$PATH"` does.
    let bin = tempfile::tempdir().unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_berth"), bin.path().join("berth")).unwrap();
    let path = format!("{}:{}", bin.path().display(), std::env::var("PATH").unwrap_or_default());
    let mut ran = 0;
    for page in RUNNABLE_PAGES {
        let text = std::fs::read_to_string(root.join(page)).unwrap();
        for (line, cmds) in shell_blocks(&text) {
            // Only snippets that use nothing but the berth CLI (exports of BERTH_* are what the
            // test sets itself, pointing at the test server).
            let runnable = !cmds.is_empty() && cmds.iter().all(|c| c.starts_with("berth ") || c.starts_with("export BERTH_"));
            if !runnable || cmds.iter().all(|c| c.starts_with("export ")) {
                continue;
            }
            let b = Berth::start();
            let script = format!("set -eu\n{}\n", cmds.iter().filter(|c| !c.starts_with("export ")).cloned().collect::<Vec<_>>().join("\n"));
            let home = b.path("home");
            std::fs::create_dir_all(&home).unwrap();
            let mut cmd = Command::new("sh");
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("BERTH_") {
                    cmd.env_remove(&k);
                }
            }
            cmd.args(["-c", &script])
                .current_dir(&root)
                .env("PATH", &path)
                .env("HOME", &home)
                .env_remove("XDG_CONFIG_HOME")
                .env("BERTH_SERVER", format!("http://{}", b.host()))
                .env("BERTH_USERNAME", "admin")
                .env("BERTH_PASSWORD", b.admin_password());
            let out = run(&mut cmd);
            assert!(out.success(), "{page}:{line}: the snippet fails when run as written:\n{script}\n--- stdout:\n{}\n--- stderr:\n{}", out.stdout, out.stderr);
            ran += 1;
        }
    }
    assert!(ran >= 5, "ran only {ran} snippets: is the extraction broken?");
}

// ------------------------------------------------------------------------------------------
// The helpers, by tables

#[test]
fn the_lexer_finds_string_literals_and_skips_comments_and_tests() {
    let src = r####"
// "in a comment"
/* "in a block" /* nested "x" */ still */
fn f<'a>(x: &'a str) -> char { let _q = '"'; let _e = '\''; '\u{41}' }
const A: &str = "plain \"quoted\" \x41 \u{263A}";
const B: &str = r#"raw "with" quotes"#;
const C: &str = "continued \
                 line";
const D: &[u8] = b"bytes";
#[cfg(test)]
mod tests { const T: &str = "test only"; fn g() { let _ = "also test"; } }
const E: &str = "after tests";
"####;
    let got: Vec<(usize, String)> = string_literals(src).into_iter().map(|l| (l.line, l.text)).collect();
    let want: Vec<(usize, String)> = vec![
        (5, "plain \"quoted\" A \u{263A}".into()),
        (6, "raw \"with\" quotes".into()),
        (7, "continued line".into()),
        (9, "bytes".into()),
        (12, "after tests".into()),
    ];
    assert_eq!(got, want);
}

#[test]
fn quotes_match_code_literals_by_table() {
    let cases: &[(&str, &str, bool)] = &[
        // (doc quote, code literal, found)
        ("token expired at 2026-11-24T10:00:00Z (now …, allowed clock skew 60s)", "token expired at {} (now {}, allowed clock skew {skew}s)", true),
        ("token not yet valid: not before …", "token not yet valid: not before {} (now {}, allowed clock skew {skew}s); check the clocks", true),
        ("token not valid before …", "token not yet valid: not before {} (now {}, allowed clock skew {skew}s); check the clocks", false),
        ("audience mismatch: expected one of [registry.example.com], token has [sts.amazonaws.com]", "audience mismatch: expected one of [{}], token has [{}]", true),
        ("audience mismatch", "audience mismatch: expected one of [{}], token has [{}]", true),
        ("unknown key id \"abc\" (the identity provider's keys have: k1, k2)", "unknown key id {kid:?} (the identity provider's keys have: {})", true),
        ("too many failed logins for this account; try again in N s", "too many failed logins {what}; try again in {retry_after} s", true),
        ("the token does not allow push on <repo>", "the token does not allow {} on {repo}", true),
        ("the token does not allow push on library/app", "the token does not allow {} on {repo}", true),
        ("the token does not permit push on library/app", "the token does not allow {} on {repo}", false),
        // Holes alone do not make a match: the code's own text must carry the quote.
        ("invalid username or password", "{}: {}", false),
        ("invalid username or password", "{context} failed: {e}", false),
        ("{{literal}} braces", "{{literal}} braces", false), // the doc shows `{{`, the message `{`
        ("{literal} braces", "{{literal}} braces", true),
        ("unknown issuer \"https://code.example.com/api/actions\"", "unknown issuer {0:?}: no identity provider is configured for it", true),
        ("robot \"robot$…\" does not match your token", "robot {robot:?} does not match your token (identity provider {provider:?})", true),
        ("robot \"robot$…\" does not match your token", "robot {robot:?} matches no token", false),
        ("<user> may not push <repo>", "{} may not {} {repo}", true),
        ("<user> may not push <repo>", "{} may not be pushed", false),
        ("no robots matched your token (identity provider \"github\")", "no robots matched your token (identity provider {provider:?}); `berth token explain` shows which rules failed", true),
    ];
    for (quote, code, want) in cases {
        let p = code_pattern(code);
        let got = fragment_found(&quote_pattern(quote), &p);
        assert_eq!(got, *want, "{quote:?} in {code:?}");
    }
}

#[test]
fn composed_quotes_and_client_renderings_by_table() {
    // A quote composed of pieces: each piece between `…` is found on its own.
    let code = [code_pattern("MANIFEST_BLOB_UNKNOWN"), code_pattern("the manifest references {}; push it first")];
    let frags = quote_fragments("MANIFEST_BLOB_UNKNOWN ... push it first");
    assert_eq!(frags.len(), 2);
    assert!(frags.iter().all(|f| code.iter().any(|c| fragment_found(f, c))));
    assert!(!quote_fragments("MANIFEST_BLOB_MISSING ... push it first").iter().all(|f| code.iter().any(|c| fragment_found(f, c))));
    let codes = ["UNAUTHORIZED".to_owned(), "NAME_UNKNOWN".to_owned()];
    let cases = [
        ("unauthorized: authentication required", "authentication required"),
        ("name unknown: repository x is not known", "repository x is not known"),
        ("audience mismatch: expected", "audience mismatch: expected"),
    ];
    for (quote, want) in cases {
        assert_eq!(strip_client_code(quote, &codes), want);
    }
}

#[test]
fn troubleshooting_quotes_are_extracted_by_convention() {
    let md = "# Page\n| a | b |\n|---|---|\n| `not in a troubleshooting section` | x |\n\
              ## Troubleshooting\nSome text.\n\n| message | fix |\n|---|---|\n\
              | `first message` (commentary) | `not the first cell` |\n\
              | kubelet: `external one` / `external two` | x |\n\
              | plugin: `the plugin's` | x |\n\
              | `with \\| pipe` | `a | b` |\n\
              ```\n| `in a code block` | x |\n```\n\
              ### Deeper\n| h |\n|---|\n| `still inside` |\n\
              ## Next\n| h |\n|---|\n| `outside again` |\n";
    let got: Vec<(usize, Option<String>, String)> = troubleshooting_quotes(md).into_iter().map(|q| (q.line, q.label, q.text)).collect();
    let want = vec![
        (10, None, "first message".to_owned()),
        (11, Some("kubelet".to_owned()), "external one".to_owned()),
        (11, Some("kubelet".to_owned()), "external two".to_owned()),
        (12, Some("plugin".to_owned()), "the plugin's".to_owned()),
        (13, None, "with | pipe".to_owned()),
        (20, None, "still inside".to_owned()),
    ];
    assert_eq!(got, want);
}

#[test]
fn single_quotes_protect_robot_names_by_table() {
    let cases: &[(&str, bool)] = &[
        ("berth robot get 'robot$library+ci'", true),
        ("berth robot get robot$library+ci", false),
        ("berth robot get \"robot$library+ci\"", false),
        ("docker login -u 'robot$library+ci' --password-stdin", true),
        ("echo 'it''s' robot$x", false),
        ("echo \"'\" robot$x", false),
    ];
    for (line, want) in cases {
        let pos = line.find("robot$").unwrap();
        assert_eq!(in_single_quotes(line, pos), *want, "{line}");
    }
}

#[test]
fn shell_blocks_join_continuations_and_drop_comments() {
    let md = "text\n```sh\n# a comment\nberth a \\\n    --b c   # trailing\n\nberth d\n```\n```yaml\nx: y\n```\n";
    assert_eq!(shell_blocks(md), vec![(2, vec!["berth a --b c   # trailing".to_owned(), "berth d".to_owned()])]);
}
