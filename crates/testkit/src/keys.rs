//! Signing keys of the test issuer: generation (RSA from fixed test-only keys first), their public
//! JWK, RFC 7638 thumbprints, PKCS#8 PEM import and export, and signing for every JWS algorithm a
//! test may want to put in a header (including deliberately wrong ones).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Map, Value};

/// The kind of a signing key; each has one natural JWS algorithm ([`KeyKind::alg`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// RSA 2048 bits, RS256.
    Rsa2048,
    /// RSA 3072 bits, RS256.
    Rsa3072,
    /// ECDSA on P-256, ES256.
    EcP256,
    /// ECDSA on P-384, ES384.
    EcP384,
    /// Ed25519, EdDSA.
    Ed25519,
}

impl KeyKind {
    /// Every kind, for tests that loop over them.
    pub const ALL: [KeyKind; 5] =
        [KeyKind::Rsa2048, KeyKind::Rsa3072, KeyKind::EcP256, KeyKind::EcP384, KeyKind::Ed25519];

    /// The JWS algorithm this key signs with by default.
    pub fn alg(self) -> &'static str {
        match self {
            KeyKind::Rsa2048 | KeyKind::Rsa3072 => "RS256",
            KeyKind::EcP256 => "ES256",
            KeyKind::EcP384 => "ES384",
            KeyKind::Ed25519 => "EdDSA",
        }
    }

    /// The name used on the command line and in a state directory.
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Rsa2048 => "rsa",
            KeyKind::Rsa3072 => "rsa3072",
            KeyKind::EcP256 => "ec256",
            KeyKind::EcP384 => "ec384",
            KeyKind::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KeyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "rsa" | "rsa2048" | "rs256" => Ok(KeyKind::Rsa2048),
            "rsa3072" => Ok(KeyKind::Rsa3072),
            "ec" | "ec256" | "p256" | "p-256" | "es256" => Ok(KeyKind::EcP256),
            "ec384" | "p384" | "p-384" | "es384" => Ok(KeyKind::EcP384),
            "ed25519" | "eddsa" => Ok(KeyKind::Ed25519),
            other => Err(format!("unknown key kind {other:?} (use rsa, rsa3072, ec256, ec384 or ed25519)")),
        }
    }
}

/// Fixed RSA keys (test-only, see `testdata/README.md`), handed out once each per process so that
/// two issuers of one process never share a key.
const RSA2048: [&str; 4] = [
    include_str!("../testdata/rsa2048-1.pem"),
    include_str!("../testdata/rsa2048-2.pem"),
    include_str!("../testdata/rsa2048-3.pem"),
    include_str!("../testdata/rsa2048-4.pem"),
];
const RSA3072: [&str; 2] = [include_str!("../testdata/rsa3072-1.pem"), include_str!("../testdata/rsa3072-2.pem")];
static NEXT_RSA2048: AtomicUsize = AtomicUsize::new(0);
static NEXT_RSA3072: AtomicUsize = AtomicUsize::new(0);

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A private signing key with its key id and, for the GitHub flavour, a self-signed certificate
/// (published as `x5c`/`x5t` like GitHub's JWKS).
pub struct Key {
    kind: KeyKind,
    kid: String,
    pkcs8: Vec<u8>,
    pair: Pair,
    cert_der: Option<Vec<u8>>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key").field("kind", &self.kind).field("kid", &self.kid).finish_non_exhaustive()
    }
}

