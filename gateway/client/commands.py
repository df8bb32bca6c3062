"""``tidings send``, ``tidings status`` and ``tidings dead-letters``: argparse wiring and what each prints.

Each command checks its own input first (flags, the CSV file) and sends nothing when that is
wrong (exit status 2), then makes its calls. Results go to stdout; a refusal from the gateway is
one line on stderr, ``tidings: STATUS CODE: message``, and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TextIO
from urllib.parse import quote

import orjson
from pydantic import ValidationError as SettingsValidationError

from gateway.client import bulk
from gateway.client.api import DEFAULT_URL, KEY_VARIABLE, ApiClient, ClientError, ClientSettings, connect
from gateway.client.progress import ProgressBar
from gateway.client.timeline import render

KEY_NOTE: Final = f"""\
The gateway is at --url, else TIDINGS_URL, else {DEFAULT_URL}. The API key is read from
{KEY_VARIABLE} only, never from a flag: a flag stays in your shell's history and shows in
`ps` to every user of the machine. The key is never printed.

  export {KEY_VARIABLE}=tdk_demo_sandbox_key_for_local_use"""
PAGE: Final = 200  # the API's largest page
DEAD_REASONS: Final = ("permanent", "retries_exhausted", "expired")

Action = Callable[[ApiClient, argparse.Namespace, TextIO], Awaitable[int]]


class UsageError(ValueError):
    """The command's input is wrong; nothing was sent."""


def add_commands(commands: Any) -> None:
    """Add the API client commands to the ``tidings`` subcommands."""
    _add_send(commands)
    _add_status(commands)
    _add_dead_letters(commands)


def _parser(commands: Any, name: str, help_: str, description: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help_, description=description, epilog=KEY_NOTE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help=f"the gateway's base URL (default: TIDINGS_URL, else {DEFAULT_URL})")
    return parser


def _add_send(commands: Any) -> None:
    send = _parser(
        commands, "send", "send one notification from flags, or one per row of a CSV file (--csv)",
        "Send one notification, or with --csv one per row of a CSV file through the bulk API.\n\n"
        "  tidings send --to email=ada@example.com --channel email --template order_shipped --data order_id=1001\n"
        "  tidings send --csv customers.csv --template order_shipped --channel email --channel sms\n\n"
        "A CSV file's first line names its columns: recipient fields (email, phone, contact_id, external_id, ...)\n"
        "or data.NAME for a template variable of that row. Empty cells are left out. Rows go in chunks\n"
        "(--chunk-size), made smaller when the gateway says a chunk is too large; a progress bar shows on a\n"
        "terminal. The exit status is 1 when any row was not accepted.",
    )
    to = send.add_mutually_exclusive_group()
    to.add_argument("--to", action="append", metavar="FIELD=VALUE", help="a recipient address: email=…, phone=+1…, slack_channel=… (repeatable)")
    to.add_argument("--contact", metavar="CONTACT_ID", help="send to a contact the gateway keeps (ctc_…)")
    to.add_argument("--external-id", help="send to the contact with this external_id")
    to.add_argument("--csv", type=Path, metavar="FILE", help="send to every row of FILE through the bulk API")
    send.add_argument("--channel", action="append", required=True, help="a channel, in fallback order (repeatable, or comma-separated)")
    send.add_argument("--template", help="a template id from policy")
    data = send.add_mutually_exclusive_group()
    data.add_argument("--data", action="append", metavar="KEY=VALUE", help="a template variable (repeatable)")
    data.add_argument("--data-json", metavar="JSON", help='template variables as a JSON object: \'{"order_id": 1001}\'')
    send.add_argument("--subject", help="a raw message's subject (email)")
    send.add_argument("--body", help="a raw message's text, instead of --template")
    send.add_argument("--idempotency-key", help="send again with the same key and nothing is sent twice (with --csv: per chunk)")
    send.add_argument("--chunk-size", type=_positive, default=bulk.DEFAULT_CHUNK, help="with --csv: rows per bulk request (default: %(default)s)")
    send.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    send.set_defaults(command=lambda args, out: _call(args, out, _send_csv if args.csv is not None else _send_one))


def _add_status(commands: Any) -> None:
    status = _parser(
        commands, "status", "what happened to a notification: its deliveries, attempts and timeline",
        "Show a notification: its status, each delivery with its attempts, and its history in order.\n\n"
        "  tidings status ntf_01JD3…",
    )
    status.add_argument("notification_id", metavar="ntf_…")
    status.add_argument("--json", action="store_true", help="print the API's view as JSON")
    status.set_defaults(command=lambda args, out: _call(args, out, _status))


