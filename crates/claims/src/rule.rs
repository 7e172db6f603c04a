//! One claim rule: its wire form [`RuleSpec`], its compiled form [`Rule`], and the [`Outcome`]
//! of evaluating it on verified claims.
//!
//! A rule is a claim path plus exactly one operator:
//! - `equals: "<string>"`: some text of the claim (see [`crate::text`]: strings as is, numbers
//!   and booleans as JSON text, arrays element by element) is exactly this string.
//! - `glob: "<pattern>"`: some text of the claim matches the pattern, case-sensitively and
//!   anchored (the whole value must match). The syntax is `globset`'s, with `*` spanning every
//!   character including `/` and `:` (`literal_separator(false)`): `*` any run of characters
//!   (also empty; `**` is the same as `*`), `?` exactly one character, `[abc]`, `[a-z]` one
//!   character of a class, `[!abc]` one character not in it, `{a,b}` either alternative (which
//!   may contain wildcards: `refs/heads/{main,release-*}`), `\` escapes the next character (`\*`
//!   is a literal star). A pattern that does not parse (`[a`, `{a`) is refused.
//! - `oneOf: ["<string>", ...]`: some text of the claim is one of these strings (at least one).
//! - `expression: "<CEL>"`: a CEL expression over `claims` (the whole claims object) that must
//!   return `true`; when the rule also names a `claim`, that claim's value is bound as `value`
//!   and a missing claim fails the rule before the expression runs. `claim` is optional only
//!   here. See [`crate::expr`] for the limits.
//!
//! A missing claim never matches (`claim project_path is missing`); an object or `null` never
//! matches `equals`, `glob` or `oneOf`.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::{LazyLock, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::expr::{claims_to_cel, Eval, Expression, ExpressionError};
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
    Glob(String, globset::GlobMatcher),
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

/// The claims of one token, with their CEL form built on first use and shared by every
/// expression evaluated on the token.
pub(crate) struct Token<'c> {
    pub(crate) claims: &'c Map<String, Value>,
    cel: OnceCell<cel::Value>,
}

impl<'c> Token<'c> {
    pub(crate) fn new(claims: &'c Map<String, Value>) -> Token<'c> {
        Token { claims, cel: OnceCell::new() }
    }

    fn cel(&self) -> &cel::Value {
        self.cel.get_or_init(|| claims_to_cel(self.claims))
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

/// The (path, values) a rule pins exactly, for the matcher's index.
pub(crate) enum IndexKey<'r> {
    Equals(&'r ClaimPath, &'r str),
    OneOf(&'r ClaimPath, &'r [String]),
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
            Compare::Glob(g.clone(), compiled_glob(g)?)
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
            Kind::Expression { claim: None, expr } => Verdict::Expression(expr.run(token.cel(), None)),
            Kind::Expression { claim: Some(path), expr } => match path.lookup(token.claims) {
                None => Verdict::Missing(path),
                Some(v) => Verdict::Expression(expr.run(token.cel(), Some(v))),
            },
            Kind::Compare { claim: path, op } => {
                let Some(value) = path.lookup(token.claims) else {
                    return Verdict::Missing(path);
                };
                let mut seen = 0;
                let hit = match op {
                    Compare::Equals(want) => any_text(value, &mut seen, |t| t == want),
                    Compare::Glob(_, m) => {
                        any_text(value, &mut seen, |t| m.is_match_candidate(&globset::Candidate::from_bytes(t)))
                    }
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
            Kind::Compare { op: Compare::Glob(..), .. } | Kind::Expression { .. } => None,
        }
    }
}

/// Compiled globs shared by pattern: thousands of robots with `ref glob refs/heads/*` share one
/// compiled matcher (a compiled glob is a regex of tens of KiB; a clone shares it).
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
