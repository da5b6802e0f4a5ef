//! The `sluice` command.

mod bench;
mod count_tokens;
mod demo;
mod loadgen;

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use futures_util::StreamExt;
use sluice::{ApiKey, ChatRequest, Client, Error, Message, RetryPolicy};
use sluice_core::Backoff;
use sluice_gateway::{Config, Gateway, GatewayOptions, ProviderConfig};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Resilient calls to LLM APIs: retries, backoff, deadlines and streams that never skip the policy"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter (tracing env-filter syntax, e.g. "info" or "sluice=debug"); RUST_LOG also
    /// works. Default: "info", and "error" for `demo` (whose table tells the story).
    #[arg(long, global = true)]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Send one chat request through the full retry policy and print the answer.
    Chat(ChatArgs),
    /// Run the fault-injecting mock provider (OpenAI-compatible) until interrupted.
    Mock(MockArgs),
    /// Run the same requests straight to a faulty mock provider and through Sluice, side by side.
    Demo(demo::DemoArgs),
    /// Run the OpenAI-compatible gateway (config file, one upstream, or the embedded default).
    Serve(ServeArgs),
    /// Validate a config file; prints every problem with its file, line and key.
    Check(CheckArgs),
    /// Measure the gateway's added latency, throughput and memory against the mock (JSON out).
    Bench(bench::BenchArgs),
    /// Count the tokens of a chat request or text offline and show what truncation would drop.
    CountTokens(count_tokens::CountTokensArgs),
}

#[derive(Debug, Args)]
struct ChatArgs {
    /// Base URL of any OpenAI-compatible API, up to the version (`https://api.openai.com/v1`).
    #[arg(long, env = "SLUICE_BASE_URL")]
    base_url: String,
    /// Model name sent upstream.
    #[arg(long, short)]
    model: String,
    /// Stream the answer to stdout as it arrives.
    #[arg(long)]
    stream: bool,
    /// Environment variable holding the API key (never printed).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    api_key_env: String,
    /// System message sent before the prompt.
    #[arg(long)]
    system: Option<String>,
    /// Output token limit (`max_tokens`).
    #[arg(long)]
    max_tokens: Option<u64>,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Seed for the backoff jitter (reproducible delays).
    #[arg(long)]
    seed: Option<u64>,
    /// The prompt; `-` or absent reads it from stdin.
    prompt: Option<String>,
}

/// Retry policy flags; defaults are the library's.
#[derive(Debug, Args)]
struct PolicyArgs {
    /// Retries after the first attempt.
    #[arg(long, default_value_t = RetryPolicy::DEFAULT_MAX_RETRIES)]
    max_retries: u32,
    /// First backoff ceiling; doubles per retry (full jitter).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    base_delay: Duration,
    /// Largest backoff ceiling.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    max_delay: Duration,
    /// A server retry hint longer than this ends the retries at once.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    max_retry_after: Duration,
    /// Total time for the call, across every attempt and sleep.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    deadline: Duration,
    /// Connect timeout per attempt.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    connect_timeout: Duration,
    /// Streaming: time allowed until the first content event.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    first_token_timeout: Duration,
    /// Longest gap between stream events.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    idle_timeout: Duration,
}

impl PolicyArgs {
    fn to_policy(&self) -> Result<RetryPolicy, String> {
        let policy = RetryPolicy {
            max_retries: self.max_retries,
            backoff: Backoff::try_new(self.base_delay, self.max_delay)
                .map_err(|e| e.to_string())?,
            max_retry_after: self.max_retry_after,
            deadline: self.deadline,
            connect_timeout: self.connect_timeout,
            first_token_timeout: self.first_token_timeout,
            idle_timeout: self.idle_timeout,
        };
        policy.validate().map_err(|e| e.to_string())?;
        Ok(policy)
    }
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML config file (see examples/sluice.toml).
    #[arg(long, short, env = "SLUICE_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Proxy every model to this OpenAI-compatible base URL (`https://api.openai.com/v1`) with the
    /// default policy; with --config, models no entry routes go here.
    #[arg(long)]
    upstream: Option<String>,
    /// Environment variable holding the --upstream key (never printed).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    upstream_key_env: String,
    /// Listen address (overrides the config's server.listen).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Collect no metrics: no /metrics, /status or /status.json (overrides server.metrics).
    #[arg(long)]
    no_metrics: bool,
    /// Settings of the built-in mock provider of the embedded default (no --config, no --upstream).
    #[command(
        flatten,
        next_help_heading = "Embedded mock provider (without --config and --upstream)"
    )]
    mock: sluice_mock::MockConfig,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The config file to validate.
    #[arg(long, short)]
    config: std::path::PathBuf,
}

