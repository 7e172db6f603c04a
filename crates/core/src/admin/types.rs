//! Wire types of the admin API (`/api/v1`): the JSON bodies the CLI sends and receives. The CLI
//! uses these same types, so the two cannot drift; the OpenAPI document is generated from them.

use std::collections::BTreeMap;

use berth_access::PermissionSpec;
use berth_claims::RuleSpec;
use berth_identity::federation::ProviderSpec;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A member to add to a project, or whose role to change: a local user or a group, with a role
/// (`limited-guest`, `guest`, `developer`, `maintainer`, `project-admin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberSpec {
    /// A user's name (give this or `group`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A group's name (give this or `user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub role: String,
}

/// A member of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    pub project: String,
    /// `user` or `group`.
    pub kind: String,
    pub name: String,
    pub role: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// A project: the first component of repository names (`library/app` is in `library`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProjectSpec {
    pub name: String,
    /// Anyone (even anonymous callers) may pull its repositories.
    #[serde(default)]
    pub public: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectView {
    pub name: String,
    pub public: bool,
    /// RFC 3339.
    pub created_at: String,
}

/// A robot account as written: a project robot (`project` set; full name
/// `robot$<project>+<name>`) or a system robot (`robot$<name>`). With `identityProvider` it is
/// federated (logs in with OIDC tokens that satisfy `rules`); without, it has a static secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RobotSpec {
    /// The short name (`ci-myrepo`) or the full name (`robot$library+ci-myrepo`).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// RFC 3339 time after which the robot cannot log in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_provider: Option<String>,
    /// Claim rules; every one must hold. `{claim, equals|glob|oneOf|expression}`.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub rules: Vec<RuleSpec>,
    /// `{project?, repositories, actions}` entries.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub permissions: Vec<PermissionSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RobotView {
    /// The full name, for example `robot$library+ci`.
    pub name: String,
    pub project: Option<String>,
    pub description: String,
    pub disabled: bool,
    pub expires_at: Option<String>,
    /// `federated` or `secret`.
    pub kind: String,
    pub identity_provider: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub rules: serde_json::Value,
    #[schema(value_type = Vec<Object>)]
    pub permissions: serde_json::Value,
    pub created_at: String,
    pub updated_at: String,
}

/// A created robot; a static secret is shown only here, once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RobotCreated {
    pub robot: RobotView,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityProviderView {
    pub name: String,
    /// The issuer after presets are applied.
    pub issuer: String,
    #[schema(value_type = Object)]
    pub spec: ProviderSpec,
    pub created_at: String,
    pub updated_at: String,
}

/// A local user as the API shows it. Its password hash is never sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub name: String,
    /// May use the admin API and do everything on `/v2`.
    pub admin: bool,
    /// A disabled user cannot log in.
    pub disabled: bool,
    /// The identity provider and subject a person logs in as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<UserIdentitySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Their groups at the identity provider, as of the last login or re-check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_login_at: Option<String>,
}

/// Who a user is at an identity provider: the provider (by its name in Berth) and the `sub` of
/// their ID tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserIdentitySpec {
    pub provider: String,
    pub subject: String,
}

/// `PUT /api/v1/users/{name}`: creates the user (then `password` is required) or replaces its
/// flags, and its password when one is given.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserSpec {
    /// At least 8 characters; stored only as an argon2id hash. Omit it to keep the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub disabled: bool,
    /// Link the user to this person at an identity provider (a user created for them before
    /// their first login, or one whose account moved to another provider: memberships, tokens
    /// and audit history stay). A user with an identity needs no password. Omit it to keep the
    /// current link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<UserIdentitySpec>,
    /// Local groups of a user without an identity provider (members of projects through
    /// groups, like a provider's groups). Omit it to keep them. People from a provider get
    /// theirs from it at every login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
}

/// One audit event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEventView {
    pub id: i64,
    /// RFC 3339 with milliseconds.
    pub time: String,
    /// `token`, `login`, `pull`, `push` or `delete`.
    pub action: String,
    /// `ok`, `denied` or `error`.
    pub result: String,
    pub principal: String,
    pub robots: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub claims: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ExplainRequest {
    /// The OIDC token (JWT) to explain.
    pub token: String,
}

/// A declarative document: `berth apply -f berth.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyDocument {
    #[serde(default)]
    pub projects: Vec<ProjectSpec>,
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub identity_providers: Vec<ProviderSpec>,
    #[serde(default)]
    pub robots: Vec<RobotSpec>,
    /// Project members: `{"project": "team-demo", "group": "team-demo", "role": "developer"}`
    /// (or `"user"`). Members not listed are left alone.
    #[serde(default)]
    pub members: Vec<ApplyMember>,
}

