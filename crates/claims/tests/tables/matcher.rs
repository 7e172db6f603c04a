//! The matcher: robots without rules, all rules must hold, several matches, indexed and
//! unindexed robots mixed (the index must never change the answer), and 10,000 robots.

use std::time::Instant;

use berth_claims::{Matcher, RobotRules};
use serde_json::{json, Map, Value};

use crate::{claims, github, gitlab, kubernetes, rule, zot};

fn robot(name: &str, rules: Vec<Value>) -> RobotRules {
    RobotRules { robot: name.into(), rules: rules.into_iter().map(rule).collect() }
}

/// What `explain` says matches; must equal `matches`.
fn explained(m: &Matcher, c: &Map<String, Value>) -> Vec<String> {
    let mut names: Vec<String> = m.explain(c).into_iter().filter(|r| r.matched).map(|r| r.robot).collect();
    names.dedup();
    names
}

/// A mixed set: indexed by equals, by oneOf, on numbers, arrays and nested paths, and unindexed
/// (glob only, expression only), given out of name order, with a duplicate name.
fn mixed() -> Matcher {
    Matcher::new(vec![
        robot("z-no-rules", vec![]),
        robot("gh-repo-main", vec![
            json!({"claim": "ref", "glob": "refs/heads/*"}),
            json!({"claim": "repository", "equals": "container-registry/federated-idp-examples"}),
        ]),
        robot("gh-repo-release", vec![
            json!({"claim": "repository", "equals": "container-registry/federated-idp-examples"}),
            json!({"claim": "ref", "glob": "refs/heads/release-*"}),
        ]),
        robot("gh-owner-oneof", vec![json!({"claim": "repository_owner", "oneOf": ["container-registry", "other"]})]),
        robot("gh-owner-and-actor", vec![
            json!({"claim": "repository_owner", "oneOf": ["container-registry", "a", "b"]}),
            json!({"claim": "actor", "oneOf": ["Vad1mo"]}),
        ]),
        robot("gh-cel", vec![json!({"expression": "claims.actor == 'Vad1mo' && claims.ref_protected == 'false'"})]),
        robot("gh-cel-false", vec![json!({"expression": "claims.ref_type == 'tag'"})]),
        robot("gh-glob-only", vec![json!({"claim": "sub", "glob": "repo:container-registry/*"})]),
        robot("gl-project", vec![
            json!({"claim": "project_path", "equals": "8gears/container-registry/harbor-workload-identity-federation"}),
            json!({"claim": "ref_protected", "equals": "true"}),
        ]),
        robot("gl-runner", vec![json!({"claim": "runner_id", "equals": "47561171"})]),
        robot("gl-wrong-runner", vec![json!({"claim": "runner_id", "oneOf": ["1", "2"]})]),
        robot("k8s-default-sa", vec![
            json!({"claim": "aud", "equals": "macfly4200.8gears.ch"}),
            json!({"claim": "sub", "equals": "system:serviceaccount:default:default"}),
        ]),
        robot("k8s-any-sa", vec![json!({"claim": "sub", "glob": "system:serviceaccount:*:*"})]),
        robot("k8s-ns", vec![json!({"claim": "kubernetes.io.namespace", "equals": "default"})]),
        robot("zot-flux", vec![json!({"claim": "kubernetes.io/serviceaccount/namespace", "equals": "flux-system"})]),
        robot("zot-flux-cel", vec![json!({"expression": "claims['kubernetes.io/serviceaccount/namespace'] == 'flux-system'"})]),
        robot("aud-everywhere", vec![json!({"claim": "aud", "oneOf": ["macfly4200.8gears.ch", "zot"]})]),
        robot("dup", vec![json!({"claim": "iss", "equals": "https://gitlab.com"})]),
        robot("dup", vec![json!({"claim": "iss", "glob": "https://gitlab.*"})]),
        robot("a-no-rules", vec![]),
        robot("gh-suffix-glob", vec![json!({"claim": "sub", "glob": "*:ref:refs/heads/main"})]),
        robot("k8s-ns-glob", vec![json!({"claim": "kubernetes.io.namespace", "glob": "def*"}), json!({"claim": "aud", "glob": "*8gears.ch"})]),
        robot("gl-runner-glob", vec![json!({"claim": "runner_id", "glob": "4756117?"})]),
    ])
}

