//! Identity providers (workload identity federation and human login): their documents, presets
//! resolved, and the rule that two providers with one issuer must not share an audience. A login
//! section's client secret is never shown by a read (`clientSecretSet` instead); a write that
//! leaves it out keeps the stored one (same client id), so `berth apply` of an exported document
//! does not erase it.

use berth_identity::federation::{Provider, ProviderSpec, ProviderTest};
use berth_meta::{DeleteOutcome, IdentityProviderRecord};

use super::rfc3339;
use super::types::IdentityProviderView;
use crate::clock::now_secs;
use crate::{Core, Error, Result};

/// What testing an identity provider found: `{"ok": true, "result": …}` (its issuer, where its
/// keys came from, the keys and algorithms) or `{"ok": false, "error": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdentityProviderTest {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ProviderTest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub(crate) fn idp_view(r: &IdentityProviderRecord) -> Result<IdentityProviderView> {
    let mut spec: ProviderSpec = serde_json::from_value(r.config.clone()).map_err(|e| Error::internal("reading a stored identity provider", e))?;
    if let Some(l) = spec.login.as_mut() {
        l.client_secret_set = Some(l.client_secret.take().is_some());
    }
    let issuer = spec.resolve().map(|p| p.issuer).unwrap_or_else(|e| format!("(invalid: {e})"));
    Ok(IdentityProviderView { name: r.name.clone(), issuer, spec, created_at: rfc3339(r.created_at), updated_at: rfc3339(r.updated_at) })
}

/// A provider document checked (presets resolved) into the record to store.
pub(crate) fn idp_record_resolved(spec: &ProviderSpec) -> Result<(IdentityProviderRecord, Provider)> {
    let resolved = spec.resolve().map_err(Error::Invalid)?;
    let config = serde_json::to_value(spec).map_err(|e| Error::internal("encoding an identity provider", e))?;
    let now = now_secs();
    Ok((IdentityProviderRecord { name: spec.name.clone(), config, created_at: now, updated_at: now }, resolved))
}

fn already_exists(name: &str) -> Error {
    Error::Conflict(format!(
        "identity provider {name:?} already exists; change it with PUT /api/v1/identity-providers/{name} (berth idp update)"
    ))
}

impl Core {
    /// A provider document as written, with the stored client secret when the document leaves
    /// it out and names the same client.
    pub(crate) async fn keep_client_secret(&self, spec: &mut ProviderSpec) -> Result<()> {
        let Some(login) = spec.login.as_mut() else { return Ok(()) };
        login.client_secret_set = None;
        if login.client_secret.is_some() {
            return Ok(());
        }
        if let Some(r) = self.meta.get_identity_provider(&spec.name).await? {
            if let Ok(ProviderSpec { login: Some(old), .. }) = serde_json::from_value::<ProviderSpec>(r.config) {
                if old.client_id == login.client_id {
                    login.client_secret = old.client_secret;
                }
            }
        }
        Ok(())
    }

    /// The stored identity providers, resolved (those that no longer resolve are skipped: they
    /// route no token).
    pub(crate) async fn stored_providers(&self) -> Result<Vec<(String, Provider)>> {
        let mut out = Vec::new();
        for r in self.meta.list_identity_providers().await? {
            if let Ok(p) = serde_json::from_value::<ProviderSpec>(r.config).map_err(|e| e.to_string()).and_then(|spec| spec.resolve()) {
                out.push((r.name, p));
            }
        }
        Ok(out)
    }

    /// Refuses `p` when another stored provider has the same issuer and a shared audience.
    async fn check_issuer(&self, name: &str, p: &Provider) -> Result<()> {
        let stored = self.stored_providers().await?;
        match berth_identity::federation::issuer::issuer_conflict(name, p, stored.iter().map(|(n, p)| (n.as_str(), p))) {
            Some(why) => Err(Error::Conflict(why)),
            None => Ok(()),
        }
    }

    /// All identity providers, by name.
    pub async fn list_identity_providers(&self) -> Result<Vec<IdentityProviderView>> {
        self.meta.list_identity_providers().await?.iter().map(idp_view).collect()
    }

    /// Creates an identity provider. `Conflict` if one of that name exists (decided atomically
    /// by the store: of concurrent creates of one name exactly one succeeds) or another has its
    /// issuer and a shared audience.
    pub async fn create_identity_provider(&self, spec: &ProviderSpec) -> Result<IdentityProviderView> {
        let mut spec = spec.clone();
        if let Some(l) = spec.login.as_mut() {
            l.client_secret_set = None;
        }
        let (rec, resolved) = idp_record_resolved(&spec)?;
        if self.meta.get_identity_provider(&rec.name).await?.is_some() {
            return Err(already_exists(&rec.name));
        }
        self.check_issuer(&rec.name, &resolved).await?;
        if !self.meta.create_identity_provider(&rec).await? {
            return Err(already_exists(&rec.name));
        }
        self.changed().await;
        idp_view(&rec)
    }

    pub async fn get_identity_provider(&self, name: &str) -> Result<IdentityProviderView> {
        let r = self.meta.get_identity_provider(name).await?.ok_or_else(|| Error::not_found("identity provider", name))?;
        idp_view(&r)
    }

    /// Creates or replaces the identity provider `name` (the spec must name it).
    pub async fn put_identity_provider(&self, name: &str, spec: &ProviderSpec) -> Result<IdentityProviderView> {
        if spec.name != name {
            return Err(Error::Invalid(format!("the body names identity provider {:?} but the URL {name:?}", spec.name)));
        }
        let mut spec = spec.clone();
        self.keep_client_secret(&mut spec).await?;
        let (rec, resolved) = idp_record_resolved(&spec)?;
        self.check_issuer(name, &resolved).await?;
        self.meta.put_identity_provider(&rec).await?;
        self.changed().await;
        self.get_identity_provider(name).await
    }

    /// Deletes an identity provider; `Conflict` while robots are federated with it.
    pub async fn delete_identity_provider(&self, name: &str) -> Result<()> {
        match self.meta.delete_identity_provider(name).await? {
            DeleteOutcome::Deleted => {
                self.changed().await;
                Ok(())
            }
            DeleteOutcome::NotFound => Err(Error::not_found("identity provider", name)),
            DeleteOutcome::InUse(why) => Err(Error::Conflict(why)),
        }
    }

    /// Fetches the provider's keys now (discovery and JWKS) and says what was found. A provider
    /// that cannot be reached is an answer (`ok: false`), not an error.
    pub async fn test_identity_provider(&self, name: &str) -> Result<IdentityProviderTest> {
        let r = self.meta.get_identity_provider(name).await?.ok_or_else(|| Error::not_found("identity provider", name))?;
        let spec: ProviderSpec = serde_json::from_value(r.config).map_err(|e| Error::internal("reading a stored identity provider", e))?;
        Ok(match berth_identity::Federation::test_provider(&spec).await {
            Ok(t) => IdentityProviderTest { ok: true, result: Some(t), error: None },
            Err(e) => IdentityProviderTest { ok: false, result: None, error: Some(e) },
        })
    }
}
