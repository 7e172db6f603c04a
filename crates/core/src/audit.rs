//! The audit log writer: handlers record events without waiting for the database; a background
//! task writes them in batches (one transaction per batch, at least every 200 ms) and is flushed
//! on shutdown. If the queue is full (the database is stuck), events are dropped and counted in
//! `berth_audit_dropped_total` rather than blocking pulls and pushes.
//!
//! Refusals can be sent by anyone, so they are collapsed: the first event of a collapse key is
//! written, identical ones within [`COLLAPSE_WINDOW`] are only counted, and one summary event
//! ("repeated N more times") follows when the window ends. The collapse table is bounded; when it
//! is full, events are written as they come (every string in them is capped by the callers).

use std::sync::Arc;
use std::time::Duration;

use berth_meta::{AuditEvent, MetadataStore};
use tokio::sync::{mpsc, oneshot};

const QUEUE: usize = 16_384;
const BATCH: usize = 1_000;
const INTERVAL: Duration = Duration::from_millis(200);
/// Identical refusals within this window become one row and one summary.
pub const COLLAPSE_WINDOW: Duration = Duration::from_secs(60);
/// Collapse keys tracked at once.
const COLLAPSE_KEYS: usize = 4_096;

enum Msg {
    Event(Box<AuditEvent>, Option<String>),
    Flush(oneshot::Sender<()>),
}

/// A collapse key's window: when it started, its first event and how many more came.
struct Collapsed {
    since: tokio::time::Instant,
    first: Box<AuditEvent>,
    more: u64,
}

/// The collapse table of the writer task (no locks: only the writer touches it).
#[derive(Default)]
struct Collapser {
    keys: std::collections::HashMap<String, Collapsed>,
}

impl Collapser {
    /// Whether to write `event` now (false: it was counted into an open window).
    fn admit(&mut self, key: String, event: &AuditEvent, now: tokio::time::Instant) -> bool {
        if let Some(c) = self.keys.get_mut(&key) {
            c.more += 1;
            metrics::counter!("berth_audit_collapsed_total").increment(1);
            return false;
        }
        if self.keys.len() < COLLAPSE_KEYS {
            self.keys.insert(key, Collapsed { since: now, first: Box::new(event.clone()), more: 0 });
        }
        true
    }

    /// Summaries of the windows that ended (all of them with `all`).
    fn expire(&mut self, now: tokio::time::Instant, all: bool) -> Vec<AuditEvent> {
        let mut out = Vec::new();
        self.keys.retain(|_, c| {
            if !all && now.duration_since(c.since) < COLLAPSE_WINDOW {
                return true;
            }
            if c.more > 0 {
                let mut e = (*c.first).clone();
                e.time_ms = now_ms();
                e.message = Some(format!(
                    "repeated {} more times in {} s: {}",
                    c.more,
                    now.duration_since(c.since).as_secs().max(1),
                    e.message.as_deref().unwrap_or("")
                ));
                out.push(e);
            }
            false
        });
        out
    }
}

/// Where handlers send audit events.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Msg>,
}

pub use crate::clock::now_ms;

impl AuditSink {
    /// Starts the writer task on the current runtime.
    pub fn start(meta: Arc<dyn MetadataStore>) -> AuditSink {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(meta, rx));
        AuditSink { tx }
    }

    /// Queues one event (never waits).
    pub fn record(&self, event: AuditEvent) {
        self.send(event, None)
    }

    /// Queues an event that floods may repeat (refusals): identical `key`s within
    /// [`COLLAPSE_WINDOW`] become one row and one summary with their count.
    pub fn record_collapsing(&self, key: String, event: AuditEvent) {
        self.send(event, Some(key))
    }

    fn send(&self, event: AuditEvent, key: Option<String>) {
        match self.tx.try_send(Msg::Event(Box::new(event), key)) {
            Ok(()) => metrics::counter!("berth_audit_events_total").increment(1),
            Err(_) => metrics::counter!("berth_audit_dropped_total").increment(1),
        }
    }

    /// Waits until every event queued so far is written.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

