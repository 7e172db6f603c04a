//! Claim paths: the lookup table (nested objects, keys with dots and slashes, longest key first)
//! and the validation of `ClaimPath`.

use berth_claims::{lookup, ClaimPath, PathError};
use serde_json::{json, Map, Value};

use crate::{claims, github, gitlab, kubernetes, zot};

/// (name, claims, path, what it finds)
type Case<'a> = (&'static str, &'a Map<String, Value>, &'static str, Option<Value>);

#[test]
fn lookup_table() {
    let (gh, gl, k8s, z) = (github(), gitlab(), kubernetes(), zot());
    let dotted = claims(json!({"a.b": 1, "a": {"b": 2}}));
    let only_nested = claims(json!({"a": {"b": 2}}));
    let both_objects = claims(json!({"a.b": {"c": 3}, "a": {"b": {"c": 4}}}));
    let dotted_scalar = claims(json!({"a.b": 1, "a": {"b": {"c": 4}}}));
    let inner_dotted = claims(json!({"a": {"b.c": 5, "b": {"c": 6}}}));
    let kinds = claims(json!({"t": true, "f": false, "n": null, "x": 1.5, "big": 18446744073709551615u64, "o": {}, "arr": [1, "a", null]}));
    #[rustfmt::skip]
    let cases: Vec<Case<'_>> = vec![
        ("github top level", &gh, "repository", Some(json!("container-registry/federated-idp-examples"))),
        ("github string 'false'", &gh, "ref_protected", Some(json!("false"))),
        ("github number", &gh, "exp", Some(json!(1764090768))),
        ("github empty string", &gh, "base_ref", Some(json!(""))),
        ("github missing", &gh, "environment", None),
        ("no descent into a string", &gh, "sub.x", None),
        ("case-sensitive", &gh, "Repository", None),
        ("gitlab number", &gl, "runner_id", Some(json!(47561171))),
        ("gitlab string", &gl, "project_path", Some(json!("8gears/container-registry/harbor-workload-identity-federation"))),
        ("k8s nested", &k8s, "kubernetes.io.namespace", Some(json!("default"))),
        ("k8s nested twice", &k8s, "kubernetes.io.serviceaccount.name", Some(json!("default"))),
        ("k8s pod", &k8s, "kubernetes.io.pod.name", Some(json!("httpd"))),
        ("k8s node uid", &k8s, "kubernetes.io.node.uid", Some(json!("c922a6dd-d8af-4877-8a09-922898d7ddb5"))),
        ("k8s object", &k8s, "kubernetes.io.serviceaccount", Some(json!({"name": "default", "uid": "c871d5a5-d81d-4ce7-8c4b-2dd62dbde226"}))),
        ("k8s key with a dot, whole", &k8s, "kubernetes.io", Some(k8s["kubernetes.io"].clone())),
        ("k8s half of a key", &k8s, "kubernetes", None),
        ("k8s other half", &k8s, "io.namespace", None),
        ("k8s missing leaf", &k8s, "kubernetes.io.serviceaccount.missing", None),
        ("k8s too deep", &k8s, "kubernetes.io.serviceaccount.name.x", None),
        ("k8s array", &k8s, "aud", Some(json!(["macfly4200.8gears.ch"]))),
        ("zot key with dots and slashes", &z, "kubernetes.io/serviceaccount/namespace", Some(json!("flux-system"))),
        ("zot key with a dot after slashes", &z, "kubernetes.io/serviceaccount/service-account.name", Some(json!("source-controller"))),
        ("zot prefix of a key", &z, "kubernetes.io/serviceaccount", None),
        ("zot no nested form", &z, "kubernetes.io.namespace", None),
        ("whole key before nesting", &dotted, "a.b", Some(json!(1))),
        ("object itself", &dotted, "a", Some(json!({"b": 2}))),
        ("nested when no dotted key", &only_nested, "a.b", Some(json!(2))),
        ("longest key first", &both_objects, "a.b.c", Some(json!(3))),
        ("scalar key skipped", &dotted_scalar, "a.b.c", Some(json!(4))),
        ("dotted key inside an object wins", &inner_dotted, "a.b.c", Some(json!(5))),
        ("true", &kinds, "t", Some(json!(true))),
        ("false", &kinds, "f", Some(json!(false))),
        ("null is present", &kinds, "n", Some(Value::Null)),
        ("no descent into null", &kinds, "n.x", None),
        ("float", &kinds, "x", Some(json!(1.5))),
        ("u64", &kinds, "big", Some(json!(18446744073709551615u64))),
        ("empty object", &kinds, "o", Some(json!({}))),
        ("array", &kinds, "arr", Some(json!([1, "a", null]))),
        ("no array indexing", &kinds, "arr.0", None),
    ];
    for (name, claims, path, want) in cases {
        let p = ClaimPath::parse(path).unwrap();
        assert_eq!(p.lookup(claims), want.as_ref(), "{name}: {path}");
        assert_eq!(lookup(claims, path), want.as_ref(), "{name}: {path} (unvalidated)");
    }
}

#[test]
fn unvalidated_lookup_finds_odd_keys_as_is() {
    let c = claims(json!({"a..b": 1, ".x": 2}));
    assert_eq!(lookup(&c, "a..b"), Some(&json!(1)));
    assert_eq!(lookup(&c, ".x"), Some(&json!(2)));
    assert_eq!(lookup(&c, ""), None);
}

#[test]
fn validation_table() {
    let long = "a".repeat(513);
    let many = vec!["a"; 33].join(".");
    let max_segments = vec!["a"; 32].join(".");
    let cases: Vec<(&str, Result<(), PathError>)> = vec![
        ("sub", Ok(())),
        ("kubernetes.io.serviceaccount.name", Ok(())),
        ("kubernetes.io/serviceaccount/namespace", Ok(())),
        ("with space", Ok(())),
        ("ünïcode.ключ", Ok(())),
        (&max_segments, Ok(())),
        ("", Err(PathError::Empty)),
        ("a..b", Err(PathError::EmptySegment("a..b".into()))),
        (".a", Err(PathError::EmptySegment(".a".into()))),
        ("a.", Err(PathError::EmptySegment("a.".into()))),
        (".", Err(PathError::EmptySegment(".".into()))),
        (&long, Err(PathError::TooLong(513))),
        (&many, Err(PathError::TooManySegments(33))),
    ];
    for (path, want) in cases {
        let got = ClaimPath::parse(path);
        assert_eq!(got.as_ref().map(|_| ()).map_err(Clone::clone), want, "{path:?}");
        if let Ok(p) = got {
            assert_eq!(p.as_str(), path);
            assert_eq!(p.to_string(), path);
            assert_eq!(path.parse::<ClaimPath>().unwrap(), p);
        }
    }
}
