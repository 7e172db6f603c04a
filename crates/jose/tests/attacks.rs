//! RFC 8725 attacks against the verifier with freshly generated keys: each row is a forged or
//! broken token and the kind of refusal it must get; plus round trips of every algorithm so the
//! table cannot pass by refusing everything.
#![allow(clippy::unwrap_used)]

mod common;

use berth_jose::{decode, parse_claims, parse_jwk_set, peek_claims, verify, Algorithm, JoseError, Limits};
use common::{b64, Issuer};
use serde_json::{json, Map, Value};

const CLAIMS: &str = r#"{"iss":"https://token.actions.githubusercontent.com","aud":"registry.example.com","exp":4000000000,"sub":"repo:org/app:ref:refs/heads/main"}"#;

/// decode → verify → parse_claims, as Berth runs them.
fn run(token: &str, jwks: &str, allowed: &[Algorithm]) -> Result<Map<String, Value>, JoseError> {
    let set = parse_jwk_set(jwks.as_bytes())?;
    let u = decode(token, &Limits::default())?;
    let v = verify(&u, &set, allowed)?;
    parse_claims(&v.payload)
}

fn set(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

#[test]
fn every_algorithm_round_trips() {
    for alg in Algorithm::ALL {
        let issuer = Issuer::for_alg(alg);
        let jwks = issuer.jwks("k1");
        let token = issuer.sign(alg, &format!(r#"{{"alg":"{alg}","kid":"k1","typ":"JWT"}}"#), CLAIMS);
        let claims = run(&token, &jwks, &[alg]).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(claims["sub"], "repo:org/app:ref:refs/heads/main", "{alg}");
        // Without kid: the one fitting key is found.
        let token = issuer.sign(alg, &format!(r#"{{"alg":"{alg}"}}"#), CLAIMS);
        assert!(run(&token, &jwks, &Algorithm::ALL).is_ok(), "{alg} without kid");
        // The key's own alg, when it names this one, is fine.
        let named = set(&[issuer.jwk(Some("k1"), json!({"alg": alg.as_str(), "key_ops": ["verify"]}))]);
        assert!(run(&token, &named, &[alg]).is_ok(), "{alg} with the key's alg");
    }
}

#[test]
fn attack_table() {
    let rsa = Issuer::rsa();
    let ec = Issuer::ec("P-256");
    let p384 = Issuer::ec("P-384");
    let attacker = Issuer::ec("P-256");
    let rsa_jwks = rsa.jwks("k1");
    let ec_jwks = ec.jwks("k1");
    let good = ec.sign(Algorithm::ES256, r#"{"alg":"ES256","kid":"k1"}"#, CLAIMS);
    assert!(run(&good, &ec_jwks, &Algorithm::ALL).is_ok());
    let parts: Vec<&str> = good.split('.').collect();
    let (h, p, s) = (parts[0], parts[1], parts[2]);
    // The good token with another header (signature no longer matches, but most are refused
    // before the signature is looked at).
    let with_header = |hdr: &str| format!("{}.{p}.{s}", b64(hdr));
    // HS256 "signed" with a secret the attacker knows: the identity provider's public key.
    let (n, e) = rsa.rsa_components();
    let pkcs1 = match &rsa {
        Issuer::Rsa(k) => aws_lc_rs::signature::KeyPair::public_key(k).as_ref().to_vec(),
        _ => unreachable!(),
    };
    let pem = format!("-----BEGIN RSA PUBLIC KEY-----\n{}\n-----END RSA PUBLIC KEY-----\n", base64_std(&pkcs1));
    let hs256 = |secret: &[u8], kid: Option<&str>| {
        let hdr = match kid {
            Some(k) => format!(r#"{{"alg":"HS256","kid":"{k}"}}"#),
            None => r#"{"alg":"HS256"}"#.to_owned(),
        };
        let input = format!("{}.{}", b64(hdr), b64(CLAIMS));
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
        format!("{input}.{}", b64(aws_lc_rs::hmac::sign(&key, input.as_bytes())))
    };
    let rs256 = rsa.sign(Algorithm::RS256, r#"{"alg":"RS256","kid":"k1"}"#, CLAIMS);
    // A header whose base64url has '_' (from "???"), to swap in the standard alphabet's '/'.
    let odd = ec.sign(Algorithm::ES256, r#"{"alg":"ES256","kid":"k1","x":"???"}"#, CLAIMS);
    assert!(odd.split('.').next().unwrap().contains('_'));
    // A signature whose last character has non-zero unused bits (64 bytes: 4 unused bits).
    let last = s.chars().last().unwrap();
    const URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = URL.find(last).unwrap();
    assert_eq!(idx & 0xf, 0, "canonical encoding");
    let noncanonical = format!("{h}.{p}.{}{}", &s[..s.len() - 1], &URL[idx | 1..(idx | 1) + 1]);
    let der_sig = {
        let doc = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING, &aws_lc_rs::rand::SystemRandom::new()).unwrap();
        let k = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(&aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING, doc.as_ref()).unwrap();
        let pk = aws_lc_rs::signature::KeyPair::public_key(&k).as_ref().to_vec();
        let jwk = json!({"kty":"EC","crv":"P-256","kid":"k1","x":b64(&pk[1..33]),"y":b64(&pk[33..])});
        let input = format!("{h}.{p}");
        let sig = k.sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes()).unwrap();
        (format!("{input}.{}", b64(sig.as_ref())), set(&[jwk]))
    };
    let sig_bytes = berth_jose::b64url_decode("sig", s).unwrap();
    let long_sig = format!("{h}.{p}.{}", b64([&sig_bytes[..], &[0]].concat()));
    let all = Algorithm::ALL.to_vec();

    struct Case {
        name: &'static str,
        token: String,
        jwks: String,
        allowed: Vec<Algorithm>,
        kind: &'static str,
        msg: &'static str,
    }
    let case = |name, token: String, jwks: &str, kind, msg| Case { name, token, jwks: jwks.to_owned(), allowed: all.clone(), kind, msg };
    let cases = vec![
        // alg none (RFC 8725 §2.1)
        case("alg none, no signature", format!("{}.{p}.", b64(r#"{"alg":"none"}"#)), &ec_jwks, "alg_none", "the token would be unsigned"),
        case("alg none with a signature", with_header(r#"{"alg":"none","kid":"k1"}"#), &ec_jwks, "alg_none", ""),
        case("alg None", with_header(r#"{"alg":"None","kid":"k1"}"#), &ec_jwks, "alg_none", ""),
        case("alg NONE", with_header(r#"{"alg":"NONE","kid":"k1"}"#), &ec_jwks, "alg_none", ""),
        // RS/HS confusion: HMAC keyed with the RSA public key in every usual form
        case("HS256 keyed with PKCS#1 DER", hs256(&pkcs1, Some("k1")), &rsa_jwks, "alg_hmac", "HMAC is never accepted for federated tokens"),
        case("HS256 keyed with PEM", hs256(pem.as_bytes(), Some("k1")), &rsa_jwks, "alg_hmac", ""),
        case("HS256 keyed with n", hs256(&n, None), &rsa_jwks, "alg_hmac", ""),
        case("HS256 keyed with n||e", hs256(&[&n[..], &e[..]].concat(), None), &rsa_jwks, "alg_hmac", ""),
        case("HS256 keyed with the JWKS text", hs256(rsa_jwks.as_bytes(), Some("k1")), &rsa_jwks, "alg_hmac", ""),
        case("HS256 with an oct key in the set", hs256(b"secret", Some("h")), &set(&[json!({"kty":"oct","k":b64("secret"),"kid":"h"})]), "alg_hmac", ""),
        // key type and curve confusion
        case("RS256 token, EC key with its kid", rs256.clone(), &ec_jwks, "key_mismatch", "RS256 needs an RSA key"),
        case("RS256 token without kid, EC key", rsa.sign(Algorithm::RS256, r#"{"alg":"RS256"}"#, CLAIMS), &ec_jwks, "key_mismatch", "no key of the identity provider can verify RS256"),
        case("ES256 token, P-384 key with its kid", good.clone(), &p384.jwks("k1"), "key_mismatch", "ES256 needs an EC P-256 key"),
        case("ES384 header, P-256 key", with_header(r#"{"alg":"ES384","kid":"k1"}"#), &ec_jwks, "key_mismatch", ""),
        case("EdDSA header, P-256 key", with_header(r#"{"alg":"EdDSA","kid":"k1"}"#), &ec_jwks, "key_mismatch", ""),
        case("PS256 token, key for RS256 only", rsa.sign(Algorithm::PS256, r#"{"alg":"PS256","kid":"k1"}"#, CLAIMS),
            &set(&[rsa.jwk(Some("k1"), json!({"alg": "RS256"}))]), "key_mismatch", "the key is for RS256 only"),
        // keys from the token itself (RFC 8725 §3.10)
        case("embedded jwk with the attacker's key",
            attacker.sign(Algorithm::ES256, &json!({"alg":"ES256","jwk": attacker.jwk(None, json!({}))}).to_string(), CLAIMS),
            &ec_jwks, "forbidden_header", "token header embeds a key (jwk); Berth never uses keys embedded in a token"),
        case("jku", attacker.sign(Algorithm::ES256, r#"{"alg":"ES256","kid":"k1","jku":"https://evil.example/jwks"}"#, CLAIMS),
            &ec_jwks, "forbidden_header", "token header names a key URL (jku); Berth never fetches keys named by a token"),
        case("x5u", attacker.sign(Algorithm::ES256, r#"{"alg":"ES256","kid":"k1","x5u":"https://evil.example/cert"}"#, CLAIMS),
            &ec_jwks, "forbidden_header", "key URL (x5u)"),
        case("x5c", attacker.sign(Algorithm::ES256, r#"{"alg":"ES256","kid":"k1","x5c":["MIIB"]}"#, CLAIMS), &ec_jwks, "forbidden_header", "embeds a key (x5c)"),
        // extensions
        case("crit exp", ec.sign(Algorithm::ES256, r#"{"alg":"ES256","kid":"k1","crit":["exp"],"exp":1}"#, CLAIMS), &ec_jwks, "unsupported_extension", "crit: [\"exp\"]"),
        case("b64 false", ec.sign(Algorithm::ES256, r#"{"alg":"ES256","kid":"k1","b64":false,"crit":["b64"]}"#, CLAIMS), &ec_jwks, "unsupported_extension", ""),
        case("b64 false without crit", ec.sign(Algorithm::ES256, r#"{"alg":"ES256","kid":"k1","b64":false}"#, CLAIMS), &ec_jwks, "unsupported_extension", "RFC 7797"),
        // JSON
        case("duplicate alg in the header", ec.sign(Algorithm::ES256, r#"{"alg":"ES256","alg":"none","kid":"k1"}"#, CLAIMS), &ec_jwks, "malformed", "duplicate member \"alg\""),
        case("duplicate alg spelled with an escape", ec.sign(Algorithm::ES256, r#"{"alg":"ES256","\u0061lg":"none","kid":"k1"}"#, CLAIMS), &ec_jwks, "malformed", "duplicate member \"alg\""),
        case("duplicate kid in the header", ec.sign(Algorithm::ES256, r#"{"alg":"ES256","kid":"k1","kid":"k2"}"#, CLAIMS), &ec_jwks, "malformed", "duplicate"),
        case("header is an array", ec.sign(Algorithm::ES256, r#"["alg","ES256"]"#, CLAIMS), &ec_jwks, "malformed", "not a JSON object"),
        case("header is not JSON", ec.sign(Algorithm::ES256, r#"alg=ES256"#, CLAIMS), &ec_jwks, "malformed", ""),
        case("alg in lower case", ec.sign(Algorithm::ES256, r#"{"alg":"es256","kid":"k1"}"#, CLAIMS), &ec_jwks, "unsupported_algorithm", ""),
        case("duplicate iss in the payload", ec.sign(Algorithm::ES256, r#"{"alg":"ES256","kid":"k1"}"#,
            r#"{"iss":"https://token.actions.githubusercontent.com","iss":"https://evil.example","aud":"registry.example.com","exp":4000000000}"#),
            &ec_jwks, "malformed_claims", "duplicate member \"iss\""),
        case("duplicate sub in the payload", ec.sign(Algorithm::ES256, r#"{"alg":"ES256","kid":"k1"}"#, r#"{"sub":"a","iss":"x","sub":"b"}"#), &ec_jwks, "malformed_claims", ""),
        case("duplicate nested member", ec.sign(Algorithm::ES256, r#"{"alg":"ES256","kid":"k1"}"#,
            r#"{"iss":"https://kubernetes.default.svc","kubernetes.io":{"namespace":"a","serviceaccount":{"name":"x","name":"y"}}}"#),
            &ec_jwks, "malformed_claims", "duplicate member \"name\""),
        case("claims nested too deep", ec.sign(Algorithm::ES256, r#"{"alg":"ES256","kid":"k1"}"#, &format!(r#"{{"a":{}1{}}}"#, "[".repeat(40), "]".repeat(40))),
            &ec_jwks, "malformed_claims", "nested deeper than 32"),
        case("claims are not an object", ec.sign(Algorithm::ES256, r#"{"alg":"ES256","kid":"k1"}"#, r#"["iss"]"#), &ec_jwks, "malformed_claims", ""),
        // base64url and shape
        case("padding on the signature", format!("{good}="), &ec_jwks, "malformed", "signature is not base64url"),
        case("padding on the header", format!("{h}==.{p}.{s}"), &ec_jwks, "malformed", "header is not base64url"),
        case("padding on the payload", format!("{h}.{p}=.{s}"), &ec_jwks, "malformed", "payload is not base64url"),
        case("standard base64 alphabet", odd.replace('_', "/"), &ec_jwks, "malformed", "header is not base64url"),
        case("standard base64 '+'", format!("{h}.{p}.+{}", &s[1..]), &ec_jwks, "malformed", ""),
        case("whitespace inside", format!("{h}.{p}.{} {}", &s[..10], &s[10..]), &ec_jwks, "malformed", ""),
        case("line break inside", format!("{h}.\n{p}.{s}"), &ec_jwks, "malformed", ""),
        case("non-canonical trailing bits", noncanonical, &ec_jwks, "malformed", "signature is not base64url"),
        case("two parts", format!("{h}.{p}"), &ec_jwks, "malformed", "exactly three"),
        case("four parts", format!("{good}.{s}"), &ec_jwks, "malformed", "exactly three"),
        case("five parts (JWE)", format!("{h}.{p}.{s}.{s}.{s}"), &ec_jwks, "malformed", "JWE"),
        case("empty signature", format!("{h}.{p}."), &ec_jwks, "malformed", "the signature is empty"),
        case("oversized", ec.sign(Algorithm::ES256, r#"{"alg":"ES256","kid":"k1"}"#, &format!(r#"{{"iss":"x","pad":"{}"}}"#, "x".repeat(16 * 1024))),
            &ec_jwks, "too_large", "more than the limit of 16384 bytes"),
        // signatures
        case("signed by another key, same kid", attacker.sign(Algorithm::ES256, r#"{"alg":"ES256","kid":"k1"}"#, CLAIMS), &ec_jwks, "bad_signature", "bad signature"),
        case("modified payload", format!("{h}.{}.{s}", b64(CLAIMS.replace("main", "evil"))), &ec_jwks, "bad_signature", ""),
        case("modified header", with_header(r#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#), &ec_jwks, "bad_signature", ""),
        case("ECDSA signature in DER form", der_sig.0, &der_sig.1, "bad_signature", ""),
        case("ECDSA signature one byte too long", long_sig, &ec_jwks, "bad_signature", ""),
        case("signature of another token", format!("{h}.{p}.{}", rs256.split('.').nth(2).unwrap()), &ec_jwks, "bad_signature", ""),
        // key selection
        case("unknown kid", ec.sign(Algorithm::ES256, r#"{"alg":"ES256","kid":"k2"}"#, CLAIMS), &ec_jwks, "unknown_kid", "unknown key id \"k2\" (the identity provider's keys have: k1)"),
        case("kid, but the key has none", good.clone(), &set(&[ec.jwk(None, json!({}))]), "unknown_kid", "have: no key ids"),
        case("duplicate kid", good.clone(), &set(&[ec.jwk(Some("k1"), json!({})), ec.jwk(Some("k1"), json!({}))]), "ambiguous_kid", "appears more than once"),
        case("duplicate kid, one copy unusable", good.clone(), &set(&[ec.jwk(Some("k1"), json!({})), json!({"kty":"oct","k":"c2VjcmV0","kid":"k1"})]), "ambiguous_kid", ""),
        case("kid of a skipped key", good.clone(), &set(&[ec.jwk(Some("k1"), json!({"use":"enc"}))]), "unusable_key", "key \"k1\" is not usable: use is \"enc\""),
        case("kid of a key with private material", good.clone(), &set(&[ec.jwk(Some("k1"), json!({"d":"AAAA"}))]), "unusable_key", "private key material"),
        case("empty key set", good.clone(), &set(&[]), "unknown_kid", ""),
    ];
    let mut failures = vec![];
    for c in &cases {
        match run(&c.token, &c.jwks, &c.allowed) {
            Ok(_) => failures.push(format!("{}: ACCEPTED", c.name)),
            Err(e) if e.kind() != c.kind || !e.to_string().contains(c.msg) => {
                failures.push(format!("{}: expected {} ({:?}), got {} ({e})", c.name, c.kind, c.msg, e.kind()))
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    println!("{} attacks refused", cases.len());
}

fn base64_std(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn allow_list() {
    let ec = Issuer::ec("P-256");
    let token = ec.sign(Algorithm::ES256, r#"{"alg":"ES256","kid":"k1"}"#, CLAIMS);
    let jwks = ec.jwks("k1");
    let e = run(&token, &jwks, &[Algorithm::RS256, Algorithm::EdDSA]).unwrap_err();
    assert_eq!(e.to_string(), "algorithm ES256 is not allowed for this identity provider (allowed: RS256, EdDSA)");
    assert_eq!(e.kind(), "algorithm_not_allowed");
    assert_eq!(run(&token, &jwks, &[]).unwrap_err().to_string(), "algorithm ES256 is not allowed for this identity provider (allowed: none)");
    assert!(run(&token, &jwks, &[Algorithm::ES256]).is_ok());
}

#[test]
fn key_selection_without_kid() {
    let right = Issuer::ec("P-256");
    let token = right.sign(Algorithm::ES256, r#"{"alg":"ES256"}"#, CLAIMS);
    let others: Vec<Issuer> = (0..16).map(|_| Issuer::ec("P-256")).collect();
    let rsa = Issuer::rsa();
    // Incompatible keys are not tried; the fitting key is found among others and its kid reported.
    let mut keys = vec![rsa.jwk(Some("r"), json!({})), others[0].jwk(Some("a"), json!({})), right.jwk(Some("right"), json!({}))];
    let u = decode(&token, &Limits::default()).unwrap();
    let v = verify(&u, &parse_jwk_set(set(&keys).as_bytes()).unwrap(), &Algorithm::ALL).unwrap();
    assert_eq!(v.kid.as_deref(), Some("right"));
    // At most 16 fitting keys are tried for a token without kid.
    keys = others.iter().enumerate().map(|(i, k)| k.jwk(Some(&format!("o{i}")), json!({}))).collect();
    keys.push(right.jwk(Some("right"), json!({})));
    let e = verify(&u, &parse_jwk_set(set(&keys).as_bytes()).unwrap(), &Algorithm::ALL).unwrap_err();
    assert_eq!(e, JoseError::BadSignature);
    keys.remove(0);
    assert!(verify(&u, &parse_jwk_set(set(&keys).as_bytes()).unwrap(), &Algorithm::ALL).is_ok());
}

#[test]
fn limits_and_peek() {
    let ec = Issuer::ec("P-256");
    let token = ec.sign(Algorithm::ES256, r#"{"alg":"ES256","kid":"k1","typ":"JWT","x5t":"abc"}"#, CLAIMS);
    let (header, claims) = peek_claims(&token, &Limits::default()).unwrap();
    assert_eq!((header.alg, header.kid.as_deref(), header.typ.as_deref()), (Algorithm::ES256, Some("k1"), Some("JWT")));
    assert_eq!(header.raw["x5t"], "abc");
    assert_eq!(claims["aud"], "registry.example.com");
    let small = Limits { max_token_bytes: 100 };
    assert_eq!(decode(&token, &small).unwrap_err(), JoseError::TooLarge { len: token.len(), max: 100 });
    let big = Limits { max_token_bytes: 64 * 1024 };
    let long = ec.sign(Algorithm::ES256, r#"{"alg":"ES256","kid":"k1"}"#, &format!(r#"{{"pad":"{}"}}"#, "x".repeat(20_000)));
    assert!(decode(&long, &Limits::default()).is_err());
    assert!(verify(&decode(&long, &big).unwrap(), &parse_jwk_set(ec.jwks("k1").as_bytes()).unwrap(), &[Algorithm::ES256]).is_ok());
    // peek refuses what decode refuses, and duplicate claims.
    let dup = ec.sign(Algorithm::ES256, r#"{"alg":"ES256"}"#, r#"{"iss":"a","iss":"b"}"#);
    assert_eq!(peek_claims(&dup, &Limits::default()).unwrap_err().kind(), "malformed_claims");
}

#[test]
fn the_verifier_does_not_need_json_payloads() {
    let ed = Issuer::ed25519();
    let token = ed.sign(Algorithm::EdDSA, r#"{"alg":"EdDSA","kid":"e"}"#, "foo");
    let u = decode(&token, &Limits::default()).unwrap();
    let v = verify(&u, &parse_jwk_set(ed.jwks("e").as_bytes()).unwrap(), &[Algorithm::EdDSA]).unwrap();
    assert_eq!((v.payload.as_slice(), v.kid.as_deref()), (&b"foo"[..], Some("e")));
    assert_eq!(parse_claims(&v.payload).unwrap_err().kind(), "malformed_claims");
}