def _add_dead_letters(commands: Any) -> None:
    dead = commands.add_parser("dead-letters", help="list dead letters, or queue them again").add_subparsers(metavar="ACTION")
    listing = _parser(
        dead, "list", "the deliveries the gateway gave up on, newest first",
        "List dead letters, newest first.\n\n  tidings dead-letters list --channel sms --reason retries_exhausted",
    )
    _filters(listing)
    listing.add_argument("--limit", type=_positive, default=50, help="show at most this many (default: %(default)s)")
    listing.add_argument("--json", action="store_true", help="print each dead letter as a line of JSON")
    listing.set_defaults(command=lambda args, out: _call(args, out, _list_dead_letters))
    replay = _parser(
        dead, "replay", "queue dead letters again: one by id, or --all that match the filters",
        "Queue dead letters again with a fresh retry schedule.\n\n"
        "  tidings dead-letters replay dlv_01JD3…\n  tidings dead-letters replay --all --channel sms",
    )
    replay.add_argument("delivery_id", nargs="?", metavar="dlv_…", help="the dead letter to replay")
    replay.add_argument("--all", action="store_true", help="replay every dead letter that matches the filters")
    _filters(replay)
    replay.set_defaults(command=lambda args, out: _call(args, out, _replay))


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--channel", help="only this channel's")
    parser.add_argument("--provider", help="only this provider instance's")
    parser.add_argument("--reason", choices=DEAD_REASONS, help="only those given up on for this reason")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 up (got {text!r})")
    return int(text)


def _say(text: str, file: TextIO) -> None:
    file.write(text + "\n")


def _call(args: argparse.Namespace, out: TextIO, action: Action) -> int:
    """Run ``action`` against the gateway: 2 when the input or the settings are wrong, 1 when the gateway refuses."""
    try:
        settings = ClientSettings(**({"url": args.url} if args.url else {}))
    except SettingsValidationError as err:
        for error in err.errors():
            _say(f"tidings: {'TIDINGS_' + str(error['loc'][0]).upper() if error['loc'] else 'settings'}: {error['msg']}", sys.stderr)
        return 2
    if settings.api_key is None or not settings.api_key.get_secret_value():
        _say(f"tidings: {KEY_VARIABLE} is not set: export the tenant's key (never pass it as a flag)", sys.stderr)
        return 2
    try:
        return asyncio.run(_run(settings, action, args, out))
    except UsageError as err:
        _say(f"tidings: {err}", sys.stderr)
        return 2
    except ClientError as err:
        _say(f"tidings: {err.line()}", sys.stderr)
        return 1
    except KeyboardInterrupt:  # what the gateway answered 202 to is kept; a request cut short is kept whole or not at all
        _say("\ntidings: interrupted; what the gateway accepted is kept (a --csv run again with the same --idempotency-key sends only the rest)", sys.stderr)
        return 130


async def _run(settings: ClientSettings, action: Action, args: argparse.Namespace, out: TextIO) -> int:
    async with connect(settings) as client:
        return await action(client, args, out)


