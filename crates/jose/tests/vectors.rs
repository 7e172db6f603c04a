//! Public JOSE test vectors through Berth's verifier: Wycheproof JWS, JWK and raw signature
//! vectors, the RFC 7520 §4 examples and the RFC 8037 Ed25519 example (copied into
//! `tests/vectors/`, see its README). Expected results are in the files. Deliberate deviations:
//! HMAC is refused by policy, and four RFC 7520 cases are refused because Berth holds a key to
//! its own `alg` (see `STRICTER`).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_jose::{decode, parse_jwk_set, verify, verify_signature, Algorithm, Curve, JoseError, Jwk, Limits};
use serde_json::Value;

fn load(name: &str) -> Value {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    assert!(dir.is_dir(), "test vectors missing: {} must hold the Wycheproof and JOSE cookbook files (see its README)", dir.display());
    let p = dir.join(name);
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("test vector file {} cannot be read: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Members that make a JWK private (Berth skips such keys, so tests strip them to get the public
/// key, as an identity provider publishes it).
const PRIVATE: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

fn strip_private(v: &Value) -> Value {
    let mut v = v.clone();
    let keys: Vec<&mut Value> = match &mut v {
        Value::Object(o) if o.contains_key("keys") => o["keys"].as_array_mut().unwrap().iter_mut().collect(),
        other => vec![other],
    };
    for k in keys {
        if let Value::Object(o) = k {
            for m in PRIVATE {
                o.remove(m);
            }
        }
    }
    v
}

fn check(token: &str, keys_json: &Value) -> Result<(), JoseError> {
    let keys = parse_jwk_set(keys_json.to_string().as_bytes())?;
    let u = decode(token, &Limits::default())?;
    verify(&u, &keys, &Algorithm::ALL).map(|_| ())
}

/// Wycheproof cases marked `valid` that Berth refuses on purpose, with the refusal's kind.
/// - 346, 350 (RFC 7520 figure 20): a PS384 token verified with a key whose JWK says
///   `"alg": "PS256"`. Berth holds a key to its own `alg` (RFC 8725 §3.1), as Wycheproof's own
///   JWK cases 19-20 do for EC keys.
/// - 347, 351 (RFC 7520 figure 27): the key's `alg` is `"ES521"`, which is no algorithm (RFC 7520
///   has no `alg` on that key; ES512 is the P-521 algorithm), so the key is skipped.
const STRICTER: [(u64, &str); 4] = [(346, "key_mismatch"), (350, "key_mismatch"), (347, "unusable_key"), (351, "unusable_key")];

#[derive(Default, Debug, PartialEq, Eq)]
struct Tally {
    valid_accepted: usize,
    invalid_refused: usize,
    /// Cases keyed with a symmetric key: refused by policy whatever Wycheproof expects.
    hmac_refused: usize,
    /// ... of which Wycheproof marks `valid`.
    hmac_refused_valid: usize,
    acceptable_accepted: usize,
    acceptable_refused: usize,
    stricter_refused: usize,
    /// Why invalid (non-HMAC) cases were refused, by `JoseError::kind`.
    refusals: BTreeMap<&'static str, usize>,
    mismatches: Vec<String>,
}

fn run_jws_file(name: &str, reasons: &[(u64, &str)]) -> Tally {
    let doc = load(name);
    let mut t = Tally::default();
    let mut total = 0;
    // JOSE_VECTORS_VERBOSE=1 prints why each invalid case was refused.
    let verbose = std::env::var_os("JOSE_VECTORS_VERBOSE").is_some();
    for g in doc["testGroups"].as_array().unwrap() {
        let key = match (g.get("public"), g.get("private")) {
            (Some(k), _) => k.clone(),
            (None, Some(k)) => strip_private(k),
            (None, None) => panic!("{name}: group without a key"),
        };
        let symmetric = key.to_string().contains(r#""kty":"oct""#);
        for c in g["tests"].as_array().unwrap() {
            total += 1;
            let id = c["tcId"].as_u64().unwrap();
            let result = c["result"].as_str().unwrap();
            let got = check(c["jws"].as_str().unwrap(), &key);
            let what = format!("{name} tcId {id} ({}, expected {result}): {got:?}", c["comment"]);
            if symmetric {
                // HMAC is never accepted for federated tokens: every case is refused.
                match &got {
                    Err(_) => {
                        t.hmac_refused += 1;
                        t.hmac_refused_valid += usize::from(result == "valid");
                    }
                    Ok(()) => t.mismatches.push(format!("HMAC accepted: {what}")),
                }
                continue;
            }
            if let Some((_, kind)) = STRICTER.iter().find(|(i, _)| *i == id) {
                match &got {
                    Err(e) if e.kind() == *kind && result == "valid" => t.stricter_refused += 1,
                    _ => t.mismatches.push(format!("stricter case: {what}")),
                }
                continue;
            }
            match (result, &got) {
                ("valid", Ok(())) => t.valid_accepted += 1,
                ("invalid", Err(e)) => {
                    if verbose {
                        println!("refused as expected: {what}");
                    }
                    t.invalid_refused += 1;
                    *t.refusals.entry(e.kind()).or_default() += 1;
                    if let Some((_, why)) = reasons.iter().find(|(i, _)| *i == id) {
                        if !e.to_string().contains(why) {
                            t.mismatches.push(format!("refused for another reason than {why:?}: {what}"));
                        }
                    }
                }
                ("acceptable", Ok(())) => {
                    println!("acceptable, accepted: {what}");
                    t.acceptable_accepted += 1;
                }
                ("acceptable", Err(_)) => {
                    println!("acceptable, refused: {what}");
                    t.acceptable_refused += 1;
                }
                _ => t.mismatches.push(what),
            }
        }
    }
    assert_eq!(Some(total), doc["numberOfTests"].as_u64().map(|n| n as usize), "{name}: every case is run");
    println!("{name}: {total} cases: {t:#?}");
    t
}

#[test]
fn wycheproof_json_web_signature() {
    let t = run_jws_file("json_web_signature_test.json", &[]);
    assert!(t.mismatches.is_empty(), "{:#?}", t.mismatches);
    let refusals: BTreeMap<&str, usize> =
        [
            ("bad_signature", 292),
            ("malformed", 16),
            ("key_mismatch", 5),
            ("alg_none", 4),
            ("unusable_key", 4),
            ("unknown_kid", 2),
            ("alg_hmac", 1),
            ("forbidden_header", 1),
        ]
        .into_iter()
        .collect();
    assert_eq!(
        t,
        Tally {
            valid_accepted: 32,
            invalid_refused: 325,
            hmac_refused: 40,
            hmac_refused_valid: 10,
            stricter_refused: 4,
            refusals,
            ..Default::default()
        }
    );
}

#[test]
fn wycheproof_json_web_key() {
    // Each refused asymmetric key set must be refused for the reason the case is about.
    let reasons = [
        (6, "use is \"enc\""),
        (7, "ROCA"),
        (8, "1024 bits is too small"),
        (9, "exponent 1 is not allowed"),
        (19, "algorithm \"ES521\" is not supported"),
        (20, "algorithm \"ES224\" is not supported"),
        (21, "use is \"enc\""),
        (22, "not on curve P-256"),
        (23, "P-384 coordinates are 48 bytes"),
        (24, "n is missing"),
    ];
    let t = run_jws_file("json_web_key_test.json", &reasons);
    assert!(t.mismatches.is_empty(), "{:#?}", t.mismatches);
    assert_eq!(t.refusals, [("unusable_key", 10)].into_iter().collect());
    assert_eq!(
        (t.valid_accepted, t.invalid_refused, t.hmac_refused, t.hmac_refused_valid, t.stricter_refused),
        (1, 10, 15, 4, 0)
    );
}

fn hexd(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

/// Builds the key from its raw encoding (hex modulus/exponent, uncompressed point, raw Ed25519),
/// and checks that the group's JWK, when there is one, parses to the same key.
fn primitive_key(alg: Algorithm, g: &Value) -> Result<Jwk, JoseError> {
    let raw = &g["publicKey"];
    let key = match alg {
        Algorithm::EdDSA => Jwk::ed25519(&hexd(&raw["pk"])),
        Algorithm::ES256 => Jwk::ec(Curve::P256, &hexd(&raw["uncompressed"])),
        Algorithm::ES384 => Jwk::ec(Curve::P384, &hexd(&raw["uncompressed"])),
        _ => Jwk::rsa(&hexd(&raw["modulus"]), &hexd(&raw["publicExponent"])),
    };
    if let (Ok(k), Some(jwk)) = (&key, g.get("publicKeyJwk").or_else(|| g.get("keyJwk"))) {
        let set = parse_jwk_set(jwk.to_string().as_bytes()).unwrap();
        assert_eq!(set.keys.len(), 1, "{jwk}: {:?}", set.skipped);
        assert_eq!(set.keys[0].public_key(), k.public_key(), "{jwk}");
    }
    key
}

/// (as expected, acceptable accepted, acceptable refused, total)
fn run_primitive(name: &str, alg: Algorithm) -> (usize, usize, usize, usize) {
    let doc = load(name);
    let (mut ok, mut acc_yes, mut acc_no, mut total) = (0, 0, 0, 0);
    let mut mismatches = vec![];
    for g in doc["testGroups"].as_array().unwrap() {
        let key = primitive_key(alg, g);
        for c in g["tests"].as_array().unwrap() {
            total += 1;
            let got = match &key {
                Ok(k) => verify_signature(alg, k, &hexd(&c["msg"]), &hexd(&c["sig"])).is_ok(),
                Err(_) => false,
            };
            match (c["result"].as_str().unwrap(), got) {
                ("valid", true) | ("invalid", false) => ok += 1,
                ("acceptable", true) => acc_yes += 1,
                ("acceptable", false) => acc_no += 1,
                (want, got) => mismatches.push(format!("tcId {} ({}): expected {want}, got {got} (key: {:?})", c["tcId"], c["comment"], key.as_ref().err())),
            }
        }
    }
    assert!(mismatches.is_empty(), "{name}: {mismatches:#?}");
    assert_eq!(Some(total), doc["numberOfTests"].as_u64().map(|n| n as usize), "{name}: every case is run");
    println!("{name}: {total} cases, {ok} as expected, acceptable: {acc_yes} accepted, {acc_no} refused");
    (ok, acc_yes, acc_no, total)
}

#[test]
fn wycheproof_primitives() {
    assert_eq!(run_primitive("ecdsa_secp256r1_sha256_p1363_test.json", Algorithm::ES256), (262, 0, 0, 262));
    assert_eq!(run_primitive("ecdsa_secp384r1_sha384_p1363_test.json", Algorithm::ES384), (280, 0, 0, 280));
    assert_eq!(run_primitive("ed25519_test.json", Algorithm::EdDSA), (151, 0, 0, 151));
    assert_eq!(run_primitive("rsa_pss_2048_sha256_mgf1_32_test.json", Algorithm::PS256), (108, 0, 0, 108));
    assert_eq!(run_primitive("rsa_signature_2048_sha256_test.json", Algorithm::RS256), (258, 0, 1, 259));
}

#[test]
fn rfc7520_and_rfc8037_examples() {
    for f in [
        "jose-cookbook/jws/4_1.rsa_v15_signature.json",
        "jose-cookbook/jws/4_2.rsa-pss_signature.json",
        "jose-cookbook/jws/4_3.ecdsa_signature.json",
        "jose-cookbook/curve25519/jws.json",
    ] {
        let d = load(f);
        let token = d["output"]["compact"].as_str().unwrap();
        let key = &d["input"]["key"];
        // The cookbook's keys are private: Berth skips a key that carries private material ...
        assert!(matches!(check(token, key), Err(JoseError::UnusableKey { .. } | JoseError::NoCompatibleKey { .. })), "{f}");
        // ... and verifies with its public part, with exactly the example's algorithm allowed.
        let alg: Algorithm = d["input"]["alg"].as_str().unwrap().parse().unwrap();
        let keys = parse_jwk_set(strip_private(key).to_string().as_bytes()).unwrap();
        let u = decode(token, &Limits::default()).unwrap();
        let v = verify(&u, &keys, &[alg]).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(v.payload, d["input"]["payload"].as_str().unwrap().as_bytes(), "{f}");
        assert_eq!(v.kid.as_deref(), key["kid"].as_str(), "{f}");
        let others: Vec<Algorithm> = Algorithm::ALL.into_iter().filter(|a| *a != alg).collect();
        assert_eq!(verify(&u, &keys, &others).unwrap_err().kind(), "algorithm_not_allowed", "{f}");
    }
    let d = load("jose-cookbook/jws/4_4.hmac-sha2_integrity_protection.json");
    let got = check(d["output"]["compact"].as_str().unwrap(), &d["input"]["key"]);
    assert!(matches!(got, Err(JoseError::Hmac(_))), "HMAC is refused by policy: {got:?}");
}
