"""The decision engine: evaluate a placement's rules for a profile from in-memory state only.

For each requested placement the rules are tried by descending priority. A rule applies when
all its ``when`` conditions hold (segment membership and traits from the
:class:`~microseg.api.serving.ServingState`, "did / did not within T" from the
:class:`~microseg.personalize.recent_events.RecentEvents` rings), its consent purpose is
granted (:class:`~microseg.personalize.decision_state.ConsentCache`) and its frequency cap
is not reached (:class:`~microseg.personalize.decision_state.ImpressionCounter`). A profile
in the rule's sticky control group (hash of profile, placement and rule) gets the placement's
fallback block, flagged ``control``; control responses do not count against caps. Without an
applicable rule the fallback is served. Every served (non-control) decision of a capped rule
is an impression.

The chosen block is rendered with precompiled templates; its context is the profile's cached
fields (:class:`~microseg.personalize.decision_state.ContextCache`), current traits,
segments, and ``trigger`` (the event that satisfied the rule's first ``did``). Every decision
says why: conditions with the values seen, consent, cap, control bucket and skipped rules.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from microseg.errors import DefinitionError, NotFoundError, Problem, did_you_mean
from microseg.personalize.content import (
    CART_EVENTS,
    CHANNELS,
    DEVICES,
    PURCHASE_EVENTS,
    ContentBlock,
    check_block_templates,
    render_block,
    select_variant,
)
from microseg.personalize.decision_blocks import (
    load_project_decisions,
    template_names,
    trigger_fields,
)
from microseg.personalize.decision_rules import (
    EventCondition,
    Placement,
    Rule,
    Serve,
    TraitCondition,
    control_bucket,
    project_decision_files,
    trait_passes,
)
from microseg.personalize.decision_state import ConsentCache, ContextCache, ImpressionCounter
from microseg.personalize.recent_events import ALL, RecentEvent, RecentEvents
from microseg.personalize.templates import TemplateCache, default_cache
from microseg.store import Store, utcnow

log = logging.getLogger("microseg.personalize.decisions")
MAX_PLACEMENTS = 20
"""Most placements one request may ask for."""
CART_LOOKBACK = timedelta(days=30)
"""How far back ``abandoned_items`` / ``last_purchase`` look (recent-event rings)."""
MAX_CART_ITEMS = 20
PRUNE_EVERY = timedelta(minutes=5)
"""How often upkeep drops expired events from the rings (reads ignore them anyway)."""


def cap_key(placement: str, rule: Rule) -> str:
    assert rule.cap is not None
    return (
        f"block:{rule.serve.block}"
        if rule.cap.scope == "block"
        else f"rule:{placement}/{rule.name}"
    )


@dataclass
class DecisionRequest:
    """What a caller asks: placements, channel and device."""

    placements: Sequence[str]
    channel: str = "web"
    device: str = "any"


@dataclass(frozen=True)
class _Plan:
    """A rule with everything the request path needs precomputed (windows, texts, keys)."""

    rule: Rule
    name: str
    segments: list[str]
    in_: tuple[tuple[str, str], ...]  # (segment, description)
    not_in: tuple[tuple[str, str], ...]
    traits: tuple[tuple[TraitCondition, str], ...]
    did: tuple[tuple[EventCondition, str, timedelta], ...]
    did_not: tuple[tuple[EventCondition, str, timedelta], ...]
    cap_key: str | None
    cap_window: timedelta | None

    @classmethod
    def of(cls, placement: str, rule: Rule) -> _Plan:
        when = rule.when
        return cls(
            rule,
            rule.name,
            sorted(when.in_),
            tuple((s, f"in segment {s}") for s in when.in_),
            tuple((s, f"not in segment {s}") for s in when.not_in),
            tuple((c, c.describe()) for c in when.traits),
            tuple((e, e.describe(False), e.window) for e in when.did),
            tuple((e, e.describe(True), e.window) for e in when.did_not),
            cap_key(placement, rule) if rule.cap is not None else None,
            rule.cap.window if rule.cap is not None else None,
        )


@dataclass
class _Compiled:
    """A placement with its rules in order and its blocks resolved."""

    name: str
    spec: Placement
    rules: list[Rule]
    plans: list[_Plan] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.plans = [_Plan.of(self.name, r) for r in self.rules]


class DecisionEngine:
    """Evaluates placements for profiles; reads only memory on the request path."""

    def __init__(
        self,
        placements: Mapping[str, Placement],
        blocks: Mapping[str, ContentBlock],
        state: Any,
        *,
        store: Store | None = None,
        keys: Any = None,
        cache: TemplateCache | None = None,
        per_type: int = 32,
    ) -> None:
        self.placements = {n: _Compiled(n, p, p.ordered()) for n, p in placements.items()}
        self.blocks = dict(blocks)
        self.state = state
        self.store = store
        self.cache = cache if cache is not None else default_cache()
        self._pinned: dict[tuple[str, str], ContentBlock] = {}
        # (block, pinned variant, channel, device) -> the block reduced to the variant to
        # render and the names its templates read (None: no variant for the channel)
        self._chosen: dict[
            tuple[str, str | None, str, str], tuple[ContentBlock, frozenset[str]] | None
        ] = {}
        self._check_blocks()
        watch: dict[str, set[str]] = {}
        lookback = timedelta(0)
        purposes: set[str] = set()
        limits: dict[str, tuple[int, timedelta]] = {}
        for placement in placements.values():
            for rule in placement.rules:
                for ev in (*rule.when.did, *rule.when.did_not):
                    watch.setdefault(ev.event, set()).update(ev.where)
                    lookback = max(lookback, ev.window)
                if rule.consent:
                    purposes.add(rule.consent)
                if rule.cap is not None:
                    key = cap_key(self._name_of(placement), rule)
                    old = limits.get(key, (0, timedelta(0)))
                    limits[key] = (max(old[0], rule.cap.max), max(old[1], rule.cap.window))
        trigger = trigger_fields(self.blocks.values(), self.cache)
        for props in watch.values():
            props.update(trigger)
        names = template_names(self.blocks.values(), self.cache)
        self._cart_context = bool(names & {"abandoned_items", "last_purchase"})
        if self._cart_context:  # as ProfileContextLoader: cart since the last purchase
            for etype in (*CART_EVENTS, *PURCHASE_EVENTS):
                watch.setdefault(etype, set()).add(ALL)
            lookback = max(lookback, CART_LOOKBACK)
        self.recent = RecentEvents(watch, lookback, per_type=per_type)
        self.consents = ConsentCache(purposes)
        self.impressions = ImpressionCounter(limits)
        self.contexts = ContextCache(store, keys, names) if store else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Any = None
        self.decisions_served = 0
        self._pruned_at: datetime | None = None

    def _name_of(self, placement: Placement) -> str:
        return next(n for n, c in self.placements.items() if c.spec is placement)

    def _check_blocks(self) -> None:
        problems: list[Problem] = []
        for compiled in self.placements.values():
            serves = [compiled.spec.fallback, *(r.serve for r in compiled.rules)]
            for serve in serves:
                block = self.blocks.get(serve.block)
                if block is None:
                    msg = f"placement '{compiled.name}' serves unknown block '{serve.block}'"
                    problems.append(Problem(msg + did_you_mean(serve.block, self.blocks)))
                    continue
                if serve.variant is not None:
                    found = [v for v in block.spec.variants if v.id == serve.variant]
                    if not found:
                        msg = f"block '{serve.block}' has no variant '{serve.variant}'"
                        problems.append(Problem(msg))
                        continue
                    spec = block.spec.model_copy(update={"variants": found})
                    self._pinned[(serve.block, serve.variant)] = ContentBlock(
                        block.name, spec, block.version, block.source_file, block.created_at
                    )
        for name, block in self.blocks.items():
            problems.extend(check_block_templates(name, block.spec, cache=self.cache))
        if problems:
            raise DefinitionError(problems)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_project(
        cls,
        root: str | Path,
        state: Any,
        *,
        store: Store | None = None,
        keys: Any = None,
        settings: Any = None,
        cache: TemplateCache | None = None,
    ) -> DecisionEngine | None:
        """An engine over ``<root>/decisions/*.yaml``, or None when there are none.

        Blocks come from the content store (latest version) when stored there, else from the
        project's ``content/*.yaml`` (version 0). Raises DefinitionError on bad files."""
        files = project_decision_files(root)
        if not files:
            return None
        placements, blocks = load_project_decisions(root, files, store, settings, cache)
        return cls(placements, blocks, state, store=store, keys=keys, cache=cache)

    def load(self, now: datetime | None = None) -> dict[str, int]:
        """Fill the in-memory state from the store (startup); returns what was loaded."""
        now = now or utcnow()
        out = {"recent_events": 0, "consents": 0, "impressions": 0, "contexts": 0}
        if self.store is not None:
            out["recent_events"] = self.recent.load(self.store, now)
            out["consents"] = self.consents.load(self.store)
            out["impressions"] = self.impressions.load(self.store, now)
            if self.contexts is not None:
                out["contexts"] = self.contexts.refresh()
        return out

    def attach(self) -> None:
        """Subscribe the recent-event rings to the serving state's committed batches."""
        if self._unsubscribe is None and hasattr(self.state, "subscribe"):
            self._unsubscribe = self.state.subscribe(self.recent)

    # -- background upkeep -------------------------------------------------------------------
    def upkeep(self, now: datetime | None = None, *, contexts: bool = False) -> None:
        """Flush impressions, refresh consents and changed profile fields, prune old events;
        with ``contexts`` rebuild every profile's fields (also drops erased values)."""
        if self.store is None:
            return
        self.impressions.flush(self.store, now)
        self.consents.refresh(self.store)
        at = now or utcnow()
        if self._pruned_at is None or (at - self._pruned_at) >= PRUNE_EVERY:
            self.recent.prune(at)
            self.impressions.prune(at)
            self._pruned_at = at
        if self.contexts is not None:
            if contexts:
                self.contexts.refresh()
            else:
                self.contexts.refresh_changed()

    def start(self, every: float = 2.0, context_every: float = 6 * 3600.0) -> None:
        """Run :meth:`upkeep` every ``every`` seconds in a daemon thread (a full context
        rebuild every ``context_every`` seconds)."""
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            last_ctx = utcnow()
            while not self._stop.wait(every):
                now = utcnow()
                refresh = (now - last_ctx).total_seconds() >= context_every
                try:
                    self.upkeep(now, contexts=refresh)
                except Exception:
                    log.exception("decision upkeep failed; retrying in %.0fs", every)
                if refresh:
                    last_ctx = now

        self._thread = threading.Thread(target=loop, name="microseg-decisions", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the upkeep thread, unsubscribe and flush pending impressions."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)
            if self._thread.is_alive():  # the store lock still serialises its queries
                log.warning("decision upkeep still running at shutdown")
            self._thread = None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self.store is not None:
            self.impressions.flush(self.store)

    # -- deciding ----------------------------------------------------------------------------
    def check_request(self, request: DecisionRequest) -> None:
        """Raise NotFoundError / ValueError for unknown placements or bad channel/device."""
        if request.channel not in CHANNELS:
            raise ValueError(f"channel must be one of {', '.join(CHANNELS)}")
        if request.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}")
        if not request.placements or len(request.placements) > MAX_PLACEMENTS:
            raise ValueError(f"ask for 1 to {MAX_PLACEMENTS} placements")
        for name in request.placements:
            if name not in self.placements:
                raise NotFoundError(f"no placement '{name}'{did_you_mean(name, self.placements)}")

    def needs_context(self, profile_id: str) -> bool:
        """True when the profile's template fields are not cached (call ``load_context``)."""
        return self.contexts is not None and self.contexts.get(profile_id) is None

    def load_context(self, profile_id: str) -> None:
        if self.contexts is not None:
            self.contexts.load_one(profile_id)

    def decide(
        self, profile: Any, request: DecisionRequest, now: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Decisions for a ``ProfileState``-like object (profile_id, segments, traits)."""
        self.check_request(request)
        now = now or utcnow()
        fields = self.contexts.get(profile.profile_id) if self.contexts is not None else None
        out = [
            self._decide_one(profile, self.placements[n], request, now, fields or {})
            for n in request.placements
        ]
        self.decisions_served += len(out)
        return out

    def _decide_one(
        self,
        profile: Any,
        placement: _Compiled,
        request: DecisionRequest,
        now: datetime,
        fields: Mapping[str, Any],
    ) -> dict[str, Any]:
        pid = profile.profile_id
        skipped: list[dict[str, Any]] = []
        for plan in placement.plans:
            rule = plan.rule
            conditions, events, traits = self._conditions(profile, plan, now)
            failed = [c["condition"] for c in conditions if not c["passed"]]
            if failed:
                skipped.append({"rule": plan.name, "reason": "conditions", "detail": failed})
                continue
            consent = None
            if rule.consent:
                granted = self.consents.granted(pid, rule.consent, now)
                consent = {"purpose": rule.consent, "granted": granted}
                if not granted:
                    skipped.append({"rule": plan.name, "reason": "consent", "detail": rule.consent})
                    continue
            cap: dict[str, Any] | None = None
            if rule.cap is not None and plan.cap_key is not None and plan.cap_window is not None:
                used = self.impressions.count(pid, plan.cap_key, now - plan.cap_window)
                cap = {
                    "max": rule.cap.max,
                    "per": rule.cap.per,
                    "scope": rule.cap.scope,
                    "used": used,
                }
                if used >= rule.cap.max:
                    skipped.append({"rule": plan.name, "reason": "cap", "detail": cap})
                    continue
            bucket = control_bucket(pid, placement.name, rule.name) if rule.control else None
            control = bucket is not None and bucket < rule.control
            serve = placement.spec.fallback if control else rule.serve
            rendered = self._render(serve, profile, request, fields, events)
            if rendered is None:
                skipped.append(
                    {"rule": rule.name, "reason": "no_variant", "detail": request.channel}
                )
                continue
            if cap is not None and plan.cap_key is not None and not control:
                self.impressions.record(pid, plan.cap_key, now)
                cap["used"] += 1
            why = {
                "segments": plan.segments,
                "conditions": conditions,
                "data": {
                    "traits": traits,
                    "events": [e.as_dict() for e in events],
                    "profile_fields": sorted(k for k in fields if fields[k] is not None),
                },
                "consent": consent,
                "cap": cap,
                "control": None
                if bucket is None
                else {"percent": rule.control, "bucket": round(bucket, 4), "held_out": control},
                "skipped": skipped,
            }
            return {
                "placement": placement.name,
                "rule": rule.name,
                "control": control,
                **rendered,
                "why": why,
            }
        rendered = self._render(placement.spec.fallback, profile, request, fields, [])
        why = {
            "segments": [],
            "conditions": [],
            "data": {"traits": {}, "events": [], "profile_fields": []},
            "consent": None,
            "cap": None,
            "control": None,
            "skipped": skipped,
            "fallback": True,
        }
        if rendered is None:
            why["error"] = f"fallback block has no variant for channel '{request.channel}'"
            rendered = {
                "block": placement.spec.fallback.block,
                "version": None,
                "variant": None,
                "rendered": None,
            }
        return {"placement": placement.name, "rule": None, "control": False, **rendered, "why": why}

    def _conditions(
        self, profile: Any, plan: _Plan, now: datetime
    ) -> tuple[list[dict[str, Any]], list[Any], dict[str, Any]]:
        segments = profile.segments
        out: list[dict[str, Any]] = []
        for seg, text in plan.in_:
            member = seg in segments
            out.append({"condition": text, "value": member, "passed": member})
        for seg, text in plan.not_in:
            member = seg in segments
            out.append({"condition": text, "value": member, "passed": not member})
        traits: dict[str, Any] = {}
        for cond, text in plan.traits:
            value = profile.traits.get(cond.trait)
            traits[cond.trait] = value
            out.append({"condition": text, "value": value, "passed": trait_passes(cond, value)})
        events = []
        pid = profile.profile_id
        for ev, text, window in plan.did:
            found = self.recent.latest(pid, ev.event, ev.where, now - window)
            if found is not None:
                events.append(found)
            seen = found.ts.isoformat() if found else None
            out.append({"condition": text, "value": seen, "passed": found is not None})
        for ev, text, window in plan.did_not:
            found = self.recent.latest(pid, ev.event, ev.where, now - window)
            seen = found.ts.isoformat() if found else None
            out.append({"condition": text, "value": seen, "passed": found is None})
        return out, events, traits

    def _render(
        self,
        serve: Serve,
        profile: Any,
        request: DecisionRequest,
        fields: Mapping[str, Any],
        events: Sequence[Any],
    ) -> dict[str, Any] | None:
        key = (serve.block, serve.variant, request.channel, request.device)
        if key not in self._chosen:
            self._chosen[key] = self._choose(serve, request.channel, request.device)
        chosen = self._chosen[key]
        if chosen is None:
            return None
        block, names = chosen
        # only what the templates read: cheaper to sanitise than every trait of the profile
        traits = profile.traits
        context = {n: v for n in names if (v := fields.get(n, traits.get(n))) is not None}
        context["profile_id"] = profile.profile_id
        if "segments" in names:
            context["segments"] = sorted(profile.segments)
        if "trigger" in names:
            context["trigger"] = dict(events[0].props) if events else {}
        if self._cart_context:
            context.update(self._cart(profile.profile_id))
        result = render_block(
            block, context, channel=request.channel, device=request.device, cache=self.cache
        )
        return {
            "block": block.name,
            "version": block.version,
            "variant": result.variant,
            "rendered": result.parts,
        }

    def _cart(self, profile_id: str) -> dict[str, Any]:
        """``last_purchase`` and ``abandoned_items`` (cart events since it, newest first) from
        the recent-event rings, shaped like :class:`ProfileContextLoader`'s."""
        events = self.recent.of(profile_id)
        purchases = [e for e in events if e.event_type in PURCHASE_EVENTS]
        since = purchases[-1].ts if purchases else None
        cart = [
            e
            for e in reversed(events)
            if e.event_type in CART_EVENTS and (since is None or e.ts > since)
        ]
        out: dict[str, Any] = {}
        if purchases:
            out["last_purchase"] = _record(purchases[-1])
        if cart:
            out["abandoned_items"] = [_record(e) for e in cart[:MAX_CART_ITEMS]]
        return out

    def _choose(
        self, serve: Serve, channel: str, device: str
    ) -> tuple[ContentBlock, frozenset[str]] | None:
        """The block reduced to the variant to render, with the names its templates read
        (None: no variant for the channel)."""
        block = self.blocks[serve.block]
        pinned = self._pinned.get((serve.block, serve.variant or ""))
        if pinned is not None and pinned.spec.variants[0].channel == channel:
            chosen = pinned
        else:
            try:
                variant = select_variant(block.spec, channel, device)
            except NotFoundError:
                return None
            spec = block.spec.model_copy(update={"variants": [variant]})
            chosen = ContentBlock(
                block.name, spec, block.version, block.source_file, block.created_at
            )
        return chosen, frozenset(template_names([chosen], self.cache))

    def stats(self) -> dict[str, Any]:
        return {
            "placements": len(self.placements),
            "blocks": len(self.blocks),
            "profiles_with_recent_events": len(self.recent),
            "consents": len(self.consents),
            "impressions_pending": self.impressions.pending,
            "impressions_flushed": self.impressions.flushed,
            "contexts": len(self.contexts) if self.contexts is not None else 0,
            "context_misses": self.contexts.misses if self.contexts is not None else 0,
            "decisions_served": self.decisions_served,
        }


def _record(event: RecentEvent) -> dict[str, Any]:
    return {"event_type": event.event_type, "ts": event.ts, **event.props}


def engine_for_workspace(workspace: Any, state: Any) -> DecisionEngine | None:
    """The engine for a workspace's project, loaded and attached to ``state`` (None without
    decision files). Raises DefinitionError when the files do not check."""
    engine = DecisionEngine.from_project(
        workspace.project.root,
        state,
        store=workspace.store,
        keys=workspace.keys,
        settings=workspace.settings,
    )
    if engine is None:
        return None
    counts = engine.load()
    engine.attach()
    log.info("decision engine: %d placements; loaded %s", len(engine.placements), counts)
    return engine


def load_engine(workspace: Any, state: Any) -> tuple[DecisionEngine | None, str | None]:
    """:func:`engine_for_workspace` for a server: bad files do not stop it; they are logged
    and returned as the reason placement requests are refused."""
    try:
        return engine_for_workspace(workspace, state), None
    except DefinitionError as exc:
        reason = "; ".join(str(p) for p in exc.problems[:5])
        log.warning("decision rules disabled (%d problems): %s", len(exc.problems), reason)
        return None, reason
