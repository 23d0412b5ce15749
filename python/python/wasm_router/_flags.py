"""The router's launch flags, in one table: argparse (``launch_router``) and
``Router(**settings)`` both validate against it, then pass the flags on to the
native router unchanged. Defaults are the router's own, shown in help."""

import argparse

def _positive_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value

def _port(text):
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number (0-65535), got {value}")
    return value

def _ratio(text):
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value

def _at_least_one(text):
    value = float(text)
    if value < 1.0:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value

# (name, kind, help): kind is a converter, "list" (one flag, several
# values), "append" (the flag repeated per value), "groups" (the flag
# repeated, each with one or more values), or "flag" (a switch).
FLAGS = [
    ("host", str, "address to listen on [default: 127.0.0.1]"),
    ("port", _port, "port to listen on [default: 30000]"),
    ("worker_urls", "list", "worker base URLs"),
    ("policy", str, "built-in policy (cache_aware, round_robin, random, power_of_two, consistent_hash, manual, bucket) or a .wasm file [default: cache_aware]"),
    ("config", str, "TOML file with the same settings and a [policy] table"),
    ("cache_threshold", _ratio, "cache_aware: minimum prefix match ratio [default: 0.3]"),
    ("balance_abs_threshold", _positive_int, "cache_aware: absolute load gap that overrides affinity [default: 64]"),
    ("balance_rel_threshold", _at_least_one, "cache_aware: relative load ratio that overrides affinity [default: 1.5]"),
    ("eviction_interval_secs", _positive_int, "cache_aware: seconds between evictions [default: 120]"),
    ("max_tree_size", _positive_int, "cache_aware: characters per worker after eviction [default: 67108864]"),
    ("assignment_mode", str, "manual: how a new routing key picks its worker: random, min_load or min_group [default: random]"),
    ("max_idle_secs", _positive_int, "manual: seconds after which an unused routing key is forgotten [default: 3600]"),
    ("pd_disaggregation", "flag", "prefill/decode disaggregation: each request goes to a prefill and a decode worker at once"),
    ("prefill", "groups", "PD mode: a prefill worker URL and optionally its bootstrap port or none (repeat per worker)"),
    ("decode", "append", "PD mode: a decode worker URL (repeat per worker)"),
    ("prefill_policy", str, "PD mode: the prefill workers' policy [default: --policy]"),
    ("decode_policy", str, "PD mode: the decode workers' policy [default: --policy]"),
    ("dp_aware", "flag", "route to each data-parallel rank of a worker (dp_size from /get_server_info)"),
    ("worker_load_check_interval", _positive_int, "seconds between reads of each worker's /get_load, 0 for never [default: 10]"),
    ("max_payload_size", _positive_int, "largest request body in bytes [default: 536870912]"),
    ("request_timeout_secs", _positive_int, "seconds to wait for a worker's response [default: 1800]"),
    ("attempt_timeout_secs", _positive_int, "seconds to wait for one worker before retrying on another [default: off]"),
    ("max_concurrent_requests", _positive_int, "requests forwarded at once, 0 for no limit [default: 256]"),
    ("queue_size", _positive_int, "requests that may wait for a slot [default: 100]"),
    ("queue_timeout_secs", _positive_int, "seconds a request may wait [default: 60]"),
    ("api_key", str, "require Authorization: Bearer KEY on inference routes"),
    ("admin_api_key", "append", "key for the admin routes (repeat for several); without one, loopback clients only"),
    ("allow_remote_admin", "flag", "serve admin routes to non-loopback clients without a key"),
    ("tls_cert_path", str, "serve HTTPS with this PEM certificate chain"),
    ("tls_key_path", str, "PEM private key for --tls-cert-path"),
    ("ca_cert_paths", "list", "extra PEM root certificates for HTTPS workers"),
    ("client_cert_path", str, "PEM client certificate for mutual TLS with workers"),
    ("client_key_path", str, "PEM private key for --client-cert-path"),
    ("prometheus_host", str, "address of the Prometheus endpoint [default: 127.0.0.1]"),
    ("prometheus_port", _port, "port of the Prometheus endpoint [default: 29000]"),
    ("request_id_headers", "list", "headers carrying a client's request id"),
    ("retry_max_retries", _positive_int, "retries after the first attempt [default: 5]"),
    ("retry_initial_backoff_ms", _positive_int, "first retry back-off in ms [default: 50]"),
    ("retry_max_backoff_ms", _positive_int, "longest retry back-off in ms [default: 30000]"),
    ("retry_backoff_multiplier", _at_least_one, "back-off growth per retry [default: 1.5]"),
    ("retry_jitter_factor", _ratio, "random share of each back-off [default: 0.2]"),
    ("disable_retries", "flag", "never retry"),
    ("cb_failure_threshold", _positive_int, "failures that open a worker's breaker [default: 10]"),
    ("cb_success_threshold", _positive_int, "half-open successes that close it [default: 3]"),
    ("cb_timeout_duration_secs", _positive_int, "seconds a breaker stays open [default: 60]"),
    ("cb_window_duration_secs", _positive_int, "seconds over which failures count [default: 120]"),
    ("disable_circuit_breaker", "flag", "no circuit breakers"),
    ("health_failure_threshold", _positive_int, "failed checks that mark a worker unhealthy [default: 3]"),
    ("health_success_threshold", _positive_int, "passed checks that mark it healthy [default: 2]"),
    ("health_check_timeout_secs", _positive_int, "seconds per health check [default: 5]"),
    ("health_check_interval_secs", _positive_int, "seconds between health checks [default: 60]"),
    ("health_check_endpoint", str, "path probed by health checks [default: /health]"),
    ("disable_health_check", "flag", "no health checks"),
    ("shutdown_grace_period_secs", _positive_int, "seconds to finish requests at shutdown [default: 180]"),
    ("log_level", str, "log filter: error, warn, info, debug, trace [default: info]"),
    ("log_json", "flag", "log as JSON lines"),
    ("no_watch", "flag", "do not hot-reload the policy file"),
    ("policy_call_deadline_ms", _positive_int, "deadline of one policy call on the request path, in ms [default: 10]"),
    ("policy_memory_limit_mb", _positive_int, "linear memory a policy may use, in MiB [default: 512]"),
    ("no_policy_cache", "flag", "do not cache compiled policies on disk"),
]

