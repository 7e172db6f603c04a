//! Robot accounts and projects as access decisions: robot names (`robot$<project>+<name>` for
//! project robots, `robot$<name>` for system robots), the permission entries a robot carries
//! (project, repository glob, actions), their conversion to [`Permissions`], and the pull grant of
//! public projects. No IO; tested by tables.

use crate::{ActionSet, Grant, Permissions, RepoPattern};

/// The prefix of every robot account name.
pub const ROBOT_PREFIX: &str = "robot$";

/// A validated robot account name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RobotName {
    full: String,
    project: Option<String>,
}

/// A project name: one path component of a repository name (lowercase letters, digits and the
/// separators `.`, `_`, `-`, starting and ending with a letter or digit), at most 64 characters.
pub fn validate_project_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| ok_char(c) || matches!(c, '.' | '_' | '-'))
        && name.starts_with(ok_char)
        && name.ends_with(ok_char);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid project name {name:?}: use 1-64 lowercase letters, digits, '.', '_' or '-', starting and ending with a letter or digit"
        ))
    }
}

fn validate_robot_short_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(format!("invalid robot name {name:?}: use 1-128 letters, digits, '.', '_' or '-'"))
    }
}

impl RobotName {
    /// Builds the full name of a robot: `robot$<project>+<name>` or `robot$<name>`.
    pub fn new(project: Option<&str>, name: &str) -> Result<RobotName, String> {
        validate_robot_short_name(name)?;
        match project {
            Some(p) => {
                validate_project_name(p)?;
                Ok(RobotName { full: format!("{ROBOT_PREFIX}{p}+{name}"), project: Some(p.to_owned()) })
            }
            None => Ok(RobotName { full: format!("{ROBOT_PREFIX}{name}"), project: None }),
        }
    }
    /// Parses a full robot name.
    pub fn parse(full: &str) -> Result<RobotName, String> {
        let rest = full
            .strip_prefix(ROBOT_PREFIX)
            .ok_or_else(|| format!("robot names start with {ROBOT_PREFIX:?}: {full:?}"))?;
        match rest.split_once('+') {
            Some((p, n)) => RobotName::new(Some(p), n),
            None => RobotName::new(None, rest),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.full
    }
    /// The project of a project robot; None for a system robot.
    pub fn project(&self) -> Option<&str> {
        self.project.as_deref()
    }
}

impl std::fmt::Display for RobotName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.full)
    }
}

/// One permission entry of a robot, as written in the API and in `berth apply` files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PermissionSpec {
    /// The project the entry is about. Project robots may omit it (their own project) and may not
    /// name another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// A glob over repository names (`*` matches any characters, `/` included). Relative to the
    /// project unless it already starts with `<project>/`: `*` and `library/*` mean the same for
    /// project `library`.
    #[serde(default = "default_repositories")]
    pub repositories: String,
    /// `pull`, `push`, `delete`, or `*` for all three.
    pub actions: Vec<String>,
}

impl PermissionSpec {
    /// The short form people type (the CLI's `--allow`, the UI's permission lines):
    /// `REPOSITORY-GLOB:ACTIONS`, like `library/*:pull,push`.
    pub fn parse_short(s: &str) -> Result<PermissionSpec, String> {
        let (glob, actions) = s.trim().rsplit_once(':').ok_or_else(|| format!("permission {s:?}: use REPOSITORY-GLOB:ACTIONS, like 'library/*:pull,push'"))?;
        Ok(PermissionSpec { project: None, repositories: glob.to_owned(), actions: actions.split(',').map(|a| a.trim().to_owned()).collect() })
    }
}

fn default_repositories() -> String {
    "*".into()
}

