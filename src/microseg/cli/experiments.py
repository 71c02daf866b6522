"""CLI: experiment plan / analyze / assign, and attribution."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from microseg.cli import frame_table
from microseg.errors import DefinitionError, MicrosegError, NotFoundError

console = Console()
err_console = Console(stderr=True)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """User mistakes print ``Error: …`` on one line and exit 1."""
    try:
        yield
    except DefinitionError as exc:
        for p in exc.problems:
            err_console.print(f"Error: {p}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except (MicrosegError, ValueError, OSError) as exc:
        err_console.print(f"Error: {exc}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _read_csv(path: Path) -> Any:
    import pandas as pd

    if not path.exists():
        raise NotFoundError(f"file not found: {path}")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MicrosegError(f"cannot read {path} as CSV: {str(exc).splitlines()[0]}") from None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return ""
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    return "" if v is None else str(v)


# every row: these tables are short summaries
_table = partial(frame_table, limit=None, cell=_fmt)


def register(app: typer.Typer) -> None:
    """Add ``experiment`` (plan, analyze, assign) and ``attribution`` to ``app``."""
    exp_app = typer.Typer(help="Plan, assign and analyse experiments.", no_args_is_help=True)
    app.add_typer(exp_app, name="experiment")

    @exp_app.command("plan")
    def plan(
        baseline: float = typer.Option(..., help="control conversion rate (or mean with --sd)"),
        mde: float = typer.Option(..., help="minimum detectable effect (absolute)"),
        relative: bool = typer.Option(False, "--relative", help="--mde is relative to baseline"),
        sd: float | None = typer.Option(None, help="metric std: plan for a mean, not a rate"),
        alpha: float = typer.Option(0.05, help="significance level (two-sided)"),
        power: float = typer.Option(0.8, help="target power"),
        ratio: float = typer.Option(1.0, help="treatment users per control user"),
        arms: int = typer.Option(2, help="number of arms incl. control (for the total)"),
        segments: Path | None = typer.Option(
            None, help="CSV segment,size,baseline: MDE per segment and too-small warnings"
        ),
        traffic: float = typer.Option(1.0, help="share of each segment entering the test"),
    ) -> None:
        """Sample size per arm (and per-segment minimum detectable effects)."""
        from microseg.experiments import power as pw

        with _one_line_errors():
            mde_abs = mde * baseline if relative else mde
            if sd is not None:
                p = pw.plan_mean(baseline, sd, mde_abs, alpha, power, ratio)
            else:
                p = pw.plan_proportion(baseline, mde_abs, alpha, power, ratio)
            total = p.n_control + (arms - 1) * p.n_treatment
            console.print(
                f"{p.metric}: baseline {baseline:g}, MDE {mde_abs:+g} "
                f"({mde_abs / baseline:+.1%} relative), alpha {alpha:g}, power {power:g}\n"
                f"users per arm: control {p.n_control:,}, treatment {p.n_treatment:,}; "
                f"total for {arms} arms: {total:,}",
                highlight=False,
            )
            if segments is not None:
                table = pw.segment_mde_table(
                    _read_csv(segments),
                    traffic=traffic,
                    n_arms=arms,
                    alpha=alpha,
                    power_target=power,
                )
                console.print(_table(table, "Minimum detectable effect per segment"))
                small = int((~table["testable"]).sum())
                if small:
                    err_console.print(
                        f"Warning: {small} segment(s) too small to test", highlight=False
                    )

    @exp_app.command("analyze")
    def analyze(
        file: Path = typer.Argument(
            ..., help="CSV: variant,n,conversions[,revenue_sum,revenue_sum_sq]"
        ),
        control: str | None = typer.Option(None, help="control variant (default: first row)"),
        planned: int | None = typer.Option(None, help="planned users per arm (fixed-horizon gate)"),
        alpha: float = typer.Option(0.05, help="significance level"),
        plot: Path | None = typer.Option(None, help="write a lift interval plot (PNG)"),
        out: Path | None = typer.Option(None, help="write the results table as CSV"),
    ) -> None:
        """Lifts with CIs, z / Welch tests, chance to win, SRM and horizon checks."""
        from microseg.experiments.analysis import analyze_experiment, arms_from_frame

        with _one_line_errors():
            arms = arms_from_frame(_read_csv(file))
            res = analyze_experiment(arms, control, planned_per_arm=planned, alpha=alpha)
            df = res.to_frame()
            cols = [
                "variant",
                "metric",
                "n",
                "mean",
                "abs_lift",
                "abs_ci_low",
                "abs_ci_high",
                "rel_lift",
                "p_value",
                "chance_to_win",
                "verdict",
            ]
            console.print(_table(df[cols], f"Experiment vs control '{res.control}'"))
            srm = res.srm
            state = "MISMATCH" if srm.mismatch else "ok"
            console.print(f"sample ratio: {state} (chi2 p = {srm.p_value:.3g})", highlight=False)
            if res.horizon is not None and not res.horizon.reached:
                console.print(res.horizon.message, highlight=False)
            if out is not None:
                df.to_csv(out, index=False)
            if plot is not None:
                from microseg.experiments.plots import plot_lift

                plot_lift(res).savefig(plot, dpi=120)
                console.print(f"plot written to {plot}", highlight=False)

    @exp_app.command("assign")
    def assign(
        definition: Path = typer.Argument(
            ..., help="experiment YAML (key, variants/factors, holdout)"
        ),
        profiles: Path = typer.Argument(..., help="CSV with a profile_id column"),
        out: Path | None = typer.Option(None, help="write assignments CSV here"),
        id_col: str = typer.Option("profile_id", help="profile id column"),
    ) -> None:
        """Deterministic sticky assignment of profiles to variants."""
        from microseg.errors import did_you_mean
        from microseg.experiments.assignment import load_experiment
        from microseg.experiments.stats import sample_ratio_mismatch

        with _one_line_errors():
            exp = load_experiment(str(definition)).to_experiment()
            df = _read_csv(profiles)
            if id_col not in df.columns:
                raise MicrosegError(
                    f"no column {id_col!r}{did_you_mean(id_col, map(str, df.columns))}"
                )
            assigned = exp.assign_many(df[id_col].astype(str))
            shares = exp.expected_shares()
            counts = assigned["variant"].value_counts()
            summary = [(v, int(counts.get(v, 0)), s) for v, s in shares.items()]
            srm = sample_ratio_mismatch([c for _, c, _ in summary], [s for _, _, s in summary])
            t = Table(title=f"Assignment '{exp.key}'")
            for header in ("variant", "profiles", "planned share", "actual share"):
                t.add_column(header)
            for v, c, s in summary:
                t.add_row(v, f"{c:,}", f"{s:.1%}", f"{c / max(len(assigned), 1):.1%}")
            console.print(t)
            console.print(f"balance check p = {srm.p_value:.3g}", highlight=False)
            if out is not None:
                assigned.to_csv(out, index=False)

    @exp_app.command("effects")
    def effects(
        file: Path = typer.Argument(..., help="one row per user: arm column and outcome columns"),
        arm_col: str = typer.Option(..., "--arm-col", help="treatment arm column"),
        control: str = typer.Option(..., help="control arm value"),
        outcome: list[str] = typer.Option(..., help="outcome column (repeatable)"),
        by: str | None = typer.Option(None, help="segment column for per-segment effects"),
        quantiles: int = typer.Option(0, help="bin a numeric --by column into this many quantiles"),
        out: Path | None = typer.Option(None, help="write the effects table as CSV"),
    ) -> None:
        """Average treatment effects with CIs per arm (and per segment) from randomised data."""
        import pandas as pd

        from microseg.experiments.uplift import treatment_effects

        with _one_line_errors():
            df = _read_csv(file)
            if by and quantiles > 1:
                if by not in df.columns:
                    raise MicrosegError(f"column {by!r} not found")
                df[by] = pd.qcut(df[by], quantiles, duplicates="drop").astype(str)
            table = treatment_effects(df, arm_col, control, outcome, by=by)
            cols = [c for c in table.columns if c not in ("n_control", "error")]
            console.print(_table(table[cols], f"Treatment effects vs '{control}'"))
            if out is not None:
                table.to_csv(out, index=False)

    @exp_app.command("ope")
    def ope(
        root: Path = typer.Argument(..., help="Open Bandit Dataset folder (random/, bts/)"),
        campaign: str = typer.Option("all", help="all | men | women"),
        target: str = typer.Option("bts", help="policy to evaluate: bts | random"),
        logged: str = typer.Option("random", help="policy whose logs are used: random | bts"),
    ) -> None:
        """Off-policy CTR estimates (IPW, SNIPW, DR) vs the target's on-policy CTR."""
        import pandas as pd

        from microseg.experiments.ope import evaluate_obd

        with _one_line_errors():
            res = evaluate_obd(root, campaign, target=target, logged=logged)
            table = pd.DataFrame(
                [(k, v.value, v.ci_low, v.ci_high, v.n) for k, v in res.items()],
                columns=["estimator", "ctr", "ci_low", "ci_high", "rows"],
            )
            console.print(_table(table, f"CTR of '{target}' from '{logged}' logs ({campaign})"))

    @app.command("attribution")
    def attribution(
        file: Path = typer.Argument(
            ..., help="touchpoints CSV: journey_id,ts,channel,converted[,value]"
        ),
        model: str = typer.Option(
            "markov", help="first|last|linear|time_decay|position|markov|all"
        ),
        half_life: str = typer.Option(
            "7D", help="time-decay half-life (pandas Timedelta, e.g. 7D)"
        ),
        journey_col: str = typer.Option("journey_id", help="journey / profile id column"),
        ts_col: str = typer.Option("ts", help="timestamp column"),
        channel_col: str = typer.Option("channel", help="channel column"),
        converted_col: str = typer.Option("converted", help="conversion flag column"),
        value_col: str | None = typer.Option(None, help="conversion value column"),
        plot: Path | None = typer.Option(None, help="write a bar chart (PNG)"),
    ) -> None:
        """Credit conversions to channels (rule-based or Markov removal effects)."""
        from microseg.measure.attribution import attribute, compare_models, plot_attribution

        with _one_line_errors():
            df = _read_csv(file)
            kw: dict[str, Any] = dict(
                half_life=half_life,
                journey_col=journey_col,
                ts_col=ts_col,
                channel_col=channel_col,
                converted_col=converted_col,
                value_col=value_col,
            )
            if model == "all":
                table = compare_models(df, **kw)
                console.print(
                    _table(
                        table.pivot_table(
                            index="channel", columns="model", values="conversions"
                        ).reset_index(),
                        "Attributed conversions by model",
                    )
                )
            else:
                table = attribute(df, model, **kw)
                console.print(_table(table, f"Attribution ({model})"))
            if plot is not None:
                plot_attribution(table).savefig(plot, dpi=120)
                console.print(f"plot written to {plot}", highlight=False)
