//! The [`Matcher`]: all robots of one identity provider, indexed so that matching a token costs
//! a few hash lookups however many robots there are.
//!
//! **Index.** Each robot with rules gets one key from one of its rules, by preference: its first
//! `equals` (the value); else its `oneOf` with the fewest values (each value); else its `glob`
//! with the longest literal prefix, the part before the first wildcard (`refs/heads/` for
//! `refs/heads/*`), if that is not empty. Per claim path, the index maps values to robots and
//! prefixes to robots. Robots with no such rule (only expressions, or globs that start with a
//! wildcard) are kept in a list that every token checks one by one.
//!
//! To match a token, for each distinct indexed path, the token's texts at that path (the texts
//! `equals` compares: strings, numbers and booleans as JSON text, each element of an array) are
//! looked up: whole, in the value map, and cut at each distinct prefix length, in the prefix map.
//! The robots found, plus the unindexed ones, are the candidates, and only the candidates' rules
//! are evaluated. A robot that is not a candidate cannot match: its key rule does not hold. So
//! the index changes the cost, never the answer.
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

/// The robots keyed on one claim path.
#[derive(Debug)]
struct PathIndex {
    path: ClaimPath,
    /// value -> robots whose `equals`/`oneOf` key rule accepts it.
    values: HashMap<String, Vec<u32>>,
    /// literal glob prefix -> robots whose key glob starts with it.
    prefixes: HashMap<String, Vec<u32>>,
    /// The distinct lengths (bytes) of the keys of `prefixes`, ascending.
    prefix_lens: Vec<usize>,
}

impl PathIndex {
    fn new(path: ClaimPath) -> PathIndex {
        PathIndex { path, values: HashMap::new(), prefixes: HashMap::new(), prefix_lens: Vec::new() }
    }

    /// Adds the robots keyed by `text` to `out`.
    fn candidates(&self, text: &str, out: &mut Vec<u32>) {
        if let Some(robots) = self.values.get(text) {
            out.extend_from_slice(robots);
        }
        for &len in &self.prefix_lens {
            let Some(prefix) = text.get(..len) else {
                if len > text.len() {
                    break;
                }
                continue; // not a character boundary: no prefix of that length
            };
            if let Some(robots) = self.prefixes.get(prefix) {
                out.extend_from_slice(robots);
            }
        }
    }
}

/// All robots of ONE identity provider, indexed for matching.
#[derive(Debug, Default)]
pub struct Matcher {
    /// Sorted by name, so sorted indices give sorted names.
    robots: Vec<RobotRules>,
    /// One entry per claim path that some robot's key rule is about.
    index: Vec<PathIndex>,
    /// Robots with rules but no indexable rule: candidates for every token.
    unindexed: Vec<u32>,
}

impl Matcher {
    /// Indexes the robots of one provider.
    pub fn new(mut robots: Vec<RobotRules>) -> Matcher {
        robots.sort_by(|a, b| a.robot.cmp(&b.robot));
        let mut index: HashMap<ClaimPath, PathIndex> = HashMap::new();
        let mut unindexed = Vec::new();
        for (i, robot) in robots.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            if robot.rules.is_empty() {
                continue;
            }
            let Some(key) = key_rule(&robot.rules) else {
                unindexed.push(i);
                continue;
            };
            let path = match &key {
                IndexKey::Equals(p, _) | IndexKey::OneOf(p, _) | IndexKey::Prefix(p, _) => *p,
            };
            let entry = index.entry(path.clone()).or_insert_with(|| PathIndex::new(path.clone()));
            match key {
                IndexKey::Equals(_, v) => entry.values.entry(v.to_owned()).or_default().push(i),
                IndexKey::OneOf(_, values) => {
                    for v in values {
                        entry.values.entry(v.clone()).or_default().push(i);
                    }
                }
                IndexKey::Prefix(_, prefix) => entry.prefixes.entry(prefix.to_owned()).or_default().push(i),
            }
        }
        let mut index: Vec<PathIndex> = index.into_values().collect();
        for entry in &mut index {
            entry.prefix_lens = entry.prefixes.keys().map(String::len).collect();
            entry.prefix_lens.sort_unstable();
            entry.prefix_lens.dedup();
        }
        index.sort_by(|a, b| a.path.cmp(&b.path));
        Matcher { robots, index, unindexed }
    }

    /// How many robots (with or without rules).
    pub fn len(&self) -> usize {
        self.robots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.robots.is_empty()
    }

    /// How many robots are checked for every token because none of their rules is indexable
    /// (only expressions, or globs that start with a wildcard).
    pub fn unindexed_len(&self) -> usize {
        self.unindexed.len()
    }

    /// Names of every robot whose rules all hold (robots without rules never match); sorted,
    /// without duplicates.
    pub fn matches(&self, claims: &Map<String, Value>) -> Vec<String> {
        let token = Token::new(claims);
        let mut candidates: Vec<u32> = self.unindexed.clone();
        for entry in &self.index {
            if let Some(v) = entry.path.lookup(claims) {
                let mut seen = 0;
                any_text(v, &mut seen, |t| {
                    entry.candidates(t, &mut candidates);
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

/// The rule a robot is indexed by: the first `equals`, else the `oneOf` with the fewest values,
/// else the glob with the longest literal prefix.
fn key_rule(rules: &[Rule]) -> Option<IndexKey<'_>> {
    let mut best: Option<IndexKey<'_>> = None;
    for key in rules.iter().filter_map(Rule::index_key) {
        let better = match (&best, &key) {
            (_, IndexKey::Equals(..)) => return Some(key),
            (None, _) => true,
            (Some(IndexKey::Prefix(..)), IndexKey::OneOf(..)) => true,
            (Some(IndexKey::OneOf(_, old)), IndexKey::OneOf(_, new)) => new.len() < old.len(),
            (Some(IndexKey::Prefix(_, old)), IndexKey::Prefix(_, new)) => new.len() > old.len(),
            _ => false,
        };
        if better {
            best = Some(key);
        }
    }
    best
}
