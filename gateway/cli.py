"""The ``tidings`` command: serve the gateway, make API keys, inspect plugins, check policies, encrypt secrets.

``send``, ``status`` and ``dead-letters`` are clients of a running gateway's API; they live in
:mod:`gateway.client` and are mounted here.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import re
import signal
import socket
import sys
import textwrap
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, TextIO, get_args, get_origin

from pydantic import ValidationError as SettingsValidationError

from gateway.client.commands import add_commands as add_client_commands
from gateway.engine import provider_checks
from gateway.errors import PolicyError, StoreInUseError
from gateway.plugins import PluginCatalog
from gateway.policy import schema
from gateway.policy.keys import OPERATOR_KEY_PREFIX, create_key
from gateway.policy.loading import load_policies
from gateway.policy.models import ROLES
from gateway.policy.secret_values import SecretResolver, encrypt, generate_master_key
from gateway.redaction import secret_paths
from gateway.settings import Settings

if TYPE_CHECKING:
    from aiohttp import web


LISTEN_BACKLOG: Final = 128  # what aiohttp asks for when it binds itself
OPERATOR_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a policy Name: the key of the operator's entry


def _say(text: str = "", *, file: TextIO, flush: bool = False) -> None:
    """Command output: the CLI talks to its stream, the rest of Tidings talks to the log."""
    file.write(text + "\n")
    if flush:
        file.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command"):
        parser.print_help()
        return 2
    try:
        result: int = args.command(args, sys.stdout)
    except BrokenPipeError:  # `tidings … | head`: the reader left; stop quietly, as other commands do
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout at exit; give it somewhere to go
        return 1
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tidings", description="A self-hosted notification gateway.")
    parser.add_argument("--version", action="version", version=f"tidings {_version()}")
    commands = parser.add_subparsers(metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run the gateway (settings from TIDINGS_* variables)",
        description="Run the gateway. Its settings come from the TIDINGS_* environment variables below.",
        epilog="\n".join(_settings_help()), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.set_defaults(command=_serve)

    key = commands.add_parser("key", help="manage API keys").add_subparsers(metavar="ACTION")
    create = key.add_parser("create", help="make a new API key and print the policy entry for it")
    create.add_argument("--tenant", help="tenant the key belongs to (an API key)")
    create.add_argument("--mode", choices=["live", "test"], default="live", help="test keys only ever use the sandbox")
    create.add_argument("--name", help="a label for the key, shown in policy (an operator's name: required with --operator)")
    create.add_argument("--operator", action="store_true", help="a dashboard key for a person who runs the gateway: sees every tenant")
    create.add_argument("--role", choices=ROLES, help="with --operator: viewer reads, operator also replays, admin also reloads policy")
    create.set_defaults(command=_key_create)

    plugins = commands.add_parser("plugins", help="list installed provider plugins and any that failed to load")
    plugins.set_defaults(command=_plugins)

    providers = commands.add_parser("providers", help="provider instances in the policy directory").add_subparsers(metavar="ACTION")
    providers_check = providers.add_parser(
        "check", help="confirm instances' credentials with their vendors (exit 1 if any is refused or unreachable)"
    )
    providers_check.add_argument("instance", nargs="*", help="instances to check (default: every instance in the policy)")
    providers_check.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each vendor")
    providers_check.set_defaults(command=_providers_check)

    check = commands.add_parser("check", help="validate a policy directory offline (exit 1 on errors)")
    check.add_argument("directory", type=Path, nargs="?", help="the policy directory (default: TIDINGS_POLICY_DIR, else policies)")
    check.set_defaults(command=_check)

    schema_ = commands.add_parser("schema", help="print the policy JSON Schema (for editors and CI)")
    schema_.set_defaults(command=_schema)

    secret = commands.add_parser("secret", help="write secrets for policy files").add_subparsers(metavar="ACTION")
    encrypt_ = secret.add_parser("encrypt", help="read a value on stdin, print it as enc:v1:… (needs TIDINGS_MASTER_KEY)")
    encrypt_.set_defaults(command=_secret_encrypt)
    generate = secret.add_parser("generate-key", help="print a fresh random master key for TIDINGS_MASTER_KEY")
    generate.set_defaults(command=_secret_generate_key)
    add_client_commands(commands)
    return parser


def _version() -> str:
    try:
        return metadata.version("tidings")
    except metadata.PackageNotFoundError:  # a checkout run without `pip install -e .`: no package metadata
        return "(not installed)"


def _settings_help() -> Iterator[str]:
    """Every ``TIDINGS_*`` setting with its default and description, read from :class:`Settings` so it never drifts."""
    for name, field in Settings.model_fields.items():
        choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
        described = (field.description or "") + (f" One of: {', '.join(map(str, choices))}." if choices else "")
        yield f"  TIDINGS_{name.upper()} (default: {_shown_default(field.default)})"
        yield from textwrap.wrap(described, width=96, initial_indent="      ", subsequent_indent="      ")


def _shown_default(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _settings(out: TextIO) -> Settings | None:
    try:
        return Settings()
    except SettingsValidationError as err:
        for error in err.errors():
            where = "setting TIDINGS_" + "_".join(str(part) for part in error["loc"]).upper() if error["loc"] else "settings"
            _say(f"{where}: {error['msg']}", file=out)
        return None


def _serve(_args: argparse.Namespace, _out: TextIO) -> int:
    settings = _settings(sys.stderr)
    if settings is None:
        return 2
    from aiohttp import web

    from gateway.app import announce_start, create_app
    from gateway.logconfig import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:  # before anything starts: a busy port must not leave a dispatcher running for a moment
        sock = _listen(settings.host, settings.port)
    except OSError as err:
        _refuse(settings, _cannot_listen(settings.host, settings.port, err))
        return 1
    _install_uvloop()
    app = create_app(settings)
    app.on_startup.append(_reload_on_hangup)
    try:
        web.run_app(
            app, sock=sock, access_log=None,  # no aiohttp access lines: gateway.access logs each request, in the chosen format
            print=lambda _msg: announce_start(app, f"http://{settings.host}:{settings.port}"),
            shutdown_timeout=settings.shutdown_grace_seconds,
        )
    except PolicyError as err:
        _refuse(settings, f"policies in {settings.policy_dir} are not valid:\n{err}")
        return 1
    except StoreInUseError as err:
        _refuse(settings, str(err))
        return 1
    finally:
        sock.close()
    return 0


def _refuse(settings: Settings, text: str) -> None:
    """Why ``serve`` will not start: plain lines on stderr for a person, one JSON log record when the log is JSON."""
    if settings.log_format == "json":
        logging.getLogger("gateway.cli").error("%s", text)
    else:
        _say(text, file=sys.stderr)


def _listen(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound now (aiohttp binds only after start-up has run)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    return socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)


def _cannot_listen(host: str, port: int, err: OSError) -> str:
    """The one line a serve that cannot bind prints: a busy port says what to do about it."""
    if err.errno == errno.EADDRINUSE:
        return f"port {port} is in use: another process listens on {host}:{port} (stop it, or set TIDINGS_PORT to another port)"
    reasons = {errno.EACCES: "permission denied", errno.EADDRNOTAVAIL: "no such local address"}
    return f"cannot listen on {host}:{port}: {reasons.get(err.errno or 0, (err.strerror or type(err).__name__).lower())}"


async def _reload_on_hangup(app: web.Application) -> None:
    """``kill -HUP`` reloads the policy directory now, watched or not (TIDINGS_POLICY_RELOAD=false)."""
    from gateway.http.appkeys import POLICY_WATCHER

    if hasattr(signal, "SIGHUP"):  # not on Windows
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, app[POLICY_WATCHER].request_reload)


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # not on Windows; the default loop works, only slower
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _key_create(args: argparse.Namespace, out: TextIO) -> int:
    if args.operator or args.role:
        return _operator_key_create(args, out)
    if not args.tenant:
        _say("tidings key create: --tenant is required (or --operator --role ROLE --name NAME for a dashboard key)", file=sys.stderr)
        return 2
    new = create_key()
    _say(f"New API key for tenant {args.tenant!r} (shown once; store it now):\n\n    {new.key}\n", file=out)
    _say(f"Add it under tenants.{args.tenant}.api_keys in your policy files:\n", file=out)
    name = f", name: {args.name}" if args.name else ""
    _say(f"      - {{prefix: {new.prefix}, sha256: {new.sha256}, mode: {args.mode}{name}}}", file=out)
    return 0


def _operator_key_create(args: argparse.Namespace, out: TextIO) -> int:
    """An operator's dashboard key, and its entry under ``operators:`` (named, with a role)."""
    problems = [
        *(["--operator is needed with --role"] if not args.operator else []),
        *(["--role is required (viewer, operator or admin)"] if not args.role else []),
        *(["--name is required: the operator's name, as policy and history show it"] if not args.name else []),
        *(["--tenant is for API keys: an operator sees every tenant"] if args.tenant else []),
        *([f"--name {args.name!r} must be letters, digits, _ . - (up to 64)"] if args.name and not OPERATOR_NAME.fullmatch(args.name) else []),
    ]
    if problems:
        _say("tidings key create --operator: " + "; ".join(problems), file=sys.stderr)
        return 2
    new = create_key(OPERATOR_KEY_PREFIX)
    _say(f"New operator key for {args.name!r}, role {args.role} (shown once; store it now):\n\n    {new.key}\n", file=out)
    _say("Add it to the operators section of your policy files, then sign in at /dashboard:\n", file=out)
    _say("operators:", file=out)
    _say(f"  {args.name}: {{prefix: {new.prefix}, sha256: {new.sha256}, role: {args.role}}}", file=out)
    return 0


