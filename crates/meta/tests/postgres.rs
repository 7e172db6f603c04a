//! The suite against PostgreSQL run from outside the crate through the `testsuite` feature, as
//! another crate's tests would: only public items, the public test-database helper, one fresh
//! database for `run_all` and two stores on one database for `run_races`. Needs the server that
//! scripts/postgres.sh starts (scripts/test.sh runs it).

use berth_meta::postgres::testdb::TestDb;
use berth_meta::testsuite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suite_through_the_feature() {
    let db = TestDb::create().await;
    let one = db.store().await;
    testsuite::run_all(&one).await;
    let two = db.store().await;
    testsuite::run_races(&one, &two).await;
    one.close().await;
    two.close().await;
    db.drop().await;
}

/// Export and import between two PostgreSQL databases, through the public items only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_through_the_feature() {
    let (a, b) = (TestDb::create().await, TestDb::create().await);
    let (src, dst) = (a.store().await, b.store().await);
    testsuite::transfer(&src, &dst).await;
    src.close().await;
    dst.close().await;
    a.drop().await;
    b.drop().await;
}
