//! Robot accounts: project robots (`robot$<project>+<name>`) and system robots (`robot$<name>`),
//! federated (claim rules of one identity provider) or with a static secret.

use berth_access::RobotName;
use berth_meta::RobotRecord;

use super::types::{RobotCreated, RobotSpec, RobotView};
use super::{hash_secret, parse_time, rfc3339};
use crate::clock::now_secs;
use crate::{Core, Error, Result};

/// Which robots `list_robots` returns (`GET /api/v1/robots?project=`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RobotFilter {
    /// Only robots of this project.
    pub project: Option<String>,
}

pub(crate) fn robot_view(r: &RobotRecord) -> RobotView {
    RobotView {
        name: r.name.clone(),
        project: r.project.clone(),
        description: r.description.clone(),
        disabled: r.disabled,
        expires_at: r.expires_at.map(rfc3339),
        kind: if r.identity_provider.is_some() { "federated".into() } else { "secret".into() },
        identity_provider: r.identity_provider.clone(),
        rules: r.rules.clone(),
        permissions: r.permissions.clone(),
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
    }
}

/// Validates a robot spec into a record (without a secret hash; the caller decides). Checks the
/// name, the claim rules (compiled), that federated robots have rules and static ones none, the
/// permission entries (a project robot's stay inside its project) and the expiry time. Whether
/// its project and identity provider exist is checked by the store when writing.
pub fn robot_record(spec: &RobotSpec) -> Result<RobotRecord> {
    let name = if spec.name.starts_with(berth_access::robot::ROBOT_PREFIX) {
        let n = RobotName::parse(&spec.name).map_err(Error::Invalid)?;
        if spec.project.is_some() && spec.project.as_deref() != n.project() {
            return Err(Error::Invalid(format!("robot {} is not in project {:?}", spec.name, spec.project.as_deref().unwrap_or(""))));
        }
        n
    } else {
        RobotName::new(spec.project.as_deref(), &spec.name).map_err(Error::Invalid)?
    };
    for (i, r) in spec.rules.iter().enumerate() {
        berth_claims::Rule::compile(r).map_err(|e| Error::Invalid(format!("rule {i}: {e}")))?;
    }
    if spec.identity_provider.is_none() && !spec.rules.is_empty() {
        return Err(Error::Invalid("rules need `identityProvider`: only federated robots have claim rules".into()));
    }
    if let (Some(idp), true) = (&spec.identity_provider, spec.rules.is_empty()) {
        return Err(Error::Invalid(format!(
            "robot {name} is federated with {idp:?} but has no rules: it would accept every token of that identity provider. \
             Add at least one rule (like repository=myorg/myrepo)"
        )));
    }
    if let Some(project) = name.project() {
        for (i, p) in spec.permissions.iter().enumerate() {
            if p.project.is_none() {
                outside_project(project, i, &p.repositories)?;
            }
        }
    }
    berth_access::robot_permissions(name.project(), &spec.permissions).map_err(Error::Invalid)?;
    let expires_at = spec.expires_at.as_deref().map(|t| parse_time("expiresAt", t)).transpose()?;
    let to_json = |v: serde_json::Result<serde_json::Value>| v.map_err(|e| Error::internal("encoding a robot", e));
    let now = now_secs();
    Ok(RobotRecord {
        name: name.as_str().to_owned(),
        project: name.project().map(str::to_owned),
        description: spec.description.clone().unwrap_or_default(),
        disabled: spec.disabled,
        expires_at,
        secret_hash: None,
        identity_provider: spec.identity_provider.clone(),
        rules: to_json(serde_json::to_value(&spec.rules))?,
        permissions: to_json(serde_json::to_value(&spec.permissions))?,
        created_at: now,
        updated_at: now,
    })
}

/// Refuses a project robot's repository pattern that names another project: `other/*` on a robot
/// of `library` would otherwise quietly become `library/other/*`. Patterns without `/` (`*`,
/// `app`) are relative to the project; patterns with `/` must start with `<project>/`.
pub fn outside_project(project: &str, i: usize, repositories: &str) -> Result<()> {
    let r = repositories.trim();
    match r.split_once('/') {
        Some((first, _)) if first != project => Err(Error::Invalid(format!(
            "permission {i}: {r:?} is outside project {project:?}; a project robot reaches only its own repositories. \
             Write \"{project}/{r}\" for a repository inside {project}, or use a system robot (no project) for other projects"
        ))),
        _ => Ok(()),
    }
}

