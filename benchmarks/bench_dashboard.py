"""Time every dashboard JSON endpoint on the demo project (Online Retail + REES46)."""
import sys, time
sys.path.insert(0, "tests/api")
from fastapi.testclient import TestClient
from microseg.workspace import Workspace
from microseg.api.keys import create_key
from dashboard_support import dashboard_app

ws = Workspace.open(sys.argv[1], actor="bench")
key = create_key(ws.store, ws.keys, "analyst", name="bench")[1]
h = {"Authorization": f"Bearer {key}"}
seg = ws.store.scalar("SELECT segment FROM memberships GROUP BY 1 ORDER BY count(*) DESC LIMIT 1")
ref = ws.store.scalar("SELECT profile_id FROM memberships WHERE segment = ? LIMIT 1", [seg])
exp = ws.store.scalar("SELECT experiment_key FROM experiments LIMIT 1")
print("counts", ws.counts(), "top segment", seg)
paths = ["/v1/dashboard/overview", "/v1/dashboard/segments?freq=D", f"/v1/dashboard/segments/{seg}",
         f"/v1/dashboard/profiles?q={ref}", f"/v1/dashboard/profiles/{ref}",
         f"/v1/dashboard/profiles/{ref}/explain/{seg}", "/v1/dashboard/experiments",
         "/v1/dashboard/kpis?freq=W", f"/v1/dashboard/kpis?freq=W&segment={seg}",
         "/v1/dashboard/attribution?channel=source", "/dashboard/static/plotly.min.js"]
if exp:
    paths.append(f"/v1/dashboard/experiments/{exp}")
with TestClient(dashboard_app(ws)) as c:
    for p in paths:
        times = []
        for _ in range(3):
            t = time.perf_counter(); r = c.get(p, headers=h); times.append(time.perf_counter() - t)
        print(f"{min(times)*1000:8.0f} ms  {r.status_code}  {len(r.content):>9,} B  {p}")
ws.close()
