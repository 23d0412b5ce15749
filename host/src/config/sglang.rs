//! sglang-router 0.3.2's launcher flags that this router accepts only at
//! their defaults: those of gateway features it does not offer (conversation
//! history and its databases, MCP, chat templates, parsers, MiniLB).
//! Given another value, each is refused with one line
//! naming it (exit 2), rather than being silently ignored. README.md's flag
//! table lists them with the reasons.

use super::{ConfigError, RouterArgs, defaults as d};

const GATEWAY: &str = "wasm-router is a load balancer, not a gateway: the workers apply their own chat templates and parsers, and it keeps no conversation history";

/// Refuse every such flag given a value other than sglang-router's default.
pub(super) fn check(s: &RouterArgs) -> Result<(), ConfigError> {
    let unsupported = |setting, why| ConfigError::Unsupported { setting, why };
    let gateway = |setting| unsupported(setting, GATEWAY);
    let differs = |given: Option<u64>, default: u64| given.is_some_and(|v| v != default);

    if s.mini_lb {
        return Err(unsupported(
            "--mini-lb",
            "the router itself is the load balancer (--pd-disaggregation for PD)",
        ));
    }
    for (setting, given) in [
        ("--chat-template", s.chat_template.is_some()),
        ("--reasoning-parser", s.reasoning_parser.is_some()),
        ("--tool-call-parser", s.tool_call_parser.is_some()),
        ("--mcp-config-path", s.mcp_config_path.is_some()),
        ("--oracle-wallet-path", s.oracle_wallet_path.is_some()),
        ("--oracle-tns-alias", s.oracle_tns_alias.is_some()),
        (
            "--oracle-connect-descriptor",
            s.oracle_connect_descriptor.is_some(),
        ),
        ("--oracle-username", s.oracle_username.is_some()),
        ("--oracle-password", s.oracle_password.is_some()),
        (
            "--oracle-pool-min",
            differs(s.oracle_pool_min, d::ORACLE_POOL_MIN),
        ),
        (
            "--oracle-pool-max",
            differs(s.oracle_pool_max, d::ORACLE_POOL_MAX),
        ),
        (
            "--oracle-pool-timeout-secs",
            differs(s.oracle_pool_timeout_secs, d::ORACLE_POOL_TIMEOUT_SECS),
        ),
        ("--postgres-db-url", s.postgres_db_url.is_some()),
        (
            "--postgres-pool-max",
            differs(s.postgres_pool_max, d::POSTGRES_POOL_MAX),
        ),
        ("--redis-url", s.redis_url.is_some()),
        (
            "--redis-pool-max",
            differs(s.redis_pool_max, d::REDIS_POOL_MAX),
        ),
        (
            "--redis-retention-days",
            differs(s.redis_retention_days, d::REDIS_RETENTION_DAYS),
        ),
    ] {
        if given {
            return Err(gateway(setting));
        }
    }
    if let Some(history) = &s.history_backend
        && !matches!(history.as_str(), "memory" | "none")
    {
        return Err(gateway("--history-backend"));
    }
    if let Some(backend) = &s.backend
        && !matches!(backend.as_str(), "sglang" | "openai")
    {
        return Err(ConfigError::Invalid {
            setting: "--backend",
            reason: format!("{backend:?} is not sglang or openai"),
        });
    }

    Ok(())
}
