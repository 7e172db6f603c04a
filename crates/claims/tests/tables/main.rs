#![allow(clippy::unwrap_used)]
//! Table tests of `berth-claims` with the seeds' example tokens (`tests/data/`: the GitHub,
//! GitLab and Kubernetes payloads of the federated-idp-examples README and zot's example
//! payload, copied as they are). One test binary, one module per table.

mod matcher;
mod operators;
mod paths;
mod spec;

use berth_claims::{Rule, RuleSpec};
use serde_json::{Map, Value};

fn object(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text).unwrap() {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// The GitHub Actions token payload of the seed README.
pub fn github() -> Map<String, Value> {
    object(include_str!("../data/github.json"))
}

/// The GitLab CI token payload of the seed README (`runner_id` is a number).
pub fn gitlab() -> Map<String, Value> {
    object(include_str!("../data/gitlab.json"))
}

/// The Kubernetes service-account token payload of the seed README (nested `kubernetes.io`).
pub fn kubernetes() -> Map<String, Value> {
    object(include_str!("../data/kubernetes.json"))
}

/// zot's example payload (top-level keys `kubernetes.io/serviceaccount/namespace`, ...).
pub fn zot() -> Map<String, Value> {
    object(include_str!("../data/zot.json"))
}

/// Claims from inline JSON.
pub fn claims(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// A compiled rule from its JSON spec; panics if it does not compile.
pub fn rule(spec: Value) -> Rule {
    let s: RuleSpec = serde_json::from_value(spec.clone()).unwrap_or_else(|e| panic!("{spec}: {e}"));
    Rule::compile(&s).unwrap_or_else(|e| panic!("{spec}: {e}"))
}
