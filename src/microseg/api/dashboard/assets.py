"""Static assets of the dashboard, all served locally (no CDN): our CSS/JS and plotly.min.js
from the installed ``plotly`` package, gzip-compressed once and kept in memory."""

from __future__ import annotations

import gzip
import hashlib
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from microseg.errors import NotFoundError

STATIC = Path(__file__).with_name("static")
MEDIA = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


@dataclass(frozen=True)
class Asset:
    """One static file: raw and gzip bytes, media type and a content hash for ETags."""

    body: bytes
    gzipped: bytes
    media_type: str
    etag: str


_cache: dict[str, Asset] = {}
_lock = threading.Lock()


def _source(name: str) -> Path:
    if name == "plotly.min.js":
        return Path(str(resources.files("plotly") / "package_data" / "plotly.min.js"))
    path = STATIC / name
    if "/" in name or "\\" in name or name.startswith(".") or not path.is_file():
        raise NotFoundError(f"no dashboard asset {name!r}")
    return path


def asset(name: str) -> Asset:
    """The named asset (NotFoundError for anything that is not one of ours)."""
    with _lock:
        found = _cache.get(name)
        if found is None:
            path = _source(name)
            if path.suffix not in MEDIA or not path.is_file():
                raise NotFoundError(f"no dashboard asset {name!r}")
            body = path.read_bytes()
            found = Asset(
                body,
                gzip.compress(body, compresslevel=6, mtime=0),
                MEDIA[path.suffix],
                '"' + hashlib.sha256(body).hexdigest()[:20] + '"',
            )
            _cache[name] = found
        return found
