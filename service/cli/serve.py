"""``acula serve --bundle DIR``: run the inference service under uvicorn (torch-free).

Command-line options override ``ACULA_*`` environment variables, which override the defaults in
:class:`acula.service.settings.Settings`. One uvicorn worker: scale with replicas, so Prometheus sees one
registry per process. On SIGTERM readiness turns false first; after ``drain_delay_s`` uvicorn stops accepting
connections, lets in-flight requests finish (up to ``graceful_shutdown_s``) and then the batcher drains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def build_server(settings: Any) -> Any:
    """A uvicorn Server for ``settings`` whose SIGTERM handling flips readiness before draining."""
    import contextlib
    import threading

    import uvicorn

    from acula.service.app import create_app

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # root_path is set on the FastAPI app only: then both /acula/predict (gateway keeps the prefix) and
        # /predict (gateway strips it) route correctly; uvicorn's own root_path would prepend it once more.
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_keep_alive=int(settings.keepalive_timeout_s),
        timeout_graceful_shutdown=int(settings.graceful_shutdown_s),
        log_config=None,
        access_log=False,
        workers=1,
        server_header=False,
    )

    class DrainingServer(uvicorn.Server):
        """Readiness off at the first signal; the listener closes ``drain_delay_s`` later."""

        _draining = False

        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            # uvicorn re-raises the captured SIGTERM after a clean shutdown, so the process "dies of SIGTERM"
            # (143) and orchestrators log an error; a completed drain is a success: exit 0.
            with super().capture_signals():
                yield
                self._captured_signals.clear()

        def handle_exit(self, sig: int, frame: Any) -> None:
            app.state.runtime.ready = False
            if self._draining or settings.drain_delay_s <= 0:
                super().handle_exit(sig, frame)
                return
            self._draining = True
            timer = threading.Timer(settings.drain_delay_s, super().handle_exit, args=(sig, frame))
            timer.daemon = True
            timer.start()

    return DrainingServer(config)


def serve(
    bundle: Annotated[
        Path | None, typer.Option("--bundle", "-b", help="Model bundle folder (env ACULA_BUNDLE).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Interface (env ACULA_HOST; default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (env ACULA_PORT; default 8000).")] = None,
    provider: Annotated[str | None, typer.Option(help="cpu | cuda | auto (env ACULA_PROVIDER).")] = None,
    root_path: Annotated[
        str | None, typer.Option(help="Prefix behind a gateway (env ACULA_ROOT_PATH).")
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="debug | info | warning | error (env ACULA_LOG_LEVEL).")
    ] = None,
) -> None:
    """Serve a model bundle over HTTP: /predict, /similar-reports, /embed, /healthz, /readyz, /metrics."""
    from pydantic import ValidationError

    from acula.service.bundle import BundleError, load_manifest, missing_bundle_message
    from acula.service.logging import configure_logging
    from acula.service.settings import Settings

    overrides = {
        key: value
        for key, value in {
            "bundle": bundle,
            "host": host,
            "port": port,
            "provider": provider,
            "root_path": root_path,
            "log_level": log_level,
        }.items()
        if value is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        typer.echo(f"error: invalid settings:\n{exc}", err=True)
        raise typer.Exit(2) from exc
    if not settings.bundle.is_dir():
        typer.echo(f"error: {missing_bundle_message(settings.bundle)}", err=True)
        raise typer.Exit(2)
    try:
        load_manifest(settings.bundle)  # fail here, clearly, rather than inside the server's lifespan
    except BundleError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    configure_logging(settings.log_level, settings.log_json)
    server = build_server(settings)
    server.run()
    if not server.started:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
