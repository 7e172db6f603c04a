//! Table tests for claim paths and rule operators with the seeds' tokens, and the matcher.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use berth_claims::{lookup, Matcher, RobotRules, Rule, RuleSpec};
use serde_json::{json, Map, Value};

fn github() -> Map<String, Value> {
    json!({
        "actor": "Vad1mo", "actor_id": "1492007", "aud": "macfly4200.8gears.ch", "base_ref": "", "event_name": "workflow_dispatch",
        "exp": 1764090768, "iat": 1764090468, "iss": "https://token.actions.githubusercontent.com",
        "job_workflow_ref": "container-registry/federated-idp-examples/.github/workflows/example_1.yml@refs/heads/main",
        "jti": "6cf8862b-b832-4372-9998-22026ecd21a1", "nbf": 1764090168, "ref": "refs/heads/main", "ref_protected": "false",
        "ref_type": "branch", "repository": "container-registry/federated-idp-examples", "repository_id": "1104004353",
        "repository_owner": "container-registry", "repository_visibility": "public", "run_id": "19677834613",
        "sha": "15a5ebfa3fb5ddf10c4b4250e14496bec7f03a56",
        "sub": "repo:container-registry/federated-idp-examples:ref:refs/heads/main",
        "workflow": "Create Image and Push Using federated IDP"
    }).as_object().unwrap().clone()
}

fn gitlab() -> Map<String, Value> {
    json!({
        "project_id": "76366029", "project_path": "8gears/container-registry/harbor-workload-identity-federation",
        "namespace_path": "8gears/container-registry", "user_login": "vad1mo", "pipeline_id": "2179265456", "job_id": "12217223061",
        "ref": "main", "ref_type": "branch", "ref_path": "refs/heads/main", "ref_protected": "true", "runner_id": 47561171,
        "iss": "https://gitlab.com", "aud": "macfly4200.8gears.ch",
        "sub": "project_path:8gears/container-registry/harbor-workload-identity-federation:ref_type:branch:ref:main"
    }).as_object().unwrap().clone()
}

fn kubernetes() -> Map<String, Value> {
    json!({
        "aud": ["registry.example.com"], "exp": 1764100000, "iat": 1764096400, "iss": "https://kubernetes.default.svc.cluster.local",
        "kubernetes.io": {
            "namespace": "team-a",
            "node": {"name": "node-1", "uid": "n-uid"},
            "pod": {"name": "app-7d9", "uid": "p-uid"},
            "serviceaccount": {"name": "puller", "uid": "sa-uid"}
        },
        "nbf": 1764096400, "sub": "system:serviceaccount:team-a:puller"
    }).as_object().unwrap().clone()
}

fn zot_style() -> Map<String, Value> {
    json!({
        "iss": "https://kubernetes.default.svc.cluster.local", "aud": ["zot"], "sub": "system:serviceaccount:flux-system:source-controller",
        "kubernetes.io/serviceaccount/namespace": "flux-system",
        "kubernetes.io/serviceaccount/service-account.name": "source-controller",
        "a.b": 1, "a": {"b": 2}, "flag": true, "nothing": null
    }).as_object().unwrap().clone()
}

#[test]
fn claim_paths() {
    let k = kubernetes();
    let z = zot_style();
    let cases: Vec<(&Map<String, Value>, &str, Option<Value>)> = vec![
        (&k, "kubernetes.io.namespace", Some(json!("team-a"))),
        (&k, "kubernetes.io.serviceaccount.name", Some(json!("puller"))),
        (&k, "kubernetes.io.pod.name", Some(json!("app-7d9"))),
        (&k, "kubernetes.io.serviceaccount", Some(json!({"name": "puller", "uid": "sa-uid"}))),
        (&k, "kubernetes.io.missing", None),
        (&k, "kubernetes", None),
        (&k, "aud", Some(json!(["registry.example.com"]))),
        (&z, "kubernetes.io/serviceaccount/namespace", Some(json!("flux-system"))),
        (&z, "kubernetes.io/serviceaccount/service-account.name", Some(json!("source-controller"))),
        (&z, "a.b", Some(json!(1))),
        (&z, "nothing", Some(Value::Null)),
        (&z, "sub.x", None),
    ];
    for (claims, path, want) in cases {
        assert_eq!(lookup(claims, path).cloned(), want, "{path}");
    }
}

fn rule(j: Value) -> Rule {
    Rule::compile(&serde_json::from_value::<RuleSpec>(j.clone()).unwrap()).unwrap_or_else(|e| panic!("{j}: {e}"))
}

