//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and the streaming hasher that computes them.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// A digest algorithm Berth can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// Why a digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest {0:?} is not of the form <algorithm>:<encoded>")]
    Malformed(String),
    #[error("digest algorithm {0:?} is not supported (use sha256 or sha512)")]
    UnsupportedAlgorithm(String),
    #[error("digest {0:?} must have {1} lowercase hex characters")]
    BadEncoding(String, usize),
}

/// A validated digest. The encoded part is always lowercase hex of the algorithm's length.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    /// The full canonical string, `algorithm:hex`.
    text: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    /// The hex part after the colon.
    pub fn hex(&self) -> &str {
        &self.text[self.algorithm.as_str().len() + 1..]
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
    /// The digest of `bytes` under `algorithm`.
    pub fn compute(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(algorithm);
        h.update(bytes);
        h.finish()
    }
    fn from_hex(algorithm: Algorithm, hex: &str) -> Digest {
        Digest { algorithm, text: format!("{}:{}", algorithm.as_str(), hex) }
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, enc) = s.split_once(':').ok_or_else(|| DigestError::Malformed(s.into()))?;
        // Spec grammar: algorithm-component ([+._-] algorithm-component)*, encoded [a-zA-Z0-9=_-]+
        let alg_ok = !alg.is_empty()
            && alg.split(['+', '.', '_', '-']).all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        let enc_ok = !enc.is_empty() && enc.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_' || b == b'-');
        if !alg_ok || !enc_ok {
            return Err(DigestError::Malformed(s.into()));
        }
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => return Err(DigestError::UnsupportedAlgorithm(other.into())),
        };
        if enc.len() != algorithm.hex_len() || !enc.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(DigestError::BadEncoding(s.into(), algorithm.hex_len()));
        }
        Ok(Digest { algorithm, text: s.to_owned() })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.text)
    }
}

/// A streaming hasher for one algorithm. SHA-256 uses the CPU's SHA extensions where present.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }
    pub fn finish(self) -> Digest {
        let alg = self.algorithm();
        let hex = match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        };
        Digest::from_hex(alg, &hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let e256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let cases: &[(&str, Result<(), &str>)] = &[
            (e256, Ok(())),
            ("sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e", Ok(())),
            ("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", Err("encoding")),
            ("sha256:abc", Err("encoding")),
            ("md5:d41d8cd98f00b204e9800998ecf8427e", Err("unsupported")),
            ("sha256", Err("malformed")),
            (":abc", Err("malformed")),
            ("sha256:", Err("malformed")),
            ("SHA256:abc", Err("malformed")),
            ("sha256:../../etc/passwd", Err("malformed")),
            ("", Err("malformed")),
        ];
        for (input, want) in cases {
            let got = input.parse::<Digest>();
            match (want, &got) {
                (Ok(()), Ok(d)) => assert_eq!(d.as_str(), *input),
                (Err("encoding"), Err(DigestError::BadEncoding(..)))
                | (Err("unsupported"), Err(DigestError::UnsupportedAlgorithm(_)))
                | (Err("malformed"), Err(DigestError::Malformed(_))) => {}
                _ => panic!("{input:?}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn compute_known_values() {
        assert_eq!(
            Digest::compute(Algorithm::Sha256, b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            Digest::compute(Algorithm::Sha512, b"abc").hex(),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), Digest::compute(Algorithm::Sha256, b"abc"));
    }
}
