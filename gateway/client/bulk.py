"""``tidings send --csv``: recipient rows from a CSV file, sent through ``/bulk`` a chunk at a time.

Each column is a recipient field (``email``, ``phone``, ``contact_id``, ``external_id``, …) or,
named ``data.NAME``, a template variable for that row. An empty cell is left out, so a row
missing a value its template needs is refused by the gateway for that row alone, rather than
sent with a blank. The whole file is read and checked before anything is sent: a file that is
not good CSV sends nothing.

Chunks hold ``chunk_size`` rows (1,000 unless asked). A chunk the gateway finds too large (``413
too_many_recipients`` past ``TIDINGS_BULK_MAX_ROWS``, or ``payload_too_large``) is kept nothing
of, so it is halved and sent again until it fits: the upload adapts to the server's limit
without knowing it. A ``429 rate_limited`` is waited out (its ``Retry-After``) and the chunk sent
again; any other refusal stops the upload, and the summary says how many rows were not sent.

With an idempotency key, chunk N's key is ``KEY:rows-A-B``: running the same command again
after an interruption answers the chunks already accepted from the gateway's record and sends
only the rest.
"""

from __future__ import annotations

import asyncio
import csv
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gateway.client.api import ApiClient, RefusedError

DATA_PREFIX: Final = "data."
DEFAULT_CHUNK: Final = 1_000
MAX_WAIT_SECONDS: Final = 120.0  # a longer Retry-After (a daily quota) stops the upload instead
BULK_PATH: Final = "/api/v1/notifications/bulk"
_ROW_FIELD: Final = re.compile(r"^recipients\[(\d+)\]")


class CsvFileError(ValueError):
    """The file cannot be read as recipient rows; nothing was sent."""


@dataclass(frozen=True)
class CsvRow:
    """One recipient row: its number (1 is the first after the header), the file line it starts on, and what is sent for it."""

    number: int
    line: int
    recipient: dict[str, Any]


@dataclass(frozen=True)
class Rejection:
    """A row the gateway refused, with its code and message."""

    row: CsvRow
    code: str
    message: str


@dataclass(frozen=True)
class BulkSummary:
    """What became of the rows: accepted, refused one by one, and not sent at all because the upload stopped."""

    accepted: int
    rejections: tuple[Rejection, ...]
    unsent: int
    stopped_by: RefusedError | None