#[test]
fn operators() {
    let (gh, gl, k, z) = (github(), gitlab(), kubernetes(), zot_style());
    let cases: Vec<(&Map<String, Value>, Value, bool, &str)> = vec![
        (&gh, json!({"claim": "repository", "equals": "container-registry/federated-idp-examples"}), true, "is"),
        (&gh, json!({"claim": "repository", "equals": "container-registry/other"}), false, "does not equal"),
        (&gh, json!({"claim": "ref", "glob": "refs/heads/*"}), true, ""),
        (&gh, json!({"claim": "ref", "glob": "refs/heads/release-*"}), false, "does not match"),
        (&gh, json!({"claim": "ref", "glob": "heads/*"}), false, "anchored"),
        (&gh, json!({"claim": "ref", "glob": "refs/heads/mai?"}), true, ""),
        (&gh, json!({"claim": "sub", "glob": "repo:container-registry/*:ref:refs/heads/*"}), true, "* spans / and :"),
        (&gh, json!({"claim": "ref_protected", "equals": "false"}), true, "GitHub sends \"false\" as a string"),
        (&gh, json!({"claim": "actor", "oneOf": ["someone", "Vad1mo"]}), true, ""),
        (&gh, json!({"claim": "actor", "oneOf": ["vad1mo"]}), false, "case-sensitive"),
        (&gh, json!({"claim": "environment", "equals": "prod"}), false, "missing"),
        (&gl, json!({"claim": "runner_id", "equals": "47561171"}), true, "number as JSON text"),
        (&gl, json!({"claim": "runner_id", "glob": "4756*"}), true, ""),
        (&gl, json!({"claim": "project_path", "equals": "8gears/container-registry/harbor-workload-identity-federation"}), true, ""),
        (&k, json!({"claim": "aud", "equals": "registry.example.com"}), true, "array: any element"),
        (&k, json!({"claim": "sub", "glob": "system:serviceaccount:team-a:*"}), true, ""),
        (&k, json!({"claim": "sub", "glob": "system:serviceaccount:team-b:*"}), false, ""),
        (&k, json!({"claim": "kubernetes.io.namespace", "equals": "team-a"}), true, ""),
        (&k, json!({"claim": "kubernetes.io.serviceaccount", "equals": "puller"}), false, "cannot be compared"),
        (&z, json!({"claim": "flag", "equals": "true"}), true, "bool as JSON text"),
        (&z, json!({"claim": "nothing", "equals": "null"}), false, "null never matches"),
        (&z, json!({"expression": "claims['kubernetes.io/serviceaccount/namespace'] == 'flux-system'"}), true, "zot style"),
        (&gh, json!({"expression": "claims.ref.startsWith('refs/heads/')"}), true, ""),
        (&gh, json!({"expression": "claims.repository_owner in ['container-registry', 'x']"}), true, ""),
        (&gh, json!({"expression": "claims.repository_owner in ['x']"}), false, "returned false"),
        (&gh, json!({"expression": "claims.org == 'x'"}), false, "failed"),
        (&gh, json!({"expression": "claims.ref"}), false, "not a bool"),
        (&gh, json!({"claim": "ref", "expression": "value.endsWith('/main')"}), true, "value binding"),
    ];
    for (claims, spec, want, note) in cases {
        let o = rule(spec.clone()).evaluate(claims);
        assert_eq!(o.matched, want, "{spec} ({note}): {}", o.reason);
        if !note.is_empty() && !want && note != "case-sensitive" && note != "anchored" {
            assert!(o.reason.contains(note) || note.contains(' '), "{spec}: reason {:?} lacks {note:?}", o.reason);
        }
    }
}

#[test]
fn spec_validation() {
    let cases = [
        (json!({"claim": "a"}), "exactly one"),
        (json!({"claim": "a", "equals": "x", "glob": "y"}), "exactly one"),
        (json!({"equals": "x"}), "needs `claim`"),
        (json!({"claim": "a", "oneOf": []}), "at least one"),
        (json!({"claim": "a..b", "equals": "x"}), "empty segments"),
        (json!({"expression": "claims.("}), "does not parse"),
        (json!({"claim": "a", "glob": "a[" }), "invalid"),
    ];
    for (spec, want) in cases {
        let s: RuleSpec = serde_json::from_value(spec.clone()).unwrap();
        let e = Rule::compile(&s).unwrap_err();
        assert!(e.to_string().contains(want), "{spec}: {e}");
    }
    assert!(serde_json::from_value::<RuleSpec>(json!({"claim": "a", "equal": "x"})).is_err(), "unknown fields refused");
}

fn robot(name: &str, rules: Vec<Value>) -> RobotRules {
    RobotRules { robot: name.into(), rules: rules.into_iter().map(rule).collect() }
}

#[test]
fn matcher() {
    let m = Matcher::new(vec![
        robot("robot$none", vec![]),
        robot("robot$repo", vec![json!({"claim": "repository", "equals": "container-registry/federated-idp-examples"}), json!({"claim": "ref", "glob": "refs/heads/*"})]),
        robot("robot$repo-release", vec![json!({"claim": "repository", "equals": "container-registry/federated-idp-examples"}), json!({"claim": "ref", "glob": "refs/heads/release-*"})]),
        robot("robot$owner", vec![json!({"claim": "repository_owner", "oneOf": ["container-registry"]})]),
        robot("robot$cel", vec![json!({"expression": "claims.actor == 'Vad1mo'"})]),
        robot("robot$gitlab", vec![json!({"claim": "project_path", "equals": "x"})]),
    ]);
    assert_eq!(m.matches(&github()), vec!["robot$cel", "robot$owner", "robot$repo"]);
    let ex = m.explain(&github());
    assert!(!ex[0].matched && ex[0].rules[0].1.reason.contains("never matches"));
    assert!(!ex[2].matched && ex[2].rules[1].1.reason.contains("does not match"));

    // 10,000 robots on one provider: exactly the right one matches, fast.
    let robots: Vec<RobotRules> = (0..10_000)
        .map(|i| robot(&format!("robot$r{i:05}"), vec![json!({"claim": "repository", "equals": format!("org/repo-{i}")}), json!({"claim": "ref", "glob": "refs/heads/*"})]))
        .collect();
    let m = Matcher::new(robots);
    let mut claims = github();
    claims.insert("repository".into(), json!("org/repo-4242"));
    assert_eq!(m.matches(&claims), vec!["robot$r04242"]);
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(m.matches(std::hint::black_box(&claims)));
    }
    let per = t.elapsed().as_nanos() / n;
    println!("matching a GitHub token against 10,000 robots: {per} ns per token (debug build)");
    assert!(per < 200_000, "{per} ns");
}
