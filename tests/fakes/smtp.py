"""A real SMTP server on loopback (aiosmtpd) that records what it receives and fails on cue.

Also the smtp plugin's conformance kit. It runs in the test's own event loop, so a test can
hold a reply, wait on what the server saw, and release it without threads or sleeps::

    async with FakeSmtpServer() as server:              # 127.0.0.1:<free port>, STARTTLS + AUTH
        server.fail_next("reject_recipient")            # the next RCPT gets 550 5.1.1
        server.script("DATA", "554 5.7.1 Message rejected as spam")
        ...                                             # point the plugin at server.config()
        await server.wait_for(lambda s: s.held == 1)    # a "timeout" fault holds DATA's reply
        [mail] = server.received                        # mail.message: the parsed EmailMessage

``mode`` is ``starttls`` (plain connection, STARTTLS offered and required before MAIL),
``tls`` (TLS from the first byte) or ``none``. The TLS certificate is self-signed for
127.0.0.1 and made with ``cryptography`` when the server starts; its PEM is ``ca_file``. With
``require_auth`` (the default) MAIL is refused with ``530 5.7.0 Authentication required``
until the client has authenticated with ``username``/``password``; wrong credentials get
aiosmtpd's ``535 5.7.8 Authentication credentials invalid``, and AUTH on a connection not
yet encrypted gets ``538 5.7.11`` (except in ``none`` mode).

Faults for the conformance suite: ``timeout`` holds the reply to DATA until the client gives
up (aiosmtpd then cancels the handler) or the server stops; ``5xx`` — a vendor's server-side
failure — is, in SMTP, ``451 4.3.0`` (a 5yz reply would be a permanent refusal);
``reject_recipient`` answers RCPT with ``550 5.1.1 … User unknown``. :meth:`script` queues any
reply for a given stage (MAIL, RCPT, DATA).
"""

from __future__ import annotations

import asyncio
import datetime
import email
import ipaddress
import itertools
import ssl
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any, Final, Literal

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fakes.loopback import Watched
from gateway.conformance import FAST_TIMEOUT, Fault, Kit, outbound
from plugins.smtp import SmtpProvider

Mode = Literal["starttls", "tls", "none"]
USERNAME: Final = "tidings@relay.example"
PASSWORD: Final = "s3cret-smtp-password"
SERVER_NAME: Final = "mx.fake.example"
HOLD: Final = "hold"
FAULT_REPLIES: Final[dict[str, tuple[str, str]]] = {
    "timeout": ("DATA", HOLD),
    "5xx": ("DATA", "451 4.3.0 Error: queue file write error"),
    "reject_recipient": ("RCPT", "550 5.1.1 <{address}>: Recipient address rejected: User unknown in local recipient table"),
}


@dataclass
class ReceivedMail:
    """One message the server accepted (answered 250 to DATA)."""

    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    data: bytes
    login: str | None
    tls: bool
    ehlo: str | None
    queue_id: str
    message: EmailMessage = field(init=False)

    def __post_init__(self) -> None:
        parsed = email.message_from_bytes(self.data, policy=default_policy)
        assert isinstance(parsed, EmailMessage)
        self.message = parsed


