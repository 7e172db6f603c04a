//! Content discovery: tag lists, the catalog and referrers.
//!
//! The catalog is bounded per request: a page holds at most [`MAX_CATALOG_PAGE`] names, and a
//! caller who may not list everything gets only the repositories it may pull, found by seeking
//! to the literal prefix of each of its grants and reading at most [`CATALOG_SCAN_ROWS`] names.

use berth_access::Action;
use berth_meta::{Page, Referrer};
use berth_oci::{Digest, RepoName};

use crate::auth::{Caller, Grants};
use crate::error::{Error, Result};
use crate::Core;

/// One page of a listing: the names, and whether another page follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub names: Vec<String>,
    /// Another page exists after the last name.
    pub more: bool,
}

impl Core {
    /// Tags of `repo`, at most `n` after `last` (all without `n`).
    pub async fn list_tags(&self, repo: &RepoName, n: Option<u32>, last: Option<&str>) -> Result<Listing> {
        let page = Page { last, n: n.map(|n| n.saturating_add(1)) };
        let mut names = self.meta.list_tags(repo, page).await?.ok_or_else(|| Error::NameUnknown(format!("repository {repo} is not known")))?;
        let more = n.is_some_and(|n| names.len() > n as usize);
        if let Some(n) = n {
            names.truncate(n as usize);
        }
        Ok(Listing { names, more })
    }

    /// One catalog page for `caller`: at most `n` (capped at [`MAX_CATALOG_PAGE`]; default that)
    /// repositories after `last` that it may see.
    pub async fn catalog(&self, caller: &Caller, n: Option<u32>, last: Option<&str>) -> Result<Listing> {
        let n = n.unwrap_or(MAX_CATALOG_PAGE).min(MAX_CATALOG_PAGE);
        if n == 0 {
            return Ok(Listing { names: vec![], more: false });
        }
        let (names, more) = catalog_page(self, caller, n, last).await?;
        Ok(Listing { names, more })
    }

    /// Manifests of `repo` whose subject is `subject`, optionally of one artifact type.
    pub async fn referrers(&self, repo: &RepoName, subject: &Digest, artifact_type: Option<&str>) -> Result<Vec<Referrer>> {
        Ok(self.meta.referrers(repo, subject, artifact_type).await?)
    }
}

/// The most names one catalog page holds: a larger `n` is lowered to it, and a request without
/// `n` gets this many (with a `Link` to the rest).
pub const MAX_CATALOG_PAGE: u32 = 1000;
/// The most repository names one filtered catalog request reads from the metadata store.
pub const CATALOG_SCAN_ROWS: usize = 10_000;
/// Names read per store query while filtering.
const SCAN_BATCH: usize = 1000;

/// A range of the sorted repository names where a caller's visible repositories can be.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Span {
    /// Names starting with this text ("" is every name).
    Prefix(String),
    /// Exactly this name (a pattern without wildcards, or a token's repository entry).
    Exact(String),
}

impl Span {
    fn text(&self) -> &str {
        match self {
            Span::Prefix(p) | Span::Exact(p) => p,
        }
    }
    fn contains(&self, name: &str) -> bool {
        match self {
            Span::Prefix(p) => name.starts_with(p.as_str()),
            Span::Exact(e) => name == e,
        }
    }
    /// The `last` to ask the store with so it answers from the start of the span: just below
    /// the text. Repository names are ASCII below `~`, so `<text minus its last byte, that byte
    /// less one>~` sorts after every name below the text and before the text itself.
    fn before(&self) -> Option<String> {
        let t = self.text();
        let last = *t.as_bytes().last()?;
        let mut s = t[..t.len() - 1].to_owned();
        s.push(char::from(last - 1));
        s.push('~');
        Some(s)
    }
}

/// The span of a glob pattern: its text up to the first glob character (`* ? [ {` or an escape),
/// cut at the first non-ASCII byte (no repository name has one); exact if there is none.
fn span_of(pattern: &str) -> Span {
    let end = pattern.find(|c: char| matches!(c, '*' | '?' | '[' | '{' | '\\') || !c.is_ascii());
    match end {
        None => Span::Exact(pattern.to_owned()),
        Some(i) => Span::Prefix(pattern[..i].to_owned()),
    }
}

/// Where the repositories a caller may pull can be, sorted, none inside another, so listing the
/// spans in order lists names in order. Everything for callers who may list the whole catalog.
fn spans(caller: &Caller) -> Vec<Span> {
    if caller.full_catalog() {
        return vec![Span::Prefix(String::new())];
    }
    let mut all: Vec<Span> = match &caller.grants {
        Grants::Permissions(p) => p
            .grants
            .iter()
            .filter(|g| g.actions.contains(Action::Pull))
            .map(|g| span_of(g.repositories.as_str()))
            .collect(),
        Grants::Token(c) => c.access.iter().filter(|a| a.kind == "repository").map(|a| Span::Exact(a.name.clone())).collect(),
    };
    // Sorted by text, a prefix before the same text's exact name.
    all.sort_by(|a, b| a.text().cmp(b.text()).then(matches!(a, Span::Exact(_)).cmp(&matches!(b, Span::Exact(_)))));
    let mut out: Vec<Span> = Vec::new();
    let mut covering: Option<String> = None;
    for s in all {
        if covering.as_deref().is_some_and(|p| s.text().starts_with(p)) || out.last() == Some(&s) {
            continue;
        }
        if let Span::Prefix(p) = &s {
            covering = Some(p.clone());
        }
        out.push(s);
    }
    out
}

