//! Rule spec validation: the wire form (serde, unknown fields refused) and `Rule::compile`.

use berth_claims::{Rule, RuleSpec, MAX_EXPRESSION_BYTES};
use serde_json::{json, Value};

#[test]
fn compile_table() {
    let long_ok = format!("claims.sub == '{}'", "a".repeat(MAX_EXPRESSION_BYTES - 16));
    let too_long = format!("claims.sub == '{}'", "a".repeat(MAX_EXPRESSION_BYTES - 15));
    assert_eq!(long_ok.len(), MAX_EXPRESSION_BYTES);
    let deep_parens = format!("{}true{}", "(".repeat(65), ")".repeat(65));
    let deep_chain = format!("1{} == 2", " + 1".repeat(100));
    #[rustfmt::skip]
    let cases: Vec<(Value, Result<(), &str>)> = vec![
        (json!({"claim": "repository", "equals": "o/r"}), Ok(())),
        (json!({"claim": "base_ref", "equals": ""}), Ok(())),
        (json!({"claim": "ref", "glob": "refs/heads/*"}), Ok(())),
        (json!({"claim": "ref", "glob": "refs/heads/{main,release-*}"}), Ok(())),
        (json!({"claim": "actor", "oneOf": ["a"]}), Ok(())),
        (json!({"expression": "claims.sub != ''"}), Ok(())),
        (json!({"claim": "kubernetes.io.namespace", "expression": "value == 'x'"}), Ok(())),
        (json!({"expression": long_ok}), Ok(())),
        (json!({"expression": "claims.g.map(x, x).exists(y, y == 'a')"}), Ok(())),
        (json!({}), Err("a rule needs exactly one of equals, glob, oneOf, expression")),
        (json!({"claim": "a"}), Err("a rule needs exactly one of equals, glob, oneOf, expression")),
        (json!({"claim": "a", "equals": "x", "glob": "y"}), Err("a rule needs exactly one of equals, glob, oneOf, expression")),
        (json!({"claim": "a", "oneOf": ["x"], "expression": "true"}), Err("a rule needs exactly one of equals, glob, oneOf, expression")),
        (json!({"equals": "x"}), Err("a rule needs `claim` (only expression rules may omit it)")),
        (json!({"glob": "*"}), Err("a rule needs `claim` (only expression rules may omit it)")),
        (json!({"oneOf": ["x"]}), Err("a rule needs `claim` (only expression rules may omit it)")),
        (json!({"claim": "a", "oneOf": []}), Err("oneOf needs at least one value")),
        (json!({"claim": "", "equals": "x"}), Err("claim path is empty")),
        (json!({"claim": "a..b", "equals": "x"}), Err(r#"claim path "a..b" has an empty segment (a leading, trailing or doubled dot)"#)),
        (json!({"claim": "a.", "expression": "true"}), Err("has an empty segment")),
        (json!({"claim": "a", "glob": "a["}), Err(r#"glob "a[" is invalid: "#)),
        (json!({"claim": "a", "glob": "{a,b"}), Err(r#"glob "{a,b" is invalid: "#)),
        (json!({"claim": "a", "glob": "a\\"}), Err(r#"glob "a\\" is invalid: "#)),
        (json!({"expression": "claims.("}), Err(r#"expression "claims.(" does not parse: "#)),
        (json!({"expression": ""}), Err(r#"expression "" does not parse"#)),
        (json!({"expression": "claims.sub ==="}), Err("does not parse")),
        (json!({"expression": too_long}), Err("expression is 4097 bytes long; the limit is 4096")),
        (json!({"expression": deep_parens}), Err("is nested more than 64 levels deep")),
        (json!({"expression": deep_chain}), Err("is nested more than 64 levels deep")),
        (json!({"expression": "claims.g.exists(a, claims.g.exists(b, a == b))"}), Err("has a macro (all, exists, exists_one, map, filter) inside another")),
        (json!({"expression": "Foo{a: 1}.a == 1"}), Err("has a struct literal")),
    ];
    let mut failures = Vec::new();
    for (spec, want) in cases {
        let s: RuleSpec = serde_json::from_value(spec.clone()).unwrap();
        let shown = spec.to_string();
        let shown = &shown[..shown.len().min(80)];
        match (Rule::compile(&s), want) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err(w)) if e.to_string().contains(w) => {}
            (got, want) => failures.push(format!("{shown}: got {:?}, want {want:?}", got.map(|r| r.describe()).map_err(|e| e.to_string()))),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn wire_form_table() {
    let cases: Vec<(Value, Result<RuleSpec, &str>)> = vec![
        (json!({"claim": "a", "equals": "x"}), Ok(RuleSpec { claim: Some("a".into()), equals: Some("x".into()), ..Default::default() })),
        (json!({"claim": "a", "oneOf": ["x", "y"]}), Ok(RuleSpec { claim: Some("a".into()), one_of: Some(vec!["x".into(), "y".into()]), ..Default::default() })),
        (json!({"expression": "true"}), Ok(RuleSpec { expression: Some("true".into()), ..Default::default() })),
        (json!({"claim": "a", "equal": "x"}), Err("unknown field `equal`")),
        (json!({"claim": "a", "one_of": ["x"]}), Err("unknown field `one_of`")),
        (json!({"claim": "a", "equals": "x", "regex": "y"}), Err("unknown field `regex`")),
        (json!({"claim": "a", "equals": 1}), Err("invalid type")),
        (json!({"claim": "a", "equals": true}), Err("invalid type")),
        (json!({"claim": "a", "oneOf": "x"}), Err("invalid type")),
        (json!(["claim", "a"]), Err("invalid type")),
    ];
    for (v, want) in cases {
        let got = serde_json::from_value::<RuleSpec>(v.clone());
        match (got, want) {
            (Ok(g), Ok(w)) => {
                assert_eq!(g, w, "{v}");
                assert_eq!(serde_json::to_value(&g).unwrap(), v, "{v}: serialises back to the same JSON");
            }
            (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{v}: {e}"),
            (got, want) => panic!("{v}: got {got:?}, want {want:?}"),
        }
    }
}
