//! The core knows no HTTP server: its dependency tree (as cargo resolves it for this crate alone)
//! holds no HTTP server crate or feature, no web framework and no Berth translation layer. (It
//! does reach HTTP as a client: berth-identity fetches identity providers' keys with reqwest.)

use std::process::Command;

#[test]
fn the_core_depends_on_no_http_server() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--offline", "--locked", "-p", "berth-core", "-e", "normal,features", "--prefix", "none"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.lines().any(|l| l.starts_with("berth-meta")), "the tree looks wrong:\n{tree}");
    let forbidden = [
        "axum ",
        "berth-server ",
        "hyper feature \"server\"",
        "hyper-util feature \"server\"",
        "hyper-util feature \"server-auto\"",
    ];
    for line in tree.lines() {
        for f in forbidden {
            assert!(!line.starts_with(f), "berth-core must not depend on an HTTP server: found {line:?}");
        }
    }
}
