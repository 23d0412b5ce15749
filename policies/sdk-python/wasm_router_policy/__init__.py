"""Write wasm-router routing policies in Python.

A policy is a WebAssembly component the router loads at run time and asks,
for every request, which worker should serve it. This package hides the
component plumbing (bindings generated from the contract, `wit/policy.wit`,
by componentize-py) behind one base class, `Policy`, and one function,
`export`, the same shape as the Rust SDK's trait and macro::

    import wasm_router_policy as wr

    class LeastLoad(wr.Policy):
        def init(self, config):
            return wr.PolicyInfo("least_load", per_thread=True)

        def select(self, req, candidates):
            return min(candidates, key=lambda c: (c.load, c.id)).id

    Policy = wr.export(LeastLoad)   # the name componentize-py looks for

Build it with `wasm-router-policy build app -o least_load.wasm` (the module
`app.py` in the current directory), then `router --policy least_load.wasm`.

What a policy reads that costs the router work per request (the client's
headers, KV-cache matches) is declared in `PolicyInfo` (`reads_headers`,
`reads_kv_matches`): Python's bindings import every function of the
contract, so the router cannot tell from the imports.

This module imports the generated bindings (`wit_world`), which exist only
inside a build; `wasm-router-policy build` (`wasm_router_policy_build`) runs
one.
"""

import json
from dataclasses import dataclass
from typing import Iterator, List, Optional

from componentize_py_types import Err
from wit_world import exports as _exports
from wit_world.imports import log, metrics, needs, prefix_index, state, types

__all__ = [
    "Candidate",
    "Candidates",
    "Decline",
    "Policy",
    "PolicyInfo",
    "Request",
    "export",
    "log",
    "metrics",
    "prefix_index",
    "state",
    "types",
]

# The contract version this SDK implements (`wit/policy.wit`'s package).
CONTRACT_VERSION = "0.2.0"


@dataclass
class PolicyInfo:
    """What a policy tells the router about itself, from `Policy.init`.

    - `needs_text`: the router extracts the routing text (a JSON scan per
      request); `Request.text` and the prefix index need it.
    - `wants_feedback`: the router calls `on_complete` after each attempt.
    - `tick_interval_ms`: how often the router calls `tick` (0: never).
    - `per_thread`: one instance per router thread (no lock on the request
      path), for a policy that keeps nothing between calls itself (what it
      keeps lives in `state` or the prefix index); else one shared
      instance, called one call at a time.
    - `reads_headers`: the router lends the client's headers
      (`Request.header`); without it `header` answers None.
    - `reads_kv_matches`: the router tokenizes the text for
      `prefix_index.match_kv` (and needs `--kv-events`).
    """

    name: str
    needs_text: bool = False
    wants_feedback: bool = False
    tick_interval_ms: int = 0
    per_thread: bool = False
    reads_headers: bool = False
    reads_kv_matches: bool = False


class Decline(Exception):
    """Raise it from `select` to refuse a request: the client gets a 503
    with the message. Any other exception is a fault: the router answers
    with its fallback and starts a fresh instance."""


def _lazy(name: str, doc: Optional[str] = None) -> property:
    """A property that asks the lent handle's getter `name` once per call
    and keeps the answer."""

    def get(self):
        cache = self._cache
        if name not in cache:
            cache[name] = getattr(self._lent, name)()
        return cache[name]

    return property(get, doc=doc)


class Request:
    """The request being routed, lent for one `select` only. Each attribute
    crosses from the router when first read, and is kept for the call."""

    __slots__ = ("_lent", "_cache")

    def __init__(self, lent: types.Request):
        self._lent = lent
        self._cache = {}

    id = _lazy("id")
    route = _lazy("route")
    model = _lazy("model")
    text = _lazy("text", "The routing text; empty unless the policy declared `needs_text`.")
    text_length = _lazy("text_length")
    routing_key = _lazy("routing_key", "`x-routing-key`; None when absent.")
    stream = _lazy("stream")
    max_new_tokens = _lazy("max_new_tokens")

    def text_prefix(self, min_bytes: int) -> str:
        """The text's shortest prefix of at least `min_bytes` bytes."""
        return self._lent.text_prefix(min_bytes)

    def header(self, name: str) -> Optional[str]:
        """The client's header `name` (any case); None unless the policy
        declared `reads_headers`, and always for credentials."""
        return self._lent.header(name)

    @property
    def lent(self) -> types.Request:
        """The router's handle, for `prefix_index.match_request` and its
        kin."""
        return self._lent


