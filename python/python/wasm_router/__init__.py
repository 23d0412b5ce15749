"""wasm-router: a load balancer for LLM inference workers whose routing
policy is a WebAssembly component. Drop-in for ``sglang_router``.

- ``python -m wasm_router.launch_router --worker-urls ...`` (or the
  ``wasm-router`` command) runs the router with SGLang router flags.
- ``Router(worker_urls=[...], policy="cache_aware")`` runs it from Python,
  blocking (``start()``) or on a background thread (``start_background()``).
- ``python -m wasm_router.sim_worker --port 8000`` runs a simulated worker.
"""

from .router import Router

__all__ = ["Router"]
