//! Password hashing with argon2id (PHC strings). Verification is deliberately slow (tens of ms):
//! callers run it off the async executor and cache successes briefly.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use std::sync::atomic::{AtomicU32, Ordering};

/// Memory cost of new hashes in KiB (argon2's default, OWASP's recommendation: 19 MiB).
static MEMORY_KIB: AtomicU32 = AtomicU32::new(argon2::Params::DEFAULT_M_COST);

/// Sets the memory cost of new hashes (the `limits.password_hash_memory_kib` setting). Existing
/// hashes keep the parameters they were made with; a check needs the memory of its hash.
pub fn set_hash_memory_kib(kib: u32) -> Result<(), String> {
    argon2::Params::new(kib, argon2::Params::DEFAULT_T_COST, argon2::Params::DEFAULT_P_COST, None)
        .map_err(|e| format!("invalid argon2 memory cost {kib} KiB: {e}"))?;
    MEMORY_KIB.store(kib, Ordering::Relaxed);
    Ok(())
}

/// The memory cost new hashes get, in KiB.
pub fn hash_memory_kib() -> u32 {
    MEMORY_KIB.load(Ordering::Relaxed)
}

fn hasher() -> Argon2<'static> {
    let params = argon2::Params::new(hash_memory_kib(), argon2::Params::DEFAULT_T_COST, argon2::Params::DEFAULT_P_COST, None)
        .unwrap_or_default();
    Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
}

/// Hashes a password into a PHC string (argon2id with the configured memory cost).
pub fn hash(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash password: {e}"))
}

/// Checks a password against a PHC string. A malformed stored hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Verifies with caller-owned argon2 memory: `blocks` grows to the largest hash seen and is
/// reused, so a check allocates nothing.
fn verify_with(password: &str, phc: &str, blocks: &mut Vec<argon2::Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let (Ok(algorithm), Ok(params)) = (argon2::Algorithm::try_from(parsed.algorithm), argon2::Params::try_from(&parsed)) else {
        return false;
    };
    let version = match parsed.version.map(argon2::Version::try_from) {
        None => argon2::Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return false };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else { return false };
    if blocks.len() < params.block_count() {
        blocks.resize(params.block_count(), argon2::Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let hasher = Argon2::new(algorithm, version, params);
    if hasher.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut blocks[..]).is_err() {
        return false;
    }
    // Output's equality is constant-time.
    argon2::password_hash::Output::new(&out).is_ok_and(|o| o == expected)
}

/// A fixed set of threads that check passwords, each reusing its own argon2 memory. With the
/// blocking pool, every check could land on another thread and glibc keeps each thread's freed
/// 19 MiB in that thread's arena, so memory grew with the number of threads that ever checked
/// one; here it is bounded by `threads` × the largest hash's memory cost.
pub struct Verifier {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

type Job = (String, String, tokio::sync::oneshot::Sender<bool>);

impl Verifier {
    /// Starts `threads` verifier threads (at least 1).
    pub fn new(threads: usize) -> std::io::Result<Verifier> {
        let threads = threads.max(1);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(threads * 4);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("berth-password-{i}")).spawn(move || {
                let mut blocks = Vec::new();
                loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok((password, phc, reply)) = job else { return };
                    let _ = reply.send(verify_with(&password, &phc, &mut blocks));
                }
            })?;
        }
        Ok(Verifier { jobs: tx })
    }

    /// Checks `password` against `phc` on one of the verifier threads. Callers bound how many
    /// checks wait (Berth's server holds a semaphore of as many permits as threads).
    pub async fn verify(&self, password: &str, phc: &str) -> bool {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = (password.to_owned(), phc.to_owned(), reply);
        // The channel holds a few jobs per thread; a full channel means callers did not bound
        // the checks, so wait on the blocking pool rather than stall the executor.
        let jobs = self.jobs.clone();
        match jobs.try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                if tokio::task::spawn_blocking(move || jobs.send(job)).await.map_or(true, |r| r.is_err()) {
                    return false;
                }
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return false,
        }
        answer.await.unwrap_or(false)
    }
}

/// A random password for the bootstrap admin: 24 characters from an unambiguous alphabet.
pub fn generate() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..24).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = hash("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("s3cret", &h));
        assert!(!verify("s3cret ", &h));
        assert!(!verify("", &h));
        assert!(!verify("s3cret", "not-a-hash"));
        assert_ne!(hash("s3cret").unwrap(), h, "salted");
        let g = generate();
        assert_eq!(g.len(), 24);
        assert_ne!(g, generate());
    }

    #[test]
    fn reusable_memory_verifies_like_argon2() {
        let h = hash("s3cret").unwrap();
        let mut blocks = Vec::new();
        for (pw, want) in [("s3cret", true), ("s3cret ", false), ("", false)] {
            assert_eq!(verify_with(pw, &h, &mut blocks), want, "{pw:?}");
            assert_eq!(verify(pw, &h), want);
        }
        let grown = blocks.len();
        assert!(grown > 0);
        assert!(!verify_with("s3cret", "not-a-hash", &mut blocks));
        assert!(!verify_with("s3cret", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ", &mut blocks), "no hash output");
        assert_eq!(blocks.len(), grown, "memory is reused");
    }

    #[tokio::test]
    async fn verifier_threads() {
        let v = Verifier::new(2).unwrap();
        let h = hash("pw").unwrap();
        let checks: Vec<_> = (0..20).map(|i| {
            let (v, h) = (&v, h.clone());
            async move { v.verify(if i % 2 == 0 { "pw" } else { "no" }, &h).await }
        }).collect();
        let results = futures_join(checks).await;
        assert_eq!(results.iter().filter(|ok| **ok).count(), 10);
    }

    async fn futures_join<F: std::future::Future<Output = bool>>(fs: Vec<F>) -> Vec<bool> {
        let mut out = Vec::new();
        for f in fs {
            out.push(f.await);
        }
        out
    }

    #[test]
    fn memory_cost_setting() {
        assert!(set_hash_memory_kib(1).is_err(), "argon2 needs at least 8 KiB per lane");
        let h = hash("x").unwrap();
        assert!(h.contains(&format!("m={}", hash_memory_kib())), "{h}");
        assert!(verify("x", &h));
    }
}
