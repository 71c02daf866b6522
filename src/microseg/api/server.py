"""Run the API with uvicorn (used by ``microseg serve`` and ``python -m microseg.api``)."""

from __future__ import annotations

import importlib.util
import logging
import os
import ssl
from pathlib import Path

import uvicorn

from microseg.api import memory
from microseg.api.app import create_app
from microseg.api.realtime import bridge_for
from microseg.api.settings import ApiSettings
from microseg.errors import ConfigError
from microseg.workspace import Workspace


def uvicorn_options() -> dict[str, str]:
    """Fastest installed event loop and HTTP parser (uvloop / httptools when present)."""
    return {
        "loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        "http": "httptools" if importlib.util.find_spec("httptools") else "h11",
    }


def tls_options(cert: str | Path | None, key: str | Path | None) -> dict[str, str]:
    """uvicorn's TLS options for a PEM certificate (chain) and its private key.

    Both or neither; the files must exist and form a valid pair (checked here so a mistake is
    one clear line, not a traceback from the event loop)."""
    if cert is None and key is None:
        return {}
    if cert is None or key is None:
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    for what, path in (("certificate", cert), ("key", key)):
        if not Path(path).is_file():
            raise ConfigError(f"TLS {what} file not found: {path}")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"TLS certificate {cert} / key {key} unusable: {exc}") from None
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}


def default_store_threads() -> int:
    """DuckDB threads of the server's store: every core but one (at least one), so the
    importer's queries cannot take the cores the request and evaluation threads need."""
    return max(1, (os.cpu_count() or 1) - 1)


def serve(
    project: str | Path = ".",
    *,
    host: str = "127.0.0.1",
    port: int = 8321,
    workers: int = 1,
    settings: ApiSettings | None = None,
    log_level: str = "info",
    access_log: bool = False,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
) -> None:
    """Serve the project until interrupted; HTTPS only when ``tls_cert`` + ``tls_key`` are given.

    One worker only: the embedded DuckDB store admits a single writing process, and the
    serving state lives in that process's memory. Memory of a long-running server: the store's
    DuckDB cap defaults to :func:`memory.default_store_memory_limit` and its cache of table
    blocks is held to ``settings.store_cache_budget`` (:mod:`microseg.api.cache_budget`); glibc
    maps large blocks on their own (``settings.malloc_mmap_threshold``) and its free heap pages
    are returned every ``settings.malloc_trim_seconds`` (see :mod:`microseg.api.memory`)."""
    if workers != 1:
        raise ConfigError(
            f"--workers {workers}: the embedded DuckDB store allows one writing process; "
            "run one worker per project (scale reads with more projects/replicas)"
        )
    tls = tls_options(tls_cert, tls_key)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = settings or ApiSettings()
    memory.set_arena_max(settings.malloc_arena_max)  # before the store's and server's threads
    memory.set_mmap_threshold(settings.malloc_mmap_threshold)
    memory_limit = settings.store_memory_limit or memory.default_store_memory_limit()
    threads = settings.store_threads or default_store_threads()
    workspace = Workspace.open(project, actor="api", memory_limit=memory_limit, threads=threads)
    try:
        bridge = bridge_for(workspace, settings.realtime)
        app = create_app(workspace, settings, realtime=bridge, close_workspace=True, freeze_gc=True)
        if os.environ.get("MICROSEG_DIAG"):  # memory sampler for soaks (bench_soak.py)
            from microseg.bench.soak_diag import attach

            attach(app, bridge, workspace.store)
    except BaseException:
        workspace.close()
        raise
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        **uvicorn_options(),  # type: ignore[arg-type]
        **tls,  # type: ignore[arg-type]
    )
    trimmer = memory.start_trimmer(settings.malloc_trim_seconds)
    try:
        # uvicorn re-raises SIGTERM/SIGINT after a graceful shutdown; the lifespan closes the
        # store.
        uvicorn.Server(config).run()
    finally:
        memory.stop_trimmer(trimmer)