/// Why a key could not be loaded or signed with.
#[derive(Debug)]
pub struct KeyError(pub String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

fn err(what: impl fmt::Display) -> KeyError {
    KeyError(what.to_string())
}

impl Key {
    /// A new key of this kind whose kid is its RFC 7638 thumbprint. RSA keys come from the fixed
    /// test keys (`testdata/`) until this process has used them all, then from aws-lc-rs.
    ///
    /// # Panics
    /// If aws-lc-rs fails to generate a key (it does not in practice).
    pub fn generate(kind: KeyKind) -> Key {
        Key::make(kind, false)
    }

    /// A new key of this kind, never one of the fixed test keys (RSA generation takes about
    /// 0.1 s for 2048 bits and 0.7 s for 3072). For long-running issuers such as the binary's.
    pub fn generate_fresh(kind: KeyKind) -> Key {
        Key::make(kind, true)
    }

    fn make(kind: KeyKind, fresh: bool) -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = match kind {
            KeyKind::Rsa2048 => {
                let fixed = if fresh { None } else { fixed_rsa(&RSA2048, &NEXT_RSA2048) };
                fixed.unwrap_or_else(|| generated_rsa(KeySize::Rsa2048))
            }
            KeyKind::Rsa3072 => {
                let fixed = if fresh { None } else { fixed_rsa(&RSA3072, &NEXT_RSA3072) };
                fixed.unwrap_or_else(|| generated_rsa(KeySize::Rsa3072))
            }
            KeyKind::EcP256 => generated(EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)),
            KeyKind::EcP384 => generated(EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng)),
            KeyKind::Ed25519 => generated(Ed25519KeyPair::generate_pkcs8v1(&rng)),
        };
        match Key::from_pkcs8_der(kind, &pkcs8, None) {
            Ok(key) => key,
            Err(e) => panic!("a freshly generated {kind} key does not load: {e}"),
        }
    }

    /// Loads a PKCS#8 DER private key of this kind; `kid` None means the RFC 7638 thumbprint.
    pub fn from_pkcs8_der(kind: KeyKind, der: &[u8], kid: Option<String>) -> Result<Key, KeyError> {
        let pair = match kind {
            KeyKind::Rsa2048 | KeyKind::Rsa3072 => {
                let pair = RsaKeyPair::from_pkcs8(der).map_err(err)?;
                let bits = pair.public_modulus_len() * 8;
                let want = if kind == KeyKind::Rsa2048 { 2048 } else { 3072 };
                if bits != want {
                    return Err(err(format!("the RSA key has {bits} bits, not {want}")));
                }
                Pair::Rsa(pair)
            }
            KeyKind::EcP256 => Pair::Ec(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).map_err(err)?),
            KeyKind::EcP384 => Pair::Ec(EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, der).map_err(err)?),
            KeyKind::Ed25519 => Pair::Ed(Ed25519KeyPair::from_pkcs8(der).map_err(err)?),
        };
        let mut key = Key { kind, kid: String::new(), pkcs8: der.to_vec(), pair, cert_der: None };
        key.kid = kid.unwrap_or_else(|| key.thumbprint());
        Ok(key)
    }

    /// Loads a PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`) private key of this kind.
    pub fn from_pkcs8_pem(kind: KeyKind, pem: &str, kid: Option<String>) -> Result<Key, KeyError> {
        match PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(err)? {
            PrivateKeyDer::Pkcs8(der) => Key::from_pkcs8_der(kind, der.secret_pkcs8_der(), kid),
            _ => Err(err("not a PKCS#8 private key (BEGIN PRIVATE KEY)")),
        }
    }

    /// The private key as PKCS#8 PEM.
    pub fn to_pkcs8_pem(&self) -> String {
        let b64 = STANDARD.encode(&self.pkcs8);
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        pem
    }

    /// The same key under another key id.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Key {
        self.kid = kid.into();
        self
    }

    /// Adds a self-signed certificate of this key (CN `berth-testkit <kid>`), published in the JWK
    /// as `x5c` and `x5t` the way GitHub's JWKS does.
    ///
    /// # Panics
    /// If rcgen cannot sign with this key (it can for every [`KeyKind`]).
    #[must_use]
    pub fn with_self_signed_cert(mut self) -> Key {
        let alg = match self.kind {
            KeyKind::Rsa2048 | KeyKind::Rsa3072 => &rcgen::PKCS_RSA_SHA256,
            KeyKind::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::EcP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyKind::Ed25519 => &rcgen::PKCS_ED25519,
        };
        let cert = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(self.pkcs8.as_slice()), alg)
            .and_then(|signer| {
                let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
                params.distinguished_name.push(rcgen::DnType::CommonName, format!("berth-testkit {}", self.kid));
                params.self_signed(&signer)
            });
        match cert {
            Ok(cert) => self.cert_der = Some(cert.der().to_vec()),
            Err(e) => panic!("cannot self-sign a certificate for a {} key: {e}", self.kind),
        }
        self
    }

    /// The key's kind.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The key id (`kid`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The natural algorithm (`alg` of the JWK and of tokens minted with this key).
    pub fn alg(&self) -> &'static str {
        self.kind.alg()
    }

    /// `x5t`: base64url SHA-1 of the certificate, when the key has one.
    pub fn x5t(&self) -> Option<String> {
        self.cert_der.as_ref().map(|der| {
            URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref())
        })
    }

    /// The public key in SubjectPublicKeyInfo DER.
    fn spki_der(&self) -> Vec<u8> {
        let der = match &self.pair {
            Pair::Rsa(p) => p.public_key().as_der().map(|d| d.as_ref().to_vec()),
            Pair::Ec(p) => p.public_key().as_der().map(|d| d.as_ref().to_vec()),
            Pair::Ed(p) => p.public_key().as_der().map(|d| d.as_ref().to_vec()),
        };
        der.unwrap_or_default()
    }

    /// base64url SHA-256 of the SubjectPublicKeyInfo DER: the kid a Kubernetes API server gives
    /// its service-account signing keys.
    pub fn spki_sha256(&self) -> String {
        URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, &self.spki_der()).as_ref())
    }

    /// The public key as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), e.g. for algorithm-confusion
    /// tests that use it as an HMAC secret.
    pub fn public_key_pem(&self) -> String {
        let b64 = STANDARD.encode(self.spki_der());
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }

    /// The required public members of the JWK (RFC 7638 order: sorted).
    fn public_members(&self) -> Map<String, Value> {
        let mut m = Map::new();
        match &self.pair {
            Pair::Rsa(p) => {
                let public = p.public_key();
                m.insert("e".into(), URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()).into());
                m.insert("kty".into(), "RSA".into());
                m.insert("n".into(), URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()).into());
            }
            Pair::Ec(p) => {
                // Uncompressed point: 0x04 || x || y.
                let point = p.public_key().as_ref();
                let n = (point.len() - 1) / 2;
                let crv = if self.kind == KeyKind::EcP256 { "P-256" } else { "P-384" };
                m.insert("crv".into(), crv.into());
                m.insert("kty".into(), "EC".into());
                m.insert("x".into(), URL_SAFE_NO_PAD.encode(&point[1..=n]).into());
                m.insert("y".into(), URL_SAFE_NO_PAD.encode(&point[1 + n..]).into());
            }
            Pair::Ed(p) => {
                m.insert("crv".into(), "Ed25519".into());
                m.insert("kty".into(), "OKP".into());
                m.insert("x".into(), URL_SAFE_NO_PAD.encode(p.public_key().as_ref()).into());
            }
        }
        m
    }

    /// The RFC 7638 JWK thumbprint (base64url SHA-256 of the canonical required members).
    pub fn thumbprint(&self) -> String {
        let canonical = Value::Object(self.public_members()).to_string();
        URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// The public JWK: `kty`, `kid`, `alg`, `use: "sig"`, the public parameters and, with a
    /// certificate, `x5c` and `x5t`.
    pub fn jwk(&self) -> Value {
        let mut m = self.public_members();
        m.insert("kid".into(), self.kid.clone().into());
        m.insert("alg".into(), self.alg().into());
        m.insert("use".into(), "sig".into());
        if let (Some(der), Some(x5t)) = (&self.cert_der, self.x5t()) {
            m.insert("x5c".into(), json!([STANDARD.encode(der)]));
            m.insert("x5t".into(), x5t.into());
        }
        Value::Object(m)
    }

    /// Signs `input` as the JWS algorithm `alg` says, whatever the key:
    /// - the key's own algorithms: RS256/384/512 and PS256/384/512 (RSA), ES256 (P-256),
    ///   ES384 (P-384), EdDSA (Ed25519);
    /// - `none`: an empty signature;
    /// - HS256/384/512: HMAC keyed with [`Key::public_key_pem`] (the algorithm-confusion attack);
    /// - any other name: the key's own algorithm, so the header lies about it.
    pub fn sign(&self, alg: &str, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        let hmac_alg = match alg {
            "none" => return Vec::new(),
            "HS256" => Some(hmac::HMAC_SHA256),
            "HS384" => Some(hmac::HMAC_SHA384),
            "HS512" => Some(hmac::HMAC_SHA512),
            _ => None,
        };
        if let Some(h) = hmac_alg {
            let key = hmac::Key::new(h, self.public_key_pem().as_bytes());
            return hmac::sign(&key, input).as_ref().to_vec();
        }
        let signed = match &self.pair {
            Pair::Rsa(p) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    "PS512" => &signature::RSA_PSS_SHA512,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0; p.public_modulus_len()];
                p.sign(padding, &rng, input, &mut sig).map(|()| sig)
            }
            Pair::Ec(p) => p.sign(&rng, input).map(|s| s.as_ref().to_vec()),
            Pair::Ed(p) => Ok(p.sign(input).as_ref().to_vec()),
        };
        match signed {
            Ok(sig) => sig,
            Err(e) => panic!("aws-lc-rs failed to sign with a {} key: {e}", self.kind),
        }
    }
}

