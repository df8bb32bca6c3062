"""The SMTP provider: email through any SMTP submission server, with aiosmtplib.

Docs relied on:

- RFC 5321 (SMTP; reply codes, 4yz transient / 5yz permanent): https://www.rfc-editor.org/rfc/rfc5321
- RFC 3207 (STARTTLS), RFC 8314 (implicit TLS on 465), RFC 4954 (AUTH; 530, 534, 535, 538, 454):
  https://www.rfc-editor.org/rfc/rfc3207 https://www.rfc-editor.org/rfc/rfc8314 https://www.rfc-editor.org/rfc/rfc4954
- RFC 3463 enhanced status codes (5.1.1 bad mailbox …): https://www.rfc-editor.org/rfc/rfc3463
- RFC 5322 (Message-ID, Date, Reply-To) and RFC 2047 (encoded words): https://www.rfc-editor.org/rfc/rfc5322
- aiosmtplib: https://aiosmtplib.readthedocs.io/en/stable/usage.html
- email.message.EmailMessage with the default policy: https://docs.python.org/3/library/email.message.html

What it does, per send: connect (``security: tls`` is TLS from the first byte, the usual port
465; ``starttls`` — the default — upgrades a plain connection and refuses to go on without
it, port 587; ``none`` stays in clear, port 25, for a relay on a trusted network, and then
takes no credentials), EHLO, AUTH when ``username``/``password`` are set, then one
transaction to the one recipient, and QUIT. One connection per send: simple, and nothing to
go stale between sends.

The message is an :class:`email.message.EmailMessage` built with the default policy, so a
non-ASCII subject or display name goes out RFC 2047-encoded; ``html`` makes it
``multipart/alternative`` (text first, then HTML). From is the tenant's sender
(``message.sender``: address, display name, Reply-To) or the configured ``from``/``from_name``/
``reply_to``. We write the ``Message-ID`` ourselves, ``<delivery id@domain>`` (domain:
``message_id_domain``, else the From address's domain): the provider message id, and the same
on every retry of a delivery, so a receiver that keeps a message whose 250 we never saw can
drop the retry as a duplicate. The delivery id also goes in ``X-Tidings-Delivery-Id``.

Classification (the ``ERRORS`` table, by SMTP stage and reply code): 4yz replies (421, 450,
451, 452, 454), connection failures, TLS failures and timeouts are transient; 5yz (550, 552,
553, 554) are permanent, a refused RCPT being ``invalid_recipient``; 530/534/535/538 mean the
instance's credentials or TLS setup are wrong (``CredentialsRejectedError``), and so does a
server that offers no STARTTLS or no AUTH when the config asks for them. Once the server has
answered DATA with 250 the message is sent, whatever happens to the QUIT after it.

SMTP has no delivery receipts or replies here: a 250 means the server took the message.
"""

from __future__ import annotations

import asyncio
import email.generator
import email.policy
import email.utils
import io
import re
import ssl
from collections.abc import Mapping
from datetime import datetime, timezone
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any, ClassVar, Final, NoReturn

import aiosmtplib

from gateway import (
    CredentialsRejectedError,
    DeliveryError,
    OutboundMessage,
    PermanentDeliveryError,
    Provider,
    ProviderLimits,
    SendReceipt,
    TransientDeliveryError,
)
from gateway.provider_kit import DEFAULT_TIMEOUT, TIMEOUT_PROPERTY, VendorError, failure

DELIVERY_ID_HEADER: Final = "X-Tidings-Delivery-Id"
DEFAULT_PORTS: Final[Mapping[str, int]] = {"starttls": 587, "tls": 465, "none": 25}
VENDOR: Final = "the SMTP server"

# SMTP stages, as the classification sees them.
CONNECT: Final = "CONNECT"
EHLO: Final = "EHLO"
STARTTLS: Final = "STARTTLS"
AUTH: Final = "AUTH"
MAIL: Final = "MAIL"
RCPT: Final = "RCPT"
DATA: Final = "DATA"

