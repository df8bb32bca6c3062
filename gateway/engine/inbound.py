"""Provider callbacks on their way in: keep the raw request, verify it, answer, process apart.

``POST /api/v1/webhooks/{instance}`` stores the request exactly as it arrived, then asks the
instance's plugin to verify it. A verified callback is answered once it is stored (vendors retry slow
answers; callbacks verified together are stored in one write) and queued here; processing —
parse, reconcile receipts, store replies, record opt-outs, mark the request processed, all of a
batch in one transaction — runs on its own task in batches, so a flood of receipts holds up
neither the answers nor the sends. A callback that fails
verification changes nothing: only its summary is kept (:class:`RefusedCallback`: no body, no
headers), and only the newest so many, since anyone can send one.
"""

from __future__ import annotations

import hashlib
import logging
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit

from gateway import redaction
from gateway.engine.batching import Batcher, Coalescer
from gateway.engine.opt_outs import OptOuts, opt_change
from gateway.engine.outcomes import received_statuses
from gateway.errors import WebhookVerificationError
from gateway.plugin_api import InboundReply, InboundRequest, OptOut, Provider, ProviderReport, StatusUpdate
from gateway.store import InboundRecord, NewOptOut, NewReply, ReceivedStatus, RefusedCallback, Store

log = logging.getLogger(__name__)

# Not kept: cookies and proxy credentials say nothing about the callback, and hop-by-hop headers
# describe the connection, not the request. Everything else is kept, signature headers included,
# so a stored callback can be checked again by hand.
DROPPED_HEADERS: Final = frozenset({"cookie", "proxy-authorization", "connection", "keep-alive", "te", "transfer-encoding", "upgrade"})
# Headers whose value is a credential by their name alone (Telegram's X-Telegram-Bot-Api-Secret-Token):
# kept masked. A shared secret sent under any other name (Brevo's Authorization: Bearer) is masked
# by its value, which is the instance's own secret.
SECRET_HEADER_WORDS: Final = ("secret", "password", "api-key", "apikey")
# Query parameters that authenticate a callback by their value alone (Brevo's and Vonage's
# ``?token=``): kept masked, like a Basic password, since a stored callback is not verified again.
SECRET_QUERY_PARAMETERS: Final = frozenset({"token", "secret", "password", "api_secret", "access_token"})
REDACTED: Final = "[redacted]"
MAX_REASON: Final = 500  # characters of a refusal's reason kept


def kept_headers(headers: Iterable[tuple[str, str]], redact: Callable[[str], str] = str) -> dict[str, str]:
    """The headers stored with a callback: all but :data:`DROPPED_HEADERS`, with no credential in clear.

    Masked: a ``Basic`` authorization (a shared password), headers named as secrets
    (:data:`SECRET_HEADER_WORDS`), and wherever it appears, any secret of the instance's own
    config (``redact``: the instance's :meth:`~gateway.plugin_api.Provider.redact`), which is
    what a vendor sends when it authenticates with a token (Brevo's ``Bearer``). A ``Bearer``
    that is not a configured secret is kept: vendors that sign with a JWT (Vonage) put the
    signature there.
    """
    kept: dict[str, str] = {}
    for header, value in headers:
        name = str(header)  # aiohttp's header names are a str subclass; the store wants plain str
        lower = name.lower()
        if lower in DROPPED_HEADERS:
            continue
        if lower == "authorization" and value[:6].lower() == "basic ":
            value = f"Basic {REDACTED}"
        elif any(word in lower for word in SECRET_HEADER_WORDS):
            value = REDACTED
        value = redact(value)
        kept[name] = f"{kept[name]}, {value}" if name in kept else value
    return kept


def redactor(provider: Provider) -> Callable[[str], str]:
    """``provider.redact`` for the many texts of one callback, the instance's secrets read once.

    A plugin that redacts its own way (overrides :meth:`~gateway.plugin_api.Provider.redact`)
    gets its own method called for each text, as before.
    """
    if type(provider).redact is not Provider.redact:
        return provider.redact
    return redaction.redactor(redaction.secret_texts(provider.config_schema, provider.config))


