//! JSON Web Keys (RFC 7517, 7518 §6, 8037 §2) for signature verification: parsing a key set key
//! by key, refusing weak or unusable keys one at a time with a reason (one bad key must not take
//! the whole set down, and the reason is kept for diagnostics), and verifying signatures with
//! aws-lc-rs. The parsed aws-lc-rs key is cached inside the [`Jwk`], per algorithm, so a
//! verification does not re-parse the key.
//!
//! Rules: RSA moduli of 2048-8192 bits, odd exponent > 1 (at most 32 bits), no ROCA fingerprint;
//! EC keys on P-256/P-384/P-521 with coordinates of the exact length and a point on the curve;
//! Ed25519 keys of 32 bytes. `use` absent or `sig`; `key_ops` absent or containing `verify`;
//! `alg` absent or a supported algorithm that fits the key. Symmetric (`oct`) keys are always
//! skipped. A key that carries private members (`d`, `p`, `q`, ...) is skipped too: a published
//! private key lets anyone sign tokens, so it proves nothing.

use std::collections::HashSet;
use std::sync::OnceLock;

use aws_lc_rs::signature::ParsedPublicKey;
use serde_json::{Map, Value};

use crate::{b64url_decode, json, Algorithm, Curve, JoseError, KeyType, OkpCurve};

/// Smallest and largest accepted RSA modulus, in bits.
pub const RSA_MIN_BITS: usize = 2048;
pub const RSA_MAX_BITS: usize = 8192;

/// A public key usable for signature verification.
pub struct Jwk {
    pub kid: Option<String>,
    /// The key's own `alg`: when present, the key verifies that algorithm only.
    pub alg: Option<Algorithm>,
    pub key_type: KeyType,
    /// RSA modulus size in bits (0 for other keys).
    pub bits: usize,
    /// PKCS#1 RSAPublicKey DER, an uncompressed EC point, or the raw Ed25519 key.
    public_key: Vec<u8>,
    /// Parsed aws-lc-rs keys by algorithm (an RSA key may serve six algorithms).
    cache: [OnceLock<Option<ParsedPublicKey>>; 10],
}

impl Clone for Jwk {
    fn clone(&self) -> Self {
        let cache: [OnceLock<Option<ParsedPublicKey>>; 10] = Default::default();
        for (new, old) in cache.iter().zip(&self.cache) {
            if let Some(k) = old.get() {
                let _ = new.set(k.clone());
            }
        }
        Jwk { kid: self.kid.clone(), alg: self.alg, key_type: self.key_type, bits: self.bits, public_key: self.public_key.clone(), cache }
    }
}

impl std::fmt::Debug for Jwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwk").field("kid", &self.kid).field("alg", &self.alg).field("key_type", &self.key_type).field("bits", &self.bits).finish()
    }
}

/// A key left out of a set, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    /// Position in the set's `keys` array.
    pub index: usize,
    pub kid: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for SkippedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key {} ({}): {}", self.index, self.kid.as_deref().unwrap_or("no kid"), self.reason)
    }
}

/// A parsed key set: the usable keys, the skipped ones with their reasons, and the key ids used by
/// more than one key.
#[derive(Debug, Clone, Default)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
    pub skipped: Vec<SkippedKey>,
    /// Key ids used by more than one key of the set (usable or not): a token naming one of them
    /// is refused as ambiguous.
    pub duplicate_kids: HashSet<String>,
}

impl Jwk {
    /// An RSA key from its big-endian modulus and exponent (leading zero bytes are tolerated).
    pub fn rsa(n: &[u8], e: &[u8]) -> Result<Jwk, JoseError> {
        let n = strip_zeros(n);
        let e = strip_zeros(e);
        let bits = bit_len(n);
        if bits < RSA_MIN_BITS {
            return Err(bad(format!("RSA modulus of {bits} bits is too small (at least {RSA_MIN_BITS})")));
        }
        if bits > RSA_MAX_BITS {
            return Err(bad(format!("RSA modulus of {bits} bits is too large (at most {RSA_MAX_BITS})")));
        }
        if n.last().is_some_and(|b| b % 2 == 0) {
            return Err(bad("RSA modulus is even".into()));
        }
        if e.len() > 4 {
            return Err(bad("RSA exponent is longer than 32 bits".into()));
        }
        let ev = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        if ev <= 1 || ev % 2 == 0 {
            return Err(bad(format!("RSA exponent {ev} is not allowed (it must be odd and greater than 1)")));
        }
        if roca_vulnerable(n) {
            return Err(bad("RSA modulus has the ROCA fingerprint (CVE-2017-15361): its private key can be computed".into()));
        }
        Jwk::parsed(KeyType::Rsa, rsa_public_key_der(n, e), bits, Algorithm::RS256)
    }

