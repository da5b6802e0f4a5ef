//! `sluice demo`: the same batch of requests, once straight to a faulty provider and once
//! through Sluice, side by side. Everything runs in-process on loopback; no API key needed.
//! The gateway's status page shows the run live (its URL is printed first); `--hold` keeps the
//! gateway serving after the table, so the page can be read at leisure.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use sluice::RetryPolicy;
use sluice_core::{Backoff, BudgetConfig};
use sluice_gateway::{Config, Gateway, GatewayOptions, ModelConfig, ProviderConfig};
use sluice_mock::{MockConfig, MockServer};

use crate::loadgen::{self, LoadReport, LoadSpec};

/// Options of `sluice demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Requests per path and kind (streaming and non-streaming each send this many).
    #[arg(long, default_value_t = 150)]
    requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seed of the mock's fault draw.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Share of requests answered 429 (with a retry-after hint).
    #[arg(long, default_value_t = 0.30)]
    p_429: f64,
    /// Share answered 503.
    #[arg(long, default_value_t = 0.05)]
    p_503: f64,
    /// Share answered 529 (overloaded).
    #[arg(long, default_value_t = 0.03)]
    p_529: f64,
    /// Share whose connection is reset before any byte.
    #[arg(long, default_value_t = 0.03)]
    p_reset: f64,
    /// After the table, keep the gateway (and its status page) serving until ctrl-c.
    #[arg(long)]
    hold: bool,
}

struct PathRun {
    plain: LoadReport,
    stream: LoadReport,
    upstream_requests: u64,
}

/// Runs the demo; the table goes to stdout, progress to stderr.
pub async fn run(args: DemoArgs) -> ExitCode {
    let mock_config = MockConfig {
        chunks: 12,
        ttft: Duration::from_millis(40),
        chunk_gap: Duration::from_millis(5),
        seed: args.seed,
        p_429: args.p_429,
        p_503: args.p_503,
        p_529: args.p_529,
        p_reset: args.p_reset,
        retry_after: Some(Duration::from_millis(250)),
        ..MockConfig::default()
    };
    if let Err(e) = mock_config.validate() {
        tracing::error!("{e}");
        return ExitCode::from(2);
    }
    let mock = match MockServer::start(mock_config).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("cannot start the mock provider: {e}");
            return ExitCode::from(1);
        }
    };
    let policy = demo_policy();
    let mut config = Config {
        policy: policy.clone(),
        // This fault mix fails ~40% of first attempts. The default budget (retries up to 20% of
        // traffic) exists to keep an outage from becoming a retry storm, and would refuse most
        // of these retries; the demo shows retrying itself, so it allows one retry per request.
        budget: BudgetConfig {
            ratio: 1.0,
            ..BudgetConfig::default()
        },
        ..Config::default()
    };
    config
        .providers
        .push(ProviderConfig::openai("mock", &mock.base_url()));
    config
        .models
        .push(ModelConfig::new("demo", &["mock/mock-1"], policy));
    let gateway = match Gateway::build(config, GatewayOptions::default()).await {
        Ok(g) => g,
        Err(e) => {
            tracing::error!("cannot build the gateway: {e}");
            return ExitCode::from(1);
        }
    };
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot listen on loopback: {e}");
            return ExitCode::from(1);
        }
    };
    let gateway = match gateway.start(listener) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!("cannot start the gateway: {e}");
            return ExitCode::from(1);
        }
    };
    {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "mock provider {} (faults: {:.0}% 429 with retry-after 250ms, {:.0}% 503, {:.0}% 529, {:.0}% resets)\nsluice gateway {}\nwatch it live: {}",
            mock.base_url(),
            args.p_429 * 100.0,
            args.p_503 * 100.0,
            args.p_529 * 100.0,
            args.p_reset * 100.0,
            gateway.base_url(),
            gateway.status_url(),
        );
    }
    let http = loadgen::http_client(args.concurrency * 2);
    let direct = run_path(
        &http,
        &mock,
        &args,
        "direct to the provider",
        &mock.base_url(),
        "mock-1",
    )
    .await;
    let through = run_path(
        &http,
        &mock,
        &args,
        "through sluice",
        &gateway.base_url(),
        "demo",
    )
    .await;
    print_table(&direct, &through);
    if args.hold {
        {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(
                err,
                "\nThe gateway keeps serving; its status page: {}\nPress ctrl-c to stop.",
                gateway.status_url()
            );
        }
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = gateway.shutdown().await;
    ExitCode::SUCCESS
}

/// Short delays so the demo finishes in seconds; the hint from the mock still sets the floor.
fn demo_policy() -> RetryPolicy {
    RetryPolicy {
        max_retries: 8,
        backoff: Backoff::try_new(Duration::from_millis(100), Duration::from_secs(2))
            .expect("constant backoff bounds are valid"),
        deadline: Duration::from_secs(30),
        ..RetryPolicy::default()
    }
}

