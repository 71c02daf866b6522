"""CLI: recommend show | evaluate."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import typer

from microseg.cli import console, frame_table, workspace
from microseg.errors import ConfigError, did_you_mean

_table = partial(frame_table, limit=None)


def parse_when(value: str | None, option: str) -> datetime | None:
    """An ISO date or date-time (naive UTC) from a command-line option."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=None)
    except ValueError:
        raise ConfigError(
            f"{option} must be a date like 2011-09-01 or 2011-09-01T12:00, got '{value}'"
        ) from None


def _check_strategies(names: list[str]) -> list[str]:
    from microseg.personalize.recommend import strategy_names

    known = strategy_names()
    for name in names:
        if name not in known:
            raise ConfigError(f"unknown strategy '{name}'" + did_you_mean(name, known))
    return names


def _mapping(opts: dict[str, Any]) -> Any:
    from dataclasses import replace

    from microseg.personalize.recommend_data import ONLINE_RETAIL, REES46, EventMapping

    presets = {"default": EventMapping(), "online_retail": ONLINE_RETAIL, "rees46": REES46}
    preset = opts.pop("preset")
    if preset not in presets:
        raise ConfigError(f"unknown --preset '{preset}' (choose {', '.join(presets)})")
    changes: dict[str, Any] = {
        k: (tuple(v) if isinstance(v, list) else v) for k, v in opts.items() if v
    }
    return replace(presets[preset], **changes)


def _mapping_options() -> dict[str, Any]:
    return {
        "preset": typer.Option(
            "default", "--preset", help="event mapping: default, online_retail or rees46"
        ),
        "purchase_types": typer.Option([], "--purchase-type", help="purchase event type(s)"),
        "view_types": typer.Option([], "--view-type", help="product view event type(s)"),
        "cart_types": typer.Option([], "--cart-type", help="add-to-cart event type(s)"),
        "item_column": typer.Option(None, "--item-column", help="event column of the item id"),
        "category_column": typer.Option(None, "--category-column", help="category column"),
        "basket_column": typer.Option(None, "--basket-column", help="order id column"),
        "exclude_items": typer.Option(None, "--exclude-items", help="regex of item ids to skip"),
    }


def register(app: typer.Typer) -> None:
    rec_app = typer.Typer(
        help="Product recommendations: show a profile's, evaluate offline.", no_args_is_help=True
    )
    app.add_typer(rec_app, name="recommend")
    mo = _mapping_options()

    @rec_app.command("show")
    def show(
        profile: str = typer.Argument(..., help="profile id, id key (user_id:42) or id value"),
        k: int = typer.Option(10, "-k", "--k", help="how many items"),
        strategy: str = typer.Option("blend", "--strategy", "-s", help="recommender"),
        as_of: str | None = typer.Option(None, "--as-of", help="use events before this time"),
        include_seen: bool = typer.Option(False, "--include-seen", help="allow bought items"),
        preset: str = mo["preset"],
        purchase_type: list[str] = mo["purchase_types"],
        view_type: list[str] = mo["view_types"],
        cart_type: list[str] = mo["cart_types"],
        item_column: str | None = mo["item_column"],
        category_column: str | None = mo["category_column"],
        basket_column: str | None = mo["basket_column"],
        exclude_items: str | None = mo["exclude_items"],
    ) -> None:
        """A profile's top-k recommendations with the reason for each."""
        from microseg.personalize.recommend import fit_recommender

        if k < 1:
            raise ConfigError(f"-k must be at least 1, got {k}")
        _check_strategies([strategy])
        mapping = _mapping(
            {
                "preset": preset,
                "purchase_types": purchase_type,
                "view_types": view_type,
                "cart_types": cart_type,
                "item_column": item_column,
                "category_column": category_column,
                "basket_column": basket_column,
                "exclude_items": exclude_items,
            }
        )
        when = parse_when(as_of, "--as-of")
        with workspace() as ws:
            pid = ws.profile_id(profile)
            rec = fit_recommender(ws.store, strategy, as_of=when, mapping=mapping)
            df = rec.recommend([pid], k, exclude_seen=not include_seen)
            assert rec.data is not None
            info = rec.data.item_info()
        if df.empty:
            console.print(f"no recommendations for {pid} ({strategy})")
            return
        df = df.join(info[["name"]], on="item").drop(columns="profile_id")
        df["score"] = df["score"].round(4)
        console.print(
            _table(df[["rank", "item", "name", "score", "reason"]], title=f"{pid}: {strategy}")
        )

    @rec_app.command("evaluate")
    def evaluate_cmd(
        cutoff: str = typer.Option(..., "--cutoff", help="train before, test after (2011-09-01)"),
        k: list[int] = typer.Option([5, 10, 20], "-k", "--k", help="cut-offs k (repeatable)"),
        strategy: list[str] = typer.Option(
            [], "--strategy", "-s", help="recommenders to compare (default: all)"
        ),
        horizon_days: float | None = typer.Option(None, "--horizon-days", help="test window"),
        mode: list[str] = typer.Option(["new", "all"], "--mode", help="new and/or all items"),
        warm: str = typer.Option(
            "purchase", "--warm", help="test profiles: bought before (purchase) or any event"
        ),
        reps: int = typer.Option(1000, "--reps", help="bootstrap resamples"),
        plot: Path | None = typer.Option(None, "--plot", help="write a recall@k bar chart PNG"),
        preset: str = mo["preset"],
        purchase_type: list[str] = mo["purchase_types"],
        view_type: list[str] = mo["view_types"],
        cart_type: list[str] = mo["cart_types"],
        item_column: str | None = mo["item_column"],
        category_column: str | None = mo["category_column"],
        basket_column: str | None = mo["basket_column"],
        exclude_items: str | None = mo["exclude_items"],
    ) -> None:
        """Temporal-split evaluation: hit rate, recall, precision, MAP, NDCG at each k."""
        from microseg.personalize.recommend import strategy_names
        from microseg.personalize.recommend_eval import MODES, evaluate, plot_recall

        when = parse_when(cutoff, "--cutoff")
        assert when is not None
        if any(v < 1 for v in k):
            raise ConfigError("every -k must be at least 1")
        for m in mode:
            if m not in MODES:
                raise ConfigError(f"unknown --mode '{m}' (new or all)")
        if warm not in ("purchase", "any"):
            raise ConfigError(f"unknown --warm '{warm}' (purchase or any)")
        names = _check_strategies(strategy or strategy_names())
        mapping = _mapping(
            {
                "preset": preset,
                "purchase_types": purchase_type,
                "view_types": view_type,
                "cart_types": cart_type,
                "item_column": item_column,
                "category_column": category_column,
                "basket_column": basket_column,
                "exclude_items": exclude_items,
            }
        )
        horizon = timedelta(days=horizon_days) if horizon_days else None
        with workspace() as ws:
            report = evaluate(
                ws.store,
                when,
                names,
                ks=k,
                mapping=mapping,
                horizon=horizon,
                modes=mode,
                reps=reps,
                warm="any" if warm == "any" else "purchase",
                progress=ws.progress,
            )
        for m in mode:
            table = report.table(m).drop(columns="mode")
            console.print(_table(table, title=f"{m} items after {when:%Y-%m-%d}"))
        ci = report.intervals.round(4)
        console.print(_table(ci, title="bootstrap 95% CI (profiles resampled)"))
        sizes = ", ".join(f"{key}={value}" for key, value in report.sizes.items())
        console.print(sizes, highlight=False)
        if plot is not None:
            console.print(f"wrote {plot_recall(report, plot, mode[0])}")
