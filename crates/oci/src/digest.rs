//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and the streaming, resumable hasher that
//! computes them.

use std::fmt;
use std::str::FromStr;

use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::Digest as _;
use sha2_resumable as sha2;

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
        let mut h = ResumableHasher::new(algorithm);
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

/// A streaming hasher for one algorithm whose state can be saved and restored, so an upload's
/// running hash survives between requests and processes (it is kept in the upload's record)
/// instead of being rebuilt by reading the bytes again. SHA-256 uses the CPU's SHA extensions
/// where present.
///
/// A checkpoint ([`ResumableHasher::checkpoint`]) is a small versioned record:
///
/// | bytes | field |
/// |---|---|
/// | 1 | format version (`1`: the state layout of the `sha2` 0.11 crates) |
/// | 1 | algorithm (`1` sha256, `2` sha512) |
/// | 8 | bytes hashed so far, little endian |
/// | 104 or 208 | the hasher's state (`sha2` 0.11 `SerializableState`: the chaining words, the
/// count of compressed blocks, the buffered tail's length and bytes) |
/// | 8 | the first 8 bytes of the SHA-256 of everything before |
///
/// [`ResumableHasher::restore`] refuses (never panics on) a checkpoint of another version or
/// algorithm, of the wrong length, with a wrong check value, or whose state is impossible or
/// disagrees with the byte count. The state is the hash of public content, not a secret.
#[derive(Clone)]
pub struct ResumableHasher {
    state: State,
    /// Bytes hashed so far.
    len: u64,
}