#[test]
fn mixed_table() {
    let m = mixed();
    assert_eq!(m.len(), 23);
    // gh-cel, gh-cel-false, zot-flux-cel, gh-suffix-glob
    assert_eq!(m.unindexed_len(), 4);
    #[rustfmt::skip]
    let cases: Vec<(&str, Map<String, Value>, Vec<&str>)> = vec![
        ("github", github(), vec!["aud-everywhere", "gh-cel", "gh-glob-only", "gh-owner-and-actor", "gh-owner-oneof", "gh-repo-main", "gh-suffix-glob"]),
        ("gitlab", gitlab(), vec!["aud-everywhere", "dup", "gl-project", "gl-runner", "gl-runner-glob"]),
        ("kubernetes", kubernetes(), vec!["aud-everywhere", "k8s-any-sa", "k8s-default-sa", "k8s-ns", "k8s-ns-glob"]),
        ("zot", zot(), vec!["aud-everywhere", "k8s-any-sa", "zot-flux", "zot-flux-cel"]),
        ("empty token", claims(json!({})), vec![]),
        ("release branch", {
            let mut c = github();
            c.insert("ref".into(), json!("refs/heads/release-1"));
            c
        }, vec!["aud-everywhere", "gh-cel", "gh-glob-only", "gh-owner-and-actor", "gh-owner-oneof", "gh-repo-main", "gh-repo-release", "gh-suffix-glob"]),
        ("another actor: one rule of two fails", {
            let mut c = github();
            c.insert("actor".into(), json!("someone"));
            c
        }, vec!["aud-everywhere", "gh-glob-only", "gh-owner-oneof", "gh-repo-main", "gh-suffix-glob"]),
    ];
    for (name, c, want) in cases {
        assert_eq!(m.matches(&c), want, "{name}");
        assert_eq!(explained(&m, &c), want, "{name}: explain agrees with matches");
    }
}

#[test]
fn robot_without_rules_never_matches() {
    let m = Matcher::new(vec![robot("none", vec![]), robot("all", vec![json!({"expression": "true"})])]);
    for c in [github(), gitlab(), kubernetes(), zot(), claims(json!({}))] {
        assert_eq!(m.matches(&c), vec!["all"]);
    }
    let ex = m.explain(&github());
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[1].robot, "none");
    assert!(!ex[1].matched);
    assert_eq!(ex[1].rules.len(), 1);
    assert_eq!(ex[1].rules[0].0, "(no rules)");
    assert_eq!(ex[1].rules[0].1.reason, "a robot without rules never matches");
    assert!(Matcher::new(vec![robot("none", vec![])]).matches(&github()).is_empty());
    assert!(Matcher::new(vec![]).matches(&github()).is_empty());
}