async def _send_one(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    body = {"recipient": _recipient(args), "notification": _content(args)}
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    answer = await client.post("/api/v1/notifications/send", body, headers)
    if args.json:
        _say(orjson.dumps(answer.body, option=orjson.OPT_INDENT_2).decode(), out)
        return 0
    again = " (already accepted under this idempotency key; nothing sent again)" if answer.replayed else ""
    _say(f"{answer.body.get('notification_id')} {answer.body.get('status')} ({answer.body.get('mode')} mode){again}", out)
    for delivery in answer.body.get("deliveries") or []:
        skipped = f" ({delivery['skip_reason']})" if delivery.get("skip_reason") else ""
        _say(f"  {delivery.get('channel')}  {delivery.get('delivery_id')}  {delivery.get('status')}{skipped}", out)
    return 0


def _recipient(args: argparse.Namespace) -> dict[str, str]:
    if args.contact:
        return {"contact_id": args.contact}
    if args.external_id:
        return {"external_id": args.external_id}
    if not args.to:
        raise UsageError("say who to send to: --to FIELD=VALUE (email=…, phone=…), --contact ctc_…, --external-id, or --csv FILE")
    return _pairs(args.to, "--to")


def _content(args: argparse.Namespace) -> dict[str, Any]:
    """The notification's content, shared by a send and every row of a bulk: channels, template or body, data."""
    channels = [name.strip() for given in args.channel for name in given.split(",") if name.strip()]
    content: dict[str, Any] = {"channels": channels}
    for field, value in (("template_id", args.template), ("subject", args.subject), ("body", args.body)):
        if value is not None:
            content[field] = value
    data = _data(args)
    if data:
        content["data"] = data
    return content


def _data(args: argparse.Namespace) -> dict[str, Any]:
    if args.data_json is None:
        return dict(_pairs(args.data or [], "--data"))
    try:
        data = orjson.loads(args.data_json)
    except orjson.JSONDecodeError as err:
        raise UsageError(f"--data-json is not JSON: {err}") from None
    if not isinstance(data, dict):
        raise UsageError("--data-json must be a JSON object: '{\"order_id\": 1001}'")
    return data


def _pairs(given: Sequence[str], flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in given:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise UsageError(f"{flag} takes NAME=VALUE (got {item!r})")
        pairs[name.strip()] = value
    return pairs


async def _send_csv(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    try:
        rows = bulk.read_rows(args.csv)
    except bulk.CsvFileError as err:
        raise UsageError(str(err)) from None
    bar = ProgressBar(len(rows), sys.stderr)
    try:
        summary = await bulk.upload(
            client, _content(args), rows, chunk_size=args.chunk_size, idempotency_key=args.idempotency_key, progress=bar.update
        )
    finally:
        bar.close()
    return _report(summary, len(rows), out, as_json=args.json)


def _report(summary: bulk.BulkSummary, total: int, out: TextIO, *, as_json: bool) -> int:
    rejected = [{"row": r.row.number, "line": r.row.line, "code": r.code, "message": r.message} for r in summary.rejections]
    if as_json:
        stopped = {"stopped_by": summary.stopped_by.line()} if summary.stopped_by else {}
        _say(orjson.dumps({"accepted": summary.accepted, "rejected": rejected, "unsent": summary.unsent} | stopped).decode(), out)
    else:
        _say(f"{summary.accepted:,} of {total:,} rows accepted, {len(rejected):,} rejected", out)
        for r in rejected:
            _say(f"  row {r['row']} (line {r['line']}): {r['code']}: {' '.join(str(r['message']).split())}", out)
        if summary.stopped_by is not None:
            _say(f"stopped, {summary.unsent:,} rows not sent: {summary.stopped_by.line()}", out)
    if summary.stopped_by is not None:
        _say(f"tidings: {summary.stopped_by.line()}", sys.stderr)
    return 0 if summary.accepted == total else 1


async def _status(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    answer = await client.get(f"/api/v1/notifications/{quote(args.notification_id, safe='')}")
    if args.json:
        _say(orjson.dumps(answer.body, option=orjson.OPT_INDENT_2).decode(), out)
    else:
        for line in render(answer.body):
            _say(line, out)
    return 0


async def _list_dead_letters(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    items, more = await _dead_letters(client, _filter_params(args), args.limit)
    if args.json:
        for item in items:
            _say(orjson.dumps(item).decode(), out)
        return 0
    for item in items:
        error = " ".join(str(item.get("error") or "").split())
        _say(
            f"{item.get('delivery_id')}  {item.get('notification_id')}  {item.get('dead_lettered_at')}  {item.get('channel')}  "
            f"{item.get('address')}  {item.get('reason')} after {item.get('attempt_count')} attempt(s) via {item.get('provider')}"
            + (f": {error}" if error else ""),
            out,
        )
    _say(f"{len(items)} dead letter(s){', more: raise --limit' if more else ''}", out)
    return 0


def _filter_params(args: argparse.Namespace) -> dict[str, str]:
    return {name: getattr(args, name) for name in ("channel", "provider", "reason") if getattr(args, name)}


async def _dead_letters(client: ApiClient, params: Mapping[str, str], limit: int) -> tuple[list[dict[str, Any]], bool]:
    """Up to ``limit`` dead letters, following the cursor; and whether there are more."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(items) < limit:
        page = dict(params) | {"limit": str(min(PAGE, limit - len(items)))} | ({"cursor": cursor} if cursor else {})
        body = (await client.get("/api/v1/dead-letters", page)).body
        items += body.get("items") or []
        cursor = body.get("next_cursor")
        if not cursor:
            return items, False
    return items, True


async def _replay(client: ApiClient, args: argparse.Namespace, out: TextIO) -> int:
    filters = _filter_params(args)
    if args.delivery_id and (args.all or filters):
        raise UsageError("replay takes a delivery id or --all with filters, not both")
    if args.delivery_id:
        answer = await client.post(f"/api/v1/dead-letters/{quote(args.delivery_id, safe='')}/replay", {})
        _say(f"replayed {', '.join(answer.body.get('replayed') or [])}", out)
        return 0
    if not args.all:
        raise UsageError("say which: a delivery id (dlv_…), or --all to replay every dead letter that matches --channel, --provider, --reason")
    replayed = 0
    while True:  # each request replays up to 10,000, oldest first; "more" says there are others
        body = (await client.post("/api/v1/dead-letters/replay", filters)).body
        replayed += int(body.get("replayed", 0))
        if not body.get("more") or not body.get("replayed"):
            break
    _say(f"replayed {replayed:,} dead letter(s)", out)
    return 0
