//! Claim rules: which verified OIDC tokens a robot account accepts. A robot has rules; a token
//! matches the robot when every rule holds (extra claims are fine; a robot without rules never
//! matches). A rule is a claim path plus one operator: `equals`, `glob`, `oneOf` or a CEL
//! `expression` over `claims`.
//!
//! Claim paths go through nested objects with dots (`kubernetes.io.namespace`), and a key that
//! itself contains dots or slashes is found as is (`kubernetes.io/serviceaccount/namespace`):
//! at each level the longest key that is a dot-separated prefix of the rest of the path wins.
//! An array claim matches when any element does; numbers and booleans compare as their JSON text
//! (`runner_id` 47561171 equals "47561171").
//!
//! [`Matcher`] indexes the robots of one identity provider by their `equals`/`oneOf` rules, so
//! matching a token costs a few hash lookups however many robots there are. Pure: no IO.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Longest accepted CEL expression.
pub const MAX_EXPRESSION_BYTES: usize = 4096;

/// A rule as written in the API and in `berth apply` files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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

/// Why a rule spec is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuleError(pub String);

enum Op {
    Equals(String),
    Glob(String, globset::GlobMatcher),
    OneOf(Vec<String>),
    Expression(String, Box<cel::Program>),
}

/// A compiled rule.
pub struct Rule {
    claim: Option<String>,
    op: Op,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The outcome of one rule on one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub matched: bool,
    pub reason: String,
}

fn validate_path(path: &str) -> Result<(), RuleError> {
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(RuleError(format!("claim path {path:?} is invalid: no empty segments")));
    }
    Ok(())
}

/// Finds a claim by path: the longest key that is a dot-separated prefix of the path first, then
/// the rest of the path inside it.
pub fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let dots: Vec<usize> = path.match_indices('.').map(|(i, _)| i).collect();
    for &i in dots.iter().rev() {
        if let Some(Value::Object(inner)) = claims.get(&path[..i]) {
            if let Some(v) = lookup(inner, &path[i + 1..]) {
                return Some(v);
            }
        }
    }
    None
}

/// The comparable texts of a claim value: a string as is, numbers and booleans as JSON text,
/// arrays element by element; objects and null have none.
fn texts(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Number(n) => vec![n.to_string()],
        Value::Bool(b) => vec![b.to_string()],
        Value::Array(a) => a.iter().flat_map(|x| match x {
            Value::Array(_) => vec![],
            other => texts(other),
        }).collect(),
        Value::Object(_) | Value::Null => vec![],
    }
}

fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 200 {
        format!("{}...", &s[..200])
    } else {
        s
    }
}

/// Compiled globs shared by pattern: thousands of robots with `ref glob refs/heads/*` share one
/// compiled matcher (a compiled glob is a regex of tens of KiB; cloning shares it).
fn compiled_glob(g: &str) -> Result<globset::GlobMatcher, RuleError> {
    static CACHE: std::sync::LazyLock<std::sync::Mutex<HashMap<String, globset::GlobMatcher>>> =
        std::sync::LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = cache.get(g) {
        return Ok(m.clone());
    }
    let m = globset::GlobBuilder::new(g)
        .literal_separator(false)
        .backslash_escape(true)
        .build()
        .map_err(|e| RuleError(format!("glob {g:?} is invalid: {e}")))?
        .compile_matcher();
    if cache.len() > 100_000 {
        cache.clear();
    }
    cache.insert(g.to_owned(), m.clone());
    Ok(m)
}

