//! The [`Matcher`]: all robots of one identity provider, indexed so that matching a token costs
//! a few hash lookups however many robots there are.
//!
//! **Index.** Each robot with rules gets one key from an indexable rule: its first `equals` rule,
//! else its `oneOf` rule with the fewest values (one key per value). The index maps a claim path
//! to the values robots pin it to: `path -> value -> robots`. Robots whose rules are all `glob` or
//! `expression` are kept in a list that every token checks one by one. To match a token, for each
//! distinct indexed path, the token's texts at that path (the same texts `equals` compares:
//! strings, numbers and booleans as JSON text, each element of an array) are looked up; the
//! robots found, plus the unindexed ones, are the candidates, and only the candidates' rules are
//! evaluated. A robot that is not a candidate cannot match: its key rule does not hold. So the
//! index changes the cost, never the answer.
//!
//! A robot without rules never matches and is never a candidate.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::path::ClaimPath;
use crate::rule::{IndexKey, Outcome, Rule, Token};
use crate::text::any_text;

/// One robot's rules (the robot is named by its id or name).
#[derive(Debug)]
pub struct RobotRules {
    pub robot: String,
    pub rules: Vec<Rule>,
}

/// What `explain` says about one robot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RobotExplanation {
    pub robot: String,
    /// Whether every rule holds (false for a robot without rules).
    pub matched: bool,
    /// Each rule's description ([`Rule::describe`]) with its outcome; a robot without rules
    /// has one pseudo-rule `(no rules)` saying it never matches.
    pub rules: Vec<(String, Outcome)>,
}

/// All robots of ONE identity provider, indexed for matching.
#[derive(Debug, Default)]
pub struct Matcher {
    /// Sorted by name, so sorted indices give sorted names.
    robots: Vec<RobotRules>,
    /// path -> value -> indices of the robots whose key rule pins the path to the value.
    index: Vec<(ClaimPath, HashMap<String, Vec<u32>>)>,
    /// Robots with rules but no indexable rule: candidates for every token.
    unindexed: Vec<u32>,
}

impl Matcher {
    /// Indexes the robots of one provider.
    pub fn new(mut robots: Vec<RobotRules>) -> Matcher {
        robots.sort_by(|a, b| a.robot.cmp(&b.robot));
        let mut index: HashMap<ClaimPath, HashMap<String, Vec<u32>>> = HashMap::new();
        let mut unindexed = Vec::new();
        for (i, robot) in robots.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            if robot.rules.is_empty() {
                continue;
            }
            let (path, values): (&ClaimPath, Vec<&str>) = match key_rule(&robot.rules) {
                Some(IndexKey::Equals(path, value)) => (path, vec![value]),
                Some(IndexKey::OneOf(path, values)) => (path, values.iter().map(String::as_str).collect()),
                None => {
                    unindexed.push(i);
                    continue;
                }
            };
            let by_value = index.entry(path.clone()).or_default();
            for v in values {
                by_value.entry(v.to_owned()).or_default().push(i);
            }
        }
        let mut index: Vec<_> = index.into_iter().collect();
        index.sort_by(|a, b| a.0.cmp(&b.0));
        Matcher { robots, index, unindexed }
    }

    /// How many robots (with or without rules).
    pub fn len(&self) -> usize {
        self.robots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.robots.is_empty()
    }

    /// How many robots are checked for every token because none of their rules is indexable.
    pub fn unindexed_len(&self) -> usize {
        self.unindexed.len()
    }

    /// Names of every robot whose rules all hold (robots without rules never match); sorted,
    /// without duplicates.
    pub fn matches(&self, claims: &Map<String, Value>) -> Vec<String> {
        let token = Token::new(claims);
        let mut candidates: Vec<u32> = self.unindexed.clone();
        for (path, by_value) in &self.index {
            if let Some(v) = path.lookup(claims) {
                let mut seen = 0;
                any_text(v, &mut seen, |t| {
                    if let Some(robots) = by_value.get(t) {
                        candidates.extend_from_slice(robots);
                    }
                    false
                });
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        let mut out: Vec<String> = Vec::new();
        for i in candidates {
            let Some(robot) = self.robots.get(i as usize) else { continue };
            if out.last() == Some(&robot.robot) {
                continue;
            }
            if !robot.rules.is_empty() && robot.rules.iter().all(|r| r.holds_token(&token)) {
                out.push(robot.robot.clone());
            }
        }
        out
    }

    /// Every robot (sorted by name) with each rule's outcome, for `berth token explain`.
    pub fn explain(&self, claims: &Map<String, Value>) -> Vec<RobotExplanation> {
        let token = Token::new(claims);
        self.robots
            .iter()
            .map(|robot| {
                if robot.rules.is_empty() {
                    let why = Outcome { matched: false, reason: "a robot without rules never matches".into() };
                    return RobotExplanation { robot: robot.robot.clone(), matched: false, rules: vec![("(no rules)".into(), why)] };
                }
                let rules: Vec<(String, Outcome)> =
                    robot.rules.iter().map(|r| (r.describe(), r.evaluate_token(&token))).collect();
                let matched = rules.iter().all(|(_, o)| o.matched);
                RobotExplanation { robot: robot.robot.clone(), matched, rules }
            })
            .collect()
    }
}

/// The rule a robot is indexed by: the first `equals`, else the `oneOf` with the fewest values.
fn key_rule(rules: &[Rule]) -> Option<IndexKey<'_>> {
    let mut best: Option<IndexKey<'_>> = None;
    for key in rules.iter().filter_map(Rule::index_key) {
        match (&best, &key) {
            (_, IndexKey::Equals(..)) => return Some(key),
            (None, _) => best = Some(key),
            (Some(IndexKey::OneOf(_, old)), IndexKey::OneOf(_, new)) if new.len() < old.len() => best = Some(key),
            _ => {}
        }
    }
    best
}
