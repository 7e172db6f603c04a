//! Test issuers: freshly generated aws-lc-rs keys that sign compact JWS tokens with any header
//! (including broken ones) and publish their public key as a JWK.
#![allow(dead_code, clippy::unwrap_used)]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair, RsaEncoding, RsaKeyPair};
use base64::Engine as _;
use berth_jose::Algorithm;
use serde_json::{json, Value};

pub fn b64(b: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

pub enum Issuer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, &'static str, usize),
    Ed(Ed25519KeyPair),
}

impl Issuer {
    pub fn rsa() -> Issuer {
        Issuer::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).unwrap())
    }

    pub fn ec(crv: &str) -> Issuer {
        let (alg, name, len): (&'static EcdsaSigningAlgorithm, &'static str, usize) = match crv {
            "P-256" => (&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32),
            "P-384" => (&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48),
            _ => (&signature::ECDSA_P521_SHA512_FIXED_SIGNING, "P-521", 66),
        };
        let doc = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new()).unwrap();
        Issuer::Ec(EcdsaKeyPair::from_pkcs8(alg, doc.as_ref()).unwrap(), name, len)
    }

    pub fn ed25519() -> Issuer {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Issuer::Ed(Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap())
    }

    /// An issuer whose key fits `alg`.
    pub fn for_alg(alg: Algorithm) -> Issuer {
        match alg {
            Algorithm::ES256 => Issuer::ec("P-256"),
            Algorithm::ES384 => Issuer::ec("P-384"),
            Algorithm::ES512 => Issuer::ec("P-521"),
            Algorithm::EdDSA => Issuer::ed25519(),
            _ => Issuer::rsa(),
        }
    }

    /// The RSA modulus and exponent (big-endian).
    pub fn rsa_components(&self) -> (Vec<u8>, Vec<u8>) {
        match self {
            Issuer::Rsa(k) => {
                let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(k.public_key());
                (c.n, c.e)
            }
            _ => panic!("not an RSA issuer"),
        }
    }

    /// The public key as a JWK object, with extra members merged in (`null` removes one).
    pub fn jwk(&self, kid: Option<&str>, extra: Value) -> Value {
        let mut v = match self {
            Issuer::Rsa(_) => {
                let (n, e) = self.rsa_components();
                json!({"kty": "RSA", "n": b64(n), "e": b64(e)})
            }
            Issuer::Ec(k, crv, len) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "crv": crv, "x": b64(&p[1..1 + len]), "y": b64(&p[1 + len..])})
            }
            Issuer::Ed(k) => json!({"kty": "OKP", "crv": "Ed25519", "x": b64(k.public_key().as_ref())}),
        };
        if let Some(kid) = kid {
            v["kid"] = json!(kid);
        }
        for (k, x) in extra.as_object().into_iter().flatten() {
            if x.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = x.clone();
            }
        }
        v
    }

    /// A JWK set with this key only.
    pub fn jwks(&self, kid: &str) -> String {
        json!({"keys": [self.jwk(Some(kid), json!({"use": "sig"}))]}).to_string()
    }

    /// Signs `signing_input` with `alg` (which must fit the key).
    pub fn sign_bytes(&self, alg: Algorithm, input: &[u8]) -> Vec<u8> {
        match self {
            Issuer::Rsa(k) => {
                let enc: &'static dyn RsaEncoding = match alg {
                    Algorithm::RS256 => &signature::RSA_PKCS1_SHA256,
                    Algorithm::RS384 => &signature::RSA_PKCS1_SHA384,
                    Algorithm::RS512 => &signature::RSA_PKCS1_SHA512,
                    Algorithm::PS256 => &signature::RSA_PSS_SHA256,
                    Algorithm::PS384 => &signature::RSA_PSS_SHA384,
                    Algorithm::PS512 => &signature::RSA_PSS_SHA512,
                    other => panic!("{other} with an RSA key"),
                };
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(enc, &SystemRandom::new(), input, &mut sig).unwrap();
                sig
            }
            Issuer::Ec(k, ..) => k.sign(&SystemRandom::new(), input).unwrap().as_ref().to_vec(),
            Issuer::Ed(k) => k.sign(input).as_ref().to_vec(),
        }
    }

    /// A compact JWS of `header` and `payload` (raw JSON text, sent as is), signed with `alg`.
    pub fn sign(&self, alg: Algorithm, header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header), b64(payload));
        let sig = self.sign_bytes(alg, input.as_bytes());
        format!("{input}.{}", b64(sig))
    }
}
