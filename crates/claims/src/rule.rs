//! One claim rule: its wire form [`RuleSpec`], its compiled form [`Rule`], and the [`Outcome`]
//! of evaluating it on verified claims.
//!
//! A rule is a claim path plus exactly one operator:
//! - `equals: "<string>"`: some text of the claim (see [`crate::text`]: strings as is, numbers
//!   and booleans as JSON text, arrays element by element) is exactly this string.
//! - `glob: "<pattern>"`: some text of the claim matches the pattern, case-sensitively and
//!   anchored (the whole text must match: `refs/heads/*` does not match `xrefs/heads/a`). The
//!   syntax is `globset`'s with `literal_separator(false)` and `backslash_escape(true)`, so `/`
//!   and `:` are ordinary characters:
//!   - `*` matches any run of characters, also empty, including `/`, `:` and line feeds;
//!   - `?` matches exactly one *byte* of the UTF-8 text: one ASCII character (`/` and `:`
//!     included), but not a non-ASCII character, which is two to four bytes (`?` does not match
//!     `é`; `??` does). Classes are byte classes too. Use `*` around non-ASCII text;
//!   - `[abc]`, `[a-z]` one character of a class, `[!abc]` one character not in it;
//!   - `{a,b}` either alternative, which may hold wildcards: `refs/heads/{main,release-*}`;
//!   - `\` makes the next character literal: `\*` is a star;
//!   - `**` is `*`, except next to a `/`, where globset reads it as "any directories":
//!     `a/**/b` matches `a/b` and `a/x/y/b`; `**/b` matches `b`; `a/**` matches `a/` plus anything.
//!
//!   A pattern that does not parse (`a[`, `{a,b`, a trailing `\`) is refused.
//! - `oneOf: ["<string>", ...]`: some text of the claim is one of these strings (at least one).
//! - `expression: "<CEL>"`: a CEL expression over `claims` (the whole claims object) that must
//!   return `true`; when the rule also names a `claim`, that claim's value is bound as `value`
//!   and a missing claim fails the rule before the expression runs. `claim` is optional only
//!   here. See [`crate::expr`] for the limits.
//!
//! A missing claim never matches (`claim project_path is missing`); an object or `null` never
//! matches `equals`, `glob` or `oneOf`.

use std::collections::HashMap;
use std::fmt;
use std::sync::{LazyLock, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::expr::{Eval, Expression, ExpressionError};
pub(crate) use crate::expr::Token;
use crate::path::{ClaimPath, PathError};
use crate::text::{any_text, cut, show};

/// A rule as written in the admin API and in `berth apply` files:
/// `{"claim": "repository", "equals": "myorg/myrepo"}`. Only an object is accepted (not serde's
/// positional array form of a struct), and unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glob: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

impl RuleSpec {
    /// The short form people type (the CLI's `--rule`, the UI's rule lines): `CLAIM=VALUE`
    /// (equals), `CLAIM~GLOB` (glob), `CLAIM:in=A,B` (oneOf). The rule is compiled later.
    pub fn parse_short(s: &str) -> Result<RuleSpec, String> {
        let s = s.trim();
        let rule = |claim: &str| RuleSpec { claim: Some(claim.trim().to_owned()), ..RuleSpec::default() };
        if let Some((claim, values)) = s.split_once(":in=") {
            return Ok(RuleSpec { one_of: Some(values.split(',').map(|v| v.trim().to_owned()).collect()), ..rule(claim) });
        }
        let eq = s.find('=');
        let glob = s.find('~');
        match (eq, glob) {
            (Some(i), g) if g.is_none_or(|g| i < g) => Ok(RuleSpec { equals: Some(s[i + 1..].to_owned()), ..rule(&s[..i]) }),
            (_, Some(i)) => Ok(RuleSpec { glob: Some(s[i + 1..].to_owned()), ..rule(&s[..i]) }),
            _ => Err(format!("rule {s:?}: use CLAIM=VALUE, CLAIM~GLOB or CLAIM:in=A,B")),
        }
    }
}

/// The derived reading of [`RuleSpec`], fed only from a map.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RuleSpecFields {
    #[serde(default)]
    claim: Option<String>,
    #[serde(default)]
    equals: Option<String>,
    #[serde(default)]
    glob: Option<String>,
    #[serde(default)]
    one_of: Option<Vec<String>>,
    #[serde(default)]
    expression: Option<String>,
}

impl<'de> Deserialize<'de> for RuleSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = RuleSpecFields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rule object {claim, equals | glob | oneOf | expression}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RuleSpecFields, A::Error> {
                RuleSpecFields::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        let f = deserializer.deserialize_map(Fields)?;
        Ok(RuleSpec { claim: f.claim, equals: f.equals, glob: f.glob, one_of: f.one_of, expression: f.expression })
    }
}

