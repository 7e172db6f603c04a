//! `berth migrate`: copies this installation (the stores the configuration names, as `berth
//! serve` opens them) to other stores, resumably, with progress and a verification pass. The
//! work is `berth_core::migrate`; this module parses the flags, builds the destination's engines
//! with the same URL rules and settings as `serve` (`engines`), asks before replacing another
//! installation, draws the progress and prints the report.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use berth_core::migrate::{self, Destination, MigrateOptions, MigrateReport, Progress, Unit};

use crate::config::Config;

/// Flags of `berth migrate` (the command's help is on its variant in `main.rs`).
#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// Where the metadata goes: postgres://user@host:5432/database (the password may come from
    /// PGPASSWORD) or sqlite:/path/to/berth.db. The [metadata] pool settings apply.
    #[arg(long, value_name = "URL")]
    pub to_metadata_url: String,
    /// Where the blobs go: 's3://bucket/prefix?region=R' (credentials from the AWS environment
    /// or [storage]) or file:/path/to/folder.
    #[arg(long, value_name = "URL")]
    pub to_storage_url: String,
    /// Do not ask before replacing the contents of a destination that holds another
    /// installation (needed without a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Copy nothing: only compare the stores (row counts; every blob read back and hashed).
    #[arg(long)]
    pub verify_only: bool,
    /// Read back and hash the blobs the destination already has, and copy again those that are
    /// damaged or missing there (a plain rerun trusts what an earlier run recorded).
    #[arg(long, conflicts_with = "verify_only")]
    pub recheck_blobs: bool,
    /// Blobs copied (and verified) at the same time.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,
    /// No progress output (the report is still printed).
    #[arg(long)]
    pub quiet: bool,
}

/// The report on stdout with `--json`.
#[derive(serde::Serialize)]
struct JsonReport<'a> {
    source: String,
    destination: String,
    verified: bool,
    #[serde(flatten)]
    report: &'a MigrateReport,
}

pub async fn run(cfg: &Config, args: MigrateArgs, json: bool) -> anyhow::Result<()> {
    let (src_meta, src_blobs) = crate::engines(cfg)?;
    let mut to = cfg.clone();
    to.metadata_url = Some(args.to_metadata_url.clone());
    to.storage_url = Some(args.to_storage_url.clone());
    let (dst_meta, dst_blobs) = crate::engines(&to)?;
    if let Some(why) = migrate::same_place((&src_meta, &src_blobs), (&dst_meta, &dst_blobs)) {
        anyhow::bail!("{why}");
    }
    let from = format!("metadata {}, blobs {}", src_meta.describe(), src_blobs.describe());
    let into = format!("metadata {}, blobs {}", dst_meta.describe(), dst_blobs.describe());
    let say = |line: &str| {
        if !args.quiet {
            eprintln!("{line}");
        }
    };
    say(&format!(
        "berth migrate: {} this installation\n  from {from}\n  to   {into}",
        if args.verify_only { "verifying a copy of" } else { "copying" }
    ));

    let src = migrate::open_source(&src_meta, &src_blobs).await.map_err(|e| {
        let hint = if cfg.metadata_url.is_none() {
            format!(
                "; the source is the data folder {} (give the server's --data-dir, or --metadata-url and --storage-url, or its --config)",
                cfg.data_dir.display()
            )
        } else {
            String::new()
        };
        anyhow::anyhow!("{e}{hint}")
    })?;
    let dst = migrate::open_destination(&dst_meta, &dst_blobs).await?;

    if !args.verify_only {
        match migrate::destination_state(&src, &dst).await? {
            Destination::Empty => {}
            Destination::CopyOfSource => say("The destination is an earlier copy of this source: copying only what changed since."),
            Destination::Other(counts) => {
                let held: Vec<String> = counts.entries().iter().filter(|(what, n)| *n > 0 && *what != "blob_bytes").map(|(what, n)| format!("{n} {what}")).collect();
                let warning = format!(
                    "The destination already holds another installation ({}). berth migrate makes it a copy of this one: \
                     whatever this installation does not have is deleted there, the rest overwritten.",
                    held.join(", ")
                );
                if !args.yes {
                    if !std::io::stdin().is_terminal() {
                        anyhow::bail!("{warning} Pass --yes to go on.");
                    }
                    eprint!("{warning}\nReplace it? Type yes to go on: ");
                    let _ = std::io::stderr().flush();
                    let mut answer = String::new();
                    std::io::stdin().read_line(&mut answer).context("reading the answer")?;
                    if answer.trim() != "yes" {
                        anyhow::bail!("nothing was copied");
                    }
                }
            }
        }
    }

    let options = MigrateOptions {
        verify_only: args.verify_only,
        recheck_blobs: args.recheck_blobs,
        concurrency: args.concurrency as usize,
        ..MigrateOptions::default()
    };
    let progress = Bar::new(!args.quiet, std::io::stderr().is_terminal());
    let report = migrate::migrate(&src, &dst, &options, &progress).await?;
    let v = &report.verification;
    if json {
        let out = JsonReport { source: from, destination: into, verified: v.passed(), report: &report };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        if !args.verify_only {
            let rows: Vec<String> = report.tables.iter().filter(|t| t.table != "blobs").map(|t| format!("{} {}", t.rows, t.table.replace('_', " "))).collect();
            println!(
                "copied {} blobs ({}); {} were there already; {} removed that the source no longer has",
                report.blobs_copied,
                bytes(report.bytes_copied),
                report.blobs_skipped,
                report.blobs_removed
            );
            if report.blobs_repaired > 0 {
                println!("copied again because they were damaged or missing at the destination: {} blobs", report.blobs_repaired);
            }
            println!("rows: {}", rows.join(", "));
            let removed: u64 = report.tables.iter().filter(|t| t.table != "blobs").map(|t| t.removed).sum();
            if removed > 0 {
                println!("rows removed that the source no longer has: {removed}");
            }
            if !report.skipped_rows.is_empty() {
                println!("rows skipped because the source changed during the copy (run again): {}", report.skipped_rows.len());
            }
        }
        println!("verified: {} blobs ({}) read back and hashed at the destination; row counts compared:", v.blobs_verified, bytes(v.bytes_verified));
        let counts: Vec<String> = v.counts.iter().filter(|c| c.what != "blob_bytes").map(|c| {
            if c.source == c.destination { format!("{} {}", c.what.replace('_', " "), c.source) } else { format!("{} {} (destination {})", c.what.replace('_', " "), c.source, c.destination) }
        }).collect();
        println!("  {}", counts.join(", "));
    }
    if !v.passed() {
        anyhow::bail!(
            "verification failed: the destination differs from the source:\n  - {}\n\
             If the source was in use during the copy, stop writes to it (or its server) and run `berth migrate` again: \
             it copies only what changed. Blobs damaged or missing at the destination are copied again by a run with \
             --recheck-blobs.",
            v.problems.join("\n  - ")
        );
    }
    if !args.verify_only && !json {
        println!(
            "The destination is a verified copy. If the source's server ran meanwhile, stop it and run this command once more; \
             then start Berth with:\n  metadata_url = {:?}\n  storage_url = {:?}\n(BERTH_METADATA_URL / BERTH_STORAGE_URL, or --metadata-url / --storage-url)",
            redact(&args.to_metadata_url),
            args.to_storage_url
        );
    }
    Ok(())
}

