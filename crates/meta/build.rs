//! Rebuilds the crate when a migration changes: `sqlx::migrate!` embeds the files at compile
//! time, and on stable Rust it cannot tell Cargo to watch them.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
