//! RFC 8725 attacks against the verifier, with freshly generated keys.
#![allow(clippy::unwrap_used)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::Engine as _;
use berth_jose::{decode, parse_claims, parse_jwk_set, verify, Algorithm, JoseError, Limits};

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

struct Ec {
    pair: EcdsaKeyPair,
}

impl Ec {
    fn new() -> Ec {
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        Ec { pair: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref()).unwrap() }
    }
    fn jwks(&self, kid: &str) -> String {
        let p = self.pair.public_key().as_ref();
        format!(r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"{kid}","x":"{}","y":"{}"}}]}}"#, b64(&p[1..33]), b64(&p[33..65]))
    }
    fn sign_raw(&self, header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let sig = self.pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

const CLAIMS: &str = r#"{"iss":"https://i","aud":"r","exp":4000000000,"sub":"s"}"#;

fn check(token: &str, jwks: &str) -> Result<(), JoseError> {
    let set = parse_jwk_set(jwks.as_bytes())?;
    let u = decode(token, &Limits::default())?;
    let v = verify(&u, &set, &Algorithm::ALL)?;
    parse_claims(&v.payload).map(|_| ())
}

#[test]
fn attacks_are_refused() {
    let k = Ec::new();
    let jwks = k.jwks("k1");
    let good = k.sign_raw(r#"{"alg":"ES256","kid":"k1"}"#, CLAIMS);
    assert_eq!(check(&good, &jwks), Ok(()));
    let parts: Vec<&str> = good.split('.').collect();
    let with_header = |h: &str| format!("{}.{}.{}", b64(h.as_bytes()), parts[1], parts[2]);
    let attacker = Ec::new();
    let attacker_jwk = attacker.jwks("evil");
    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none, no signature", format!("{}.{}.", b64(br#"{"alg":"none"}"#), parts[1]), "algorithm_not_allowed"),
        ("alg none with signature", with_header(r#"{"alg":"none","kid":"k1"}"#), "algorithm_not_allowed"),
        ("alg None", with_header(r#"{"alg":"None","kid":"k1"}"#), "algorithm_not_allowed"),
        ("alg NONE", with_header(r#"{"alg":"NONE","kid":"k1"}"#), "algorithm_not_allowed"),
        ("HS256 keyed with the public key", {
            let input = format!("{}.{}", b64(br#"{"alg":"HS256","kid":"k1"}"#), parts[1]);
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, jwks.as_bytes());
            format!("{input}.{}", b64(aws_lc_rs::hmac::sign(&key, input.as_bytes()).as_ref()))
        }, "algorithm_not_allowed"),
        ("RS256 header on an EC key", with_header(r#"{"alg":"RS256","kid":"k1"}"#), "no_usable_key"),
        ("ES384 header on a P-256 key", with_header(r#"{"alg":"ES384","kid":"k1"}"#), "no_usable_key"),
        ("embedded jwk with the attacker's key", attacker.sign_raw(&format!(r#"{{"alg":"ES256","jwk":{}}}"#, &attacker_jwk[9..attacker_jwk.len() - 2]), CLAIMS), "forbidden_header"),
        ("jku", attacker.sign_raw(r#"{"alg":"ES256","kid":"k1","jku":"https://evil/jwks"}"#, CLAIMS), "forbidden_header"),
        ("x5u", attacker.sign_raw(r#"{"alg":"ES256","kid":"k1","x5u":"https://evil/cert"}"#, CLAIMS), "forbidden_header"),
        ("x5c", attacker.sign_raw(r#"{"alg":"ES256","kid":"k1","x5c":["MIIB"]}"#, CLAIMS), "forbidden_header"),
        ("crit", k.sign_raw(r#"{"alg":"ES256","kid":"k1","crit":["exp"],"exp":1}"#, CLAIMS), "forbidden_header"),
        ("b64 false", k.sign_raw(r#"{"alg":"ES256","kid":"k1","b64":false}"#, CLAIMS), "forbidden_header"),
        ("signed by another key, same kid", attacker.sign_raw(r#"{"alg":"ES256","kid":"k1"}"#, CLAIMS), "bad_signature"),
        ("unknown kid", k.sign_raw(r#"{"alg":"ES256","kid":"k2"}"#, CLAIMS), "unknown_kid"),
        ("duplicate alg in header", k.sign_raw(r#"{"alg":"ES256","alg":"none","kid":"k1"}"#, CLAIMS), "malformed"),
        ("duplicate iss in payload", k.sign_raw(r#"{"alg":"ES256","kid":"k1"}"#, r#"{"iss":"https://i","iss":"https://evil","aud":"r","exp":4000000000}"#), "malformed"),
        ("duplicate nested member", k.sign_raw(r#"{"alg":"ES256","kid":"k1"}"#, r#"{"iss":"https://i","kubernetes.io":{"namespace":"a","namespace":"b"}}"#), "malformed"),
        ("padding", format!("{}=", good), "malformed"),
        ("standard base64 alphabet", good.replace('-', "+").replace('_', "/") + if good.contains(['-', '_']) { "" } else { "+" }, "malformed"),
        ("two parts", format!("{}.{}", parts[0], parts[1]), "malformed"),
        ("four parts", format!("{good}.x"), "malformed"),
        ("empty signature", format!("{}.{}.", parts[0], parts[1]), "malformed"),
        ("modified payload", format!("{}.{}.{}", parts[0], b64(br#"{"iss":"https://i","aud":"r","exp":4000000000,"sub":"admin"}"#), parts[2]), "bad_signature"),
        ("oversized", k.sign_raw(r#"{"alg":"ES256","kid":"k1"}"#, &format!(r#"{{"iss":"https://i","pad":"{}"}}"#, "x".repeat(20_000))), "too_large"),
    ];
    for (name, token, kind) in cases {
        match check(&token, &jwks) {
            Ok(()) => panic!("{name}: accepted"),
            Err(e) => assert_eq!(e.kind(), kind, "{name}: {e}"),
        }
    }
}

#[test]
fn allow_list_and_duplicate_kids() {
    let k = Ec::new();
    let token = k.sign_raw(r#"{"alg":"ES256","kid":"k1"}"#, CLAIMS);
    let set = parse_jwk_set(k.jwks("k1").as_bytes()).unwrap();
    let u = decode(&token, &Limits::default()).unwrap();
    let e = verify(&u, &set, &[Algorithm::RS256, Algorithm::EdDSA]).unwrap_err();
    assert!(e.to_string().contains("not allowed for this identity provider (allowed: RS256, EdDSA)"), "{e}");
    // The same kid twice in the provider's keys: ambiguous, refused.
    let one = k.jwks("k1");
    let inner = &one[9..one.len() - 2];
    let twice = format!(r#"{{"keys":[{inner},{inner}]}}"#);
    let set = parse_jwk_set(twice.as_bytes()).unwrap();
    assert!(matches!(verify(&u, &set, &Algorithm::ALL), Err(JoseError::AmbiguousKid(_))));
    // A key set with an HMAC key: the key is skipped with a reason, never used.
    let set = parse_jwk_set(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}"#).unwrap();
    assert!(set.keys.is_empty() && set.skipped[0].reason.contains("HMAC"));
}
