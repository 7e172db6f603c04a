//! Compact JWS (RFC 7515 §7.1) decoding and verification, hardened per RFC 8725: exactly three
//! parts, a size limit, strict base64url, a header that is a JSON object with unique members, no
//! `none`/HMAC, no key named or embedded by the token (`jku`, `x5u`, `jwk`, `x5c`), no extensions
//! (`crit`, `b64`), and an algorithm that is both allowed for the identity provider and fits the
//! key that verifies it.
//!
//! Verification does not look at the payload: it is bytes. [`parse_claims`] reads a JWT claims
//! set (JSON object, duplicate member names refused at any depth).

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::{json, Algorithm, JoseError, Jwk, JwkSet};

/// Limits for untrusted tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted compact token, in bytes (default 16 KiB; CI tokens are 1-2 KiB).
    pub max_token_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_token_bytes: 16 * 1024 }
    }
}

/// At most this many keys are tried for a token without `kid`.
pub const MAX_KEYS_WITHOUT_KID: usize = 16;

/// A decoded JOSE header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub typ: Option<String>,
    pub cty: Option<String>,
    /// The whole header as sent (for `explain`).
    pub raw: Value,
}

/// A decoded token whose signature has not been checked.
#[derive(Debug, Clone)]
pub struct Unverified {
    pub header: Header,
    pub payload: Vec<u8>,
    /// `base64url(header) || '.' || base64url(payload)`, exactly as received.
    signing_input: String,
    signature: Vec<u8>,
}

impl Unverified {
    /// The JWS signing input: the first two parts of the token as received.
    pub fn signing_input(&self) -> &[u8] {
        self.signing_input.as_bytes()
    }

    pub fn signature(&self) -> &[u8] {
        &self.signature
    }
}

/// A token whose signature was verified.
#[derive(Debug, Clone)]
pub struct Verified {
    pub header: Header,
    pub payload: Vec<u8>,
    /// The `kid` of the key that verified it (if that key has one).
    pub kid: Option<String>,
}

/// Strict base64url without padding (RFC 7515 §2): refuses `=`, `+`, `/`, whitespace and
/// non-zero trailing bits, so each value has exactly one encoding.
pub fn b64url_decode(what: &str, s: &str) -> Result<Vec<u8>, JoseError> {
    const STRICT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(false),
    );
    STRICT.decode(s).map_err(|e| JoseError::Malformed(format!("the {what} is not base64url without padding ({e})")))
}

fn parse_header(bytes: &[u8]) -> Result<Header, JoseError> {
    let raw = json::parse_strict(bytes).map_err(|e| JoseError::Malformed(format!("header: {e}")))?;
    let obj = raw.as_object().ok_or_else(|| JoseError::Malformed("the header is not a JSON object".into()))?;
    let alg: Algorithm = match obj.get("alg") {
        Some(Value::String(a)) => a.parse()?,
        Some(_) => return Err(JoseError::Malformed("the header's alg is not a string".into())),
        None => return Err(JoseError::Malformed("the header has no alg".into())),
    };
    for h in ["jku", "x5u"] {
        if obj.contains_key(h) {
            return Err(JoseError::KeyUrlHeader(h));
        }
    }
    for h in ["jwk", "x5c"] {
        if obj.contains_key(h) {
            return Err(JoseError::EmbeddedKeyHeader(h));
        }
    }
    if let Some(crit) = obj.get("crit") {
        return Err(JoseError::Critical(crit.to_string()));
    }
    // RFC 7797: `b64` only means something with `crit`, but it is refused on its own too, so no
    // component can ever disagree with us about what was signed.
    if obj.contains_key("b64") {
        return Err(JoseError::UnencodedPayload);
    }
    let string = |name: &str| -> Result<Option<String>, JoseError> {
        match obj.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(JoseError::Malformed(format!("the header's {name} is not a string"))),
        }
    };
    Ok(Header { alg, kid: string("kid")?, typ: string("typ")?, cty: string("cty")?, raw })
}

