"""Hot reload against real files and a running app: edits, mistakes, deletions and ConfigMap swaps.

Nothing here sleeps: each test waits, for at most the one second a change may take to go
live, until the watcher's reload attempts reach the expected state.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiohttp import web
from conftest import POLICY, Api, MemoryProvider, sms_body

from gateway import OutboundMessage, Provider, SendReceipt
from gateway.cli import _reload_on_hangup
from gateway.http.appkeys import DISPATCHER, POLICIES, POLICY_WATCHER, PROVIDERS
from gateway.plugins import PluginCatalog
from gateway.policy.watcher import PolicyWatcher
from gateway.settings import Settings
from plugins.sandbox import SandboxProvider

LIVE_WITHIN = 1.0  # seconds from a change on disk to the gateway serving it (or reporting it)
BASE = textwrap.dedent(POLICY)


class GateProvider(Provider):
    """Holds every send while its config says ``hold: true``, until the test opens the gate."""

    channels = frozenset({"sms", "push"})
    config_schema: ClassVar[Mapping[str, Any]] = {"type": "object", "properties": {"hold": {"type": "boolean"}}}
    gate: ClassVar[asyncio.Event]
    holding: ClassVar[asyncio.Event]
    closed: ClassVar[list[GateProvider]]

    async def send(self, message: OutboundMessage) -> SendReceipt:
        if self.config.get("hold"):
            type(self).holding.set()
            await type(self).gate.wait()
        return SendReceipt(provider_message_id=f"gate-{message.delivery_id}")

    async def aclose(self) -> None:
        type(self).closed.append(self)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """These tests are about the watcher, which the shared fixture leaves off."""
    return settings.model_copy(update={"policy_reload": True})


@pytest.fixture
def plugin_catalog(memory_provider: type[MemoryProvider]) -> PluginCatalog:
    GateProvider.gate, GateProvider.holding, GateProvider.closed = asyncio.Event(), asyncio.Event(), []
    return PluginCatalog.from_classes({"memory": memory_provider, "sandbox": SandboxProvider, "gate": GateProvider})


async def start(aiohttp_client: Any, make_app: Callable[..., web.Application], **settings: Any) -> Api:
    return Api(await aiohttp_client(make_app(**settings)))


def watcher_of(api: Api) -> PolicyWatcher:
    return api.app[POLICY_WATCHER]


async def until(api: Api, predicate: Callable[[], bool]) -> None:
    """Wait until ``predicate`` holds after a reload attempt, failing if that takes over a second."""
    await asyncio.wait_for(watcher_of(api).wait_until(predicate), LIVE_WITHIN)


async def version_changes(api: Api, change: Callable[[], object]) -> None:
    holder = api.app[POLICIES]
    before = holder.current.version
    change()
    await until(api, lambda: holder.current.version != before)


async def rejected(api: Api, change: Callable[[], object]) -> dict[str, Any]:
    """Make ``change``, wait for it to be refused, and return /readyz's policy block."""
    holder = api.app[POLICIES]
    serving = holder.current
    change()
    await until(api, lambda: holder.last_error is not None)
    assert holder.current is serving
    response = await api.client.get("/readyz")
    body = await response.json()
    assert response.status == 200, body
    assert body["ready"] is True
    assert body["policy"]["version"] == serving.version
    assert body["policy"]["last_error_at"] is not None
    return body["policy"]  # type: ignore[no-any-return]