async fn writer(meta: Arc<dyn MetadataStore>, mut rx: mpsc::Receiver<Msg>) {
    let mut batch: Vec<AuditEvent> = Vec::with_capacity(BATCH);
    let mut acks: Vec<oneshot::Sender<()>> = Vec::new();
    let mut collapser = Collapser::default();
    // Events wait at most INTERVAL after the first of their batch arrived.
    let mut deadline = tokio::time::Instant::now();
    loop {
        let msg = if batch.is_empty() {
            // Idle: wake up when a collapse window may have ended.
            let m = if collapser.keys.is_empty() {
                rx.recv().await
            } else {
                match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
                    Ok(m) => m,
                    Err(_) => {
                        batch.extend(collapser.expire(tokio::time::Instant::now(), false));
                        write(&*meta, &mut batch).await;
                        continue;
                    }
                }
            };
            deadline = tokio::time::Instant::now() + INTERVAL;
            match m {
                Some(m) => Some(m),
                None => break,
            }
        } else {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(m)) => Some(m),
                Ok(None) => break,
                Err(_) => None,
            }
        };
        let mut write_now = msg.is_none();
        let now = tokio::time::Instant::now();
        let mut take = |e: Box<AuditEvent>, key: Option<String>, batch: &mut Vec<AuditEvent>| {
            if let Some(k) = key {
                if !collapser.admit(k, &e, now) {
                    return;
                }
            }
            batch.push(*e);
        };
        match msg {
            Some(Msg::Event(e, key)) => {
                take(e, key, &mut batch);
                write_now = batch.len() >= BATCH;
            }
            Some(Msg::Flush(ack)) => {
                acks.push(ack);
                write_now = true;
            }
            None => {}
        }
        // Take whatever else is already queued, up to a batch.
        while batch.len() < BATCH && !write_now {
            match rx.try_recv() {
                Ok(Msg::Event(e, key)) => take(e, key, &mut batch),
                Ok(Msg::Flush(ack)) => {
                    acks.push(ack);
                    write_now = true;
                }
                Err(_) => break,
            }
        }
        if write_now || batch.len() >= BATCH {
            batch.extend(collapser.expire(now, false));
            write(&*meta, &mut batch).await;
            for a in acks.drain(..) {
                let _ = a.send(());
            }
        }
    }
    batch.extend(collapser.expire(tokio::time::Instant::now(), true));
    write(&*meta, &mut batch).await;
    for a in acks.drain(..) {
        let _ = a.send(());
    }
}

async fn write(meta: &dyn MetadataStore, batch: &mut Vec<AuditEvent>) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = meta.append_audit(batch).await {
        tracing::error!(error = %e, events = batch.len(), "writing audit events failed; they are lost");
        metrics::counter!("berth_audit_dropped_total").increment(batch.len() as u64);
    }
    batch.clear();
}

/// What an audited event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    /// A registry token was issued.
    Token,
    /// A login: refused ones of anyone, successful ones of people (browser, device).
    Login,
    /// A credential of a user was created or revoked (personal access tokens, sessions).
    Credential,
    Pull,
    Push,
    Delete,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Token => "token",
            AuditAction::Login => "login",
            AuditAction::Credential => "credential",
            AuditAction::Pull => "pull",
            AuditAction::Push => "push",
            AuditAction::Delete => "delete",
        }
    }
}

/// How an audited event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditResult {
    Ok,
    Denied,
    Error,
}

impl AuditResult {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditResult::Ok => "ok",
            AuditResult::Denied => "denied",
            AuditResult::Error => "error",
        }
    }
}

/// Builds an audit event: the one place where events get their time, their typed action and
/// result, the workload identity of a federated login, and their client strings capped.
pub struct EventBuilder {
    event: AuditEvent,
}

impl EventBuilder {
    /// An event of `principal` (capped to [`crate::text::MAX_LOGGED_NAME`]) at the current time.
    pub fn new(action: AuditAction, result: AuditResult, principal: &str) -> EventBuilder {
        EventBuilder {
            event: AuditEvent {
                id: 0,
                time_ms: now_ms(),
                action: action.as_str().into(),
                result: result.as_str().into(),
                principal: crate::text::capped(principal, crate::text::MAX_LOGGED_NAME),
                robots: vec![],
                provider: None,
                subject: None,
                jti: None,
                claims: None,
                repository: None,
                reference: None,
                client: None,
                message: None,
            },
        }
    }

    /// The federated login the principal came from: robots, provider, token subject and id, and
    /// the provider's identifying claims.
    pub fn origin(mut self, origin: Option<&berth_identity::TokenOrigin>) -> EventBuilder {
        if let Some(o) = origin {
            self.event.robots = o.robots.clone();
            self.event.provider = Some(o.idp.clone()).filter(|p| !p.is_empty());
            self.event.subject = o.sub.clone();
            // A person's events name the Berth token they used where a workload's name its
            // OIDC token's `jti`.
            self.event.jti = o.jti.clone().or_else(|| o.token.as_ref().map(|t| format!("berth-token:{t}")));
            self.event.claims = (!o.claims.is_empty()).then(|| serde_json::Value::Object(o.claims.clone()));
        }
        self
    }

    pub fn provider(mut self, provider: Option<String>) -> EventBuilder {
        self.event.provider = provider;
        self
    }

    pub fn repository(mut self, repo: &str) -> EventBuilder {
        self.event.repository = Some(repo.to_owned());
        self
    }

    /// A tag or digest (capped).
    pub fn reference(mut self, reference: &str) -> EventBuilder {
        self.event.reference = Some(crate::text::capped(reference, crate::text::MAX_LOGGED_NAME));
        self
    }

    pub fn client(mut self, client: Option<std::net::IpAddr>) -> EventBuilder {
        self.event.client = client.map(|c| c.to_string());
        self
    }

    /// A free-text message (capped to [`crate::text::MAX_LOGGED_MESSAGE`]).
    pub fn message(mut self, message: impl AsRef<str>) -> EventBuilder {
        self.event.message = Some(crate::text::capped(message.as_ref(), crate::text::MAX_LOGGED_MESSAGE));
        self
    }

    pub fn build(self) -> AuditEvent {
        self.event
    }
}
