#![allow(clippy::unwrap_used)]
//! Cost of `Matcher::matches` (and `explain`) per token, with plain `fn main` timing:
//! `cargo test -p berth-claims --bench matcher` (test profile) or `cargo bench -p berth-claims`.
//! Prints nanoseconds per token for 10,000 robots on one provider in several shapes.

use std::hint::black_box;
use std::time::{Duration, Instant};

use berth_claims::{Matcher, RobotRules, Rule, RuleSpec};
use serde_json::{json, Map, Value};

fn seed(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text).unwrap() {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn github() -> Map<String, Value> {
    seed(include_str!("../tests/data/github.json"))
}

fn rule(v: Value) -> Rule {
    Rule::compile(&serde_json::from_value::<RuleSpec>(v).unwrap()).unwrap()
}

/// 10,000 robots: `repository equals <distinct>` + `ref glob refs/heads/*` (+ `extra` rules).
fn robots(extra: &[Value]) -> Vec<RobotRules> {
    (0..10_000)
        .map(|i| {
            let mut rules = vec![
                rule(json!({"claim": "repository", "equals": format!("org/repo-{i}")})),
                rule(json!({"claim": "ref", "glob": "refs/heads/*"})),
            ];
            rules.extend(extra.iter().cloned().map(rule));
            RobotRules { robot: format!("robot-{i:05}"), rules }
        })
        .collect()
}

/// Runs `f` for about half a second; returns the time per call.
fn time(mut f: impl FnMut()) -> Duration {
    let mut n: u32 = 1;
    loop {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        let e = t.elapsed();
        if e > Duration::from_millis(500) || n >= 1 << 24 {
            return e / n;
        }
        n *= 2;
    }
}

fn report(what: &str, m: &Matcher, claims: &Map<String, Value>, expect: usize) {
    assert_eq!(m.matches(claims).len(), expect, "{what}");
    let per = time(|| {
        black_box(m.matches(black_box(claims)));
    });
    println!("{:>9} ns/token  {what}", per.as_nanos());
}

fn main() {
    let profile = if cfg!(debug_assertions) { "test/dev profile" } else { "optimised profile" };
    println!("berth-claims matcher, {profile}, 10,000 robots on one provider");

    let mut hit = github();
    hit.insert("repository".into(), json!("org/repo-4242"));
    let unchanged = github();

    let m = Matcher::new(robots(&[]));
    report("equals + glob, seed GitHub token with a matching repository (1 match)", &m, &hit, 1);
    report("equals + glob, seed GitHub token as is (no match)", &m, &unchanged, 0);

    let m = Matcher::new(robots(&[json!({"expression": "claims.ref.startsWith('refs/heads/')"})]));
    report("equals + glob + CEL expression (1 match, CEL runs once)", &m, &hit, 1);

    let mut with_globs = robots(&[]);
    with_globs.extend((0..100).map(|i| RobotRules {
        robot: format!("glob-{i:03}"),
        rules: vec![rule(json!({"claim": "sub", "glob": format!("repo:org-{i}/*")}))],
    }));
    let m = Matcher::new(with_globs);
    report("equals + glob, plus 100 glob-only robots (indexed by literal prefix) (1 match)", &m, &hit, 1);

    let mut with_unindexed = robots(&[]);
    with_unindexed.extend((0..100).map(|i| RobotRules {
        robot: format!("glob-{i:03}"),
        rules: vec![rule(json!({"claim": "sub", "glob": format!("*:org-{i}/*")}))],
    }));
    let m = Matcher::new(with_unindexed);
    report("equals + glob, plus 100 robots with a leading-* glob, checked one by one (1 match)", &m, &hit, 1);

    let ns: Vec<RobotRules> = (0..10_000)
        .map(|i| RobotRules {
            robot: format!("ns-{i:05}"),
            rules: vec![rule(json!({"claim": "sub", "glob": format!("system:serviceaccount:ns-{i}:*")}))],
        })
        .collect();
    let m = Matcher::new(ns);
    let mut k8s = seed(include_str!("../tests/data/kubernetes.json"));
    k8s.insert("sub".into(), json!("system:serviceaccount:ns-4242:default"));
    report("10,000 robots `sub glob system:serviceaccount:<ns>:*`, Kubernetes token (1 match)", &m, &k8s, 1);

    let mut with_cel = robots(&[]);
    with_cel.extend((0..100).map(|i| RobotRules {
        robot: format!("cel-{i:03}"),
        rules: vec![rule(json!({"expression": format!("claims.repository_owner == 'org-{i}'")}))],
    }));
    let m = Matcher::new(with_cel);
    report("equals + glob, plus 100 CEL-only robots checked one by one (1 match)", &m, &hit, 1);

    let m = Matcher::new(robots(&[]));
    let per = time(|| {
        black_box(m.explain(black_box(&hit)));
    });
    println!("{:>9} ns/token  explain over all 10,000 robots (berth token explain)", per.as_nanos());
}
