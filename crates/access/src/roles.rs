//! Project roles: what a member of a project (a user, or everyone in a group that is a member)
//! may do there. The roles and their matrix follow Harbor's built-in project roles, so teams
//! that move from Harbor recognise them; docs/people.md shows the same table.
//!
//! | capability                                  | limited guest | guest | developer | maintainer | project admin |
//! |---------------------------------------------|:-:|:-:|:-:|:-:|:-:|
//! | pull, see the project's repositories and tags | ✓ | ✓ | ✓ | ✓ | ✓ |
//! | see the project's members                   |   | ✓ | ✓ | ✓ | ✓ |
//! | see the project's audit log                 |   | ✓ | ✓ | ✓ | ✓ |
//! | push (create repositories, tags)            |   |   | ✓ | ✓ | ✓ |
//! | delete manifests, tags and blobs            |   |   |   | ✓ | ✓ |
//! | manage members                              |   |   |   |   | ✓ |
//! | manage robots (and their claim rules)       |   |   |   |   | ✓ |
//! | edit the project (public or not)            |   |   |   |   | ✓ |
//!
//! A system administrator may do everything everywhere; that is decided before roles
//! ([`crate::Permissions::admin`]). Pure: no IO, tested by tables.

use crate::{Action, ActionSet, Grant, Permissions, RepoPattern};

/// A member's role in one project, from the least to the most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    LimitedGuest,
    Guest,
    Developer,
    Maintainer,
    ProjectAdmin,
}

/// What a role may do in its project besides the registry actions of [`Role::actions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Pull, and see the project's repositories and tags (catalog, tag lists).
    Read,
    /// See who the project's members are.
    ListMembers,
    /// See the project's audit log.
    ReadAudit,
    /// Push: create repositories, blobs, manifests and tags.
    Push,
    /// Delete manifests, tags and blobs.
    Delete,
    /// Add, change and remove members.
    ManageMembers,
    /// Create, change and delete the project's robots (also federated ones and their rules).
    ManageRobots,
    /// Change the project itself (whether it is public).
    EditProject,
}

impl Capability {
    pub const ALL: [Capability; 8] = [
        Capability::Read,
        Capability::ListMembers,
        Capability::ReadAudit,
        Capability::Push,
        Capability::Delete,
        Capability::ManageMembers,
        Capability::ManageRobots,
        Capability::EditProject,
    ];

    /// What it is, in the words of a refusal ("managing members needs ...").
    pub fn describe(self) -> &'static str {
        match self {
            Capability::Read => "pulling",
            Capability::ListMembers => "listing members",
            Capability::ReadAudit => "reading the audit log",
            Capability::Push => "pushing",
            Capability::Delete => "deleting",
            Capability::ManageMembers => "managing members",
            Capability::ManageRobots => "managing robots",
            Capability::EditProject => "changing the project",
        }
    }
}

impl Role {
    pub const ALL: [Role; 5] = [Role::LimitedGuest, Role::Guest, Role::Developer, Role::Maintainer, Role::ProjectAdmin];

