//! The token exchange of the Docker token flow: a principal and the scopes it asked for become a
//! registry token with the intersection of the two (a partial grant is not an error), recorded
//! in the audit log.

use std::net::IpAddr;

use berth_access::{intersect, Access};
use berth_identity::token::IssuedToken;
use berth_identity::PrincipalKind;

use crate::audit::{AuditAction, AuditResult, EventBuilder};
use crate::auth::{anonymous_permissions, Principal};
use crate::error::{Error, Result};
use crate::text::{cap, capped, MAX_LOGGED_MESSAGE, MAX_LOGGED_NAME};
use crate::{AnonymousAccess, Core};

/// Scopes as a client writes them (`repository:a/b:pull,push registry:catalog:*`), for logs.
pub fn scope_list(scopes: &[Access]) -> String {
    let text = scopes.iter().map(|a| format!("{}:{}:{}", a.kind, a.name, a.actions.join(","))).collect::<Vec<_>>().join(" ");
    capped(&text, MAX_LOGGED_MESSAGE)
}

impl Core {
    /// Issues a registry token for `p` with the requested `scopes` that its permissions allow.
    pub fn issue_token(&self, p: &Principal, scopes: &[Access], client: Option<IpAddr>) -> Result<IssuedToken> {
        let access = intersect(&p.permissions, scopes);
        let asked = scope_list(scopes);
        let granted = scope_list(&access);
        if asked != granted {
            // Partly or wholly refused scopes are not errors (docker asks for more than it needs),
            // but operators must see what was asked and why it was not given.
            tracing::info!(
                subject = %cap(&p.subject, MAX_LOGGED_NAME),
                kind = p.kind.as_str(),
                asked = %asked,
                granted = %granted,
                "issued a registry token with less than was asked: the principal's permissions do not allow the rest"
            );
        } else {
            tracing::info!(subject = %cap(&p.subject, MAX_LOGGED_NAME), kind = p.kind.as_str(), granted = %granted, "issued registry token");
        }
        metrics::counter!("berth_token_issued_total", "kind" => p.kind.as_str()).increment(1);
        let origin = p.origin.as_deref().cloned();
        self.audit.record(
            EventBuilder::new(AuditAction::Token, AuditResult::Ok, &p.subject)
                .origin(origin.as_ref())
                .client(client)
                .message(serde_json::to_string(&access).unwrap_or_default())
                .build(),
        );
        self.tokens.issue_with_origin(&p.subject, p.kind, access, p.not_after, origin).map_err(|e| Error::internal("signing a registry token", e))
    }

    /// The principal of a caller without credentials at the token endpoint: the configured
    /// anonymous access plus public projects, or None when that is nothing at all.
    pub async fn anonymous_principal(&self) -> Option<Principal> {
        let anon = anonymous_permissions(self.config.anonymous);
        let public = self.federation.public_pull().await.unwrap_or_default();
        if self.config.anonymous == AnonymousAccess::Off && public.grants.is_empty() {
            return None;
        }
        Some(Principal { subject: "anonymous".into(), kind: PrincipalKind::Anonymous, permissions: anon.union(public), origin: None, not_after: None })
    }
}
