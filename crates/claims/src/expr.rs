//! CEL expressions of `expression` rules (the `cel` crate): compiled once when the rule is
//! compiled, evaluated against `claims` (the whole claims object as a CEL map) and, when the rule
//! names a claim, `value` (that claim's value).
//!
//! JSON becomes CEL as follows: objects are maps with string keys, arrays lists, strings strings,
//! booleans bools, `null` null; integers that fit an `i64` are `int` (so `claims.runner_id ==
//! 47561171` compares with an `int` literal), larger ones `uint`, others `double`.
//!
//! **Guards against pathological expressions.** Expressions are written by administrators, but
//! they run on every login, on a request thread, so compilation refuses:
//! - sources longer than [`MAX_EXPRESSION_BYTES`];
//! - brackets nested deeper than [`MAX_EXPRESSION_DEPTH`] (checked on the source before the
//!   parser, which recurses, sees it) and syntax trees deeper than that (the evaluator recurses
//!   once per level: `a + a + ... + a` is as deep as it is long);
//! - a macro (`all`, `exists`, `exists_one`, `map`, `filter`) inside the body of another, whose
//!   cost would be the product of two list lengths;
//! - struct literals (`Foo{a: 1}`), which the evaluator of `cel` 0.12 does not support.
//!
//! At run time, an expression that does not return a bool, or fails (a missing key, a type
//! mismatch), does not match. The evaluator of `cel` 0.12 panics on a few inputs that only the
//! token decides (a macro over a string claim: `claims.sub.exists(c, true)`); evaluation runs
//! under `catch_unwind` so such a token fails the rule instead of the request.

use std::cell::{Cell, OnceCell};
use std::collections::{BTreeSet, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use cel::common::ast::operators::INDEX;
use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use cel::common::value::CelVal;
use serde_json::{Map, Value};

use crate::text::cut;

/// Longest accepted CEL expression, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 4096;
/// Deepest accepted nesting of brackets in the source and of the syntax tree.
pub const MAX_EXPRESSION_DEPTH: usize = 64;

/// Why an expression does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpressionError {
    #[error("expression is {0} bytes long; the limit is {MAX_EXPRESSION_BYTES}")]
    TooLong(usize),
    #[error("expression {expression:?} does not parse: {message}")]
    Parse { expression: String, message: String },
    #[error("expression {0:?} is nested more than {MAX_EXPRESSION_DEPTH} levels deep")]
    TooDeep(String),
    #[error("expression {0:?} has a macro (all, exists, exists_one, map, filter) inside another; that is not allowed")]
    NestedMacro(String),
    #[error("expression {0:?} has a struct literal; only maps, lists and scalars are supported")]
    Struct(String),
}

/// A compiled CEL expression.
pub(crate) struct Expression {
    source: String,
    program: cel::Program,
    /// The claims the expression reads, when it reads `claims` only as `claims.x` or
    /// `claims['x']` with literal keys: then `claims` may be bound to a map of just those
    /// claims, which gives the same results as the whole map (nothing observes the rest) and
    /// costs a few conversions instead of one per claim. `None`: it uses `claims` otherwise
    /// (`size(claims)`, `'x' in claims`, `claims[value]`, a macro over it) and needs the whole
    /// map. See [`Token`].
    keys: Option<Vec<String>>,
}

/// How many expressions on one token get a map of just the claims they read before the token's
/// whole claims are converted once and shared (a clone of a converted map is a reference count).
const PARTIAL_MAPS_PER_TOKEN: u32 = 4;

/// The claims of one token, as CEL sees them: the first few expressions get small maps of the
/// claims they read; after that, the whole map is converted once and shared by the rest.
/// Either way an expression sees the same values.
pub(crate) struct Token<'c> {
    pub(crate) claims: &'c Map<String, Value>,
    whole: OnceCell<cel::Value>,
    partial_maps: Cell<u32>,
}