/// One catalog page for `caller`: at most `n` names after `last`, and whether more may follow.
/// Reads at most [`CATALOG_SCAN_ROWS`] names from the store.
pub(crate) async fn catalog_page(core: &Core, caller: &Caller, n: u32, last: Option<&str>) -> Result<(Vec<String>, bool)> {
    let full = caller.full_catalog();
    let want = n as usize + 1;
    let mut found: Vec<String> = Vec::new();
    let mut budget = CATALOG_SCAN_ROWS;
    'spans: for span in spans(caller) {
        // Start at the span, or after `last` when that is further on.
        let mut cursor = match (span.before(), last) {
            (Some(b), Some(l)) => Some(if l > b.as_str() { l.to_owned() } else { b }),
            (b, l) => b.or(l.map(str::to_owned)),
        };
        loop {
            if found.len() >= want {
                break 'spans;
            }
            if budget == 0 {
                // Out of reading budget: what was found, and a link after the last name shown.
                // (A link after an unseen name would tell the caller that name.)
                if found.is_empty() {
                    tracing::warn!(subject = %caller.subject, "catalog: no visible repository in {CATALOG_SCAN_ROWS} names; the listing ends here");
                }
                return Ok((found.clone(), !found.is_empty()));
            }
            let batch_n = match span {
                Span::Exact(_) => 1,
                Span::Prefix(_) if full => want - found.len(),
                Span::Prefix(_) => SCAN_BATCH.min(budget),
            };
            let batch = core
                .meta
                .list_repositories(Page { last: cursor.as_deref(), n: Some(u32::try_from(batch_n).unwrap_or(u32::MAX)) })
                .await?;
            budget = budget.saturating_sub(batch.len().max(1));
            let done = batch.len() < batch_n || matches!(span, Span::Exact(_));
            cursor = batch.last().cloned();
            for name in batch {
                if !span.contains(&name) {
                    // Sorted: everything further is past this span.
                    continue 'spans;
                }
                if full || caller.allows(&name, Action::Pull) {
                    found.push(name);
                }
            }
            if done {
                continue 'spans;
            }
        }
    }
    let more = found.len() > n as usize;
    found.truncate(n as usize);
    Ok((found, more))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_table() {
        let p = |s: &str| Span::Prefix(s.into());
        let e = |s: &str| Span::Exact(s.into());
        let cases = [
            ("*", p("")),
            ("**", p("")),
            ("proj/*", p("proj/")),
            ("proj/**", p("proj/")),
            ("proj/app", e("proj/app")),
            ("proj/a?p", p("proj/a")),
            ("proj/[ab]*", p("proj/")),
            ("proj/{a,b}", p("proj/")),
            ("proj/\\*x", p("proj/")),
            ("pröj/*", p("pr")),
            ("*/app", p("")),
        ];
        for (pattern, want) in cases {
            assert_eq!(span_of(pattern), want, "{pattern}");
        }
    }

    /// `before` sorts below the span's names and above every name below the span.
    #[test]
    fn span_start_table() {
        let names = ["a", "a-b", "a.b", "a/b", "a/b/c", "a0", "aa", "b", "proj", "proj-x", "proj/a", "proj/z", "proj0", "z"];
        for span in [Span::Prefix("proj/".into()), Span::Prefix("a".into()), Span::Exact("a/b".into()), Span::Prefix("proj".into())] {
            let before = span.before().unwrap();
            for n in names {
                if n >= span.text() {
                    assert!(n > before.as_str(), "{span:?}: {n} must come after {before}");
                } else {
                    assert!(n < before.as_str(), "{span:?}: {n} must come before {before}");
                }
            }
        }
        assert_eq!(Span::Prefix(String::new()).before(), None);
    }

    #[test]
    fn spans_are_sorted_and_disjoint() {
        use berth_access::{ActionSet, Grant, Permissions, RepoPattern};
        let caller = |patterns: &[(&str, &[Action])]| Caller {
            subject: "t".into(),
            kind: berth_identity::PrincipalKind::Robot,
            grants: Grants::Permissions(Permissions {
                grants: patterns.iter().map(|(p, a)| Grant { repositories: RepoPattern::new(p).unwrap(), actions: ActionSet::of(a) }).collect(),
                admin: false,
            }),
            origin: None,
        };
        let pull: &[Action] = &[Action::Pull];
        let push: &[Action] = &[Action::Push];
        let got = spans(&caller(&[("zeta/**", pull), ("alpha/app", pull), ("alpha/*", pull), ("beta/x", push), ("zeta/sub/*", pull), ("alpha/app", pull), ("alpha", pull)]));
        assert_eq!(got, vec![Span::Exact("alpha".into()), Span::Prefix("alpha/".into()), Span::Prefix("zeta/".into())]);
        assert_eq!(spans(&caller(&[("a/*", pull), ("*", pull)])), vec![Span::Prefix(String::new())]);
        assert!(spans(&caller(&[("a/*", push)])).is_empty());
    }
}