async def sent_content(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    status, accepted = await api.send(body)
    assert status == 202, accepted
    done = await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")
    return done["deliveries"][0]  # type: ignore[no-any-return]


async def test_a_template_edit_on_disk_is_used_by_the_next_send(api: Api, policy_dir: Path) -> None:
    assert watcher_of(api).watching
    assert (await sent_content(api, sms_body()))["content"] == {"body": "Your code is 123456"}

    edited = BASE.replace('sms: {body: "Your code is {{ code }}"}', 'sms: {body: "Code: {{ code }}. Never share it."}')
    await version_changes(api, lambda: (policy_dir / "policy.yaml").write_text(edited))

    assert (await sent_content(api, sms_body()))["content"] == {"body": "Code: 123456. Never share it."}
    response = await api.client.get("/readyz")
    assert (await response.json())["policy"]["last_error"] is None


async def test_a_new_provider_instance_and_channel_route_are_served_without_a_restart(api: Api, policy_dir: Path) -> None:
    push = {"recipient": {"device_token": "tok-1"}, "notification": {"channels": ["push"], "body": "Hello", "subject": "Hi"}}
    status, refused = await api.send(push)
    assert status == 422, refused
    memory_before = api.app[PROVIDERS].current.get("memory")

    extra = "providers:\n  pusher: {plugin: gate}\nchannels:\n  push: {providers: [pusher]}\n"
    await version_changes(api, lambda: (policy_dir / "push.yaml").write_text(extra))

    delivery = await sent_content(api, push)
    assert delivery["provider"] == "pusher"
    _, capabilities = await api.get("/api/v1/channels/capabilities")
    assert next(c for c in capabilities["channels"] if c["channel"] == "push")["providers"] == ["pusher"]
    assert api.app[PROVIDERS].current.get("memory") is memory_before, "an unchanged instance is carried over"


async def test_a_changed_instance_is_closed_only_after_its_send_in_flight_finishes(
    aiohttp_client: Any, make_app: Callable[..., web.Application], policy_dir: Path
) -> None:
    (policy_dir / "policy.yaml").write_text(_with_gate(hold=True))
    api = await start(aiohttp_client, make_app)
    old = api.app[PROVIDERS].current.get("gate")
    status, first = await api.send(sms_body("+14155550101"))
    assert status == 202
    await asyncio.wait_for(GateProvider.holding.wait(), LIVE_WITHIN)

    await version_changes(api, lambda: (policy_dir / "policy.yaml").write_text(_with_gate(hold=False)))
    new = api.app[PROVIDERS].current.get("gate")
    assert new is not old
    assert (await sent_content(api, sms_body("+14155550102")))["provider"] == "gate"
    assert GateProvider.closed == [], "the old instance is still sending"

    GateProvider.gate.set()
    await api.wait_for(first["notification_id"], lambda n: n["status"] == "sent")
    await asyncio.wait_for(_closed(old), LIVE_WITHIN)
    assert GateProvider.closed == [old]


def _with_gate(*, hold: bool) -> str:
    routed = BASE.replace("sms: {providers: [memory]}", "sms: {providers: [gate]}")
    return routed.replace("providers:\n", f"providers:\n  gate: {{plugin: gate, config: {{hold: {str(hold).lower()}}}}}\n", 1)


async def _closed(provider: Provider | None) -> None:
    while provider not in GateProvider.closed:
        await asyncio.sleep(0)


async def test_broken_yaml_keeps_the_old_set_serving_and_readyz_names_file_and_line(api: Api, policy_dir: Path) -> None:
    broken = "channels:\n  push: {providers: [memory]\n  voice: {providers: [memory]}\n"
    policy = await rejected(api, lambda: (policy_dir / "broken.yaml").write_text(broken))

    [issue] = policy["last_error"]
    assert issue["file"] == "broken.yaml"
    assert isinstance(issue["line"], int)
    assert "invalid YAML" in issue["message"]
    assert (await sent_content(api, sms_body()))["content"] == {"body": "Your code is 123456"}


@pytest.mark.parametrize(
    ("text", "line", "path"),
    [
        ("providers:\n  second:\n    plugin: memory\n    colour: blue\n", 4, "providers.second.colour"),
        ("channels:\n  push:\n    providers: [nowhere]\n", 3, "channels.push.providers[0]"),
        ("providers:\n  second:\n    plugin: carrier_pigeon\n", 3, "providers.second.plugin"),
    ],
    ids=["unknown-field", "unknown-provider-instance", "unknown-plugin"],
)
async def test_valid_yaml_that_is_wrong_keeps_the_old_set_and_is_reported_where_it_is(
    api: Api, policy_dir: Path, text: str, line: int, path: str
) -> None:
    policy = await rejected(api, lambda: (policy_dir / "extra.yaml").write_text(text))

    assert [(i["file"], i["line"], i["path"]) for i in policy["last_error"]] == [("extra.yaml", line, path)]
    assert (await sent_content(api, sms_body()))["provider"] == "memory"


async def test_fixing_a_rejected_change_clears_the_error_without_swapping_anything(api: Api, policy_dir: Path) -> None:
    holder = api.app[POLICIES]
    serving, pool = holder.current, api.app[PROVIDERS].current
    await rejected(api, lambda: (policy_dir / "extra.yaml").write_text("tenants: [not, a, mapping]\n"))

    (policy_dir / "extra.yaml").unlink()
    await until(api, lambda: holder.last_error is None)
    assert holder.current is serving
    assert api.app[PROVIDERS].current is pool
    body = await (await api.client.get("/readyz")).json()
    assert body["policy"]["last_error"] is None
    assert body["policy"]["last_error_at"] is None


async def test_rewriting_identical_content_swaps_and_rebuilds_nothing(api: Api, policy_dir: Path) -> None:
    holder, watcher = api.app[POLICIES], watcher_of(api)
    serving, pool, attempts = holder.current, api.app[PROVIDERS].current, watcher.attempts

    (policy_dir / "policy.yaml").write_text(BASE)
    await until(api, lambda: watcher.attempts > attempts)

    assert holder.current is serving
    assert api.app[PROVIDERS].current is pool
    assert holder.last_error is None


async def test_a_file_removed_mid_edit_is_judged_with_the_files_that_remain(api: Api, policy_dir: Path) -> None:
    # Move the provider instances into a file of their own, as an operator splitting the set would.
    providers = "providers:\n  memory: {plugin: memory}\n  sandbox: {plugin: sandbox}\n"
    rest = BASE.replace("providers:\n  memory: {plugin: memory}\n  sandbox: {plugin: sandbox}\n", "")
    assert rest != BASE

    def split() -> None:
        (policy_dir / "providers.yaml").write_text(providers)
        (policy_dir / "policy.yaml").write_text(rest)

    await version_changes(api, split)
    policy = await rejected(api, (policy_dir / "providers.yaml").unlink)

    assert {(i["file"], i["path"]) for i in policy["last_error"]} >= {("policy.yaml", "channels.sms.providers[0]")}
    assert all("unknown provider instance" in i["message"] for i in policy["last_error"])
    assert (await sent_content(api, sms_body()))["provider"] == "memory"


async def test_an_emptied_directory_keeps_the_old_set_and_reports_it(api: Api, policy_dir: Path) -> None:
    policy = await rejected(api, (policy_dir / "policy.yaml").unlink)

    assert [i["message"] for i in policy["last_error"]] == ["no *.yaml or *.yml policy files found"]
    assert (await sent_content(api, sms_body()))["content"] == {"body": "Your code is 123456"}


def mount_configmap(root: Path, stamp: str, files: Mapping[str, str]) -> None:
    """Lay ``files`` out as the kubelet does: ``..<stamp>/`` holds them, ``..data`` points there
    (re-pointed atomically on update), and each visible name is a symlink through ``..data``."""
    folder = root / f"..{stamp}"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    staged = root / "..data_tmp"
    staged.symlink_to(folder.name)
    os.replace(staged, root / "..data")
    for name in files:
        if not (root / name).is_symlink():
            (root / name).symlink_to(Path("..data") / name)


async def test_a_kubernetes_configmap_update_is_picked_up(
    aiohttp_client: Any, make_app: Callable[..., web.Application], tmp_path: Path
) -> None:
    mounted = tmp_path / "configmap"
    mounted.mkdir()
    tenants, rest = BASE.split("providers:\n", 1)
    mount_configmap(mounted, "2026_01_01_00_00_00.1", {"tenants.yaml": tenants, "policy.yaml": "providers:\n" + rest})
    api = await start(aiohttp_client, make_app, policy_dir=mounted)
    assert sorted(api.app[POLICIES].current.files) == ["policy.yaml", "tenants.yaml"]

    updated = rest.replace("Your code is {{ code }}", "Your ConfigMap code is {{ code }}")
    await version_changes(api, lambda: mount_configmap(
        mounted, "2026_01_02_00_00_00.2", {"tenants.yaml": tenants, "policy.yaml": "providers:\n" + updated}
    ))

    assert (await sent_content(api, sms_body()))["content"] == {"body": "Your ConfigMap code is 123456"}
    assert sorted(api.app[POLICIES].current.files) == ["policy.yaml", "tenants.yaml"]


def publish_git_sync_commit(root: Path, commit: str, files: Mapping[str, str]) -> None:
    """Publish a commit as git-sync v4 does: a new worktree under ``.worktrees/``, the ``current``
    link re-pointed to it atomically, then the previous worktree removed."""
    worktree = root / ".worktrees" / commit
    (worktree / "policies").mkdir(parents=True)
    for name, text in files.items():
        (worktree / "policies" / name).write_text(text)
    link = root / "current"
    previous = link.resolve() if link.is_symlink() else None
    staged = root / "current.tmp"
    staged.symlink_to(Path(".worktrees") / commit)
    os.replace(staged, link)
    if previous is not None:
        shutil.rmtree(previous)


async def test_every_git_sync_commit_is_picked_up_through_its_link(
    aiohttp_client: Any, make_app: Callable[..., web.Application], tmp_path: Path
) -> None:
    # The Helm chart's gitSync source: TIDINGS_POLICY_DIR is a folder under git-sync's `current`
    # link, which every commit re-points to a new checkout while the old one is deleted.
    root = tmp_path / "git"
    publish_git_sync_commit(root, "a1", {"policy.yaml": BASE})
    api = await start(aiohttp_client, make_app, policy_dir=root / "current" / "policies")

    for commit, wording in [("b2", "Synced once"), ("c3", "Synced twice"), ("d4", "Synced thrice")]:
        updated = BASE.replace("Your code is {{ code }}", wording + ": {{ code }}")
        await version_changes(api, lambda: publish_git_sync_commit(root, commit, {"policy.yaml": updated}))  # noqa: B023
        assert (await sent_content(api, sms_body()))["content"] == {"body": f"{wording}: 123456"}


async def test_a_rotated_file_secret_rebuilds_the_instance_that_uses_it(
    aiohttp_client: Any, make_app: Callable[..., web.Application], policy_dir: Path
) -> None:
    (policy_dir / "memory-token").write_text("first\n")
    (policy_dir / "policy.yaml").write_text(BASE.replace("memory: {plugin: memory}", "memory: {plugin: memory, config: {token: {$file: memory-token}}}"))
    api = await start(aiohttp_client, make_app)
    pools, before = api.app[PROVIDERS], api.app[PROVIDERS].current.get("memory")
    assert before is not None and before.config["token"] == "first"

    (policy_dir / "memory-token").write_text("second\n")
    await until(api, lambda: pools.current.get("memory") is not before)

    after = pools.current.get("memory")
    assert after is not None and after.config["token"] == "second"
    assert (await sent_content(api, sms_body()))["provider"] == "memory"


async def test_with_watching_off_sighup_reloads(aiohttp_client: Any, make_app: Callable[..., web.Application], policy_dir: Path) -> None:
    api = await start(aiohttp_client, make_app, policy_reload=False)
    await _reload_on_hangup(api.app)
    edited = BASE.replace('sms: {body: "Your code is {{ code }}"}', 'sms: {body: "Hung up: {{ code }}"}')
    (policy_dir / "policy.yaml").write_text(edited)
    assert not watcher_of(api).watching, "with policy_reload off, nothing watches the directory"
    assert (await sent_content(api, sms_body()))["content"] == {"body": "Your code is 123456"}

    await version_changes(api, lambda: os.kill(os.getpid(), signal.SIGHUP))

    assert (await sent_content(api, sms_body()))["content"] == {"body": "Hung up: 123456"}


async def test_an_explicit_reload_says_whether_it_switched(api: Api, policy_dir: Path) -> None:
    watcher = watcher_of(api)
    assert await watcher.reload() is False
    (policy_dir / "policy.yaml").write_text(BASE + "\n# a comment changes the files, so the version\n")
    assert await watcher.reload() is True


async def test_the_dispatcher_claims_on_channels_a_new_set_brings(api: Api) -> None:
    dispatcher = api.app[DISPATCHER]
    loops = dispatcher.channels
    dispatcher.ensure_channels(["sms", "carrier_pigeon"])
    assert dispatcher.channels == loops | {"carrier_pigeon"}