impl<'c> Token<'c> {
    pub(crate) fn new(claims: &'c Map<String, Value>) -> Token<'c> {
        Token { claims, whole: OnceCell::new(), partial_maps: Cell::new(0) }
    }

    /// `claims` for an expression that reads `keys` (`None`: it needs the whole map).
    fn for_keys(&self, keys: Option<&[String]>) -> cel::Value {
        if let Some(keys) = keys {
            if self.whole.get().is_none() && self.partial_maps.get() < PARTIAL_MAPS_PER_TOKEN {
                self.partial_maps.set(self.partial_maps.get() + 1);
                let map: HashMap<cel::objects::Key, cel::Value> = keys
                    .iter()
                    .filter_map(|k| self.claims.get(k).map(|v| (cel::objects::Key::String(Arc::new(k.clone())), to_cel(v))))
                    .collect();
                return cel::Value::Map(cel::objects::Map { map: Arc::new(map) });
            }
        }
        self.whole.get_or_init(|| claims_to_cel(self.claims)).clone()
    }
}

/// The result of one evaluation.
pub(crate) enum Eval {
    True,
    False,
    /// Returned something else: the value as shown in a reason.
    NotBool(String),
    /// Failed: the error as shown in a reason.
    Failed(String),
}

impl Expression {
    pub(crate) fn compile(source: &str) -> Result<Expression, ExpressionError> {
        if source.len() > MAX_EXPRESSION_BYTES {
            return Err(ExpressionError::TooLong(source.len()));
        }
        if bracket_depth(source) > MAX_EXPRESSION_DEPTH {
            return Err(ExpressionError::TooDeep(source.to_owned()));
        }
        let program = catch_unwind(|| cel::Program::compile(source))
            .map_err(|_| ExpressionError::Parse { expression: source.to_owned(), message: "the parser failed".into() })?
            .map_err(|e| ExpressionError::Parse { expression: source.to_owned(), message: e.to_string() })?;
        let keys = check_tree(program.expression(), source)?;
        Ok(Expression { source: source.to_owned(), program, keys })
    }

    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates on a token's claims and, if given, `value`.
    pub(crate) fn run(&self, token: &Token<'_>, value: Option<&Value>) -> Eval {
        let claims = token.for_keys(self.keys.as_deref());
        ROOT.with(|root| {
            let mut ctx = root.new_inner_scope();
            ctx.add_variable_from_value("claims", claims);
            if let Some(v) = value {
                ctx.add_variable_from_value("value", to_cel(v));
            }
            // A panic leaves nothing behind: the context and its values are dropped here.
            match catch_unwind(AssertUnwindSafe(|| self.program.execute(&ctx))) {
                Ok(Ok(cel::Value::Bool(true))) => Eval::True,
                Ok(Ok(cel::Value::Bool(false))) => Eval::False,
                Ok(Ok(other)) => Eval::NotBool(show_cel(&other)),
                Ok(Err(e)) => Eval::Failed(cut(e.to_string())),
                Err(_) => Eval::Failed("the evaluator failed on this input".into()),
            }
        })
    }
}

thread_local! {
    /// The standard functions, registered once per thread; each evaluation adds its variables in
    /// an inner scope (building `Context::default()` registers dozens of boxed functions).
    static ROOT: cel::Context<'static> = cel::Context::default();
}

/// The whole claims object as a CEL map.
pub(crate) fn claims_to_cel(claims: &Map<String, Value>) -> cel::Value {
    let map: HashMap<cel::objects::Key, cel::Value> =
        claims.iter().map(|(k, v)| (cel::objects::Key::String(Arc::new(k.clone())), to_cel(v))).collect();
    cel::Value::Map(cel::objects::Map { map: Arc::new(map) })
}

/// One JSON value as a CEL value (see the module documentation).
pub(crate) fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            (None, None) => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(m) => claims_to_cel(m),
    }
}

/// A result that is not a bool, for a reason: JSON text where it has one, and its CEL type.
fn show_cel(v: &cel::Value) -> String {
    let text = match v.json() {
        Ok(j) => j.to_string(),
        Err(_) => format!("{v:?}"),
    };
    format!("{} ({})", cut(text), v.type_of())
}

/// The deepest nesting of `(`, `[` and `{` outside string literals. Approximate about CEL's
/// rarer string forms (triple quotes, raw strings), which is enough: the tree is checked again
/// after parsing; this only keeps the recursive parser from deep input.
fn bracket_depth(source: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in source.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '(' | '[' | '{' => {
                depth += 1;
                max = max.max(depth);
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Checks the syntax tree (iteratively, so a deep tree cannot overflow this check): depth,
/// macros inside macro bodies, struct literals. Returns the claims read as `claims.x` or
/// `claims['x']`, or `None` if `claims` is used any other way.
fn check_tree(root: &IdedExpr, source: &str) -> Result<Option<Vec<String>>, ExpressionError> {
    let mut keys = BTreeSet::new();
    let mut whole = false;
    // (node, depth, inside a macro body)
    let mut stack: Vec<(&IdedExpr, usize, bool)> = vec![(root, 1, false)];
    while let Some((node, depth, in_body)) = stack.pop() {
        if depth > MAX_EXPRESSION_DEPTH {
            return Err(ExpressionError::TooDeep(source.to_owned()));
        }
        let d = depth + 1;
        match &node.expr {
            Expr::Unspecified => {
                return Err(ExpressionError::Parse { expression: source.to_owned(), message: "incomplete expression".into() })
            }
            Expr::Ident(name) => whole |= name == "claims",
            Expr::Literal(_) => {}
            Expr::Call(call) if call.func_name == INDEX && call.target.is_none() && call.args.len() == 2 => {
                match (&call.args[0].expr, &call.args[1].expr) {
                    (Expr::Ident(name), Expr::Literal(CelVal::String(key))) if name == "claims" => {
                        keys.insert(key.clone());
                    }
                    _ => stack.extend(call.args.iter().map(|a| (a, d, in_body))),
                }
            }
            Expr::Call(call) => {
                if let Some(t) = &call.target {
                    stack.push((t, d, in_body));
                }
                stack.extend(call.args.iter().map(|a| (a, d, in_body)));
            }
            Expr::Comprehension(c) => {
                if in_body {
                    return Err(ExpressionError::NestedMacro(source.to_owned()));
                }
                stack.push((&c.iter_range, d, false));
                stack.push((&c.accu_init, d, false));
                stack.push((&c.loop_cond, d, true));
                stack.push((&c.loop_step, d, true));
                stack.push((&c.result, d, false));
            }
            Expr::List(l) => stack.extend(l.elements.iter().map(|e| (e, d, in_body))),
            Expr::Map(m) => {
                for entry in &m.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(e) => {
                            stack.push((&e.key, d, in_body));
                            stack.push((&e.value, d, in_body));
                        }
                        EntryExpr::StructField(_) => return Err(ExpressionError::Struct(source.to_owned())),
                    }
                }
            }
            Expr::Select(s) => match &s.operand.expr {
                Expr::Ident(name) if name == "claims" => {
                    keys.insert(s.field.clone());
                }
                _ => stack.push((&s.operand, d, in_body)),
            },
            Expr::Struct(_) => return Err(ExpressionError::Struct(source.to_owned())),
        }
    }
    Ok(if whole { None } else { Some(keys.into_iter().collect()) })
}
