"""CLI: ``microseg predict train|score|list|clv`` — propensity models, registry, CLV."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from microseg.cli import console, workspace

if TYPE_CHECKING:
    import pandas as pd


def register(app: typer.Typer) -> None:
    predict_app = typer.Typer(help="Propensity and lifetime-value models.", no_args_is_help=True)
    app.add_typer(predict_app, name="predict")

    @predict_app.command("train")
    def train(
        name: str = typer.Argument(..., help="model name in the registry"),
        target: str = typer.Option(..., "--target", help="0/1 label column in the features table"),
        features: Path | None = typer.Option(
            None, "--features", "-f", help="CSV/Parquet (default: traits table)"
        ),
        columns: str | None = typer.Option(
            None, "--columns", help="comma-separated feature columns (default: all numeric)"
        ),
        algorithm: str = typer.Option("lightgbm", help="logistic, random_forest or lightgbm"),
        balance: str = typer.Option("none", help="none, class_weight or smote"),
        test_size: float = typer.Option(0.25, help="held-out share (stratified)"),
        cv: int = typer.Option(0, help="stratified CV folds on the training part (0 = skip)"),
        top_fraction: float = typer.Option(
            0.1, help="share flagged as top (VIP) for the tuned threshold"
        ),
        min_class_count: int = typer.Option(100, help="guardrail: minimum positives and negatives"),
        allow_small: bool = typer.Option(
            False, help="warn instead of refusing below the guardrail"
        ),
        n_estimators: int = typer.Option(200, help="trees (forest / LightGBM)"),
        seed: int = typer.Option(0, help="random_state"),
    ) -> None:
        """Train a propensity model, report held-out metrics and register a new version."""
        from sklearn.model_selection import train_test_split

        from microseg.predict import PropensityModel, cross_validate, evaluate, register_model
        from microseg.predict.table import read_feature_table, select_columns

        with workspace() as ws:
            table = read_feature_table(features, ws.store)
            if target not in table.columns:
                raise typer.BadParameter(f"no target column {target!r} in the features table")
            y = table[target].astype(int)
            X = select_columns(
                table,
                [c.strip() for c in columns.split(",")] if columns else None,
                exclude=[target],
            )
            model = PropensityModel(
                algorithm=algorithm,
                balance=balance,
                n_estimators=n_estimators,
                min_class_count=min_class_count,
                on_insufficient="warn" if allow_small else "raise",
                random_state=seed,
            )
            try:
                X_tr, X_te, y_tr, y_te = train_test_split(
                    X, y, test_size=test_size, stratify=y, random_state=seed
                )
                cv_result = (
                    cross_validate(model, X_tr, y_tr, n_splits=cv, random_state=seed)
                    if cv
                    else None
                )
                model.fit(X_tr, y_tr)
                ev = evaluate(y_te, model.predict_proba(X_te)[:, 1], top_fraction=top_fraction)
            except ValueError as exc:
                raise typer.BadParameter(str(exc)) from None
            metrics = {**ev.as_dict(), "n_train": len(X_tr)}
            if cv_result:
                metrics["cv_roc_auc_mean"] = cv_result["roc_auc_mean"]
                metrics["cv_roc_auc_std"] = cv_result["roc_auc_std"]
            version = register_model(
                ws.store,
                name,
                model,
                kind=f"propensity/{algorithm}",
                features=list(X.columns),
                target=target,
                params=model.get_params(),
                metrics=metrics,
            )
            console.print(
                f"{name} v{version}: ROC-AUC {ev.roc_auc:.3f}, PR-AUC {ev.pr_auc:.3f} "
                f"(base rate {ev.positives / ev.n:.3f}, n={ev.n:,} held out)"
            )
            console.print(
                f"top {top_fraction:.0%} threshold {ev.top_threshold:.3f}: precision {ev.top_precision:.3f}, "
                f"recall {ev.top_recall:.3f}, lift {ev.lift_at_top:.2f}"
            )
            if cv_result:
                console.print(
                    f"CV ROC-AUC {cv_result['roc_auc_mean']:.3f} ± {cv_result['roc_auc_std']:.3f} ({cv} folds)"
                )

    @predict_app.command("train-events")
    def train_events(
        name: str = typer.Argument(..., help="model name in the registry"),
        events: Path = typer.Argument(..., help="CSV/Parquet with profile_id, ts, value"),
        target: str = typer.Option("purchase", help="purchase, churn or second_purchase"),
        horizon: int = typer.Option(30, help="label window in days after each as_of"),
        train_as_of: str = typer.Option(..., help="comma-separated training snapshot dates"),
        valid_as_of: str = typer.Option(..., help="validation snapshot date"),
        test_as_of: str = typer.Option(..., help="test snapshot date"),
        algorithm: str = typer.Option("lightgbm", help="logistic, random_forest or lightgbm"),
        balance: str = typer.Option("none", help="none, class_weight or smote"),
        allow_small: bool = typer.Option(
            False, help="warn instead of refusing below 100 per class"
        ),
        seed: int = typer.Option(0, help="random_state"),
    ) -> None:
        """Train on point-in-time features with a temporal train/validation/test split."""
        import pandas as pd

        from microseg.predict import (
            PropensityModel,
            evaluate,
            register_model,
            temporal_split,
            tune_threshold,
        )

        frame = _read_events(events)
        try:
            split = temporal_split(
                frame,
                train_as_of=[d.strip() for d in train_as_of.split(",")],
                valid_as_of=valid_as_of,
                test_as_of=test_as_of,
                target=target,
                horizon_days=horizon,
            )
            model = PropensityModel(
                algorithm=algorithm,
                balance=balance,
                on_insufficient="warn" if allow_small else "raise",
                random_state=seed,
            ).fit(split.X_train, split.y_train)
            valid_scores = model.predict_proba(split.X_valid)[:, 1]
            tuned = tune_threshold(split.y_valid, valid_scores)
            ev = evaluate(
                split.y_test, model.predict_proba(split.X_test)[:, 1], threshold=tuned["threshold"]
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        metrics = {
            **ev.as_dict(),
            "valid_f1_threshold": tuned["threshold"],
            "horizon_days": horizon,
        }
        with workspace() as ws:
            version = register_model(
                ws.store,
                name,
                model,
                kind=f"propensity/{algorithm}",
                features=list(split.X_train.columns),
                target=target,
                params=model.get_params(),
                metrics=metrics,
                as_of=pd.Timestamp(test_as_of),
            )
        console.print(
            f"{name} v{version} ({target} in {horizon} d): test ROC-AUC {ev.roc_auc:.3f}, PR-AUC {ev.pr_auc:.3f}; "
            f"train {len(split.X_train):,} rows / {int(split.y_train.sum()):,} positives"
        )
        console.print(
            f"threshold {tuned['threshold']:.3f} (best F1 on validation): test precision {ev.precision:.3f}, "
            f"recall {ev.recall:.3f}"
        )

    @predict_app.command("score")
    def score(
        name: str = typer.Argument(..., help="registered model"),
        version: int | None = typer.Option(None, help="version (default: latest)"),
        features: Path | None = typer.Option(
            None, "--features", "-f", help="CSV/Parquet (default: traits table)"
        ),
        events: Path | None = typer.Option(None, help="score from events (profile_id, ts, value)"),
        as_of: str | None = typer.Option(
            None, "--as-of", help="point in time for --events features"
        ),
        out: Path | None = typer.Option(None, help="also write profile_id,score CSV here"),
    ) -> None:
        """Score every profile and store the scores (table ``scores``) for use in segments."""
        from microseg.predict import load_model, point_in_time_features, store_scores
        from microseg.predict.table import read_feature_table, select_columns

        with workspace() as ws:
            reg = load_model(ws.store, name, version)
            if not hasattr(reg.estimator, "score_profiles"):
                raise typer.BadParameter(
                    f"{name} is a {reg.kind} model; score it with its own command"
                )
            if events is not None:
                if as_of is None:
                    raise typer.BadParameter("--events needs --as-of")
                table = point_in_time_features(_read_events(events), as_of)
            else:
                table = read_feature_table(features, ws.store)
            X = select_columns(table, reg.features)
            scores = reg.estimator.score_profiles(X)
            n = store_scores(ws.store, reg.model, reg.version, scores)
            if out is not None:
                scores.rename("score").to_frame().to_csv(out, index_label="profile_id")
            console.print(
                f"scored {n:,} profiles with {reg.model} v{reg.version}: mean {scores.mean():.3f}, "
                f"top 10% above {scores.quantile(0.9):.3f}"
            )

    @predict_app.command("list")
    def list_(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
        """List registered models and their versions."""
        from microseg.predict import list_models

        with workspace() as ws:
            frame = list_models(ws.store)
            if as_json:
                console.print_json(frame.to_json(orient="records", date_format="iso"))
                return
            t = Table(title="models")
            for c in ("model", "version", "kind", "target", "roc_auc", "trained_at"):
                t.add_column(c)
            for row in frame.itertuples(index=False):
                auc = json.loads(row.metrics or "{}").get("roc_auc")
                t.add_row(
                    row.model,
                    str(row.version),
                    row.kind,
                    str(row.target or ""),
                    "" if auc is None else f"{auc:.3f}",
                    str(row.trained_at)[:19],
                )
            console.print(t)

    @predict_app.command("clv")
    def clv(
        events: Path = typer.Argument(
            ..., help="CSV/Parquet with profile_id, ts, value (one row per purchase)"
        ),
        as_of: str = typer.Option(..., "--as-of", help="end of the calibration period (exclusive)"),
        horizon: int = typer.Option(12, help="months to value"),
        discount: float = typer.Option(0.01, help="monthly discount rate"),
        name: str = typer.Option("clv", help="model name for the registry and scores"),
        out: Path | None = typer.Option(None, help="also write per-profile CLV CSV here"),
    ) -> None:
        """Fit BG/NBD + Gamma-Gamma, store CLV per profile as scores."""
        import pandas as pd

        from microseg.predict import (
            BetaGeoModel,
            GammaGammaModel,
            customer_lifetime_value,
            register_model,
            rfm_summary,
            store_scores,
        )

        frame = (
            pd.read_parquet(events)
            if events.suffix in (".parquet", ".pq")
            else pd.read_csv(events, dtype={"profile_id": str})
        )
        try:
            summary = rfm_summary(frame, as_of=as_of, freq="W")
            bg = BetaGeoModel().fit(summary["frequency"], summary["recency"], summary["T"])
            gg = GammaGammaModel().fit(summary["frequency"], summary["monetary_value"])
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        result = customer_lifetime_value(bg, gg, summary, horizon=horizon, discount_rate=discount)
        with workspace() as ws:
            version = register_model(
                ws.store,
                name,
                {"bgnbd": bg, "gamma_gamma": gg},
                kind="clv/bgnbd-gamma-gamma",
                features=["frequency", "recency", "T", "monetary_value"],
                params={**bg.params_, **gg.params_},
                metrics={"bgnbd_loglik": bg.log_likelihood_, "gg_loglik": gg.log_likelihood_},
                as_of=pd.Timestamp(as_of),
            )
            store_scores(ws.store, name, version, result["clv"])
        if out is not None:
            result.to_csv(out, index_label="profile_id")
        p = {**bg.params_, **gg.params_}
        console.print("BG/NBD " + ", ".join(f"{k}={p[k]:.3f}" for k in ("r", "alpha", "a", "b")))
        console.print("Gamma-Gamma " + ", ".join(f"{k}={p[k]:.3f}" for k in ("p", "q", "v")))
        console.print(
            f"{name} v{version}: {len(result):,} profiles, total {horizon}-month CLV {result['clv'].sum():,.2f}, "
            f"mean {result['clv'].mean():,.2f}"
        )


def _read_events(path: Path) -> pd.DataFrame:
    """Events (profile_id, ts, value) from CSV or Parquet."""
    import pandas as pd

    if not path.exists():
        raise typer.BadParameter(f"events file {path} does not exist")
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype={"profile_id": str})
