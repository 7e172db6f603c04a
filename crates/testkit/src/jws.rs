//! JWS compact serialisation of a token: `base64url(header).base64url(claims).base64url(signature)`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::claims::merge;
use crate::keys::Key;

/// The header a key puts on its tokens: `{"alg", "kid", "typ": "JWT"}`, plus `x5t` when the key
/// has a certificate (as GitHub's tokens do).
pub fn header(key: &Key, alg: &str) -> Value {
    let mut h = json!({"alg": alg, "kid": key.kid(), "typ": "JWT"});
    if let Some(x5t) = key.x5t() {
        h["x5t"] = x5t.into();
    }
    h
}

/// Signs `claims` with `key` as `alg` (see [`Key::sign`] for unusual algorithms), with
/// [`header`] merged with `header_extra` (RFC 7386: a `null` member removes, e.g. `{"kid": null}`;
/// `Value::Null` as a whole changes nothing).
pub fn sign(key: &Key, alg: &str, header_extra: Value, claims: &Value) -> String {
    let header = if header_extra.is_null() { header(key, alg) } else { merge(header(key, alg), header_extra) };
    sign_raw(key, alg, header.to_string().as_bytes(), claims.to_string().as_bytes())
}

/// Signs raw header and payload bytes (for tests of duplicate members, odd JSON and the like).
pub fn sign_raw(key: &Key, alg: &str, header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
    let sig = key.sign(alg, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}
