"""Set-based merge planning for the resolver: components in SciPy, the rest in DuckDB.

Input is the temp table ``_ms_links(ord, a, b, sa, sb, score, detail)``: ordered links between
profiles ``a`` and ``b`` (``sa``/``sb`` are what logs name: id keys or profile ids; ``detail``
is an optional JSON object). Output is the temp table ``_ms_plan(merge_id, loser, winner,
rule, score, details)`` plus the refused links.

Connected components come from SciPy on integer codes. A component is *safe* when merging
all of it can break no guard in any order (at most one profile holds user ids, every id type
within its limit or held by one profile, no unmerge block inside); safe components merge
wholesale in SQL. Only the unsafe ones are replayed link by link (oldest / best first)
through the constrained union-find ``Guard`` in Python.
"""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from microseg.store import Store

Refusal = tuple[str, str, str, str, str | None]


class Guard:
    """Constrained union-find over profile ids: counts ids per type and blocked partners."""

    def __init__(
        self,
        counts: dict[str, dict[str, int]],
        blocks: dict[str, set[str]],
        limits: dict[str, int],
    ) -> None:
        self.parent: dict[str, str] = {}
        self.counts = counts
        self.blocked = blocks
        self.limits = limits

    def find(self, p: str) -> str:
        parent = self.parent
        while parent.get(p, p) != p:
            grand = parent.get(parent[p], parent[p])
            parent[p] = grand
            p = grand
        return p

    def refusal(self, ra: str, rb: str) -> str | None:
        """Why joining the groups rooted at ra and rb is refused (None when allowed)."""
        ca, cb = self.counts.get(ra, {}), self.counts.get(rb, {})
        if ca.get("user_id", 0) and cb.get("user_id", 0):
            return "known_user_conflict"
        for id_type, limit in self.limits.items():
            x, y = ca.get(id_type, 0), cb.get(id_type, 0)
            if x and y and x + y > limit:
                return f"id_limit:{id_type}"
        if any(self.find(p) == rb for p in self.blocked.get(ra, ())):
            return "unmerged_pair"
        return None

    def union(self, ra: str, rb: str) -> None:
        self.parent[rb] = ra
        ca = self.counts.setdefault(ra, {})
        for id_type, n in self.counts.pop(rb, {}).items():
            ca[id_type] = ca.get(id_type, 0) + n
        self.blocked.setdefault(ra, set()).update(self.blocked.pop(rb, set()))


def guard_replay(
    links: list[tuple[str, str]],
    counts: dict[str, dict[str, int]],
    blocks: dict[str, set[str]],
    limits: dict[str, int],
) -> tuple[dict[str, str], list[bool], list[tuple[int, str]]]:
    """Replay (a, b) links in order: group root of each profile, accepted flags, refusals."""
    guard = Guard(
        {p: dict(c) for p, c in counts.items()}, {p: set(v) for p, v in blocks.items()}, limits
    )
    accepted = [False] * len(links)
    refused: list[tuple[int, str]] = []
    for i, (a, b) in enumerate(links):
        ra, rb = guard.find(a), guard.find(b)
        if ra == rb:
            continue
        reason = guard.refusal(ra, rb)
        if reason:
            refused.append((i, reason))
            continue
        guard.union(ra, rb)
        accepted[i] = True
    members = {p for link in links for p in link}
    return {p: guard.find(p) for p in members}, accepted, refused


def temp_table(store: Store, name: str, df: pd.DataFrame) -> None:
    """Create (or replace) temp table ``name`` from a DataFrame."""
    assert name.startswith("_ms_") and name.isidentifier(), name
    view = name + "_df"
    with store.lock:
        store.con.execute("SELECT 1").fetchall()  # DuckDB refuses register() with a pending result
        store.con.register(view, df)
        try:
            store.execute("CREATE OR REPLACE TEMP TABLE " + name + " AS SELECT * FROM " + view)
        finally:
            store.con.execute("SELECT 1").fetchall()
            store.con.unregister(view)