class FakeSmtpServer(Watched):
    """The server's state, its aiosmtpd handler, and its listening socket."""

    def __init__(
        self, *, mode: Mode = "starttls", require_auth: bool = True, username: str = USERNAME, password: str = PASSWORD,
        smtputf8: bool = True,
    ) -> None:
        super().__init__()
        self.mode = mode
        self.require_auth = require_auth
        self.username = username
        self.password = password
        self.smtputf8 = smtputf8
        self.host = "127.0.0.1"
        self.port = 0
        self.url = ""
        self.ca_file = ""
        self.received: list[ReceivedMail] = []
        self.commands: list[str] = []  # "MAIL", "RCPT", "DATA", "AUTH ok" / "AUTH refused", in order
        self.sessions = 0
        self._script: list[tuple[str, str]] = []
        self._held: list[asyncio.Event] = []
        self._protocols: list[SMTP] = []
        self._server: asyncio.base_events.Server | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._tls: ssl.SSLContext | None = None
        self._ids = itertools.count(1)

    # -- what tests call ---------------------------------------------------------------------

    def fail_next(self, fault: Fault) -> None:
        self._script.append(FAULT_REPLIES[fault])

    def script(self, stage: Literal["MAIL", "RCPT", "DATA"], reply: str) -> None:
        """Answer the next ``stage`` command with ``reply`` (``"hold"``: hold it like a timeout)."""
        self._script.append((stage, reply))

    @property
    def held(self) -> int:
        return len(self._held)

    def release(self) -> None:
        for event in self._held:
            event.set()

    def config(self, **overrides: Any) -> dict[str, Any]:
        """A plugin config that reaches this server as it is set up."""
        config: dict[str, Any] = {
            "host": self.host, "port": self.port, "security": self.mode, "from": "no-reply@tidings.example",
            "timeout_seconds": FAST_TIMEOUT,
        }
        if self.mode != "none":
            config["ca_file"] = self.ca_file
            config |= {"username": self.username, "password": self.password} if self.require_auth else {}
        return config | overrides

    # -- serving -----------------------------------------------------------------------------

    async def start(self) -> FakeSmtpServer:
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-smtp-")
        self._tls = _self_signed(Path(self._tmp.name))
        self.ca_file = str(Path(self._tmp.name) / "cert.pem")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, self.host, 0, ssl=self._tls if self.mode == "tls" else None
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"smtp://{self.host}:{self.port}"
        return self

    async def close(self) -> None:
        self.release()
        if self._server is not None:
            self._server.close()
            for protocol in self._protocols:
                if protocol.transport is not None:
                    protocol.transport.close()
            await self._server.wait_closed()
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aenter__(self) -> FakeSmtpServer:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def _protocol(self) -> SMTP:
        protocol = SMTP(
            self,
            hostname=SERVER_NAME,
            tls_context=self._tls if self.mode == "starttls" else None,
            require_starttls=self.mode == "starttls",
            auth_require_tls=self.mode == "starttls",
            authenticator=self._authenticate,
            enable_SMTPUTF8=self.smtputf8,
            loop=asyncio.get_running_loop(),
        )
        self._protocols.append(protocol)
        self.sessions += 1
        return protocol

    # -- aiosmtpd hooks ----------------------------------------------------------------------

    def _authenticate(self, _server: SMTP, _session: Session, _envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
        ok = (
            mechanism in {"LOGIN", "PLAIN"} and isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.username and auth_data.password.decode() == self.password
        )
        self._record(f"AUTH {'ok' if ok else 'refused'}")
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    async def handle_MAIL(self, _server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        self._record("MAIL")
        if self.require_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        scripted = await self._scripted("MAIL", address)
        if scripted is not None:
            return scripted
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, _server: SMTP, _session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        self._record("RCPT")
        scripted = await self._scripted("RCPT", address)
        if scripted is not None:
            return scripted
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self._record("DATA")
        scripted = await self._scripted("DATA", ",".join(envelope.rcpt_tos))
        if scripted is not None:
            return scripted
        queue_id = f"4Q{next(self._ids):06X}"
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        data = envelope.original_content or b""
        self.received.append(
            ReceivedMail(
                str(envelope.mail_from), list(envelope.rcpt_tos), list(envelope.mail_options), data, login,
                session.ssl is not None or self.mode == "tls", session.host_name, queue_id,
            )
        )
        self._notify()
        return f"250 2.0.0 Ok: queued as {queue_id}"

    async def _scripted(self, stage: str, address: str) -> str | None:
        for index, (wanted, reply) in enumerate(self._script):
            if wanted == stage:
                del self._script[index]
                if reply == HOLD:
                    await self._hold()
                    return "451 4.4.2 Timeout (the server was stopped)"
                return reply.format(address=address)
        return None

    async def _hold(self) -> None:
        released = asyncio.Event()
        self._held.append(released)
        self._notify()
        try:
            await released.wait()
        finally:
            self._held.remove(released)
            self._notify()

    def _record(self, command: str) -> None:
        self.commands.append(command)
        self._notify()


def _self_signed(directory: Path) -> ssl.SSLContext:
    """A P-256 certificate for 127.0.0.1 and localhost, written as cert.pem / key.pem; the server's context."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


@asynccontextmanager
async def serve(**options: Any) -> AsyncIterator[FakeSmtpServer]:
    async with FakeSmtpServer(**options) as server:
        yield server


def _config(fake: Any) -> dict[str, Any]:
    assert isinstance(fake, FakeSmtpServer)
    return fake.config()


KIT = Kit(
    plugin=SmtpProvider,
    serve=serve,
    config=_config,
    message=outbound("email", "ada@example.com", {"email": "ada@example.com"}, subject="Your code", html="<p>Your code is <b>123456</b></p>"),
    secrets=(PASSWORD,),
)
