"""``klaviyo-segment serve``: the embedded default in one process — Prefect (started or reused), the state store,
the receiver, the dispatcher and, in ``deployments`` mode, the served deployments.

Shutdown order matters for durability: the receiver stops answering first (a request not yet committed gets no 200,
so Segment retries it), then the committer, the dispatcher and the runner; batches still pending or leased stay in
the store and the next start dispatches them (the sweeper also takes over expired leases).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx

from klaviyo_segment.errors import ConfigError
from klaviyo_segment.ingress.receiver import ReceiverSettings
from klaviyo_segment.ingress.runner import bind, start_ingress

log = logging.getLogger("klaviyo_segment.ingress.serve")
PREFECT_START_TIMEOUT = 120.0


def home() -> Path:
    """$KLAVIYO_SEGMENT_HOME or ~/.klaviyo-segment: the default store and the local Prefect home."""
    from klaviyo_segment.settings import env_settings

    return env_settings().home_dir


def free_port(host: str = "127.0.0.1") -> int:
    sock = bind(host, 0)
    port = int(sock.getsockname()[1])
    sock.close()
    return port


class LocalPrefect:
    """``prefect server start`` on SQLite as a child process, with its own PREFECT_HOME."""

    def __init__(self, prefect_home: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.home, self.host = prefect_home, host
        self.port = port or free_port(host)
        self.api_url = f"http://{host}:{self.port}/api"
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> str:
        self.home.mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ,
            PREFECT_HOME=str(self.home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_UI_API_URL=self.api_url,
        )
        env.pop("PREFECT_API_URL", None)
        log_file = open(self.home / "server.log", "ab")  # noqa: SIM115 - owned by the child for its lifetime
        _stop_stale_server(self.home)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", self.host, "--port", str(self.port)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),
        )  # noqa: PLW1509 - prctl + getppid only, async-signal-safe
        log_file.close()
        (self.home / SERVER_PID_FILE).write_text(f"{self.process.pid}\n")
        deadline = time.monotonic() + PREFECT_START_TIMEOUT
        async with httpx.AsyncClient(timeout=2, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise ConfigError(f"prefect server exited ({self.process.returncode}); see {self.home}/server.log")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.api_url}/health")).status_code == 200:
                        return self.api_url
                await asyncio.sleep(0.2)
        self.stop()
        raise ConfigError(f"prefect server did not become healthy in {PREFECT_START_TIMEOUT:.0f}s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        with contextlib.suppress(OSError):
            (self.home / SERVER_PID_FILE).unlink()


# ---- orphan prevention (issue 17, item 8): a SIGKILLed serve cannot stop its server itself -----------------------
#: The running server's pid, in the Prefect home: a restart finds a server its killed predecessor left behind.
SERVER_PID_FILE = "server.pid"
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when serve dies, SIGKILL included (``prctl``
    PR_SET_PDEATHSIG). Elsewhere None: the pid file below still stops an orphan at the next start."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # serve died between fork and prctl: nobody would signal us
            os._exit(1)

    return preexec


def _stop_stale_server(prefect_home: Path) -> None:
    """Stop a ``prefect server start`` a killed serve left on this Prefect home, so two servers never share one
    prefect.db. The pid is only signalled when its command line is such a server with this home (pid reuse)."""
    pid_file = prefect_home / SERVER_PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return
    if b"server" not in cmdline or f"PREFECT_HOME={prefect_home}".encode() not in environ:
        return
    log.warning("stopping the prefect server (pid %d) a previous serve left running", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _running(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _running(pid):
            os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # Z: exited
    except (OSError, IndexError):
        return False


@contextlib.asynccontextmanager
async def prefect_api(prefect_home: Path | None = None) -> AsyncIterator[str]:
    """PREFECT_API_URL when set, else a local server for the lifetime of the context."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        yield configured
        return
    server = LocalPrefect(prefect_home or home() / "prefect")
    try:
        url = await server.start()
        os.environ["PREFECT_API_URL"] = url  # child processes (served runs) inherit it
        with temporary_settings({PREFECT_API_URL: url}):
            yield url
    finally:
        await _flush_run_logs()
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


async def _flush_run_logs() -> None:
    """Flow-run logs are shipped in the background; send them before the server they go to stops."""
    from prefect.logging.handlers import APILogHandler

    with contextlib.suppress(Exception):
        await asyncio.wait_for(APILogHandler.aflush(), 10)


async def load_serve_config(config_path: Path | None) -> tuple[Any, dict[str, Any] | None]:
    """(AppConfig for routing, mapping document for inline runs). --config is also saved as the 'default'
    mapping-tables block, so runs started elsewhere (workers, deployments mode) route and map the same way.

    Async on purpose: inside serve's event loop ``Block.save`` returns a coroutine; calling it without ``await``
    silently saved nothing (workers then ran on default mappings or failed for a missing ``churn.list_id``)."""
    from klaviyo_segment.config_loading import load_process_config
    from klaviyo_segment.runtime import load_flow_config

    if config_path is None:
        load_process_config(None)
        return load_flow_config(None), None
    config, document = load_process_config(config_path)
    from klaviyo_segment.blocks.mapping import DEFAULT_DOCUMENT_NAME, MappingTables

    await MappingTables.from_config(config).asave(DEFAULT_DOCUMENT_NAME, overwrite=True)
    return config, document