def blocks_of(store: Store) -> dict[str, set[str]]:
    """Unmerge blocks as profile -> partners."""
    out: dict[str, set[str]] = {}
    for a, b in store.rows("SELECT profile_a, profile_b FROM identity_blocks"):
        out.setdefault(a, set()).add(b)
        out.setdefault(b, set()).add(a)
    return out


_TEMPS = (
    "_ms_prof",
    "_ms_lc",
    "_ms_pcomp",
    "_ms_counts",
    "_ms_bad",
    "_ms_ok",
    "_ms_ggroups",
    "_ms_grp",
    "_ms_win",
    "_ms_via",
)


def plan_links(store: Store, limits: dict[str, int], rule: str) -> list[Refusal]:
    """Build ``_ms_plan`` from ``_ms_links``; returns the refused links."""
    try:
        return _plan(store, limits, rule)
    finally:
        for t in _TEMPS:
            store.execute("DROP TABLE IF EXISTS " + t)


def _plan(store: Store, limits: dict[str, int], rule: str) -> list[Refusal]:
    store.execute(
        "CREATE OR REPLACE TEMP TABLE _ms_prof AS SELECT profile_id,"
        " CAST(row_number() OVER (ORDER BY profile_id) - 1 AS BIGINT) AS code"
        " FROM (SELECT a AS profile_id FROM _ms_links UNION SELECT b FROM _ms_links)"
    )
    arrays = store.execute(
        "SELECT pa.code AS ca, pb.code AS cb FROM _ms_links l JOIN _ms_prof pa ON pa.profile_id = l.a"
        " JOIN _ms_prof pb ON pb.profile_id = l.b"
    ).fetchnumpy()
    m = int(store.scalar("SELECT count(*) FROM _ms_prof") or 0)
    ca, cb = np.asarray(arrays["ca"], dtype=np.int64), np.asarray(arrays["cb"], dtype=np.int64)
    graph = coo_matrix((np.ones(len(ca), dtype=np.int8), (ca, cb)), shape=(m, m))
    _, labels = connected_components(graph, directed=False)
    temp_table(
        store,
        "_ms_pcomp",
        pd.DataFrame({"code": np.arange(m, dtype=np.int64), "comp": labels.astype(np.int64)}),
    )
    store.execute(
        "CREATE OR REPLACE TEMP TABLE _ms_prof AS SELECT p.profile_id, c.comp FROM _ms_prof p"
        " JOIN _ms_pcomp c ON c.code = p.code"
    )
    store.execute(
        "CREATE OR REPLACE TEMP TABLE _ms_counts AS SELECT i.profile_id, any_value(p.comp) AS comp,"
        " i.id_type, count(*) AS n FROM identities i JOIN _ms_prof p ON p.profile_id = i.profile_id"
        " GROUP BY i.profile_id, i.id_type"
    )
    types, values = list(limits), [int(v) for v in limits.values()]
    store.execute(
        """
        CREATE OR REPLACE TEMP TABLE _ms_bad AS
        SELECT comp FROM (SELECT comp, id_type, sum(n) AS total, count(*) AS holders
                          FROM _ms_counts GROUP BY comp, id_type)
        WHERE holders > 1 AND (id_type = 'user_id'
              OR total > coalesce(list_extract(?::BIGINT[], list_position(?::VARCHAR[], id_type)), 9e18))
        UNION
        SELECT pa.comp FROM identity_blocks b JOIN _ms_prof pa ON pa.profile_id = b.profile_a
        JOIN _ms_prof pb ON pb.profile_id = b.profile_b WHERE pa.comp = pb.comp
        """,
        [values, types],
    )
    refusals = _replay_unsafe(store, limits, rule)
    store.execute(
        "CREATE OR REPLACE TEMP TABLE _ms_grp AS SELECT p.profile_id,"
        " coalesce(g.grp, 'c:' || p.comp) AS grp FROM _ms_prof p"
        " LEFT JOIN _ms_ggroups g ON g.profile_id = p.profile_id"
    )
    store.execute(
        """
        CREATE OR REPLACE TEMP TABLE _ms_win AS
        SELECT g.profile_id, first_value(g.profile_id) OVER (
                 PARTITION BY g.grp ORDER BY (u.profile_id IS NULL), a.first_seen NULLS LAST,
                 a.created_at NULLS LAST, g.profile_id) AS winner
        FROM _ms_grp g
        LEFT JOIN (SELECT DISTINCT profile_id FROM _ms_counts WHERE id_type = 'user_id') u
               ON u.profile_id = g.profile_id
        LEFT JOIN (SELECT p.profile_id, min(i.first_seen) AS first_seen,
                          any_value(pr.created_at) AS created_at
                   FROM _ms_prof p LEFT JOIN identities i ON i.profile_id = p.profile_id
                   LEFT JOIN profiles pr ON pr.profile_id = p.profile_id GROUP BY p.profile_id) a
               ON a.profile_id = g.profile_id
        """
    )
    # the earliest accepted link touching each profile explains its merge
    store.execute(
        """
        CREATE OR REPLACE TEMP TABLE _ms_via AS
        WITH acc AS (
            SELECT l.ord, l.a, l.b FROM _ms_links l JOIN _ms_prof p ON p.profile_id = l.a
            WHERE p.comp NOT IN (SELECT comp FROM _ms_bad) OR l.ord IN (SELECT ord FROM _ms_ok))
        SELECT profile_id, min(ord) AS ord
        FROM (SELECT a AS profile_id, ord FROM acc UNION ALL SELECT b, ord FROM acc)
        GROUP BY profile_id
        """
    )
    store.execute(
        """
        CREATE OR REPLACE TEMP TABLE _ms_plan AS
        SELECT ? || lpad(to_hex(row_number() OVER (ORDER BY w.profile_id)), 8, '0') AS merge_id,
               w.profile_id AS loser, w.winner, ? AS rule, CAST(l.score AS DOUBLE) AS score,
               CAST(json_merge_patch(json_object('via', [l.sa, l.sb]),
                                     coalesce(CAST(l.detail AS JSON), '{}')) AS VARCHAR) AS details
        FROM _ms_win w JOIN _ms_via v ON v.profile_id = w.profile_id
        JOIN _ms_links l ON l.ord = v.ord
        WHERE w.profile_id <> w.winner
        """,
        ["m_" + uuid.uuid4().hex[:8], rule],
    )
    return refusals