/// A PostgreSQL URL without its password.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// `1.2 GiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn amount(n: u64, unit: Unit) -> String {
    match unit {
        Unit::Bytes => bytes(n),
        Unit::Rows => n.to_string(),
    }
}

/// The progress on stderr: a bar rewritten in place on a terminal; plain lines otherwise (one
/// when a phase ends, and one every 10 s during a long one); nothing with `--quiet`.
struct Bar {
    show: bool,
    terminal: bool,
    state: Mutex<BarState>,
}

struct BarState {
    what: String,
    total: Option<u64>,
    unit: Unit,
    done: u64,
    started: Instant,
    drawn: Instant,
    active: bool,
}

impl Bar {
    fn new(show: bool, terminal: bool) -> Bar {
        let now = Instant::now();
        Bar {
            show,
            terminal,
            state: Mutex::new(BarState { what: String::new(), total: None, unit: Unit::Rows, done: 0, started: now, drawn: now, active: false }),
        }
    }

    fn line(s: &BarState) -> String {
        let secs = s.started.elapsed().as_secs_f64().max(0.001);
        let rate = match s.unit {
            Unit::Bytes => format!(", {}/s", bytes((s.done as f64 / secs) as u64)),
            Unit::Rows => String::new(),
        };
        match s.total {
            Some(total) if total > 0 => {
                let frac = (s.done as f64 / total as f64).min(1.0);
                let eta = if s.done > 0 && frac < 1.0 { format!(", {}s left", ((secs / frac) - secs).round() as u64) } else { String::new() };
                format!("{}: {:>3}% {} of {}{rate}{eta}", s.what, (frac * 100.0) as u32, amount(s.done, s.unit), amount(total, s.unit))
            }
            Some(_) if s.done == 0 => format!("{}: none", s.what),
            _ if s.done == 0 => format!("{}...", s.what),
            _ => format!("{}: {}{rate}", s.what, amount(s.done, s.unit)),
        }
    }

    fn draw(&self, s: &mut BarState) {
        s.drawn = Instant::now();
        let mut err = std::io::stderr().lock();
        if self.terminal {
            const WIDTH: usize = 24;
            let filled = match s.total {
                Some(t) if t > 0 => ((s.done.min(t) as f64 / t as f64) * WIDTH as f64) as usize,
                Some(_) => WIDTH, // nothing to do is done
                None => 0,
            };
            let _ = write!(err, "\r\x1b[2K[{}{}] {}", "#".repeat(filled), "-".repeat(WIDTH - filled), Self::line(s));
            let _ = err.flush();
        } else {
            let _ = writeln!(err, "{}", Self::line(s));
        }
    }

    /// Ends the current phase's line (on a terminal: its last state stays on screen; off one,
    /// its last state is the phase's one line, after those every 10 s of a long phase).
    fn finish(&self, s: &mut BarState) {
        if s.active {
            self.draw(s);
            if self.terminal {
                eprintln!();
            }
            s.active = false;
        }
    }
}

impl Progress for Bar {
    fn phase(&self, what: &str, total: Option<u64>, unit: Unit) {
        if !self.show {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.finish(&mut s);
        *s = BarState { what: what.to_owned(), total, unit, done: 0, started: Instant::now(), drawn: Instant::now(), active: true };
        if self.terminal {
            self.draw(&mut s);
        }
    }

    fn advance(&self, n: u64) {
        if !self.show {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.done += n;
        let every = if self.terminal { Duration::from_millis(100) } else { Duration::from_secs(10) };
        if s.drawn.elapsed() >= every {
            self.draw(&mut s);
        }
    }

    fn note(&self, line: &str) {
        if !self.show {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.terminal {
            eprint!("\r\x1b[2K");
        }
        eprintln!("{line}");
        if self.terminal && s.active {
            self.draw(&mut s);
        }
    }

    fn done(&self) {
        if !self.show {
            return;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        self.finish(&mut s);
    }
}
