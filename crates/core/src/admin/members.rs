//! Project members: local users and groups with a role in a project (see berth-access's
//! `roles` for what each role allows). A change moves the store's generation, so it reaches the
//! logins of every replica within the generation poll.

use berth_access::Role;
use berth_meta::{member_key, parse_member_key, MemberRecord};

use super::rfc3339;
use super::types::{MemberSpec, MemberView};
use crate::clock::now_secs;
use crate::{Core, Error, Result};

/// Longest group name accepted (OIDC groups can be long paths).
const MAX_GROUP_NAME: usize = 256;

fn member_view(m: &MemberRecord) -> MemberView {
    let (group, name) = parse_member_key(&m.member).unwrap_or((false, &m.member));
    MemberView {
        project: m.project.clone(),
        kind: if group { "group" } else { "user" }.to_owned(),
        name: name.to_owned(),
        role: m.role.clone(),
        created_at: rfc3339(m.created_at),
        updated_at: rfc3339(m.updated_at),
    }
}

fn validate_group_name(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > MAX_GROUP_NAME {
        return Err(Error::Invalid(format!("a group name has 1 to {MAX_GROUP_NAME} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::Invalid("a group name may not contain control characters".into()));
    }
    Ok(())
}

/// The member key of `kind` (`user` or `group`) and `name`, validated.
pub fn member_of(kind: &str, name: &str) -> Result<String> {
    match kind {
        "user" => {
            super::validate_user_name(name)?;
            Ok(member_key(false, name))
        }
        "group" => {
            validate_group_name(name)?;
            Ok(member_key(true, name))
        }
        _ => Err(Error::Invalid(format!("a member is a user or a group, not {:?}", kind.chars().take(32).collect::<String>()))),
    }
}

/// A member's key (`user:<name>` or `group:<name>`) and role, validated.
pub(crate) fn member_key_and_role(user: Option<&str>, group: Option<&str>, role: &str) -> Result<(String, Role)> {
    let key = match (user, group) {
        (Some(user), None) => member_of("user", user)?,
        (None, Some(group)) => member_of("group", group)?,
        _ => return Err(Error::Invalid("name either a user or a group".into())),
    };
    Ok((key, Role::parse(role).map_err(Error::Invalid)?))
}

impl Core {
    /// A project's members, groups first then users, by name.
    pub async fn list_members(&self, project: &str) -> Result<Vec<MemberView>> {
        self.meta.get_project(project).await?.ok_or_else(|| Error::not_found("project", project))?;
        Ok(self.meta.list_members(project).await?.iter().map(member_view).collect())
    }

    /// Adds a member or changes its role.
    pub async fn put_member(&self, project: &str, spec: &MemberSpec) -> Result<MemberView> {
        let (key, role) = member_key_and_role(spec.user.as_deref(), spec.group.as_deref(), &spec.role)?;
        self.meta.get_project(project).await?.ok_or_else(|| Error::not_found("project", project))?;
        let now = now_secs();
        self.meta
            .put_member(&MemberRecord { project: project.to_owned(), member: key.clone(), role: role.as_str().to_owned(), created_at: now, updated_at: now })
            .await?;
        self.changed().await;
        let stored = self.meta.list_members(project).await?.into_iter().find(|m| m.member == key);
        stored.map(|m| member_view(&m)).ok_or_else(|| Error::Conflict(format!("project {project:?} was deleted meanwhile")))
    }

    /// Removes a member.
    pub async fn delete_member(&self, project: &str, kind: &str, name: &str) -> Result<()> {
        let key = member_of(kind, name)?;
        if !self.meta.delete_member(project, &key).await? {
            return Err(Error::NotFound(format!("{kind} {name:?} is not a member of project {project:?}")));
        }
        self.changed().await;
        Ok(())
    }
}