# A reply code's row; a (stage, code) row wins over the code's own. A code with no row is
# classified by its class: 4yz transient, 5yz permanent.
ERRORS: Final[Mapping[int | tuple[str, int], VendorError]] = {
    421: VendorError(transient=True, meaning="service not available, closing the connection", code="service_unavailable"),
    450: VendorError(transient=True, meaning="mailbox unavailable for now (busy, or greylisting)", code="mailbox_busy"),
    451: VendorError(transient=True, meaning="local error in processing", code="server_error"),
    452: VendorError(transient=True, meaning="insufficient system storage", code="server_busy"),
    (RCPT, 452): VendorError(transient=True, meaning="too many recipients for now", code="rate_limited"),
    454: VendorError(transient=True, meaning="TLS or authentication temporarily unavailable", code="server_error"),
    530: VendorError(transient=False, meaning="the server wants authentication (set username/password)", credentials=True),
    534: VendorError(transient=False, meaning="the server finds the authentication mechanism too weak", credentials=True),
    535: VendorError(transient=False, meaning="authentication credentials invalid (check username/password)", credentials=True),
    538: VendorError(transient=False, meaning="the server wants encryption before AUTH (use security: starttls or tls)", credentials=True),
    (RCPT, 550): VendorError(transient=False, meaning="mailbox unavailable (no such user)", code="invalid_recipient"),
    (RCPT, 551): VendorError(transient=False, meaning="user not local", code="invalid_recipient"),
    (RCPT, 553): VendorError(transient=False, meaning="mailbox name not allowed", code="invalid_recipient"),
    (MAIL, 550): VendorError(transient=False, meaning="sender refused", code="sender_refused"),
    (MAIL, 553): VendorError(transient=False, meaning="sender address not allowed", code="sender_refused"),
    550: VendorError(transient=False, meaning="requested action not taken", code="rejected"),
    552: VendorError(transient=False, meaning="message exceeds the server's size limit", code="message_too_large"),
    554: VendorError(transient=False, meaning="transaction failed (refused as spam or by policy)", code="rejected"),
}

_HOSTNAME: Final = r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
_EMAIL: Final = r"^[^@\s<>]+@[^@\s<>]+$"
_LINE_BREAKS: Final = re.compile(r"[\r\n]+\s*")


