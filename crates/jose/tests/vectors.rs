//! Public JOSE test vectors through Berth's verifier: Wycheproof JWS, JWK and raw signature
//! vectors, the RFC 7520 §4 examples and the RFC 8037 Ed25519 example. Expected results are in
//! the files; HMAC cases are refused by policy (Berth never accepts HMAC for federated tokens).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use berth_jose::{decode, parse_jwk_set, verify, Algorithm, JoseError, Jwk, KeyType, Limits};
use serde_json::Value;

fn load(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors").join(name);
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// A JSON-encoded key or key set as Wycheproof stores it (a JSON object, sometimes as text).
fn key_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn check(token: &str, keys_json: Option<&Value>) -> Result<(), JoseError> {
    let keys = match keys_json {
        Some(k) => parse_jwk_set(key_text(k).as_bytes())?,
        None => Default::default(),
    };
    let u = decode(token, &Limits::default())?;
    verify(&u, &keys, &Algorithm::ALL).map(|_| ())
}

#[derive(Default, Debug)]
struct Tally {
    valid_accepted: usize,
    invalid_refused: usize,
    hmac_refused: usize,
    acceptable: usize,
    /// Refused where Wycheproof accepts (see STRICTER).
    stricter: usize,
    mismatches: Vec<String>,
}

/// Wycheproof's RFC 7520 figure 20 cases verify a PS384 token with a key whose JWK says
/// `"alg": "PS256"`, while its cases 332-340 expect a key's `alg` to be enforced. Berth enforces
/// it (RFC 8725 §3.1: one key, one algorithm), so these two are refused.
const STRICTER: [u64; 2] = [346, 350];

fn run_jws_file(name: &str) -> Tally {
    let doc = load(name);
    let mut t = Tally::default();
    for g in doc["testGroups"].as_array().unwrap() {
        let key = g.get("public").or_else(|| g.get("private"));
        // Groups keyed with a symmetric (oct) key are HMAC cases, refused by policy.
        let hmac_group = key.is_some_and(|k| key_text(k).contains("\"oct\""));
        for c in g["tests"].as_array().unwrap() {
            let jws = c["jws"].as_str().unwrap();
            let result = c["result"].as_str().unwrap();
            let got = check(jws, key);
            let hmac = hmac_group || matches!(got, Err(JoseError::Hmac(_)));
            match (result, &got) {
                ("valid", Ok(())) => t.valid_accepted += 1,
                ("valid", Err(_)) if hmac => t.hmac_refused += 1,
                ("invalid", Err(_)) => {
                    if hmac {
                        t.hmac_refused += 1
                    } else {
                        t.invalid_refused += 1
                    }
                }
                ("acceptable", _) => t.acceptable += 1,
                ("valid", Err(JoseError::KeyMismatch { .. })) if STRICTER.contains(&c["tcId"].as_u64().unwrap_or(0)) => t.stricter += 1,
                _ => t.mismatches.push(format!("{name} tcId {} ({}): expected {result}, got {got:?}", c["tcId"], c["comment"])),
            }
        }
    }
    t
}

#[test]
fn wycheproof_json_web_signature() {
    let t = run_jws_file("json_web_signature_test.json");
    println!("json_web_signature_test: {t:?}");
    assert!(t.mismatches.is_empty(), "{:#?}", t.mismatches);
    assert_eq!(t.valid_accepted + t.invalid_refused + t.hmac_refused + t.acceptable + t.stricter, 401);
    assert_eq!(t.stricter, 2);
    assert!(t.valid_accepted >= 30 && t.invalid_refused >= 250 && t.hmac_refused >= 30, "{t:?}");
}

#[test]
fn wycheproof_json_web_key() {
    let t = run_jws_file("json_web_key_test.json");
    println!("json_web_key_test: {t:?}");
    assert!(t.mismatches.is_empty(), "{:#?}", t.mismatches);
    assert_eq!(t.valid_accepted + t.invalid_refused + t.hmac_refused + t.acceptable + t.stricter, 26);
}

fn hexd(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn run_primitive(name: &str, alg: Algorithm, jwk_field: &str) -> (usize, usize, usize) {
    let doc = load(name);
    let (mut ok, mut acceptable, mut total) = (0, 0, 0);
    let mut mismatches = vec![];
    for g in doc["testGroups"].as_array().unwrap() {
        let raw = &g["publicKey"];
        let key = match g.get(jwk_field) {
            Some(jwk) => {
                let mut set = parse_jwk_set(key_text(jwk).as_bytes()).unwrap();
                assert!(!set.keys.is_empty(), "{name}: key skipped: {:?}", set.skipped);
                set.keys.remove(0)
            }
            // Groups whose key has no JWK form: build it from the raw encoding.
            None => match alg.key_type() {
                KeyType::Rsa => Jwk::rsa(&hexd(&raw["modulus"]), &hexd(&raw["publicExponent"])).unwrap(),
                KeyType::Ed25519 => Jwk::from_parts(KeyType::Ed25519, hexd(&raw["pk"]), 0),
                kt => Jwk::from_parts(kt, hexd(&raw["uncompressed"]), 0),
            },
        };
        for c in g["tests"].as_array().unwrap() {
            total += 1;
            let got = key.verify_signature(alg, &hexd(&c["msg"]), &hexd(&c["sig"]));
            match (c["result"].as_str().unwrap(), got) {
                ("valid", true) | ("invalid", false) => ok += 1,
                ("acceptable", _) => acceptable += 1,
                (want, got) => mismatches.push(format!("tcId {} ({}): expected {want}, got {got}", c["tcId"], c["comment"])),
            }
        }
    }
    assert!(mismatches.is_empty(), "{name}: {mismatches:#?}");
    println!("{name}: {ok} as expected, {acceptable} acceptable, {total} total");
    (ok, acceptable, total)
}

#[test]
fn wycheproof_primitives() {
    for (name, alg, field) in [
        ("ecdsa_secp256r1_sha256_p1363_test.json", Algorithm::ES256, "publicKeyJwk"),
        ("ecdsa_secp384r1_sha384_p1363_test.json", Algorithm::ES384, "publicKeyJwk"),
        ("ed25519_test.json", Algorithm::EdDSA, "publicKeyJwk"),
        ("rsa_pss_2048_sha256_mgf1_32_test.json", Algorithm::PS256, "publicKeyJwk"),
        ("rsa_signature_2048_sha256_test.json", Algorithm::RS256, "keyJwk"),
    ] {
        let (ok, acceptable, total) = run_primitive(name, alg, field);
        assert_eq!(ok + acceptable, total);
        assert!(total > 50, "{name}: only {total} cases");
    }
}

#[test]
fn rfc7520_and_rfc8037_examples() {
    let mut accepted = 0;
    for f in ["jose-cookbook/jws/4_1.rsa_v15_signature.json", "jose-cookbook/jws/4_2.rsa-pss_signature.json", "jose-cookbook/jws/4_3.ecdsa_signature.json", "jose-cookbook/curve25519/jws.json"] {
        let d = load(f);
        let token = d["output"]["compact"].as_str().unwrap();
        let got = check(token, Some(&d["input"]["key"]));
        assert!(got.is_ok(), "{f}: {got:?}");
        accepted += 1;
    }
    let d = load("jose-cookbook/jws/4_4.hmac-sha2_integrity_protection.json");
    let got = check(d["output"]["compact"].as_str().unwrap(), Some(&d["input"]["key"]));
    assert!(matches!(got, Err(JoseError::Hmac(_))), "HMAC is refused by policy: {got:?}");
    assert_eq!(accepted, 4);
}
