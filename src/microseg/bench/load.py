"""Loopback load for the decision endpoint: wrk when installed, else an asyncio generator.

The generator runs in its own process (so the server keeps its cores to itself as far as two
cores allow) and speaks raw HTTP/1.1 keep-alive, which costs far less per request than an
HTTP client library — the figure measures the server, not the client.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import random
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

WRK_SCRIPT = """
local refs = {}
for line in io.lines("%s") do refs[#refs + 1] = line end
wrk.headers["X-API-Key"] = "%s"
request = function()
  return wrk.format("GET", "/v1/decide/" .. refs[math.random(#refs)])
end
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"requests\\": %%d, \\"seconds\\": %%f, \\"p50_ms\\": %%f,"
    .. " \\"p90_ms\\": %%f, \\"p99_ms\\": %%f, \\"non2xx\\": %%d, \\"errors\\": %%d}\\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(90) / 1e3, latency:percentile(99) / 1e3, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""
_LENGTH = re.compile(rb"(?i)content-length: (\d+)")


def decide_load(
    port: int,
    key: str,
    refs: list[str],
    seconds: float,
    connections: int,
    *,
    tool: str = "auto",
) -> dict[str, Any]:
    """Requests/s and latency percentiles of ``GET /v1/decide/{ref}`` for random refs.

    ``tool``: ``wrk``, ``asyncio`` or ``auto`` (wrk when installed)."""
    if tool == "wrk" or (tool == "auto" and shutil.which("wrk")):
        return _wrk(port, key, refs, seconds, connections)
    queue: Any = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(
        target=_asyncio_load, args=(port, key, refs, seconds, connections, queue)
    )
    proc.start()
    result: dict[str, Any] = queue.get()
    proc.join()
    result["rps"] = result["requests"] / result["seconds"] if result["seconds"] else 0.0
    result["tool"] = f"asyncio raw HTTP/1.1, {connections} connections"
    return result


def _wrk(port: int, key: str, refs: list[str], seconds: float, connections: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "refs.txt").write_text("\n".join(refs))
        (folder / "bench.lua").write_text(WRK_SCRIPT % (folder / "refs.txt", key))
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "-s",
                str(folder / "bench.lua"),
                f"http://127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    match = re.search(r"^JSON (.*)$", out, re.M)
    if match is None:
        raise RuntimeError(f"wrk printed no summary: {out[-500:]}")
    result: dict[str, Any] = json.loads(match.group(1))
    result["rps"] = result["requests"] / result["seconds"]
    result["tool"] = f"wrk -t1 -c{connections}"
    return result


async def _worker(
    port: int, key: str, refs: list[str], until: float, lat: list[float], bad: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    rnd = random.Random()
    while time.perf_counter() < until:
        ref = refs[rnd.randrange(len(refs))]
        began = time.perf_counter()
        writer.write(
            f"GET /v1/decide/{ref} HTTP/1.1\r\nHost: bench\r\nX-API-Key: {key}\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        match = _LENGTH.search(head)
        await reader.readexactly(int(match.group(1)) if match else 0)
        lat.append(time.perf_counter() - began)
        if not head.startswith(b"HTTP/1.1 200"):
            bad.append(1)
    writer.close()


def _asyncio_load(
    port: int, key: str, refs: list[str], seconds: float, connections: int, queue: Any
) -> None:
    lat: list[float] = []
    bad: list[int] = []
    until = time.perf_counter() + seconds

    async def main() -> None:
        await asyncio.gather(
            *(_worker(port, key, refs, until, lat, bad) for _ in range(connections))
        )

    asyncio.run(main())
    lat.sort()
    n = len(lat)
    queue.put(
        {
            "requests": n,
            "seconds": seconds,
            "p50_ms": lat[n // 2] * 1e3 if n else float("nan"),
            "p90_ms": lat[min(n - 1, int(n * 0.90))] * 1e3 if n else float("nan"),
            "p99_ms": lat[min(n - 1, int(n * 0.99))] * 1e3 if n else float("nan"),
            "non2xx": len(bad),
            "errors": 0,
        }
    )
