"""CLI: `microseg serve` (the HTTP API) and `microseg apikey create|list|revoke`."""

from __future__ import annotations

import typer

from microseg.cli import STATE, console, frame_table, workspace


def register(app: typer.Typer) -> None:
    apikey_app = typer.Typer(help="API keys with roles for the HTTP API.", no_args_is_help=True)
    app.add_typer(apikey_app, name="apikey")

    @app.command()
    def serve(
        host: str = typer.Option("127.0.0.1", help="interface to bind"),
        port: int = typer.Option(8321, help="TCP port"),
        workers: int = typer.Option(1, help="worker processes (the DuckDB store allows 1)"),
        dev: bool = typer.Option(False, "--dev", help="dev mode: accepts the admin key 'dev'"),
        log_level: str = typer.Option("info", help="debug | info | warning | error"),
        access_log: bool = typer.Option(False, help="log every request"),
        tls_cert: str | None = typer.Option(None, help="PEM certificate (chain): serve HTTPS"),
        tls_key: str | None = typer.Option(None, help="PEM private key of --tls-cert"),
    ) -> None:
        """Serve the HTTP API (collector, decisions, profiles; OpenAPI at /docs)."""
        from microseg.api.server import serve as run
        from microseg.api.settings import ApiSettings

        settings = ApiSettings(dev=True) if dev else ApiSettings()
        # uvicorn logs the address once the store is open and the spool recovered; docs at /docs
        run(
            STATE["project"],
            host=host,
            port=port,
            workers=workers,
            settings=settings,
            log_level=log_level,
            access_log=access_log,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )

    @apikey_app.command("create")
    def create(
        role: str = typer.Option(..., help="admin | analyst | collector | decision-reader"),
        name: str | None = typer.Option(None, help="what the key is for"),
        rate: float | None = typer.Option(None, help="requests per second (default: server's)"),
    ) -> None:
        """Create an API key; it is printed once and only its keyed hash is stored."""
        from microseg.api.keys import create_key

        with workspace() as ws:
            record, key = create_key(
                ws.store, ws.keys, role, name=name, rate_per_second=rate, actor="cli"
            )
        console.print(f"key id {record.key_id} · role {record.role}", highlight=False)
        typer.echo(key)

    @apikey_app.command("list")
    def list_() -> None:
        """API keys (ids, roles, status; never the secrets)."""
        from microseg.api.keys import list_keys

        with workspace() as ws:
            df = list_keys(ws.store)
            console.print(
                frame_table(df[["key_id", "role", "name", "created_at", "revoked_at"]], "API keys")
            )

    @apikey_app.command("revoke")
    def revoke(key_id: str = typer.Argument(..., help="key id shown by create / list")) -> None:
        """Revoke an API key (takes effect when the server starts or via the admin API)."""
        from microseg.api.keys import revoke_key

        with workspace() as ws:
            revoke_key(ws.store, key_id, actor="cli")
        console.print(f"revoked {key_id}")