def read_rows(path: Path) -> list[CsvRow]:
    """The file's rows, ready to send; :class:`CsvFileError` names the first thing wrong with it."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: the mark spreadsheets put first
            return _rows(csv.reader(handle), path)
    except OSError as err:
        raise CsvFileError(f"{path}: {err.strerror or err}") from err
    except (UnicodeDecodeError, csv.Error) as err:
        raise CsvFileError(f"{path}: not a UTF-8 CSV file: {err}") from err


def _rows(reader: Any, path: Path) -> list[CsvRow]:
    header = next(reader, None)
    if not header:
        raise CsvFileError(f"{path}: empty file; the first line names the columns (email, phone, data.NAME, …)")
    columns = _columns(header, path)
    rows: list[CsvRow] = []
    line = reader.line_num + 1
    for cells in reader:
        if any(cell.strip() for cell in cells):  # a blank line between rows is no recipient
            if len(cells) != len(columns):
                raise CsvFileError(f"{path}:{line}: {len(cells)} cells, but the header names {len(columns)} columns")
            rows.append(CsvRow(len(rows) + 1, line, _recipient(columns, cells)))
        line = reader.line_num + 1
    if not rows:
        raise CsvFileError(f"{path}: no rows after the header")
    return rows


def _columns(header: Sequence[str], path: Path) -> list[str]:
    columns = [name.strip() for name in header]
    for name in columns:
        if not name or name == DATA_PREFIX:
            raise CsvFileError(f"{path}:1: a column has no name (recipient fields like email or phone, or data.NAME)")
        if columns.count(name) > 1:
            raise CsvFileError(f"{path}:1: column {name!r} appears twice")
    return columns


def _recipient(columns: Sequence[str], cells: Sequence[str]) -> dict[str, Any]:
    recipient: dict[str, Any] = {}
    data: dict[str, str] = {}
    for name, value in zip(columns, cells):
        if value == "":
            continue
        if name.startswith(DATA_PREFIX):
            data[name.removeprefix(DATA_PREFIX)] = value
        else:
            recipient[name] = value
    return recipient | {"data": data} if data else recipient


Progress = Callable[[int], None]
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class _Upload:
    """The running state of one upload: where it is, the chunk size that fits, and what came back."""

    rows: Sequence[CsvRow]
    chunk_size: int
    start: int = 0
    accepted: int = 0
    rejections: list[Rejection] = field(default_factory=list)

    def chunk(self) -> Sequence[CsvRow]:
        return self.rows[self.start:self.start + self.chunk_size]


async def upload(
    client: ApiClient, content: Mapping[str, Any], rows: Sequence[CsvRow], *, chunk_size: int = DEFAULT_CHUNK,
    idempotency_key: str | None = None, progress: Progress | None = None, sleep: Sleep = asyncio.sleep,
) -> BulkSummary:
    """Send ``rows`` with the shared ``content`` (channels, template, data) through ``/bulk``; see the module docstring."""
    state = _Upload(rows, chunk_size)
    while state.start < len(rows):
        chunk = state.chunk()
        try:
            answer = await client.post(BULK_PATH, dict(content) | {"recipients": [row.recipient for row in chunk]}, _key(idempotency_key, chunk))
        except RefusedError as err:
            if await _recover(err, state, sleep):
                continue
            return BulkSummary(state.accepted, tuple(state.rejections), len(rows) - state.start, err)
        state.accepted += int(answer.body.get("accepted", 0))
        state.rejections += _rejections(chunk, answer.body.get("errors") or [])
        state.start += len(chunk)
        if progress is not None:
            progress(state.start)
    return BulkSummary(state.accepted, tuple(state.rejections), 0, None)


def _key(idempotency_key: str | None, chunk: Sequence[CsvRow]) -> dict[str, str] | None:
    if idempotency_key is None:
        return None
    return {"Idempotency-Key": f"{idempotency_key}:rows-{chunk[0].number}-{chunk[-1].number}"}


async def _recover(err: RefusedError, state: _Upload, sleep: Sleep) -> bool:
    """Whether the chunk can go again (halved, or after a wait), or is settled as refused row by row; False stops the upload."""
    if err.status == 413 and err.code in ("too_many_recipients", "payload_too_large") and state.chunk_size > 1:
        state.chunk_size = max(1, len(state.chunk()) // 2)
        return True
    if err.status == 429 and err.code == "rate_limited" and err.retry_after is not None and err.retry_after <= MAX_WAIT_SECONDS:
        await sleep(err.retry_after)
        return True
    if err.code == "no_valid_recipients":  # every row of the chunk refused: a result, not a stop
        chunk = state.chunk()
        state.rejections += _rejections(chunk, _rows_of(err, len(chunk)))
        state.start += len(chunk)
        return True
    return False


def _rows_of(err: RefusedError, count: int) -> list[dict[str, Any]]:
    """A ``no_valid_recipients`` refusal as the per-row errors of a bulk answer: each row's first detail, else the refusal itself."""
    errors = {index: {"index": index, "code": err.code, "message": err.message} for index in range(count)}
    named: set[int] = set()
    for detail in err.details:
        found = _ROW_FIELD.match(str(detail.get("field", "")))
        index = int(found.group(1)) if found else -1
        if index in errors and index not in named:
            named.add(index)
            errors[index] = {"index": index, "code": detail.get("code"), "message": detail.get("message")}
    return list(errors.values())


def _rejections(chunk: Sequence[CsvRow], errors: Sequence[Mapping[str, Any]]) -> list[Rejection]:
    return [
        Rejection(chunk[error["index"]], str(error.get("code")), str(error.get("message")))
        for error in errors if isinstance(error.get("index"), int) and 0 <= error["index"] < len(chunk)
    ]