#: Suffix of the deployments serve's own runner registers for flows the user has not deployed: a distinct name,
#: so serve never re-registers (and so strips the work pool, pull steps and triggers of) a `prefect deploy` one.
SERVE_SUFFIX = "-serve"


async def deployment_targets(flows: list[str]) -> tuple[dict[str, str], list[str]]:
    """({flow: "flow/deployment"} to start runs of, [flows serve must serve itself]).

    A flow with the deployment `prefect deploy` creates (``<flow>/<flow>``, prefect.yaml) is started there, as it
    is: its work pool's workers execute the runs and serve never writes to it. Only a flow without one gets a
    ``<flow>/<flow>-serve`` deployment served by this process."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    targets: dict[str, str] = {}
    missing: list[str] = []
    async with get_client() as client:
        for flow in flows:
            try:
                deployment = await client.read_deployment_by_name(f"{flow}/{flow}")
            except ObjectNotFound:
                missing.append(flow)
                targets[flow] = f"{flow}/{flow}{SERVE_SUFFIX}"
                continue
            targets[flow] = f"{flow}/{flow}"
            log.info(
                "runs of %s start deployment %s/%s (work pool %s; its workers execute them)",
                flow,
                flow,
                flow,
                deployment.work_pool_name or "none",
            )
    return targets, missing


async def _serve_deployments(flows: list[str], poll_seconds: float = 1.0) -> asyncio.Task[None] | None:
    """Serve ``<flow>-serve`` deployments of ``flows`` in this process (none: no runner)."""
    if not flows:
        return None
    from prefect.runner import Runner

    from klaviyo_segment.flows import get_spec

    os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", str(int(poll_seconds)))
    runner = Runner(name="klaviyo-segment-serve", query_seconds=poll_seconds, pause_on_shutdown=False)
    for flow in flows:
        log.info("no deployment %s/%s: serving %s/%s%s in this process", flow, flow, flow, flow, SERVE_SUFFIX)
        await runner.add_flow(get_spec(flow).flow, name=f"{flow}{SERVE_SUFFIX}")  # type: ignore[misc]
    return asyncio.create_task(runner.start(), name="runner")


def _config_token(config: Any) -> str | None:
    """``segment.webhook_token`` from the config file (the environment variable wins, in from_env)."""
    token = getattr(getattr(config, "segment", None), "webhook_token", None)
    return token.get_secret_value() if token is not None else None


def ui_url(api_url: str) -> str:
    return api_url[: -len("/api")] if api_url.endswith("/api") else api_url


async def serve(
    *,
    config_path: Path | None,
    host: str,
    port: int,
    dispatch: str,
    ready: Callable[[dict[str, str]], None],
    stop: asyncio.Event | None = None,
) -> int:
    """Run until SIGINT/SIGTERM (or ``stop``); returns the exit code."""
    from klaviyo_segment.settings import resolve_store_url
    from klaviyo_segment.store import Store

    if dispatch not in ("inline", "deployments"):
        raise ConfigError(f"--dispatch must be inline or deployments, not {dispatch!r}")
    sock = bind(host, port)  # port in use -> exit 2 before anything starts
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with prefect_api() as api_url:
        config, document = await load_serve_config(config_path)
        from klaviyo_segment.ingress.dispatcher import deployment_launcher
        from klaviyo_segment.ingress.runner import runnable_flows
        from klaviyo_segment.settings import credentials_document

        store = await Store.open(resolve_store_url(config=credentials_document()))
        runner_task: asyncio.Task[None] | None = None
        launcher = None
        if dispatch == "deployments":
            targets, missing = await deployment_targets(runnable_flows(config))
            launcher = deployment_launcher(targets)
            runner_task = await _serve_deployments(missing)
        try:
            ingress = await start_ingress(
                store,
                config,
                sock=sock,
                dispatch=dispatch,
                mapping_document=document,
                launcher=launcher,
                settings=ReceiverSettings.from_env(config_token=_config_token(config)),
            )
            ready({"receiver": ingress.url, "prefect_ui": ui_url(api_url)})
            await stop.wait()
            log.info("shutting down; unfinished batches stay in the store")
            await ingress.stop()
        finally:
            if runner_task is not None:
                runner_task.cancel()
                await asyncio.gather(runner_task, return_exceptions=True)
            await store.close()
    return 0


def print_ready(info: dict[str, str]) -> None:
    print(json.dumps(info), flush=True)
