//! `berth-conformance`: runs the OCI distribution-spec conformance checks against a registry,
//! prints each check as `ok` or `FAIL`, closes with `conformance: N passed, M failed`, and exits
//! non-zero when any check failed.

use std::process::ExitCode;

use clap::Parser;

/// Black-box OCI distribution-spec v1.1 conformance checker.
#[derive(Debug, Parser)]
#[command(name = "berth-conformance", version, about)]
struct Args {
    /// Base URL of the registry.
    #[arg(long, default_value = "http://127.0.0.1:5000")]
    url: String,
    /// Repository to test in (may have several path components).
    #[arg(long, default_value = "conformance/berth/main")]
    namespace: String,
    /// Second repository, the target of cross-repository blob mounts.
    #[arg(long, default_value = "conformance/berth/mount-target")]
    cross_mount_namespace: String,
    /// User for HTTP Basic or the token endpoint.
    #[arg(long, env = "BERTH_CONFORMANCE_USERNAME")]
    username: Option<String>,
    /// Password for HTTP Basic or the token endpoint.
    #[arg(long, env = "BERTH_CONFORMANCE_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Print the report as JSON on stdout (the closing summary line goes to stderr).
    #[arg(long)]
    json: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = berth_conformance::Config {
        url: args.url,
        namespace: args.namespace,
        cross_mount_namespace: args.cross_mount_namespace,
        username: args.username,
        password: args.password,
    };
    let report = berth_conformance::run(cfg).await;
    if args.json {
        match serde_json::to_string_pretty(&report.to_json()) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("cannot render the report as JSON: {e}"),
        }
        eprintln!("{}", report.summary_line());
    } else {
        print!("{}", report.render_text());
        println!("{}", report.summary_line());
    }
    if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
