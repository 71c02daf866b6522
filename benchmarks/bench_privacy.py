"""Privacy benchmarks: erasure, retention, consent reads, audited PII reads.

Run: python benchmarks/bench_privacy.py [--users 20000] [--events-per-user 25]

Builds an on-disk project: events for every user (through the real import pipeline), a CRM
file with PII for every user (per-profile data keys), consents; then times one erasure
(with and without the database compaction), the retention job, consent lookups and
audited PII reads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from microseg.config.models import PrivacySettings, ProjectSettings, Taxonomy
from microseg.ingest.profiles import import_profiles
from microseg.personalize.content import read_pii, read_pii_many
from microseg.privacy.consent import consent_state, record_consent
from microseg.privacy.erasure import erase_subject
from microseg.privacy.retention import run_retention
from microseg.store import Store
from microseg.workspace import Workspace

T0 = datetime(2026, 1, 1)


def build(root: Path, users: int, per_user: int) -> Workspace:
    settings = ProjectSettings(
        taxonomy=Taxonomy(allow_unknown_events=True),
        privacy=PrivacySettings(retention_days={"events": 60, "events.page_view": 14}),
    )
    ws = Workspace.ephemeral(settings)
    ws.store.close()
    ws.project.root = root
    ws.store = Store(root / ".microseg" / "microseg.duckdb")
    rng = np.random.default_rng(7)
    n = users * per_user
    uid = rng.integers(0, users, n)
    events = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "event_type": rng.choice(
                ["page_view", "add_to_cart", "purchase"], n, p=[0.8, 0.15, 0.05]
            ),
            "timestamp": [
                (T0 + timedelta(minutes=int(m))).isoformat()
                for m in rng.integers(0, 90 * 24 * 60, n)
            ],
            "user_id": [f"user-{u:07d}" for u in uid],
            "email": [f"person{u}@example.com" for u in uid],
        }
    )
    path = root / "events.csv"
    events.to_csv(path, index=False)
    t = time.perf_counter()
    r = ws.import_events(path)
    print(f"setup: imported {r.inserted:,} events in {time.perf_counter() - t:.1f}s")
    crm = pd.DataFrame(
        {
            "user_id": [f"user-{u:07d}" for u in range(users)],
            "email": [f"person{u}@example.com" for u in range(users)],
            "phone": [f"+1 415 555 {u % 10000:04d}" for u in range(users)],
            "first_name": rng.choice(["Ana", "Bob", "Carla", "Dmitri"], users),
            "last_name": rng.choice(["Smith", "Lopez", "Ng", "Okafor"], users),
            "city": rng.choice(["Denver", "Leeds", "Pune"], users),
        }
    )
    crm_path = root / "crm.csv"
    crm.to_csv(crm_path, index=False)
    t = time.perf_counter()
    import_profiles(ws.store, ws.settings, ws.keys, crm_path, id_column="user_id", source="crm")
    print(
        f"setup: CRM {users:,} profiles with PII (per-profile keys) in {time.perf_counter() - t:.1f}s"
    )
    return ws


def timed(fn: Callable[[int], object], repeat: int) -> tuple[float, float]:
    samples = []
    for i in range(repeat):
        t = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples), float(np.percentile(samples, 99))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--events-per-user", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "proj"
        ws = build(root, args.users, args.events_per_user)
        pids = [ws.profile_id(f"user-{u:07d}") for u in range(200)]
        for pid in pids:
            record_consent(ws.store, pid, "email_marketing", True, source="bench", at=T0)
        p50, p99 = timed(lambda i: consent_state(ws.store, pids[i % 200], "email_marketing"), 500)
        print(f"consent_state: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        p50, p99 = timed(
            lambda i: record_consent(ws.store, pids[i % 200], "ads", i % 2 == 0, source="bench"),
            300,
        )
        print(f"record_consent (audited, published): p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        p50, p99 = timed(
            lambda i: read_pii(ws.store, ws.keys, pids[i % 200], ["email", "first_name"]), 500
        )
        print(f"read_pii 2 fields (DEK unwrap + audit row): p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        all_pids = [
            r[0] for r in ws.store.rows("SELECT profile_id FROM pii_vault WHERE field = 'email'")
        ]
        t = time.perf_counter()
        read_pii_many(ws.store, ws.keys, all_pids, "email")
        print(
            f"read_pii_many {len(all_pids):,} emails: {time.perf_counter() - t:.2f}s (one audit row)"
        )
        events = int(ws.store.scalar("SELECT count(*) FROM events"))
        t = time.perf_counter()
        report = erase_subject(ws, "user-0000001", "bench", compact=False)
        erase_s = time.perf_counter() - t
        print(
            f"erase_subject without compaction ({events:,} events in store): {erase_s:.2f}s,"
            f" rows {sum(report.rows_deleted.values()):,} in {len(report.rows_deleted)} tables"
        )
        size = ws.store.path.stat().st_size if ws.store.path else 0
        t = time.perf_counter()
        report = erase_subject(ws, "user-0000002", "bench", compact=True)
        print(
            f"erase_subject with compaction ({size / 1e6:.0f} MB file): {time.perf_counter() - t:.2f}s"
        )
        t = time.perf_counter()
        r = run_retention(ws, T0 + timedelta(days=90))
        print(
            f"run_retention at day 90: {time.perf_counter() - t:.2f}s, deleted"
            f" {json.dumps(r.deleted)} of {events:,} events"
        )
        t = time.perf_counter()
        again = run_retention(ws, T0 + timedelta(days=90))
        print(
            f"run_retention again (idempotent): {time.perf_counter() - t:.2f}s, {again.total} rows"
        )
        ws.close()


if __name__ == "__main__":
    main()