    /// The name used in the CLI, the API and `berth apply`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::LimitedGuest => "limited-guest",
            Role::Guest => "guest",
            Role::Developer => "developer",
            Role::Maintainer => "maintainer",
            Role::ProjectAdmin => "project-admin",
        }
    }

    /// Parses a role name; also accepts Harbor's spellings (`projectAdmin`, `limitedGuest`,
    /// `master` for maintainer) and underscores, case-insensitively.
    pub fn parse(text: &str) -> Result<Role, String> {
        let key: String = text.trim().chars().filter(|c| !matches!(c, '-' | '_' | ' ')).collect::<String>().to_ascii_lowercase();
        match key.as_str() {
            "limitedguest" => Ok(Role::LimitedGuest),
            "guest" => Ok(Role::Guest),
            "developer" => Ok(Role::Developer),
            "maintainer" | "master" => Ok(Role::Maintainer),
            "projectadmin" | "admin" => Ok(Role::ProjectAdmin),
            _ => Err(format!(
                "unknown role {:?}; roles are {}",
                text.chars().take(64).collect::<String>(),
                Role::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
            )),
        }
    }

    /// The matrix: whether this role may do `what` in its project.
    pub fn allows(self, what: Capability) -> bool {
        let least = match what {
            Capability::Read => Role::LimitedGuest,
            Capability::ListMembers | Capability::ReadAudit => Role::Guest,
            Capability::Push => Role::Developer,
            Capability::Delete => Role::Maintainer,
            Capability::ManageMembers | Capability::ManageRobots | Capability::EditProject => Role::ProjectAdmin,
        };
        self >= least
    }

    /// The registry actions this role has on the project's repositories.
    pub fn actions(self) -> ActionSet {
        let mut actions = Vec::new();
        for (capability, action) in [(Capability::Read, Action::Pull), (Capability::Push, Action::Push), (Capability::Delete, Action::Delete)] {
            if self.allows(capability) {
                actions.push(action);
            }
        }
        ActionSet::of(&actions)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The least role that has `action` in a project.
pub fn least_role_for(action: Action) -> Role {
    Role::ALL.into_iter().find(|r| r.actions().contains(action)).unwrap_or(Role::ProjectAdmin)
}

/// Why a person may not do `action` in `project`, naming their role there (None: not a
/// member) and the least role that would do: the words a refused push or pull carries.
pub fn refusal(person: &str, project: &str, role: Option<Role>, action: Action) -> String {
    let least = least_role_for(action);
    match role {
        None => format!(
            "{person} is not a member of project {project}; {} needs the {least} role or higher there (a project admin adds you or your group: berth project member add {project} --user {person} --role {least})",
            action.as_str()
        ),
        Some(r) => format!(
            "{person} is {r} in project {project}, which does not allow {}; that needs the {least} role or higher (a project admin can change it)",
            action.as_str()
        ),
    }
}

/// The role that counts when a person holds several in one project (as a user and through
/// groups): the highest. None when there is none.
pub fn effective_role(roles: impl IntoIterator<Item = Role>) -> Option<Role> {
    roles.into_iter().max()
}

/// A person's registry permissions from their roles: `(project, role)` pairs (the same project
/// may appear several times; the highest role counts). The grants cover `<project>/*` only, so
/// users go through the same scope intersection as robots ([`crate::intersect`]). Pairs with an
/// invalid project name are skipped (the store never holds one).
pub fn member_permissions<'a>(memberships: impl IntoIterator<Item = (&'a str, Role)>) -> Permissions {
    let mut best: std::collections::BTreeMap<&str, Role> = std::collections::BTreeMap::new();
    for (project, role) in memberships {
        let entry = best.entry(project).or_insert(role);
        *entry = (*entry).max(role);
    }
    let grants = best
        .into_iter()
        .filter(|(project, _)| crate::validate_project_name(project).is_ok())
        .filter_map(|(project, role)| RepoPattern::new(&format!("{project}/*")).ok().map(|repositories| Grant { repositories, actions: role.actions() }))
        .collect();
    Permissions { grants, admin: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The matrix, row by row, as in the module docs and docs/people.md.
    #[test]
    fn refusals_name_the_role() {
        let rows = [
            (Some(Role::Guest), Action::Push, "alice is guest in project team, which does not allow push; that needs the developer role or higher"),
            (Some(Role::Developer), Action::Delete, "alice is developer in project team, which does not allow delete; that needs the maintainer role or higher"),
            (Some(Role::LimitedGuest), Action::Push, "alice is limited-guest in project team, which does not allow push"),
            (None, Action::Pull, "alice is not a member of project team; pull needs the limited-guest role or higher there"),
        ];
        for (role, action, want) in rows {
            let got = refusal("alice", "team", role, action);
            assert!(got.starts_with(want), "{got}");
        }
        assert_eq!(least_role_for(Action::Pull), Role::LimitedGuest);
        assert_eq!(least_role_for(Action::Push), Role::Developer);
        assert_eq!(least_role_for(Action::Delete), Role::Maintainer);
    }

    #[test]
    fn matrix() {
        use Capability::*;
        //                          limited guest, guest, developer, maintainer, project admin
        let rows: [(Capability, [bool; 5]); 8] = [
            (Read, [true, true, true, true, true]),
            (ListMembers, [false, true, true, true, true]),
            (ReadAudit, [false, true, true, true, true]),
            (Push, [false, false, true, true, true]),
            (Delete, [false, false, false, true, true]),
            (ManageMembers, [false, false, false, false, true]),
            (ManageRobots, [false, false, false, false, true]),
            (EditProject, [false, false, false, false, true]),
        ];
        assert_eq!(rows.len(), Capability::ALL.len(), "every capability has a row");
        for (capability, expected) in rows {
            for (role, want) in Role::ALL.into_iter().zip(expected) {
                assert_eq!(role.allows(capability), want, "{role} / {capability:?}");
            }
        }
    }

    #[test]
    fn registry_actions() {
        let cases = [
            (Role::LimitedGuest, "pull"),
            (Role::Guest, "pull"),
            (Role::Developer, "pull,push"),
            (Role::Maintainer, "pull,push,delete"),
            (Role::ProjectAdmin, "pull,push,delete"),
        ];
        for (role, want) in cases {
            assert_eq!(role.actions(), ActionSet::parse_words(want.split(',')), "{role}");
        }
    }

    #[test]
    fn names() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        for (text, role) in [
            ("projectAdmin", Role::ProjectAdmin),
            ("Project Admin", Role::ProjectAdmin),
            ("limitedGuest", Role::LimitedGuest),
            ("limited_guest", Role::LimitedGuest),
            ("master", Role::Maintainer),
            (" DEVELOPER ", Role::Developer),
        ] {
            assert_eq!(Role::parse(text), Ok(role), "{text}");
        }
        let e = Role::parse("owner").unwrap_err();
        assert!(e.contains("unknown role \"owner\"") && e.contains("limited-guest, guest, developer, maintainer, project-admin"), "{e}");
        assert!(Role::parse(&"x".repeat(10_000)).unwrap_err().len() < 300, "the message caps the input");
    }

    #[test]
    fn highest_role_counts() {
        assert_eq!(effective_role([]), None);
        assert_eq!(effective_role([Role::Guest, Role::Maintainer, Role::Developer]), Some(Role::Maintainer));
        let p = member_permissions([("team", Role::Guest), ("team", Role::Developer), ("other", Role::LimitedGuest), ("Bad Name", Role::ProjectAdmin)]);
        assert!(!p.admin);
        assert_eq!(p.on("team/app"), ActionSet::parse_words(["pull", "push"]));
        assert_eq!(p.on("team/a/b"), ActionSet::parse_words(["pull", "push"]), "nested repositories");
        assert_eq!(p.on("other/app"), ActionSet::parse_words(["pull"]));
        assert_eq!(p.on("teamx/app"), ActionSet::NONE, "a prefix of another project's name");
        assert_eq!(p.on("team"), ActionSet::NONE, "the project name alone is no repository of it");
        assert_eq!(p.grants.len(), 2, "the invalid project name is skipped");
    }
}