/// A fresh static secret and its hash.
pub(crate) async fn fresh_secret() -> Result<(String, String)> {
    let secret = berth_identity::password::generate();
    let hash = hash_secret(secret.clone()).await?;
    Ok((secret, hash))
}

fn already_exists(name: &str) -> Error {
    Error::Conflict(format!("robot {name} already exists (PUT /api/v1/robots/{name} updates it)"))
}

impl Core {
    /// All robots, or those of one project, by name.
    pub async fn list_robots(&self, filter: &RobotFilter) -> Result<Vec<RobotView>> {
        Ok(self.meta.list_robots(filter.project.as_deref()).await?.iter().map(robot_view).collect())
    }

    /// Creates a robot; a static-secret robot gets a fresh secret, returned once. `Conflict` if
    /// a robot of that name exists (decided atomically by the store: of concurrent creates of
    /// one name exactly one succeeds) or its project or identity provider does not.
    pub async fn create_robot(&self, spec: &RobotSpec) -> Result<RobotCreated> {
        let mut rec = robot_record(spec)?;
        // Spares the password hash when the name is visibly taken; the store decides below.
        if self.meta.get_robot(&rec.name).await?.is_some() {
            return Err(already_exists(&rec.name));
        }
        let mut secret = None;
        if rec.identity_provider.is_none() {
            let (fresh, hash) = fresh_secret().await?;
            rec.secret_hash = Some(hash);
            secret = Some(fresh);
        }
        if !self.meta.create_robot(&rec).await? {
            return Err(already_exists(&rec.name));
        }
        self.changed().await;
        Ok(RobotCreated { robot: robot_view(&rec), secret })
    }

    pub async fn get_robot(&self, name: &str) -> Result<RobotView> {
        let r = self.meta.get_robot(name).await?.ok_or_else(|| Error::not_found("robot", name))?;
        Ok(robot_view(&r))
    }

    /// Creates or replaces the robot `name` (the spec must name the same robot). A static robot
    /// keeps its secret; one that has none gets a fresh secret, returned once.
    pub async fn put_robot(&self, name: &str, spec: &RobotSpec) -> Result<RobotCreated> {
        let mut rec = robot_record(spec)?;
        if rec.name != name {
            return Err(Error::Invalid(format!("the body names robot {} but the URL {name}", rec.name)));
        }
        let mut secret = None;
        if rec.identity_provider.is_none() {
            match self.meta.get_robot(name).await?.and_then(|e| e.secret_hash) {
                Some(kept) => rec.secret_hash = Some(kept),
                None => {
                    let (fresh, hash) = fresh_secret().await?;
                    rec.secret_hash = Some(hash);
                    secret = Some(fresh);
                }
            }
        }
        self.meta.put_robot(&rec).await?;
        self.changed().await;
        let stored = self.meta.get_robot(name).await?.ok_or_else(|| Error::not_found("robot", name))?;
        Ok(RobotCreated { robot: robot_view(&stored), secret })
    }

    /// Gives a static-secret robot a fresh secret (returned once); the old one stops working.
    pub async fn regenerate_robot_secret(&self, name: &str) -> Result<RobotCreated> {
        let mut r = self.meta.get_robot(name).await?.ok_or_else(|| Error::not_found("robot", name))?;
        if r.identity_provider.is_some() {
            return Err(Error::Invalid(format!("robot {name} is federated: it has no secret")));
        }
        let (fresh, hash) = fresh_secret().await?;
        r.secret_hash = Some(hash);
        r.updated_at = now_secs();
        self.meta.put_robot(&r).await?;
        self.changed().await;
        Ok(RobotCreated { robot: robot_view(&r), secret: Some(fresh) })
    }

    pub async fn delete_robot(&self, name: &str) -> Result<()> {
        if !self.meta.delete_robot(name).await? {
            return Err(Error::not_found("robot", name));
        }
        self.changed().await;
        Ok(())
    }
}
