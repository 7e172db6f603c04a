//! The `berth apply` files in `examples/` are applied to a real server with the CLI, twice (the
//! second time changes nothing), so they cannot rot.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use support::{berth_command, run, Berth};

#[test]
fn every_example_apply_file_applies_idempotently() {
    let b = Berth::start();
    let examples = support::repo_root().join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&examples)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("berth.yaml"))
        .filter(|p| p.exists())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "expected an apply file per platform, found {files:?}");
    for f in &files {
        let apply = || {
            run(berth_command()
                .args(["apply", "-f"])
                .arg(f)
                .env("BERTH_SERVER", format!("http://{}", b.host()))
                .env("BERTH_USERNAME", "admin")
                .env("BERTH_PASSWORD", b.admin_password()))
        };
        let first = apply().assert_success();
        assert!(first.stdout.contains("robot"), "{}: {}", f.display(), first.stdout);
        let second = apply().assert_success();
        assert!(
            second.stdout.lines().all(|l| l.starts_with("unchanged")),
            "{}: applying twice changed something:\n{}",
            f.display(),
            second.stdout
        );
    }
}