#[test]
fn explain_gives_every_rule_outcome() {
    let m = mixed();
    let ex = m.explain(&github());
    let names: Vec<&str> = ex.iter().map(|r| r.robot.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sorted by name");
    let release = ex.iter().find(|r| r.robot == "gh-repo-release").unwrap();
    assert!(!release.matched);
    assert_eq!(
        release.rules,
        vec![
            (
                r#"repository equals "container-registry/federated-idp-examples""#.to_owned(),
                berth_claims::Outcome { matched: true, reason: r#"repository is "container-registry/federated-idp-examples""#.into() }
            ),
            (
                r#"ref glob "refs/heads/release-*""#.to_owned(),
                berth_claims::Outcome {
                    matched: false,
                    reason: r#"ref is "refs/heads/main"; glob "refs/heads/release-*" does not match"#.into()
                }
            ),
        ]
    );
    let gl = ex.iter().find(|r| r.robot == "gl-project").unwrap();
    assert_eq!(gl.rules[0].1.reason, "claim project_path is missing");
    assert_eq!(gl.rules[1].1.reason, r#"ref_protected is "false"; does not equal "true""#);
}

#[test]
fn index_prefers_equals_and_keeps_unindexable_robots() {
    // The oneOf comes first, the equals is the key; a token that fails the equals must not match
    // and one that passes both must.
    let m = Matcher::new(vec![
        robot("r", vec![json!({"claim": "ref_type", "oneOf": ["branch", "tag"]}), json!({"claim": "repository", "equals": "o/r"})]),
        robot("g", vec![json!({"claim": "repository", "glob": "o/*"})]),
        robot("e", vec![json!({"expression": "claims.repository.endsWith('/r')"})]),
    ]);
    assert_eq!(m.unindexed_len(), 1, "only the expression robot");
    assert_eq!(m.matches(&claims(json!({"ref_type": "branch", "repository": "o/r"}))), vec!["e", "g", "r"]);
    assert_eq!(m.matches(&claims(json!({"ref_type": "branch", "repository": "o/x"}))), vec!["g"]);
    assert_eq!(m.matches(&claims(json!({"ref_type": "tag"}))), Vec::<String>::new());
    // Array and number values reach the index.
    let m = Matcher::new(vec![
        robot("aud", vec![json!({"claim": "aud", "equals": "b"})]),
        robot("num", vec![json!({"claim": "n", "oneOf": ["7", "8"]})]),
        robot("bool", vec![json!({"claim": "flag", "equals": "true"})]),
    ]);
    assert_eq!(m.unindexed_len(), 0);
    assert_eq!(m.matches(&claims(json!({"aud": ["a", "b", "b"], "n": 8, "flag": true}))), vec!["aud", "bool", "num"]);
    assert_eq!(m.matches(&claims(json!({"aud": "b", "n": "7", "flag": "true"}))), vec!["aud", "bool", "num"]);
    assert_eq!(m.matches(&claims(json!({"aud": [["b"]], "n": {"x": 7}, "flag": null}))), Vec::<String>::new());
}

#[test]
fn glob_prefix_index() {
    let m = Matcher::new(vec![
        robot("short", vec![json!({"claim": "sub", "glob": "s*"})]),
        robot("team-a", vec![json!({"claim": "sub", "glob": "system:serviceaccount:team-a:*"})]),
        robot("team-ab", vec![json!({"claim": "sub", "glob": "system:serviceaccount:team-ab:*"})]),
        robot("any", vec![json!({"claim": "sub", "glob": "system:serviceaccount:*:*"})]),
        robot("exact-glob", vec![json!({"claim": "sub", "glob": "system:serviceaccount:team-a:puller"})]),
        robot("class", vec![json!({"claim": "sub", "glob": "system:serviceaccount:team-[ab]:*"})]),
        robot("leading-star", vec![json!({"claim": "sub", "glob": "*:puller"})]),
        robot("oneof-wins", vec![json!({"claim": "sub", "glob": "system:*"}), json!({"claim": "aud", "oneOf": ["x"]})]),
        robot("longest-prefix", vec![json!({"claim": "sub", "glob": "sys*"}), json!({"claim": "aud", "glob": "x*y"})]),
        robot("unicode", vec![json!({"claim": "u", "glob": "é*"})]),
        robot("number", vec![json!({"claim": "n", "glob": "47*"})]),
    ]);
    assert_eq!(m.unindexed_len(), 1, "only leading-star");
    #[rustfmt::skip]
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({"sub": "system:serviceaccount:team-a:puller"}), vec!["any", "class", "exact-glob", "leading-star", "short", "team-a"]),
        (json!({"sub": "system:serviceaccount:team-ab:puller"}), vec!["any", "leading-star", "short", "team-ab"]),
        (json!({"sub": "system:serviceaccount:team-b:x", "aud": ["x", "xzy"]}), vec!["any", "class", "longest-prefix", "oneof-wins", "short"]),
        (json!({"sub": ["other", "system:serviceaccount:team-a:x"]}), vec!["any", "class", "short", "team-a"]),
        (json!({"sub": "s"}), vec!["short"]),
        (json!({"sub": ""}), vec![]),
        (json!({"sub": "é"}), vec![]),
        (json!({"u": "é"}), vec!["unicode"]),
        (json!({"u": "e"}), vec![]),
        (json!({"u": "ée"}), vec!["unicode"]),
        (json!({"n": 47561171}), vec!["number"]),
        (json!({"n": [1, 470]}), vec!["number"]),
    ];
    for (c, want) in cases {
        let c = claims(c);
        assert_eq!(m.matches(&c), want, "{c:?}");
        assert_eq!(explained(&m, &c), want, "{c:?}: explain agrees");
    }
}

#[test]
fn many_expressions_on_one_token() {
    // More expressions than get small maps of their claims: later ones share the whole map.
    let mut robots = Vec::new();
    for i in 0..6 {
        robots.push(robot(&format!("keys-{i}"), vec![json!({"expression": format!("claims.run_attempt == '1' && {i} >= 0")})]));
        robots.push(robot(&format!("whole-{i}"), vec![json!({"expression": format!("size(claims) == 31 && {i} >= 0")})]));
        robots.push(robot(&format!("keys-false-{i}"), vec![json!({"expression": format!("claims.run_attempt == '{i}2'")})]));
        robots.push(robot(&format!("missing-{i}"), vec![json!({"expression": "claims.nope == 1"})]));
    }
    let m = Matcher::new(robots);
    let mut want: Vec<String> = (0..6).flat_map(|i| [format!("keys-{i}"), format!("whole-{i}")]).collect();
    want.sort();
    assert_eq!(m.matches(&github()), want);
    assert_eq!(explained(&m, &github()), want);
    let ex = m.explain(&github());
    for r in ex.iter().filter(|r| r.robot.starts_with("missing-")) {
        assert_eq!(r.rules[0].1.reason, "expression failed: No such key: nope");
    }
}

fn ten_thousand() -> Matcher {
    Matcher::new(
        (0..10_000)
            .map(|i| {
                robot(&format!("robot-{i:05}"), vec![
                    json!({"claim": "repository", "equals": format!("org-{}/repo-{i}", i % 97)}),
                    json!({"claim": "ref", "glob": "refs/heads/*"}),
                ])
            })
            .collect(),
    )
}

#[test]
fn ten_thousand_robots() {
    let m = ten_thousand();
    assert_eq!(m.unindexed_len(), 0);
    for i in [0, 1, 4242, 9999] {
        let mut c = github();
        c.insert("repository".into(), json!(format!("org-{}/repo-{i}", i % 97)));
        assert_eq!(m.matches(&c), vec![format!("robot-{i:05}")]);
        c.insert("ref".into(), json!("refs/tags/v1"));
        assert!(m.matches(&c).is_empty(), "the second rule must hold too");
    }
    assert!(m.matches(&github()).is_empty(), "the seed token's repository is not among them");

    // Timing: the seed GitHub token, one robot of 10,000 matching.
    let mut c = github();
    c.insert("repository".into(), json!("org-71/repo-4242"));
    assert_eq!(m.matches(&c), vec!["robot-04242"]);
    let n: u32 = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(m.matches(std::hint::black_box(&c)));
    }
    let per = t.elapsed() / n;
    println!("10,000 robots, seed GitHub token, one match: {} ns per token (test profile)", per.as_nanos());
    assert!(per.as_micros() < 50, "{per:?} per token");
}

#[test]
fn ten_thousand_glob_robots() {
    // Kubernetes style: one robot per namespace, `sub glob system:serviceaccount:<ns>:*`.
    let m = Matcher::new(
        (0..10_000)
            .map(|i| robot(&format!("ns-{i:05}"), vec![json!({"claim": "sub", "glob": format!("system:serviceaccount:ns-{i}:*")})]))
            .collect(),
    );
    assert_eq!(m.unindexed_len(), 0);
    let mut c = kubernetes();
    for i in [0, 7, 77, 777, 7777] {
        c.insert("sub".into(), json!(format!("system:serviceaccount:ns-{i}:default")));
        assert_eq!(m.matches(&c), vec![format!("ns-{i:05}")]);
    }
    assert!(m.matches(&kubernetes()).is_empty());
    let n: u32 = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(m.matches(std::hint::black_box(&c)));
    }
    let per = t.elapsed() / n;
    println!("10,000 glob robots, Kubernetes token, one match: {} ns per token (test profile)", per.as_nanos());
    assert!(per.as_micros() < 50, "{per:?} per token");
}