class SmtpProvider(Provider):
    channels = frozenset({"email"})
    config_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "required": ["host", "from"],
        "properties": {
            "host": {"type": "string", "minLength": 1, "description": "SMTP server host name or address."},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535, "description": "Default: 587 (starttls), 465 (tls), 25 (none)."},
            "security": {
                "enum": ["starttls", "tls", "none"], "default": "starttls",
                "description": "starttls: upgrade a plain connection (required); tls: implicit TLS; none: clear text, no AUTH.",
            },
            "username": {"type": "string", "minLength": 1},
            "password": {"type": "string", "minLength": 1, "x-secret": True},
            "from": {"type": "string", "pattern": _EMAIL, "description": "Default From address (a tenant's sender wins)."},
            "from_name": {"type": "string"},
            "reply_to": {"type": "string", "pattern": _EMAIL},
            "message_id_domain": {"type": "string", "pattern": _HOSTNAME, "description": "Right-hand side of our Message-IDs; default: the From domain."},
            "local_hostname": {"type": "string", "pattern": _HOSTNAME, "description": "Name we give in EHLO; default: this machine's FQDN."},
            "validate_certs": {"type": "boolean", "default": True, "description": "Verify the server's TLS certificate and name."},
            "ca_file": {"type": "string", "minLength": 1, "description": "PEM bundle to trust instead of the system's CAs (a private CA)."},
            "timeout_seconds": TIMEOUT_PROPERTY,
        },
        "dependentRequired": {"username": ["password"], "password": ["username"]},
        "if": {"properties": {"security": {"const": "none"}}, "required": ["security"]},
        "then": {"not": {"required": ["username"]}},
        "additionalProperties": False,
    }
    limits = ProviderLimits(receipts=False, replies=False, idempotency=False)

    @property
    def security(self) -> str:
        return str(self.config.get("security", "starttls"))

    @property
    def port(self) -> int:
        return int(self.config.get("port", DEFAULT_PORTS[self.security]))

    async def send(self, message: OutboundMessage) -> SendReceipt:
        mail, sender = self.build_message(message)
        client = self._client()
        await self._open(client)
        stage = MAIL
        try:
            utf8 = not (sender + message.to).isascii()
            if utf8 and not client.supports_extension("smtputf8"):
                raise PermanentDeliveryError(f"{VENDOR} does not offer SMTPUTF8, which a non-ASCII address needs", code="smtputf8_unsupported")
            eight_bit = client.supports_extension("8bitmime")
            data = _flatten(mail, utf8=utf8, eight_bit=eight_bit)
            options = [f"SIZE={len(data)}"] if client.supports_extension("size") else []
            options += (["SMTPUTF8"] if utf8 else []) + (["BODY=8BITMIME"] if eight_bit else [])
            encoding = "utf-8" if utf8 else "ascii"
            await client.mail(sender, options=options, encoding=encoding)
            stage = RCPT
            await client.rcpt(message.to, encoding=encoding)
            stage = DATA
            reply = await client.data(data)
        except BaseException as err:
            client.close()
            _raise_classified(err, stage)
        # The server took it (250 to DATA): from here nothing may turn the send into a failure.
        await _quit(client)
        return SendReceipt(provider_message_id=str(mail["Message-ID"]), detail={"smtp_response": f"{reply.code} {reply.message}"})

    async def check_credentials(self) -> str | None:
        """Connect, EHLO, STARTTLS and AUTH as a send would, then QUIT; names the server by its greeting."""
        client = self._client()
        greeting = await self._open(client)
        await _quit(client)
        name = greeting.split(maxsplit=1)[0] if greeting.strip() else str(self.config["host"])
        how = {"starttls": "STARTTLS", "tls": "implicit TLS", "none": "no TLS"}[self.security]
        auth = f", AUTH accepted for {self.config['username']}" if self.config.get("username") else ""
        return f"{name} on port {self.port} ({how}{auth})"

    # -- the message ------------------------------------------------------------------------

    def build_message(self, message: OutboundMessage) -> tuple[EmailMessage, str]:
        """The MIME message and the envelope sender for ``message``."""
        sender = message.sender
        from_address = sender.address if sender is not None else str(self.config["from"])
        from_name = sender.name if sender is not None else self.config.get("from_name")
        reply_to = (sender.reply_to if sender is not None else None) or self.config.get("reply_to")
        mail = EmailMessage(policy=email.policy.default)
        try:
            mail["From"] = _address(from_address, from_name)
            if reply_to:
                mail["Reply-To"] = _address(reply_to)
        except (ValueError, IndexError) as err:
            raise PermanentDeliveryError(f"the sender address {from_address!r} is not valid: {err}", code="invalid_sender") from err
        try:
            mail["To"] = _address(message.to)
        except (ValueError, IndexError) as err:
            raise PermanentDeliveryError(f"{message.to!r} is not a valid email address: {err}", code="invalid_recipient") from err
        mail["Subject"] = _LINE_BREAKS.sub(" ", message.subject or "").strip()
        mail["Date"] = email.utils.format_datetime(datetime.fromtimestamp(self.context.clock.now(), tz=timezone.utc))
        domain = self.config.get("message_id_domain") or from_address.rpartition("@")[2]
        mail["Message-ID"] = f"<{message.delivery_id}@{domain}>"
        mail[DELIVERY_ID_HEADER] = message.delivery_id
        if message.html is not None and message.body is None:
            mail.set_content(message.html, subtype="html")
        else:
            mail.set_content(message.body or "")
            if message.html is not None:
                mail.add_alternative(message.html, subtype="html")
        return mail, from_address

    # -- the connection ---------------------------------------------------------------------

    def _client(self) -> aiosmtplib.SMTP:
        tls_context: ssl.SSLContext | None = None
        if self.security != "none":
            tls_context = ssl.create_default_context(cafile=self.config.get("ca_file"))
            if not self.config.get("validate_certs", True):
                tls_context.check_hostname = False
                tls_context.verify_mode = ssl.CERT_NONE
        return aiosmtplib.SMTP(
            hostname=str(self.config["host"]),
            port=self.port,
            use_tls=self.security == "tls",
            start_tls=False,  # done by hand in _open, so a server without STARTTLS is refused, not used in clear
            tls_context=tls_context,
            local_hostname=self.config.get("local_hostname"),
            timeout=float(self.config.get("timeout_seconds", DEFAULT_TIMEOUT)),
        )

    async def _open(self, client: aiosmtplib.SMTP) -> str:
        """Connect, EHLO, STARTTLS and AUTH as configured; the greeting's text. Failures classified, client closed."""
        stage = CONNECT
        try:
            greeting = await client.connect()
            stage = EHLO
            await client.ehlo()
            if self.security == "starttls":
                stage = STARTTLS
                if not client.supports_extension("starttls"):
                    raise CredentialsRejectedError(
                        f"{VENDOR} does not offer STARTTLS; not going on in clear (security: starttls)", code="starttls_unsupported"
                    )
                await client.starttls()
                await client.ehlo()  # RFC 3207: what the server offers is learnt again over TLS
            if self.config.get("username"):
                stage = AUTH
                if not client.supports_extension("auth"):
                    raise CredentialsRejectedError(f"{VENDOR} does not offer AUTH, but a username is configured", code="auth_unsupported")
                await client.login(str(self.config["username"]), str(self.config["password"]))
        except BaseException as err:
            client.close()
            _raise_classified(err, stage)
        return greeting.message


