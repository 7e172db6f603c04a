//! Operators: `equals`, `glob`, `oneOf` and CEL `expression` on the seeds' tokens, with the
//! exact outcome and reason of each case.

use serde_json::{json, Map, Value};

use crate::{claims, github, gitlab, kubernetes, rule, zot};

/// How the reason is checked: exactly, or that it contains a text.
enum Reason {
    Is(&'static str),
    Has(&'static str),
}
use Reason::{Has, Is};

/// (name, claims, rule spec, matched, reason)
type Case<'a> = (&'static str, &'a Map<String, Value>, Value, bool, Reason);

#[test]
fn operator_table() {
    let (gh, gl, k8s, z) = (github(), gitlab(), kubernetes(), zot());
    let odd = claims(json!({
        "t": true, "f": false, "n": null, "o": {"a": 1}, "x": 1.5, "neg": -3, "empty": [],
        "mixed": [1, "two", true, null, {"a": 1}, ["nested"]], "nested_only": [["a"]], "uni": "é", "nl": "a\nb",
        "star": "a*b", "star2": "axb", "xref": "xrefs/heads/a", "p": "a/b", "deep": "a/x/y/b", "b": "b", "long": "x".repeat(300),
    }));
    #[rustfmt::skip]
    let cases: Vec<Case<'_>> = vec![
        // equals
        ("equals string", &gh, json!({"claim": "repository", "equals": "container-registry/federated-idp-examples"}), true,
            Is(r#"repository is "container-registry/federated-idp-examples""#)),
        ("equals other", &gh, json!({"claim": "repository", "equals": "myorg/myrepo"}), false,
            Is(r#"repository is "container-registry/federated-idp-examples"; does not equal "myorg/myrepo""#)),
        ("equals case-sensitive", &gh, json!({"claim": "actor", "equals": "vad1mo"}), false, Has("does not equal")),
        ("equals prefix is not equal", &gh, json!({"claim": "ref", "equals": "refs/heads/mai"}), false, Has("does not equal")),
        ("equals GitHub 'false' string", &gh, json!({"claim": "ref_protected", "equals": "false"}), true, Is(r#"ref_protected is "false""#)),
        ("equals empty string", &gh, json!({"claim": "base_ref", "equals": ""}), true, Is(r#"base_ref is """#)),
        ("equals missing", &gl, json!({"claim": "repository", "equals": "x"}), false, Is("claim repository is missing")),
        ("equals gitlab missing", &gh, json!({"claim": "project_path", "equals": "x"}), false, Is("claim project_path is missing")),
        ("equals number as JSON text", &gl, json!({"claim": "runner_id", "equals": "47561171"}), true, Is("runner_id is 47561171")),
        ("equals number other", &gl, json!({"claim": "runner_id", "equals": "47561170"}), false, Is(r#"runner_id is 47561171; does not equal "47561170""#)),
        ("equals number not padded", &gl, json!({"claim": "runner_id", "equals": "047561171"}), false, Has("does not equal")),
        ("equals float", &odd, json!({"claim": "x", "equals": "1.5"}), true, Is("x is 1.5")),
        ("equals negative", &odd, json!({"claim": "neg", "equals": "-3"}), true, Is("neg is -3")),
        ("equals bool true", &odd, json!({"claim": "t", "equals": "true"}), true, Is("t is true")),
        ("equals bool false", &odd, json!({"claim": "f", "equals": "false"}), true, Is("f is false")),
        ("equals bool case", &odd, json!({"claim": "t", "equals": "True"}), false, Has("does not equal")),
        ("equals null never", &odd, json!({"claim": "n", "equals": "null"}), false,
            Is("n is null, which never matches (objects and null have no text to compare)")),
        ("equals object never", &odd, json!({"claim": "o", "equals": "{\"a\":1}"}), false, Has("which never matches")),
        ("equals k8s object never", &k8s, json!({"claim": "kubernetes.io.serviceaccount", "equals": "default"}), false, Has("which never matches")),
        ("equals array any element", &k8s, json!({"claim": "aud", "equals": "macfly4200.8gears.ch"}), true, Is(r#"aud is ["macfly4200.8gears.ch"]"#)),
        ("equals array none", &z, json!({"claim": "aud", "equals": "harbor"}), false, Is(r#"aud is ["zot"]; does not equal "harbor""#)),
        ("equals array number element", &odd, json!({"claim": "mixed", "equals": "1"}), true, Has("mixed is")),
        ("equals array bool element", &odd, json!({"claim": "mixed", "equals": "true"}), true, Has("mixed is")),
        ("equals array skips null", &odd, json!({"claim": "mixed", "equals": "null"}), false, Has("does not equal")),
        ("equals array skips nested arrays", &odd, json!({"claim": "mixed", "equals": "nested"}), false, Has("does not equal")),
        ("equals only nested arrays", &odd, json!({"claim": "nested_only", "equals": "a"}), false, Has("which never matches")),
        ("equals empty array", &odd, json!({"claim": "empty", "equals": ""}), false, Has("which never matches")),
        ("equals nested k8s", &k8s, json!({"claim": "kubernetes.io.serviceaccount.name", "equals": "default"}), true,
            Is(r#"kubernetes.io.serviceaccount.name is "default""#)),
        ("equals zot dotted key", &z, json!({"claim": "kubernetes.io/serviceaccount/namespace", "equals": "flux-system"}), true, Has("is \"flux-system\"")),
        ("equals long value cut", &odd, json!({"claim": "long", "equals": "y"}), false, Has("xxx...; does not equal \"y\"")),
        // glob
        ("glob release", &gh, json!({"claim": "ref", "glob": "refs/heads/release-*"}), false,
            Is(r#"ref is "refs/heads/main"; glob "refs/heads/release-*" does not match"#)),
        ("glob heads", &gh, json!({"claim": "ref", "glob": "refs/heads/*"}), true, Is(r#"ref is "refs/heads/main""#)),
        ("glob * spans / and :", &gh, json!({"claim": "sub", "glob": "repo:*"}), true, Has("sub is")),
        ("glob * spans / and : inside", &gh, json!({"claim": "sub", "glob": "repo:container-registry*main"}), true, Has("sub is")),
        ("glob k8s any SA", &k8s, json!({"claim": "sub", "glob": "system:serviceaccount:*:*"}), true, Has("sub is")),
        ("glob k8s other ns", &k8s, json!({"claim": "sub", "glob": "system:serviceaccount:kube-system:*"}), false, Has("does not match")),
        ("glob anchored at start", &gh, json!({"claim": "ref", "glob": "heads/*"}), false, Has("does not match")),
        ("glob anchored at end", &gh, json!({"claim": "ref", "glob": "refs/heads/ma"}), false, Has("does not match")),
        ("glob anchored: xrefs", &odd, json!({"claim": "xref", "glob": "refs/heads/*"}), false, Has("does not match")),
        ("glob ? one char", &gh, json!({"claim": "ref", "glob": "refs/heads/mai?"}), true, Has("ref is")),
        ("glob ? not two", &gh, json!({"claim": "ref", "glob": "refs/heads/ma?"}), false, Has("does not match")),
        // globset matches UTF-8 bytes: `?` is one byte (one ASCII character); `*` and `?` match
        // line feeds too.
        ("glob ? is one byte, not é", &odd, json!({"claim": "uni", "glob": "?"}), false, Has("does not match")),
        ("glob ?? is é (two bytes)", &odd, json!({"claim": "uni", "glob": "??"}), true, Has("uni is")),
        ("glob * on é", &odd, json!({"claim": "uni", "glob": "*"}), true, Has("uni is")),
        ("glob literal é", &odd, json!({"claim": "uni", "glob": "é"}), true, Has("uni is")),
        ("glob [é] is a byte class", &odd, json!({"claim": "uni", "glob": "[é]"}), false, Has("does not match")),
        ("glob a/**/b on a/b", &odd, json!({"claim": "p", "glob": "a/**/b"}), true, Has("p is")),
        ("glob a/**/b on a/x/y/b", &odd, json!({"claim": "deep", "glob": "a/**/b"}), true, Has("deep is")),
        ("glob **/b on b", &odd, json!({"claim": "b", "glob": "**/b"}), true, Has("b is")),
        ("glob a/** on a/x/y/b", &odd, json!({"claim": "deep", "glob": "a/**"}), true, Has("deep is")),
        ("glob a** on a/x/y/b", &odd, json!({"claim": "deep", "glob": "a**"}), true, Has("deep is")),
        ("glob * spans a line feed", &odd, json!({"claim": "nl", "glob": "a*"}), true, Has("nl is")),
        ("glob ? is a line feed", &odd, json!({"claim": "nl", "glob": "a?b"}), true, Has("nl is")),
        ("glob line feed literal", &odd, json!({"claim": "nl", "glob": "a\nb"}), true, Has("nl is")),
        ("glob ? matches /", &odd, json!({"claim": "p", "glob": "a?b"}), true, Has("p is")),
        ("glob class", &gh, json!({"claim": "run_attempt", "glob": "[0-9]"}), true, Has("run_attempt is")),
        ("glob negated class", &gh, json!({"claim": "run_attempt", "glob": "[!0-9]"}), false, Has("does not match")),
        ("glob alternation", &gh, json!({"claim": "ref", "glob": "refs/heads/{main,release-*}"}), true, Has("ref is")),
        ("glob ** is *", &gh, json!({"claim": "job_workflow_ref", "glob": "container-registry/**@refs/heads/main"}), true, Has("is")),
        ("glob escaped star literal", &odd, json!({"claim": "star", "glob": "a\\*b"}), true, Has("star is")),
        ("glob escaped star is not a wildcard", &odd, json!({"claim": "star2", "glob": "a\\*b"}), false, Has("does not match")),
        ("glob case-sensitive", &gh, json!({"claim": "ref", "glob": "REFS/*"}), false, Has("does not match")),
        ("glob number", &gl, json!({"claim": "runner_id", "glob": "4756*"}), true, Is("runner_id is 47561171")),
        ("glob array", &k8s, json!({"claim": "aud", "glob": "*.8gears.ch"}), true, Has("aud is")),
        ("glob missing", &gh, json!({"claim": "environment", "glob": "*"}), false, Is("claim environment is missing")),
        ("glob * on null", &odd, json!({"claim": "n", "glob": "*"}), false, Has("which never matches")),
        ("glob * on object", &odd, json!({"claim": "o", "glob": "*"}), false, Has("which never matches")),
        ("glob * on empty string", &gh, json!({"claim": "base_ref", "glob": "*"}), true, Has("base_ref is")),
        // oneOf
        ("oneOf hit", &gh, json!({"claim": "actor", "oneOf": ["someone", "Vad1mo"]}), true, Is(r#"actor is "Vad1mo""#)),
        ("oneOf miss", &gh, json!({"claim": "actor", "oneOf": ["someone", "vad1mo"]}), false,
            Is(r#"actor is "Vad1mo"; is not one of ["someone", "vad1mo"]"#)),
        ("oneOf number", &gl, json!({"claim": "runner_id", "oneOf": ["1", "47561171"]}), true, Has("runner_id is")),
        ("oneOf array", &k8s, json!({"claim": "aud", "oneOf": ["x", "macfly4200.8gears.ch"]}), true, Has("aud is")),
        ("oneOf 'true' string", &gl, json!({"claim": "ref_protected", "oneOf": ["true"]}), true, Has("ref_protected is")),
        ("oneOf duplicates", &gh, json!({"claim": "ref_type", "oneOf": ["tag", "branch", "branch"]}), true, Has("ref_type is")),
        ("oneOf missing", &gh, json!({"claim": "environment", "oneOf": ["prod"]}), false, Is("claim environment is missing")),
        ("oneOf null", &odd, json!({"claim": "n", "oneOf": ["null", ""]}), false, Has("which never matches")),
        // CEL
        ("cel zot namespace", &z, json!({"expression": "claims['kubernetes.io/serviceaccount/namespace'] == 'flux-system'"}), true,
            Is("expression returned true")),
        ("cel zot other namespace", &z, json!({"expression": "claims['kubernetes.io/serviceaccount/namespace'] == 'default'"}), false,
            Is("expression returned false")),
        ("cel startsWith", &gh, json!({"expression": "claims.ref.startsWith('refs/heads/')"}), true, Is("expression returned true")),
        ("cel startsWith gitlab", &gl, json!({"expression": "claims.ref.startsWith('refs/heads/')"}), false, Is("expression returned false")),
        ("cel in list", &gh, json!({"expression": "claims.repository_owner in ['container-registry', 'x']"}), true, Is("expression returned true")),
        ("cel not in list", &gh, json!({"expression": "claims.repository_owner in ['x', 'y']"}), false, Is("expression returned false")),
        ("cel missing key", &gh, json!({"expression": "claims.org in ['a', 'b']"}), false, Is("expression failed: No such key: org")),
        ("cel has() on missing", &gh, json!({"expression": "!has(claims.org)"}), true, Is("expression returned true")),
        ("cel nested k8s", &k8s, json!({"expression": "claims['kubernetes.io'].serviceaccount.name == 'default'"}), true, Is("expression returned true")),
        ("cel number is int", &gl, json!({"expression": "claims.runner_id == 47561171 && claims.runner_id > 1"}), true, Is("expression returned true")),
        ("cel 'false' is a string", &gh, json!({"expression": "claims.ref_protected == 'false'"}), true, Is("expression returned true")),
        ("cel string vs bool", &gh, json!({"expression": "claims.ref_protected == false"}), false, Is("expression returned false")),
        ("cel array exists", &k8s, json!({"expression": "claims.aud.exists(a, a.endsWith('.8gears.ch'))"}), true, Is("expression returned true")),
        ("cel size", &k8s, json!({"expression": "size(claims.aud) == 1"}), true, Is("expression returned true")),
        ("cel matches regex", &gh, json!({"expression": "claims.sub.matches('^repo:container-registry/.*:ref:refs/heads/main$')"}), true, Is("expression returned true")),
        ("cel zot username form", &z, json!({"expression": "claims.iss + '/' + claims.sub == 'https://kubernetes.default.svc.cluster.local/system:serviceaccount:flux-system:source-controller'"}), true, Is("expression returned true")),
        // Expressions that observe the whole claims map (not only claims.x / claims['x']).
        ("cel size(claims)", &z, json!({"expression": "size(claims) == 7"}), true, Is("expression returned true")),
        ("cel key in claims", &z, json!({"expression": "'sub' in claims && !('nope' in claims)"}), true, Is("expression returned true")),
        ("cel macro over claims", &z, json!({"expression": "claims.exists(k, k == 'kubernetes.io/serviceaccount/namespace')"}), true, Is("expression returned true")),
        ("cel dynamic index", &gh, json!({"expression": "claims['re' + 'f'] == 'refs/heads/main'"}), true, Is("expression returned true")),
        ("cel value as index", &gh, json!({"claim": "repository_owner", "expression": "claims[value == 'container-registry' ? 'ref' : 'sha'] == 'refs/heads/main'"}), true, Is("expression returned true")),
        ("cel claims compared whole", &z, json!({"expression": "claims == {'a': 1}"}), false, Is("expression returned false")),
        ("cel non-bool string", &gh, json!({"expression": "claims.ref"}), false, Is(r#"expression returned "refs/heads/main" (string), not a bool"#)),
        ("cel non-bool int", &gh, json!({"expression": "1 + 1"}), false, Is("expression returned 2 (int), not a bool")),
        ("cel non-bool list", &k8s, json!({"expression": "claims.aud"}), false, Is(r#"expression returned ["macfly4200.8gears.ch"] (list), not a bool"#)),
        ("cel type error", &gh, json!({"expression": "claims.ref + 1 == 2"}), false, Has("expression failed: ")),
        ("cel macro over a string", &gh, json!({"expression": "claims.sub.exists(c, true)"}), false, Has("expression failed: ")),
        ("cel value binding", &gh, json!({"claim": "ref", "expression": "value.endsWith('/main')"}), true, Is("expression returned true")),
        ("cel value binding false", &gh, json!({"claim": "ref", "expression": "value.endsWith('/dev')"}), false, Is("expression returned false")),
        ("cel value nested", &k8s, json!({"claim": "kubernetes.io.pod", "expression": "value.name == 'httpd' && value.uid != ''"}), true, Is("expression returned true")),
        ("cel value array", &k8s, json!({"claim": "aud", "expression": "'macfly4200.8gears.ch' in value"}), true, Is("expression returned true")),
        ("cel value number", &gl, json!({"claim": "runner_id", "expression": "value == 47561171"}), true, Is("expression returned true")),
        ("cel value with claims", &gh, json!({"claim": "ref", "expression": "value == claims.ref"}), true, Is("expression returned true")),
        ("cel value missing claim", &gh, json!({"claim": "environment", "expression": "value == 'prod'"}), false, Is("claim environment is missing")),
        ("cel no value without claim", &gh, json!({"expression": "value == 'x'"}), false, Has("expression failed: ")),
    ];
    let mut failures = Vec::new();
    for (name, claims, spec, want, reason) in cases {
        let o = rule(spec.clone()).evaluate(claims);
        let reason_ok = match reason {
            Is(r) => o.reason == r,
            Has(r) => o.reason.contains(r),
        };
        if o.matched != want || !reason_ok {
            failures.push(format!("{name}: {spec}: got matched={} reason={:?}", o.matched, o.reason));
        }
        if rule(spec).holds(claims) != o.matched {
            failures.push(format!("{name}: holds() and evaluate() disagree"));
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn describe_table() {
    let cases = [
        (json!({"claim": "repository", "equals": "myorg/myrepo"}), r#"repository equals "myorg/myrepo""#),
        (json!({"claim": "ref", "glob": "refs/heads/release-*"}), r#"ref glob "refs/heads/release-*""#),
        (json!({"claim": "actor", "oneOf": ["b", "a"]}), r#"actor oneOf ["b", "a"]"#),
        (json!({"expression": "claims.x == 'y'"}), r#"expression "claims.x == 'y'""#),
        (json!({"claim": "ref", "expression": "value != ''"}), r#"ref expression "value != ''""#),
    ];
    for (spec, want) in cases {
        let r = rule(spec.clone());
        assert_eq!(r.describe(), want, "{spec}");
        assert_eq!(format!("{r:?}"), want, "{spec}");
    }
}