    /// An EC key from its uncompressed point `0x04 || x || y`; the point must be on the curve.
    pub fn ec(curve: Curve, uncompressed: &[u8]) -> Result<Jwk, JoseError> {
        let len = curve.coordinate_len();
        if uncompressed.len() != 1 + 2 * len || uncompressed[0] != 4 {
            return Err(bad(format!("an uncompressed {} point is 0x04 followed by two {len}-byte coordinates", curve.as_str())));
        }
        Jwk::parsed(KeyType::Ec(curve), uncompressed.to_vec(), 0, curve.algorithm())
    }

    /// An Ed25519 key from its 32 bytes.
    pub fn ed25519(x: &[u8]) -> Result<Jwk, JoseError> {
        if x.len() != 32 {
            return Err(bad(format!("Ed25519 public keys are 32 bytes, not {}", x.len())));
        }
        Jwk::parsed(KeyType::Okp(OkpCurve::Ed25519), x.to_vec(), 0, Algorithm::EdDSA)
    }

    /// Lets aws-lc-rs parse the key once (it checks that an EC point is on its curve) and keeps
    /// the result in the cache.
    fn parsed(key_type: KeyType, public_key: Vec<u8>, bits: usize, alg: Algorithm) -> Result<Jwk, JoseError> {
        let parsed = ParsedPublicKey::new(alg.verification(), &public_key).map_err(|e| {
            bad(match key_type {
                KeyType::Ec(c) => format!("the point is not on curve {} ({e})", c.as_str()),
                t => format!("the {t} key was refused by the crypto library ({e})"),
            })
        })?;
        let jwk = Jwk { kid: None, alg: None, key_type, bits, public_key, cache: Default::default() };
        let _ = jwk.cache[alg.index()].set(Some(parsed));
        Ok(jwk)
    }

    /// A one-line description for diagnostics (`RSA 2048 bits, alg RS256`).
    pub fn describe(&self) -> String {
        let alg = self.alg.map(|a| format!(", alg {a}")).unwrap_or_default();
        match self.key_type {
            KeyType::Rsa => format!("RSA {} bits{alg}", self.bits),
            t => format!("{t}{alg}"),
        }
    }

    /// The public key bytes: PKCS#1 RSAPublicKey DER, an uncompressed EC point, or the raw
    /// Ed25519 key.
    pub fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    /// Whether this key may verify `alg`: the key type and curve must fit, and so must the key's
    /// own `alg` if it names one (RFC 8725 §3.1: one key, one algorithm). This is what defeats
    /// algorithm confusion.
    pub fn check_alg(&self, alg: Algorithm) -> Result<(), JoseError> {
        let why = if alg.key_type() != self.key_type {
            format!("{alg} needs an {} key", alg.key_type())
        } else {
            match self.alg {
                Some(own) if own != alg => format!("the key is for {own} only"),
                _ => return Ok(()),
            }
        };
        Err(JoseError::KeyMismatch { kid: self.kid.clone(), key: self.describe(), alg, why })
    }

