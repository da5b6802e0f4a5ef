use std::path::Path;
use std::time::Duration;

use sluice_core::{Backoff, BreakerConfig, BudgetConfig, ContextPolicy, OnOverflow, RetryPolicy};
use sluice_mock::MockConfig;

use super::*;

const SLUICE_TOML: &str = include_str!("../../../../examples/sluice.toml");
const MINIMAL_TOML: &str = include_str!("../../../../examples/minimal.toml");

/// The issue's minimal contract, verbatim.
const CONTRACT: &str = r#"
[server]
listen = "127.0.0.1:8080"
api_keys_env = "SLUICE_API_KEYS"
max_body = "32MiB"

[policy]
max_retries = 5
base_delay = "1s"
max_delay = "60s"
max_retry_after = "60s"
deadline = "10m"
first_token_timeout = "60s"
idle_timeout = "60s"

[[providers]]
name = "openai"
kind = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"

[[models]]
name = "fast"
targets = ["openai/gpt-4o-mini"]
"#;

/// An environment where only `SLUICE_API_KEYS` is set.
fn test_env(name: &str) -> Option<String> {
    (name == "SLUICE_API_KEYS").then(|| "k1,k2".to_owned())
}

fn empty_env(_: &str) -> Option<String> {
    None
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str_with_env(text, None, &test_env)
}

fn problems(text: &str) -> Vec<ConfigProblem> {
    match load(text) {
        Ok(config) => panic!("expected problems, got {config:#?}"),
        Err(e) => {
            assert!(!e.problems.is_empty());
            e.problems
        }
    }
}

/// The problem at `path`, asserting there is exactly one.
fn at<'a>(problems: &'a [ConfigProblem], path: &str) -> &'a ConfigProblem {
    let found: Vec<&ConfigProblem> = problems.iter().filter(|p| p.path == path).collect();
    assert_eq!(
        found.len(),
        1,
        "one problem at {path:?} expected in {problems:#?}"
    );
    found[0]
}

/// The only problem, asserting its path and line.
fn only(text: &str, path: &str, line: usize) -> ConfigProblem {
    let problems = problems(text);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let p = problems[0].clone();
    assert_eq!(p.path, path, "{p:#?}");
    assert_eq!(p.line, Some(line), "{p:#?}");
    p
}

const OPENAI: &str = r#"
[[providers]]
name = "openai"
kind = "openai"
base_url = "https://api.openai.com/v1"
"#;

#[test]
fn example_sluice_toml_parses_and_states_the_defaults() {
    let config = load(SLUICE_TOML).unwrap();
    // The example's [policy], [server], [breaker] and [budget] values are the defaults, so its
    // comments and the code cannot drift apart.
    assert_eq!(config.policy, RetryPolicy::default());
    assert_eq!(config.breaker, BreakerConfig::default());
    assert_eq!(config.budget, BudgetConfig::default());
    assert_eq!(config.context, ContextPolicy::default());
    assert_eq!(config.rate_limit, RateLimitConfig::default());
    assert_eq!(
        config.server,
        ServerConfig {
            api_keys_env: Some("SLUICE_API_KEYS".into()),
            ..ServerConfig::default()
        }
    );
    assert_eq!(config.providers.len(), 3);
    let openai = config.provider("openai").unwrap();
    assert_eq!(
        openai.headers,
        vec![("OpenAI-Organization".to_owned(), "org-123".to_owned())]
    );
    assert_eq!((&openai.breaker, &openai.budget), (&None, &None));
    assert_eq!(config.breaker_for(openai), &BreakerConfig::default());
    let openai_limits = LimitsConfig {
        rpm: Some(500.0),
        tpm: Some(200_000.0),
        rpm_burst: Some(100.0),
        tpm_burst: Some(50_000.0),
    };
    assert_eq!(openai.limits, openai_limits);
    assert_eq!(openai.limit_scope, LimitScope::Model);
    let gpt_4o = LimitsConfig {
        tpm: Some(30_000.0),
        tpm_burst: Some(30_000.0),
        ..openai_limits
    };
    assert_eq!(openai.model_limits, vec![("gpt-4o".to_owned(), gpt_4o)]);
    assert_eq!(openai.limits_for("gpt-4o"), gpt_4o);
    assert_eq!(openai.limits_for("gpt-4o-mini"), openai_limits);
    let anthropic = config.provider("anthropic").unwrap();
    assert_eq!(
        anthropic.kind,
        ProviderKind::Anthropic {
            base_url: ANTHROPIC_BASE_URL.into()
        }
    );
    assert_eq!(anthropic.api_key_env.as_deref(), Some("ANTHROPIC_API_KEY"));
    assert!(anthropic.limits.is_unlimited() && anthropic.model_limits.is_empty());
    assert_eq!(
        anthropic.breaker,
        Some(BreakerConfig {
            consecutive_failures: 3,
            cooldown: Duration::from_secs(60),
            ..BreakerConfig::default()
        })
    );
    assert_eq!(
        anthropic.budget,
        Some(BudgetConfig {
            ratio: 0.1,
            ..BudgetConfig::default()
        })
    );
    assert_eq!(
        config.provider("mock").unwrap().context_windows,
        vec![
            ("mock-1".to_owned(), 100_000),
            ("mock-small".to_owned(), 4000)
        ]
    );
    let chain: Vec<String> = config
        .model("chain")
        .unwrap()
        .targets
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(chain, ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"]);
    let Some(ProviderKind::Mock(mock)) = config.provider("mock").map(|p| &p.kind) else {
        panic!("{config:#?}")
    };
    assert_eq!(
        **mock,
        MockConfig {
            p_429: 0.3,
            retry_after: Some(Duration::from_secs(1)),
            context_limit: Some(100_000),
            ..MockConfig::default()
        }
    );
    let fast = config.model("fast").unwrap();
    assert_eq!(fast.targets.len(), 2);
    assert_eq!(fast.targets[1].to_string(), "mock/mock-1");
    assert_eq!(fast.policy.max_retries, 2);
    assert_eq!(fast.policy.first_token_timeout, Duration::from_secs(20));
    assert_eq!(
        fast.context,
        ContextPolicy {
            on_overflow: OnOverflow::Fallback,
            ..ContextPolicy::default()
        }
    );
    assert_eq!((fast.context_window, fast.max_output), (None, None));
    let gpt_4o = config.model("gpt-4o").unwrap();
    assert_eq!(gpt_4o.policy, RetryPolicy::default());
    assert_eq!(gpt_4o.context, ContextPolicy::default());
    assert_eq!(
        (gpt_4o.context_window, gpt_4o.max_output),
        (Some(128_000), Some(16_384))
    );
}

/// The commented multi-replica `[rate_limit]` of `examples/sluice.toml`, uncommented.
fn multi_replica_example() -> String {
    let block: String = SLUICE_TOML
        .lines()
        .skip_while(|line| *line != "# [rate_limit]")
        .take_while(|line| line.starts_with("# "))
        .map(|line| format!("{}\n", &line[2..]))
        .collect();
    assert!(block.contains("backend = \"redis\""), "{block}");
    block
}

#[test]
fn example_multi_replica_rate_limit_parses() {
    let config = load(&multi_replica_example()).unwrap();
    assert_eq!(
        config.rate_limit,
        RateLimitConfig {
            backend: RateLimitBackend::Redis {
                url: "redis://:password@redis.internal:6379/0".into()
            },
            expected_replicas: 3,
            on_redis_down: OnRedisDown::Local,
            ..RateLimitConfig::default()
        }
    );
    let shown = format!("{config:?}");
    assert!(!shown.contains(":password@"), "{shown}");
    assert!(
        shown.contains("redis://<redacted>@redis.internal:6379/0"),
        "{shown}"
    );
}

#[test]
fn example_minimal_toml_parses() {
    let config = Config::from_toml_str_with_env(MINIMAL_TOML, None, &empty_env).unwrap();
    assert_eq!(config.server, ServerConfig::default());
    assert_eq!(config.policy, RetryPolicy::default());
    assert_eq!(
        config.models[0].targets[0].to_string(),
        "openai/gpt-4o-mini"
    );
}

#[test]
fn examples_load_from_their_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let path = dir.join("minimal.toml");
    let config = Config::from_path(&path).unwrap();
    assert_eq!(config.source.as_deref(), Some(path.as_path()));
}

