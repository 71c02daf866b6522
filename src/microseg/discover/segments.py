"""Turn a saved discovery run's cluster(s) into a segment definition (``cluster.<run>``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from microseg.config.models import check_name
from microseg.errors import ConfigError, ConflictError, NotFoundError, did_you_mean
from microseg.store import Store


def cluster_segment(
    store: Store, run: str, clusters: list[int], name: str, description: str | None = None
) -> dict[str, Any]:
    """A segment definition selecting the profiles a run put in ``clusters``.

    Refuses unknown runs and clusters (naming the known ones); the description records the
    persona names and sizes at the time of saving."""
    try:
        check_name(name, "segment name")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    runs = [str(r) for (r,) in store.rows("SELECT DISTINCT run FROM cluster_membership")]
    if run not in runs:
        hint = did_you_mean(run, runs)
        raise NotFoundError(
            f"no saved cluster run {run!r}{hint}; save one with `microseg discover --save-run NAME`"
            if runs
            else f"no saved cluster run {run!r}: run `microseg discover --save-run NAME` first"
        )
    found = {
        int(c): (p, int(n))
        for c, p, n in store.rows(
            "SELECT cluster, any_value(persona), count(*) FROM cluster_membership"
            " WHERE run = ? GROUP BY cluster ORDER BY cluster",
            [run],
        )
    }
    missing = [c for c in clusters if c not in found]
    if not clusters or missing:
        raise NotFoundError(
            f"run {run!r} has clusters {sorted(found)}; not {missing or 'an empty list'}"
        )
    picked = sorted(set(clusters))
    text = description or "; ".join(
        f"cluster {c} ({found[c][0] or 'unnamed'}, {found[c][1]:,} profiles when saved)"
        for c in picked
    )
    rule: dict[str, Any] = (
        {"trait": f"cluster.{run}", "eq": picked[0]}
        if len(picked) == 1
        else {"trait": f"cluster.{run}", "in": picked}
    )
    return {"name": name, "description": f"from discovery run {run!r}: {text}", "rule": rule}


def write_segment(definition: dict[str, Any], folder: Path, *, force: bool = False) -> Path:
    """Write ``<folder>/<name>.yaml``; refuses to overwrite unless ``force``."""
    path = folder / f"{definition['name']}.yaml"
    if path.exists() and not force:
        raise ConflictError(f"{path} exists; pass --force to replace it")
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(definition, sort_keys=False))
    return path