async fn run_path(
    http: &reqwest::Client,
    mock: &MockServer,
    args: &DemoArgs,
    label: &str,
    base_url: &str,
    model: &str,
) -> PathRun {
    let before = mock.stats().requests;
    let mut reports = Vec::new();
    for stream in [false, true] {
        let spec = LoadSpec {
            base_url: base_url.to_owned(),
            model: model.to_owned(),
            requests: args.requests,
            concurrency: args.concurrency,
            rate: None,
            stream,
            headers: Vec::new(),
            api_key: None,
            prompt: "Tell me about rivers.".into(),
            timeout: Duration::from_secs(60),
            max_duration: Some(Duration::from_secs(60)),
        };
        let kind = if stream { "streaming" } else { "non-streaming" };
        let name = format!("{label}, {kind}");
        let progress = |done: usize, total: usize| progress_bar(&name, done, total);
        let report = loadgen::run_load(http, &spec, Some(&progress)).await;
        progress_done(&name, &report);
        reports.push(report);
    }
    let upstream_requests = mock.stats().requests - before;
    let stream = reports.pop().expect("two runs");
    let plain = reports.pop().expect("two runs");
    PathRun {
        plain,
        stream,
        upstream_requests,
    }
}

fn progress_bar(name: &str, done: usize, total: usize) {
    let mut err = std::io::stderr().lock();
    if !std::io::stderr().is_terminal() && done != total && done % 50 != 0 {
        return;
    }
    let width = 30;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    let _ = write!(
        err,
        "\r{name:<40} [{}{}] {done}/{total}",
        "#".repeat(filled),
        ".".repeat(width - filled)
    );
    if !std::io::stderr().is_terminal() {
        let _ = writeln!(err);
    }
    let _ = err.flush();
}

fn progress_done(name: &str, report: &LoadReport) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "\r{name:<40} done: {}/{} succeeded in {:.1}s",
        report.succeeded,
        report.requests,
        report.elapsed.as_secs_f64()
    );
}

fn fmt_ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn print_table(direct: &PathRun, through: &PathRun) {
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let both = |f: &dyn Fn(&PathRun) -> String| (f(direct), f(through));
    let total = |r: &PathRun| r.plain.requests + r.stream.requests;
    let ok = |r: &PathRun| r.plain.succeeded + r.stream.succeeded;
    let mut row = |name: &str, (a, b): (String, String)| rows.push((name.to_owned(), a, b));
    row("requests", both(&|r| total(r).to_string()));
    row(
        "succeeded",
        both(&|r| {
            format!(
                "{} ({:.1}%)",
                ok(r),
                100.0 * ok(r) as f64 / total(r).max(1) as f64
            )
        }),
    );
    let mut classes: Vec<String> = Vec::new();
    for r in [direct, through] {
        for report in [&r.plain, &r.stream] {
            for class in report.failed_by_class.keys() {
                if !classes.contains(class) {
                    classes.push(class.clone());
                }
            }
        }
    }
    classes.sort();
    let failed = |r: &PathRun| (r.plain.failed + r.stream.failed).to_string();
    row("failed", both(&failed));
    for class in &classes {
        let count = |r: &PathRun| {
            (r.plain.failed_by_class.get(class).copied().unwrap_or(0)
                + r.stream.failed_by_class.get(class).copied().unwrap_or(0))
            .to_string()
        };
        row(&format!("  failed: {class}"), both(&count));
    }
    row(
        "upstream requests",
        both(&|r| r.upstream_requests.to_string()),
    );
    row(
        "retries (upstream - client)",
        both(&|r| {
            r.upstream_requests
                .saturating_sub(total(r) as u64)
                .to_string()
        }),
    );
    row(
        "latency p50 / p99 (non-streaming)",
        both(&|r| {
            format!(
                "{} / {}",
                fmt_ms(r.plain.latency_p50),
                fmt_ms(r.plain.latency_p99)
            )
        }),
    );
    row(
        "latency p50 / p99 (streaming)",
        both(&|r| {
            format!(
                "{} / {}",
                fmt_ms(r.stream.latency_p50),
                fmt_ms(r.stream.latency_p99)
            )
        }),
    );
    row(
        "time to first token p50 / p99",
        both(&|r| match (r.stream.ttfb_p50, r.stream.ttfb_p99) {
            (Some(a), Some(b)) => format!("{} / {}", fmt_ms(a), fmt_ms(b)),
            _ => "-".into(),
        }),
    );
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<36} {:>24} {:>24}",
        "", "direct to provider", "through sluice"
    );
    let _ = writeln!(out, "{}", "-".repeat(86));
    for (name, a, b) in rows {
        let _ = writeln!(out, "{name:<36} {a:>24} {b:>24}");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Latency through Sluice includes the retries it made for you (waiting out retry-after hints);\nthe direct column's failures are what your app would have had to handle itself."
    );
}
