//! Fuzzes the token endpoint's query parsing exactly as `GET /service/token` runs it
//! (`berth_server::token::scopes_from_query`: URL decoding, the scope cap, the scope grammar) and
//! intersects the result with a user's and an admin's permissions.
//!
//! Invariants: never panics; an accepted query yields at most `MAX_SCOPES_PER_REQUEST` entries
//! (each scope entry parses to at most one access); a refusal is a 400 with a message; the
//! intersection only grants what was asked for, and at most one entry per resource.
#![no_main]

use std::collections::HashSet;
use std::sync::LazyLock;

use berth_access::{intersect, Action, ActionSet, Grant, Permissions, RepoPattern, MAX_SCOPES_PER_REQUEST};
use libfuzzer_sys::fuzz_target;

static USER: LazyLock<Permissions> = LazyLock::new(|| Permissions {
    grants: vec![
        Grant { repositories: RepoPattern::new("library/*").unwrap(), actions: ActionSet::of(&[Action::Pull]) },
        Grant { repositories: RepoPattern::new("team/**").unwrap(), actions: ActionSet::ALL },
    ],
    admin: false,
});
static ADMIN: LazyLock<Permissions> = LazyLock::new(Permissions::admin);

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else { return };
    match berth_server::token::scopes_from_query(query) {
        Ok(scopes) => {
            assert!(scopes.len() <= MAX_SCOPES_PER_REQUEST, "{} scopes accepted", scopes.len());
            for perms in [&*USER, &*ADMIN] {
                let granted = intersect(perms, &scopes);
                let asked: HashSet<(&str, &str)> = scopes.iter().map(|a| (a.kind.as_str(), a.name.as_str())).collect();
                let mut seen = HashSet::new();
                for g in &granted {
                    assert!(asked.contains(&(g.kind.as_str(), g.name.as_str())), "granted {g:?}, which was not asked for");
                    assert!(seen.insert((g.kind.clone(), g.name.clone())), "{g:?} granted twice");
                    assert!(!g.actions.is_empty());
                }
            }
        }
        Err(e) => {
            assert_eq!(e.status, http::StatusCode::BAD_REQUEST, "{e:?}");
            assert!(!e.message.is_empty());
        }
    }
});
