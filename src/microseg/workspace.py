"""The Workspace façade: one object owning the project, store, keys and progress reporting.

The CLI, HTTP API and dashboard are thin shells over it.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd

from microseg.config.models import ProjectSettings
from microseg.config.project import Project
from microseg.config.sources import SourceSpec
from microseg.config.yamlio import Document
from microseg.console import Progress, SilentProgress
from microseg.errors import NotFoundError, did_you_mean
from microseg.ingest import quarantine as _quarantine
from microseg.ingest.pipeline import ImportResult, import_events
from microseg.privacy.crypto import KeyRing
from microseg.store import Store


class Workspace:
    """An open microseg project."""

    def __init__(
        self,
        project: Project,
        *,
        store: Store | None = None,
        progress: Progress | None = None,
        actor: str = "library",
        memory_limit: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.project = project
        self.store = store or Store(project.store_path, memory_limit=memory_limit, threads=threads)
        self.progress: Progress = progress or SilentProgress()
        self.actor = actor
        self._keys: KeyRing | None = None
        self._remove_folder: weakref.finalize[Any, Any] | None = None  # ephemeral only

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path = ".", **kwargs: Any) -> Workspace:
        """Open the project in ``root`` (or a parent folder)."""
        return cls(Project.load(root), **kwargs)

    @classmethod
    def init(cls, root: str | Path, name: str | None = None, **kwargs: Any) -> Workspace:
        """Create a project folder from the templates and open it."""
        return cls(Project.init(root, name), **kwargs)

    @classmethod
    def ephemeral(cls, settings: ProjectSettings | None = None, **kwargs: Any) -> Workspace:
        """An in-memory workspace in a temporary folder (notebooks, tests). The folder, with the
        key file made in it, is deleted when the workspace is closed, collected, or at exit."""
        root = Path(tempfile.mkdtemp(prefix="microseg-"))
        settings = settings or ProjectSettings()
        project = Project(root, settings, Document(None, str(root / "microseg.yaml")))
        workspace = cls(project, store=Store(None), **kwargs)
        workspace._remove_folder = weakref.finalize(workspace, shutil.rmtree, root, True)
        return workspace

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()
        if self._remove_folder is not None:
            self._remove_folder()  # runs once; later calls do nothing

    @property
    def settings(self) -> ProjectSettings:
        return self.project.settings

    @property
    def keys(self) -> KeyRing:
        """The project's key ring, read from (or created in) the key file outside the store."""
        if self._keys is None:
            self._keys = KeyRing.load_or_create(self.project.key_path)
        return self._keys

    # -- ingestion ----------------------------------------------------------------------
    def source(self, name: str) -> SourceSpec:
        try:
            return self.settings.sources[name]
        except KeyError:
            known = list(self.settings.sources)
            raise NotFoundError(
                f"no source '{name}' in microseg.yaml{did_you_mean(name, known)}"
            ) from None

    def import_events(
        self,
        path: str | Path,
        *,
        source: str | None = None,
        spec: SourceSpec | None = None,
    ) -> ImportResult:
        """Import a CSV / JSON Lines / Parquet file of events (see SourceSpec for mapping)."""
        if spec is None and source is not None:
            spec = self.source(source)
        return import_events(
            self.store,
            self.settings,
            self.keys,
            path,
            spec,
            source_name=source,
            progress=self.progress,
        )

    def quarantine(self, status: str | None = "open", reason: str | None = None) -> pd.DataFrame:
        return _quarantine.list_quarantine(self.store, status, reason)

    def replay_quarantine(self, reason: str | None = None) -> list[ImportResult]:
        return _quarantine.replay(
            self.store, self.settings, self.keys, reason=reason, progress=self.progress
        )

    def import_profiles(self, path: str | Path, **kwargs: Any) -> Any:
        """Import CRM / enrichment / survey attributes (see ingest.profiles.import_profiles)."""
        from microseg.ingest.profiles import import_profiles

        return import_profiles(
            self.store, self.settings, self.keys, path, progress=self.progress, **kwargs
        )

    # -- identities -----------------------------------------------------------------------
    def resolve_identities(self, probabilistic: bool | None = None) -> Any:
        """Merge profiles linked by shared ids (and attribute matches), with the CDP guards."""
        from microseg.ingest.identity import resolve

        return resolve(self.store, self.settings, keys=self.keys, probabilistic=probabilistic)

    def merge_profiles(
        self, a: str, b: str, *, override: bool = False, reason: str | None = None
    ) -> Any:
        from microseg.ingest.identity import merge_profiles

        return merge_profiles(
            self.store,
            a,
            b,
            override=override,
            actor=self.actor,
            settings=self.settings,
            reason=reason,
        )

    def unmerge(self, merge_id: str) -> Any:
        from microseg.ingest.identity import unmerge

        return unmerge(self.store, merge_id, actor=self.actor)

    # -- traits, segments, quality --------------------------------------------------------
    def compute_traits(self, as_of: datetime | None = None) -> Any:
        """Compute every trait of the project's traits.yaml into the `traits` table."""
        from microseg.traits.compute import compute_traits, load_project_traits

        traitset = load_project_traits(self.project.root, self.settings)
        return compute_traits(self.store, self.settings, traitset, as_of, self.progress)

    def trait_frame(self) -> pd.DataFrame:
        from microseg.traits.compute import trait_frame

        return trait_frame(self.store)

    def compute_segments(self, as_of: datetime | None = None, **kwargs: Any) -> Any:
        """Evaluate the project's segments/*.yaml and update memberships and history."""
        from microseg.segments import compute_segments

        return compute_segments(self, as_of=as_of, progress=self.progress, **kwargs)

    def recommend(
        self, ref: str, k: int = 10, *, strategy: str = "blend", as_of: datetime | None = None
    ) -> pd.DataFrame:
        """Top-``k`` item recommendations for a profile (``personalize.recommend``)."""
        from microseg.personalize.recommend import recommend

        return recommend(self.store, [self.profile_id(ref)], k=k, strategy=strategy, as_of=as_of)

    def evaluate_recommendations(self, cutoff: datetime, **kwargs: Any) -> Any:
        """Offline hit rate / recall@k of the recommenders on a temporal split at ``cutoff``."""
        from microseg.personalize.recommend_eval import evaluate

        return evaluate(self.store, cutoff, progress=self.progress, **kwargs)

    def journeys(self, **kwargs: Any) -> Any:
        """The journey engine over the project's ``journeys/*.yaml`` (run it with ``.run()``)."""
        from microseg.activate.journey_project import project_engine

        return project_engine(self, **kwargs)

    # -- privacy ---------------------------------------------------------------------------
    def record_consent(self, ref: str, purpose: str, granted: bool, **kwargs: Any) -> Any:
        """Append a consent grant or revoke (audited, effective at once in live components)."""
        from microseg.privacy.consent import record_consent

        kwargs.setdefault("source", "library")
        kwargs.setdefault("actor", self.actor)
        return record_consent(
            self.store, self.profile_id(ref), purpose, granted, settings=self.settings, **kwargs
        )

    def consent_state(self, ref: str, purpose: str, at: datetime | None = None) -> Any:
        """The consent decision in force for a profile and purpose."""
        from microseg.privacy.consent import consent_state

        return consent_state(self.store, self.profile_id(ref), purpose, at)

    def import_consents(self, path: str | Path, **kwargs: Any) -> Any:
        """Append the consent decisions of a CSV file."""
        from microseg.privacy.consent_import import import_consents

        return import_consents(self, path, actor=self.actor, **kwargs)

    def export_subject(self, ref: str) -> dict[str, Any]:
        """Everything held about a person, as JSON-ready data (PII reads audited)."""
        from microseg.privacy.subject import export_subject

        return export_subject(self, ref, actor=self.actor)

    def correct_subject(self, ref: str, field_name: str, value: str | None) -> dict[str, Any]:
        """Correct (or remove with None) one attribute of a person; audited."""
        from microseg.privacy.subject import correct_subject

        return correct_subject(self, ref, field_name, value, actor=self.actor)

    def erase_subject(self, ref: str, reason: str, **kwargs: Any) -> Any:
        """Erase a person from every table and file, crypto-shredding their key; audited."""
        from microseg.privacy.erasure import erase_subject

        return erase_subject(self, ref, reason, actor=self.actor, **kwargs)

    def run_retention(self, now: datetime | None = None, *, dry_run: bool = False) -> Any:
        """Apply the retention periods of microseg.yaml (privacy.retention_days)."""
        from microseg.privacy.retention import run_retention

        return run_retention(self, now, dry_run=dry_run, actor=self.actor)

    def audit(self, **kwargs: Any) -> pd.DataFrame:
        """Audit-log rows, newest first (filters: actor, action, target, about, since)."""
        from microseg.privacy.audit import audit_entries

        return audit_entries(self.store, **kwargs)

    def kpis(self, **kwargs: Any) -> pd.DataFrame:
        """Per-segment KPIs over time (``measure.kpis.segment_kpis``)."""
        from microseg.measure.kpis import segment_kpis

        return segment_kpis(self.store, taxonomy=self.settings.taxonomy, **kwargs)

    def report(self, out_dir: str | Path, as_of: datetime | None = None, **kwargs: Any) -> Path:
        """Write the HTML/PNG report of segments, experiments and KPIs; returns report.html."""
        from microseg.report import build_report

        return build_report(self, Path(out_dir), as_of=as_of, **kwargs)

    def check_campaigns(self, as_of: datetime | None = None, apply: bool = False) -> Any:
        """Evaluate the campaign guard rules (``campaigns/*.yaml``); ``apply`` acts on them."""
        from microseg.measure.guards import check_campaigns

        return check_campaigns(
            self.store,
            self.project.root,
            project=self.project,
            as_of=as_of,
            apply=apply,
            actor=self.actor,
        )

    def quality_report(self, **kwargs: Any) -> Any:
        from microseg.ingest.quality import quality_report

        return quality_report(self.store, self.settings, **kwargs)

    # -- lookups ------------------------------------------------------------------------
    def profile_id(self, ref: str) -> str:
        """Resolve a profile id, an id key (``user_id:123``) or a bare id value to the live
        profile (following merges)."""
        found = self.store.scalar(
            "SELECT coalesce(merged_into, profile_id) FROM profiles WHERE profile_id = ?", [ref]
        )
        if found:
            return str(found)
        found = self.store.scalar("SELECT profile_id FROM identities WHERE id_key = ?", [ref])
        if found:
            return str(found)
        rows = self.store.rows(
            "SELECT DISTINCT profile_id FROM identities WHERE id_value = ?", [ref]
        )
        if len(rows) == 1:
            return str(rows[0][0])
        if len(rows) > 1:
            raise NotFoundError(
                f"'{ref}' matches {len(rows)} profiles; use a typed key like user_id:{ref}"
            )
        raise NotFoundError(f"no profile for '{ref}'")

    def events(self, profile_ref: str, limit: int = 1000) -> pd.DataFrame:
        """The profile's events, newest first (via all its linked id keys)."""
        pid = self.profile_id(profile_ref)
        return self.store.df(
            "SELECT e.* FROM events e JOIN identities i ON i.id_key = e.id_key"
            " WHERE i.profile_id = ? ORDER BY e.ts DESC LIMIT ?",
            [pid, limit],
        )

    def identities(self, profile_ref: str) -> pd.DataFrame:
        pid = self.profile_id(profile_ref)
        return self.store.df(
            "SELECT id_key, id_type, first_seen, last_seen, linked_by FROM identities"
            " WHERE profile_id = ? ORDER BY id_type, id_key",
            [pid],
        )

    def profile_view(self, profile_ref: str) -> dict[str, Any]:
        """Everything the engine shows about a profile: ids, attributes and current traits."""
        pid = self.profile_id(profile_ref)
        view: dict[str, Any] = {"profile_id": pid}
        view["identities"] = self.identities(pid).to_dict(orient="records")
        attrs = self.store.rows(
            "SELECT name, coalesce(value, CAST(value_num AS VARCHAR)) FROM profile_attributes"
            " WHERE profile_id = ? ORDER BY name",
            [pid],
        )
        view["attributes"] = dict(attrs)
        if self.store.table_exists("traits"):
            df = self.store.df("SELECT * FROM traits WHERE profile_id = ?", [pid])
            view["traits"] = (
                {}
                if df.empty
                else {k: v for k, v in df.iloc[0].to_dict().items() if k != "profile_id"}
            )
        return view

    def counts(self) -> dict[str, int]:
        """Headline counts of what the store holds."""
        out = {}
        for name, query in {
            "events": "SELECT count(*) FROM events",
            "profiles": "SELECT count(*) FROM profiles WHERE merged_into IS NULL",
            "identities": "SELECT count(*) FROM identities",
            "sessions": "SELECT count(DISTINCT session_id) FROM events",
            "quarantined_open": "SELECT count(*) FROM quarantine WHERE status = 'open'",
        }.items():
            out[name] = int(self.store.scalar(query) or 0)
        return out