/// Why a rule spec does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("a rule needs exactly one of equals, glob, oneOf, expression")]
    OperatorCount,
    #[error("a rule needs `claim` (only expression rules may omit it)")]
    MissingClaim,
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("glob {pattern:?} is invalid: {message}")]
    Glob { pattern: String, message: String },
    #[error("oneOf needs at least one value")]
    EmptyOneOf,
    #[error(transparent)]
    Expression(#[from] ExpressionError),
}

/// The outcome of one rule on one token, with a reason for `berth token explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub matched: bool,
    pub reason: String,
}

/// A comparison of a claim's texts.
enum Compare {
    Equals(String),
    Glob(String, Glob),
    /// As listed (for `describe`), and sorted without duplicates (for the search).
    OneOf { listed: Vec<String>, sorted: Vec<String> },
}

enum Kind {
    Compare { claim: ClaimPath, op: Compare },
    Expression { claim: Option<ClaimPath>, expr: Box<Expression> },
}

/// A compiled rule. Compile once when robots are loaded, evaluate many times.
pub struct Rule {
    kind: Kind,
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// What a rule found, before any text is formatted.
enum Verdict<'c> {
    Missing(&'c ClaimPath),
    /// The claim's value; whether it matched; whether it had any text to compare.
    Compared { path: &'c ClaimPath, value: &'c Value, hit: bool, had_text: bool },
    Expression(Eval),
}

impl Verdict<'_> {
    fn matched(&self) -> bool {
        match self {
            Verdict::Missing(_) => false,
            Verdict::Compared { hit, .. } => *hit,
            Verdict::Expression(e) => matches!(e, Eval::True),
        }
    }
}

/// What a rule requires of a claim's texts that the matcher can look up in a hash map.
pub(crate) enum IndexKey<'r> {
    /// Some text equals this.
    Equals(&'r ClaimPath, &'r str),
    /// Some text equals one of these.
    OneOf(&'r ClaimPath, &'r [String]),
    /// Some text starts with this (non-empty) literal prefix of a glob.
    Prefix(&'r ClaimPath, &'r str),
}

impl Rule {
    /// Compiles a rule spec: validates the path, compiles the glob or the CEL program (once).
    pub fn compile(spec: &RuleSpec) -> Result<Rule, RuleError> {
        let operators =
            [spec.equals.is_some(), spec.glob.is_some(), spec.one_of.is_some(), spec.expression.is_some()];
        if operators.iter().filter(|x| **x).count() != 1 {
            return Err(RuleError::OperatorCount);
        }
        let claim = spec.claim.as_deref().map(ClaimPath::parse).transpose()?;
        if let Some(source) = &spec.expression {
            let expr = Box::new(Expression::compile(source)?);
            return Ok(Rule { kind: Kind::Expression { claim, expr } });
        }
        let claim = claim.ok_or(RuleError::MissingClaim)?;
        let op = if let Some(v) = &spec.equals {
            Compare::Equals(v.clone())
        } else if let Some(g) = &spec.glob {
            Compare::Glob(g.clone(), Glob::compile(g)?)
        } else {
            let list = spec.one_of.as_deref().unwrap_or_default();
            if list.is_empty() {
                return Err(RuleError::EmptyOneOf);
            }
            let mut sorted = list.to_vec();
            sorted.sort();
            sorted.dedup();
            Compare::OneOf { listed: list.to_vec(), sorted }
        };
        Ok(Rule { kind: Kind::Compare { claim, op } })
    }

    /// The claim the rule is about (`None` only for an expression rule without `claim`).
    pub fn claim(&self) -> Option<&ClaimPath> {
        match &self.kind {
            Kind::Compare { claim, .. } => Some(claim),
            Kind::Expression { claim, .. } => claim.as_ref(),
        }
    }

    /// One line for people: `repository equals "myorg/myrepo"`, `ref glob "refs/heads/*"`,
    /// `actor oneOf ["a", "b"]`, `expression "claims.x == 'y'"`, `ref expression "..."`.
    pub fn describe(&self) -> String {
        let claim = self.claim().map(|c| format!("{c} ")).unwrap_or_default();
        match &self.kind {
            Kind::Compare { op: Compare::Equals(v), .. } => format!("{claim}equals {v:?}"),
            Kind::Compare { op: Compare::Glob(g, _), .. } => format!("{claim}glob {g:?}"),
            Kind::Compare { op: Compare::OneOf { listed, .. }, .. } => format!("{claim}oneOf {listed:?}"),
            Kind::Expression { expr, .. } => format!("{claim}expression {:?}", expr.source()),
        }
    }

    /// Evaluates the rule on verified claims, with the reason.
    pub fn evaluate(&self, claims: &Map<String, Value>) -> Outcome {
        self.evaluate_token(&Token::new(claims))
    }