/// Decodes a compact JWS without verifying it. Leading and trailing whitespace around the token
/// (a newline from a file) is ignored; anything else that is not strict base64url is refused.
pub fn decode(token: &str, limits: &Limits) -> Result<Unverified, JoseError> {
    let token = token.trim_ascii();
    if token.len() > limits.max_token_bytes {
        return Err(JoseError::TooLarge { len: token.len(), max: limits.max_token_bytes });
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        let n = token.split('.').count();
        return Err(JoseError::Malformed(format!(
            "a token in JWS compact form has exactly three dot-separated parts, this one has {n}{}",
            if n == 5 { " (an encrypted JWE is not accepted)" } else { "" }
        )));
    };
    let header = parse_header(&b64url_decode("header", h)?)?;
    let payload = b64url_decode("payload", p)?;
    let signature = b64url_decode("signature", s)?;
    if signature.is_empty() {
        return Err(JoseError::Malformed("the signature is empty".into()));
    }
    Ok(Unverified { header, payload, signing_input: token[..h.len() + 1 + p.len()].to_owned(), signature })
}

/// Parses a JWT claims set: a JSON object with no duplicate member names at any depth and at
/// most [`crate::MAX_DEPTH`] levels of nesting.
pub fn parse_claims(payload: &[u8]) -> Result<Map<String, Value>, JoseError> {
    match json::parse_strict(payload).map_err(|e| JoseError::Claims(e.to_string()))? {
        Value::Object(m) => Ok(m),
        _ => Err(JoseError::Claims("the claims set is not a JSON object".into())),
    }
}

/// Decodes the header and claims WITHOUT verifying anything: for routing by `iss`/`aud` and for
/// `explain`. Never authorize on its result.
pub fn peek_claims(token: &str, limits: &Limits) -> Result<(Header, Map<String, Value>), JoseError> {
    let u = decode(token, limits)?;
    let claims = parse_claims(&u.payload)?;
    Ok((u.header, claims))
}

/// Verifies `signature` over `signing_input` with `key` and `alg` (which must fit the key).
pub fn verify_signature(alg: Algorithm, key: &Jwk, signing_input: &[u8], signature: &[u8]) -> Result<(), JoseError> {
    key.verify_signature(alg, signing_input, signature)
}

