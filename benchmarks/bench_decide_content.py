"""Benchmark content decisions on loopback: GET /v1/decide/{ref}?placement=… with rendered blocks.

    python benchmarks/bench_decide_content.py [--profiles 100000] [--seconds 10]

Seeds a temporary project with ``--profiles`` profiles (a page view each), CRM attributes with an
encrypted first name and a city, traits and segment memberships, recent add-to-cart events and
marketing consents for a third of them, content blocks and a ``decisions/home.yaml`` placement
with four rules (segment + trait, did/did-not within 24 h + consent + cap, sticky 10 % control,
fallback). Then starts the real server (`python -m microseg.api`, uvicorn + uvloop/httptools
when installed) and measures with `wrk` (else a keep-alive asyncio load generator in a separate
process, as in bench_api.py):

1. the plain decision path (no placement) for comparison;
2. one placement per request (rendered block + why);
3. two placements per request.

Target (issue #5): >= 3,000 req/s and p99 <= 15 ms with rendered templates. Server and load
generator share the machine's cores; on a shared 2-core box the figures are pessimistic.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api import free_port, start

from microseg.api.keys import create_key
from microseg.bench.load import decide_load
from microseg.workspace import Workspace

CONTENT = """\
blocks:
  generic_hero:
    placeholders: {first_name: there}
    variants:
      - id: web
        channel: web
        html: "<h1>Welcome back, {{ first_name }}</h1><p>New in {{ city or 'your area' }}</p>"
      - {id: email, channel: email, subject: "News for {{ first_name }}", text: "Hello"}
  cart_hero:
    placeholders: {first_name: there}
    fallback: {html: "Your cart is waiting"}
    variants:
      - id: web
        channel: web
        html: |
          <p>{{ first_name }}, {{ trigger.product_id }} ({{ trigger.category }}) is still in
          your cart{% if ltv > 500 %} &mdash; free shipping for you{% endif %}.</p>
  vip_hero:
    variants:
      - id: web
        channel: web
        html: "<h1>{{ first_name }}, your {{ tier }} perks</h1>"
      - id: web_gold
        channel: web
        device: desktop
        html: "<h1>{{ first_name|upper }} &middot; {{ tier }} &middot; {{ '%.0f'|format(ltv) }}</h1>"
  promo:
    variants:
      - {id: web, channel: web, html: "<p>{{ first_name }}: 10% off in {{ city }}</p>"}
"""

DECISIONS = """\
placements:
  home_hero:
    fallback: generic_hero
    rules:
      - name: cart
        priority: 20
        when:
          did: [{event: add_to_cart, within: 24h, where: {category: [shoes, bags, hats]}}]
          did_not: [{event: purchase, within: 24h}]
        serve: cart_hero
        consent: marketing
        cap: {max: 3, per: 1d}
      - name: vip
        priority: 10
        when:
          in: [seg_1]
          not_in: [seg_2]
          traits: [{trait: ltv, op: ">=", value: 500}]
        serve: {block: vip_hero, variant: web_gold}
      - name: promo_all
        priority: 1
        when:
          traits: [{trait: tier, op: in, value: [tier_0, tier_1, tier_2]}]
        serve: promo
        control: 10
  side:
    fallback: promo
    rules:
      - name: vip_side
        when: {in: [seg_3]}
        serve: vip_hero