def kept_target(raw_path: str) -> str:
    """The path and query stored with a callback, the values of :data:`SECRET_QUERY_PARAMETERS` masked."""
    path, _, query = raw_path.partition("?")
    if not query:
        return raw_path
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(name.lower() in SECRET_QUERY_PARAMETERS for name, _value in pairs):
        return raw_path  # kept byte for byte: a signed URL (Twilio's) verifies again
    return f"{path}?{urlencode([(name, REDACTED if name.lower() in SECRET_QUERY_PARAMETERS else value) for name, value in pairs])}"


@dataclass(frozen=True, slots=True)
class _Verified:
    record: InboundRecord
    provider: Provider
    tenants: tuple[str, ...]
    request: InboundRequest


class Inbound:
    """Receives verified callbacks and processes them on their own path."""

    def __init__(self, store: Store, opt_outs: OptOuts, *, refused_kept: int = 10_000) -> None:
        """``refused_kept``: how many refused callbacks' summaries are kept, the newest."""
        self._store = store
        self._refused_kept = refused_kept
        self._opt_outs = opt_outs
        self._batcher: Batcher[_Verified] = Batcher(self._process, name="inbound", retryable=store.is_transient)
        self._kept: Coalescer[InboundRecord] = Coalescer(store.store_inbound, name="inbound-kept", transient=store.is_transient)
        self._reported: Batcher[NewReply | NewOptOut] = Batcher(self._store_reported, name="reported-replies")

    def reported(self, provider: str, items: Sequence[InboundReply | OptOut], tenants: Sequence[str]) -> None:
        """Replies and opt-outs a plugin learned by itself (polling its vendor): stored as if a callback had brought them."""
        now = self._store.clock.now()
        for item in items:
            if isinstance(item, OptOut):
                self._reported.add(_new_opt_out(provider, tuple(tenants), now, item))
            else:
                self._reported.add(_new_reply(None, provider, tuple(tenants), now, item))

    async def _store_reported(self, batch: list[NewReply | NewOptOut]) -> None:
        replies = [item for item in batch if isinstance(item, NewReply)]
        opt_outs = [item for item in batch if isinstance(item, NewOptOut)]
        self._opt_outs.note(await self._store.record_inbound([], replies, opt_outs))

    async def receive(self, record: InboundRecord, provider: Provider, tenants: Sequence[str], request: InboundRequest) -> None:
        """Verify ``record``, store it, and queue it for processing; raise ``WebhookVerificationError`` if forged.

        Returns once the raw request is durable, so a 200 never precedes the write. Verification
        comes first (it reads nothing but the request), so a stored callback is always genuine
        and safe to process; a refused one leaves only its summary. Callbacks verified while
        the previous ones are being written are kept together, in one write.
        """
        try:
            await provider.verify_webhook(request)
        except WebhookVerificationError as err:
            err.message = provider.redact(err.message)  # it is stored, and answered to whoever called
            await self._refuse(record, err.message)
            raise
        except Exception as err:
            await self._refuse(record, f"verification failed in the plugin: {type(err).__name__}")
            raise
        await self._kept.submit(record)
        self._batcher.add(_Verified(record, provider, tuple(tenants), request))

    async def _refuse(self, record: InboundRecord, reason: str) -> None:
        refused = RefusedCallback(
            record.id, record.provider, record.received_at, record.source, record.method, len(record.body),
            hashlib.sha256(record.body).hexdigest(), reason[:MAX_REASON],
        )
        await self._store.store_refused(refused, keep=self._refused_kept)

    async def resume(self, providers: Mapping[str, Provider], tenants_of: Callable[[str], tuple[str, ...]]) -> int:
        """Queue the callbacks that were acknowledged but not processed when the process last stopped.

        ``providers`` are the instances by name; ``tenants_of`` says whose callbacks an instance
        carries. A callback whose instance is gone from policy is marked rejected.
        """
        pending = await self._store.pending_inbound()
        for record in pending:
            provider = providers.get(record.provider)
            if provider is None:
                await self._store.reject_inbound(record.id, "its provider instance is no longer in policy")
                continue
            self._batcher.add(_Verified(record, provider, tenants_of(record.provider), stored_request(record)))
        if pending:
            log.info("processing %d provider callbacks received before the last stop", len(pending))
        return len(pending)

    async def _process(self, batch: list[_Verified]) -> None:
        """Parse a batch of stored callbacks and write what they said, and that they were read, in one transaction.

        So a callback is never marked processed while its receipts are not reconciled: a
        process killed in between processes it again on start.
        """
        processed: list[str] = []
        rejected: list[tuple[str, str]] = []
        receipts: list[ReceivedStatus] = []
        replies: list[NewReply] = []
        opt_outs: list[NewOptOut] = []
        for item in batch:
            updates = await self._parse(item)
            if isinstance(updates, str):
                rejected.append((item.record.id, updates))
                continue
            receipts += received_statuses(item.provider.name, [u for u in updates if isinstance(u, StatusUpdate)])
            for update in updates:
                if isinstance(update, InboundReply):
                    replies.append(_new_reply(item.record.id, item.provider.name, item.tenants, item.record.received_at, update))
                elif isinstance(update, OptOut):
                    opt_outs.append(_new_opt_out(item.provider.name, item.tenants, item.record.received_at, update))
            processed.append(item.record.id)
        self._opt_outs.note(await self._store.record_inbound(processed, replies, opt_outs, receipts=receipts, rejected=rejected))

    async def _parse(self, item: _Verified) -> Sequence[ProviderReport] | str:
        """The plugin's reading of a callback, or why it could not read it (the request is then marked rejected)."""
        try:
            return await item.provider.parse_webhook(item.request)
        except Exception as err:
            trace = item.provider.redact("".join(traceback.format_exception(err)))
            log.error("provider instance %s could not parse callback %s:\n%s", item.provider.name, item.record.id, trace)
            reason = item.provider.redact(f"could not be parsed: {type(err).__name__}: {err}")
            return reason[:500]

    async def drain(self) -> None:
        await self._batcher.drain()
        await self._reported.drain()


