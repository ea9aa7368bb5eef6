"""A SIGKILLed ``serve`` must not leave its ``prefect server start`` child behind (issue 17, item 8): the orphan
held ~240 MB and a restarted serve started a second server on the same prefect.db."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from klaviyo_segment.ingress.serve import free_port

SERVE = "from klaviyo_segment.cli.app import main; main()"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")]


def _children(pid: int) -> dict[int, str]:
    """Direct children of ``pid`` and their command lines, from /proc."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait() is missing


def _start_serve(tmp_path: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # serve starts its own server
    env.update(
        KLAVIYO_SEGMENT_HOME=str(tmp_path / "home"),
        KLAVIYO_SEGMENT_STORE_URL=f"sqlite:///{tmp_path}/s.db",
        KLAVIYO_API_KEY="pk_orphan_test",
        KLAVIYO_BASE_URL="http://127.0.0.1:9",
    )
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, "serve", "--port", str(free_port())],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    log.close()
    line = proc.stdout.readline()  # type: ignore[union-attr]  # one JSON line when ready
    assert line, f"serve exited with {proc.wait(5)}: {(tmp_path / 'serve.log').read_text()[-2000:]}"
    json.loads(line)
    return proc


def test_sigkilled_serve_takes_its_prefect_server_with_it(tmp_path: Path) -> None:
    serve = _start_serve(tmp_path)
    servers: list[int] = []
    try:
        servers = [pid for pid, cmd in _children(serve.pid).items() if "prefect server start" in cmd]
        assert len(servers) == 1, _children(serve.pid)
        serve.send_signal(signal.SIGKILL)
        serve.wait(10)
        deadline = time.monotonic() + 30
        while _alive(servers[0]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(servers[0]), "the prefect server outlived its serve"
    finally:
        for pid in [serve.pid, *_children(serve.pid), *servers]:  # never leave an orphan behind, even on failure
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_restart_stops_a_server_left_on_the_same_prefect_home(tmp_path: Path) -> None:
    """Where the parent-death signal is not available (or was lost), the pid file still prevents two servers."""
    from klaviyo_segment.ingress.serve import SERVER_PID_FILE, _stop_stale_server

    home = tmp_path / "prefect"
    home.mkdir()
    env = dict(os.environ, PREFECT_HOME=str(home))
    stale = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "server"], env=env)
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "server"],
        env=dict(os.environ, PREFECT_HOME=str(tmp_path / "elsewhere")),
    )
    try:
        (home / SERVER_PID_FILE).write_text(f"{other.pid}\n")
        _stop_stale_server(home)  # another home's process (or a reused pid) is never signalled
        assert other.poll() is None
        (home / SERVER_PID_FILE).write_text(f"{stale.pid}\n")
        _stop_stale_server(home)
        assert stale.wait(5) is not None
    finally:
        for proc in (stale, other):
            proc.kill()
            proc.wait(5)