"""

CATEGORIES = ("shoes", "bags", "hats", "books")


def iso(minutes_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


def seed(root: Path, profiles: int) -> tuple[dict[str, str], list[str]]:
    """The project; returns API keys and the refs of every profile."""
    t0 = time.perf_counter()
    Workspace.init(root, "bench-decide").close()
    (root / "content" / "site.yaml").write_text(CONTENT)
    (root / "decisions").mkdir(exist_ok=True)
    (root / "decisions" / "home.yaml").write_text(DECISIONS)
    rnd = random.Random(7)
    with Workspace.open(root) as ws:
        events = root / "seed.jsonl"
        with events.open("wb") as fh:
            for i in range(profiles):
                fh.write(
                    orjson.dumps(
                        {
                            "event_id": f"pv{i}",
                            "event_type": "page_view",
                            "timestamp": iso(600),
                            "user_id": f"u{i}",
                            "url": "/",
                        }
                    )
                    + b"\n"
                )
                if i % 3 == 0:
                    fh.write(
                        orjson.dumps(
                            {
                                "event_id": f"c{i}",
                                "event_type": "add_to_cart",
                                "timestamp": iso(rnd.uniform(5, 60 * 30)),
                                "user_id": f"u{i}",
                                "product_id": f"sku-{rnd.randrange(500)}",
                                "category": rnd.choice(CATEGORIES),
                                "price": 20.0,
                                "quantity": 1,
                            }
                        )
                        + b"\n"
                    )
        ws.import_events(events)
        events.unlink()
        crm = root / "crm.csv"
        with crm.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["user_id", "first_name", "city"])
            for i in range(profiles):
                writer.writerow([f"u{i}", f"Name{i}", rnd.choice(["Lisbon", "Porto", "Faro"])])
        ws.import_profiles(crm, id_column="user_id")
        crm.unlink()
        ws.store.execute(
            "CREATE OR REPLACE TABLE traits AS SELECT profile_id, random() * 1000 AS ltv,"
            " 'tier_' || (hash(profile_id) % 4) AS tier FROM profiles"
        )
        ws.store.execute(
            "CREATE TABLE IF NOT EXISTS memberships (segment VARCHAR, profile_id VARCHAR,"
            " entered_at TIMESTAMP)"
        )
        ws.store.execute(
            "INSERT INTO memberships SELECT 'seg_' || (hash(profile_id) % 7), profile_id,"
            " now() FROM profiles"
        )
        ws.store.execute(
            "INSERT INTO consents SELECT profile_id, 'marketing', true, 'bench',"
            " now()::TIMESTAMP - INTERVAL 2 DAY, NULL FROM profiles WHERE hash(profile_id) % 2 = 0"
        )
        keys = {
            role: create_key(ws.store, ws.keys, role, rate_per_second=1e9)[1]
            for role in ("decision-reader", "collector", "admin")
        }
    print(f"seeded {profiles:,} profiles in {time.perf_counter() - t0:.0f}s", flush=True)
    return keys, [f"user_id:u{i}" for i in range(profiles)]


WRK_SCRIPT = """
local refs = {}
for line in io.lines("%s") do refs[#refs + 1] = line end
wrk.headers["X-API-Key"] = "%s"
request = function()
  return wrk.format("GET", "/v1/decide/" .. refs[math.random(#refs)] .. "%s")
end
done = function(summary, latency, requests)
  io.write(string.format("JSON {\\"requests\\": %%d, \\"seconds\\": %%f, \\"p50_ms\\": %%f, \\"p90_ms\\": %%f, \\"p99_ms\\": %%f, \\"non2xx\\": %%d, \\"errors\\": %%d}\\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(90) / 1e3, latency:percentile(99) / 1e3,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def run_wrk(
    port: int, key: str, refs: list[str], query: str, seconds: int, conns: int, tmp: Path
) -> dict[str, Any]:
    import json
    import re

    (tmp / "refs.txt").write_text("\n".join(refs))
    (tmp / "bench.lua").write_text(WRK_SCRIPT % (tmp / "refs.txt", key, query))
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{conns}",
            f"-d{seconds}s",
            "-s",
            str(tmp / "bench.lua"),
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"^JSON (.*)$", out, re.M)
    assert match, out
    res: dict[str, Any] = json.loads(match.group(1))
    res["rps"] = res["requests"] / res["seconds"]
    res["tool"] = f"wrk -t1 -c{conns}"
    return res


def check_response(port: int, key: str, ref: str) -> None:
    """One decision, printed, so the figures are known to be for real rendered content."""
    r = httpx.get(
        f"http://127.0.0.1:{port}/v1/decide/{ref}?placement=home_hero&placement=side",
        headers={"X-API-Key": key},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    for dec in body["decisions"]:
        assert dec["rendered"], dec
        print(f"  sample {dec['placement']}: rule={dec['rule']} rendered={dec['rendered']}")


def _rss_kb(pid: int | str = "self") -> int:
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return 0
    line = next(x for x in status.read_text().splitlines() if x.startswith("VmRSS"))
    return int(line.split()[1])


def engine_cost(root: Path, refs: list[str], n: int = 20_000) -> None:
    """CPU cost of the engine alone (no HTTP): decisions of random profiles in-process."""
    from microseg.api.serving import ServingState
    from microseg.personalize.decisions import DecisionRequest, engine_for_workspace

    with Workspace.open(root) as ws:
        state = ServingState.from_store(ws.store, ws.keys)
        rss0 = _rss_kb()
        t0 = time.perf_counter()
        engine = engine_for_workspace(ws, state)
        assert engine is not None
        loaded = time.perf_counter() - t0
        print(f"engine memory (RSS growth while loading it): {(_rss_kb() - rss0) / 1024:.0f} MB")
        rnd = random.Random(1)
        profiles = [state.get(refs[rnd.randrange(len(refs))]) for _ in range(n)]
        for label, names in (
            ("1 placement", ["home_hero"]),
            ("2 placements", ["home_hero", "side"]),
        ):
            request = DecisionRequest(names)
            t0 = time.perf_counter()
            for prof in profiles:
                body = prof.as_dict()
                body["decisions"] = engine.decide(prof, request)
                orjson.dumps(body, default=str)
            per = (time.perf_counter() - t0) / n * 1e6
            print(f"engine alone, {label} + JSON: {per:.0f} us per request (in-process, 1 thread)")
        print(
            f"engine load ({len(refs):,} profiles: rules, contexts incl. PII decrypt, events, consents): {loaded:.1f}s;"
            f" stats {engine.stats()}"
        )
        engine.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profiles", type=int, default=100_000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", default="8,32", help="comma-separated; one run each")
    ap.add_argument("--no-wrk", action="store_true", help="use the asyncio load generator")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="microseg-bench-decide-"))
    root = tmp / "proj"
    keys, refs = seed(root, args.profiles)
    port = free_port()
    t0 = time.perf_counter()
    proc = start(root, port)
    print(f"server ready in {time.perf_counter() - t0:.1f}s", flush=True)
    key = keys["decision-reader"]
    use_wrk = shutil.which("wrk") is not None and not args.no_wrk
    try:
        check_response(port, key, refs[0])
        check_response(port, key, refs[3])
        for ref in refs[:300]:  # warm up
            httpx.get(
                f"http://127.0.0.1:{port}/v1/decide/{ref}?placement=home_hero",
                headers={"X-API-Key": key},
            )
        for conns in (int(c) for c in args.connections.split(",")):
            for label, query in (
                ("plain (no placement)", ""),
                ("1 placement, rendered", "?placement=home_hero"),
                ("2 placements, rendered", "?placement=home_hero&placement=side"),
            ):
                if use_wrk:
                    res = run_wrk(port, key, refs, query, args.seconds, conns, tmp)
                else:
                    res = decide_load(
                        port, key, [r + query for r in refs], args.seconds, conns, tool="asyncio"
                    )
                verdict = ""
                if query:
                    ok = res["rps"] >= 3000 and res["p99_ms"] <= 15
                    verdict = f"  target 3,000 req/s & p99 <= 15 ms: {'MET' if ok else 'NOT met'}"
                print(
                    f"{label}: {res['rps']:,.0f} req/s  p50 {res['p50_ms']:.2f} ms"
                    f"  p90 {res['p90_ms']:.2f} ms  p99 {res['p99_ms']:.2f} ms"
                    f"  non-2xx {res['non2xx']}  errors {res['errors']}  ({res['tool']}){verdict}",
                    flush=True,
                )
        if _rss_kb(proc.pid):
            print(f"server memory after the runs: {_rss_kb(proc.pid) / 1024:.0f} MB RSS (all)")
        stats = httpx.get(
            f"http://127.0.0.1:{port}/v1/admin/stats", headers={"X-API-Key": keys["admin"]}
        )
        if stats.status_code == 200:
            print("server stats:", orjson.dumps(stats.json().get("serving", {})).decode()[:300])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    try:
        engine_cost(root, refs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"machine: {os.cpu_count()} CPUs shared by server, load generator (and other users)")


if __name__ == "__main__":
    main()
