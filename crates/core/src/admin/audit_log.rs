//! Reading the audit log, and explaining an OIDC token.

use berth_identity::federation::Explanation;
use berth_meta::{AuditEvent, AuditQuery};

use super::types::AuditEventView;
use crate::{Core, Error, Result};

/// Which audit events to return (`GET /api/v1/audit?…`, `berth audit`): every filter optional,
/// combined with AND; newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// RFC 3339 time; only events at or after it.
    pub since: Option<String>,
    /// RFC 3339 time; only events before it.
    pub until: Option<String>,
    pub robot: Option<String>,
    pub repository: Option<String>,
    pub provider: Option<String>,
    /// `ok`, `denied` or `error`.
    pub result: Option<String>,
    /// `token`, `login`, `pull`, `push` or `delete`.
    pub action: Option<String>,
    /// Only events with a smaller id (the next page).
    pub before: Option<i64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
}

fn parse_ms(field: &str, s: &str) -> Result<i64> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| Error::Invalid(format!("{field} {s:?} is not an RFC 3339 time: {e}")))
}

impl AuditFilter {
    /// The store's query (times parsed; `Invalid` for a malformed one).
    pub fn to_query(&self) -> Result<AuditQuery> {
        Ok(AuditQuery {
            since_ms: self.since.as_deref().map(|t| parse_ms("since", t)).transpose()?,
            until_ms: self.until.as_deref().map(|t| parse_ms("until", t)).transpose()?,
            robot: self.robot.clone(),
            repository: self.repository.clone(),
            provider: self.provider.clone(),
            result: self.result.clone(),
            action: self.action.clone(),
            before_id: self.before,
            limit: self.limit.unwrap_or(100).min(1000),
        })
    }
}

fn audit_view(e: AuditEvent) -> AuditEventView {
    let time = chrono::DateTime::from_timestamp_millis(e.time_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    AuditEventView {
        id: e.id,
        time,
        action: e.action,
        result: e.result,
        principal: e.principal,
        robots: e.robots,
        provider: e.provider,
        subject: e.subject,
        jti: e.jti,
        claims: e.claims,
        repository: e.repository,
        reference: e.reference,
        client: e.client,
        message: e.message,
    }
}

impl Core {
    /// Audit events matching `filter`, newest first. Events this process has not written yet
    /// are written first, so the answer includes everything that happened before the call.
    pub async fn query_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEventView>> {
        let q = filter.to_query()?;
        self.audit.flush().await;
        Ok(self.meta.query_audit(&q).await?.into_iter().map(audit_view).collect())
    }

    /// Why an OIDC token would (not) log in: each step of routing, verification, validation and
    /// robot matching, with the details clients are never told.
    pub async fn explain_token(&self, token: &str) -> Explanation {
        let token = token.trim();
        if let Some(ex) = self.explain_person_token(token).await {
            return ex;
        }
        self.federation.explain(token).await
    }
}