def _plugins(_args: argparse.Namespace, out: TextIO) -> int:
    catalog = PluginCatalog.discover()
    _say("Installed provider plugins:", file=out)
    for name, plugin in sorted(catalog.providers.items()):
        channels = ", ".join(sorted(plugin.channels))
        _say(f"  {name:<12} channels: {channels:<20} ({catalog.origins.get(name, '?')})", file=out)
        secrets = sorted(secret_paths(plugin.config_schema))
        if secrets:
            _say(f"  {'':<12} secret config fields (masked everywhere): {', '.join(secrets)}", file=out)
        for spec in plugin.new_channels:
            _say(f"  {'':<12} adds channel {spec.name!r} (recipient: {' or '.join(spec.recipient_fields)})", file=out)
    added_by = {spec.name: name for name, plugin in sorted(catalog.providers.items()) for spec in plugin.new_channels}
    _say("\nChannels:", file=out)
    for spec in catalog.channel_catalog():
        origin = f"added by {added_by[spec.name]}" if spec.name in added_by else "built in"
        rules = "".join((", templates only" if spec.template_required else "", ", has a subject" if spec.subject else ""))
        _say(f"  {spec.name:<12} recipient: {' or '.join(spec.recipient_fields):<34} ({origin}{rules})", file=out)
    if catalog.failures:
        _say("\nFailed to load:", file=out)
        for name, why in sorted(catalog.failures.items()):
            _say(f"  {name:<12} {why}", file=out)
    return 0


