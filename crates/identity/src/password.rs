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
    fn memory_cost_setting() {
        assert!(set_hash_memory_kib(1).is_err(), "argon2 needs at least 8 KiB per lane");
        let h = hash("x").unwrap();
        assert!(h.contains(&format!("m={}", hash_memory_kib())), "{h}");
        assert!(verify("x", &h));
    }
}