async def _quit(client: aiosmtplib.SMTP) -> None:
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
        client.close()


def _raise_classified(err: BaseException, stage: str) -> NoReturn:
    """Raise the delivery error for an aiosmtplib failure at ``stage``; anything else (cancellation, bugs) as it is."""
    classified = _classified(err, stage)
    if classified is err:
        raise err
    raise classified from err


def _classified(err: BaseException, stage: str) -> BaseException:
    if isinstance(err, DeliveryError):
        return err
    if isinstance(err, aiosmtplib.SMTPResponseException) and err.code > 0:
        return _reply_failure(stage, err.code, err.message)
    if isinstance(err, (aiosmtplib.SMTPTimeoutError, asyncio.TimeoutError)):
        # After DATA the server may have kept the message; the retry carries the same Message-ID.
        maybe = "; it may have taken the message" if stage == DATA else ""
        return TransientDeliveryError(f"{VENDOR} did not answer in time (at {stage}){maybe}", code="timeout", detail={"smtp_stage": stage})
    tls_error = err if isinstance(err, ssl.SSLError) else err.__cause__ if isinstance(err.__cause__, ssl.SSLError) else None
    if tls_error is not None:  # aiosmtplib wraps an implicit-TLS handshake failure in SMTPConnectError
        reason = getattr(tls_error, "verify_message", None) or tls_error.reason or type(tls_error).__name__
        return TransientDeliveryError(f"TLS with {VENDOR} failed: {reason}", code="tls_error", detail={"smtp_stage": stage})
    if stage == AUTH and type(err) is aiosmtplib.SMTPException:  # "no suitable authentication method"
        return CredentialsRejectedError(f"{VENDOR} offers no AUTH mechanism we share: {err.message}", code="auth_unsupported")
    if isinstance(err, (aiosmtplib.SMTPException, OSError)):
        return TransientDeliveryError(f"could not reach {VENDOR}: {_reason(err)} (at {stage})", code="unreachable", detail={"smtp_stage": stage})
    return err


def _flatten(mail: EmailMessage, *, utf8: bool, eight_bit: bool) -> bytes:
    """The message as DATA carries it: CRLF line ends, RFC 2047 headers unless SMTPUTF8, 7-bit bodies unless 8BITMIME."""
    policy = email.policy.SMTPUTF8 if utf8 else email.policy.SMTP
    if not eight_bit:
        policy = policy.clone(cte_type="7bit")
    buffer = io.BytesIO()
    email.generator.BytesGenerator(buffer, policy=policy).flatten(mail)
    return buffer.getvalue()


def _reply_failure(stage: str, code: int, text: str) -> DeliveryError:
    row = ERRORS.get((stage, code)) or ERRORS.get(code)
    if row is None:
        row = VendorError(transient=400 <= code < 500, meaning=f"SMTP reply {code}")
    error = failure({code: row}, code, f"{code} {text}".strip(), vendor=VENDOR)
    error.detail["smtp_stage"] = stage
    return error


def _reason(err: BaseException) -> str:
    if isinstance(err, aiosmtplib.SMTPException):
        return err.message
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return type(err).__name__


def _address(addr_spec: str, display_name: str | None = None) -> Address | str:
    """A header value for the address; a non-ASCII local part (RFC 6531) as text, which Address refuses."""
    if "\r" in addr_spec or "\n" in addr_spec or "@" not in addr_spec:
        raise ValueError("not an address")
    name = _LINE_BREAKS.sub(" ", display_name or "").strip()
    if not addr_spec.rpartition("@")[0].isascii():
        return email.utils.formataddr((name, addr_spec)) if name else addr_spec
    return Address(display_name=name, addr_spec=addr_spec)
