"""Time every dashboard JSON endpoint on a project (e.g. the demo: Online Retail + REES46).

microseg demo --folder /tmp/demo --data ../shared/data
python benchmarks/bench_dashboard.py /tmp/demo
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from fastapi.testclient import TestClient

from microseg.api import ApiSettings, create_app
from microseg.api.keys import create_key
from microseg.workspace import Workspace


def main(project: Path) -> None:
    ws = Workspace.open(project, actor="bench")
    key = create_key(ws.store, ws.keys, "analyst", name="bench")[1]
    headers = {"Authorization": f"Bearer {key}"}
    seg = ws.store.scalar(
        "SELECT segment FROM memberships GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    )
    ref = ws.store.scalar("SELECT profile_id FROM memberships WHERE segment = ? LIMIT 1", [seg])
    print("counts", ws.counts(), "top segment", seg)
    paths = [
        "/v1/dashboard/overview",
        "/v1/dashboard/segments?freq=D",
        f"/v1/dashboard/segments/{seg}",
        f"/v1/dashboard/profiles?q={ref}",
        f"/v1/dashboard/profiles/{ref}",
        f"/v1/dashboard/profiles/{ref}/explain/{seg}",
        "/v1/dashboard/experiments",
        "/v1/dashboard/kpis?freq=W",
        f"/v1/dashboard/kpis?freq=W&segment={seg}",
        "/v1/dashboard/attribution?channel=source",
        "/dashboard/static/plotly.min.js",
    ]
    with TestClient(create_app(ws, ApiSettings(dev=True))) as client:
        for path in paths:
            client.get(path, headers=headers)  # warm
            began = time.perf_counter()
            response = client.get(path, headers=headers)
            ms = (time.perf_counter() - began) * 1e3
            print(f"{response.status_code} {ms:8.1f} ms {len(response.content):>9,} B  {path}")
    ws.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
