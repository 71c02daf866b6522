"""CLI: `identity` (resolve, merges, refusals, merge, unmerge) and `crm import`."""

from __future__ import annotations

from pathlib import Path

import typer

from microseg.cli import console, frame_table, workspace


def _mapping(items: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for item in items:
        column, sep, attribute = item.partition("=")
        if not sep or not column:
            raise typer.BadParameter(
                f"--map expects column=attribute (empty attribute skips), got '{item}'"
            )
        out[column] = attribute or None
    return out


def register(app: typer.Typer) -> None:
    identity_app = typer.Typer(
        help="Identity resolution: merge, inspect and undo.", no_args_is_help=True
    )
    crm_app = typer.Typer(help="CRM, enrichment and survey profile files.", no_args_is_help=True)
    app.add_typer(identity_app, name="identity")
    app.add_typer(crm_app, name="crm")

    @identity_app.command("resolve")
    def resolve_cmd(
        probabilistic: bool | None = typer.Option(
            None,
            "--probabilistic/--no-probabilistic",
            help="override identity.probabilistic.enabled",
        ),
    ) -> None:
        """Merge profiles linked by shared ids (and attribute matches), with guards."""
        from microseg.ingest.identity import resolve

        with workspace() as ws:
            r = resolve(ws.store, ws.settings, keys=ws.keys, probabilistic=probabilistic)
        console.print(
            f"profiles {r.profiles_before:,} → {r.profiles_after:,} · merges {r.deterministic_merges:,}"
            f" deterministic + {r.probabilistic_merges:,} probabilistic"
            f" ({r.edges_considered:,} cross-profile links, {r.candidates_scored:,} candidate pairs scored,"
            f" {r.seconds:.2f}s)"
        )
        for reason, n in sorted(r.refused.items()):
            console.print(f"  refused {n:,} × {reason}")

    @identity_app.command("merges")
    def merges_cmd(
        profile: str | None = typer.Option(None, help="only merges touching this profile id"),
        active: bool = typer.Option(False, "--active", help="hide undone merges"),
        limit: int = typer.Option(50, help="rows to show"),
    ) -> None:
        """The merge log, newest first."""
        from microseg.ingest.identity import list_merges

        with workspace() as ws:
            df = list_merges(ws.store, profile=profile, include_reverted=not active)
        cols = [
            "merge_id",
            "winner_profile",
            "loser_profile",
            "rule",
            "score",
            "keys_moved",
            "merged_at",
            "reverted_at",
        ]
        console.print(frame_table(df[cols], f"{len(df):,} merges", limit))

    @identity_app.command("refusals")
    def refusals_cmd(
        reason: str | None = typer.Option(None, help="only this reason"),
        limit: int = typer.Option(50, help="rows to show"),
    ) -> None:
        """Links the resolver refused (known users, id limits, blocked values, unmerged pairs)."""
        from microseg.ingest.identity import list_refusals

        with workspace() as ws:
            df = list_refusals(ws.store, reason=reason)
        console.print(
            frame_table(
                df[["subject_a", "subject_b", "rule", "reason", "last_refused_at"]],
                f"{len(df):,} refused links",
                limit,
            )
        )

    @identity_app.command("unmerge")
    def unmerge_cmd(
        merge_id: str = typer.Argument(..., help="a merge id from `identity merges`"),
    ) -> None:
        """Undo one merge; the pair is then kept apart by the resolver."""
        from microseg.ingest.identity import unmerge

        with workspace() as ws:
            out = unmerge(ws.store, merge_id, actor=ws.actor)
        console.print(
            f"undid {merge_id}: {out['keys']} ids and {out['attributes']} attributes back to"
            f" {out['restored_profile']} (from {out['from_profile']})"
        )

    @identity_app.command("merge")
    def merge_cmd(
        a: str = typer.Argument(..., help="profile id or id key (user_id:42)"),
        b: str = typer.Argument(..., help="profile id or id key"),
        override: bool = typer.Option(False, "--override", help="merge even if a guard refuses it"),
        reason: str | None = typer.Option(None, help="why (kept in the merge log)"),
    ) -> None:
        """Merge two profiles by hand."""
        from microseg.ingest.identity import merge_profiles

        with workspace() as ws:
            merge_id = merge_profiles(
                ws.store,
                a,
                b,
                override=override,
                actor=ws.actor,
                settings=ws.settings,
                reason=reason,
            )
            winner = ws.store.scalar(
                "SELECT winner_profile FROM identity_merges WHERE merge_id = ?", [merge_id]
            )
        console.print(
            f"merged into {winner} ({merge_id}); undo with `microseg identity unmerge {merge_id}`"
        )

    @crm_app.command("import")
    def crm_import(
        files: list[Path] = typer.Argument(..., help="CSV, JSON Lines or Parquet files"),
        id_column: str = typer.Option(..., "--id-column", help="column holding the record's id"),
        id_type: str = typer.Option(
            "user_id", "--id-type", help="user_id | email | device_id | anonymous_id"
        ),
        source: str = typer.Option(
            "crm", "--source", help="label stored with each attribute (crm, third_party, survey)"
        ),
        map_: list[str] = typer.Option(
            [], "--map", help="column=attribute (column= skips it), repeatable"
        ),
        prefix: str = typer.Option("", "--prefix", help="prefix for attribute names, e.g. pref_"),
        match_only: bool = typer.Option(
            False,
            "--match-only",
            help="enrichment/survey: only update known profiles, quarantine the rest",
        ),
        fmt: str | None = typer.Option(None, "--format", help="csv | jsonl | parquet"),
    ) -> None:
        """Import profile attributes; PII is tokenised and encrypted, never stored in clear."""
        from microseg.ingest.profiles import import_profiles

        mapping = _mapping(map_)
        with workspace() as ws:
            for f in files:
                r = import_profiles(
                    ws.store,
                    ws.settings,
                    ws.keys,
                    f,
                    id_column=id_column,
                    id_type=id_type,
                    mapping=mapping,
                    source=source,
                    create_missing=not match_only,
                    prefix=prefix,
                    fmt=fmt,
                    progress=ws.progress,
                )
                console.print(
                    f"{f.name}: read {r.rows_read:,} · imported {r.imported:,} (new profiles"
                    f" {r.profiles_created:,}) · duplicates {r.duplicates:,} · quarantined"
                    f" {r.quarantined:,} · attributes {r.attributes_written:,} · PII values"
                    f" {r.pii_values:,} · new ids {r.identities_linked:,} ({r.rows_per_second:,.0f} rows/s)"
                )
                for reason, n in r.reasons.items():
                    console.print(f"  quarantined {n:,} × {reason}")