/// Verifies a decoded token with the identity provider's keys and algorithm allow-list.
///
/// The header's `alg` must be in `allowed` and fit the key (type, curve, the key's own `alg`).
/// With a `kid`, only the key with exactly that id is used: none → [`JoseError::UnknownKid`] (the
/// caller may refetch the key set), several → [`JoseError::AmbiguousKid`], a skipped one →
/// [`JoseError::UnusableKey`]. Without a `kid`, each fitting key is tried (at most
/// [`MAX_KEYS_WITHOUT_KID`]).
pub fn verify(token: &Unverified, keys: &JwkSet, allowed: &[Algorithm]) -> Result<Verified, JoseError> {
    let alg = token.header.alg;
    if !allowed.contains(&alg) {
        return Err(JoseError::AlgorithmNotAllowed { alg, allowed: allowed.to_vec() });
    }
    let verified = |k: &Jwk| Verified { header: token.header.clone(), payload: token.payload.clone(), kid: k.kid.clone() };
    match &token.header.kid {
        Some(kid) => {
            if keys.duplicate_kids.contains(kid) {
                return Err(JoseError::AmbiguousKid(kid.clone()));
            }
            let mut same = keys.keys.iter().filter(|k| k.kid.as_deref() == Some(kid.as_str()));
            let key = match (same.next(), same.next()) {
                (Some(k), None) => k,
                (Some(_), Some(_)) => return Err(JoseError::AmbiguousKid(kid.clone())),
                (None, _) => {
                    if let Some(s) = keys.skipped.iter().find(|s| s.kid.as_deref() == Some(kid.as_str())) {
                        return Err(JoseError::UnusableKey { kid: kid.clone(), reason: s.reason.clone() });
                    }
                    let known = keys.keys.iter().filter_map(|k| k.kid.clone()).collect();
                    return Err(JoseError::UnknownKid { kid: kid.clone(), known });
                }
            };
            key.verify_signature(alg, token.signing_input(), &token.signature)?;
            Ok(verified(key))
        }
        None => {
            let mut fitting = keys.keys.iter().filter(|k| k.check_alg(alg).is_ok()).take(MAX_KEYS_WITHOUT_KID).peekable();
            if fitting.peek().is_none() {
                let keys = keys.keys.iter().map(|k| format!("{} ({})", k.kid.as_deref().unwrap_or("no kid"), k.describe())).collect();
                return Err(JoseError::NoCompatibleKey { alg, keys });
            }
            for k in fitting {
                if k.verify_signature(alg, token.signing_input(), &token.signature).is_ok() {
                    return Ok(verified(k));
                }
            }
            Err(JoseError::BadSignature)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn strict_base64url() {
        assert_eq!(b64url_decode("x", "Zm9v").unwrap(), b"foo");
        assert_eq!(b64url_decode("x", "").unwrap(), b"");
        assert_eq!(b64url_decode("x", "-_8").unwrap(), vec![0xfb, 0xff]);
        // "Zm9=" style padding, standard alphabet, whitespace, non-canonical trailing bits, a
        // length that cannot occur.
        for bad in ["Zm8=", "Zm9v=", "+/8", "Zm 9v", "Zm9v\n", "Zm9", "Zh", "Z"] {
            assert!(b64url_decode("x", bad).is_err(), "{bad:?}");
        }
        assert!(b64url_decode("x", "Zg").is_ok());
    }

    #[test]
    fn header_table() {
        let cases: Vec<(&str, Result<(), &str>)> = vec![
            (r#"{"alg":"ES256"}"#, Ok(())),
            (r#"{"alg":"RS256","kid":"k","typ":"JWT","x5t":"abc","x5t#S256":"def","cty":"x","zzz":1}"#, Ok(())),
            (r#"{"alg":"none"}"#, Err("alg_none")),
            (r#"{"alg":"nOnE"}"#, Err("alg_none")),
            (r#"{"alg":"HS256"}"#, Err("alg_hmac")),
            (r#"{"alg":"ES256K"}"#, Err("unsupported_algorithm")),
            (r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#, Err("unsupported_algorithm")),
            (r#"{"kid":"k"}"#, Err("malformed")),
            (r#"{"alg":5}"#, Err("malformed")),
            (r#"{"alg":"ES256","kid":5}"#, Err("malformed")),
            (r#"["alg","ES256"]"#, Err("malformed")),
            (r#"{"alg":"ES256","alg":"ES256"}"#, Err("malformed")),
            (r#"{"alg":"ES256","jku":"https://x"}"#, Err("forbidden_header")),
            (r#"{"alg":"ES256","x5u":"https://x"}"#, Err("forbidden_header")),
            (r#"{"alg":"ES256","jwk":{}}"#, Err("forbidden_header")),
            (r#"{"alg":"ES256","x5c":[]}"#, Err("forbidden_header")),
            (r#"{"alg":"ES256","crit":[]}"#, Err("unsupported_extension")),
            (r#"{"alg":"ES256","b64":true}"#, Err("unsupported_extension")),
        ];
        for (h, want) in cases {
            let got = parse_header(h.as_bytes()).map(|_| ()).map_err(|e| e.kind());
            assert_eq!(got, want, "{h}");
        }
    }

    #[test]
    fn decode_shapes() {
        let h = b64(r#"{"alg":"ES256","kid":"k"}"#);
        let p = b64("payload");
        let ok = format!("{h}.{p}.AAAA");
        let u = decode(&format!(" {ok}\n"), &Limits::default()).unwrap();
        assert_eq!((u.header.kid.as_deref(), u.payload.as_slice(), u.signing_input()), (Some("k"), &b"payload"[..], format!("{h}.{p}").as_bytes()));
        for bad in [format!("{h}.{p}"), format!("{ok}.AAAA"), format!("{ok}.AAAA.AAAA"), format!("{h}.{p}."), format!("{h}. {p}.AAAA"), String::new()] {
            assert_eq!(decode(&bad, &Limits::default()).unwrap_err().kind(), "malformed", "{bad}");
        }
        let e = decode(&ok, &Limits { max_token_bytes: 10 }).unwrap_err();
        assert_eq!(e, JoseError::TooLarge { len: ok.len(), max: 10 });
        assert!(decode(&format!("{ok}.AAAA.AAAA"), &Limits::default()).unwrap_err().to_string().contains("JWE"));
    }
}