#[test]
fn the_issue_contract_parses_to_the_expected_values() {
    let config = load(CONTRACT).unwrap();
    assert_eq!(
        config.server,
        ServerConfig {
            listen: "127.0.0.1:8080".parse().unwrap(),
            api_keys_env: Some("SLUICE_API_KEYS".into()),
            max_body: 32 * 1024 * 1024,
            ..ServerConfig::default()
        }
    );
    let expected_policy = RetryPolicy {
        max_retries: 5,
        backoff: Backoff::try_new(Duration::from_secs(1), Duration::from_secs(60)).unwrap(),
        max_retry_after: Duration::from_secs(60),
        deadline: Duration::from_secs(600),
        first_token_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
        ..RetryPolicy::default()
    };
    assert_eq!(config.policy, expected_policy);
    assert_eq!(
        config.providers,
        vec![ProviderConfig {
            api_key_env: Some("OPENAI_API_KEY".into()),
            ..ProviderConfig::openai("openai", "https://api.openai.com/v1")
        }]
    );
    assert_eq!(
        config.models,
        vec![ModelConfig::new(
            "fast",
            &["openai/gpt-4o-mini"],
            expected_policy
        )]
    );
    assert_eq!(config.breaker, BreakerConfig::default());
    assert_eq!(config.budget, BudgetConfig::default());
    assert_eq!(config.source, None);
    let source = Path::new("/etc/sluice.toml");
    let config = Config::from_toml_str_with_env(CONTRACT, Some(source), &test_env).unwrap();
    assert_eq!(config.source.as_deref(), Some(source));
}

#[test]
fn an_empty_file_is_the_default_config() {
    let config = load("").unwrap();
    assert_eq!(config, Config::default());
    assert!(config.providers.is_empty() && config.models.is_empty());
    assert_eq!(config.server, ServerConfig::default());
    assert_eq!(config.policy, RetryPolicy::default());
}

#[test]
fn model_overrides_merge_over_policy() {
    let text = format!(
        r#"
[policy]
max_retries = 7
base_delay = "2s"
deadline = "5m"
{OPENAI}
[[models]]
name = "a"
targets = ["openai/x"]
max_retries = 1
max_delay = "30s"
idle_timeout = "5s"
fallback_on_content_policy = true

[[models]]
name = "b"
targets = ["openai/y"]
"#
    );
    let config = load(&text).unwrap();
    let policy = &config.policy;
    assert_eq!(policy.max_retries, 7);
    assert_eq!(policy.backoff.base(), Duration::from_secs(2));
    assert_eq!(policy.deadline, Duration::from_secs(300));
    assert_eq!(policy.idle_timeout, RetryPolicy::default().idle_timeout);

    let a = config.model("a").unwrap();
    assert_eq!(
        a.policy,
        RetryPolicy {
            max_retries: 1,
            backoff: Backoff::try_new(Duration::from_secs(2), Duration::from_secs(30)).unwrap(),
            idle_timeout: Duration::from_secs(5),
            ..policy.clone()
        }
    );
    assert!(a.fallback_on_content_policy);
    let b = config.model("b").unwrap();
    assert_eq!(b.policy, *policy);
    assert!(!b.fallback_on_content_policy);
}

#[test]
fn a_target_model_may_contain_slashes() {
    let text = format!(
        "{OPENAI}\n[[models]]\nname = \"llama\"\ntargets = [\"openai/meta-llama/llama-3-70b\"]\n"
    );
    let config = load(&text).unwrap();
    let target = &config.models[0].targets[0];
    assert_eq!(target.provider, "openai");
    assert_eq!(target.model, "meta-llama/llama-3-70b");
    assert_eq!(target.to_string(), "openai/meta-llama/llama-3-70b");
}

#[test]
fn toml_syntax_error_has_line_and_column() {
    let p = only("[server]\nlisten = \n", "", 2);
    assert_eq!(p.column, Some(10));
    assert!(p.message.starts_with("invalid TOML: "), "{p:#?}");
}

#[test]
fn unknown_key_names_the_key_and_its_line() {
    let p = only(
        "[server]\nlisten = \"127.0.0.1:1\"\nlisen = \"x\"\n",
        "server.lisen",
        3,
    );
    assert_eq!(p.column, Some(1));
    assert!(p.message.contains("unknown field `lisen`"), "{p:#?}");

    let text =
        format!("{OPENAI}\n[[models]]\nname = \"m\"\ntargets = [\"openai/x\"]\nmax_retires = 3\n");
    let p = only(&text, "models[0].max_retires", 10);
    assert!(p.message.contains("max_retires"), "{p:#?}");

    let p = only("bogus = 1\n", "bogus", 1);
    assert!(p.message.contains("bogus"), "{p:#?}");

    let text = "[[providers]]\nname = \"m\"\nkind = \"mock\"\n[providers.mock]\np_42 = 0.1\n";
    let p = only(text, "providers[0].mock.p_42", 5);
    assert!(p.message.contains("p_42"), "{p:#?}");
}