#[derive(Clone)]
enum State {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

/// Why a checkpoint could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("hash checkpoint is empty or truncated ({0} bytes)")]
    Truncated(usize),
    #[error("hash checkpoint has format version {0}, this build reads version {CHECKPOINT_VERSION}")]
    Version(u8),
    #[error("hash checkpoint names an unknown algorithm ({0})")]
    Algorithm(u8),
    #[error("hash checkpoint of {algorithm} has {got} bytes, not {want}")]
    Length { algorithm: &'static str, got: usize, want: usize },
    #[error("hash checkpoint is corrupt (its check value does not match)")]
    Check,
    #[error("hash checkpoint holds an impossible hasher state")]
    State,
    #[error("hash checkpoint says {said} bytes were hashed but its state holds {held}")]
    Count { said: u64, held: u128 },
}

/// The checkpoint format [`ResumableHasher::checkpoint`] writes.
pub const CHECKPOINT_VERSION: u8 = 1;
/// Version, algorithm, length.
const CHECKPOINT_HEADER: usize = 10;
const CHECKPOINT_CHECK: usize = 8;

fn checkpoint_check(bytes: &[u8]) -> [u8; CHECKPOINT_CHECK] {
    let sum = sha2::Sha256::digest(bytes);
    let mut out = [0u8; CHECKPOINT_CHECK];
    out.copy_from_slice(&sum[..CHECKPOINT_CHECK]);
    out
}

fn state_bytes<T: SerializableState>(h: &T) -> Vec<u8> {
    h.serialize().to_vec()
}

fn state_from<T: SerializableState>(bytes: &[u8]) -> Result<T, CheckpointError> {
    let array = SerializedState::<T>::try_from(bytes).map_err(|_| CheckpointError::State)?;
    T::deserialize(&array).map_err(|_| CheckpointError::State)
}

/// The bytes a `sha2` 0.11 state has taken in: compressed blocks times the block size, plus the
/// buffered tail. Layout: chaining words (32 or 64 bytes), block count (u64 or u128, little
/// endian), tail length (one byte), tail. The caller checked the state's length.
fn bytes_in_state(algorithm: Algorithm, state: &[u8]) -> u128 {
    let (words, count, block) = match algorithm {
        Algorithm::Sha256 => (32, 8, 64u128),
        Algorithm::Sha512 => (64, 16, 128u128),
    };
    let mut blocks = [0u8; 16];
    blocks[..count].copy_from_slice(&state[words..words + count]);
    let tail = state[words + count];
    u128::from_le_bytes(blocks).saturating_mul(block).saturating_add(u128::from(tail))
}

fn state_len<T: SerializableState>() -> usize {
    <T::SerializedStateSize as sha2::digest::typenum::Unsigned>::USIZE
}

impl ResumableHasher {
    pub fn new(algorithm: Algorithm) -> ResumableHasher {
        let state = match algorithm {
            Algorithm::Sha256 => State::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => State::Sha512(sha2::Sha512::new()),
        };
        ResumableHasher { state, len: 0 }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.state {
            State::Sha256(_) => Algorithm::Sha256,
            State::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// How many bytes were hashed (over every checkpoint and restore).
    pub fn bytes_hashed(&self) -> u64 {
        self.len
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.state {
            State::Sha256(h) => h.update(bytes),
            State::Sha512(h) => h.update(bytes),
        }
        self.len += bytes.len() as u64;
    }

    /// The state as a small self-checking record (see the type's docs), for
    /// [`ResumableHasher::restore`] in this or another process.
    pub fn checkpoint(&self) -> Vec<u8> {
        let (alg, state) = match &self.state {
            State::Sha256(h) => (1u8, state_bytes(h)),
            State::Sha512(h) => (2u8, state_bytes(h)),
        };
        let mut out = Vec::with_capacity(CHECKPOINT_HEADER + state.len() + CHECKPOINT_CHECK);
        out.push(CHECKPOINT_VERSION);
        out.push(alg);
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&state);
        let check = checkpoint_check(&out);
        out.extend_from_slice(&check);
        out
    }

    /// The hasher a checkpoint saved. Never panics, whatever the bytes.
    pub fn restore(checkpoint: &[u8]) -> Result<ResumableHasher, CheckpointError> {
        if checkpoint.len() < CHECKPOINT_HEADER + CHECKPOINT_CHECK {
            return Err(CheckpointError::Truncated(checkpoint.len()));
        }
        if checkpoint[0] != CHECKPOINT_VERSION {
            return Err(CheckpointError::Version(checkpoint[0]));
        }
        let (algorithm, state_size) = match checkpoint[1] {
            1 => (Algorithm::Sha256, state_len::<sha2::Sha256>()),
            2 => (Algorithm::Sha512, state_len::<sha2::Sha512>()),
            other => return Err(CheckpointError::Algorithm(other)),
        };
        let want = CHECKPOINT_HEADER + state_size + CHECKPOINT_CHECK;
        if checkpoint.len() != want {
            return Err(CheckpointError::Length { algorithm: algorithm.as_str(), got: checkpoint.len(), want });
        }
        let (body, check) = checkpoint.split_at(want - CHECKPOINT_CHECK);
        if checkpoint_check(body) != check {
            return Err(CheckpointError::Check);
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&body[2..CHECKPOINT_HEADER]);
        let len = u64::from_le_bytes(len);
        let state = &body[CHECKPOINT_HEADER..];
        let held = bytes_in_state(algorithm, state);
        if held != u128::from(len) {
            return Err(CheckpointError::Count { said: len, held });
        }
        let state = match algorithm {
            Algorithm::Sha256 => State::Sha256(state_from(state)?),
            Algorithm::Sha512 => State::Sha512(state_from(state)?),
        };
        Ok(ResumableHasher { state, len })
    }

    pub fn finish(self) -> Digest {
        let alg = self.algorithm();
        let hex = match self.state {
            State::Sha256(h) => hex::encode(h.finalize()),
            State::Sha512(h) => hex::encode(h.finalize()),
        };
        Digest::from_hex(alg, &hex)
    }
}

impl fmt::Debug for ResumableHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumableHasher").field("algorithm", &self.algorithm()).field("bytes_hashed", &self.len).finish()
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
        let mut h = ResumableHasher::new(Algorithm::Sha256);
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), Digest::compute(Algorithm::Sha256, b"abc"));
    }

    /// Inputs around the block sizes (64 and 128 bytes) and across several blocks.
    fn inputs() -> Vec<Vec<u8>> {
        let mut out = vec![Vec::new(), b"abc".to_vec()];
        for len in [63usize, 64, 65, 127, 128, 129, 300] {
            out.push((0..len).map(|i| (i * 31 + len) as u8).collect());
        }
        out
    }

    #[test]
    fn checkpoint_at_every_split_point_gives_the_one_pass_digest() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            for input in inputs() {
                let want = Digest::compute(alg, &input);
                for split in 0..=input.len() {
                    let mut h = ResumableHasher::new(alg);
                    h.update(&input[..split]);
                    let saved = h.checkpoint();
                    let mut resumed = ResumableHasher::restore(&saved).unwrap();
                    assert_eq!(resumed.algorithm(), alg);
                    assert_eq!(resumed.bytes_hashed(), split as u64);
                    // Twice through a checkpoint: the second split continues the first.
                    let second = split + (input.len() - split) / 2;
                    resumed.update(&input[split..second]);
                    let mut resumed = ResumableHasher::restore(&resumed.checkpoint()).unwrap();
                    resumed.update(&input[second..]);
                    assert_eq!(resumed.bytes_hashed(), input.len() as u64);
                    assert_eq!(resumed.finish(), want, "{alg:?}, {} bytes split at {split}", input.len());
                }
            }
        }
    }

    #[test]
    fn checkpoint_layout() {
        let cases = [(Algorithm::Sha256, 1u8, 104usize), (Algorithm::Sha512, 2, 208)];
        for (alg, code, state) in cases {
            let mut h = ResumableHasher::new(alg);
            h.update(&[7u8; 1000]);
            let c = h.checkpoint();
            assert_eq!(c.len(), CHECKPOINT_HEADER + state + CHECKPOINT_CHECK, "{alg:?}");
            assert_eq!((c[0], c[1]), (CHECKPOINT_VERSION, code));
            assert_eq!(c[2..10], 1000u64.to_le_bytes());
            // Deterministic: the same state gives the same bytes.
            assert_eq!(ResumableHasher::restore(&c).unwrap().checkpoint(), c);
        }
    }

    #[test]
    fn corrupt_checkpoints_are_refused_without_panicking() {
        let mut h = ResumableHasher::new(Algorithm::Sha256);
        h.update(b"some bytes of an upload");
        let good = h.checkpoint();
        // Every single-bit flip anywhere is detected.
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[i] ^= 1 << bit;
                assert!(ResumableHasher::restore(&bad).is_err(), "flip of bit {bit} of byte {i} went unnoticed");
            }
        }
        // Every truncation and an extension.
        for n in 0..good.len() {
            assert!(ResumableHasher::restore(&good[..n]).is_err(), "truncated to {n}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(ResumableHasher::restore(&long), Err(CheckpointError::Length { .. })));

        let table: Vec<(Vec<u8>, CheckpointError)> = vec![
            (vec![], CheckpointError::Truncated(0)),
            (vec![2; 123], CheckpointError::Version(2)),
            ({
                let mut v = good.clone();
                v[1] = 9;
                v
            }, CheckpointError::Algorithm(9)),
            ({
                let mut v = good.clone();
                v[1] = 2;
                v
            }, CheckpointError::Length { algorithm: "sha512", got: good.len(), want: 226 }),
            ({
                let mut v = good.clone();
                let n = v.len();
                v[n - 1] ^= 1;
                v
            }, CheckpointError::Check),
        ];
        for (bytes, want) in table {
            assert_eq!(ResumableHasher::restore(&bytes).unwrap_err(), want);
        }

        // A well-checked record whose buffer position is impossible (a hand-made state).
        let buffer_pos = CHECKPOINT_HEADER + 40;
        let forge = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut forged = good[..good.len() - CHECKPOINT_CHECK].to_vec();
            edit(&mut forged);
            let check = checkpoint_check(&forged);
            forged.extend_from_slice(&check);
            ResumableHasher::restore(&forged)
        };
        // The tail is 23 bytes: a tail as long as a block is impossible, a shorter one disagrees
        // with the count, and so does a count of bytes hashed that the state does not hold.
        assert!(forge(&|f| f[buffer_pos] = 64).is_err());
        assert_eq!(forge(&|f| f[buffer_pos] = 22).unwrap_err(), CheckpointError::Count { said: 23, held: 22 });
        assert_eq!(forge(&|f| f[2] = 24).unwrap_err(), CheckpointError::Count { said: 24, held: 23 });
        assert_eq!(forge(&|f| f[CHECKPOINT_HEADER + 32] = 1).unwrap_err(), CheckpointError::Count { said: 23, held: 87 });
        // Bytes past the tail must be zero.
        assert_eq!(forge(&|f| f[buffer_pos + 30] = 1).unwrap_err(), CheckpointError::State);
        assert!(forge(&|_| {}).is_ok());

        // Pseudo-random garbage of many lengths, some with a valid header.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in 0..400usize {
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            if len > 2 {
                bytes[0] = CHECKPOINT_VERSION;
                bytes[1] = 1 + (len % 2) as u8;
            }
            assert!(ResumableHasher::restore(&bytes).is_err(), "{len} random bytes");
        }
    }
}
