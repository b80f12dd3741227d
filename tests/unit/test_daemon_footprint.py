"""The daemon's start-up choices for its footprint (issue 16): malloc arenas capped before any
thread exists unless the environment says otherwise, and an API server loop that wakes once a
second yet stops at once when asked."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from localvmss import daemon
from localvmss.daemon import M_ARENA_MAX, limit_malloc_arenas


class FakeLibc:
    def __init__(self, answer: int) -> None:
        self.answer = answer
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: Any, value: Any) -> int:
        self.calls.append((param.value, value.value))
        return self.answer


class NoMallopt:
    """A C library without mallopt (musl)."""


@pytest.mark.parametrize(
    ("env", "libc", "said", "calls"),
    [
        ({}, FakeLibc(1), "malloc arenas: at most 2", [(M_ARENA_MAX, 2)]),
        ({"MALLOC_ARENA_MAX": "4"}, FakeLibc(1), "MALLOC_ARENA_MAX=4 from the environment", []),
        ({"MALLOC_ARENA_MAX": ""}, FakeLibc(1), "at most 2", [(M_ARENA_MAX, 2)]),  # empty: not set
        ({}, FakeLibc(0), "mallopt refused", [(M_ARENA_MAX, 2)]),
        ({}, NoMallopt(), "no mallopt", None),
    ],
)
def test_malloc_arenas_are_capped_unless_the_environment_says(
    env: dict[str, str], libc: Any, said: str, calls: list[tuple[int, int]] | None
) -> None:
    assert said in limit_malloc_arenas(env, libc)
    if calls is not None:
        assert libc.calls == calls


def test_the_real_c_library_takes_the_cap() -> None:
    assert limit_malloc_arenas({}) == "malloc arenas: at most 2"  # glibc here


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def test_the_api_server_ticks_once_a_second_and_stops_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ticks: list[float] = []
    listening = threading.Event()
    server = daemon._Server(uvicorn.Config(app, log_level="warning", lifespan="off", log_config=None), listening.set)
    original = server.on_tick

    async def on_tick(counter: int) -> bool:
        ticks.append(time.monotonic())
        assert counter % 10 == 0  # every tick refreshes the Date header
        return await original(counter)

    monkeypatch.setattr(server, "on_tick", on_tick)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "api.sock"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])))
    thread.start()
    try:
        assert listening.wait(10)
        time.sleep(2.5)
    finally:
        asked = time.monotonic()
        server.request_exit()
        thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - asked < 0.9, "request_exit wakes the loop, not the next tick"
    assert 2 <= len([t for t in ticks if t < asked]) <= 4, ticks


def test_the_running_daemon_imports_neither_httpx_nor_lxml_nor_cryptography(tmp_path: Path) -> None:
    """What the daemon loads at run time (its Prometheus client, the autoscaler and its webhook
    sender, domain XML, the TCP API's certificate) leaves out httpx (~3 MiB with its TLS
    context), lxml (~5 MiB) and cryptography (~10 MiB): they would stay resident for good. A
    fresh interpreter, so other tests' imports do not count."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "import localvmss.daemon, localvmss.autoscaler, localvmss.virt.template\n"
        "from localvmss.metrics.prometheus import PrometheusClient\n"
        "from localvmss.virt.domainxml import InstanceDomain, build_domain_xml, read_ownership\n"
        "from localvmss.webhooks import WebhookSender\n"
        "PrometheusClient('http://127.0.0.1:9').ready()\n"
        "WebhookSender().close()\n"
        "spec = InstanceDomain('d', 'qemu', 1, 64, 'p', 'o', 's', 'n', '52:54:00:00:00:01')\n"
        "read_ownership(build_domain_xml(spec))\n"
        "from localvmss.tlsfiles import certificate_from_child\n"
        f"certificate_from_child(Path({str(tmp_path)!r}), '127.0.0.1', None, None)\n"
        "print(sorted(m for m in ('httpx', 'lxml', 'certifi', 'cryptography') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


class FakeTrimLibc:
    def __init__(self) -> None:
        self.pads: list[int] = []

    def malloc_trim(self, pad: Any) -> int:
        self.pads.append(pad.value)
        return 1


def test_freed_memory_is_given_back_at_most_once_an_interval() -> None:
    now = [100.0]
    libc = FakeTrimLibc()
    trim = daemon.MallocTrim(interval_s=60.0, libc=libc, clock=lambda: now[0])
    trim()  # the first supervisor tick: start-up's garbage
    assert libc.pads == [0]
    for now[0] in (102.0, 130.0, 159.9):
        trim()
    assert libc.pads == [0], "not again within the interval"
    now[0] = 160.0
    trim()
    assert libc.pads == [0, 0]


def test_trimming_without_malloc_trim_or_with_the_real_one() -> None:
    daemon.MallocTrim(libc=NoMallopt())()  # musl: nothing to call, nothing raised
    daemon.MallocTrim()()  # glibc here