#[test]
fn a_number_for_a_duration_is_rejected_with_an_example() {
    let p = only("[policy]\ndeadline = 600\n", "policy.deadline", 2);
    assert!(
        p.message
            .contains(r#"expected a duration like "1s" or "250ms""#),
        "{p:#?}"
    );
    let p = only("[server]\nmax_body = 1024\n", "server.max_body", 2);
    assert!(p.message.contains(r#"a size like "32MiB""#), "{p:#?}");
}

#[test]
fn bad_durations_are_reported_with_an_example() {
    let problems = problems("[policy]\ndeadline = \"10 parsecs\"\nidle_timeout = \"soon\"\n");
    assert_eq!(problems.len(), 2, "{problems:#?}");
    let p = at(&problems, "policy.deadline");
    assert_eq!(p.line, Some(2));
    assert_eq!(p.column, Some(12));
    assert!(
        p.message
            .starts_with(r#"expected a duration like "1s" or "250ms", got "10 parsecs""#),
        "{p:#?}"
    );
    assert_eq!(at(&problems, "policy.idle_timeout").line, Some(3));

    let p = only(
        "[server]\ndrain_timeout = \"1000 years\"\n",
        "server.drain_timeout",
        2,
    );
    assert!(p.message.contains("too long"), "{p:#?}");
}

#[test]
fn bad_sizes_are_reported() {
    let p = only("[server]\nmax_body = \"lots\"\n", "server.max_body", 2);
    assert!(
        p.message.contains(r#"expected a size like "32MiB""#),
        "{p:#?}"
    );
    let p = only("[server]\n\nmax_body = \"0B\"\n", "server.max_body", 3);
    assert_eq!(p.message, "must be greater than zero");
    let config = load("[server]\nmax_body = \"512KiB\"\n").unwrap();
    assert_eq!(config.server.max_body, 512 * 1024);
}

#[test]
fn listen_must_be_a_socket_address() {
    let p = only(
        "[server]\nlisten = \"localhost:8080\"\n",
        "server.listen",
        2,
    );
    assert!(p.message.contains("127.0.0.1:8080"), "{p:#?}");
    let config = load("[server]\nlisten = \"[::1]:9000\"\n").unwrap();
    assert_eq!(config.server.listen, "[::1]:9000".parse().unwrap());
}

#[test]
fn zero_server_timeouts_are_rejected() {
    let p = only(
        "[server]\nheader_read_timeout = \"0s\"\n",
        "server.header_read_timeout",
        2,
    );
    assert_eq!(p.message, "must be greater than zero");
}

#[test]
fn api_keys_env_unset_or_empty_fails_closed() {
    let text = "[server]\napi_keys_env = \"SLUICE_TEST_KEYS_UNSET\"\n";
    let p = only(text, "server.api_keys_env", 2);
    assert_eq!(
        p.message,
        "variable SLUICE_TEST_KEYS_UNSET named by server.api_keys_env is not set"
    );

    let blank = |name: &str| (name == "BLANK").then(|| " , ".to_owned());
    let err = Config::from_toml_str_with_env("[server]\napi_keys_env = \"BLANK\"\n", None, &blank)
        .unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert!(
        err.problems[0]
            .message
            .starts_with("variable BLANK named by server.api_keys_env is empty"),
        "{err}"
    );

    // A value that is not a variable name (a pasted key) is refused and not echoed.
    let p = only(
        "[server]\napi_keys_env = \"sk-secret-123\"\n",
        "server.api_keys_env",
        2,
    );
    assert!(!p.message.contains("sk-secret"), "{p:#?}");
}

#[test]
fn duplicate_provider_and_model_names_are_reported() {
    let text = r#"
[[providers]]
name = "m"
kind = "mock"

[[providers]]
name = "m"
kind = "mock"

[[models]]
name = "x"
targets = ["m/a"]

[[models]]
name = "x"
targets = ["m/b"]
"#;
    let problems = problems(text);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    let p = at(&problems, "providers[1].name");
    assert_eq!(p.line, Some(7));
    assert!(p.message.contains("first defined on line 3"), "{p:#?}");
    let p = at(&problems, "models[1].name");
    assert_eq!(p.line, Some(15));
    assert!(p.message.contains("duplicate model name \"x\""), "{p:#?}");
}

#[test]
fn bad_provider_names_are_reported() {
    let p = only(
        "[[providers]]\nname = \"a/b\"\nkind = \"mock\"\n",
        "providers[0].name",
        2,
    );
    assert!(p.message.contains("invalid provider name"), "{p:#?}");
    let p = only("[[providers]]\nkind = \"mock\"\n", "providers[0]", 1);
    assert!(p.message.contains("`name`"), "{p:#?}");
}

#[test]
fn targets_must_name_defined_providers() {
    let text = format!(
        "{OPENAI}\n[[models]]\nname = \"m\"\ntargets = [\"openai/x\", \"anthropic/claude\"]\n"
    );
    let p = only(&text, "models[0].targets[1]", 9);
    assert_eq!(p.column, Some(24));
    assert!(
        p.message.contains("unknown provider \"anthropic\""),
        "{p:#?}"
    );
    assert!(
        p.message.contains("defined providers: \"openai\""),
        "{p:#?}"
    );
}

#[test]
fn targets_must_be_provider_slash_model() {
    let text = format!(
        "{OPENAI}\n[[models]]\nname = \"m\"\ntargets = [\"gpt-4o\", \"openai/\", \"/x\"]\n"
    );
    let problems = problems(&text);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    for j in 0..3 {
        let p = at(&problems, &format!("models[0].targets[{j}]"));
        assert_eq!(p.line, Some(9));
        assert!(
            p.message.starts_with("expected \"provider/model\""),
            "{p:#?}"
        );
    }
}

#[test]
fn targets_must_be_present_and_non_empty() {
    let text = format!("{OPENAI}\n[[models]]\nname = \"m\"\ntargets = []\n");
    let p = only(&text, "models[0].targets", 9);
    assert!(p.message.contains("at least one target"), "{p:#?}");
    let text = format!("{OPENAI}\n[[models]]\nname = \"m\"\n");
    let p = only(&text, "models[0]", 7);
    assert!(p.message.contains("`targets`"), "{p:#?}");
    let text = format!("{OPENAI}\n[[models]]\nname = \"\"\ntargets = [\"openai/x\"]\n");
    only(&text, "models[0].name", 8);
}

#[test]
fn max_delay_below_base_delay_uses_the_backoff_message() {
    let text = "[policy]\nbase_delay = \"10s\"\nmax_delay = \"5s\"\n";
    let p = only(text, "policy.max_delay", 3);
    let expected = Backoff::try_new(Duration::from_secs(10), Duration::from_secs(5))
        .unwrap_err()
        .to_string();
    // PolicyError displays as "max_delay: {message}"; the key is already in the path.
    assert_eq!(format!("max_delay: {}", p.message), expected);

    // A model whose override conflicts with an inherited value is told so.
    let text = format!(
        "[policy]\nmax_delay = \"5s\"\n{OPENAI}\n[[models]]\nname = \"m\"\ntargets = [\"openai/x\"]\nbase_delay = \"10s\"\n"
    );
    let p = only(&text, "models[0].max_delay", 12);
    assert!(
        p.message
            .ends_with("(max_delay is inherited from [policy])"),
        "{p:#?}"
    );
}

#[test]
fn every_zero_policy_duration_is_reported() {
    let text = "[policy]\ndeadline = \"0s\"\nconnect_timeout = \"0ms\"\nbase_delay = \"0s\"\n";
    let problems = problems(text);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    let p = at(&problems, "policy.deadline");
    assert_eq!(
        (p.line, p.message.as_str()),
        (Some(2), "must be greater than zero")
    );
    assert_eq!(at(&problems, "policy.connect_timeout").line, Some(3));
    assert_eq!(at(&problems, "policy.base_delay").line, Some(4));
    // In file order.
    let lines: Vec<_> = problems.iter().map(|p| p.line).collect();
    assert_eq!(lines, [Some(2), Some(3), Some(4)]);
}

#[test]
fn invalid_mock_probabilities_are_reported_at_their_keys() {
    let text = r#"[[providers]]
name = "m"
kind = "mock"
[providers.mock]
p_429 = 0.7
p_cut = 0.7
p_stall = -0.1
"#;
    let problems = problems(text);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    let p = at(&problems, "providers[0].mock.p_stall");
    assert_eq!(p.line, Some(7));
    assert!(p.message.contains("between 0 and 1"), "{p:#?}");
    let p = at(&problems, "providers[0].mock");
    assert_eq!(p.line, Some(4));
    assert!(p.message.contains("sum to at most 1"), "{p:#?}");
}

#[test]
fn a_mock_table_on_an_openai_provider_is_an_error() {
    let text = format!("{OPENAI}[providers.mock]\nchunks = 3\n");
    let p = only(&text, "providers[0].mock", 6);
    assert!(
        p.message.contains("only allowed with kind = \"mock\""),
        "{p:#?}"
    );
}

#[test]
fn base_url_is_required_for_openai_and_refused_for_mock() {
    let p = only(
        "[[providers]]\nname = \"o\"\nkind = \"openai\"\n",
        "providers[0].base_url",
        3,
    );
    assert!(p.message.contains("needs base_url"), "{p:#?}");
    let p = only(
        "[[providers]]\nname = \"o\"\nkind = \"openai\"\nbase_url = \"api.openai.com\"\n",
        "providers[0].base_url",
        4,
    );
    assert!(p.message.contains("not a valid URL"), "{p:#?}");
    let p = only(
        "[[providers]]\nname = \"o\"\nkind = \"openai\"\nbase_url = \"ftp://x/v1\"\n",
        "providers[0].base_url",
        4,
    );
    assert!(p.message.contains("http://"), "{p:#?}");
    let p = only(
        "[[providers]]\nname = \"o\"\nkind = \"openai\"\nbase_url = \"https://u:hunter2@x/v1\"\n",
        "providers[0].base_url",
        4,
    );
    assert!(!p.message.contains("hunter2"), "{p:#?}");
    let p = only(
        "[[providers]]\nname = \"m\"\nkind = \"mock\"\nbase_url = \"http://x\"\n",
        "providers[0].base_url",
        4,
    );
    assert!(
        p.message.contains("not allowed with kind = \"mock\""),
        "{p:#?}"
    );
}

#[test]
fn unknown_kinds_are_rejected() {
    let p = only(
        "[[providers]]\nname = \"a\"\nkind = \"gemini\"\n",
        "providers[0].kind",
        3,
    );
    assert!(
        p.message.contains("unknown provider kind \"gemini\""),
        "{p:#?}"
    );
    assert!(p.message.contains("\"anthropic\""), "{p:#?}");
    let p = only("[[providers]]\nname = \"a\"\n", "providers[0]", 1);
    assert!(p.message.contains("`kind`"), "{p:#?}");
}

#[test]
fn credential_headers_and_bad_header_values_are_refused() {
    let text = format!(
        "{OPENAI}headers = {{ Authorization = \"Bearer sk-1\", \"X-Ok\" = \"bad\\nvalue\", \"bad name\" = \"v\" }}\n"
    );
    let problems = problems(&text);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    let p = at(&problems, "providers[0].headers.Authorization");
    assert_eq!(p.line, Some(6));
    assert!(p.message.contains("api_key_env"), "{p:#?}");
    let p = at(&problems, "providers[0].headers.X-Ok");
    assert!(!p.message.contains("bad\nvalue"), "{p:#?}");
    at(&problems, "providers[0].headers.\"bad name\"");
    let text = format!("{OPENAI}headers = {{ \"x-api-key\" = \"k\" }}\n");
    only(&text, "providers[0].headers.x-api-key", 6);
}

#[test]
fn several_problems_are_all_reported() {
    let text = r#"[server]
listen = "nowhere"
api_keys_env = "SLUICE_TEST_UNSET"
max_body = "huge"

[policy]
base_delay = "2s"
max_delay = "1s"
deadline = "0s"

[[providers]]
name = "openai"
kind = "openai"

[[providers]]
name = "openai"
kind = "mock"
[providers.mock]
p_429 = 2.0

[[models]]
name = "fast"
targets = ["nope/x", "gpt"]
first_token_timeout = "eventually"
"#;
    let problems = problems(text);
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "server.listen",
            "server.api_keys_env",
            "server.max_body",
            "policy.max_delay",
            "policy.deadline",
            "providers[0].base_url",
            "providers[1].name",
            "providers[1].mock.p_429",
            "models[0].targets[0]",
            "models[0].targets[1]",
            "models[0].first_token_timeout",
        ],
        "{problems:#?}"
    );
    let lines: Vec<usize> = problems.iter().map(|p| p.line.unwrap()).collect();
    assert_eq!(lines, [2, 3, 4, 8, 9, 13, 16, 19, 23, 23, 24]);
}

#[test]
fn display_is_one_problem_per_line_with_file_line_and_column() {
    let text = "[server]\nlisten = \"nowhere\"\n\n[policy]\ndeadline = \"0s\"\n";
    let err = Config::from_toml_str_with_env(text, Some(Path::new("sluice.toml")), &test_env)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "sluice.toml:2:10: server.listen: expected an IP address and port like \"127.0.0.1:8080\" or \"[::1]:8080\", got \"nowhere\"\n\
         sluice.toml:5:12: policy.deadline: must be greater than zero"
    );
    let err = load("[policy]\ndeadline = \"0s\"\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "<config>:2:12: policy.deadline: must be greater than zero"
    );
    let problem = ConfigProblem {
        path: String::new(),
        line: None,
        column: None,
        message: "m".into(),
    };
    assert_eq!(problem.to_string(), "<config>: m");
}

#[test]
fn an_unreadable_file_is_reported_with_its_path() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("no-such-config.toml");
    let err = Config::from_path(&path).unwrap_err();
    assert_eq!(err.file.as_deref(), Some(path.as_path()));
    assert_eq!(err.problems.len(), 1);
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("{}: cannot read", path.display())),
        "{shown}"
    );
}

