//! JSON Web Keys (RFC 7517/7518/8037) for signature verification: parsing a key set, refusing
//! weak or unusable keys one by one (with a reason, so one bad key does not kill the set), and
//! verifying signatures with aws-lc-rs. Parsed keys are cached inside the [`Jwk`].

use std::collections::HashSet;
use std::sync::OnceLock;

use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use serde_json::Value;

use crate::{b64url_decode, json, Algorithm, JoseError};

/// What kind of key a JWK is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa,
    EcP256,
    EcP384,
    EcP521,
    Ed25519,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Rsa => "RSA",
            KeyType::EcP256 => "EC P-256",
            KeyType::EcP384 => "EC P-384",
            KeyType::EcP521 => "EC P-521",
            KeyType::Ed25519 => "OKP Ed25519",
        }
    }
}

const RSA_ALGS: [Algorithm; 6] = [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::PS384, Algorithm::PS512];

/// A public key usable for verification.
pub struct Jwk {
    pub kid: Option<String>,
    /// The key's own `alg`, if it names one: then only that algorithm is accepted with it.
    pub alg: Option<Algorithm>,
    pub key_type: KeyType,
    /// RSA modulus size in bits (0 for other keys).
    pub bits: usize,
    /// PKCS#1 RSAPublicKey DER, an uncompressed EC point, or the raw Ed25519 key.
    bytes: Vec<u8>,
    /// Parsed keys per algorithm (RSA keys serve six algorithms).
    parsed: [OnceLock<Option<ParsedPublicKey>>; 6],
}

impl Clone for Jwk {
    fn clone(&self) -> Self {
        Jwk { kid: self.kid.clone(), alg: self.alg, key_type: self.key_type, bits: self.bits, bytes: self.bytes.clone(), parsed: Default::default() }
    }
}

impl std::fmt::Debug for Jwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwk").field("kid", &self.kid).field("alg", &self.alg).field("key_type", &self.key_type).field("bits", &self.bits).finish()
    }
}

/// A key that was left out of a set, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    pub index: usize,
    pub kid: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for SkippedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key {} ({}): {}", self.index, self.kid.as_deref().unwrap_or("no kid"), self.reason)
    }
}

/// A key set: the usable keys, the skipped ones, and key ids that appear more than once.
#[derive(Debug, Clone, Default)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
    pub skipped: Vec<SkippedKey>,
    /// Key ids used by more than one key (usable or not): tokens naming them are refused.
    pub duplicate_kids: HashSet<String>,
}

fn verification_algorithm(alg: Algorithm) -> &'static dyn VerificationAlgorithm {
    match alg {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
        Algorithm::ES512 => &signature::ECDSA_P521_SHA512_FIXED,
        Algorithm::EdDSA => &signature::ED25519,
    }
}

fn slot(alg: Algorithm) -> usize {
    RSA_ALGS.iter().position(|a| *a == alg).unwrap_or(0)
}

impl Jwk {
    /// A one-line description (`RSA 2048`, `EC P-256`).
    pub fn describe(&self) -> String {
        match self.key_type {
            KeyType::Rsa => format!("RSA {} bits{}", self.bits, self.alg.map(|a| format!(", alg {a}")).unwrap_or_default()),
            t => format!("{}{}", t.as_str(), self.alg.map(|a| format!(", alg {a}")).unwrap_or_default()),
        }
    }

    /// Whether this key may verify `alg`.
    pub fn check_alg(&self, alg: Algorithm) -> Result<(), JoseError> {
        let kid = self.kid.clone().unwrap_or_default();
        if alg.key_type() != self.key_type {
            return Err(JoseError::KeyMismatch { kid, alg: alg.to_string(), why: format!("it is a {} key", self.key_type.as_str()) });
        }
        // A key that names its algorithm is used with that algorithm only (RFC 8725 §3.1: one key,
        // one algorithm).
        if let Some(own) = self.alg {
            if own != alg {
                return Err(JoseError::KeyMismatch { kid, alg: alg.to_string(), why: format!("the key is for {own} only") });
            }
        }
        Ok(())
    }

    /// Verifies `signature` over `message` with `alg` (which must fit the key).
    pub fn verify_signature(&self, alg: Algorithm, message: &[u8], sig: &[u8]) -> bool {
        if self.check_alg(alg).is_err() {
            return false;
        }
        let parsed = self.parsed[slot(alg)].get_or_init(|| ParsedPublicKey::new(verification_algorithm(alg), &self.bytes).ok());
        match parsed {
            Some(k) => k.verify_sig(message, sig).is_ok(),
            None => false,
        }
    }

    /// Builds a key from its parts (tests; wycheproof primitive vectors).
    pub fn from_parts(key_type: KeyType, bytes: Vec<u8>, bits: usize) -> Jwk {
        Jwk { kid: None, alg: None, key_type, bits, bytes, parsed: Default::default() }
    }

