//! Fuzzes the apply document path: arbitrary bytes parsed as YAML (what `berth apply -f` reads;
//! JSON is YAML) and as JSON (what `POST /api/v1/apply` reads) into `ApplyDocument`, then the
//! whole-document validation both share (`berth_server::api::validate_document`, no store).
//!
//! Invariants: never panics; a parsed document serialises to JSON that the API parses back to
//! the same document (the CLI sends exactly that); a document that validates has only robots
//! whose names parse, federated robots with at least one rule, and identity providers whose
//! issuers are pairwise distinct after normalisation where their audiences overlap.
#![no_main]

use berth_access::RobotName;
use berth_server::api::issuer::issuer_key;
use berth_server::api::types::ApplyDocument;
use berth_server::api::validate_document;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let yaml = serde_yaml_ng::from_str::<ApplyDocument>(text).ok();
    let json = serde_json::from_slice::<ApplyDocument>(data).ok();
    for doc in [yaml, json].into_iter().flatten() {
        let wire = serde_json::to_vec(&doc).expect("an ApplyDocument serialises to JSON");
        let back: ApplyDocument = serde_json::from_slice(&wire).expect("the API parses what the CLI sends");
        assert_eq!(back, doc, "JSON round trip");
        let Ok(valid) = validate_document(&doc, Vec::new()) else { continue };
        for r in &valid.robots {
            let name = RobotName::parse(&r.name).expect("a validated robot's name parses");
            assert_eq!(name.project(), r.project.as_deref());
            if r.identity_provider.is_some() {
                assert!(r.rules.as_array().is_some_and(|a| !a.is_empty()), "federated robot {} without rules", r.name);
            }
        }
        let idps = &valid.identity_providers;
        for (i, (a, pa)) in idps.iter().enumerate() {
            for (b, pb) in &idps[i + 1..] {
                if a.name != b.name && issuer_key(&pa.issuer) == issuer_key(&pb.issuer) {
                    assert!(!pa.audiences.iter().any(|x| pb.audiences.contains(x)), "{} and {} share an issuer and an audience", a.name, b.name);
                }
            }
        }
    }
});