/// Turns a robot's permission entries into [`Permissions`]. `robot_project` is the robot's own
/// project (None for system robots). A project robot's entries stay inside its project; a system
/// robot's entry without a project is a glob over full repository names.
pub fn robot_permissions(robot_project: Option<&str>, entries: &[PermissionSpec]) -> Result<Permissions, String> {
    let mut grants = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let project = match (robot_project, e.project.as_deref()) {
            (Some(own), Some(other)) if own != other => {
                return Err(format!(
                    "permission {i}: a robot of project {own:?} cannot be given access to project {other:?}; use a system robot"
                ))
            }
            (Some(own), _) => Some(own),
            (None, p) => p,
        };
        if let Some(p) = project {
            validate_project_name(p).map_err(|m| format!("permission {i}: {m}"))?;
        }
        let repositories = e.repositories.trim();
        if repositories.is_empty() {
            return Err(format!("permission {i}: repositories must not be empty (use \"*\")"));
        }
        let pattern = match project {
            Some(p) if repositories.starts_with(&format!("{p}/")) => repositories.to_owned(),
            Some(p) => format!("{p}/{repositories}"),
            None => repositories.to_owned(),
        };
        let mut actions = ActionSet::NONE;
        for a in &e.actions {
            let set = ActionSet::parse_words([a.as_str()]);
            if set.is_empty() {
                return Err(format!("permission {i}: unknown action {a:?} (use pull, push, delete or *)"));
            }
            actions = actions.union(set);
        }
        if actions.is_empty() {
            return Err(format!("permission {i}: no actions given (use pull, push, delete or *)"));
        }
        let repositories = RepoPattern::new(&pattern).map_err(|m| format!("permission {i}: {m}"))?;
        grants.push(Grant { repositories, actions });
    }
    Ok(Permissions { grants, admin: false })
}

/// Pull on every repository of the given public projects (for anonymous callers and everyone).
pub fn public_pull<'a>(public_projects: impl IntoIterator<Item = &'a str>) -> Permissions {
    let grants = public_projects
        .into_iter()
        .filter_map(|p| RepoPattern::new(&format!("{}/*", globset_escape(p))).ok())
        .map(|repositories| Grant { repositories, actions: ActionSet::of(&[crate::Action::Pull]) })
        .collect();
    Permissions { grants, admin: false }
}

/// The permissions a registry token's `access` entries stand for (each repository exactly, with
/// its actions), so a token can be traded for another token with at most the same access.
pub fn permissions_from_access(access: &[crate::Access]) -> Permissions {
    let grants = access
        .iter()
        .filter(|a| a.kind == "repository")
        .filter_map(|a| {
            let repositories = RepoPattern::new(&globset_escape(&a.name)).ok()?;
            Some(Grant { repositories, actions: ActionSet::parse_words(a.actions.iter().map(String::as_str)) })
        })
        .collect();
    Permissions { grants, admin: false }
}

