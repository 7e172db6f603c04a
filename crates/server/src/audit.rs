//! The audit log writer: handlers record events without waiting for the database; a background
//! task writes them in batches (one transaction per batch, at least every 200 ms) and is flushed
//! on shutdown. If the queue is full (the database is stuck), events are dropped and counted in
//! `berth_audit_dropped_total` rather than blocking pulls and pushes.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_meta::{AuditEvent, MetadataStore};
use tokio::sync::{mpsc, oneshot};

const QUEUE: usize = 65_536;
const BATCH: usize = 1_000;
const INTERVAL: Duration = Duration::from_millis(200);

enum Msg {
    Event(Box<AuditEvent>),
    Flush(oneshot::Sender<()>),
}

/// Where handlers send audit events.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Msg>,
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl AuditSink {
    /// Starts the writer task on the current runtime.
    pub fn start(meta: Arc<dyn MetadataStore>) -> AuditSink {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(meta, rx));
        AuditSink { tx }
    }

    /// Queues one event (never waits).
    pub fn record(&self, event: AuditEvent) {
        match self.tx.try_send(Msg::Event(Box::new(event))) {
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
    // Events wait at most INTERVAL after the first of their batch arrived.
    let mut deadline = tokio::time::Instant::now();
    loop {
        let msg = if batch.is_empty() {
            let m = rx.recv().await;
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
        match msg {
            Some(Msg::Event(e)) => {
                batch.push(*e);
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
                Ok(Msg::Event(e)) => batch.push(*e),
                Ok(Msg::Flush(ack)) => {
                    acks.push(ack);
                    write_now = true;
                }
                Err(_) => break,
            }
        }
        if write_now || batch.len() >= BATCH {
            write(&*meta, &mut batch).await;
            for a in acks.drain(..) {
                let _ = a.send(());
            }
        }
    }
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