    /// Verifies `signature` over `message` (the JWS signing input) with `alg`, which must fit the
    /// key ([`Jwk::check_alg`]).
    pub fn verify_signature(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> Result<(), JoseError> {
        self.check_alg(alg)?;
        let parsed = self.cache[alg.index()].get_or_init(|| ParsedPublicKey::new(alg.verification(), &self.public_key).ok());
        match parsed {
            Some(k) if k.verify_sig(message, signature).is_ok() => Ok(()),
            _ => Err(JoseError::BadSignature),
        }
    }
}

fn bad(reason: String) -> JoseError {
    JoseError::BadKey(reason)
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[i..]
}

fn bit_len(n: &[u8]) -> usize {
    match n.first() {
        None => 0,
        Some(first) => n.len() * 8 - first.leading_zeros() as usize,
    }
}

fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// A DER INTEGER from a minimal big-endian unsigned value.
fn der_uint(out: &mut Vec<u8>, v: &[u8]) {
    out.push(0x02);
    let pad = v.first().is_some_and(|b| b & 0x80 != 0);
    der_len(out, v.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(v);
}

/// PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`, the form
/// aws-lc-rs parses for RSA verification.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    der_uint(&mut body, n);
    der_uint(&mut body, e);
    let mut out = vec![0x30];
    der_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// The ROCA fingerprint (Nemec et al., "The Return of Coppersmith's Attack", CCS 2017): moduli
/// made by the vulnerable Infineon library are `65537^k mod M`-shaped, so modulo each of these
/// small primes the modulus lies in the multiplicative subgroup generated by 65537. A random
/// modulus passes all 38 tests with probability about 2^-154.
fn roca_vulnerable(n: &[u8]) -> bool {
    const PRIMES: [u32; 38] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131,
        137, 139, 149, 151, 157, 163, 167,
    ];
    PRIMES.iter().all(|&p| {
        let r = n.iter().fold(0u32, |acc, b| (acc * 256 + u32::from(*b)) % p);
        let g = 65537 % p;
        // Walk the subgroup <g> = {1, g, g^2, ...}; its order divides p - 1.
        let mut x = 1;
        for _ in 0..p {
            if x == r {
                return true;
            }
            x = x * g % p;
            if x == 1 {
                break;
            }
        }
        false
    })
}

fn string<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, JoseError> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(format!("{name} is not a string"))),
    }
}

fn required<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<&'a str, JoseError> {
    string(obj, name)?.ok_or_else(|| bad(format!("{name} is missing")))
}

fn b64(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, JoseError> {
    b64url_decode(name, required(obj, name)?).map_err(|_| bad(format!("{name} is not base64url without padding")))
}

/// Private members by key type (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2).
const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];