#[test]
fn warnings_name_unset_provider_key_variables_only() {
    let config = load(SLUICE_TOML).unwrap();
    let warnings = config.warnings_with_env(&test_env);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].starts_with("providers[0].api_key_env: variable OPENAI_API_KEY is not set")
    );
    assert!(
        warnings[1].starts_with("providers[1].api_key_env: variable ANTHROPIC_API_KEY is not set")
    );
    let anthropic_set = |name: &str| (name == "ANTHROPIC_API_KEY").then(|| "k".to_owned());
    assert_eq!(config.warnings_with_env(&anthropic_set).len(), 1);
    let all_set = |_: &str| Some("secret-value".to_owned());
    assert!(config.warnings_with_env(&all_set).is_empty());
    let blank = |_: &str| Some(String::new());
    assert!(config.warnings_with_env(&blank)[0].contains("is empty"));
}

#[test]
fn provider_debug_redacts_header_values() {
    let config = load(SLUICE_TOML).unwrap();
    let shown = format!("{:?}", config.provider("openai").unwrap());
    assert!(shown.contains("OpenAI-Organization"), "{shown}");
    assert!(!shown.contains("org-123"), "{shown}");
}

#[test]
fn wrong_value_types_point_at_their_key() {
    let p = only(
        "[[models]]\nname = \"m\"\ntargets = [\"openai/x\", 1]\n",
        "models[0].targets[1]",
        3,
    );
    assert!(p.message.contains("expected a string"), "{p:#?}");
    let text = format!("{OPENAI}headers = {{ a = 1 }}\n");
    only(&text, "providers[0].headers.a", 6);
    let p = only("[policy]\nmax_retries = -1\n", "policy.max_retries", 2);
    assert!(p.message.contains("-1"), "{p:#?}");
    let p = only(
        "[[models]]\nname = \"m\"\n[[models]]\nname = 2\n",
        "models[1].name",
        4,
    );
    assert_eq!(p.column, Some(8));
}

#[test]
fn anthropic_base_url_defaults_and_is_checked() {
    let config = load("[[providers]]\nname = \"claude\"\nkind = \"anthropic\"\n").unwrap();
    assert_eq!(
        config.providers,
        vec![ProviderConfig::anthropic("claude", ANTHROPIC_BASE_URL)]
    );
    assert_eq!(ANTHROPIC_BASE_URL, "https://api.anthropic.com");

    let text = "[[providers]]\nname = \"a\"\nkind = \"anthropic\"\nbase_url = \"http://127.0.0.1:9000\"\napi_key_env = \"ANTHROPIC_API_KEY\"\n";
    let config = load(text).unwrap();
    assert_eq!(
        config.providers[0],
        ProviderConfig {
            api_key_env: Some("ANTHROPIC_API_KEY".into()),
            ..ProviderConfig::anthropic("a", "http://127.0.0.1:9000")
        }
    );

    // The same URL rules as openai, with an Anthropic example.
    let p = only(
        "[[providers]]\nname = \"a\"\nkind = \"anthropic\"\nbase_url = \"api.anthropic.com\"\n",
        "providers[0].base_url",
        4,
    );
    assert!(p.message.contains("not a valid URL"), "{p:#?}");
    assert!(p.message.contains(ANTHROPIC_BASE_URL), "{p:#?}");
    let p = only(
        "[[providers]]\nname = \"a\"\nkind = \"anthropic\"\nbase_url = \"https://u:hunter2@x\"\n",
        "providers[0].base_url",
        4,
    );
    assert!(!p.message.contains("hunter2"), "{p:#?}");
    only(
        "[[providers]]\nname = \"a\"\nkind = \"anthropic\"\nbase_url = \"https://x/v1?beta=1\"\n",
        "providers[0].base_url",
        4,
    );
    let p = only(
        "[[providers]]\nname = \"a\"\nkind = \"anthropic\"\n[providers.mock]\nchunks = 3\n",
        "providers[0].mock",
        4,
    );
    assert!(
        p.message.contains("this provider is kind = \"anthropic\""),
        "{p:#?}"
    );

    // A fallback chain across kinds.
    let text = format!(
        "{OPENAI}\n[[providers]]\nname = \"anthropic\"\nkind = \"anthropic\"\n\n[[models]]\nname = \"chain\"\ntargets = [\"openai/gpt-4o-mini\", \"anthropic/claude-haiku-4-5\"]\n"
    );
    let config = load(&text).unwrap();
    assert_eq!(
        config.models,
        vec![ModelConfig::new(
            "chain",
            &["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"],
            RetryPolicy::default()
        )]
    );
}

#[test]
fn breaker_and_budget_default_when_absent() {
    let config = load(OPENAI).unwrap();
    assert_eq!(config.breaker, BreakerConfig::default());
    assert_eq!(config.budget, BudgetConfig::default());
    let provider = &config.providers[0];
    assert_eq!(provider.breaker, None);
    assert_eq!(provider.budget, None);
    assert!(provider.context_windows.is_empty());
    assert_eq!(config.breaker_for(provider), &BreakerConfig::default());
    assert_eq!(config.budget_for(provider), &BudgetConfig::default());
    // Empty tables are the defaults too.
    let config = load("[breaker]\n[budget]\n").unwrap();
    assert_eq!(config, Config::default());
}

