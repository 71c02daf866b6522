"""Journeys of a project folder: an engine wired to the workspace (content, segments, channels).

``project_engine(ws)`` validates ``journeys/*.yaml``, stores the project's content blocks
(``content/*.yaml``) in the store's versioned repository, reads the project's segments and
builds the delivery channels: the JSON Lines outbox (``file``) and ``email`` — real SMTP
when ``smtp="host:port"`` is given, else the outbox as well (nothing leaves the machine).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from microseg.activate.channels import Channel, EmailChannel
from microseg.activate.dispatch import default_channels
from microseg.activate.journey_validate import load_project_journeys
from microseg.activate.journeys import JourneyEngine
from microseg.errors import ConfigError, NotFoundError, did_you_mean
from microseg.personalize.content import ContentRepo


def install_examples(root: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Copy the seed journeys (``journeys/*.yaml``) and their blocks (``content/``) to a project.

    Existing files are kept unless ``overwrite``; returns the files written.
    """
    base = resources.files("microseg.config") / "templates" / "journeys"
    written: list[Path] = []
    for source, folder in ((base, "journeys"), (base / "content", "content")):
        target = Path(root) / folder
        target.mkdir(parents=True, exist_ok=True)
        for item in sorted(source.iterdir(), key=lambda i: i.name):
            dest = target / item.name
            if item.is_file() and item.name.endswith(".yaml") and (overwrite or not dest.exists()):
                dest.write_text(item.read_text(encoding="utf-8"), encoding="utf-8")
                written.append(dest)
    return written


def parse_smtp(value: str) -> tuple[str, int]:
    """``host:port`` (port default 25)."""
    host, _, port = value.rpartition(":") if ":" in value else (value, "", "25")
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"--smtp must look like host:port, got '{value}'") from None
    if not host or not 0 < number < 65536:
        raise ConfigError(f"--smtp must look like host:port, got '{value}'")
    return host, number


def project_channels(
    root: Any, *, smtp: str | None = None, sender: str = "microseg@localhost"
) -> dict[str, Channel]:
    """``file`` (outbox) and ``email`` (SMTP if configured, else the outbox)."""
    channels = default_channels(root)
    if smtp:
        host, port = parse_smtp(smtp)
        channels["email"] = EmailChannel(host, port, sender=sender)
    else:
        channels["email"] = channels["file"]
    return channels


def project_engine(
    ws: Any,
    *,
    names: list[str] | None = None,
    channels: Mapping[str, Channel] | None = None,
    smtp: str | None = None,
    sender: str = "microseg@localhost",
    clock: Any = None,
) -> JourneyEngine:
    """An engine for the workspace's journeys (all, or ``names``)."""
    from microseg.segments.parse import load_segments, project_segment_files

    root = ws.project.root
    journeys = load_project_journeys(ws.project)
    if not journeys:
        raise NotFoundError(f"no journeys in {root / 'journeys'} (add journeys/*.yaml)")
    if names:
        for name in names:
            if name not in journeys:
                raise NotFoundError(f"no journey '{name}'{did_you_mean(name, journeys)}")
        journeys = {n: journeys[n] for n in names}
    repo = ContentRepo(ws.store)
    repo.sync_project(root, actor=getattr(ws, "actor", "journeys"))
    segments, _ = load_segments(project_segment_files(root))
    kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
    return JourneyEngine(
        ws.store,
        journeys,
        channels=channels or project_channels(root, smtp=smtp, sender=sender),
        keys=ws.keys,
        settings=ws.settings,
        blocks=repo.get,
        segments=segments,
        progress=ws.progress,
        **kwargs,
    )


def parse_time(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 option value as naive UTC (None stays None)."""
    if value is None:
        return None
    from microseg.segments.ast import to_naive_utc

    try:
        return to_naive_utc(datetime.fromisoformat(value))
    except ValueError:
        raise ConfigError(f"{option} must be an ISO 8601 time, got '{value}'") from None
