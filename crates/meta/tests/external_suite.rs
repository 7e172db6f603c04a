//! The test suite run from outside the crate through the `testsuite` feature, exactly as a
//! PostgreSQL backend's crate would: only public items, one fresh store for `run_all`, and two
//! handles on one database for `run_races`.

use berth_meta::{testsuite, SqliteStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_through_the_feature() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("meta.db");
    let one = SqliteStore::open(&path).await.expect("open");
    testsuite::run_all(&one).await;
    let two = SqliteStore::open(&path).await.expect("open again");
    testsuite::run_races(&one, &two).await;
}

/// Export and import between two stores, through the public items only.
#[tokio::test]
async fn transfer_through_the_feature() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = SqliteStore::open(&dir.path().join("src.db")).await.expect("open");
    let dst = SqliteStore::open(&dir.path().join("dst.db")).await.expect("open");
    testsuite::transfer(&src, &dst).await;
}
