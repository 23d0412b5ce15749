"""The ``Router`` class: the router, configured and started from Python."""

from . import _flags, _native

class Router:
    """A wasm-router instance.

    ``Router(worker_urls=[...], policy="round_robin", **settings)`` takes the
    router's flags as keyword arguments (``cache_threshold=0.5``,
    ``port=30001``, ...), checked by the router's own parser with messages
    that name the setting. A setting left out has the router's own default
    (``policy``: cache_aware), as ``router --help`` shows it.

    - ``start()`` runs it in the foreground until SIGINT/SIGTERM, like
      ``sglang_router``'s ``Router.start()``.
    - ``start_background()`` runs it on a thread of this process and returns
      once it listens; ``stop()`` (or leaving a ``with`` block) lets requests
      in flight finish and stops it.
    """

    def __init__(self, worker_urls=(), policy=None, **settings):
        if isinstance(worker_urls, str):
            raise ValueError(f"worker_urls must be a list of URLs, got the string {worker_urls!r}")
        settings["worker_urls"] = list(worker_urls) or None
        settings["policy"] = policy
        self._argv = _flags.to_argv(settings)
        _native.check(self._argv)
        self._handle = None

    def argv(self):
        """The router flags these settings amount to."""
        return list(self._argv)

    def start(self):
        """Run in the foreground until interrupted; returns the exit code."""
        return _native.main(self.argv())

    def start_background(self):
        """Start on a background thread; returns self once listening."""
        if self._handle is not None:
            raise RuntimeError("this Router is already running")
        self._handle = _native.RouterHandle.start(self.argv())
        return self

    @property
    def url(self):
        """Base URL of a router started with ``start_background()``."""
        if self._handle is None:
            raise RuntimeError("the Router is not running; call start_background()")
        return "http://" + self._handle.address

    def stop(self):
        """Stop a background router, letting requests in flight finish."""
        if self._handle is not None:
            handle, self._handle = self._handle, None
            handle.stop()

    def __enter__(self):
        return self.start_background()

    def __exit__(self, *exc):
        self.stop()
