//! Prints the SHA-256 throughput of the digest hasher Berth uses (`cargo run --release -p berth-oci --example hash_speed`).
fn main() {
    let buf = vec![7u8; 256 << 20];
    let t = std::time::Instant::now();
    let mut h = berth_oci::Hasher::new(berth_oci::Algorithm::Sha256);
    for c in buf.chunks(1 << 20) {
        h.update(c);
    }
    let d = h.finish();
    let s = t.elapsed().as_secs_f64();
    println!("{d}: {:.2} GB/s", (256u64 << 20) as f64 / s / 1e9);
}
