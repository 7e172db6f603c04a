//! Prints the throughput of the digest hasher Berth uses for uploads, and of a checkpoint and
//! restore (`cargo run --release -p berth-oci --example hash_speed`).
fn main() {
    let buf = vec![7u8; 256 << 20];
    for alg in [berth_oci::Algorithm::Sha256, berth_oci::Algorithm::Sha512] {
        let t = std::time::Instant::now();
        let mut h = berth_oci::ResumableHasher::new(alg);
        for c in buf.chunks(1 << 20) {
            h.update(c);
        }
        let d = h.finish();
        let s = t.elapsed().as_secs_f64();
        println!("{d}: {:.2} GB/s", (256u64 << 20) as f64 / s / 1e9);
    }
    let mut h = berth_oci::ResumableHasher::new(berth_oci::Algorithm::Sha256);
    h.update(&buf[..1000]);
    let t = std::time::Instant::now();
    for _ in 0..100_000 {
        h = berth_oci::ResumableHasher::restore(&h.checkpoint()).expect("own checkpoint");
    }
    println!("checkpoint + restore: {:.2} µs", t.elapsed().as_secs_f64() * 1e6 / 100_000.0);
}
