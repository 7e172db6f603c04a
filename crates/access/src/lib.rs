//! Pure access decisions: the actions a principal may take on repositories, the Docker token
//! `scope` grammar, and the intersection of requested scopes with granted permissions.
//!
//! Architecture invariant: no IO. Every decision here is a function of its arguments and is
//! tested by tables of cases.

use std::fmt;

use berth_oci::RepoName;

pub mod robot;
pub use robot::{permissions_from_access, public_pull, robot_permissions, validate_project_name, PermissionSpec, RobotName};

/// One action on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }
    fn bit(self) -> u8 {
        match self {
            Action::Pull => 1,
            Action::Push => 2,
            Action::Delete => 4,
        }
    }
}

/// A set of actions.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ActionSet(u8);

impl ActionSet {
    pub const NONE: ActionSet = ActionSet(0);
    pub const ALL: ActionSet = ActionSet(7);
    pub fn of(actions: &[Action]) -> ActionSet {
        ActionSet(actions.iter().fold(0, |acc, a| acc | a.bit()))
    }
    pub fn contains(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }
    pub fn union(self, o: ActionSet) -> ActionSet {
        ActionSet(self.0 | o.0)
    }
    pub fn intersect(self, o: ActionSet) -> ActionSet {
        ActionSet(self.0 & o.0)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }
    /// Parses action words as they appear in scopes and permission lists. `*` means all;
    /// unknown words are ignored (a scope may name actions Berth does not grant).
    pub fn parse_words<'a>(words: impl IntoIterator<Item = &'a str>) -> ActionSet {
        let mut set = ActionSet::NONE;
        for w in words {
            set = set.union(match w.trim() {
                "pull" => ActionSet::of(&[Action::Pull]),
                "push" => ActionSet::of(&[Action::Push]),
                "delete" => ActionSet::of(&[Action::Delete]),
                "*" => ActionSet::ALL,
                _ => ActionSet::NONE,
            });
        }
        set
    }
}

impl fmt::Debug for ActionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Action::as_str)).finish()
    }
}

/// A repository pattern: a glob where `*` matches any characters, `/` included
/// (`library/*` matches `library/app` and `library/a/b`).
#[derive(Debug, Clone)]
pub struct RepoPattern {
    text: String,
    matcher: globset::GlobMatcher,
}

