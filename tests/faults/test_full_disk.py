"""A full disk, for real: a 2 MB tmpfs holds the data directory and a ballast file takes its last byte.

What users see: sends answer ``503 storage_unavailable`` with ``Retry-After``, ``/readyz`` says
the store is not ready, reads still answer, nothing accepted before is lost; when space comes
back ``/readyz`` is ready again and sends are accepted, and everything accepted goes out.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.clock import isoformat
from tests.conftest import Api, FakeClock, MemoryProvider, sms_body

DISK_BYTES = 2 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount)], capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a {DISK_BYTES // 1024} KiB tmpfs needs root here: {mounted.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def take_every_free_byte(disk: Path) -> Path:
    """A ballast file that grows until the disk refuses another byte."""
    ballast = disk / "ballast"
    with ballast.open("wb", buffering=0) as out:
        for chunk in (65536, 4096, 1):
            try:
                while True:
                    out.write(b"\0" * chunk)
            except OSError:
                continue
    return ballast


async def test_a_full_disk_answers_503_and_not_ready_loses_nothing_and_recovers(
    aiohttp_client: Any, make_app: Callable[..., web.Application], small_disk: Path,
    memory_provider: type[MemoryProvider], clock: FakeClock,
) -> None:
    api = Api(await aiohttp_client(make_app(data_dir=small_disk / "data")))
    status, sent_now = await api.send(sms_body("+14155550101"))
    assert status == 202
    status, later = await api.send(sms_body("+14155550102", send_at=isoformat(clock.now() + 300)))
    assert status == 202
    await api.wait_for(sent_now["notification_id"], lambda n: n["status"] == "sent")

    ballast = take_every_free_byte(small_disk)
    for _ in range(3):
        response = await api.client.post("/api/v1/notifications/send", json=sms_body("+14155550103"), headers=api.headers())
        assert response.status == 503
        assert (await response.json())["error"]["code"] == "storage_unavailable"
        assert response.headers["Retry-After"] == "5"
    ready = await api.client.get("/readyz")
    assert ready.status == 503 and (await ready.json())["checks"]["store"] is False
    assert (await api.notification(later["notification_id"]))["status"] == "queued", "reads still answer"

    ballast.unlink()
    ready = await api.client.get("/readyz")
    assert ready.status == 200, await ready.json()
    status, after = await api.send(sms_body("+14155550104"))
    assert status == 202

    clock.advance(300)
    await api.idle()
    for accepted in (later, after):
        await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")
    assert sorted(m.to for m in memory_provider.sent) == ["+14155550101", "+14155550102", "+14155550104"]
    status, listed = await api.get("/api/v1/notifications?limit=10")
    assert len(listed["items"]) == 3, "the refused sends left nothing behind"