    /// Whether the rule holds (as [`Rule::evaluate`], without formatting a reason).
    pub fn holds(&self, claims: &Map<String, Value>) -> bool {
        self.holds_token(&Token::new(claims))
    }

    pub(crate) fn holds_token(&self, token: &Token<'_>) -> bool {
        self.verdict(token).matched()
    }

    pub(crate) fn evaluate_token(&self, token: &Token<'_>) -> Outcome {
        let verdict = self.verdict(token);
        let matched = verdict.matched();
        let reason = match verdict {
            Verdict::Missing(path) => format!("claim {path} is missing"),
            Verdict::Compared { path, value, hit: true, .. } => format!("{path} is {}", show(value)),
            Verdict::Compared { path, value, hit: false, had_text: false } => {
                format!("{path} is {}, which never matches (objects and null have no text to compare)", show(value))
            }
            Verdict::Compared { path, value, hit: false, had_text: true } => {
                let what = match &self.kind {
                    Kind::Compare { op: Compare::Equals(want), .. } => format!("does not equal {want:?}"),
                    Kind::Compare { op: Compare::Glob(g, _), .. } => format!("glob {g:?} does not match"),
                    Kind::Compare { op: Compare::OneOf { listed, .. }, .. } => cut(format!("is not one of {listed:?}")),
                    Kind::Expression { .. } => String::new(),
                };
                format!("{path} is {}; {what}", show(value))
            }
            Verdict::Expression(Eval::True) => "expression returned true".to_owned(),
            Verdict::Expression(Eval::False) => "expression returned false".to_owned(),
            Verdict::Expression(Eval::NotBool(v)) => format!("expression returned {v}, not a bool"),
            Verdict::Expression(Eval::Failed(e)) => format!("expression failed: {e}"),
        };
        Outcome { matched, reason }
    }

    fn verdict<'c>(&'c self, token: &Token<'c>) -> Verdict<'c> {
        match &self.kind {
            Kind::Expression { claim: None, expr } => Verdict::Expression(expr.run(token, None)),
            Kind::Expression { claim: Some(path), expr } => match path.lookup(token.claims) {
                None => Verdict::Missing(path),
                Some(v) => Verdict::Expression(expr.run(token, Some(v))),
            },
            Kind::Compare { claim: path, op } => {
                let Some(value) = path.lookup(token.claims) else {
                    return Verdict::Missing(path);
                };
                let mut seen = 0;
                let hit = match op {
                    Compare::Equals(want) => any_text(value, &mut seen, |t| t == want),
                    Compare::Glob(_, g) => any_text(value, &mut seen, |t| g.is_match(t)),
                    Compare::OneOf { sorted, .. } => {
                        any_text(value, &mut seen, |t| sorted.binary_search_by(|s| s.as_str().cmp(t)).is_ok())
                    }
                };
                Verdict::Compared { path, value, hit, had_text: seen > 0 }
            }
        }
    }

    pub(crate) fn index_key(&self) -> Option<IndexKey<'_>> {
        match &self.kind {
            Kind::Compare { claim, op: Compare::Equals(v) } => Some(IndexKey::Equals(claim, v)),
            Kind::Compare { claim, op: Compare::OneOf { sorted, .. } } => Some(IndexKey::OneOf(claim, sorted)),
            Kind::Compare { claim, op: Compare::Glob(pattern, _) } => {
                let prefix = literal_prefix(pattern);
                (!prefix.is_empty()).then_some(IndexKey::Prefix(claim, prefix))
            }
            Kind::Expression { .. } => None,
        }
    }
}

/// A compiled glob. Patterns whose only wildcard is a single `*` (no `**`, `?`, classes,
/// alternatives or escapes: `refs/heads/*`, `system:serviceaccount:*:*`) are matched directly
/// on their literal parts, which is what globset's regex would do, an order of magnitude faster;
/// the others by globset. Every pattern is also compiled by globset, which validates it.
enum Glob {
    /// The pattern split at `*`: the first part is a prefix, the last a suffix, the middle
    /// parts must appear in order between them.
    Stars(Box<[String]>),
    Regex(globset::GlobMatcher),
}

impl Glob {
    fn compile(pattern: &str) -> Result<Glob, RuleError> {
        let regex = compiled_glob(pattern)?;
        if pattern.contains(['?', '[', ']', '{', '}', '\\']) || pattern.contains("**") {
            return Ok(Glob::Regex(regex));
        }
        Ok(Glob::Stars(pattern.split('*').map(str::to_owned).collect()))
    }

    fn is_match(&self, text: &str) -> bool {
        match self {
            Glob::Regex(m) => m.is_match_candidate(&globset::Candidate::from_bytes(text)),
            Glob::Stars(parts) => stars_match(parts, text),
        }
    }
}

