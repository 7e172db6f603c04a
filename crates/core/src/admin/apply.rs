//! Declarative apply (`berth apply -f berth.yaml`, `POST /api/v1/apply`): a whole document of
//! projects, identity providers, project members and robots, checked whole, then written in one
//! transaction.

use std::collections::BTreeMap;

use berth_identity::federation::Provider;
use berth_meta::{ApplyAction, ApplyBatch, IdentityProviderRecord, MemberRecord, ProjectRecord, RobotRecord};

use super::providers::idp_record_resolved;
use super::robots::{fresh_secret, robot_record};
use super::types::{ApplyDocument, ApplyReport, Change};
use super::within;
use crate::clock::now_secs;
use crate::{Core, Error, Result};

/// An apply document checked whole, before anything is written: the records to write.
#[derive(Debug, Clone)]
pub struct ValidatedDocument {
    pub identity_providers: Vec<(IdentityProviderRecord, Provider)>,
    pub robots: Vec<RobotRecord>,
    /// (project, member key, role).
    pub members: Vec<(String, String, berth_access::Role)>,
}

/// Validates a whole apply document without a store (the part `berth apply` and
/// `POST /api/v1/apply` share; fuzzed by `fuzz/fuzz_targets/apply.rs`): project names,
/// identity providers (resolved, issuers compared with `others` that the document does not
/// replace and with each other), robots. The store's references (projects and providers that
/// exist) are checked when writing.
pub fn validate_document(doc: &ApplyDocument, others: Vec<(String, Provider)>) -> Result<ValidatedDocument> {
    for p in &doc.projects {
        berth_access::validate_project_name(&p.name).map_err(|e| Error::Invalid(format!("projects: {e}")))?;
    }
    let resolved = doc
        .identity_providers
        .iter()
        .map(|p| idp_record_resolved(p).map_err(|e| within(format_args!("identity provider {:?}", p.name), e)))
        .collect::<Result<Vec<_>>>()?;
    let mut providers: Vec<(String, Provider)> = others.into_iter().filter(|(n, _)| !resolved.iter().any(|(r, _)| &r.name == n)).collect();
    for (rec, p) in &resolved {
        if let Some(why) = berth_identity::federation::issuer::issuer_conflict(&rec.name, p, providers.iter().map(|(n, p)| (n.as_str(), p))) {
            return Err(Error::Conflict(why));
        }
        providers.push((rec.name.clone(), p.clone()));
    }
    let robots = doc
        .robots
        .iter()
        .map(|r| robot_record(r).map_err(|e| within(format_args!("robot {:?}", r.name), e)))
        .collect::<Result<Vec<_>>>()?;
    let members = doc
        .members
        .iter()
        .map(|m| {
            berth_access::validate_project_name(&m.project).map_err(|e| Error::Invalid(format!("members: {e}")))?;
            let (key, role) = super::members::member_key_and_role(m.user.as_deref(), m.group.as_deref(), &m.role)
                .map_err(|e| within(format_args!("member of project {:?}", m.project), e))?;
            Ok((m.project.clone(), key, role))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ValidatedDocument { identity_providers: resolved, robots, members })
}

/// How many times a static robot that lost its secret to a concurrent writer (between the read
/// that decided it needed none and the apply) is given a fresh one.
const SECRET_REPAIRS: usize = 3;

impl Core {
    /// Applies a document idempotently: checks it whole, then writes its projects, identity
    /// providers and robots in that order in one transaction of the store, skipping objects that
    /// already match. Any failure (a robot of an unknown project, ...) writes nothing. A static
    /// robot created by the document (or that had no secret) gets a fresh secret, reported once.
    pub async fn apply(&self, doc: &ApplyDocument) -> Result<ApplyReport> {
        let mut doc = doc.clone();
        for p in &mut doc.identity_providers {
            self.keep_client_secret(p).await?;
        }
        let doc = &doc;
        let valid = validate_document(doc, self.stored_providers().await?)?;
        let now = now_secs();
        let projects: Vec<ProjectRecord> =
            doc.projects.iter().map(|p| ProjectRecord { name: p.name.clone(), public: p.public, created_at: now }).collect();
        let idps: Vec<IdentityProviderRecord> = valid.identity_providers.into_iter().map(|(rec, _)| rec).collect();
        let mut robots = valid.robots;
        let members: Vec<MemberRecord> = valid
            .members
            .into_iter()
            .map(|(project, member, role)| MemberRecord { project, member, role: role.as_str().to_owned(), created_at: now, updated_at: now })
            .collect();

        // The store keeps a static robot's stored secret and takes the batch's hash only for one
        // that has none; hashing is slow, so only those that have none now get a fresh secret.
        let mut fresh: Vec<Option<String>> = vec![None; robots.len()];
        for (rec, secret) in robots.iter_mut().zip(fresh.iter_mut()) {
            if rec.identity_provider.is_none() && self.meta.get_robot(&rec.name).await?.is_none_or(|e| e.secret_hash.is_none()) {
                let (s, hash) = fresh_secret().await?;
                rec.secret_hash = Some(hash);
                *secret = Some(s);
            }
        }

        let outcome = self.meta.apply(ApplyBatch { projects: &projects, identity_providers: &idps, robots: &robots, members: &members }, now).await?;
        if outcome.projects.len() != projects.len()
            || outcome.identity_providers.len() != idps.len()
            || outcome.robots.len() != robots.len()
            || outcome.members.len() != members.len()
        {
            return Err(Error::internal("applying a document", "the metadata store's answer does not match the batch"));
        }

        let mut report = ApplyReport::default();
        let mut note = |kind: &str, name: &str, action: ApplyAction| {
            report.changes.push(Change { kind: kind.into(), name: name.into(), action: action.as_str().into() });
        };
        for (p, action) in projects.iter().zip(&outcome.projects) {
            note("project", &p.name, *action);
        }
        for (p, action) in idps.iter().zip(&outcome.identity_providers) {
            note("identityProvider", &p.name, *action);
        }
        for (m, action) in members.iter().zip(&outcome.members) {
            note("member", &format!("{}/{}", m.project, m.member), *action);
        }
        let mut secrets = BTreeMap::new();
        let mut unsure = Vec::new();
        for ((rec, (action, stored)), secret) in robots.iter().zip(&outcome.robots).zip(fresh) {
            note("robot", &rec.name, *action);
            match (secret, *stored) {
                (Some(s), true) => {
                    secrets.insert(rec.name.clone(), s);
                }
                (None, false) if rec.identity_provider.is_none() && *action != ApplyAction::Unchanged => unsure.push(rec.clone()),
                _ => {}
            }
        }
        self.repair_secrets(unsure, &mut secrets).await?;
        report.secrets = secrets;
        self.changed().await;
        Ok(report)
    }

    /// Written static robots that were given no fresh secret because they had one when read: if
    /// a concurrent writer removed it before the apply, they were stored without one. Those get
    /// a fresh secret now (a rare second write, of those robots only).
    async fn repair_secrets(&self, mut robots: Vec<RobotRecord>, secrets: &mut BTreeMap<String, String>) -> Result<()> {
        for _ in 0..SECRET_REPAIRS {
            let mut lost = Vec::new();
            for mut rec in robots {
                if self.meta.get_robot(&rec.name).await?.is_some_and(|e| e.identity_provider.is_none() && e.secret_hash.is_none()) {
                    let (s, hash) = fresh_secret().await?;
                    rec.secret_hash = Some(hash);
                    lost.push((rec, s));
                }
            }
            if lost.is_empty() {
                return Ok(());
            }
            let batch: Vec<RobotRecord> = lost.iter().map(|(r, _)| r.clone()).collect();
            let outcome = self.meta.apply(ApplyBatch { projects: &[], identity_providers: &[], robots: &batch, members: &[] }, now_secs()).await?;
            robots = Vec::new();
            for ((rec, s), (_, stored)) in lost.into_iter().zip(outcome.robots) {
                if stored {
                    secrets.insert(rec.name.clone(), s);
                } else {
                    robots.push(rec);
                }
            }
        }
        Ok(())
    }
}
