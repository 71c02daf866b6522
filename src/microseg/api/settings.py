"""Settings of the HTTP API (pydantic-settings: MICROSEG_API_* environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# a size as DuckDB reads it (groups: number, unit; api.memory.size_bytes converts it)
SIZE_PATTERN = r"^(\d+(?:\.\d+)?)\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$"

# Values that must never guard a real deployment.
WEAK_KEYS = frozenset(
    {
        "",
        "dev",
        "test",
        "admin",
        "secret",
        "password",
        "changeme",
        "change-me",
        "default",
        "microseg",
        "key",
        "apikey",
        "api-key",
        "token",
        "1234",
        "12345678",
    }
)
MIN_BOOTSTRAP_KEY_LENGTH = 24


class ApiSettings(BaseSettings):
    """Everything the HTTP API can be tuned with; injectable in tests."""

    model_config = SettingsConfigDict(env_prefix="MICROSEG_API_", extra="forbid")

    dev: bool = Field(
        default=False, description="dev mode: allows the weak default admin key 'dev'"
    )
    admin_key: SecretStr | None = Field(
        default=None,
        description="bootstrap admin key from the environment (never stored); refused when weak"
        " outside dev mode",
    )
    docs_public: bool = Field(
        default=True, description="serve /docs and /openapi.json without a key"
    )
    rate_limit_per_second: float = Field(default=1000.0, gt=0, description="token refill per key")
    rate_limit_burst: float = Field(default=2000.0, ge=1, description="bucket size per key")
    max_batch_events: int = Field(default=5000, ge=1, le=100_000)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_event_bytes: int = Field(default=64 * 1024, ge=256)
    commit_wait_seconds: float = Field(
        default=30.0, ge=0, description="how long ?wait=true waits for the store commit"
    )
    spool_dir: Path | None = Field(default=None, description="default: <project>/.microseg/spool")
    fsync: bool = Field(default=True, description="fsync spool writes before acknowledging")
    max_segment_events: int = Field(default=200_000, ge=1, description="rotate the spool segment")
    import_retries: int = Field(default=3, ge=1, description="attempts before a segment is parked")
    realtime: bool = Field(default=True, description="`microseg serve`: evaluate segments live")
    sweep_seconds: float = Field(default=10.0, gt=0, description="real-time sweep interval")
    ack_eval_max_events: int = Field(
        default=100,
        ge=0,
        description="requests of up to this many events are evaluated for real-time segments"
        " as they are acknowledged (0: never); larger (bulk) batches when their import commits",
    )
    ack_eval_max_pending: int = Field(
        default=20_000,
        ge=0,
        description="overload guard: no evaluation at acknowledgement while this many"
        " acknowledged events await their import",
    )
    store_memory_limit: str | None = Field(
        default=None,
        pattern=SIZE_PATTERN,
        description="DuckDB memory cap for the server's store, e.g. 2GB (default: a quarter of"
        " RAM, clamped to 512 MiB-2 GiB: api.memory.default_store_memory_limit)",
    )
    retention_seconds: float = Field(
        default=3600.0, gt=0, description="retention job interval (when retention_days is set)"
    )
    traits_table: str = "traits"
    membership_table: str | None = Field(
        default=None, description="default: 'memberships', else 'segment_membership' if present"
    )
    store_cache_budget: str = Field(
        default="32MiB",
        pattern=SIZE_PATTERN,
        description="`microseg serve`: DuckDB's cache of table blocks (already on disk, and in"
        " the OS page cache) is cut to this size every store_cache_seconds; the store's memory"
        " cap still bounds what queries may use in between (api.cache_budget)",
    )
    store_cache_seconds: float = Field(
        default=10.0, ge=0, description="how often the cache budget is enforced (0: never)"
    )
    malloc_trim_seconds: float = Field(
        default=30.0,
        ge=0,
        description="`microseg serve`: give glibc's free heap pages back to the OS every this many"
        " seconds (malloc_trim; 0: never; no-op without glibc)",
    )
    malloc_arena_max: int = Field(
        default=0,
        ge=0,
        description="`microseg serve`: glibc M_ARENA_MAX set at start (0: glibc's default,"
        " 8 per core)",
    )
    malloc_mmap_threshold: int = Field(
        default=256 * 1024,
        ge=0,
        description="`microseg serve`: glibc M_MMAP_THRESHOLD in bytes, set at start: blocks at"
        " least this large are mapped on their own and returned to the OS when freed (0: glibc's"
        " sliding default, which moves large transient buffers into the heap)",
    )
    gil_switch_ms: float = Field(
        default=1.0,
        ge=0,
        le=100,
        description="Python's thread switch interval (sys.setswitchinterval), set process-wide"
        " when the collector's importer starts: how long an HTTP thread may wait for the GIL"
        " while the importer runs Python code (Python's default: 5 ms; 0: leave it)",
    )
    store_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="DuckDB worker threads of the server's store (default: one fewer than the"
        " machine's cores, at least 1, so the importer's queries leave a core to the request"
        " path)",
    )
    import_linger_ms: float = Field(
        default=500.0,
        ge=0,
        le=60_000,
        description="with real-time evaluation: let the spool segment grow for up to this long"
        " after the previous import began when every event in it was already evaluated at"
        " acknowledgement, so imports are fewer and larger (each has a fixed cost that would"
        " otherwise take CPU from the request path); a request waiting for its commit, a full"
        " segment or an event only the import can evaluate ends the wait (0: import as soon as"
        " the previous import ends)",
    )
    import_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="how much nicer (Linux scheduling priority) the thread running the"
        " collector's spool imports is than the request path, so a busy machine serves"
        " acknowledgements and decisions first; the real-time membership writes run there"
        " too, while the commit's evaluation (it holds the evaluation lock) stays at normal"
        " priority (0: same priority)",
    )
    gc_freeze_at_start: bool = Field(
        default=True,
        description="when the importer starts, move every object already allocated (modules,"
        " the loaded serving state) out of reach of Python's cyclic GC (gc.freeze), so its"
        " stop-the-world full collections scan only what was allocated since",
    )
    gc_refreeze_seconds: float = Field(
        default=60.0,
        ge=0,
        description="with gc_freeze_at_start: freeze the long-lived heap again this often, so"
        " full collections under load stay short (0: only at start; see api.gcpolicy)",
    )
    gc_full_seconds: float = Field(
        default=600.0,
        ge=0,
        description="with gc_refreeze_seconds: unfreeze and collect everything this often, so"
        " reference cycles that died while frozen are reclaimed (0: never)",
    )
    gc_young_threshold: int = Field(
        default=10_000,
        ge=0,
        description="with gc_freeze_at_start: Python's youngest-generation threshold (net new"
        " container objects between young collections; 0: Python's default, 700). Objects"
        " a request holds for a moment (events awaiting their import) mostly die before a"
        " collection sees them: a 4-minute soak ran 83 young collections (315 ms) instead of"
        " ~1,330 young and ~120 middle ones (1.2 s)",
    )
    gc_auto_full: bool = Field(
        default=False,
        description="with gc_freeze_at_start: let Python run its own middle and full"
        " collections (stop-the-world passes over everything unfrozen); off by default (while"
        " gc_refreeze_seconds and gc_full_seconds are both set): only young collections run,"
        " survivors are frozen every gc_refreeze_seconds and the periodic pass of"
        " gc_full_seconds reclaims cycles that died meanwhile",
    )
