"""Build the Tidings image with podman and run it without a container runtime.

These machines have no Docker daemon, cannot pull base images, and cannot start an OCI
container (``podman run`` fails on ``setrlimit``). What they can do, as
``shared/CONTAINERS.md`` describes: make a Debian base from the archive with ``debootstrap``
(built once, then cached as ``localhost/debian-python:bookworm``), build the real
``Dockerfile`` with chroot isolation, and run a program from the image's own mounted
filesystem under ``chroot`` as the image's user, with the image's environment. That proves the
image's files, user, entry point, health check and plugins; it cannot prove cgroup limits.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

BASE: Final = "localhost/debian-python:bookworm"
BASE_PACKAGES: Final = "python3,python3-venv,ca-certificates"
SUITE: Final = "bookworm"
APT_SOURCES: Final = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))
DEFAULT_MIRROR: Final = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class Image:
    """A built image: its reference and the parts of its config a runtime would apply."""

    ref: str
    user: str
    env: Mapping[str, str]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    workdir: str
    volumes: frozenset[str]
    healthcheck: tuple[str, ...]

    def uid_gid(self, root: Path) -> tuple[int, int]:
        """The numeric user and group the image runs as, names resolved in its own /etc/passwd."""
        name, _, group = self.user.partition(":")
        if name.isdigit():
            uid, gid = int(name), None
        else:
            entry = _passwd_entry(root, name)
            uid, gid = int(entry[2]), int(entry[3])
        if group:
            gid = int(group) if group.isdigit() else int(_group_entry(root, group)[2])
        return uid, (gid if gid is not None else uid)


def ensure_tools() -> None:
    """Install podman and debootstrap from Debian's archive if they are missing."""
    if shutil.which("podman") and shutil.which("debootstrap"):
        return
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "podman", "debootstrap"], check=True, env=env, stdout=subprocess.DEVNULL)


def ensure_base() -> str:
    """The stand-in for ``python:3.12-slim``: Debian's python3 from the archive, made once."""
    if subprocess.run(["podman", "image", "exists", BASE], check=False).returncode == 0:
        return BASE
    with contextlib.ExitStack() as cleanup:
        rootfs = Path(cleanup.enter_context(_temporary_directory()))
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", SUITE, str(rootfs), archive_url()],
            check=True, stdout=subprocess.DEVNULL,
        )
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["podman", "import", "-", BASE], stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL)
        if tar.wait() != 0:
            raise RuntimeError("tar of the debootstrap root failed")
    return BASE


def archive_url() -> str:
    """The Debian archive apt uses on this machine (reachable here, unlike image registries)."""
    for sources in APT_SOURCES:
        if not sources.exists():
            continue
        for line in sources.read_text().splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"] and len(words) > 2 and "security" not in words[1]:
                return words[1]
    return DEFAULT_MIRROR


def build(context: Path, tag: str, *, build_args: Mapping[str, str] | None = None) -> Image:
    """``podman build`` the Dockerfile in ``context`` (docker format, so HEALTHCHECK is kept)."""
    argv = ["podman", "build", "--isolation", "chroot", "--network", "host", "--format", "docker", "--tag", tag]
    cafile = ssl.get_default_verify_paths().cafile
    if cafile:  # pip in the build trusts what this machine trusts
        argv += ["--secret", f"id=pipca,src={cafile}"]
    for name, value in (build_args or {}).items():
        argv += ["--build-arg", f"{name}={value}"]
    subprocess.run([*argv, str(context)], check=True)
    return inspect(tag)


def inspect(tag: str) -> Image:
    """The config of a local image, as ``podman image inspect`` reports it."""
    raw: dict[str, Any] = json.loads(subprocess.run(["podman", "image", "inspect", tag], check=True, capture_output=True).stdout)[0]
    config = raw["Config"]
    health = raw.get("Healthcheck") or config.get("Healthcheck") or {}
    test = list(health.get("Test") or ())
    if test[:1] == ["CMD-SHELL"]:
        test = ["/bin/sh", "-c", *test[1:]]
    return Image(
        ref=tag,
        user=config.get("User") or "0",
        env=dict(item.split("=", 1) for item in config.get("Env") or []),
        entrypoint=tuple(config.get("Entrypoint") or ()),
        cmd=tuple(config.get("Cmd") or ()),
        workdir=config.get("WorkingDir") or "/",
        volumes=frozenset(config.get("Volumes") or {}),
        healthcheck=tuple(test[1:] if test[:1] == ["CMD"] else test),
    )


@contextlib.contextmanager
def mounted(image: Image) -> Iterator[Path]:
    """A new container's root filesystem, mounted read-write; removed afterwards."""
    container = subprocess.run(["podman", "create", image.ref], check=True, capture_output=True, text=True).stdout.strip()
    try:
        root = subprocess.run(["podman", "mount", container], check=True, capture_output=True, text=True).stdout.strip()
        try:
            yield Path(root)
        finally:
            subprocess.run(["podman", "umount", container], check=False, stdout=subprocess.DEVNULL)
    finally:
        subprocess.run(["podman", "rm", "--force", container], check=False, stdout=subprocess.DEVNULL)


def command(image: Image, root: Path, argv: Sequence[str], *, env: Mapping[str, str] | None = None, **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``argv`` inside the image's filesystem as the image's user, env and working dir."""
    uid, gid = image.uid_gid(root)

    def enter() -> None:  # in the child, before exec: what a runtime does, less the namespaces
        os.chroot(root)
        os.chdir(image.workdir)
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return subprocess.Popen(list(argv), env={**image.env, **(env or {})}, preexec_fn=enter, **popen)  # noqa: PLW1509


def run(image: Image, root: Path, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in the image to completion; its output as text."""
    process = command(image, root, argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(list(argv), process.returncode, out, err)


def _passwd_entry(root: Path, name: str) -> list[str]:
    return _entry(root / "etc/passwd", name)


def _group_entry(root: Path, name: str) -> list[str]:
    return _entry(root / "etc/group", name)


def _entry(path: Path, name: str) -> list[str]:
    for line in path.read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    raise LookupError(f"{name} is not in the image's {path.name}")


@contextlib.contextmanager
def _temporary_directory() -> Iterator[str]:
    import tempfile

    path = tempfile.mkdtemp(prefix="tidings-rootfs-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