#[test]
fn breaker_and_budget_overrides_merge_per_provider() {
    let text = r#"[breaker]
failure_rate = 0.25
cooldown = "10s"

[budget]
ratio = 0.5
window = "1m"

[[providers]]
name = "inline"
kind = "mock"
breaker = { consecutive_failures = 2, cooldown = "1s" }
budget = { min_per_sec = 0.0 }

[[providers]]
name = "tables"
kind = "openai"
base_url = "https://api.openai.com/v1"
[providers.breaker]
half_open_probes = 1
window = "5s"
[providers.budget]
ratio = 0.0

[[providers]]
name = "plain"
kind = "mock"
"#;
    let config = load(text).unwrap();
    let top_breaker = BreakerConfig {
        failure_rate: 0.25,
        cooldown: Duration::from_secs(10),
        ..BreakerConfig::default()
    };
    let top_budget = BudgetConfig {
        ratio: 0.5,
        window: Duration::from_secs(60),
        ..BudgetConfig::default()
    };
    assert_eq!(config.breaker, top_breaker);
    assert_eq!(config.budget, top_budget);

    let inline = config.provider("inline").unwrap();
    assert_eq!(
        inline.breaker,
        Some(BreakerConfig {
            consecutive_failures: 2,
            cooldown: Duration::from_secs(1),
            ..top_breaker.clone()
        })
    );
    assert_eq!(
        inline.budget,
        Some(BudgetConfig {
            min_per_sec: 0.0,
            ..top_budget.clone()
        })
    );

    let tables = config.provider("tables").unwrap();
    let tables_breaker = BreakerConfig {
        half_open_probes: 1,
        window: Duration::from_secs(5),
        ..top_breaker.clone()
    };
    assert_eq!(tables.breaker.as_ref(), Some(&tables_breaker));
    assert_eq!(config.breaker_for(tables), &tables_breaker);
    assert_eq!(
        config.budget_for(tables),
        &BudgetConfig {
            ratio: 0.0,
            ..top_budget.clone()
        }
    );

    let plain = config.provider("plain").unwrap();
    assert_eq!((&plain.breaker, &plain.budget), (&None, &None));
    assert_eq!(config.breaker_for(plain), &top_breaker);
    assert_eq!(config.budget_for(plain), &top_budget);
}

#[test]
fn invalid_breaker_and_budget_values_are_reported_with_path_and_line() {
    let text = r#"[breaker]
failure_rate = 1.5
min_requests = 0
window = "0s"
cooldown = "soon"

[budget]
ratio = -0.1
min_per_sec = nan

[[providers]]
name = "a"
kind = "mock"
breaker = { half_open_probes = 0 }

[[providers]]
name = "b"
kind = "mock"
[providers.budget]
ratio = inf
window = "0ms"
"#;
    let problems = problems(text);
    let found: Vec<(&str, usize)> = problems
        .iter()
        .map(|p| (p.path.as_str(), p.line.unwrap()))
        .collect();
    assert_eq!(
        found,
        [
            ("breaker.failure_rate", 2),
            ("breaker.min_requests", 3),
            ("breaker.window", 4),
            ("breaker.cooldown", 5),
            ("budget.ratio", 8),
            ("budget.min_per_sec", 9),
            ("providers[0].breaker.half_open_probes", 14),
            ("providers[1].budget.ratio", 20),
            ("providers[1].budget.window", 21),
        ],
        "{problems:#?}"
    );
    // The types' own messages, without their key prefix (it is in the path).
    let expected = |e: sluice_core::PolicyError| {
        let sluice_core::PolicyError::Invalid { message, .. } = e;
        message
    };
    let bad_rate = BreakerConfig {
        failure_rate: 1.5,
        ..BreakerConfig::default()
    };
    assert_eq!(
        at(&problems, "breaker.failure_rate").message,
        expected(bad_rate.validate().unwrap_err())
    );
    let bad_ratio = BudgetConfig {
        ratio: -0.1,
        ..BudgetConfig::default()
    };
    assert_eq!(
        at(&problems, "budget.ratio").message,
        expected(bad_ratio.validate().unwrap_err())
    );
    assert_eq!(
        at(&problems, "breaker.window").message,
        "must be greater than zero"
    );
    assert!(
        at(&problems, "breaker.cooldown")
            .message
            .starts_with(r#"expected a duration like "1s" or "250ms", got "soon""#),
        "{problems:#?}"
    );
    let p = at(&problems, "providers[0].breaker.half_open_probes");
    assert_eq!(
        (p.column, p.message.as_str()),
        (Some(32), "must be at least 1")
    );
}

#[test]
fn breaker_and_budget_keys_and_types_are_checked_by_the_parser() {
    let p = only("[breaker]\ncooldwn = \"1s\"\n", "breaker.cooldwn", 2);
    assert!(p.message.contains("unknown field `cooldwn`"), "{p:#?}");
    let p = only(
        "[[providers]]\nname = \"m\"\nkind = \"mock\"\nbudget = { ratio = 0.1, burst = 3 }\n",
        "providers[0].budget.burst",
        4,
    );
    assert!(p.message.contains("burst"), "{p:#?}");
    let p = only("[budget]\nwindow = 10\n", "budget.window", 2);
    assert!(p.message.contains("a duration like"), "{p:#?}");
    only("[breaker]\nmin_requests = -1\n", "breaker.min_requests", 2);
    only(
        "[[providers]]\nname = \"m\"\nkind = \"mock\"\n[providers.breaker]\nfailure_rate = \"half\"\n",
        "providers[0].breaker.failure_rate",
        5,
    );
}

#[test]
fn context_windows_parse() {
    let text = format!(
        "{OPENAI}context_windows = {{ \"gpt-4o\" = 128000, \"meta-llama/llama-3-70b\" = 8_192, \"a-small\" = 4000 }}\n"
    );
    let config = load(&text).unwrap();
    let provider = &config.providers[0];
    assert_eq!(
        provider.context_windows,
        vec![
            ("a-small".to_owned(), 4000),
            ("gpt-4o".to_owned(), 128_000),
            ("meta-llama/llama-3-70b".to_owned(), 8192),
        ]
    );
    assert_eq!(provider.context_window("gpt-4o"), Some(128_000));
    assert_eq!(provider.context_window("gpt-4o-mini"), None);

    let text = "[[providers]]\nname = \"m\"\nkind = \"mock\"\n[providers.context_windows]\nmock-small = 4000\n";
    let config = load(text).unwrap();
    assert_eq!(config.providers[0].context_window("mock-small"), Some(4000));
}

#[test]
fn bad_context_windows_are_reported_at_their_key() {
    let text = r#"[[providers]]
name = "m"
kind = "mock"
[providers.context_windows]
zero = 0
negative = -5
huge = 5000000000
"" = 100
ok = 1
"#;
    let problems = problems(text);
    assert_eq!(problems.len(), 4, "{problems:#?}");
    let p = at(&problems, "providers[0].context_windows.zero");
    assert_eq!(p.line, Some(5));
    assert_eq!(p.message, "must be a positive number of tokens, got 0");
    let p = at(&problems, "providers[0].context_windows.negative");
    assert_eq!(p.line, Some(6));
    assert!(p.message.contains("got -5"), "{p:#?}");
    let p = at(&problems, "providers[0].context_windows.huge");
    assert_eq!(p.line, Some(7));
    assert!(p.message.contains("too large"), "{p:#?}");
    let p = at(&problems, "providers[0].context_windows.\"\"");
    assert_eq!(p.line, Some(8));
    assert!(p.message.contains("must not be empty"), "{p:#?}");

    let text = format!("{OPENAI}context_windows = {{ \"gpt-4o\" = \"128k\" }}\n");
    only(&text, "providers[0].context_windows.gpt-4o", 6);
    let text = format!("{OPENAI}context_windows = {{ \"gpt-4o\" = 1.5 }}\n");
    only(&text, "providers[0].context_windows.gpt-4o", 6);
}

#[test]
fn constructors_build_plain_entries() {
    let openai = ProviderConfig::openai("o", "https://api.openai.com/v1");
    assert_eq!(
        openai.kind,
        ProviderKind::OpenAi {
            base_url: "https://api.openai.com/v1".into()
        }
    );
    assert_eq!(openai.name, "o");
    assert_eq!(openai.api_key_env, None);
    assert!(openai.headers.is_empty() && openai.context_windows.is_empty());
    assert!(openai.limits.is_unlimited() && openai.model_limits.is_empty());
    assert_eq!(openai.limits, LimitsConfig::default());
    assert_eq!(openai.limit_scope, LimitScope::Model);
    assert_eq!((openai.breaker, openai.budget), (None, None));
    assert_eq!(
        ProviderConfig::anthropic("a", ANTHROPIC_BASE_URL).kind,
        ProviderKind::Anthropic {
            base_url: ANTHROPIC_BASE_URL.into()
        }
    );
    let mock = ProviderConfig::mock("m", MockConfig::default());
    assert_eq!(mock.kind, ProviderKind::Mock(Box::default()));

    let model = ModelConfig::new(
        "m",
        &["o/gpt-4o", "openrouter/meta-llama/llama-3-70b"],
        RetryPolicy::default(),
    );
    assert_eq!(model.name, "m");
    assert_eq!(
        model.targets,
        [
            TargetRef {
                provider: "o".into(),
                model: "gpt-4o".into()
            },
            TargetRef {
                provider: "openrouter".into(),
                model: "meta-llama/llama-3-70b".into()
            },
        ]
    );
    assert_eq!(model.policy, RetryPolicy::default());
    assert!(!model.fallback_on_content_policy);
    assert_eq!(model.context, ContextPolicy::default());
    assert_eq!((model.context_window, model.max_output), (None, None));
}

#[test]
#[should_panic(expected = "is not \"provider/model\"")]
fn model_config_new_refuses_a_target_without_provider() {
    let _ = ModelConfig::new("m", &["gpt-4o"], RetryPolicy::default());
}

#[test]
fn rate_limit_and_context_policy_default_when_absent() {
    let config = load(OPENAI).unwrap();
    assert_eq!(config.rate_limit, RateLimitConfig::default());
    assert_eq!(config.context, ContextPolicy::default());
    let defaults = RateLimitConfig::default();
    assert_eq!(defaults.backend, RateLimitBackend::Local);
    assert_eq!(defaults.key_prefix, RateLimitConfig::DEFAULT_KEY_PREFIX);
    assert_eq!(
        defaults.max_queue_wait,
        RateLimitConfig::DEFAULT_MAX_QUEUE_WAIT
    );
    assert_eq!(
        defaults.expected_replicas,
        RateLimitConfig::DEFAULT_EXPECTED_REPLICAS
    );
    assert_eq!(defaults.on_redis_down, OnRedisDown::Local);
    assert_eq!(
        defaults.expected_output_tokens,
        RateLimitConfig::DEFAULT_EXPECTED_OUTPUT_TOKENS
    );
    assert_eq!(
        defaults.per_client_key,
        RateLimitConfig::DEFAULT_PER_CLIENT_KEY
    );
    assert_eq!(
        defaults.learn_from_headers,
        RateLimitConfig::DEFAULT_LEARN_FROM_HEADERS
    );
    assert_eq!(defaults.backend.redacted_url(), None);
    let provider = &config.providers[0];
    assert_eq!(provider.limits, LimitsConfig::default());
    assert_eq!(provider.limit_scope, LimitScope::Model);
    assert!(provider.model_limits.is_empty());
    assert_eq!(provider.limits_for("gpt-4o"), LimitsConfig::default());
    // An empty table is the default too.
    assert_eq!(load("[rate_limit]\n").unwrap(), Config::default());
}

#[test]
fn rate_limit_table_parses() {
    let text = r#"[rate_limit]
backend = "redis"
redis_url = "rediss://default:hunter2@redis.example.com:6380/2"
key_prefix = "gw:prod"
max_queue_wait = "0s"
expected_replicas = 4
on_redis_down = "closed"
expected_output_tokens = 1000
per_client_key = true
learn_from_headers = false
"#;
    let config = load(text).unwrap();
    let url = "rediss://default:hunter2@redis.example.com:6380/2";
    assert_eq!(
        config.rate_limit,
        RateLimitConfig {
            backend: RateLimitBackend::Redis { url: url.into() },
            key_prefix: "gw:prod".into(),
            max_queue_wait: Duration::ZERO,
            expected_replicas: 4,
            on_redis_down: OnRedisDown::Closed,
            expected_output_tokens: 1000,
            per_client_key: true,
            learn_from_headers: false,
        }
    );
    // A URL without credentials, and one with only a host.
    for url in ["redis://127.0.0.1:6379", "redis://redis", "redis://r:6379/"] {
        let text = format!("[rate_limit]\nbackend = \"redis\"\nredis_url = \"{url}\"\n");
        let config = load(&text).unwrap();
        assert_eq!(
            config.rate_limit.backend,
            RateLimitBackend::Redis { url: url.into() }
        );
    }
}

#[test]
fn redis_backend_needs_a_valid_url() {
    let p = only(
        "[rate_limit]\nbackend = \"redis\"\n",
        "rate_limit.redis_url",
        2,
    );
    assert!(p.message.contains("needs redis_url"), "{p:#?}");
    assert!(p.message.contains("redis://127.0.0.1:6379"), "{p:#?}");

    let bad = [
        (
            "redis.example.com:6379",
            "expected a redis:// or rediss:// URL",
        ),
        (
            "https://redis.example.com",
            "expected a redis:// or rediss:// URL",
        ),
        ("not a url", "not a valid URL"),
        ("redis://", "no host"),
        ("redis://r:6379/db", "database number"),
    ];
    for (url, expected) in bad {
        let text = format!("[rate_limit]\nbackend = \"redis\"\n\nredis_url = \"{url}\"\n");
        let p = only(&text, "rate_limit.redis_url", 4);
        assert!(p.message.contains(expected), "{url}: {p:#?}");
        assert_eq!(p.column, Some(13), "{p:#?}");
    }

    // A URL with the local backend (said or by default) is a mistake, not ignored.
    for text in [
        "[rate_limit]\nredis_url = \"redis://r:6379\"\n",
        "[rate_limit]\nbackend = \"local\"\nredis_url = \"redis://r:6379\"\n",
    ] {
        let p = problems(text);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].path, "rate_limit.redis_url");
        assert!(
            p[0].message.contains("only used with backend = \"redis\""),
            "{p:#?}"
        );
    }

    let p = only(
        "[rate_limit]\nbackend = \"memcached\"\n",
        "rate_limit.backend",
        2,
    );
    assert!(p.message.contains("\"local\" or \"redis\""), "{p:#?}");
    // An unknown backend does not add a complaint about its URL.
    only(
        "[rate_limit]\nbackend = \"redi\"\nredis_url = \"redis://r\"\n",
        "rate_limit.backend",
        2,
    );
}

