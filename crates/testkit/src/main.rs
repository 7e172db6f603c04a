//! `berth-test-issuer`: the test OIDC issuer as a process (work in progress).

fn main() {}