#[derive(Debug, Args)]
struct MockArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: std::net::SocketAddr,
    #[command(flatten)]
    config: sluice_mock::MockConfig,
}

/// Exit codes: 0 success, 1 the call failed (classified error on stderr), 2 bad usage or
/// configuration, 3 a stream broke after content started.
const EXIT_CALL_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_STREAM_INTERRUPTED: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Demo(_) => "error",
        _ => "info",
    };
    init_logging(cli.log_format, cli.log.as_deref().unwrap_or(default_log));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Chat(args) => chat(args).await,
            Command::Mock(args) => mock(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Serve(args) => serve(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Check(args) => check(&args),
            Command::CountTokens(args) => count_tokens::run(args),
        }
    })
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn chat(args: ChatArgs) -> ExitCode {
    let policy = match args.policy.to_policy() {
        Ok(p) => p,
        Err(e) => return usage_error(&e),
    };
    let prompt = match args.prompt.as_deref() {
        Some(p) if p != "-" => p.to_owned(),
        _ => {
            let mut s = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut s) {
                return usage_error(&format!("cannot read the prompt from stdin: {e}"));
            }
            s
        }
    };
    let mut builder = Client::builder()
        .openai(
            "upstream",
            &args.base_url,
            ApiKey::from_env(&args.api_key_env),
        )
        .policy(policy);
    if let Some(seed) = args.seed {
        builder = builder.seed(seed);
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => return usage_error(&e.to_string()),
    };
    let mut req = ChatRequest::user(&args.model, prompt);
    if let Some(system) = args.system {
        req.messages.insert(0, Message::text("system", system));
    }
    req.max_tokens = args.max_tokens;

    let mut stdout = std::io::stdout().lock();
    if args.stream {
        let mut stream = match client.chat_stream(req).await {
            Ok(s) => s,
            Err(e) => return call_error(&e),
        };
        tracing::info!(upstream = %stream.target(), attempts = stream.attempts(), "stream committed");
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => {
                    if let Some(text) = chunk.text() {
                        let _ = stdout.write_all(text.as_bytes());
                        let _ = stdout.flush();
                    }
                }
                Err(e) => {
                    let _ = writeln!(stdout);
                    return call_error(&Error::from(e));
                }
            }
        }
        let _ = writeln!(stdout);
    } else {
        match client.chat(req).await {
            Ok(response) => {
                let _ = writeln!(stdout, "{}", response.text());
            }
            Err(e) => return call_error(&e),
        }
    }
    ExitCode::SUCCESS
}

fn usage_error(message: &str) -> ExitCode {
    tracing::error!("{message}");
    ExitCode::from(EXIT_USAGE)
}

fn call_error(err: &Error) -> ExitCode {
    let class = err
        .class()
        .map_or_else(|| "request".to_owned(), |c| c.to_string());
    tracing::error!(class = %class, "call failed: {err}");
    if let Some(failure) = err.as_call_failure() {
        for a in &failure.attempts {
            tracing::info!("  {a}: {}", a.message);
        }
    }
    match err {
        Error::StreamInterrupted(_) => ExitCode::from(EXIT_STREAM_INTERRUPTED),
        Error::UnknownModel { .. } | Error::InvalidRequest(_) => ExitCode::from(EXIT_USAGE),
        Error::Call(_) => ExitCode::from(EXIT_CALL_FAILED),
    }
}

async fn mock(args: MockArgs) -> ExitCode {
    if let Err(e) = args.config.validate() {
        return usage_error(&e);
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => return usage_error(&format!("cannot listen on {}: {e}", args.listen)),
    };
    let server = match sluice_mock::MockServer::start_on(listener, args.config).await {
        Ok(s) => s,
        Err(e) => return usage_error(&format!("cannot start the mock: {e}")),
    };
    tracing::info!(
        "sluice mock listening on {} (stats: http://{}/stats)",
        server.base_url(),
        server.addr()
    );
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    ExitCode::SUCCESS
}

