//! Fuzzes `berth_access::parse_scope` (the Docker token `scope` parameter, attacker-controlled)
//! and feeds what it returns to `intersect` and the token checks.
//!
//! Invariants: never panics; every entry has a non-empty kind without ':' and a non-empty name,
//! no part contains a space, actions are non-empty and contain neither ',' nor ':'; an entry
//! printed back as `kind:name:a,b` re-parses to itself; `intersect` only grants known actions
//! on resources that were asked for.
#![no_main]

use std::collections::HashSet;
use std::sync::LazyLock;

use berth_access::{intersect, parse_scope, token_allows, token_allows_catalog, Access, Action, ActionSet, Grant, Permissions, RepoPattern};
use libfuzzer_sys::fuzz_target;

static USER: LazyLock<Permissions> = LazyLock::new(|| Permissions {
    grants: vec![
        Grant { repositories: RepoPattern::new("library/*").unwrap(), actions: ActionSet::of(&[Action::Pull]) },
        Grant { repositories: RepoPattern::new("team/**").unwrap(), actions: ActionSet::ALL },
        Grant { repositories: RepoPattern::new("a?c/[x-z]*").unwrap(), actions: ActionSet::of(&[Action::Push]) },
    ],
    admin: false,
});
static ADMIN: LazyLock<Permissions> = LazyLock::new(Permissions::admin);

fn check_intersection(perms: &Permissions, requested: &[Access]) {
    let granted = intersect(perms, requested);
    let mut seen = HashSet::new();
    let asked: HashSet<(&str, &str)> = requested.iter().map(|r| (r.kind.as_str(), r.name.as_str())).collect();
    for g in &granted {
        assert!(asked.contains(&(g.kind.as_str(), g.name.as_str())), "granted {g:?}, which was not requested");
        assert!(!g.actions.is_empty(), "granted an entry with no actions: {g:?}");
        match g.kind.as_str() {
            "repository" => {
                assert!(
                    g.actions.iter().all(|a| ["pull", "push", "delete"].contains(&a.as_str())),
                    "granted unknown actions in {g:?}"
                );
                assert!(g.name.parse::<berth_oci::RepoName>().is_ok(), "granted an invalid repository {:?}", g.name);
                let allowed = perms.on(&g.name);
                let given = ActionSet::parse_words(g.actions.iter().map(String::as_str));
                assert_eq!(given.intersect(allowed), given, "granted {g:?} beyond the permissions {allowed:?}");
                assert_eq!(given.iter().count(), g.actions.len(), "an action granted twice in {g:?}");
            }
            "registry" => assert!(perms.admin && g.name == "catalog" && g.actions.iter().all(|a| a == "*"), "granted {g:?}"),
            other => panic!("granted an entry of kind {other:?}"),
        }
        assert!(seen.insert((g.kind.as_str(), g.name.as_str())), "{g:?} is granted in more than one entry");
    }
    // The token checks agree with what was granted (a few names: token_allows is linear).
    for g in granted.iter().filter(|g| g.kind == "repository").take(4) {
        assert!(!token_allows(&granted, &g.name).is_empty());
    }
    if token_allows_catalog(&granted) {
        assert!(perms.admin, "catalog granted to a non-admin");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(scope) = std::str::from_utf8(data) else { return };
    let entries = parse_scope(scope);
    assert!(entries.len() <= scope.split(' ').count());
    for e in &entries {
        assert!(!e.kind.is_empty(), "{scope:?}: empty kind in {e:?}");
        assert!(!e.name.is_empty(), "{scope:?}: empty name in {e:?}");
        assert!(!e.kind.contains(':'), "{scope:?}: kind with ':' in {e:?}");
        assert!(!e.kind.contains(' ') && !e.name.contains(' '), "{scope:?}: space inside {e:?}");
        for a in &e.actions {
            assert!(!a.is_empty() && !a.contains([',', ':', ' ']), "{scope:?}: action {a:?} in {e:?}");
        }
        let printed = format!("{}:{}:{}", e.kind, e.name, e.actions.join(","));
        assert_eq!(parse_scope(&printed), vec![e.clone()], "{scope:?}: {printed:?} does not re-parse to {e:?}");
    }
    check_intersection(&USER, &entries);
    check_intersection(&ADMIN, &entries);
});
