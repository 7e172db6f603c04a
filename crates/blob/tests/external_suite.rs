//! The test suite run from outside the crate through the `testsuite` feature, exactly as an S3
//! backend's crate would: only public items, on a fresh store.

use berth_blob::{testsuite, FsBlobStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_through_the_feature() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsBlobStore::open(dir.path()).expect("open");
    testsuite::run_all(&store).await;
}