/// The config `serve` runs: the file, `--upstream`, or the embedded default.
fn serve_config(args: &ServeArgs) -> Result<(Config, GatewayOptions, &'static str), String> {
    let mut options = GatewayOptions::default();
    let (mut config, origin) = match &args.config {
        Some(path) => (
            Config::from_path(path).map_err(|e| e.to_string())?,
            "config file",
        ),
        None if args.upstream.is_some() => (Config::default(), "--upstream"),
        None => {
            let mut config = Config::default();
            config
                .providers
                .push(ProviderConfig::mock("mock", args.mock.clone()));
            if ApiKey::from_env("OPENAI_API_KEY").is_some() {
                config.providers.push(ProviderConfig {
                    api_key_env: Some("OPENAI_API_KEY".into()),
                    ..ProviderConfig::openai("openai", "https://api.openai.com/v1")
                });
            }
            if ApiKey::from_env("ANTHROPIC_API_KEY").is_some() {
                config.providers.push(ProviderConfig {
                    api_key_env: Some("ANTHROPIC_API_KEY".into()),
                    ..ProviderConfig::anthropic("anthropic", sluice_gateway::ANTHROPIC_BASE_URL)
                });
            }
            (config, "embedded default")
        }
    };
    if let Some(upstream) = &args.upstream {
        config.providers.push(ProviderConfig {
            api_key_env: Some(args.upstream_key_env.clone()),
            ..ProviderConfig::openai("upstream", upstream)
        });
        options.default_provider = Some("upstream".into());
    }
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if args.no_metrics {
        config.server.metrics = false;
    }
    Ok((config, options, origin))
}

async fn serve(args: ServeArgs) -> ExitCode {
    let (config, options, origin) = match serve_config(&args) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let listen = config.server.listen;
    let admin_listen = config.server.admin_listen;
    let metrics = config.server.metrics;
    let providers: Vec<String> = config.providers.iter().map(|p| p.name.clone()).collect();
    let gateway = match Gateway::build(config, options).await {
        Ok(g) => g,
        Err(e) => return usage_error(&e.to_string()),
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => return usage_error(&format!("cannot listen on {listen}: {e}")),
    };
    let addr = listener.local_addr().unwrap_or(listen);
    let admin = match admin_listen {
        Some(admin) => match tokio::net::TcpListener::bind(admin).await {
            Ok(l) => Some(l),
            Err(e) => {
                return usage_error(&format!(
                    "cannot listen on {admin} (server.admin_listen): {e}"
                ));
            }
        },
        None => None,
    };
    let observability_addr = admin
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .unwrap_or(addr);
    let example_model = if origin == "embedded default" {
        "mock/mock-1"
    } else if let Some(m) = gateway.config().models.first() {
        m.name.as_str()
    } else {
        "gpt-4o-mini"
    };
    let example_model = example_model.to_owned();
    tracing::info!(providers = ?providers, "sluice gateway ({origin}) listening on http://{addr}/v1");
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "Sluice gateway listening on http://{addr}/v1 ({origin}; providers: {})",
            providers.join(", ")
        );
        let _ = writeln!(
            out,
            "Try: curl -s http://{addr}/v1/chat/completions -H 'content-type: application/json' -d '{{\"model\":\"{example_model}\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello\"}}]}}'"
        );
        if metrics {
            let _ = writeln!(
                out,
                "Status page: http://{observability_addr}/status (metrics: http://{observability_addr}/metrics)"
            );
        }
        let _ = out.flush();
    }
    match gateway
        .serve_with_admin(listener, admin, shutdown_signal())
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("server failed: {e}");
            ExitCode::from(EXIT_CALL_FAILED)
        }
    }
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn check(args: &CheckArgs) -> ExitCode {
    match Config::from_path(&args.config) {
        Ok(config) => {
            for warning in config.warnings() {
                tracing::warn!("{warning}");
            }
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{}: OK ({} providers, {} models)",
                args.config.display(),
                config.providers.len(),
                config.models.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