impl Rule {
    /// Compiles a rule spec (CEL programs are compiled here, once).
    pub fn compile(spec: &RuleSpec) -> Result<Rule, RuleError> {
        let ops = [spec.equals.is_some(), spec.glob.is_some(), spec.one_of.is_some(), spec.expression.is_some()];
        if ops.iter().filter(|x| **x).count() != 1 {
            return Err(RuleError("a rule needs exactly one of equals, glob, oneOf, expression".into()));
        }
        if let Some(c) = &spec.claim {
            validate_path(c)?;
        }
        let claim = spec.claim.clone();
        let need_claim = || claim.clone().ok_or_else(|| RuleError("a rule needs `claim` (only expression rules may omit it)".into()));
        let op = if let Some(v) = &spec.equals {
            need_claim()?;
            Op::Equals(v.clone())
        } else if let Some(g) = &spec.glob {
            need_claim()?;
            Op::Glob(g.clone(), compiled_glob(g)?)
        } else if let Some(list) = &spec.one_of {
            need_claim()?;
            if list.is_empty() {
                return Err(RuleError("oneOf needs at least one value".into()));
            }
            Op::OneOf(list.clone())
        } else {
            let src = spec.expression.clone().unwrap_or_default();
            if src.len() > MAX_EXPRESSION_BYTES {
                return Err(RuleError(format!("expression is longer than {MAX_EXPRESSION_BYTES} bytes")));
            }
            let p = cel::Program::compile(&src).map_err(|e| RuleError(format!("expression {src:?} does not parse: {e}")))?;
            Op::Expression(src, Box::new(p))
        };
        Ok(Rule { claim, op })
    }

    /// A one-line description (`repository equals "o/r"`).
    pub fn describe(&self) -> String {
        let c = self.claim.as_deref().unwrap_or("");
        match &self.op {
            Op::Equals(v) => format!("{c} equals {v:?}"),
            Op::Glob(g, _) => format!("{c} glob {g:?}"),
            Op::OneOf(l) => format!("{c} oneOf {l:?}"),
            Op::Expression(src, _) if c.is_empty() => format!("expression {src:?}"),
            Op::Expression(src, _) => format!("{c} expression {src:?}"),
        }
    }

    /// The (path, values) this rule pins exactly, for the matcher's index.
    fn index_key(&self) -> Option<(&str, Vec<&str>)> {
        let c = self.claim.as_deref()?;
        match &self.op {
            Op::Equals(v) => Some((c, vec![v.as_str()])),
            Op::OneOf(l) => Some((c, l.iter().map(String::as_str).collect())),
            _ => None,
        }
    }

    /// Evaluates the rule on verified claims.
    pub fn evaluate(&self, claims: &Map<String, Value>) -> Outcome {
        let value = self.claim.as_deref().map(|c| (c, lookup(claims, c)));
        if let Op::Expression(src, program) = &self.op {
            return evaluate_cel(src, program, claims, value.and_then(|(_, v)| v));
        }
        let Some((path, found)) = value else {
            return Outcome { matched: false, reason: "rule has no claim".into() };
        };
        let Some(v) = found else {
            return Outcome { matched: false, reason: format!("claim {path} is missing") };
        };
        let candidates = texts(v);
        let hit = match &self.op {
            Op::Equals(want) => candidates.iter().any(|t| t == want),
            Op::Glob(_, m) => candidates.iter().any(|t| m.is_match(t)),
            Op::OneOf(list) => candidates.iter().any(|t| list.contains(t)),
            Op::Expression(..) => false,
        };
        let what = match &self.op {
            Op::Equals(want) => format!("does not equal {want:?}"),
            Op::Glob(g, _) => format!("glob {g:?} does not match"),
            Op::OneOf(list) => format!("is not one of {list:?}"),
            Op::Expression(..) => String::new(),
        };
        if hit {
            Outcome { matched: true, reason: format!("{path} is {}", show(v)) }
        } else if candidates.is_empty() {
            Outcome { matched: false, reason: format!("{path} is {}, which cannot be compared as text", show(v)) }
        } else {
            Outcome { matched: false, reason: format!("{path} is {}; {what}", show(v)) }
        }
    }
}