@dataclass
class Candidate:
    """One candidate: its worker id and load (the higher of the router's
    in-flight count and the worker's own)."""

    id: int
    load: int


class Candidates:
    """The workers that may take the request (never none), lent for one
    `select` only. Iterating gives `Candidate`s; the other columns
    (`in_flight`, `queued`, `weights`, ...) cross when first read, one list
    each, in the order of `ids`."""

    __slots__ = ("_lent", "_cache")

    def __init__(self, lent: types.Candidates):
        self._lent = lent
        self._cache = {}

    def __iter__(self) -> Iterator[Candidate]:
        return (Candidate(i, load) for i, load in zip(self.ids, self.loads))

    def __len__(self) -> int:
        return len(self.ids)

    ids = _lazy("ids")
    loads = _lazy("loads", "The higher of the router's in-flight count and the worker's own.")
    in_flight = _lazy("in_flight")
    reported_loads = _lazy("reported_loads")
    queued = _lazy("queued")
    half_open = _lazy("half_open")
    ttft_ewma_us = _lazy("ttft_ewma_us")
    latency_ewma_us = _lazy("latency_ewma_us")
    weights = _lazy("weights")
    kv_usage = _lazy("kv_usage")
    prefill_ahead = _lazy("prefill_ahead")

    def label(self, key: str) -> List[Optional[str]]:
        """Each candidate's value of label `key` (None where it has none)."""
        return self._lent.label(key)


class Policy:
    """A routing policy. Only `init` and `select` are required; the router
    calls the others only if `init` asked for them (feedback, ticks) or
    around hot reloads (snapshot, restore). One object lives in each
    instance of the component, and calls on it never overlap."""

    def init(self, config: dict) -> PolicyInfo:
        """Set the policy up from its configuration (router flags and the
        `[policy]` table of the router's TOML config). Raise `Decline` to
        refuse the load with a message that says what to fix."""
        raise NotImplementedError

    def select(self, req: Request, candidates: Candidates) -> int:
        """The id of the candidate that takes `req`."""
        raise NotImplementedError

    def workers_changed(self, workers: List[types.WorkerInfo]) -> None:
        """The full worker list, at start and after each change."""

    def on_complete(self, outcome: types.Outcome) -> None:
        """How an attempt ended (only if `wants_feedback`)."""

    def tick(self, now_ms: int) -> None:
        """Periodic housekeeping (only if `tick_interval_ms`)."""

    def snapshot(self) -> bytes:
        """State to hand to the next build on a hot reload."""
        return b""

    def restore(self, state: bytes) -> None:
        """Take over state from `snapshot`; raise `Decline` to start
        fresh."""


def _declare(info: PolicyInfo) -> types.PolicyInfo:
    reads = needs.Reads(0)
    if info.reads_headers:
        reads |= needs.Reads.HEADERS
    if info.reads_kv_matches:
        reads |= needs.Reads.KV_MATCHES
    needs.declare(reads)
    instances = types.Instances.PER_THREAD if info.per_thread else types.Instances.SHARED
    return types.PolicyInfo(
        info.name, info.needs_text, info.wants_feedback, info.tick_interval_ms, instances
    )


def export(policy_class: type) -> type:
    """The component's exports for `policy_class` (a `Policy` subclass): the
    class componentize-py looks for, so assign it to `Policy` in the app
    module."""

    class Exports(_exports.Policy):
        instance: Optional[Policy] = None

        def contract_version(self) -> str:
            return CONTRACT_VERSION

        def init(self, config: str) -> types.PolicyInfo:
            policy = policy_class()
            try:
                info = policy.init(json.loads(config) if config else {})
            except Decline as e:
                raise Err(str(e))
            Exports.instance = policy
            return _declare(info)

        def workers_changed(self, workers: List[types.WorkerInfo]) -> None:
            Exports.instance.workers_changed(workers)

        def select(self, req: types.Request, candidates: types.Candidates) -> int:
            try:
                return Exports.instance.select(Request(req), Candidates(candidates))
            except Decline as e:
                raise Err(str(e))

        def on_complete(self, outcome: types.Outcome) -> None:
            Exports.instance.on_complete(outcome)

        def tick(self, now_ms: int) -> None:
            Exports.instance.tick(now_ms)

        def snapshot(self) -> bytes:
            return Exports.instance.snapshot()

        def restore(self, state: bytes) -> None:
            try:
                Exports.instance.restore(state)
            except Decline as e:
                raise Err(str(e))

    return Exports