fn parse_key(obj: &Map<String, Value>) -> Result<Jwk, JoseError> {
    let kty = required(obj, "kty")?;
    if kty == "oct" {
        return Err(bad("symmetric (oct) key: HMAC is never accepted for federated tokens".into()));
    }
    let kid = string(obj, "kid")?.map(str::to_owned);
    if let Some(u) = obj.get("use") {
        if u.as_str() != Some("sig") {
            return Err(bad(format!("use is {u}, not \"sig\"")));
        }
    }
    if let Some(ops) = obj.get("key_ops") {
        let ops = ops.as_array().ok_or_else(|| bad("key_ops is not an array".into()))?;
        if !ops.iter().any(|o| o.as_str() == Some("verify")) {
            return Err(bad("key_ops does not include \"verify\"".into()));
        }
    }
    let alg = match string(obj, "alg")? {
        None => None,
        Some(a) => Some(a.parse::<Algorithm>().map_err(|e| bad(format!("alg: {e}")))?),
    };
    if let Some(m) = PRIVATE_MEMBERS.iter().find(|m| obj.contains_key(**m)) {
        return Err(bad(format!("the key contains private key material ({m}); a published private key lets anyone sign tokens")));
    }
    let mut key = match kty {
        "RSA" => Jwk::rsa(&b64(obj, "n")?, &b64(obj, "e")?)?,
        "EC" => {
            let crv = required(obj, "crv")?;
            let curve = Curve::from_jwk(crv).ok_or_else(|| bad(format!("EC curve {crv:?} is not supported (P-256, P-384, P-521)")))?;
            let (x, y) = (b64(obj, "x")?, b64(obj, "y")?);
            let len = curve.coordinate_len();
            if x.len() != len || y.len() != len {
                return Err(bad(format!("{crv} coordinates are {len} bytes, not {} and {}", x.len(), y.len())));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Jwk::ec(curve, &point)?
        }
        "OKP" => {
            let crv = required(obj, "crv")?;
            if crv != "Ed25519" {
                return Err(bad(format!("OKP curve {crv:?} is not supported for signatures (Ed25519 only)")));
            }
            Jwk::ed25519(&b64(obj, "x")?)?
        }
        other => return Err(bad(format!("key type {other:?} is not supported (RSA, EC, OKP)"))),
    };
    if let Some(a) = alg {
        if a.key_type() != key.key_type {
            return Err(bad(format!("alg {a} does not fit an {} key", key.key_type)));
        }
    }
    key.alg = alg;
    key.kid = kid;
    Ok(key)
}

/// Parses a JWK set (`{"keys": [...]}`) or a single JWK object. The JSON must be valid with no
/// duplicate member names; each key is then checked on its own, and a key that fails lands in
/// [`JwkSet::skipped`] with its reason.
pub fn parse_jwk_set(bytes: &[u8]) -> Result<JwkSet, JoseError> {
    let v = json::parse_strict(bytes).map_err(|e| JoseError::MalformedKeySet(e.to_string()))?;
    let list: Vec<Value> = match v {
        Value::Object(mut o) if o.contains_key("keys") => match o.remove("keys") {
            Some(Value::Array(a)) => a,
            _ => return Err(JoseError::MalformedKeySet("keys is not an array".into())),
        },
        Value::Object(o) if o.contains_key("kty") => vec![Value::Object(o)],
        _ => return Err(JoseError::MalformedKeySet("expected {\"keys\": [...]} or one JWK object".into())),
    };
    let mut set = JwkSet::default();
    let mut seen = HashSet::new();
    for (index, k) in list.iter().enumerate() {
        let kid = k.get("kid").and_then(Value::as_str).map(str::to_owned);
        if let Some(id) = &kid {
            if !seen.insert(id.clone()) {
                set.duplicate_kids.insert(id.clone());
            }
        }
        let parsed = match k {
            Value::Object(o) => parse_key(o),
            _ => Err(bad("not a JSON object".into())),
        };
        match parsed {
            Ok(key) => set.keys.push(key),
            Err(JoseError::BadKey(reason)) => set.skipped.push(SkippedKey { index, kid, reason }),
            Err(other) => set.skipped.push(SkippedKey { index, kid, reason: other.to_string() }),
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        let mut v = Vec::new();
        der_len(&mut v, 5);
        der_len(&mut v, 200);
        der_len(&mut v, 300);
        assert_eq!(v, vec![5, 0x81, 200, 0x82, 1, 44]);
        let mut v = Vec::new();
        der_uint(&mut v, &[0x80]);
        der_uint(&mut v, &[0x01, 0x00, 0x01]);
        assert_eq!(v, vec![2, 2, 0, 0x80, 2, 3, 1, 0, 1]);
    }

    /// The predicate on its definition: any power of 65537 is in the subgroup modulo every prime,
    /// so it is flagged; a number with a residue outside the subgroup for one prime is not. (The
    /// Wycheproof JWK vectors hold a real ROCA modulus: tests/vectors.rs.)
    #[test]
    fn roca_fingerprint() {
        // Big-endian bytes of 65537^k by schoolbook multiplication.
        fn pow(k: u32) -> Vec<u8> {
            let mut n = vec![1u8];
            for _ in 0..k {
                let mut carry = 0u32;
                for b in n.iter_mut().rev() {
                    let v = u32::from(*b) * 65537 + carry;
                    *b = (v & 0xff) as u8;
                    carry = v >> 8;
                }
                while carry > 0 {
                    n.insert(0, (carry & 0xff) as u8);
                    carry >>= 8;
                }
            }
            n
        }
        for k in [1, 2, 17, 200] {
            assert!(roca_vulnerable(&pow(k)), "65537^{k}");
        }
        // A multiple of 7 is 0 modulo 7: outside every multiplicative group.
        assert!(!roca_vulnerable(&[14]));
        assert!(!roca_vulnerable(&[7]));
        // A product of two numbers: 65537^3 * 11 fails mod 11 (residue 0).
        let mut n = pow(3);
        let mut carry = 0u32;
        for b in n.iter_mut().rev() {
            let v = u32::from(*b) * 11 + carry;
            *b = (v & 0xff) as u8;
            carry = v >> 8;
        }
        n.insert(0, carry as u8);
        assert!(!roca_vulnerable(&n));
    }

    #[test]
    fn key_rules() {
        let n = {
            let mut n = vec![0xc5u8; 256];
            n[255] = 0x01;
            n
        };
        let cases: Vec<(Vec<u8>, Vec<u8>, &str)> = vec![
            (n[..128].to_vec(), vec![1, 0, 1], "1024 bits is too small"),
            (vec![0xff; 1025], vec![1, 0, 1], "8200 bits is too large"),
            (n.clone(), vec![1], "exponent 1 is not allowed"),
            (n.clone(), vec![1, 0, 0], "exponent 65536 is not allowed"),
            (n.clone(), vec![1, 0, 0, 0, 1], "longer than 32 bits"),
            ({
                let mut m = n.clone();
                m[255] = 2;
                m
            }, vec![3], "even"),
        ];
        for (n, e, want) in cases {
            let err = Jwk::rsa(&n, &e).unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
        assert!(Jwk::ec(Curve::P256, &[4; 65]).unwrap_err().to_string().contains("not on curve P-256"));
        assert!(Jwk::ec(Curve::P256, &[4; 97]).is_err());
        assert!(Jwk::ed25519(&[0; 31]).is_err());
    }

    #[test]
    fn set_rules() {
        let set = parse_jwk_set(
            br#"{"keys":[
                {"kty":"oct","k":"c2VjcmV0","kid":"h"},
                {"kty":"EC","crv":"P-256","x":"AA","y":"AA","kid":"short"},
                {"kty":"EC","crv":"secp256k1","x":"AA","y":"AA"},
                {"kty":"OKP","crv":"X25519","x":"AA"},
                {"kty":"RSA","n":"AQAB","e":"AQAB","use":"enc"},
                {"kty":"RSA","n":"AQAB","e":"AQAB","key_ops":["sign"]},
                {"kty":"RSA","n":"AQAB","e":"AQAB","alg":"RSA-OAEP"},
                {"kty":"RSA","n":"AQAB","e":"AQAB","alg":"HS256"},
                {"kty":"RSA","n":"AQAB","e":"AQAB","d":"AQAB"},
                {"kty":"RSA","n":"AQAB=","e":"AQAB"},
                {"kty":"RSA","e":"AQAB"},
                {"kty":"DSA"},
                {"kid":5,"kty":"RSA"},
                "key",
                {"kid":"h","kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","alg":"ES256"}
            ]}"#,
        )
        .unwrap();
        assert!(set.keys.is_empty());
        let reasons: Vec<String> = set.skipped.iter().map(ToString::to_string).collect();
        let want = [
            "key 0 (h): symmetric (oct) key: HMAC is never accepted",
            "key 1 (short): P-256 coordinates are 32 bytes, not 1 and 1",
            "key 2 (no kid): EC curve \"secp256k1\" is not supported",
            "key 3 (no kid): OKP curve \"X25519\" is not supported",
            "key 4 (no kid): use is \"enc\", not \"sig\"",
            "key 5 (no kid): key_ops does not include \"verify\"",
            "key 6 (no kid): alg: algorithm \"RSA-OAEP\" is not supported",
            "key 7 (no kid): alg: algorithm HS256 is not allowed: HMAC",
            "key 8 (no kid): the key contains private key material (d)",
            "key 9 (no kid): n is not base64url",
            "key 10 (no kid): n is missing",
            "key 11 (no kid): key type \"DSA\" is not supported",
            "key 12 (no kid): kid is not a string",
            "key 13 (no kid): not a JSON object",
            "key 14 (h): alg ES256 does not fit an OKP Ed25519 key",
        ];
        assert_eq!(reasons.len(), want.len(), "{reasons:#?}");
        for (got, want) in reasons.iter().zip(want) {
            assert!(got.starts_with(want), "{got} / {want}");
        }
        assert!(set.duplicate_kids.contains("h"));

        let one = parse_jwk_set(br#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"e"}"#).unwrap();
        assert_eq!((one.keys.len(), one.keys[0].kid.as_deref(), one.keys[0].describe()), (1, Some("e"), "OKP Ed25519".to_owned()));
        for bad in [&b"[]"[..], b"{}", br#"{"keys":{}}"#, br#"{"keys":[],"keys":[]}"#, b"{"] {
            assert!(matches!(parse_jwk_set(bad), Err(JoseError::MalformedKeySet(_))), "{}", String::from_utf8_lossy(bad));
        }
    }
}