/// The part of a glob before its first wildcard, class, alternative or escape: every text the
/// glob matches starts with it (globset's regex begins with these literal characters).
fn literal_prefix(pattern: &str) -> &str {
    let end = pattern.find(['*', '?', '[', '{', '\\']).unwrap_or(pattern.len());
    pattern.get(..end).unwrap_or_default()
}

fn stars_match(parts: &[String], text: &str) -> bool {
    let [first, middle @ .., last] = parts else {
        return parts.first().is_some_and(|only| only == text);
    };
    if text.len() < first.len() + last.len() || !text.starts_with(first.as_str()) || !text.ends_with(last.as_str()) {
        return false;
    }
    let Some(mut rest) = text.get(first.len()..text.len() - last.len()) else { return false };
    for part in middle {
        match rest.find(part.as_str()) {
            Some(at) => rest = rest.get(at + part.len()..).unwrap_or_default(),
            None => return false,
        }
    }
    true
}

/// Compiled globs shared by pattern: thousands of robots with `ref glob refs/heads/[a-z]*` share
/// one compiled matcher (a compiled glob is a regex of tens of KiB; a clone shares it).
fn compiled_glob(pattern: &str) -> Result<globset::GlobMatcher, RuleError> {
    static CACHE: LazyLock<Mutex<HashMap<String, globset::GlobMatcher>>> = LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = cache.get(pattern) {
        return Ok(m.clone());
    }
    let m = globset::GlobBuilder::new(pattern)
        .literal_separator(false)
        .backslash_escape(true)
        .case_insensitive(false)
        .build()
        .map_err(|e| RuleError::Glob { pattern: pattern.to_owned(), message: e.kind().to_string() })?
        .compile_matcher();
    if cache.len() >= 100_000 {
        cache.clear();
    }
    cache.insert(pattern.to_owned(), m.clone());
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::{compiled_glob, literal_prefix, Glob};

    /// Every text a glob matches starts with its literal prefix.
    #[test]
    fn literal_prefixes() {
        let cases = [
            ("refs/heads/*", "refs/heads/"),
            ("system:serviceaccount:team-a:*", "system:serviceaccount:team-a:"),
            ("a?b", "a"),
            ("ab[cd]", "ab"),
            ("x{a,b}", "x"),
            ("a\\*", "a"),
            ("a/**/b", "a/"),
            ("*a", ""),
            ("é*", "é"),
            ("plain", "plain"),
        ];
        for (pattern, prefix) in cases {
            assert_eq!(literal_prefix(pattern), prefix, "{pattern}");
            let m = compiled_glob(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            for t in ["refs/heads/main", "abc", "ab", "a*", "a/b", "a/x/b", "xa", "éé", "plain", "a?b", "axb"] {
                if m.is_match_candidate(&globset::Candidate::from_bytes(t)) {
                    assert!(t.starts_with(prefix), "{pattern} matches {t} which lacks {prefix:?}");
                }
            }
        }
    }

    /// The direct matching of `*`-only patterns agrees with globset's regex on every pair.
    #[test]
    fn stars_agree_with_globset() {
        let patterns = [
            "", "*", "a", "a*", "*a", "*a*", "a*b", "a*b*c", "*:*", "system:serviceaccount:*:*", "refs/heads/*",
            "refs/heads/release-*", "repo:*:ref:refs/heads/main", "ab*ba", "a*a", "aa*aa", "é*", "*é*x", r"x*\n", "x*\n",
            "a/*/b", "*/", "/*",
        ];
        let texts = [
            "", "a", "b", "aa", "ab", "ba", "aba", "abba", "abcba", "abc", "axbxc", "acb", ":", "a:b",
            "system:serviceaccount:default:default", "system:serviceaccount:default", "refs/heads/main",
            "refs/heads/release-1", "xrefs/heads/a", "refs/heads/", "repo:o/r:ref:refs/heads/main", "aaa", "aaaa",
            "aaaaa", "é", "éx", "xéx", r"x\n", r"x\nb", "x\nb", "a/b", "a//b", "a/x/b", "a/x/y/b", "/", "//",
        ];
        let mut stars = 0;
        for p in patterns {
            let fast = Glob::compile(p).unwrap_or_else(|e| panic!("{p}: {e}"));
            if matches!(fast, Glob::Stars(_)) {
                stars += 1;
            }
            let regex = compiled_glob(p).unwrap_or_else(|e| panic!("{p}: {e}"));
            for t in texts {
                let want = regex.is_match_candidate(&globset::Candidate::from_bytes(t));
                assert_eq!(fast.is_match(t), want, "pattern {p:?} on {t:?}");
            }
        }
        assert_eq!(stars, patterns.len() - 1, "all but the escaped pattern take the direct path");
    }
}