fn evaluate_cel(src: &str, program: &cel::Program, claims: &Map<String, Value>, value: Option<&Value>) -> Outcome {
    let mut ctx = cel::Context::default();
    let claims_value = match cel::to_value(Value::Object(claims.clone())) {
        Ok(v) => v,
        Err(e) => return Outcome { matched: false, reason: format!("claims cannot be given to CEL: {e}") },
    };
    ctx.add_variable_from_value("claims", claims_value);
    if let Some(v) = value {
        if let Ok(v) = cel::to_value(v.clone()) {
            ctx.add_variable_from_value("value", v);
        }
    }
    match program.execute(&ctx) {
        Ok(cel::Value::Bool(true)) => Outcome { matched: true, reason: format!("expression {src:?} is true") },
        Ok(cel::Value::Bool(false)) => Outcome { matched: false, reason: format!("expression {src:?} returned false") },
        Ok(other) => Outcome { matched: false, reason: format!("expression {src:?} returned {other:?}, not a bool") },
        Err(e) => Outcome { matched: false, reason: format!("expression {src:?} failed: {e}") },
    }
}

/// One robot's rules.
#[derive(Debug)]
pub struct RobotRules {
    pub robot: String,
    pub rules: Vec<Rule>,
}

/// Explain output for one robot.
#[derive(Debug, Clone)]
pub struct RobotExplanation {
    pub robot: String,
    pub matched: bool,
    /// Each rule's description with its outcome.
    pub rules: Vec<(String, Outcome)>,
}

/// The robots of one identity provider, indexed for matching.
#[derive(Debug, Default)]
pub struct Matcher {
    robots: Vec<RobotRules>,
    /// claim path -> value -> robots pinned to it by an equals/oneOf rule.
    index: HashMap<String, HashMap<String, Vec<usize>>>,
    /// Robots with rules but no indexable rule: checked one by one.
    unindexed: Vec<usize>,
}

impl Matcher {
    pub fn new(robots: Vec<RobotRules>) -> Matcher {
        let mut m = Matcher { robots, ..Default::default() };
        for (i, r) in m.robots.iter().enumerate() {
            if r.rules.is_empty() {
                continue; // never matches
            }
            match r.rules.iter().find_map(Rule::index_key) {
                Some((path, values)) => {
                    let by_value = m.index.entry(path.to_owned()).or_default();
                    for v in values {
                        by_value.entry(v.to_owned()).or_default().push(i);
                    }
                }
                None => m.unindexed.push(i),
            }
        }
        m
    }

    pub fn len(&self) -> usize {
        self.robots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.robots.is_empty()
    }

    /// Names of every robot whose rules all hold, sorted.
    pub fn matches(&self, claims: &Map<String, Value>) -> Vec<String> {
        let mut candidates: BTreeSet<usize> = self.unindexed.iter().copied().collect();
        for (path, by_value) in &self.index {
            if let Some(v) = lookup(claims, path) {
                for t in texts(v) {
                    if let Some(list) = by_value.get(&t) {
                        candidates.extend(list.iter().copied());
                    }
                }
            }
        }
        let mut out: Vec<String> = candidates
            .into_iter()
            .map(|i| &self.robots[i])
            .filter(|r| !r.rules.is_empty() && r.rules.iter().all(|rule| rule.evaluate(claims).matched))
            .map(|r| r.robot.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every robot with each rule's outcome (for `berth token explain`).
    pub fn explain(&self, claims: &Map<String, Value>) -> Vec<RobotExplanation> {
        self.robots
            .iter()
            .map(|r| {
                let rules: Vec<(String, Outcome)> = r.rules.iter().map(|rule| (rule.describe(), rule.evaluate(claims))).collect();
                let matched = !rules.is_empty() && rules.iter().all(|(_, o)| o.matched);
                let rules = if r.rules.is_empty() {
                    vec![("(no rules)".to_owned(), Outcome { matched: false, reason: "a robot without rules never matches".into() })]
                } else {
                    rules
                };
                RobotExplanation { robot: r.robot.clone(), matched, rules }
            })
            .collect()
    }
}
