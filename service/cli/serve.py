"""``acula serve --bundle DIR``: run the inference service under uvicorn (torch-free).

Command-line options override ``ACULA_*`` environment variables, which override the defaults in
:class:`acula.service.settings.Settings`. One uvicorn worker: scale with replicas, so Prometheus sees one
registry per process.

Shutdown, through uvicorn's public API only (``Server.serve``, ``started``, ``should_exit``): once the server
is listening, SIGTERM and SIGINT are handled by the event loop's own signal handlers (which replace
uvicorn's). The first signal turns readiness off at once; ``drain_delay_s`` later ``should_exit`` is set and
uvicorn stops accepting connections, lets in-flight requests finish for up to ``graceful_shutdown_s``, cancels
the rest, and the lifespan drains the batcher. A second signal stops waiting for the drain delay. The exit
status says how it went: 0 when every request was answered, 1 when the graceful timeout cut some (their
number is printed), so an orchestrator does not count a lossy shutdown as a clean one. (uvicorn's own
handler would re-raise the signal after a clean drain, so the process would seem to die of it: 143.)
"""

from __future__ import annotations

import asyncio
import math
import signal
from pathlib import Path
from typing import Annotated, Any

import typer


def build_server(settings: Any, app: Any = None) -> Any:
    """A uvicorn Server for ``settings`` (and ``app``, by default the service's own), on the service's
    HTTP/1.1 protocol with its header limits."""
    import uvicorn

    from acula.service.api.protocol import with_header_timeout
    from acula.service.app import create_app

    config = uvicorn.Config(
        app if app is not None else create_app(settings),
        host=settings.host,
        port=settings.port,
        # root_path is set on the FastAPI app only: then both /acula/predict (gateway keeps the prefix) and
        # /predict (gateway strips it) route correctly; uvicorn's own root_path would prepend it once more.
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_keep_alive=math.ceil(settings.keepalive_timeout_s),
        timeout_graceful_shutdown=math.ceil(settings.graceful_shutdown_s),
        http=with_header_timeout(settings.header_timeout_s),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        log_config=None,
        access_log=False,
        workers=1,
        server_header=False,
    )
    return uvicorn.Server(config)


async def serve_until_drained(server: Any, runtime: Any, drain_delay_s: float) -> None:
    """``server.serve()``, with readiness off at the first SIGTERM/SIGINT and the listener closed
    ``drain_delay_s`` later (see the module docstring)."""
    loop = asyncio.get_running_loop()
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():  # uvicorn installs its own handlers while starting
        await asyncio.sleep(0.05)
    signals = (signal.SIGTERM, signal.SIGINT)

    def stop() -> None:
        server.should_exit = True

    def on_signal() -> None:
        if not runtime.ready or drain_delay_s <= 0:  # a second signal, or no delay: stop now
            stop()
        else:
            loop.call_later(drain_delay_s, stop)
        runtime.ready = False

    if server.started:
        for sig in signals:
            loop.add_signal_handler(sig, on_signal)
    try:
        await serving
        await asyncio.sleep(0.1)  # let the requests uvicorn cancelled record themselves
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


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

    overrides: dict[str, Any] = {
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
    run(settings)


def run(settings: Any, app: Any = None) -> None:
    """Serve until a signal and a drain; exit 1 when start-up failed or the drain cut requests."""
    server = build_server(settings, app)
    runtime = server.config.app.state.runtime
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(serve_until_drained(server, runtime, settings.drain_delay_s))
    if not server.started:
        raise typer.Exit(1)
    if runtime.cut_at_shutdown:
        typer.echo(
            f"error: {runtime.cut_at_shutdown} request(s) were cut at shutdown without a response: "
            f"ACULA_GRACEFUL_SHUTDOWN_S ({settings.graceful_shutdown_s:g} s) ran out before they finished",
            err=True,
        )
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
