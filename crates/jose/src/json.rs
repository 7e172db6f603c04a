//! JSON for untrusted token parts (header, claims, JWK sets): a `serde_json::Value` parser that
//! refuses duplicate member names at any depth and limits nesting depth. RFC 7515 §4 and RFC 7519
//! §4 let a parser either reject duplicates or keep the last one; we reject, because two parsers
//! that disagree on which duplicate wins (a proxy, a policy engine, us) is a classic bypass.
//! Names are compared after unescaping, so `"alg"` and `"\u0061lg"` are duplicates.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Deepest accepted nesting of arrays and objects.
pub const MAX_DEPTH: usize = 32;

/// Parses `bytes` as one JSON value with unique member names.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = Strict { depth: 0 }.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

struct Strict {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(A::Error::custom(format!("nested deeper than {MAX_DEPTH}")));
        }
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict { depth: self.depth + 1 })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(A::Error::custom(format!("nested deeper than {MAX_DEPTH}")));
        }
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(Strict { depth: self.depth + 1 })?;
            if out.contains_key(&k) {
                return Err(A::Error::custom(format!("duplicate member {k:?}")));
            }
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_table() {
        let ok = [r#"{"a":1,"b":{"c":[1,2,{"d":null}]}}"#, "[]", r#""s""#, r#"{"a":1.5e3}"#];
        for s in ok {
            assert_eq!(parse_strict(s.as_bytes()).unwrap(), serde_json::from_str::<Value>(s).unwrap(), "{s}");
        }
        let bad = [
            (r#"{"a":1,"a":2}"#, "duplicate"),
            (r#"{"x":{"a":1,"a":1}}"#, "duplicate"),
            (r#"{"alg":"ES256","\u0061lg":"none"}"#, "duplicate member \"alg\""),
            (r#"[{"a":1,"a":1}]"#, "duplicate"),
            (r#"{"a":1} x"#, "trailing"),
            ("{", "EOF"),
        ];
        for (s, want) in bad {
            let e = parse_strict(s.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        assert!(parse_strict(deep.as_bytes()).unwrap_err().to_string().contains("nested"));
    }
}