def _new_opt_out(provider: str, tenants: tuple[str, ...], received_at: float, opt_out: OptOut) -> NewOptOut:
    return NewOptOut(
        provider=provider, tenants=tenants, channel=opt_out.channel, address=opt_out.address, opted_out=opt_out.opted_out,
        reason=opt_out.reason, at=opt_out.occurred_at or received_at, about=opt_out.about,
    )


def _new_reply(request_id: str | None, provider: str, tenants: tuple[str, ...], received_at: float, reply: InboundReply) -> NewReply:
    return NewReply(
        request_id=request_id,
        provider=provider,
        tenants=tenants,
        channel=reply.channel,
        sender=reply.sender,
        body=reply.body,
        received_at=reply.occurred_at or received_at,
        provider_message_id=reply.provider_message_id,
        in_reply_to=reply.in_reply_to,
        detail=reply.detail,
        opt=opt_change(reply),
    )


def stored_request(record: InboundRecord) -> InboundRequest:
    """A stored callback as a plugin reads it again (it was verified when it arrived)."""
    query = dict(parse_qsl(urlsplit(record.target).query))
    return InboundRequest(
        method=record.method, url=record.target, headers=dict(record.headers), query=query, body=record.body, remote=record.source
    )


def instance_tenants(owner: str | None, tenants: Mapping[str, object]) -> tuple[str, ...]:
    """Whose callbacks an instance carries: its owner's only, or (a shared instance) any tenant's."""
    return (owner,) if owner is not None else tuple(tenants)
