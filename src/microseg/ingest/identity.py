"""Batch identity resolution: merge profiles linked by shared ids, with guards and undo.

Deterministic rule: ids that co-occur on an event or a CRM record (``identity_edges``) belong
to one person. The resolver unions the profiles of every edge's two keys, refusing a link
(and logging it in ``identity_refusals``) when it would

* join two profiles that each hold a user_id (two known users, e.g. a shared device),
* give the merged profile more ids of a type than ``identity.max_ids_per_profile`` allows,
* touch a blocked placeholder value (``identity.blocked_values``),
* re-join a pair that a person split with ``unmerge`` (``identity_blocks``).

Speed: connected components of the cross-profile graph are computed with SciPy; only the
components that could break a guard are replayed edge by edge (oldest edge first) through a
constrained union-find. Probabilistic matches (see ``matching``) go through the same guards.

Every merge writes one ``identity_merges`` row per merged-away profile (winner = the profile
holding a user_id, else the oldest), moves its id keys (and the attributes the winner lacks)
to the winner and is reversible with ``unmerge``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from microseg.config.models import ProjectSettings
from microseg.errors import ConflictError, NotFoundError
from microseg.ingest import matching
from microseg.ingest.identity_plan import Guard, Refusal, blocks_of, plan_links, temp_table
from microseg.privacy.crypto import KeyRing
from microseg.store import Store, utcnow


@dataclass
class ResolveResult:
    """What one resolve run did."""

    edges_considered: int = 0
    deterministic_merges: int = 0
    probabilistic_merges: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    profiles_before: int = 0
    profiles_after: int = 0
    candidates_scored: int = 0
    blocks_skipped: int = 0
    merge_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def merges(self) -> int:
        return self.deterministic_merges + self.probabilistic_merges


# ----------------------------------------------------------------------------- loading
def _profile_stats(store: Store, table: str) -> tuple[dict[str, dict[str, int]], pd.DataFrame]:
    """Id counts per type and age (first seen, created) of the profiles listed in ``table``."""
    assert table in {"_ms_involved"}
    counts: dict[str, dict[str, int]] = {}
    for pid, id_type, n in store.rows(
        "SELECT i.profile_id, i.id_type, count(*) FROM identities i"
        " JOIN _ms_involved v ON v.profile_id = i.profile_id GROUP BY ALL"
    ):
        counts.setdefault(pid, {})[id_type] = int(n)
    ages = store.df(
        "SELECT v.profile_id, min(i.first_seen) AS first_seen, any_value(p.created_at) AS created_at"
        " FROM _ms_involved v LEFT JOIN identities i ON i.profile_id = v.profile_id"
        " LEFT JOIN profiles p ON p.profile_id = v.profile_id GROUP BY v.profile_id"
    )
    return counts, ages


def _set_involved(store: Store, profiles: Iterable[str]) -> None:
    df = pd.DataFrame({"profile_id": sorted(set(profiles))}, dtype=object)
    temp_table(store, "_ms_involved", df)


def _edge_links(store: Store, settings: ProjectSettings) -> tuple[int, pd.DataFrame]:
    """Fill _ms_links with cross-profile edges as distinct profile pairs, earliest edge first
    (ties by key); returns their count and the edges refused for a blocked value."""
    blocked = sorted({v.lower() for v in settings.identity.blocked_values})
    store.execute(
        """
        CREATE OR REPLACE TEMP TABLE _ms_cross AS
        SELECT e.id_key_a AS ka, e.id_key_b AS kb, e.first_seen AS fs,
               least(ia.profile_id, ib.profile_id) AS a, greatest(ia.profile_id, ib.profile_id) AS b,
               (ia.id_type <> 'email' AND list_contains(?, lower(ia.id_value)))
               OR (ib.id_type <> 'email' AND list_contains(?, lower(ib.id_value))) AS blocked
        FROM identity_edges e
        JOIN identities ia ON ia.id_key = e.id_key_a
        JOIN identities ib ON ib.id_key = e.id_key_b
        WHERE ia.profile_id <> ib.profile_id
        """,
        [blocked, blocked],
    )
    store.execute(
        """
        CREATE OR REPLACE TEMP TABLE _ms_links AS
        SELECT row_number() OVER (ORDER BY fs NULLS LAST, ka, kb) AS ord, a, b, ka AS sa, kb AS sb,
               CAST(NULL AS DOUBLE) AS score, CAST(NULL AS VARCHAR) AS detail
        FROM (SELECT * FROM _ms_cross WHERE NOT blocked
              QUALIFY row_number() OVER (PARTITION BY a, b ORDER BY fs NULLS LAST, ka, kb) = 1)
        """
    )
    bad = store.df("SELECT ka, kb FROM _ms_cross WHERE blocked ORDER BY ka, kb")
    store.execute("DROP TABLE IF EXISTS _ms_cross")
    return int(store.scalar("SELECT count(*) FROM _ms_links") or 0), bad


# ----------------------------------------------------------------------------- grouping
def _winners(
    groups: dict[str, list[str]], counts: dict[str, dict[str, int]], ages: pd.DataFrame
) -> dict[str, str]:
    """Group root -> winner: the profile holding a user_id, else the oldest."""
    age = {
        r.profile_id: (
            pd.Timestamp.max if pd.isna(r.first_seen) else r.first_seen,
            pd.Timestamp.max if pd.isna(r.created_at) else r.created_at,
        )
        for r in ages.itertuples(index=False)
    }
    out = {}
    for root, members in groups.items():
        known = [p for p in members if counts.get(p, {}).get("user_id", 0)]
        pool = known or members
        out[root] = min(pool, key=lambda p: (*age.get(p, (pd.Timestamp.max, pd.Timestamp.max)), p))
    return out


# ----------------------------------------------------------------------------- applying
def _new_merge_id() -> str:
    return "m_" + uuid.uuid4().hex[:16]


def _apply_merges(store: Store, now: datetime, plan: pd.DataFrame | None = None) -> list[str]:
    """Apply the merge plan (temp table _ms_plan, or ``plan`` rows of loser, winner, rule,
    score, details) in one transaction; returns the merge ids."""
    if plan is not None:
        plan = plan.assign(merge_id=[_new_merge_id() for _ in range(len(plan))])
        plan = plan[["merge_id", "loser", "winner", "rule", "score", "details"]]
        temp_table(store, "_ms_plan", plan.astype({"score": float}))
    ids = [str(r[0]) for r in store.rows("SELECT merge_id FROM _ms_plan ORDER BY merge_id")]
    if not ids:
        store.execute("DROP TABLE IF EXISTS _ms_plan")
        return []
    with store.transaction():
        # attributes the winner lacks move with the keys (newest value when several losers)
        store.execute(
            """
            CREATE OR REPLACE TEMP TABLE _ms_moved_attrs AS
            SELECT m.merge_id, m.winner, a.*
            FROM _ms_plan m JOIN profile_attributes a ON a.profile_id = m.loser
            WHERE NOT EXISTS (SELECT 1 FROM profile_attributes w
                              WHERE w.profile_id = m.winner AND w.name = a.name)
            QUALIFY row_number() OVER (PARTITION BY m.winner, a.name
                                       ORDER BY a.updated_at DESC, a.profile_id) = 1
            """
        )
        store.execute(
            """
            INSERT INTO identity_merges
            SELECT m.merge_id, m.winner, m.loser, m.rule, m.score,
                   json_merge_patch(CAST(m.details AS JSON), json_object(
                     'previous_linked_by', coalesce(k.lb, []),
                     'previous_merge_id', coalesce(k.mid, []),
                     'moved_attributes', coalesce(t.names, []))),
                   ?, NULL, to_json(coalesce(k.keys, []))
            FROM _ms_plan m
            LEFT JOIN (SELECT i.profile_id, list(i.id_key ORDER BY i.id_key) AS keys,
                              list(i.linked_by ORDER BY i.id_key) AS lb,
                              list(i.merge_id ORDER BY i.id_key) AS mid
                       FROM identities i JOIN _ms_plan p ON p.loser = i.profile_id
                       GROUP BY i.profile_id) k ON k.profile_id = m.loser
            LEFT JOIN (SELECT merge_id, list(name ORDER BY name) AS names
                       FROM _ms_moved_attrs GROUP BY merge_id) t ON t.merge_id = m.merge_id
            """,
            [now],
        )
        store.execute(
            "INSERT INTO profile_attributes SELECT winner, name, value, value_num, source, updated_at"
            " FROM _ms_moved_attrs"
        )
        store.execute(
            "DELETE FROM profile_attributes WHERE (profile_id, name) IN"
            " (SELECT (profile_id, name) FROM _ms_moved_attrs)"
        )
        # DuckDB updates fast in row order and very slowly in random order: sort by rowid first
        store.execute(
            "CREATE OR REPLACE TEMP TABLE _ms_moves AS SELECT i.rowid AS rid, m.winner, m.rule,"
            " m.merge_id FROM identities i JOIN _ms_plan m ON i.profile_id = m.loser ORDER BY rid"
        )
        store.execute(
            "UPDATE identities SET profile_id = n.winner, linked_by = n.rule, merge_id = n.merge_id"
            " FROM _ms_moves n WHERE identities.rowid = n.rid"
        )
        store.execute(
            "CREATE OR REPLACE TEMP TABLE _ms_moves AS SELECT p.rowid AS rid, m.winner"
            " FROM profiles p JOIN _ms_plan m ON p.profile_id = m.loser ORDER BY rid"
        )
        store.execute(
            "UPDATE profiles SET merged_into = n.winner, updated_at = ? FROM _ms_moves n"
            " WHERE profiles.rowid = n.rid",
            [now],
        )
        store.execute("DROP TABLE IF EXISTS _ms_moves")
        store.execute(
            "UPDATE profiles SET updated_at = ? WHERE profile_id IN (SELECT winner FROM _ms_plan)",
            [now],
        )
        store.execute("DROP TABLE IF EXISTS _ms_moved_attrs")
        store.execute("DROP TABLE IF EXISTS _ms_plan")
    return ids


def _log_refusals(
    store: Store, refused: list[tuple[str, str, str, str, str | None]], now: datetime
) -> None:
    """Upsert (subject_a, subject_b, rule, reason, detail) refusals."""
    if not refused:
        return
    df = pd.DataFrame(refused, columns=["a", "b", "rule", "reason", "detail"]).drop_duplicates(
        ["a", "b", "reason"]
    )
    with store.lock:
        temp_table(store, "_ms_refused", df)
        store.execute(
            "INSERT INTO identity_refusals SELECT a, b, rule, reason, detail, ?, ? FROM _ms_refused"
            " ON CONFLICT (subject_a, subject_b, reason) DO UPDATE SET"
            " last_refused_at = excluded.last_refused_at, detail = excluded.detail",
            [now, now],
        )
        store.execute("DROP TABLE IF EXISTS _ms_refused")


def _active_count(store: Store) -> int:
    return int(store.scalar("SELECT count(*) FROM profiles WHERE merged_into IS NULL") or 0)


def resolve(
    store: Store,
    settings: ProjectSettings,
    *,
    keys: KeyRing | None = None,
    probabilistic: bool | None = None,
    now: datetime | None = None,
) -> ResolveResult:
    """Merge profiles linked by identity edges, then by probabilistic attribute matches.

    ``keys`` lets the probabilistic pass compare decrypted names (in memory) with
    Jaro-Winkler; without it names agree only by exact or phonetic token.
    ``probabilistic`` overrides ``identity.probabilistic.enabled``."""
    started = time.perf_counter()
    now = now or utcnow()
    result = ResolveResult(profiles_before=_active_count(store))
    with store.lock:
        limits = dict(settings.identity.max_ids_per_profile)
        n_links, blocked = _edge_links(store, settings)
        result.edges_considered = n_links
        log: list[Refusal] = [
            (str(ka), str(kb), "deterministic", "blocked_value", None)
            for ka, kb in zip(blocked["ka"], blocked["kb"], strict=True)
        ]
        if n_links:
            log.extend(plan_links(store, limits, "deterministic"))
            ids = _apply_merges(store, now)
            result.deterministic_merges = len(ids)
            result.merge_ids.extend(ids)
        enabled = (
            settings.identity.probabilistic.enabled if probabilistic is None else probabilistic
        )
        if enabled:
            ids, refusals = _probabilistic(store, settings, keys, now, result)
            log.extend(refusals)
            result.probabilistic_merges = len(ids)
            result.merge_ids.extend(ids)
        _log_refusals(store, log, now)
        for *_, reason, _detail in log:
            result.refused[reason] = result.refused.get(reason, 0) + 1
        store.execute("DROP TABLE IF EXISTS _ms_involved")
        store.execute("DROP TABLE IF EXISTS _ms_links")
        result.profiles_after = _active_count(store)
        if result.merges or log:
            store.audit(
                "resolver",
                "identity_resolve",
                None,
                {"merges": result.merges, "refused": result.refused},
            )
    result.seconds = time.perf_counter() - started
    return result


def set_roots(store: Store) -> None:
    """Temp table _ms_roots(profile_id, root): every profile and the active profile it is in."""
    df = store.df("SELECT profile_id, merged_into FROM profiles")
    parent = dict(zip(df["profile_id"], df["merged_into"], strict=True))
    roots = []
    for pid in df["profile_id"]:
        seen = {pid}
        root = pid
        while isinstance(parent.get(root), str) and parent[root] not in seen:
            root = parent[root]
            seen.add(root)
        roots.append(root)
    out = pd.DataFrame({"profile_id": df["profile_id"], "root": roots}, dtype=object)
    temp_table(store, "_ms_roots", out)


def _probabilistic(
    store: Store,
    settings: ProjectSettings,
    keys: KeyRing | None,
    now: datetime,
    result: ResolveResult,
) -> tuple[list[str], list[tuple[str, str, str, str, str | None]]]:
    fields = list(settings.identity.probabilistic.fields)
    if not fields or not store.scalar("SELECT count(*) FROM match_keys"):
        return [], []
    set_roots(store)
    try:
        pairs, skipped = matching.candidate_pairs(store, fields)
        result.blocks_skipped = skipped
        candidates = matching.score_pairs(store, settings, pairs, keys)
    finally:
        store.execute("DROP TABLE IF EXISTS _ms_roots")
    result.candidates_scored = len(candidates)
    threshold = settings.identity.probabilistic.threshold
    chosen = sorted(
        (c for c in candidates if c.score >= threshold), key=lambda c: (-c.score, c.a, c.b)
    )
    if not chosen:
        return [], []
    links = pd.DataFrame(
        {
            "ord": np.arange(1, len(chosen) + 1, dtype=np.int64),
            "a": [c.a for c in chosen],
            "b": [c.b for c in chosen],
            "sa": [c.a for c in chosen],
            "sb": [c.b for c in chosen],
            "score": [round(c.score, 4) for c in chosen],
            "detail": [json.dumps({"agreement": c.agreement}) for c in chosen],
        },
    )
    links["score"] = links["score"].astype(float)
    temp_table(store, "_ms_links", links)
    refusals = plan_links(store, dict(settings.identity.max_ids_per_profile), "probabilistic")
    return _apply_merges(store, now), refusals


# ----------------------------------------------------------------------------- manual + undo
def _active_profile(store: Store, ref: str) -> str:
    """An active profile id from a profile id or an id key ('user_id:42')."""
    row = store.rows("SELECT profile_id, merged_into FROM profiles WHERE profile_id = ?", [ref])
    if row:
        if row[0][1] is not None:
            raise ConflictError(f"profile {ref} was merged into {row[0][1]}; use that profile")
        return str(row[0][0])
    found = store.scalar("SELECT profile_id FROM identities WHERE id_key = ?", [ref])
    if found:
        return str(found)
    raise NotFoundError(f"no profile or id key '{ref}' (id keys look like user_id:42)")


def merge_profiles(
    store: Store,
    a: str,
    b: str,
    *,
    override: bool = False,
    actor: str = "library",
    settings: ProjectSettings | None = None,
    reason: str | None = None,
    now: datetime | None = None,
) -> str:
    """Merge two profiles by hand; returns the merge id.

    Without ``override`` the resolver's guards apply (two known users, id limits, a pair
    split by unmerge) and a violation raises ConflictError; ``override=True`` merges anyway
    and records who did it. The winner is the profile holding a user_id, else the older."""
    settings = settings or ProjectSettings()
    now = now or utcnow()
    with store.lock:
        pa_, pb_ = _active_profile(store, a), _active_profile(store, b)
        if pa_ == pb_:
            raise ConflictError(f"'{a}' and '{b}' are already the same profile ({pa_})")
        _set_involved(store, [pa_, pb_])
        counts, ages = _profile_stats(store, "_ms_involved")
        store.execute("DROP TABLE IF EXISTS _ms_involved")
        guard = Guard(
            {p: dict(c) for p, c in counts.items()},
            blocks_of(store),
            dict(settings.identity.max_ids_per_profile),
        )
        refusal = guard.refusal(pa_, pb_)
        if refusal and not override:
            why = {
                "known_user_conflict": "both profiles hold a user_id (two known users)",
                "unmerged_pair": "these profiles were split by an unmerge",
            }.get(refusal, f"the merged profile would exceed max_ids_per_profile ({refusal})")
            raise ConflictError(
                f"refusing to merge {pa_} and {pb_}: {why}; pass override to force it"
            )
        winner = _winners({"g": [pa_, pb_]}, counts, ages)["g"]
        loser = pb_ if winner == pa_ else pa_
        details = {
            "actor": actor,
            "override": override,
            "guard": refusal,
            "reason": reason,
            "via": [a, b],
        }
        plan = pd.DataFrame(
            [(loser, winner, "manual", None, json.dumps(details))],
            columns=["loser", "winner", "rule", "score", "details"],
        )
        merge_id = _apply_merges(store, now, plan)[0]
        store.audit(
            actor,
            "identity_merge",
            merge_id,
            {"winner": winner, "loser": loser, "override": override},
        )
    return merge_id


def unmerge(
    store: Store, merge_id: str, *, actor: str = "library", now: datetime | None = None
) -> dict[str, Any]:
    """Undo one merge exactly: the moved keys (with their previous link rule) and attributes
    go back to the merged-away profile, which becomes active again; the pair is blocked so
    the resolver does not re-merge it. Later merges that moved the same keys must be undone
    first (last in, first out)."""
    now = now or utcnow()
    with store.lock:
        row = store.rows(
            "SELECT winner_profile, loser_profile, details, moved_keys, reverted_at"
            " FROM identity_merges WHERE merge_id = ?",
            [merge_id],
        )
        if not row:
            raise NotFoundError(f"no merge '{merge_id}' (see `microseg identity merges`)")
        winner, loser, details_json, moved_json, reverted = row[0]
        if reverted is not None:
            raise ConflictError(f"merge {merge_id} was already undone at {reverted}")
        details = json.loads(details_json or "{}")
        moved: list[str] = json.loads(moved_json or "[]")
        later = store.rows(
            "SELECT DISTINCT merge_id FROM identities WHERE list_contains(?, id_key)"
            " AND (profile_id <> ? OR merge_id IS DISTINCT FROM ?) ORDER BY 1",
            [moved, winner, merge_id],
        )
        later_ids = [r[0] for r in later if r[0]]
        if later_ids or store.scalar(
            "SELECT merged_into IS DISTINCT FROM ? FROM profiles WHERE profile_id = ?",
            [winner, loser],
        ):
            hint = f"; undo {', '.join(later_ids)} first" if later_ids else ""
            raise ConflictError(f"merge {merge_id} has been built upon by later changes{hint}")
        prev = pd.DataFrame(
            {
                "id_key": moved,
                "linked_by": details.get("previous_linked_by", [None] * len(moved)),
                "merge_id": details.get("previous_merge_id", [None] * len(moved)),
            },
            dtype=object,
        )
        names: list[str] = details.get("moved_attributes", [])
        with store.transaction():
            temp_table(store, "_ms_prev", prev)
            store.execute(
                "UPDATE identities SET profile_id = ?, linked_by = p.linked_by, merge_id = p.merge_id"
                " FROM _ms_prev p WHERE identities.id_key = p.id_key",
                [loser],
            )
            store.execute("DROP TABLE IF EXISTS _ms_prev")
            store.execute(
                "INSERT INTO profile_attributes SELECT ?, name, value, value_num, source, updated_at"
                " FROM profile_attributes a WHERE a.profile_id = ? AND list_contains(?, a.name)"
                " AND NOT EXISTS (SELECT 1 FROM profile_attributes l WHERE l.profile_id = ?"
                " AND l.name = a.name)",
                [loser, winner, names, loser],
            )
            store.execute(
                "DELETE FROM profile_attributes WHERE profile_id = ? AND list_contains(?, name)",
                [winner, names],
            )
            store.execute(
                "UPDATE profiles SET merged_into = NULL, updated_at = ? WHERE profile_id = ?",
                [now, loser],
            )
            store.execute("UPDATE profiles SET updated_at = ? WHERE profile_id = ?", [now, winner])
            store.execute(
                "UPDATE identity_merges SET reverted_at = ? WHERE merge_id = ?", [now, merge_id]
            )
            store.execute(
                "INSERT OR REPLACE INTO identity_blocks VALUES (least(?, ?), greatest(?, ?), ?, ?)",
                [winner, loser, winner, loser, merge_id, now],
            )
            store.audit(actor, "identity_unmerge", merge_id, {"winner": winner, "loser": loser})
    return {
        "merge_id": merge_id,
        "restored_profile": loser,
        "from_profile": winner,
        "keys": len(moved),
        "attributes": len(names),
    }


def list_merges(
    store: Store,
    *,
    profile: str | None = None,
    include_reverted: bool = True,
    limit: int | None = None,
) -> pd.DataFrame:
    """The merge log, newest first; optionally only merges touching one profile."""
    return store.df(
        "SELECT merge_id, winner_profile, loser_profile, rule, score, merged_at, reverted_at,"
        " json_array_length(moved_keys) AS keys_moved, details FROM identity_merges"
        " WHERE (? IS NULL OR winner_profile = ? OR loser_profile = ?)"
        " AND (? OR reverted_at IS NULL) ORDER BY merged_at DESC, merge_id LIMIT ?",
        [profile, profile, profile, include_reverted, limit if limit is not None else 2**62],
    )


def list_refusals(store: Store, *, reason: str | None = None) -> pd.DataFrame:
    """Links the resolver refused, with the guard that refused them."""
    return store.df(
        "SELECT subject_a, subject_b, rule, reason, detail, first_refused_at, last_refused_at"
        " FROM identity_refusals WHERE (? IS NULL OR reason = ?) ORDER BY last_refused_at DESC,"
        " subject_a, subject_b",
        [reason, reason],
    )