/// Project names are restricted to characters with no glob meaning, but escape anyway.
fn globset_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '*' | '?' | '[' | ']' | '{' | '}' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Action;

    #[test]
    fn robot_names() {
        let cases: &[(&str, Result<Option<&str>, &str>)] = &[
            ("robot$library+ci", Ok(Some("library"))),
            ("robot$deployer", Ok(None)),
            ("robot$my-proj.x+build_1", Ok(Some("my-proj.x"))),
            ("library+ci", Err("start with")),
            ("robot$", Err("invalid robot name")),
            ("robot$Library+ci", Err("invalid project name")),
            ("robot$library+", Err("invalid robot name")),
            ("robot$lib+c/i", Err("invalid robot name")),
        ];
        for (input, want) in cases {
            match (RobotName::parse(input), want) {
                (Ok(r), Ok(p)) => {
                    assert_eq!(r.project(), *p, "{input}");
                    assert_eq!(r.as_str(), *input);
                }
                (Err(e), Err(w)) => assert!(e.contains(w), "{input}: {e}"),
                (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
            }
        }
    }

    fn spec(project: Option<&str>, repos: &str, actions: &[&str]) -> PermissionSpec {
        PermissionSpec { project: project.map(Into::into), repositories: repos.into(), actions: actions.iter().map(|a| a.to_string()).collect() }
    }

    #[test]
    fn permissions_table() {
        struct Case {
            name: &'static str,
            robot_project: Option<&'static str>,
            entries: Vec<PermissionSpec>,
            // (repository, allowed actions)
            checks: Vec<(&'static str, &'static [Action])>,
        }
        let cases = vec![
            Case {
                name: "project robot, full glob",
                robot_project: Some("library"),
                entries: vec![spec(None, "library/*", &["pull", "push"])],
                checks: vec![("library/app", &[Action::Pull, Action::Push]), ("library/a/b", &[Action::Pull, Action::Push]), ("other/app", &[]), ("library", &[])],
            },
            Case {
                name: "project robot, relative glob",
                robot_project: Some("library"),
                entries: vec![spec(None, "app-*", &["pull"])],
                checks: vec![("library/app-1", &[Action::Pull]), ("library/web", &[]), ("app-1", &[])],
            },
            Case {
                name: "project robot, glob that looks outside is kept inside",
                robot_project: Some("library"),
                entries: vec![spec(None, "*/x", &["*"])],
                checks: vec![("library/a/x", &[Action::Pull, Action::Push, Action::Delete]), ("other/x", &[])],
            },
            Case {
                name: "system robot, per-project entries united",
                robot_project: None,
                entries: vec![spec(Some("a"), "*", &["pull"]), spec(Some("b"), "svc", &["push", "delete"])],
                checks: vec![("a/x", &[Action::Pull]), ("b/svc", &[Action::Push, Action::Delete]), ("b/other", &[])],
            },
            Case {
                name: "system robot, global glob",
                robot_project: None,
                entries: vec![spec(None, "*", &["pull"])],
                checks: vec![("anything/at/all", &[Action::Pull])],
            },
        ];
        for c in cases {
            let p = robot_permissions(c.robot_project, &c.entries).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert!(!p.admin);
            for (repo, want) in c.checks {
                assert_eq!(p.on(repo), ActionSet::of(want), "{}: {repo}", c.name);
            }
        }
    }

    #[test]
    fn permission_errors() {
        let cases = vec![
            (Some("library"), spec(Some("other"), "*", &["pull"]), "cannot be given access"),
            (None, spec(None, "*", &["fly"]), "unknown action"),
            (None, spec(None, "*", &[]), "no actions"),
            (None, spec(None, " ", &["pull"]), "must not be empty"),
            (None, spec(Some("Bad"), "*", &["pull"]), "invalid project name"),
            (None, spec(None, "a/[", &["pull"]), "invalid repository pattern"),
        ];
        for (project, s, want) in cases {
            let e = robot_permissions(project, std::slice::from_ref(&s)).unwrap_err();
            assert!(e.contains(want), "{s:?}: {e}");
        }
    }

    #[test]
    fn public_projects_grant_pull_only() {
        let p = public_pull(["library", "pub"]);
        assert_eq!(p.on("library/app"), ActionSet::of(&[Action::Pull]));
        assert_eq!(p.on("pub/a/b"), ActionSet::of(&[Action::Pull]));
        assert_eq!(p.on("private/app"), ActionSet::NONE);
        assert_eq!(p.on("library"), ActionSet::NONE);
    }

    #[test]
    fn access_entries_become_exact_permissions() {
        let access = crate::parse_scope("repository:a/b:pull repository:c:pull,push registry:catalog:*");
        let p = permissions_from_access(&access);
        assert_eq!(p.on("a/b"), ActionSet::of(&[Action::Pull]));
        assert_eq!(p.on("a/bc"), ActionSet::NONE);
        assert_eq!(p.on("c"), ActionSet::of(&[Action::Pull, Action::Push]));
        assert!(!p.admin);
    }

    #[test]
    fn project_names() {
        for ok in ["library", "a", "my-proj.x_1", "0day"] {
            validate_project_name(ok).unwrap();
        }
        for bad in ["", "-a", "a-", "Lib", "a/b", &"x".repeat(65)] {
            assert!(validate_project_name(bad).is_err(), "{bad}");
        }
    }
}
