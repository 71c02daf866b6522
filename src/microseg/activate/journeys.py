"""The journey engine: trigger sweeps, durable step execution, waits, goals, idempotent sends.

One ``run(now)`` cycle:

1. **sweep** every enabled journey's trigger (one set-based query each) and enrol the newly
   eligible profiles, respecting the re-entry policy — enrolment, first-step timers, the
   trigger watermark and trigger matches are written in one transaction, so a crashed sweep
   re-runs over the same window without enrolling anyone twice;
2. **goals**: a goal event after enrolment ends it (``goal``) and cancels its timers;
3. **waits**: matching events (batch imports or the API collector's committed batches — both
   land in ``events``) resolve ``wait_for`` steps before their timeout;
4. **due timers** fire: a step runs, then its transition (timer fired, state advanced, next
   timer scheduled) commits in one transaction. Sends go through the Dispatcher with the
   send key ``journey:profile:step:enrolment``; the ledger makes a repeated attempt after a
   crash a no-op, and a crash before the transition commits leaves the timer due, so a step
   is never lost either;
5. **retries**: ledger rows due again (transient failures, quiet-hours deferrals) are sent.

The clock is injectable (``clock=``) and every method takes ``now``; nothing sleeps.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time as _time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import duckdb
import pandas as pd
from sqlglot import exp

from microseg.activate.channels import Channel
from microseg.activate.dispatch import Dispatcher, message_from_rendered
from microseg.activate.journey_model import (
    EXIT,
    BranchStep,
    DiscountSpec,
    ExitStep,
    Journey,
    SendStep,
    WaitForStep,
    WaitStep,
)
from microseg.activate.journey_report import RunReport, status_frame
from microseg.activate.journey_sweep import sweep_journey, temp_table
from microseg.activate.ledger import FINAL_STATUSES, SendLedger, SendMeta
from microseg.activate.policy import ConsentCheck, FrequencyCap, QuietHours
from microseg.activate.timers import Timer, Timers
from microseg.activate.triggers import property_filters
from microseg.config.models import ProjectSettings
from microseg.console import Progress, SilentProgress
from microseg.errors import ConfigError, NotFoundError, did_you_mean
from microseg.measure.guards import campaign_allows
from microseg.personalize.content import (
    ContentBlock,
    ContentRepo,
    ProfileContextLoader,
    render_block,
)
from microseg.privacy.crypto import KeyRing
from microseg.segments.ast import Segment, parse_duration
from microseg.segments.catalog import Catalog
from microseg.segments.compiler import compile_segment, fill, ts
from microseg.segments.membership import saved_segments
from microseg.store import Store, sql
from microseg.store.duckdb_store import utcnow

ACTIVE = ("active", "waiting")
_HITS = "_journey_hits"
ERROR = "\x00error"  # internal transition target: the enrolment failed
MAX_VISITS = 1000  # steps per enrolment: a branch loop without any wait stops here
_STATE_EVENTS = sql.parse_static(
    "SELECT s.profile_id AS profile_id, s.enrolment AS enrolment, s.visit AS visit,"
    " min(e.ts) AS trigger_at FROM journey_state AS s JOIN identities AS i ON i.profile_id = s.profile_id"
    " JOIN events AS e ON e.id_key = i.id_key WHERE s.journey = :journey"
    " AND list_contains(:types, e.event_type) AND e.ts <= :now"
    " GROUP BY s.profile_id, s.enrolment, s.visit"
)
_CROCKFORD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "ABCDEFGHJKMNPQRSTVWXYZ23456789XY")


def discount_code(keys: KeyRing, journey: str, profile_id: str, spec: DiscountSpec) -> str:
    """A deterministic per-profile code: HMAC(journey, profile) in unambiguous base32."""
    digest = hmac.new(keys.hmac_key, f"discount:{journey}:{profile_id}".encode(), hashlib.sha256)
    body = base64.b32encode(digest.digest()).decode().translate(_CROCKFORD)[: spec.length]
    return f"{spec.prefix}-{body}" if spec.prefix else body


class JourneyEngine:
    """Runs journeys against a store: sweeps, timers, waits, goals and sends."""

    def __init__(
        self,
        store: Store,
        journeys: Mapping[str, Journey] | Iterable[Journey],
        *,
        channels: Mapping[str, Channel],
        keys: KeyRing | None = None,
        settings: ProjectSettings | None = None,
        blocks: Callable[[str], ContentBlock] | None = None,
        segments: Mapping[str, Segment] | None = None,
        clock: Callable[[], datetime] = utcnow,
        consent_ok: ConsentCheck | None = None,
        require_consent: bool = True,
        ledger: SendLedger | None = None,
        loader: ProfileContextLoader | None = None,
        progress: Progress | None = None,
        batch: int = 500,
        max_steps: int = MAX_VISITS,
    ) -> None:
        self.store = store
        items = journeys.values() if isinstance(journeys, Mapping) else journeys
        self.journeys: dict[str, Journey] = {j.name: j for j in items}
        self.channels = dict(channels)
        self.keys = keys
        self.settings = settings
        self.clock = clock
        self._pinned: datetime | None = None
        self.timers = Timers(store)
        self.ledger = ledger or SendLedger(store, keys=keys, clock=self.now)
        self.blocks = blocks or ContentRepo(store).get
        self.loader = loader or ProfileContextLoader(store, keys)
        self.segments = dict(segments or {})
        self.progress = progress or SilentProgress()
        self.batch = batch
        self.max_steps = max_steps
        self.consent_ok = consent_ok
        self.require_consent = require_consent
        self._dispatchers = {name: self._dispatcher(j) for name, j in self.journeys.items()}
        self._retry = Dispatcher(
            self.ledger,
            self.channels,
            consent_ok=consent_ok,
            clock=self.now,
            require_consent=require_consent,
        )
        self._catalog: Catalog | None = None
        self.sweep_errors: list[str] = []

    # -- setup ---------------------------------------------------------------------------
    def now(self) -> datetime:
        """The engine's current time (pinned during ``run(now)``)."""
        return self._pinned or self.clock()

    def _dispatcher(self, journey: Journey) -> Dispatcher:
        for step in journey.steps:
            if isinstance(step, SendStep) and step.send.channel not in self.channels:
                raise ConfigError(
                    f"journey '{journey.name}' step '{step.id}' uses channel"
                    f" '{step.send.channel}'{did_you_mean(step.send.channel, self.channels)}"
                    f" (configured: {', '.join(sorted(self.channels)) or 'none'})"
                )
        caps = [
            FrequencyCap(c.max_sends, parse_duration(c.window), c.channel, c.purpose)
            for c in journey.frequency_caps
        ]
        q = journey.quiet_hours
        quiet = QuietHours(q.start, q.end, default_tz=q.timezone) if q is not None else None
        return Dispatcher(
            self.ledger,
            self.channels,
            consent_ok=self.consent_ok,
            caps=caps,
            quiet=quiet,
            clock=self.now,
            require_consent=self.require_consent,
        )

    def _compile_env(self) -> tuple[Catalog, dict[str, Segment], frozenset[str]]:
        if self._catalog is None:
            self._catalog = Catalog.from_store(self.store, self.settings)
        saved = saved_segments(self.store)
        return self._catalog, {**saved, **self.segments}, frozenset(saved)

    def journey(self, name: str) -> Journey:
        try:
            return self.journeys[name]
        except KeyError:
            raise NotFoundError(f"no journey '{name}'{did_you_mean(name, self.journeys)}") from None

    def _enabled(self) -> list[Journey]:
        return [j for j in self.journeys.values() if j.enabled]

    def _log(self, journey: str, pid: str, enrolment: int, step: str | None, action: str,
             at: datetime, detail: str | None = None) -> None:  # fmt: skip
        self.store.execute(
            "INSERT INTO journey_log VALUES (?, ?, ?, ?, ?, ?, ?)",
            [journey, pid, enrolment, step, action, at, detail],
        )

    # -- 1. sweep ------------------------------------------------------------------------
    def sweep(self, now: datetime | None = None) -> dict[str, int]:
        """Enrol newly eligible profiles into every enabled journey; name -> enrolled."""
        now = now or self.now()
        self._catalog = None
        self.sweep_errors = []
        out: dict[str, int] = {}
        journeys = self._enabled()
        self.progress.start("sweeping journey triggers", len(journeys))
        try:
            for journey in journeys:
                try:
                    out[journey.name] = self.sweep_journey(journey, now)
                except duckdb.Error as exc:  # e.g. a trait trigger before traits are computed
                    out[journey.name] = 0
                    first = str(exc).splitlines()[0]
                    self.sweep_errors.append(f"{journey.name}: trigger not evaluated: {first}")
                self.progress.update(1, note=f"{journey.name}: {out[journey.name]}")
        finally:
            self.progress.stop()
        return out

    def sweep_journey(self, journey: Journey, now: datetime) -> int:
        """Sweep one journey's trigger at ``now``; returns how many profiles enrolled."""
        return sweep_journey(self.store, journey, now, self._compile_env)

    # -- 2. goals ------------------------------------------------------------------------
    def _state_events(
        self, journey: str, types: list[str], where: Mapping[str, Any], now: datetime,
        extra: list[exp.Expr],
    ) -> exp.Expr:  # fmt: skip
        query = fill(_STATE_EVENTS, journey=sql.lit(journey), types=exp.Array(
            expressions=[sql.lit(t) for t in types]), now=ts(now))  # fmt: skip
        assert isinstance(query, exp.Select)
        tests = [*extra, *property_filters(where, self.store.columns("events"))]
        return query.where(exp.and_(*tests), copy=False) if tests else query

    def apply_goals(self, now: datetime | None = None) -> int:
        """End enrolments whose goal event happened after they entered; cancel their timers."""
        now = now or self.now()
        total = 0
        for journey in self._enabled():
            if journey.goal is None:
                continue
            status = sql.col("status", "s")
            active = exp.In(this=status, expressions=[sql.lit(s) for s in ACTIVE])
            done_date = exp.and_(
                exp.In(this=status.copy(), expressions=[sql.lit("completed"), sql.lit("exited")]),
                exp.Not(this=exp.Is(this=sql.col("occurrence", "s"), expression=exp.Null())),
            )
            after = exp.GT(this=sql.col("ts", "e"), expression=sql.col("entered_at", "s"))
            query = self._state_events(
                journey.name, journey.goal.types, journey.goal.where, now,
                [exp.Paren(this=exp.or_(active, done_date)), after],
            )  # fmt: skip
            with self.store.lock:
                temp_table(self.store, _HITS, query)
                try:
                    with self.store.transaction():
                        n = int(self.store.scalar(f"SELECT count(*) FROM {_HITS}") or 0)
                        if n:
                            self._end_hits(journey.name, now)
                finally:
                    self.store.execute(f"DROP TABLE IF EXISTS {_HITS}")
            total += n
        return total

    def _end_hits(self, name: str, now: datetime) -> None:
        self.store.execute(
            "UPDATE journey_state SET status = 'goal', updated_at = ?, wait_since = NULL,"
            f" wait_until = NULL WHERE journey = ? AND profile_id IN (SELECT profile_id FROM {_HITS})",
            [now, name],
        )
        self.store.execute(
            "UPDATE timers SET fired_at = ?, outcome = 'cancelled: goal' WHERE journey = ?"
            f" AND fired_at IS NULL AND profile_id IN (SELECT profile_id FROM {_HITS})",
            [now, name],
        )
        self.store.execute(
            "INSERT INTO journey_log SELECT ?, profile_id, enrolment, NULL, 'goal', ?,"
            f" CAST(trigger_at AS VARCHAR) FROM {_HITS}",
            [name, now],
        )

    # -- 3. waits ------------------------------------------------------------------------
    def resolve_waits(self, now: datetime | None = None) -> int:
        """Resolve ``wait_for`` steps whose event arrived before the timeout."""
        now = now or self.now()
        total = 0
        for journey in self._enabled():
            for step in journey.steps:
                if not isinstance(step, WaitForStep):
                    continue
                s, e = "s", "e"
                tests: list[exp.Expr] = [
                    exp.EQ(this=sql.col("step", s), expression=sql.lit(step.id)),
                    exp.EQ(this=sql.col("status", s), expression=sql.lit("waiting")),
                    exp.GT(this=sql.col("ts", e), expression=sql.col("wait_since", s)),
                    exp.LTE(this=sql.col("ts", e), expression=sql.col("wait_until", s)),
                ]
                query = self._state_events(journey.name, step.types, step.where, now, tests)
                hits = self.store.rows(query)
                target = step.on_event if step.on_event is not None else journey.following(step.id)
                for pid, enrolment, visit, at in hits:
                    tid = f"{journey.name}:{pid}:{enrolment}:{step.id}:{visit}:timeout"
                    with self.store.transaction():
                        self.timers.fire(tid, now, "event")
                        self._advance(journey, str(pid), int(enrolment), int(visit), step.id,
                                      target, at, now, "event arrived")  # fmt: skip
                total += len(hits)
        return total

    # -- 4. timers -----------------------------------------------------------------------
    def run_due(self, now: datetime | None = None, report: RunReport | None = None) -> int:
        """Fire every due timer (and the immediate steps they lead to); returns steps run."""
        now = now or self.now()
        report = report or RunReport(now)
        names = [j.name for j in self._enabled()]
        fired = 0
        while True:
            due = self.timers.due(now, self.batch, names)
            if not due:
                break
            self.progress.start("running journey steps", len(due))
            try:
                for timer in due:
                    self._fire(timer, now, report)
                    fired += 1
                    self.progress.update(1)
            finally:
                self.progress.stop()
        report.fired += fired
        return fired

    def _state(self, timer: Timer) -> tuple[Any, ...] | None:
        rows = self.store.rows(
            "SELECT step, status, enrolment, visit, occurrence FROM journey_state"
            " WHERE journey = ? AND profile_id = ?",
            [timer.journey, timer.profile_id],
        )
        return rows[0] if rows else None

    def _fire(self, timer: Timer, now: datetime, report: RunReport) -> None:
        journey = self.journeys[timer.journey]
        state = self._state(timer)
        if (
            state is None
            or state[0] != timer.step
            or state[1] not in ACTIVE
            or int(state[2]) != timer.enrolment
            or timer.step not in journey.by_id
        ):
            with self.store.transaction():
                self.timers.fire(timer.timer_id, now, "stale")
            return
        _, _status, enrolment, visit, occurrence = state
        pid, step = timer.profile_id, journey.step(timer.step)
        try:
            if timer.kind == "timeout":
                target = (
                    step.on_timeout if step.on_timeout is not None else journey.following(step.id)
                )
                self._transition(timer, journey, pid, enrolment, visit, target, now, "timed out")
            elif timer.kind == "wake":
                self._transition(timer, journey, pid, enrolment, visit, journey.following(step.id),
                                 now, "wait over")  # fmt: skip
            elif isinstance(step, SendStep):
                outcome = self._send(journey, step, pid, enrolment, occurrence, now)
                report.sends[outcome] += 1
                self._transition(timer, journey, pid, enrolment, visit, journey.following(step.id),
                                 now, f"send {outcome}")  # fmt: skip
            elif isinstance(step, WaitStep):
                with self.store.transaction():
                    self.timers.fire(timer.timer_id, now, "waiting")
                    self.timers.schedule(journey.name, pid, enrolment, step.id, visit, "wake",
                                         timer.due_at + step.delay)  # fmt: skip
                    self._log(journey.name, pid, enrolment, step.id, "wait", now, step.wait)
            elif isinstance(step, WaitForStep):
                until = timer.due_at + step.delay
                with self.store.transaction():
                    self.timers.fire(timer.timer_id, now, "waiting for event")
                    self.store.execute(
                        "UPDATE journey_state SET status = 'waiting', wait_since = ?,"
                        " wait_until = ?, updated_at = ? WHERE journey = ? AND profile_id = ?",
                        [timer.due_at, until, now, journey.name, pid],
                    )
                    self.timers.schedule(
                        journey.name, pid, enrolment, step.id, visit, "timeout", until
                    )
                    self._log(journey.name, pid, enrolment, step.id, "wait_for", now,
                              ",".join(step.types))  # fmt: skip
            elif isinstance(step, BranchStep):
                target, why = self._branch(journey, step, pid, now)
                self._transition(timer, journey, pid, enrolment, visit, target, now, why)
            elif isinstance(step, ExitStep):
                self._transition(timer, journey, pid, enrolment, visit, EXIT, now, str(step.exit))
        except Exception as exc:  # one profile's failure must not stop the others
            message = f"{type(exc).__name__}: {exc}"
            report.errors.append(f"{journey.name}/{pid}/{step.id}: {message}")
            with self.store.transaction():
                self.timers.fire(timer.timer_id, now, f"error: {message}")
                self.store.execute(
                    "UPDATE journey_state SET status = 'error', updated_at = ? WHERE journey = ?"
                    " AND profile_id = ?",
                    [now, journey.name, pid],
                )
                self._log(journey.name, pid, enrolment, step.id, "error", now, message[:500])

    def _transition(
        self, timer: Timer, journey: Journey, pid: str, enrolment: int, visit: int,
        target: str | None, now: datetime, why: str,
    ) -> None:  # fmt: skip
        with self.store.transaction():
            self.timers.fire(timer.timer_id, now, why)
            self._advance(
                journey, pid, enrolment, visit, timer.step, target, timer.due_at, now, why
            )

    def _advance(
        self, journey: Journey, pid: str, enrolment: int, visit: int, step: str,
        target: str | None, due_at: datetime, now: datetime, why: str,
    ) -> None:  # fmt: skip
        """Move an enrolment to ``target`` (call inside a transaction)."""
        if target is not None and target != EXIT and visit >= self.max_steps:
            why, target = f"stopped after {self.max_steps} steps (a loop without a wait?)", ERROR
        if target is None or target in (EXIT, ERROR):
            status = {None: "completed", EXIT: "exited", ERROR: "error"}[target]
            self.store.execute(
                "UPDATE journey_state SET status = ?, updated_at = ?, wait_since = NULL,"
                " wait_until = NULL WHERE journey = ? AND profile_id = ?",
                [status, now, journey.name, pid],
            )
            self._log(journey.name, pid, enrolment, step, status, now, why)
            return
        self.store.execute(
            "UPDATE journey_state SET step = ?, status = 'active', visit = ?, updated_at = ?,"
            " wait_since = NULL, wait_until = NULL WHERE journey = ? AND profile_id = ?",
            [target, visit + 1, now, journey.name, pid],
        )
        self.timers.schedule(journey.name, pid, enrolment, target, visit + 1, "step", due_at)
        self._log(journey.name, pid, enrolment, step, "next", now, f"{why} -> {target}")

    # -- step actions ----------------------------------------------------------------------
    def send_key(self, journey: str, pid: str, step: str, enrolment: int) -> str:
        return f"{journey}:{pid}:{step}:{enrolment}"

    def _send(
        self, journey: Journey, step: SendStep, pid: str, enrolment: int,
        occurrence: str | None, now: datetime,
    ) -> str:  # fmt: skip
        spec = step.send
        key = self.send_key(journey.name, pid, step.id, enrolment)
        known = self.ledger.status(key)
        if known in FINAL_STATUSES:
            return "duplicate" if known == "sent" else str(known)
        allowed, reason = campaign_allows(self.store, journey.campaign or journey.name, pid)
        if not allowed:  # paused or throttled by the campaign guards (automated optimisation)
            self.ledger.record(key, SendMeta(spec.channel, pid, spec.purpose, spec.block))
            self.ledger.skip(key, reason)
            return "skipped"
        block = self.blocks(spec.block)
        ctx = self.loader.load(pid, as_of=now)
        ctx.update({"journey": journey.name, "step": step.id, "enrolment": enrolment})
        if occurrence:
            date, _, offset = occurrence.partition("|")
            ctx["trigger_date"] = date
            ctx["days_before"] = -int(offset) if int(offset) <= 0 else None
            ctx["days_after"] = int(offset) if int(offset) > 0 else None
        if spec.discount is not None:
            if self.keys is None:
                raise ConfigError("discount codes need the project keys (keys=...)")
            ctx["discount_code"] = discount_code(self.keys, journey.name, pid, spec.discount)
            ctx["discount_percent"] = spec.discount.percent
        rendered = render_block(block, ctx, channel=spec.render_as)
        to = ctx.get(spec.to)
        data = {"journey": journey.name, "step": step.id, "enrolment": enrolment}
        if "discount_code" in ctx:
            data["discount_code"] = ctx["discount_code"]
        if not to:
            meta = SendMeta(spec.channel, pid, spec.purpose, rendered.block, rendered.version)
            self.ledger.record(key, meta)
            self.ledger.skip(key, f"no '{spec.to}' for the profile")
            return "skipped"
        message = message_from_rendered(
            rendered, key=key, to=str(to), channel=spec.channel, profile_id=pid,
            purpose=spec.purpose, data=data,
        )  # fmt: skip
        return self._dispatchers[journey.name].deliver(message).status

    def _branch(
        self, journey: Journey, step: BranchStep, pid: str, now: datetime
    ) -> tuple[str | None, str]:
        catalog, segments, computed = self._compile_env()
        for i, case in enumerate(step.branch):
            seg = Segment(name=f"branch_{step.id}_{i}", rule=case.if_)
            query = compile_segment(seg, now, catalog=catalog, segments=segments, computed=computed)
            test = (
                exp.select(exp.Count(this=exp.Star()))
                .from_(exp.Subquery(this=query, alias=exp.TableAlias(this=sql.ident("q"))))
                .where(exp.EQ(this=sql.col("profile_id", "q"), expression=sql.lit(pid)))
            )
            if self.store.scalar(test):
                return case.goto, f"case {i + 1} ({case.if_.label})"
        if step.else_ is not None:
            return step.else_, "no case matched"
        return journey.following(step.id), "no case matched (next step)"

    # -- 5. the cycle --------------------------------------------------------------------
    def retry_sends(self, now: datetime | None = None) -> int:
        """Re-deliver ledger rows that are due again (transient failures, deferrals)."""
        return len(self._retry.retry_due(now or self.now()))

    def run(self, now: datetime | None = None) -> RunReport:
        """One full cycle at ``now``: sweep, goals, waits, due timers, ledger retries."""
        now = now or self.clock()
        started = _time.perf_counter()
        self._pinned = now
        try:
            report = RunReport(now)
            report.enrolled = self.sweep(now)
            report.errors.extend(self.sweep_errors)
            report.goals = self.apply_goals(now)
            report.waits_resolved = self.resolve_waits(now)
            self.run_due(now, report)
            report.retried = self.retry_sends(now)
        finally:
            self._pinned = None
        report.seconds = _time.perf_counter() - started
        return report

    def run_until(
        self, until: datetime, step: timedelta, start: datetime | None = None
    ) -> list[RunReport]:
        """Simulate the scheduler: a cycle every ``step`` from ``start`` (default now) to ``until``."""
        if step <= timedelta(0):
            raise ConfigError("the loop step must be positive")
        at = start or self.clock()
        reports = []
        while at <= until:
            reports.append(self.run(at))
            at += step
        return reports

    # -- reading -------------------------------------------------------------------------
    def status(self, journey: str | None = None) -> pd.DataFrame:
        """Enrolments per journey and status, with current step counts."""
        return status_frame(self.store, journey)

    def state(self, journey: str, profile_id: str) -> dict[str, Any] | None:
        df = self.store.df(
            "SELECT * FROM journey_state WHERE journey = ? AND profile_id = ?",
            [journey, profile_id],
        )
        return None if df.empty else df.iloc[0].to_dict()

    def log(self, journey: str, profile_id: str | None = None) -> pd.DataFrame:
        return self.store.df(
            "SELECT * FROM journey_log WHERE journey = ? AND (CAST(? AS VARCHAR) IS NULL OR"
            " profile_id = ?) ORDER BY logged_at, enrolment, rowid",
            [journey, profile_id, profile_id],
        )