def _schema(_args: argparse.Namespace, out: TextIO) -> int:
    out.write(schema.render(schema.generate()))
    return 0


def _check(args: argparse.Namespace, out: TextIO) -> int:
    settings = _settings(out)
    if settings is None:
        return 2
    directory: Path = args.directory or settings.policy_dir  # what `tidings serve` would load
    try:
        # Secrets are resolved as the server would, so a missing variable or file fails here first.
        policy = load_policies(directory, PluginCatalog.discover(), secrets=SecretResolver.from_settings(settings))
    except PolicyError as err:
        for issue in err.issues:
            _say(str(issue), file=out)
        _say(f"{len(err.issues)} problem(s) in {directory}", file=out)
        return 1
    _say(f"{directory}: OK ({len(policy.files)} files, version {policy.version})", file=out)
    for warning in policy.simulated_live_routes():
        _say(f"warning: {warning}", file=out)
    return 0


def _providers_check(args: argparse.Namespace, out: TextIO) -> int:
    """Ask each vendor whether the instance's credentials work, where the vendor has a cheap call for it."""
    settings = _settings(out)
    if settings is None:
        return 2
    try:
        policy = load_policies(settings.policy_dir, PluginCatalog.discover(), secrets=SecretResolver.from_settings(settings))
    except PolicyError as err:
        _say(f"policies in {settings.policy_dir} are not valid:\n{err}", file=out)
        return 1
    unknown = [name for name in args.instance if name not in policy.provider_instances]
    if unknown:
        _say(f"no such provider instance: {', '.join(unknown)} (known: {', '.join(sorted(policy.provider_instances))})", file=out)
        return 2
    names = args.instance or sorted(policy.provider_instances)
    results = asyncio.run(provider_checks.check_instances(policy, PluginCatalog.discover(), names, timeout=args.timeout))
    for result in results:
        _say(f"  {result.instance:<20} {result.verdict:<12} {result.message}", file=out)
    return 0 if all(result.ok for result in results) else 1


def _secret_encrypt(_args: argparse.Namespace, out: TextIO) -> int:
    settings = _settings(sys.stderr)
    if settings is None:
        return 2
    if settings.master_key is None:
        _say("TIDINGS_MASTER_KEY is not set; enc:v1: values are encrypted with it (make one: tidings secret generate-key)", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        _say("Type or paste the secret, then press Ctrl-D:", file=sys.stderr, flush=True)
    value = sys.stdin.read().removesuffix("\n")
    if not value:
        _say("nothing to encrypt: pass the secret on stdin", file=sys.stderr)
        return 2
    _say(encrypt(value, settings.master_key), file=out)
    return 0


def _secret_generate_key(_args: argparse.Namespace, out: TextIO) -> int:
    _say(generate_master_key(), file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
