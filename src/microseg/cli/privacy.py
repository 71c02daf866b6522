"""CLI: `consent set|revoke|show|import`, `subject export|erase|correct`,
`privacy retention run` and `audit show`."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pandas as pd
import typer

from microseg.cli import console, frame_table, workspace
from microseg.errors import ConfigError


def _when(value: str | None, option: str) -> datetime | None:
    """An ISO date/time option as naive UTC."""
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except ValueError:
        raise ConfigError(f"{option} '{value}' is not an ISO date/time") from None
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.to_pydatetime()


def register(app: typer.Typer) -> None:
    consent_app = typer.Typer(help="Consent per purpose: record, revoke, inspect, import.")
    subject_app = typer.Typer(help="Data-subject rights: access export, correction, erasure.")
    privacy_app = typer.Typer(help="Privacy jobs (retention).", no_args_is_help=True)
    retention_app = typer.Typer(help="Retention periods (privacy.retention_days).")
    audit_app = typer.Typer(help="The audit log: who read or changed what.")
    for sub in (consent_app, subject_app, retention_app, audit_app):
        sub.info.no_args_is_help = True
    app.add_typer(consent_app, name="consent")
    app.add_typer(subject_app, name="subject")
    app.add_typer(privacy_app, name="privacy")
    privacy_app.add_typer(retention_app, name="retention")
    app.add_typer(audit_app, name="audit")

    def _record(ref: str, purpose: str, granted: bool, source: str, expires: str | None) -> None:
        from microseg.privacy.consent import record_consent
        from microseg.privacy.subject import resolve_subject

        with workspace() as ws:
            subject = resolve_subject(ws, ref)
            change = record_consent(
                ws.store,
                subject.profile_id,
                purpose,
                granted,
                source=source,
                expires_at=_when(expires, "--expires"),
                actor="cli",
                settings=ws.settings,
            )
        verb = "granted" if granted else "revoked"
        until = f" until {change.expires_at:%Y-%m-%d %H:%M}" if change.expires_at else ""
        console.print(f"{change.profile_id}: {purpose} {verb}{until} (source {source})")

    @consent_app.command("set")
    def set_cmd(
        ref: str = typer.Argument(..., help="profile id, id key (user_id:42) or email:<address>"),
        purpose: str = typer.Argument(..., help="e.g. email_marketing"),
        source: str = typer.Option(..., help="where the consent was given (web_form, crm, ...)"),
        expires: str | None = typer.Option(None, help="ISO date/time the grant lapses"),
    ) -> None:
        """Record an opt-in for one purpose (effective at once)."""
        _record(ref, purpose, True, source, expires)

    @consent_app.command("revoke")
    def revoke_cmd(
        ref: str = typer.Argument(...),
        purpose: str = typer.Argument(...),
        source: str = typer.Option("cli", help="where the opt-out came from"),
    ) -> None:
        """Record an opt-out for one purpose (effective at once)."""
        _record(ref, purpose, False, source, None)

    @consent_app.command("show")
    def show_cmd(
        ref: str = typer.Argument(...),
        history: bool = typer.Option(False, "--history", help="every recorded change"),
    ) -> None:
        """The consents in force (and, with --history, every change)."""
        from microseg.privacy.consent import consent_history, current_consents
        from microseg.privacy.subject import resolve_subject

        with workspace() as ws:
            subject = resolve_subject(ws, ref)
            states = [s for p in subject.profile_ids for s in current_consents(ws.store, p)]
            df = pd.DataFrame([s.as_dict() for s in states])
            hist = consent_history(ws.store, subject.profile_ids) if history else None
        if df.empty:
            console.print(f"{subject.profile_id}: no consent recorded (opt-in: nothing allowed)")
        else:
            console.print(frame_table(df, f"consents of {subject.profile_id}"))
        if hist is not None and not hist.empty:
            console.print(frame_table(hist, "history"))

    @consent_app.command("import")
    def import_cmd(
        path: Path = typer.Argument(
            ..., help="CSV: ref|profile_id|user_id|email, purpose, granted"
        ),
        source: str | None = typer.Option(None, help="source for rows without one"),
    ) -> None:
        """Append consent decisions from a CSV file; unusable rows are listed by line."""
        from microseg.privacy.consent_import import import_consents

        with workspace() as ws:
            r = import_consents(ws, path, source=source, actor="cli")
        console.print(f"imported {r.imported:,} of {r.rows_read:,} rows")
        for line, why in r.rejected[:50]:
            console.print(f"  line {line}: {why}", highlight=False)
        if len(r.rejected) > 50:
            console.print(f"  … and {len(r.rejected) - 50:,} more rejected rows")

    @subject_app.command("export")
    def export_cmd(
        ref: str = typer.Argument(...),
        out: Path | None = typer.Option(None, "--out", "-o", help="write JSON here (else stdout)"),
    ) -> None:
        """Everything held about a person, as JSON (the PII read is audited)."""
        from microseg.privacy.subject import export_subject

        with workspace() as ws:
            data = export_subject(ws, ref, actor="cli")
        text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
        if out is None:
            typer.echo(text)
        else:
            out.write_text(text + "\n", encoding="utf-8")
            console.print(f"wrote {out} ({len(data['events']):,} events)")

    @subject_app.command("erase")
    def erase_cmd(
        ref: str = typer.Argument(...),
        reason: str = typer.Option(..., help="why (request id); kept in the audit log"),
        include_linked: bool = typer.Option(
            False, help="also erase unmerged profiles linked by an identity edge"
        ),
        yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation"),
    ) -> None:
        """Erase a person from every table and engine file (irreversible)."""
        from microseg.privacy.erasure import erase_subject

        if not yes:
            typer.confirm(f"Erase everything about '{ref}'? This cannot be undone", abort=True)
        with workspace() as ws:
            report = erase_subject(ws, ref, reason, actor="cli", include_linked=include_linked)
        deleted = sum(report.rows_deleted.values())
        console.print(
            f"erasure {report.erasure_id}: {deleted:,} rows deleted in"
            f" {len(report.rows_deleted)} tables, {report.keys_shredded} data key(s) shredded,"
            f" {sum(report.files_rewritten.values())} file line(s) removed"
        )
        for table, n in sorted(report.rows_deleted.items()):
            console.print(f"  {table}: {n:,}")
        for path in report.files_outside_with_matches:
            console.print(f"  [yellow]still mentioned in {path} (not an engine file)[/yellow]")
        if report.linked_profiles_kept:
            kept = ", ".join(report.linked_profiles_kept)
            console.print(f"  [yellow]linked, not erased: {kept} (--include-linked)[/yellow]")

    @subject_app.command("correct")
    def correct_cmd(
        ref: str = typer.Argument(...),
        field: str = typer.Argument(..., help="attribute name, e.g. last_name or city"),
        value: str | None = typer.Argument(None, help="corrected value"),
        remove: bool = typer.Option(False, "--remove", help="delete the attribute"),
    ) -> None:
        """Correct (or --remove) one attribute of a person."""
        from microseg.privacy.subject import correct_subject

        if (value is None) != remove:
            raise ConfigError("give the corrected value, or --remove (not both)")
        with workspace() as ws:
            done = correct_subject(ws, ref, field, value, actor="cli")
        what = "removed" if remove else "corrected"
        kind = " (PII, re-encrypted)" if done["pii"] else ""
        console.print(f"{done['profile_id']}: {field} {what}{kind}")

    @retention_app.command("run")
    def retention_cmd(
        now: str | None = typer.Option(None, help="pretend it is this UTC time"),
        dry_run: bool = typer.Option(False, "--dry-run", help="count, delete nothing"),
    ) -> None:
        """Delete rows older than the retention periods (schedule it, e.g. daily)."""
        from microseg.privacy.retention import run_retention

        with workspace() as ws:
            if not ws.settings.privacy.retention_days:
                console.print("no privacy.retention_days in microseg.yaml: nothing to do")
                return
            report = run_retention(ws, _when(now, "--now"), dry_run=dry_run, actor="cli")
        verb = "would delete" if dry_run else "deleted"
        for key, n in sorted(report.deleted.items()):
            cutoff = report.cutoffs[key]
            console.print(f"{key}: {verb} {n:,} rows older than {cutoff:%Y-%m-%d %H:%M}")
        console.print(f"total {report.total:,}")

    @audit_app.command("show")
    def audit_cmd(
        actor: str | None = typer.Option(None),
        action: str | None = typer.Option(None, help="exact, or a prefix ending in *"),
        about: str | None = typer.Option(None, help="a profile id"),
        since: str | None = typer.Option(None, help="ISO date/time"),
        limit: int = typer.Option(50),
    ) -> None:
        """Audit log entries, newest first."""
        from microseg.privacy.audit import audit_entries

        with workspace() as ws:
            df = audit_entries(
                ws.store,
                actor=actor,
                action=action,
                about=about,
                since=_when(since, "--since"),
                limit=limit,
            )
        if df.empty:
            console.print("no audit entries match")
        else:
            console.print(frame_table(df, "audit log"))