fn generated(doc: Result<aws_lc_rs::pkcs8::Document, aws_lc_rs::error::Unspecified>) -> Vec<u8> {
    match doc {
        Ok(doc) => doc.as_ref().to_vec(),
        Err(e) => panic!("key generation failed: {e}"),
    }
}

/// The next unused fixed key of a pool, if any is left.
fn fixed_rsa(pool: &[&str], next: &AtomicUsize) -> Option<Vec<u8>> {
    let pem = pool.get(next.fetch_add(1, Ordering::Relaxed))?;
    match PrivateKeyDer::from_pem_slice(pem.as_bytes()) {
        Ok(PrivateKeyDer::Pkcs8(der)) => Some(der.secret_pkcs8_der().to_vec()),
        _ => None,
    }
}

fn generated_rsa(size: KeySize) -> Vec<u8> {
    let pair = match RsaKeyPair::generate(size) {
        Ok(pair) => pair,
        Err(e) => panic!("RSA key generation failed: {e}"),
    };
    match pair.as_der() {
        Ok(der) => der.as_ref().to_vec(),
        Err(e) => panic!("RSA key export failed: {e}"),
    }
}

/// A GitHub-style key id (a UUID shape, like `38826b17-6a30-5f9b-b169-8beb8202f723`) derived from
/// the key's thumbprint, so it is stable for a given key.
pub fn uuid_kid(key: &Key) -> String {
    let h = digest::digest(&digest::SHA256, key.thumbprint().as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x50; // version 5 shape, as GitHub's kids have
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(b).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_kind_round_trips_through_pem_and_keeps_its_thumbprint() {
        for kind in KeyKind::ALL {
            let key = Key::generate(kind);
            assert_eq!(key.kid(), key.thumbprint());
            let again = Key::from_pkcs8_pem(kind, &key.to_pkcs8_pem(), Some("k".into())).unwrap();
            assert_eq!(again.thumbprint(), key.thumbprint());
            assert_eq!(again.kid(), "k");
            assert_eq!(key.jwk()["alg"], kind.alg());
            assert_eq!(kind.name().parse::<KeyKind>().unwrap(), kind);
        }
    }

    #[test]
    fn rfc7638_thumbprint_example() {
        // RFC 7638 section 3.1: the thumbprint of the example RSA key.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let canonical = json!({"e": "AQAB", "kty": "RSA", "n": n}).to_string();
        let t = URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref());
        assert_eq!(t, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn fixed_rsa_keys_are_distinct_and_a_uuid_kid_is_stable() {
        let a = Key::generate(KeyKind::Rsa2048);
        let b = Key::generate(KeyKind::Rsa2048);
        assert_ne!(a.thumbprint(), b.thumbprint());
        assert_eq!(uuid_kid(&a), uuid_kid(&a));
        assert_eq!(uuid_kid(&a).len(), 36);
        let fresh = Key::generate_fresh(KeyKind::Rsa2048);
        for pem in RSA2048 {
            let fixed = Key::from_pkcs8_pem(KeyKind::Rsa2048, pem, None).unwrap();
            assert_ne!(fixed.thumbprint(), fresh.thumbprint());
        }
        assert!(Key::from_pkcs8_pem(KeyKind::Rsa3072, RSA2048[0], None).is_err(), "the size is checked");
    }

    #[test]
    fn self_signed_certificate_gives_x5c_and_x5t() {
        for kind in [KeyKind::Rsa2048, KeyKind::EcP256, KeyKind::Ed25519] {
            let key = Key::generate(kind).with_self_signed_cert();
            let jwk = key.jwk();
            assert_eq!(jwk["x5t"], key.x5t().unwrap());
            assert_eq!(jwk["x5c"].as_array().unwrap().len(), 1);
        }
    }
}