    /// An RSA key from big-endian modulus and exponent.
    pub fn rsa(n: &[u8], e: &[u8]) -> Result<Jwk, String> {
        let n = strip_zeros(n);
        let e = strip_zeros(e);
        let bits = bit_len(n);
        if bits < 2048 {
            return Err(format!("RSA modulus of {bits} bits is too small (at least 2048)"));
        }
        if bits > 8192 {
            return Err(format!("RSA modulus of {bits} bits is too large (at most 8192)"));
        }
        if e.is_empty() || e.len() > 4 {
            return Err("RSA exponent is not a sane value".into());
        }
        let ev = e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        if ev < 3 || ev % 2 == 0 {
            return Err(format!("RSA exponent {ev} is not allowed (must be odd and at least 3)"));
        }
        if n.last().is_some_and(|b| b % 2 == 0) {
            return Err("RSA modulus is even".into());
        }
        if roca_vulnerable(n) {
            return Err("RSA modulus has the ROCA fingerprint (CVE-2017-15361): the private key can be recovered".into());
        }
        Ok(Jwk::from_parts(KeyType::Rsa, rsa_public_key_der(n, e), bits))
    }
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

fn der_uint(out: &mut Vec<u8>, v: &[u8]) {
    out.push(0x02);
    let pad = v.first().is_some_and(|b| b & 0x80 != 0);
    der_len(out, v.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(v);
}

/// PKCS#1 RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    der_uint(&mut body, n);
    der_uint(&mut body, e);
    let mut out = vec![0x30];
    der_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// The ROCA test (Nemec et al., CCS 2017): moduli made by the vulnerable Infineon library are,
/// modulo each of these small primes, in the subgroup generated by 65537.
fn roca_vulnerable(n: &[u8]) -> bool {
    const PRIMES: [u32; 38] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131,
        137, 139, 149, 151, 157, 163, 167,
    ];
    PRIMES.iter().all(|&p| {
        let r = n.iter().fold(0u32, |acc, b| (acc * 256 + u32::from(*b)) % p);
        let g = 65537 % p;
        let mut x = 1 % p;
        for _ in 0..p {
            if x == r {
                return true;
            }
            x = x * g % p;
        }
        false
    })
}

fn field<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Result<&'a str, String> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("{name} is not a string")),
        None => Err(format!("{name} is missing")),
    }
}

fn b64(obj: &serde_json::Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    b64url_decode(name, field(obj, name)?).map_err(|e| e.to_string())
}

fn parse_key(obj: &serde_json::Map<String, Value>) -> Result<Jwk, String> {
    if let Some(u) = obj.get("use") {
        if u.as_str() != Some("sig") {
            return Err(format!("use is {u}, not \"sig\""));
        }
    }
    if let Some(ops) = obj.get("key_ops") {
        let ops = ops.as_array().ok_or("key_ops is not an array")?;
        if !ops.iter().any(|o| o.as_str() == Some("verify")) {
            return Err("key_ops does not include \"verify\"".into());
        }
    }
    let alg = match obj.get("alg") {
        None => None,
        // "ES521" is a common misspelling of ES512 (the RFC 7520 P-521 key as Wycheproof carries it).
        Some(Value::String(a)) if a == "ES521" => Some(Algorithm::ES512),
        Some(Value::String(a)) => Some(a.parse::<Algorithm>().map_err(|_| format!("alg {a:?} is not a supported signature algorithm"))?),
        Some(_) => return Err("alg is not a string".into()),
    };
    let kty = field(obj, "kty")?;
    let mut key = match kty {
        "RSA" => Jwk::rsa(&b64(obj, "n")?, &b64(obj, "e")?)?,
        "EC" => {
            let (kt, len) = match field(obj, "crv")? {
                "P-256" => (KeyType::EcP256, 32),
                "P-384" => (KeyType::EcP384, 48),
                "P-521" => (KeyType::EcP521, 66),
                other => return Err(format!("curve {other:?} is not supported")),
            };
            let (x, y) = (b64(obj, "x")?, b64(obj, "y")?);
            if x.len() != len || y.len() != len {
                return Err(format!("EC coordinates must be {len} bytes"));
            }
            let mut point = vec![4u8];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let alg_for = match kt {
                KeyType::EcP256 => Algorithm::ES256,
                KeyType::EcP384 => Algorithm::ES384,
                _ => Algorithm::ES512,
            };
            ParsedPublicKey::new(verification_algorithm(alg_for), &point).map_err(|_| "the EC point is not on its curve".to_owned())?;
            Jwk::from_parts(kt, point, 0)
        }
        "OKP" => {
            let crv = field(obj, "crv")?;
            if crv != "Ed25519" {
                return Err(format!("OKP curve {crv:?} is not supported (Ed25519 only)"));
            }
            let x = b64(obj, "x")?;
            if x.len() != 32 {
                return Err("Ed25519 keys are 32 bytes".into());
            }
            Jwk::from_parts(KeyType::Ed25519, x, 0)
        }
        "oct" => return Err("symmetric (oct) keys are never used: HMAC is not accepted for federated tokens".into()),
        other => return Err(format!("key type {other:?} is not supported")),
    };
    if let Some(a) = alg {
        if a.key_type() != key.key_type {
            return Err(format!("alg {a} does not fit a {} key", key.key_type.as_str()));
        }
    }
    key.alg = alg;
    key.kid = match obj.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err("kid is not a string".into()),
    };
    Ok(key)
}

/// Parses a JWKS (`{"keys": [...]}`) or a single JWK. Private members are ignored: only the public
/// part of a key is used.
pub fn parse_jwk_set(bytes: &[u8]) -> Result<JwkSet, JoseError> {
    let v = json::parse_strict(bytes).map_err(|e| JoseError::Malformed(format!("JWKS: {e}")))?;
    let list: Vec<Value> = match v {
        Value::Object(mut o) if o.contains_key("keys") => match o.remove("keys") {
            Some(Value::Array(a)) => a,
            _ => return Err(JoseError::Malformed("JWKS: keys is not an array".into())),
        },
        Value::Object(o) if o.contains_key("kty") => vec![Value::Object(o)],
        _ => return Err(JoseError::Malformed("JWKS: expected {\"keys\": [...]} or one JWK".into())),
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
        let result = k.as_object().ok_or_else(|| "not a JSON object".to_owned()).and_then(parse_key);
        match result {
            Ok(key) => set.keys.push(key),
            Err(reason) => set.skipped.push(SkippedKey { index, kid, reason }),
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
    }
}