/// A project member in an apply document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyMember {
    pub project: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub role: String,
}

/// What `apply` did to one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Change {
    /// `project`, `identityProvider`, `member` or `robot`.
    pub kind: String,
    pub name: String,
    /// `created`, `updated` or `unchanged`.
    pub action: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct ApplyReport {
    pub changes: Vec<Change>,
    /// Static secrets of robots created by this apply (shown once).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
}

/// The error body of the admin API.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub errors: Vec<ErrorEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorEntry {
    pub code: String,
    pub message: String,
}

impl RobotView {
    /// The spec that stores this robot as it is: what `PUT /api/v1/robots/{name}` accepts. The
    /// CLI changes a robot by reading its view, changing parts of this spec and putting it back
    /// (the API has no partial update). Fails only if the view's rules or permissions are not
    /// the API's rule and permission entries.
    pub fn spec(&self) -> Result<RobotSpec, serde_json::Error> {
        Ok(RobotSpec {
            name: self.name.clone(),
            project: self.project.clone(),
            description: Some(self.description.clone()),
            disabled: self.disabled,
            expires_at: self.expires_at.clone(),
            identity_provider: self.identity_provider.clone(),
            rules: serde_json::from_value(self.rules.clone())?,
            permissions: serde_json::from_value(self.permissions.clone())?,
        })
    }
}

/// The body of the admin calls that take none (`POST /api/v1/robots/{name}/secret`,
/// `POST /api/v1/identity-providers/{name}/test`): `{}`. The server reads no body there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyBody {}

/// The answer of `POST /api/v1/identity-providers/{name}/test`: `{"ok": true, "result": ..}` or
/// `{"ok": false, "error": ".."}`; the server writes it and the CLI reads it with this one type.
pub use super::providers::IdentityProviderTest as ProviderTestAnswer;
/// What a provider test found.
pub use berth_identity::federation::ProviderTest as ProviderTestView;
/// The answer of `POST /api/v1/token/explain`, written by the server and read by the CLI.
pub use berth_identity::federation::{Explanation as ExplanationView, RobotExplanation as ExplainRobot, RuleExplanation as ExplainRule, Step as ExplainStep};

/// `POST /api/v1/tokens`: a personal access token for the caller.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenCreate {
    /// 1-64 letters, digits, `-`, `_`, `.` or spaces; unique among the user's tokens.
    pub name: String,
    /// How long it is valid, like `30d` or `12h`; default and maximum: the server's
    /// `tokens.max_lifetime` (90 days unless configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Only these projects (default: everything the user may do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projects: Option<Vec<String>>,
    /// Only these actions: `pull`, `push`, `delete` (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<String>>,
}

/// A token Berth issued to a user, as lists show it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    pub id: String,
    pub user: String,
    /// `personal`, `cli` (a `berth login`), `web` (a browser session) or `helper` (the
    /// credential helper's short-lived password).
    pub kind: String,
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; absent: no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// RFC 3339, to the minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projects: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<String>>,
}

/// A created token: shown once with its secret text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenCreated {
    pub token: TokenView,
    /// The credential: a password for docker, podman, skopeo, helm and oras (any user name),
    /// and a Bearer token for the admin API. Shown only now.
    pub secret: String,
}

/// `GET /api/v1/whoami`: who the caller is and what they may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmI {
    pub name: String,
    /// `user`, `robot` or `anonymous`.
    pub kind: String,
    pub admin: bool,
    /// The identity provider of a person who logged in through one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The groups Berth knows the person by (from the identity provider).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Each project the caller is a member of, with the role that counts there (the highest
    /// of the person's own and their groups'), and where it comes from.
    #[serde(default)]
    pub roles: Vec<ProjectRole>,
    /// The Berth token this request used, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenView>,
}

/// A role in a project, as `whoami` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectRole {
    pub project: String,
    pub role: String,
    /// The member entries that give it: `user:alice`, `group:team-demo`.
    pub via: Vec<String>,
}

/// `POST /auth/device`: a device login started (`berth login --idp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceLoginStarted {
    /// What the CLI polls with.
    pub handle: String,
    /// The code the person confirms at the identity provider.
    pub user_code: String,
    pub verification_uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_uri_complete: Option<String>,
    /// Seconds until the login must be finished.
    pub expires_in: u64,
    /// Seconds between polls.
    pub interval: u64,
}

/// `POST /auth/device/poll` when the person has confirmed: the CLI's Berth credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginCredential {
    pub username: String,
    /// A Berth token (kind `cli`): Bearer for the admin API, password for registry clients.
    pub token: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// `POST /auth/credential`: a short-lived registry password for the credential helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HelperCredential {
    pub username: String,
    pub secret: String,
    /// Unix seconds.
    pub expires_at: i64,
}
