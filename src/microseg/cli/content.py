"""CLI: content validate | sync | list | render | history."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import typer

from microseg.cli import STATE, console, frame_table, workspace

# every row: these tables are short summaries
_table = partial(frame_table, limit=None)


def _parse_sets(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"--set expects name=value, got '{item}'")
        try:
            out[name] = json.loads(value)
        except ValueError:
            out[name] = value
    return out


def register(app: typer.Typer) -> None:
    content_app = typer.Typer(
        help="Content blocks: validate, version, render.", no_args_is_help=True
    )
    app.add_typer(content_app, name="content")

    @content_app.command("validate")
    def validate() -> None:
        """Check content/*.yaml: schema, variants and every template (file:line on error)."""
        from microseg.config.project import Project
        from microseg.personalize.content import load_project_content

        project = Project.load(STATE["project"])
        blocks = load_project_content(project.root)
        variants = sum(len(b.spec.variants) for b in blocks)
        console.print(f"[green]OK[/green]: {len(blocks)} content blocks, {variants} variants valid")

    @content_app.command("sync")
    def sync() -> None:
        """Store content/*.yaml in the project store; a changed block gets a new version."""
        from microseg.personalize.content import ContentRepo

        with workspace() as ws:
            result = ContentRepo(ws.store).sync_project(ws.project.root, actor="cli")
        for name, (version, changed) in sorted(result.items()):
            console.print(f"{name}: v{version}" + (" [green](new)[/green]" if changed else ""))

    @content_app.command("list")
    def list_(tag: list[str] = typer.Option([], "--tag", help="only blocks with this tag")) -> None:
        """Blocks with their latest version, tags and channel/device variants (syncs first)."""
        from microseg.personalize.content import ContentRepo

        with workspace() as ws:
            repo = ContentRepo(ws.store)
            repo.sync_project(ws.project.root, actor="cli")
            df = repo.list()
            if tag:
                df = df[df["tags"].map(lambda t: all(x in t.split(",") for x in tag))]
            console.print(_table(df, f"{len(df)} content blocks"))

    @content_app.command("history")
    def history(block: str = typer.Argument(..., help="block name")) -> None:
        """Every stored version of a block, newest first."""
        from microseg.personalize.content import ContentRepo

        with workspace() as ws:
            repo = ContentRepo(ws.store)
            repo.sync_project(ws.project.root, actor="cli")
            console.print(_table(repo.history(block), f"history of {block}"))

    @content_app.command("render")
    def render(
        block: str = typer.Argument(..., help="block name"),
        profile: str | None = typer.Option(None, "--profile", help="profile id or id key"),
        channel: str = typer.Option("email", "--channel", help="web | email | push"),
        device: str = typer.Option("any", "--device", help="any | mobile | desktop"),
        version: int | None = typer.Option(
            None, "--version", help="a stored version (default latest)"
        ),
        set_: list[str] = typer.Option([], "--set", help="name=value context override, repeatable"),
        as_json: bool = typer.Option(False, "--json", help="print JSON"),
    ) -> None:
        """Render a block for a profile, as it would be sent."""
        from microseg.personalize.content import ContentRepo, ProfileContextLoader, render_block

        overrides = _parse_sets(set_)
        with workspace() as ws:
            repo = ContentRepo(ws.store)
            repo.sync_project(ws.project.root, actor="cli")
            content = repo.get(block, version)
            context: dict[str, Any] = {}
            if profile is not None:
                pid = ws.profile_id(profile)
                context = ProfileContextLoader(ws.store, ws.keys).load(pid)
            context.update(overrides)
            out = render_block(content, context, channel=channel, device=device)
        if as_json:
            console.print_json(
                json.dumps(
                    {
                        "block": out.block,
                        "version": out.version,
                        "variant": out.variant,
                        "channel": out.channel,
                        "device": out.device,
                        "ok": out.ok,
                        "errors": list(out.errors),
                        "defaults_used": list(out.defaults_used),
                        "parts": out.parts,
                    }
                )
            )
            return
        console.print(
            f"[bold]{out.block}[/bold] v{out.version} · variant {out.variant} ({out.channel}/{out.device})"
        )
        for part, text in out.parts.items():
            console.rule(part)
            console.print(text, markup=False, highlight=False)
        if out.defaults_used:
            console.print(f"[dim]defaults used: {', '.join(out.defaults_used)}[/dim]")
        for err in out.errors:
            console.print(f"[yellow]fallback used:[/yellow] {err}", highlight=False)
