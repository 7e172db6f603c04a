//! Local users: names, argon2id passwords, the admin and disabled flags. The store refuses a
//! change that would leave no enabled admin (a `Conflict`).

use berth_meta::UserRecord;

use super::hash_secret;
use super::types::{UserIdentitySpec, UserSpec, UserView};
use crate::{Core, Error, Result};

/// What `put_user` did: the user as stored, and whether it was created (else replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSaved {
    pub user: UserView,
    pub created: bool,
}

/// A user as the API shows it (never the password hash).
pub fn user_view(u: &UserRecord) -> UserView {
    UserView {
        name: u.name.clone(),
        admin: u.admin,
        disabled: u.disabled,
        identity: u.identity.as_ref().map(|i| UserIdentitySpec { provider: i.provider.clone(), subject: i.subject.clone() }),
        email: u.email.clone(),
        groups: u.groups.clone(),
        last_login_at: u.last_login_at.map(super::rfc3339),
    }
}

/// User names: what `berth user set` and logins accept (no `:`, which Basic credentials split
/// on; not a robot name; printable).
pub fn validate_user_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 128 {
        return Err(Error::Invalid("a user name has 1 to 128 characters".into()));
    }
    if name.starts_with(berth_access::robot::ROBOT_PREFIX) {
        return Err(Error::Invalid(format!("{name:?} is a robot name; robots are managed under /api/v1/robots")));
    }
    if name.chars().any(|c| c == ':' || c.is_control() || c.is_whitespace()) {
        return Err(Error::Invalid(format!("user name {name:?} may not contain ':', spaces or control characters")));
    }
    Ok(())
}

/// Local groups: valid group names, sorted, each once, at most 256.
pub fn validate_local_groups(groups: Vec<String>) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        super::members::member_of("group", &g)?;
        out.push(g);
    }
    out.sort();
    out.dedup();
    if out.len() > 256 {
        return Err(Error::Invalid("a user is in at most 256 local groups".into()));
    }
    Ok(out)
}

impl Core {
    /// All users, by name (never their password hashes).
    pub async fn list_users(&self) -> Result<Vec<UserView>> {
        Ok(self.meta.list_users().await?.iter().map(user_view).collect())
    }

    pub async fn get_user(&self, name: &str) -> Result<UserView> {
        let u = self.meta.get_user(name).await?.ok_or_else(|| Error::not_found("user", name))?;
        Ok(user_view(&u))
    }

    /// Creates the user (a password of at least 8 characters is then required) or replaces its
    /// flags, and its password when one is given.
    pub async fn put_user(&self, name: &str, spec: UserSpec) -> Result<UserSaved> {
        validate_user_name(name)?;
        let existing = self.meta.get_user(name).await?;
        let identity = match &spec.identity {
            Some(i) => {
                self.federation.login_provider_config(&i.provider).await.map_err(|_| {
                    Error::Invalid(format!("there is no identity provider {:?} with a login section to link user {name:?} to", i.provider))
                })?;
                let issuer = self
                    .stored_providers()
                    .await?
                    .into_iter()
                    .find(|(n, _)| *n == i.provider)
                    .map(|(_, p)| p.issuer)
                    .ok_or_else(|| Error::Invalid(format!("identity provider {:?} does not exist", i.provider)))?;
                if i.subject.is_empty() || i.subject.len() > 255 {
                    return Err(Error::Invalid("a subject has 1 to 255 characters".into()));
                }
                Some(berth_meta::UserIdentity { provider: i.provider.clone(), issuer, subject: i.subject.clone() })
            }
            None => existing.as_ref().and_then(|e| e.identity.clone()),
        };
        let password_hash = match (spec.password, &existing) {
            (Some(pw), _) => {
                if pw.chars().count() < 8 {
                    return Err(Error::Invalid("the password must have at least 8 characters".into()));
                }
                hash_secret(pw).await?
            }
            (None, Some(e)) => e.password_hash.clone(),
            (None, None) if identity.is_some() => String::new(),
            (None, None) => return Err(Error::Invalid(format!("user {name:?} does not exist yet: give it a `password` or an `identity`"))),
        };
        let now = crate::clock::now_secs();
        let mut rec = match &existing {
            Some(e) => UserRecord { password_hash, admin: spec.admin, disabled: spec.disabled, identity, ..e.clone() },
            None => UserRecord { name: name.to_owned(), password_hash, admin: spec.admin, disabled: spec.disabled, identity, created_at: now, ..Default::default() },
        };
        if let Some(groups) = spec.groups {
            if let Some(i) = &rec.identity {
                return Err(Error::Invalid(format!(
                    "user {name:?} logs in through identity provider {:?}: their groups come from it at every login, not from Berth",
                    i.provider
                )));
            }
            rec.groups = validate_local_groups(groups)?;
        }
        self.meta.put_user(&rec).await?;
        self.changed().await;
        Ok(UserSaved { user: user_view(&rec), created: existing.is_none() })
    }

    pub async fn delete_user(&self, name: &str) -> Result<()> {
        if !self.meta.delete_user(name).await? {
            return Err(Error::not_found("user", name));
        }
        Ok(())
    }
}