impl RepoPattern {
    /// Compiles a pattern. Compiled patterns are shared by text (a compiled glob is a regex of
    /// tens of KiB; thousands of robots often use the same few patterns).
    pub fn new(pattern: &str) -> Result<RepoPattern, String> {
        static CACHE: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, globset::GlobMatcher>>> =
            std::sync::LazyLock::new(Default::default);
        let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = cache.get(pattern) {
            return Ok(RepoPattern { text: pattern.to_owned(), matcher: m.clone() });
        }
        let matcher = globset::GlobBuilder::new(pattern)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("invalid repository pattern {pattern:?}: {e}"))?
            .compile_matcher();
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(pattern.to_owned(), matcher.clone());
        Ok(RepoPattern { text: pattern.to_owned(), matcher })
    }
    pub fn any() -> RepoPattern {
        RepoPattern::new("*").unwrap_or_else(|_| unreachable!("'*' is a valid glob"))
    }
    pub fn matches(&self, repo: &str) -> bool {
        self.matcher.is_match(repo)
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Actions allowed on the repositories a pattern matches.
#[derive(Debug, Clone)]
pub struct Grant {
    pub repositories: RepoPattern,
    pub actions: ActionSet,
}

/// Everything a principal may do. Grants are united.
#[derive(Debug, Clone, Default)]
pub struct Permissions {
    pub grants: Vec<Grant>,
    /// May list the whole catalog and administer the registry.
    pub admin: bool,
}

impl Permissions {
    /// Everything (the bootstrap admin).
    pub fn admin() -> Permissions {
        Permissions { grants: vec![Grant { repositories: RepoPattern::any(), actions: ActionSet::ALL }], admin: true }
    }
    /// The actions allowed on `repo`.
    pub fn on(&self, repo: &str) -> ActionSet {
        self.grants
            .iter()
            .filter(|g| g.repositories.matches(repo))
            .fold(ActionSet::NONE, |acc, g| acc.union(g.actions))
    }
    /// The union of two principals' permissions.
    pub fn union(mut self, other: Permissions) -> Permissions {
        self.grants.extend(other.grants);
        self.admin |= other.admin;
        self
    }
}

/// A requested or granted access entry, as in the Docker token spec's `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// Parses one `scope` value (space separated entries of `type:name:actions`). The name may itself
/// contain colons (`repository:host:5000/app:pull`), so type is before the first colon and the
/// actions after the last. Entries that do not parse are skipped, as Docker does.
pub fn parse_scope(scope: &str) -> Vec<Access> {
    scope
        .split(' ')
        .filter(|s| !s.is_empty())
        .filter_map(|entry| {
            let (kind, rest) = entry.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            if kind.is_empty() || name.is_empty() {
                return None;
            }
            Some(Access {
                kind: kind.to_owned(),
                name: name.to_owned(),
                actions: actions.split(',').filter(|a| !a.is_empty()).map(str::to_owned).collect(),
            })
        })
        .collect()
}

/// What a token may carry: the requested entries intersected with the permissions. Entries whose
/// intersection is empty are dropped; a partial grant is not an error. Repository entries with an
/// invalid name are dropped. `registry:catalog:*` is granted to admins only.
pub fn intersect(perms: &Permissions, requested: &[Access]) -> Vec<Access> {
    let mut out: Vec<Access> = Vec::new();
    for req in requested {
        let granted: Vec<String> = match req.kind.as_str() {
            "repository" => {
                if req.name.parse::<RepoName>().is_err() {
                    continue;
                }
                let allowed = perms.on(&req.name);
                let wanted = ActionSet::parse_words(req.actions.iter().map(String::as_str));
                allowed.intersect(wanted).iter().map(|a| a.as_str().to_owned()).collect()
            }
            "registry" if req.name == "catalog" && perms.admin => {
                req.actions.iter().filter(|a| a.as_str() == "*").cloned().collect()
            }
            _ => vec![],
        };
        if granted.is_empty() {
            continue;
        }
        // Merge with an earlier entry for the same resource.
        if let Some(prev) = out.iter_mut().find(|a| a.kind == req.kind && a.name == req.name) {
            for g in granted {
                if !prev.actions.contains(&g) {
                    prev.actions.push(g);
                }
            }
        } else {
            out.push(Access { kind: req.kind.clone(), name: req.name.clone(), actions: granted });
        }
    }
    out
}

/// The actions a token's access entries allow on `repo`.
pub fn token_allows(access: &[Access], repo: &str) -> ActionSet {
    access
        .iter()
        .filter(|a| a.kind == "repository" && a.name == repo)
        .fold(ActionSet::NONE, |acc, a| acc.union(ActionSet::parse_words(a.actions.iter().map(String::as_str))))
}

/// Whether a token's access entries include the catalog.
pub fn token_allows_catalog(access: &[Access]) -> bool {
    access.iter().any(|a| a.kind == "registry" && a.name == "catalog" && a.actions.iter().any(|x| x == "*"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(grants: &[(&str, &[Action])]) -> Permissions {
        Permissions {
            grants: grants
                .iter()
                .map(|(p, a)| Grant { repositories: RepoPattern::new(p).unwrap(), actions: ActionSet::of(a) })
                .collect(),
            admin: false,
        }
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn scope_parsing() {
        let cases: &[(&str, &[(&str, &str, &[&str])])] = &[
            ("repository:library/app:pull", &[("repository", "library/app", &["pull"])]),
            ("repository:library/app:pull,push", &[("repository", "library/app", &["pull", "push"])]),
            ("repository:host:5000/app:pull", &[("repository", "host:5000/app", &["pull"])]),
            ("registry:catalog:*", &[("registry", "catalog", &["*"])]),
            ("repository:a:pull repository:b:push", &[("repository", "a", &["pull"]), ("repository", "b", &["push"])]),
            ("repository:a:", &[("repository", "a", &[])]),
            ("garbage", &[]),
            (":a:pull", &[]),
            ("", &[]),
        ];
        for (input, want) in cases {
            let got = parse_scope(input);
            let want: Vec<Access> = want
                .iter()
                .map(|(k, n, a)| Access { kind: k.to_string(), name: n.to_string(), actions: a.iter().map(|s| s.to_string()).collect() })
                .collect();
            assert_eq!(got, want, "{input}");
        }
    }

    #[test]
    fn intersection_table() {
        use Action::*;
        let p = perms(&[("library/*", &[Pull]), ("library/app", &[Push]), ("team/**", &[Pull, Push, Delete])]);
        let cases: &[(&str, &str)] = &[
            ("repository:library/app:pull,push", "repository:library/app:pull,push"),
            ("repository:library/other:pull,push", "repository:library/other:pull"),
            ("repository:library/a/b:pull", "repository:library/a/b:pull"),
            ("repository:other/app:pull", ""),
            ("repository:team/x:*", "repository:team/x:pull,push,delete"),
            ("repository:library/app:delete", ""),
            ("repository:Bad/Name:pull", ""),
            ("registry:catalog:*", ""),
            ("repository:library/app:pull repository:library/app:push", "repository:library/app:pull,push"),
        ];
        for (req, want) in cases {
            let got = intersect(&p, &parse_scope(req));
            assert_eq!(got, parse_scope(want), "{req}");
        }
        let admin = Permissions::admin();
        assert_eq!(intersect(&admin, &parse_scope("registry:catalog:*")), parse_scope("registry:catalog:*"));
        assert_eq!(
            intersect(&admin, &parse_scope("repository:x/y:pull,push,delete,bogus")),
            parse_scope("repository:x/y:pull,push,delete")
        );
    }

    #[test]
    fn token_checks() {
        let access = parse_scope("repository:a/b:pull,push registry:catalog:*");
        assert!(token_allows(&access, "a/b").contains(Action::Push));
        assert!(!token_allows(&access, "a/b").contains(Action::Delete));
        assert!(token_allows(&access, "a/c").is_empty());
        assert!(token_allows_catalog(&access));
        assert!(!token_allows_catalog(&parse_scope("repository:a:pull")));
    }

    #[test]
    fn patterns() {
        let p = RepoPattern::new("library/*").unwrap();
        assert!(p.matches("library/app"));
        assert!(p.matches("library/a/b"));
        assert!(!p.matches("libraryx/app"));
        assert!(!p.matches("other/library/app"));
        assert!(RepoPattern::any().matches("x"));
        assert!(RepoPattern::new("a/[").is_err());
    }
}