#[test]
fn redis_url_credentials_are_never_printed() {
    // Not in errors, whatever is wrong with the URL.
    for url in [
        "http://admin:hunter2@r:6379",
        "redis://admin:hunter2@r:6379/x",
        "redis://admin:hunter2@:6379",
        "redis://admin:hunter2@r:99999999",
        "admin:hunter2@r:6379",
    ] {
        let text = format!("[rate_limit]\nbackend = \"redis\"\nredis_url = \"{url}\"\n");
        let err = load(&text).unwrap_err();
        let shown = format!("{err}\n{err:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("admin:"), "{shown}");
        let text = format!("[rate_limit]\nredis_url = \"{url}\"\n");
        let shown = load(&text).unwrap_err().to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
    }
    // Not in the Debug output of a valid configuration, nor of the raw file.
    let text = "[rate_limit]\nbackend = \"redis\"\nredis_url = \"redis://admin:hunter2@r.internal:6379/0?password=hunter2\"\n";
    let config = load(text).unwrap();
    let shown = format!(
        "{config:?}\n{config:#?}\n{:?}",
        super::raw::parse(text).unwrap()
    );
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("admin:"), "{shown}");
    assert_eq!(
        config.rate_limit.backend.redacted_url().as_deref(),
        Some("redis://<redacted>@r.internal:6379/0?<redacted>")
    );
    let plain = RateLimitBackend::Redis {
        url: "redis://r:6379".into(),
    };
    assert_eq!(plain.redacted_url().as_deref(), Some("redis://r:6379"));
    assert_eq!(format!("{plain:?}"), r#"Redis { url: "redis://r:6379" }"#);
}

#[test]
fn invalid_rate_limit_values_are_reported_with_path_and_line() {
    let text = r#"[rate_limit]
key_prefix = ""
max_queue_wait = "soon"
expected_replicas = 0
on_redis_down = "open"
expected_output_tokens = -1
"#;
    let problems = problems(text);
    let found: Vec<(&str, usize)> = problems
        .iter()
        .map(|p| (p.path.as_str(), p.line.unwrap()))
        .collect();
    assert_eq!(
        found,
        [
            ("rate_limit.key_prefix", 2),
            ("rate_limit.max_queue_wait", 3),
            ("rate_limit.expected_replicas", 4),
            ("rate_limit.on_redis_down", 5),
            ("rate_limit.expected_output_tokens", 6),
        ],
        "{problems:#?}"
    );
    assert_eq!(
        at(&problems, "rate_limit.expected_replicas").message,
        "must be at least 1, got 0"
    );
    assert!(
        at(&problems, "rate_limit.on_redis_down")
            .message
            .contains("\"local\" or \"closed\""),
        "{problems:#?}"
    );
    only(
        "[rate_limit]\nkey_prefix = \"a b\"\n",
        "rate_limit.key_prefix",
        2,
    );
    let p = only(
        "[rate_limit]\nexpected_replicas = 5000000000\n",
        "rate_limit.expected_replicas",
        2,
    );
    assert!(p.message.contains("too large"), "{p:#?}");
}

#[test]
fn provider_limits_parse_and_model_limits_merge() {
    let text = format!(
        r#"{OPENAI}rpm = 500
tpm = 200_000
tpm_burst = 50000.5
model_limits = {{ "gpt-4o" = {{ rpm = 100, tpm = 30000 }}, "o1" = {{ rpm_burst = 10 }} }}

[[providers]]
name = "shared"
kind = "mock"
rpm = 60
limit_scope = "provider"

[[providers]]
name = "tables"
kind = "mock"
tpm = 1000
[providers.model_limits.small]
tpm = 300
[providers.model_limits."gpt-4.1"]
rpm = 1.5
"#
    );
    let config = load(&text).unwrap();
    let openai = config.provider("openai").unwrap();
    let base = LimitsConfig {
        rpm: Some(500.0),
        tpm: Some(200_000.0),
        rpm_burst: None,
        tpm_burst: Some(50_000.5),
    };
    assert_eq!(openai.limits, base);
    assert_eq!(openai.limit_scope, LimitScope::Model);
    let gpt_4o = LimitsConfig {
        rpm: Some(100.0),
        tpm: Some(30_000.0),
        ..base
    };
    let o1 = LimitsConfig {
        rpm_burst: Some(10.0),
        ..base
    };
    assert_eq!(
        openai.model_limits,
        vec![("gpt-4o".to_owned(), gpt_4o), ("o1".to_owned(), o1)]
    );
    assert_eq!(openai.limits_for("gpt-4o"), gpt_4o);
    assert_eq!(openai.limits_for("other"), base);
    assert_eq!(
        gpt_4o.to_limits(),
        sluice::Limits {
            rpm: Some(100.0),
            tpm: Some(30_000.0),
            burst_requests: None,
            burst_tokens: Some(50_000.5),
        }
    );
    assert_eq!(gpt_4o.to_limits().token_capacity(), Some(50_000.5));
    assert_eq!(
        LimitsConfig::default().to_limits(),
        sluice::Limits::UNLIMITED
    );

    let shared = config.provider("shared").unwrap();
    assert_eq!(shared.limit_scope, LimitScope::Provider);
    assert_eq!(
        shared.limits_for("anything"),
        LimitsConfig {
            rpm: Some(60.0),
            ..LimitsConfig::default()
        }
    );

    let tables = config.provider("tables").unwrap();
    let small = LimitsConfig {
        tpm: Some(300.0),
        ..LimitsConfig::default()
    };
    let gpt_41 = LimitsConfig {
        rpm: Some(1.5),
        tpm: Some(1000.0),
        ..LimitsConfig::default()
    };
    assert_eq!(
        tables.model_limits,
        vec![("gpt-4.1".to_owned(), gpt_41), ("small".to_owned(), small)]
    );
    let shown = format!("{tables:?}");
    assert!(shown.contains("model_limits"), "{shown}");
}

#[test]
fn invalid_limits_are_reported_with_path_and_line() {
    let text = r#"[[providers]]
name = "a"
kind = "mock"
rpm = 0
tpm = -1000
rpm_burst = nan
tpm_burst = inf
limit_scope = "global"

[[providers]]
name = "b"
kind = "mock"
rpm = 60
[providers.model_limits."gpt-4.1"]
rpm = -5
[providers.model_limits.""]
rpm = 1
"#;
    let problems = problems(text);
    let found: Vec<(&str, usize)> = problems
        .iter()
        .map(|p| (p.path.as_str(), p.line.unwrap()))
        .collect();
    assert_eq!(
        found,
        [
            ("providers[0].rpm", 4),
            ("providers[0].tpm", 5),
            ("providers[0].rpm_burst", 6),
            ("providers[0].tpm_burst", 7),
            ("providers[0].limit_scope", 8),
            ("providers[1].model_limits.\"gpt-4.1\".rpm", 15),
            ("providers[1].model_limits.\"\"", 16),
        ],
        "{problems:#?}"
    );
    assert_eq!(
        at(&problems, "providers[0].rpm").message,
        "must be a positive number, got 0"
    );
    assert_eq!(
        at(&problems, "providers[0].tpm_burst").message,
        "must be a positive number, got inf"
    );
    assert!(
        at(&problems, "providers[0].limit_scope")
            .message
            .contains("\"model\" or \"provider\""),
        "{problems:#?}"
    );
    // A bad provider value does not make its model entries report twice...
    let text = format!("{OPENAI}rpm = -1\nmodel_limits = {{ m = {{ rpm_burst = 5 }} }}\n");
    only(&text, "providers[0].rpm", 6);
    // ...nor hide a problem on the other axis, of the provider or of an entry.
    let text = format!("{OPENAI}rpm = -1\ntpm = 100\n");
    let found: Vec<String> = load(&text)
        .unwrap_err()
        .problems
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(found, ["providers[0].rpm", "providers[0].tpm"]);
    let text = format!(
        "{OPENAI}rpm = -1\ntpm = 1000\nmodel_limits = {{ m = {{ rpm_burst = 5, tpm = 200 }} }}\n"
    );
    let found: Vec<(String, usize)> = load(&text)
        .unwrap_err()
        .problems
        .into_iter()
        .map(|p| (p.path, p.line.unwrap()))
        .collect();
    let expected = [
        ("providers[0].rpm", 6),
        ("providers[0].model_limits.m.tpm", 8),
    ]
    .map(|(path, line)| (path.to_owned(), line));
    assert_eq!(found, expected);
}

#[test]
fn bursts_need_their_rate() {
    let text = format!("{OPENAI}rpm_burst = 10\n");
    let p = only(&text, "providers[0].rpm_burst", 6);
    assert!(p.message.starts_with("rpm_burst needs rpm"), "{p:#?}");
    let text = format!("{OPENAI}rpm = 10\n\nmodel_limits = {{ m = {{ tpm_burst = 10000 }} }}\n");
    let p = only(&text, "providers[0].model_limits.m.tpm_burst", 8);
    assert!(p.message.starts_with("tpm_burst needs tpm"), "{p:#?}");
    // With the rate inherited from the provider, a model's burst is fine.
    let text = format!("{OPENAI}tpm = 10000\nmodel_limits = {{ m = {{ tpm_burst = 500 }} }}\n");
    let config = load(&text).unwrap();
    assert_eq!(
        config.providers[0].limits_for("m"),
        LimitsConfig {
            tpm: Some(10_000.0),
            tpm_burst: Some(500.0),
            ..LimitsConfig::default()
        }
    );
}

#[test]
fn a_bucket_must_hold_one_request_and_the_expected_output() {
    // Request capacity below 1: no request could ever pass.
    let p = only(&format!("{OPENAI}rpm = 0.5\n"), "providers[0].rpm", 6);
    assert!(p.message.contains("one request"), "{p:#?}");
    let p = only(
        &format!("{OPENAI}rpm = 60\nrpm_burst = 0.5\n"),
        "providers[0].rpm_burst",
        7,
    );
    assert!(p.message.contains("one request"), "{p:#?}");
    let config = load(&format!("{OPENAI}rpm = 0.5\nrpm_burst = 1\n")).unwrap();
    assert_eq!(config.providers[0].limits.rpm, Some(0.5));

    // The token capacity must hold rate_limit.expected_output_tokens (the issue's "a target's
    // tpm not below its max_tokens").
    let p = only(&format!("{OPENAI}tpm = 100\n"), "providers[0].tpm", 6);
    assert!(
        p.message
            .contains("the 256 output tokens reserved for a request without max_tokens"),
        "{p:#?}"
    );
    let p = only(
        &format!("{OPENAI}tpm = 100000\ntpm_burst = 255\n"),
        "providers[0].tpm_burst",
        7,
    );
    assert!(p.message.starts_with("tpm_burst = 255 "), "{p:#?}");
    load(&format!("{OPENAI}tpm = 256\n")).unwrap();
    // A burst large enough rescues a small rate.
    load(&format!("{OPENAI}tpm = 100\ntpm_burst = 1000\n")).unwrap();
    // The check follows expected_output_tokens, wherever [rate_limit] is in the file.
    let text = format!("{OPENAI}tpm = 100\n\n[rate_limit]\nexpected_output_tokens = 50\n");
    load(&text).unwrap();
    let text = format!("{OPENAI}tpm = 1000\n\n[rate_limit]\nexpected_output_tokens = 5000\n");
    only(&text, "providers[0].tpm", 6);
    // A model entry is checked with its merged values, at its own key.
    let text = format!("{OPENAI}tpm = 10000\nmodel_limits = {{ small = {{ tpm = 10 }} }}\n");
    let p = only(&text, "providers[0].model_limits.small.tpm", 7);
    assert_eq!(p.column, Some(34), "{p:#?}");
}

#[test]
fn model_limits_need_the_model_scope() {
    let text = format!(
        "{OPENAI}limit_scope = \"provider\"\nrpm = 60\nmodel_limits = {{ m = {{ rpm = 10 }} }}\n"
    );
    let p = only(&text, "providers[0].model_limits", 8);
    assert!(p.message.contains("limit_scope = \"model\""), "{p:#?}");
}

#[test]
fn context_policy_overrides_merge_over_policy() {
    let text = format!(
        r#"[policy]
on_context_overflow = "truncate"
context_buffer = 0
default_output_tokens = 1000
default_context_window = 32000
{OPENAI}
[[models]]
name = "a"
targets = ["openai/x"]
on_context_overflow = "fallback"
default_output_tokens = 2000
context_window = 8000
max_output = 8000

[[models]]
name = "b"
targets = ["openai/y"]
"#
    );
    let config = load(&text).unwrap();
    let top = ContextPolicy {
        on_overflow: OnOverflow::Truncate,
        default_output: 1000,
        buffer: 0,
        default_window: Some(32_000),
    };
    assert_eq!(config.context, top);
    // The retry policy is untouched by the context keys.
    assert_eq!(config.policy, RetryPolicy::default());
    let a = config.model("a").unwrap();
    assert_eq!(
        a.context,
        ContextPolicy {
            on_overflow: OnOverflow::Fallback,
            default_output: 2000,
            ..top
        }
    );
    assert_eq!((a.context_window, a.max_output), (Some(8000), Some(8000)));
    assert_eq!(a.policy, RetryPolicy::default());
    let b = config.model("b").unwrap();
    assert_eq!(b.context, top);
    assert_eq!((b.context_window, b.max_output), (None, None));
    // "error" spelled out.
    let config = load("[policy]\non_context_overflow = \"error\"\n").unwrap();
    assert_eq!(config.context.on_overflow, OnOverflow::Error);
}

#[test]
fn invalid_context_values_are_reported_with_path_and_line() {
    let text = format!(
        r#"[policy]
on_context_overflow = "drop"
context_buffer = -1
default_output_tokens = 0
default_context_window = 0
{OPENAI}
[[models]]
name = "m"
targets = ["openai/x"]
on_context_overflow = "Error"
context_window = 0
max_output = -3
"#
    );
    let problems = problems(&text);
    let found: Vec<(&str, usize)> = problems
        .iter()
        .map(|p| (p.path.as_str(), p.line.unwrap()))
        .collect();
    assert_eq!(
        found,
        [
            ("policy.on_context_overflow", 2),
            ("policy.context_buffer", 3),
            ("policy.default_output_tokens", 4),
            ("policy.default_context_window", 5),
            ("models[0].on_context_overflow", 15),
            ("models[0].context_window", 16),
            ("models[0].max_output", 17),
        ],
        "{problems:#?}"
    );
    assert!(
        at(&problems, "policy.on_context_overflow")
            .message
            .contains(r#""error", "truncate" or "fallback""#),
        "{problems:#?}"
    );
    assert_eq!(
        at(&problems, "policy.context_buffer").message,
        "must not be negative, got -1"
    );
    assert_eq!(
        at(&problems, "models[0].max_output").message,
        "must be at least 1, got -3"
    );
    // The parser still checks types.
    only(
        "[policy]\ndefault_output_tokens = \"4k\"\n",
        "policy.default_output_tokens",
        2,
    );
    let text = format!(
        "{OPENAI}\n[[models]]\nname = \"m\"\ntargets = [\"openai/x\"]\ncontext_windw = 1\n"
    );
    only(&text, "models[0].context_windw", 10);
}

#[test]
fn context_windows_must_leave_room_for_the_prompt() {
    // [policy]: 4096 + 100 reserved leave nothing of a 4196-token window.
    let p = only(
        "[policy]\ndefault_context_window = 4196\n",
        "policy.default_context_window",
        2,
    );
    assert!(
        p.message.contains("leaves no room for the prompt"),
        "{p:#?}"
    );
    assert!(p.message.contains("reserve 4196 tokens"), "{p:#?}");
    load("[policy]\ndefault_context_window = 4197\n").unwrap();

    // A model raising the reservation over an inherited window is told where the window is.
    let text = format!(
        "[policy]\ndefault_context_window = 8000\n{OPENAI}\n[[models]]\nname = \"m\"\ntargets = [\"openai/x\"]\ndefault_output_tokens = 8000\n"
    );
    let p = only(&text, "models[0].default_output_tokens", 12);
    assert!(
        p.message
            .ends_with("(default_context_window is inherited from [policy])"),
        "{p:#?}"
    );

    // A model's own window, against its own reservation.
    let models = |keys: &str| {
        format!("{OPENAI}\n[[models]]\nname = \"m\"\ntargets = [\"openai/x\"]\n{keys}")
    };
    let p = only(
        &models("context_window = 4000\n"),
        "models[0].context_window",
        10,
    );
    assert!(p.message.contains("lower default_output_tokens"), "{p:#?}");
    let config = load(&models(
        "context_window = 4000\ndefault_output_tokens = 1000\n",
    ))
    .unwrap();
    assert_eq!(config.models[0].context_window, Some(4000));

    // max_output is not above the window.
    let p = only(
        &models("context_window = 32000\nmax_output = 32001\n"),
        "models[0].max_output",
        11,
    );
    assert_eq!(
        p.message,
        "max_output (32001) is above context_window (32000)"
    );
    let config = load(&models("max_output = 1000000\n")).unwrap();
    assert_eq!(config.models[0].max_output, Some(1_000_000));
}

#[test]
fn rate_limit_keys_and_types_are_checked_by_the_parser() {
    let p = only("[rate_limit]\nbacknd = \"redis\"\n", "rate_limit.backnd", 2);
    assert!(p.message.contains("unknown field `backnd`"), "{p:#?}");
    only(
        "[rate_limit]\nper_client_key = \"yes\"\n",
        "rate_limit.per_client_key",
        2,
    );
    let p = only(
        "[rate_limit]\nredis_url = 6379\n",
        "rate_limit.redis_url",
        2,
    );
    assert!(p.message.contains("redis://127.0.0.1:6379"), "{p:#?}");
    let p = only(
        "[rate_limit]\nmax_queue_wait = 30\n",
        "rate_limit.max_queue_wait",
        2,
    );
    assert!(p.message.contains("a duration like"), "{p:#?}");
    only(&format!("{OPENAI}rpm = \"500\"\n"), "providers[0].rpm", 6);
    let p = only(
        &format!("{OPENAI}model_limits = {{ m = {{ rph = 5 }} }}\n"),
        "providers[0].model_limits.m.rph",
        6,
    );
    assert!(p.message.contains("rph"), "{p:#?}");
    only(
        &format!("{OPENAI}rpm_brust = 5\n"),
        "providers[0].rpm_brust",
        6,
    );
}
