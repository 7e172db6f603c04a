//! The registry's own bearer tokens (Docker token spec): ES256 JWTs signed with a P-256 key that
//! lives in the metadata store (so replicas share it), carrying the granted `access` entries.
//! Verification is cached by token, so a request pays for the signature check once per token.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::Engine as _;
use berth_access::Access;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::PrincipalKind;

/// Why a registry token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the registry token has expired; request a new one")]
    Expired,
    #[error("the registry token is invalid: {0}")]
    Invalid(String),
    #[error("the registry signing key is unusable: {0}")]
    Key(String),
}

/// The claims of a registry token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    pub access: Vec<Access>,
    pub kind: PrincipalKind,
    /// For tokens issued from a federated OIDC token: where it came from (for the audit log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<TokenOrigin>,
}

/// The login a registry token was issued from: a federated workload's (provider, robots, the
/// OIDC token's `sub`/`jti`/claims), or a person's (provider and `sub` when they came through
/// one, no robots) and the Berth token they used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenOrigin {
    /// The identity provider.
    pub idp: String,
    /// The matching robots.
    pub robots: Vec<String>,
    /// `sub` and `jti` of the OIDC token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The provider's identifying claims.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The id of the Berth token (personal access token, `berth login`, browser session) the
    /// login used: registry tokens issued from it stop when it is revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// An issued token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
    pub issued_at: u64,
}

/// Issues and verifies registry tokens.
pub struct TokenIssuer {
    issuer: String,
    service: String,
    ttl: Duration,
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    cache: quick_cache::sync::Cache<String, Arc<RegistryClaims>>,
}

