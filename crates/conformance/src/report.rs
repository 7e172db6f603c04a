//! The outcome of a run: one entry per check, a text rendering and a JSON rendering.

use serde::Serialize;

/// The four workflow categories of the distribution-spec conformance suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Pull,
    Push,
    Discovery,
    Management,
}

impl Category {
    /// All categories, in the order they run.
    pub const ALL: [Category; 4] = [
        Category::Pull,
        Category::Push,
        Category::Discovery,
        Category::Management,
    ];

    /// Short lowercase name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Pull => "pull",
            Category::Push => "push",
            Category::Discovery => "discovery",
            Category::Management => "management",
        }
    }
}

/// One check: what was checked, whether the registry behaved, and why not (or a note).
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub category: Category,
    pub name: String,
    pub passed: bool,
    /// For a failure, what went wrong; for a pass, an optional note (empty when none).
    pub reason: String,
}

/// Every check of a run, in the order they ran.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// Records one check. Returns whether it passed, so callers can chain dependent steps.
    pub fn record(
        &mut self,
        category: Category,
        name: &str,
        outcome: anyhow::Result<String>,
    ) -> bool {
        let (passed, reason) = match outcome {
            Ok(note) => (true, note),
            Err(e) => (false, format!("{e:#}")),
        };
        self.checks.push(CheckResult {
            category,
            name: name.to_string(),
            passed,
            reason,
        });
        passed
    }

    pub fn passed(&self) -> usize {
        self.checks.iter().filter(|c| c.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.checks.iter().filter(|c| !c.passed).count()
    }

    /// Number of checks in one category, and how many of those failed.
    pub fn count(&self, category: Category) -> (usize, usize) {
        let all: Vec<_> = self
            .checks
            .iter()
            .filter(|c| c.category == category)
            .collect();
        let failed = all.iter().filter(|c| !c.passed).count();
        (all.len(), failed)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// The closing line, `conformance: N passed, M failed`.
    pub fn summary_line(&self) -> String {
        format!(
            "conformance: {} passed, {} failed",
            self.passed(),
            self.failed()
        )
    }

    /// One line per check (`ok` or `FAIL`, category, name, reason), then a per-category tally.
    /// The closing summary line is not included.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let status = if c.passed { "ok  " } else { "FAIL" };
            out.push_str(&format!("{status} [{}] {}", c.category.as_str(), c.name));
            if !c.reason.is_empty() {
                let sep = if c.passed { " -- note: " } else { " -- " };
                out.push_str(sep);
                out.push_str(&c.reason.replace('\n', " "));
            }
            out.push('\n');
        }
        out.push('\n');
        for cat in Category::ALL {
            let (n, failed) = self.count(cat);
            out.push_str(&format!(
                "{:<10} {:>3} checks, {:>3} failed\n",
                cat.as_str(),
                n,
                failed
            ));
        }
        out
    }

    /// The whole report as JSON: totals and every check.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "passed": self.passed(),
            "failed": self.failed(),
            "checks": self.checks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_and_format() {
        let mut r = Report::default();
        assert!(r.record(Category::Pull, "a", Ok(String::new())));
        assert!(!r.record(
            Category::Push,
            "b",
            Err(anyhow::anyhow!("expected 201, got 404"))
        ));
        assert!(r.record(Category::Push, "c", Ok("note".into())));
        assert_eq!(r.summary_line(), "conformance: 2 passed, 1 failed");
        assert_eq!(r.count(Category::Push), (2, 1));
        let text = r.render_text();
        assert!(text.contains("FAIL [push] b -- expected 201, got 404"));
        assert!(text.contains("ok   [pull] a\n"));
        let json = r.to_json();
        assert_eq!(json["failed"], 1);
        assert_eq!(json["checks"][1]["category"], "push");
    }
}
