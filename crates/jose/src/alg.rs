//! The JOSE signature algorithms Berth accepts (RFC 7518 §3, RFC 8037 §3.1) and the key each one
//! needs. Only asymmetric algorithms exist here: `none` and HMAC do not parse to an [`Algorithm`]
//! at all, so no code path can select them.

use aws_lc_rs::signature::{self, VerificationAlgorithm};

/// A supported JWS signature algorithm (all asymmetric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
    EdDSA,
}

impl Algorithm {
    /// Every supported algorithm, in a stable order.
    pub const ALL: [Algorithm; 10] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::ES512,
        Algorithm::EdDSA,
    ];

    /// The JOSE name (`RS256`, `EdDSA`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::ES512 => "ES512",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// The key type (and curve) this algorithm needs: ES256 needs P-256, ES384 P-384, ES512 P-521,
    /// EdDSA Ed25519 (the only OKP curve supported), RS*/PS* an RSA key.
    pub fn key_type(self) -> KeyType {
        match self {
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512 => {
                KeyType::Rsa
            }
            Algorithm::ES256 => KeyType::Ec(Curve::P256),
            Algorithm::ES384 => KeyType::Ec(Curve::P384),
            Algorithm::ES512 => KeyType::Ec(Curve::P521),
            Algorithm::EdDSA => KeyType::Okp(OkpCurve::Ed25519),
        }
    }

    /// The aws-lc-rs primitive. RSA moduli of 2048-8192 bits only; ECDSA signatures in the fixed
    /// `r||s` form of JWS (RFC 7518 §3.4), whose length must be exact.
    pub(crate) fn verification(self) -> &'static dyn VerificationAlgorithm {
        match self {
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

    /// Index into per-algorithm caches.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an `alg` value is not a usable [`Algorithm`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlgorithmError {
    /// `none` in any letter case (RFC 8725 §2.1).
    #[error("algorithm {0:?} is never accepted: the token would be unsigned")]
    None(String),
    /// HS256/HS384/HS512: a shared secret, never usable with public keys (RFC 8725 §2.1).
    #[error("algorithm {0} is not allowed: HMAC is never accepted for federated tokens")]
    Hmac(String),
    #[error("algorithm {0:?} is not supported (supported: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA)")]
    Unknown(String),
}

impl std::str::FromStr for Algorithm {
    type Err = AlgorithmError;
    /// Exact, case-sensitive JOSE names (RFC 7515 §4.1.1). `none` (any case) and HMAC get their
    /// own errors so a refusal says why.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(a) = Algorithm::ALL.iter().find(|a| a.as_str() == s) {
            return Ok(*a);
        }
        if s.eq_ignore_ascii_case("none") {
            return Err(AlgorithmError::None(s.to_owned()));
        }
        if ["HS256", "HS384", "HS512"].iter().any(|h| h.eq_ignore_ascii_case(s)) {
            return Err(AlgorithmError::Hmac(s.to_owned()));
        }
        Err(AlgorithmError::Unknown(s.to_owned()))
    }
}

/// NIST curves for ECDSA keys (`kty` EC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    /// The JWK `crv` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    /// The length in bytes of one coordinate (and of `r` and `s` in a signature).
    pub fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// The one algorithm a key on this curve verifies.
    pub fn algorithm(self) -> Algorithm {
        match self {
            Curve::P256 => Algorithm::ES256,
            Curve::P384 => Algorithm::ES384,
            Curve::P521 => Algorithm::ES512,
        }
    }

    pub(crate) fn from_jwk(crv: &str) -> Option<Curve> {
        [Curve::P256, Curve::P384, Curve::P521].into_iter().find(|c| c.as_str() == crv)
    }
}

/// Octet key pair curves (`kty` OKP, RFC 8037): only Ed25519 signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OkpCurve {
    Ed25519,
}

impl OkpCurve {
    pub fn as_str(self) -> &'static str {
        match self {
            OkpCurve::Ed25519 => "Ed25519",
        }
    }
}

/// The kind of a verification key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    Rsa,
    Ec(Curve),
    Okp(OkpCurve),
}

impl std::fmt::Display for KeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyType::Rsa => f.write_str("RSA"),
            KeyType::Ec(c) => write!(f, "EC {}", c.as_str()),
            KeyType::Okp(c) => write!(f, "OKP {}", c.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_refusals_are_distinguished() {
        for a in Algorithm::ALL {
            assert_eq!(a.as_str().parse::<Algorithm>(), Ok(a));
            assert_eq!(a.to_string(), a.as_str());
            assert_eq!(Algorithm::ALL[a.index()], a);
        }
        for s in ["none", "None", "NONE", "nOnE"] {
            assert_eq!(s.parse::<Algorithm>(), Err(AlgorithmError::None(s.into())));
        }
        for s in ["HS256", "HS384", "HS512", "hs256"] {
            assert_eq!(s.parse::<Algorithm>(), Err(AlgorithmError::Hmac(s.into())));
        }
        for s in ["rs256", "ES521", "ES256K", "Ed25519", "RSA-OAEP", "", " RS256"] {
            assert_eq!(s.parse::<Algorithm>(), Err(AlgorithmError::Unknown(s.into())));
        }
        assert_eq!(
            "HS256".parse::<Algorithm>().unwrap_err().to_string(),
            "algorithm HS256 is not allowed: HMAC is never accepted for federated tokens"
        );
    }

    #[test]
    fn key_types() {
        assert_eq!(Algorithm::PS384.key_type(), KeyType::Rsa);
        assert_eq!(Algorithm::ES512.key_type(), KeyType::Ec(Curve::P521));
        assert_eq!(Algorithm::EdDSA.key_type().to_string(), "OKP Ed25519");
        for c in [Curve::P256, Curve::P384, Curve::P521] {
            assert_eq!(c.algorithm().key_type(), KeyType::Ec(c));
            assert_eq!(Curve::from_jwk(c.as_str()), Some(c));
        }
    }
}