/// Generates a new P-256 signing key as PKCS#8 DER, base64 encoded (for the settings table).
pub fn generate_signing_key() -> Result<String, TokenError> {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map_err(|e| TokenError::Key(e.to_string()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(doc.as_ref()))
}

fn now() -> u64 {
    crate::clock::now_unsigned()
}

impl TokenIssuer {
    /// `key_b64` is from [`generate_signing_key`]. `issuer` names Berth in `iss`; `service` is the
    /// `service` of the token flow and the token's audience.
    pub fn new(key_b64: &str, issuer: &str, service: &str, ttl: Duration) -> Result<TokenIssuer, TokenError> {
        let der = base64::engine::general_purpose::STANDARD
            .decode(key_b64.trim())
            .map_err(|e| TokenError::Key(e.to_string()))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).map_err(|e| TokenError::Key(e.to_string()))?;
        let public = pair.public_key().as_ref();
        if public.len() != 65 || public[0] != 4 {
            return Err(TokenError::Key("unexpected public key encoding".into()));
        }
        let b64u = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let decoding = DecodingKey::from_ec_components(&b64u.encode(&public[1..33]), &b64u.encode(&public[33..65]))
            .map_err(|e| TokenError::Key(e.to_string()))?;
        let encoding = EncodingKey::from_ec_der(&der);
        let kid = {
            use sha2::Digest as _;
            let h = sha2::Sha256::digest(public);
            b64u.encode(&h[..12])
        };
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[service]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "nbf"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        Ok(TokenIssuer {
            issuer: issuer.to_owned(),
            service: service.to_owned(),
            ttl,
            kid,
            encoding,
            decoding,
            validation,
            cache: quick_cache::sync::Cache::new(16_384),
        })
    }

    /// The `iss` of registry tokens (not a URL, so it never collides with an OIDC issuer).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn service(&self) -> &str {
        &self.service
    }
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Signs a token for `subject` with `access`. `not_after` caps the expiry (a token is never
    /// valid longer than the credential it came from, when that credential expires).
    pub fn issue(&self, subject: &str, kind: PrincipalKind, access: Vec<Access>, not_after: Option<u64>) -> Result<IssuedToken, TokenError> {
        self.issue_with_origin(subject, kind, access, not_after, None)
    }

    /// [`TokenIssuer::issue`] for a federated login, recording its origin in the token.
    pub fn issue_with_origin(
        &self,
        subject: &str,
        kind: PrincipalKind,
        access: Vec<Access>,
        not_after: Option<u64>,
        origin: Option<TokenOrigin>,
    ) -> Result<IssuedToken, TokenError> {
        let iat = now();
        let mut exp = iat + self.ttl.as_secs();
        if let Some(cap) = not_after {
            exp = exp.min(cap);
        }
        let claims = RegistryClaims {
            iss: self.issuer.clone(),
            sub: subject.to_owned(),
            aud: self.service.clone(),
            exp,
            nbf: iat.saturating_sub(1),
            iat,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            access,
            kind,
            origin,
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(|e| TokenError::Key(e.to_string()))?;
        Ok(IssuedToken { token, expires_in: exp.saturating_sub(iat), issued_at: iat })
    }

    /// Verifies a token: ES256 only, our issuer and audience, within its lifetime. Cached.
    pub fn verify(&self, token: &str) -> Result<Arc<RegistryClaims>, TokenError> {
        if let Some(claims) = self.cache.get(token) {
            if claims.exp + self.validation.leeway < now() {
                self.cache.remove(token);
                return Err(TokenError::Expired);
            }
            return Ok(claims);
        }
        if token.len() > 16 * 1024 {
            return Err(TokenError::Invalid("token too large".into()));
        }
        let data = jsonwebtoken::decode::<RegistryClaims>(token, &self.decoding, &self.validation).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                other => TokenError::Invalid(format!("{other:?}")),
            }
        })?;
        let claims = Arc::new(data.claims);
        self.cache.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_access::parse_scope;

    fn issuer() -> TokenIssuer {
        TokenIssuer::new(&generate_signing_key().unwrap(), "berth", "registry.test", Duration::from_secs(900)).unwrap()
    }

    #[test]
    fn issue_and_verify() {
        let t = issuer();
        let access = parse_scope("repository:a/b:pull,push");
        let issued = t.issue("admin", PrincipalKind::User, access.clone(), None).unwrap();
        assert_eq!(issued.expires_in, 900);
        let c = t.verify(&issued.token).unwrap();
        assert_eq!(c.sub, "admin");
        assert_eq!(c.access, access);
        // cached path gives the same
        assert_eq!(t.verify(&issued.token).unwrap(), c);
        let capped = t.issue("x", PrincipalKind::User, vec![], Some(now() + 60)).unwrap();
        assert!(capped.expires_in <= 60);
    }

    #[test]
    fn refuses_foreign_and_tampered_tokens() {
        let a = issuer();
        let b = issuer();
        let tok = b.issue("admin", PrincipalKind::User, vec![], None).unwrap().token;
        assert!(matches!(a.verify(&tok), Err(TokenError::Invalid(_))), "other key");
        let mut parts: Vec<String> = a.issue("u", PrincipalKind::User, vec![], None).unwrap().token.split('.').map(str::to_owned).collect();
        let b64u = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut payload: serde_json::Value = serde_json::from_slice(&b64u.decode(&parts[1]).unwrap()).unwrap();
        payload["sub"] = "admin".into();
        parts[1] = b64u.encode(payload.to_string());
        assert!(a.verify(&parts.join(".")).is_err(), "tampered payload");
        // alg none
        let none = format!("{}.{}.", b64u.encode(r#"{"alg":"none","typ":"JWT"}"#), parts[1]);
        assert!(a.verify(&none).is_err());
        // wrong audience
        let other_aud = TokenIssuer::new(&generate_signing_key().unwrap(), "berth", "other", Duration::from_secs(60)).unwrap();
        let tok = other_aud.issue("u", PrincipalKind::User, vec![], None).unwrap().token;
        assert!(a.verify(&tok).is_err());
        assert!(a.verify("garbage").is_err());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let t = TokenIssuer::new(&generate_signing_key().unwrap(), "berth", "svc", Duration::from_secs(0)).unwrap();
        let tok = t.issue("u", PrincipalKind::User, vec![], Some(now().saturating_sub(100))).unwrap().token;
        assert_eq!(t.verify(&tok), Err(TokenError::Expired));
    }
}