NAMES = {name for name, _, _ in FLAGS}

def add_arguments(parser):
    """Add every flag to an argparse parser (dests are the names above)."""
    for name, kind, text in FLAGS:
        flag = "--" + name.replace("_", "-")
        if kind == "flag":
            parser.add_argument(flag, action="store_true", help=text)
        elif kind == "list":
            parser.add_argument(flag, nargs="+", default=None, help=text)
        elif kind == "append":
            parser.add_argument(flag, action="append", default=None, help=text)
        elif kind == "groups":
            parser.add_argument(flag, action="append", nargs="+", default=None, help=text)
        else:
            parser.add_argument(flag, type=kind, default=None, help=text)

def to_argv(settings):
    """Router argv from validated settings (unset ones are left out)."""
    argv = []
    kinds = {name: kind for name, kind, _ in FLAGS}
    for name, value in settings.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        if kinds[name] == "flag":
            argv.append(flag)
        elif kinds[name] == "list":
            argv.append(flag)
            argv.extend(str(v) for v in value)
        elif kinds[name] == "append":
            for v in value:
                argv.extend([flag, str(v)])
        elif kinds[name] == "groups":
            for group in value:
                argv.append(flag)
                argv.extend(str(v) for v in group)
        else:
            argv.extend([flag, str(value)])
    return argv

def _groups(name, value):
    """A "groups" setting: a list whose items are a URL, or a [URL, port]
    list; as lists of strings."""
    def group(item):
        if isinstance(item, str):
            return [item]
        if isinstance(item, (list, tuple)) and item and all(isinstance(v, (str, int)) for v in item):
            return [str(v) for v in item]
        raise ValueError(f"{name} must be a list of URLs or [URL, port] pairs, got {value!r}")
    if isinstance(value, str):
        raise ValueError(f"{name} must be a list of URLs or [URL, port] pairs, got {value!r}")
    return [group(item) for item in value]

def validate(settings):
    """Check ``Router(**settings)`` keyword arguments like argparse would;
    raise ``ValueError`` naming the setting."""
    kinds = {name: kind for name, kind, _ in FLAGS}
    checked = {}
    for name, value in settings.items():
        if name not in kinds:
            raise ValueError(f"unknown router setting {name!r}; known: {', '.join(sorted(NAMES))}")
        kind = kinds[name]
        if value is None:
            continue
        if kind == "flag":
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be True or False, got {value!r}")
        elif kind in ("list", "append"):
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{name} must be a list of strings, got {value!r}")
            value = list(value)
        elif kind == "groups":
            value = _groups(name, value)
        else:
            try:
                value = kind(str(value)) if kind is not str else str(value)
            except (ValueError, argparse.ArgumentTypeError) as e:
                raise ValueError(f"invalid {name}: {e}") from None
        checked[name] = value
    return checked
