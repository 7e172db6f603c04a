//! The OCI distribution-spec conformance checks (`berth-conformance`: pull, push, content
//! discovery, content management) against the real binary with its token auth on, as the
//! official suite runs against a registry. The target is zero failures.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use support::Berth;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_conformance_with_token_auth_has_zero_failures() {
    let berth = Berth::start();
    let cfg = berth_conformance::Config {
        url: berth.url(""),
        namespace: "conformance/a/b/c".into(),
        cross_mount_namespace: "conformance/other/repo".into(),
        username: Some("admin".into()),
        password: Some(berth.admin_password()),
    };
    let report = berth_conformance::run(cfg).await;
    let text = report.render_text();
    eprintln!("{text}");
    assert!(report.passed() >= 100, "too few checks ran: {}", report.summary_line());
    let failures: Vec<String> = report.failures().map(|f| format!("{f:?}")).collect();
    assert!(failures.is_empty(), "{} conformance failures:\n{}", failures.len(), failures.join("\n"));
}
