"""What the decision engine needs to know about its content: the blocks a project's placements
serve (content store first, then ``content/*.yaml``) and the names their templates read."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import meta, nodes

from microseg.personalize.content import (
    HTML_PARTS,
    ContentBlock,
    ContentRepo,
    load_project_content,
)
from microseg.personalize.decision_rules import (
    Known,
    Placement,
    Serve,
    load_decisions,
    project_known,
    stored_segments,
    stored_traits,
)
from microseg.personalize.templates import TemplateCache
from microseg.store import Store


def _trees(blocks: Iterable[ContentBlock], cache: TemplateCache) -> Iterable[nodes.Template]:
    for block in blocks:
        for variant in block.spec.variants:
            for part, source in variant.parts().items():
                yield cache.env(part in HTML_PARTS).parse(source)


def template_names(blocks: Iterable[ContentBlock], cache: TemplateCache) -> set[str]:
    """Every variable name the blocks' templates read (what a render context needs)."""
    names: set[str] = set()
    for tree in _trees(blocks, cache):
        names |= meta.find_undeclared_variables(tree)
    return names


def trigger_fields(blocks: Iterable[ContentBlock], cache: TemplateCache) -> set[str]:
    """Properties templates read from ``trigger`` (``trigger.x`` / ``trigger['x']``): the
    recent-event rings keep these besides the ``where`` filters."""
    out: set[str] = set()
    for tree in _trees(blocks, cache):
        for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
            out |= _trigger_attr(node)
    return out


def _trigger_attr(node: nodes.Node) -> set[str]:
    """``{"x"}`` for a ``trigger.x`` / ``trigger['x']`` node, else empty."""
    target = getattr(node, "node", None)
    if not (isinstance(target, nodes.Name) and target.name == "trigger"):
        return set()
    if isinstance(node, nodes.Getattr):
        return {node.attr}
    arg = getattr(node, "arg", None)
    if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
        return {arg.value}
    return set()


@dataclass
class _ProjectView:
    root: Path
    settings: Any


def _serves(placement: Placement) -> Iterable[Serve]:
    yield placement.fallback
    for rule in placement.rules:
        yield rule.serve


def load_project_decisions(
    root: str | Path,
    files: Sequence[Path],
    store: Store | None,
    settings: Any,
    cache: TemplateCache | None,
) -> tuple[dict[str, Placement], dict[str, ContentBlock]]:
    """Placements of ``files`` checked against the project (segments of files and store,
    blocks, taxonomy, stored traits) and the blocks they serve.

    Blocks come from the content store (latest version) when stored there, else from the
    project's ``content/*.yaml`` (version 0). Raises DefinitionError on bad files."""
    blocks: dict[str, ContentBlock] = {}
    if store is not None and store.table_exists("content_versions"):
        blocks.update(ContentRepo(store, cache=cache).latest())
    for block in load_project_content(root):
        blocks.setdefault(block.name, block)
    variants = {n: frozenset(v.id for v in b.spec.variants) for n, b in blocks.items()}
    known = project_known(_ProjectView(Path(root), settings), blocks=variants)
    segments = known.segments
    if segments is not None:
        segments = segments | stored_segments(store)
    placements = load_decisions(
        files, Known(segments, known.blocks, known.events, stored_traits(store), known.purposes)
    )
    used = {s.block for p in placements.values() for s in _serves(p)}
    return placements, {n: b for n, b in blocks.items() if n in used}