def _replay_unsafe(store: Store, limits: dict[str, int], rule: str) -> list[Refusal]:
    """Guard replay of the unsafe components; fills _ms_ok (accepted ords) and _ms_ggroups."""
    rows = store.rows(
        "SELECT l.ord, l.a, l.b, l.sa, l.sb FROM _ms_links l JOIN _ms_prof p ON p.profile_id = l.a"
        " WHERE p.comp IN (SELECT comp FROM _ms_bad) ORDER BY l.ord"
    )
    counts: dict[str, dict[str, int]] = {}
    for pid, id_type, n in store.rows(
        "SELECT profile_id, id_type, n FROM _ms_counts WHERE comp IN (SELECT comp FROM _ms_bad)"
    ):
        counts.setdefault(pid, {})[id_type] = int(n)
    groups, accepted, refused = guard_replay(
        [(r[1], r[2]) for r in rows], counts, blocks_of(store), limits
    )
    temp_table(
        store,
        "_ms_ok",
        pd.DataFrame(
            {
                "ord": np.array(
                    [r[0] for r, ok in zip(rows, accepted, strict=True) if ok], dtype=np.int64
                )
            }
        ),
    )
    temp_table(
        store,
        "_ms_ggroups",
        pd.DataFrame(
            {"profile_id": list(groups), "grp": ["g:" + g for g in groups.values()]}, dtype=object
        ),
    )
    out: list[Refusal] = []
    for i, reason in refused:
        _, a, b, sa, sb = rows[i]
        out.append((str(sa), str(sb), rule, reason, json.dumps({"profiles": [a, b]})))
    return out
