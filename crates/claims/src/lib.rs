//! Claim rules: which verified OIDC tokens a federated robot account accepts. Pure: no IO, no
//! clock; tested by tables with the GitHub, GitLab, Kubernetes and zot example tokens.
//!
//! A federated robot belongs to one identity provider and has rules; a token matches the robot
//! when every rule holds (extra claims are fine; a robot without rules never matches). A rule is
//! a claim path plus exactly one operator, `equals`, `glob`, `oneOf` or a CEL `expression`
//! ([`rule`]). Claim paths go through nested objects with dots and find keys that contain dots
//! as is ([`path`]); arrays match when any element does, numbers and booleans compare as their
//! JSON text ([`text`]); CEL expressions are compiled once, with guards ([`expr`]).
//!
//! [`Matcher`] holds the robots of one provider, each indexed by one `equals`, `oneOf` or glob
//! (by its literal prefix) rule, so a token costs a few hash lookups however many robots there
//! are ([`matcher`]; 10,000 robots: about 1.2 µs per token in the test profile, see
//! `benches/matcher.rs`).
//!
//! ```
//! use berth_claims::{Matcher, RobotRules, Rule, RuleSpec};
//! let spec: RuleSpec = serde_json::from_str(r#"{"claim": "repository", "equals": "o/r"}"#).unwrap();
//! let m = Matcher::new(vec![RobotRules { robot: "ci".into(), rules: vec![Rule::compile(&spec).unwrap()] }]);
//! let claims = serde_json::json!({"repository": "o/r"});
//! assert_eq!(m.matches(claims.as_object().unwrap()), vec!["ci"]);
//! ```

pub mod expr;
pub mod matcher;
pub mod path;
pub mod rule;
pub mod text;

pub use expr::{ExpressionError, MAX_EXPRESSION_BYTES, MAX_EXPRESSION_DEPTH};
pub use matcher::{Matcher, RobotExplanation, RobotRules};
pub use path::{lookup, ClaimPath, PathError, MAX_PATH_BYTES, MAX_PATH_SEGMENTS};
pub use rule::{Outcome, Rule, RuleError, RuleSpec};

#[cfg(test)]
mod tests {
    /// Robots are compiled once and shared by request tasks.
    #[test]
    fn shareable_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<crate::Matcher>();
        send_sync::<crate::Rule>();
        send_sync::<crate::RuleError>();
    }
}
