"""The smtp plugin against a real SMTP server on loopback (aiosmtpd), and end to end through a real app."""

from __future__ import annotations

import email
import email.utils
import textwrap
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.policy import compat32
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import LIVE_KEY, Api, FakeClock, key_entry, serve
from fakes.smtp import PASSWORD, SERVER_NAME, USERNAME, FakeSmtpServer

from gateway import CredentialsRejectedError, PermanentDeliveryError, ProviderContext, Sender, TransientDeliveryError
from gateway.conformance import outbound
from plugins.smtp import DELIVERY_ID_HEADER, SmtpProvider

TO = "ada@example.com"


@pytest.fixture
async def server() -> AsyncIterator[FakeSmtpServer]:
    async with FakeSmtpServer() as fake:
        yield fake


def provider(session: aiohttp.ClientSession, server: FakeSmtpServer, clock: FakeClock | None = None, **config: Any) -> SmtpProvider:
    settings = server.config(timeout_seconds=2) | config
    settings = {key: value for key, value in settings.items() if value is not None}
    return SmtpProvider("smtp", settings, ProviderContext(session=session, clock=clock or FakeClock(), report=lambda _u: None))


def message(**content: Any) -> Any:
    content.setdefault("subject", "Your code")
    return outbound("email", content.pop("to", TO), {"email": TO}, **content)


def parts(mail: EmailMessage) -> list[tuple[str, str]]:
    """(content type, text) of each leaf part, line ends as Python writes them."""
    return [(part.get_content_type(), part.get_content().replace("\r\n", "\n")) for part in mail.walk() if not part.is_multipart()]


# -- what goes on the wire --------------------------------------------------------------------


async def test_sends_multipart_alternative_over_starttls_with_auth_and_our_message_id(session: aiohttp.ClientSession, server: FakeSmtpServer) -> None:
    clock = FakeClock()
    sender = Sender("orders@acme.example", "ACME Orders", "help@acme.example")
    receipt = await provider(session, server, clock).send(
        message(body="Your code is 123456", html="<p>Your code is <b>123456</b></p>", sender=sender)
    )
    [mail] = server.received
    assert (mail.mail_from, mail.rcpt_tos, mail.login, mail.tls) == ("orders@acme.example", [TO], USERNAME, True)
    assert server.commands[0] == "AUTH ok"
    got = mail.message
    assert got["From"] == "ACME Orders <orders@acme.example>" and got["To"] == TO
    assert got["Reply-To"] == "help@acme.example" and got["Subject"] == "Your code"
    assert got["Message-ID"] == "<dlv_01JCONFORMANCE0000000000000@acme.example>" == receipt.provider_message_id
    assert got[DELIVERY_ID_HEADER] == "dlv_01JCONFORMANCE0000000000000"
    assert email.utils.parsedate_to_datetime(got["Date"]) == datetime.fromtimestamp(clock.now(), tz=timezone.utc)
    assert got.get_content_type() == "multipart/alternative"
    assert parts(got) == [("text/plain", "Your code is 123456\n"), ("text/html", "<p>Your code is <b>123456</b></p>\n")]
    assert "queued as" in receipt.detail["smtp_response"]


async def test_non_ascii_subject_and_display_name_are_rfc2047_encoded(session: aiohttp.ClientSession, server: FakeSmtpServer) -> None:
    subject = "Ваш код — 123456 ✓ café"
    await provider(session, server).send(
        message(subject=subject, body="Grüße, Zoë", sender=Sender("bonjour@acme.example", "Société Générale Café"))
    )
    [mail] = server.received
    raw_headers = mail.data.split(b"\r\n\r\n", 1)[0].decode("ascii")  # every header line is 7-bit ASCII
    assert "Ваш" not in raw_headers and "Société" not in raw_headers
    raw = email.message_from_bytes(mail.data, policy=compat32)  # the headers as sent, undecoded
    assert "=?utf-8?" in raw["Subject"] and "=?utf-8?" in raw["From"]
    assert str(make_header(decode_header(raw["Subject"]))) == subject
    assert mail.message["Subject"] == subject
    assert mail.message["From"].addresses[0].display_name == "Société Générale Café"
    assert parts(mail.message) == [("text/plain", "Grüße, Zoë\n")]


async def test_the_configured_sender_is_used_without_a_tenant_sender(session: aiohttp.ClientSession, server: FakeSmtpServer) -> None:
    smtp = provider(session, server, **{"from": "alerts@tidings.example", "from_name": "Tidings", "reply_to": "ops@tidings.example",
                                        "message_id_domain": "mail.tidings.example"})
    receipt = await smtp.send(message(body="Disk almost full"))
    [mail] = server.received
    assert mail.mail_from == "alerts@tidings.example"
    assert (mail.message["From"], mail.message["Reply-To"]) == ("Tidings <alerts@tidings.example>", "ops@tidings.example")
    assert receipt.provider_message_id == "<dlv_01JCONFORMANCE0000000000000@mail.tidings.example>"
    assert mail.message.get_content_type() == "text/plain" and not mail.message.is_multipart()


async def test_html_only_is_a_single_html_part(session: aiohttp.ClientSession, server: FakeSmtpServer) -> None:
    await provider(session, server).send(message(body=None, html="<h1>Hi</h1>"))
    assert parts(server.received[0].message) == [("text/html", "<h1>Hi</h1>\n")]


async def test_line_breaks_in_a_subject_cannot_inject_headers(session: aiohttp.ClientSession, server: FakeSmtpServer) -> None:
    await provider(session, server).send(message(subject="Hello\r\nBcc: victim@example.com", body="x"))
    [mail] = server.received
    assert mail.rcpt_tos == [TO] and mail.message["Bcc"] is None
    assert mail.message["Subject"] == "Hello Bcc: victim@example.com"


async def test_an_address_with_a_line_break_is_refused_before_connecting(session: aiohttp.ClientSession, server: FakeSmtpServer) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        await provider(session, server).send(message(to="ada@example.com\r\nRCPT TO:<x@evil.example>", body="x"))
    assert caught.value.code == "invalid_recipient" and server.sessions == 0


async def test_a_non_ascii_address_needs_smtputf8(session: aiohttp.ClientSession) -> None:
    async with FakeSmtpServer() as server:
        await provider(session, server).send(message(to="zoë@example.com", body="x"))
        [mail] = server.received
        assert mail.rcpt_tos == ["zoë@example.com"] and "SMTPUTF8" in mail.mail_options
        assert mail.message["To"] == "zoë@example.com"
    async with FakeSmtpServer(smtputf8=False) as server:
        with pytest.raises(PermanentDeliveryError) as caught:
            await provider(session, server).send(message(to="zoë@example.com", body="x"))
        assert caught.value.code == "smtputf8_unsupported" and "MAIL" not in server.commands


async def test_implicit_tls(session: aiohttp.ClientSession) -> None:
    async with FakeSmtpServer(mode="tls") as server:
        await provider(session, server).send(message(body="over TLS"))
        [mail] = server.received
        assert mail.tls and mail.login == USERNAME


async def test_plain_relay_without_auth(session: aiohttp.ClientSession) -> None:
    async with FakeSmtpServer(mode="none", require_auth=False) as server:
        await provider(session, server).send(message(body="in clear"))
        [mail] = server.received
        assert not mail.tls and mail.login is None


async def test_starttls_is_required_when_configured(session: aiohttp.ClientSession) -> None:
    async with FakeSmtpServer(mode="none", require_auth=False) as server:
        with pytest.raises(CredentialsRejectedError) as caught:
            await provider(session, server, security="starttls").send(message(body="x"))
        assert caught.value.code == "starttls_unsupported"
        assert server.commands == [] and server.received == []


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_an_untrusted_certificate_is_transient_unless_validation_is_off(session: aiohttp.ClientSession, mode: Any) -> None:
    async with FakeSmtpServer(mode=mode) as server:
        with pytest.raises(TransientDeliveryError) as caught:
            await provider(session, server, ca_file=None).send(message(body="x"))  # the system's CAs do not know it
        assert caught.value.code == "tls_error" and "self-signed certificate" in caught.value.message
        assert server.received == [] and "AUTH ok" not in server.commands
        await provider(session, server, ca_file=None, validate_certs=False).send(message(body="x"))
        assert len(server.received) == 1


def test_the_schema_refuses_credentials_in_clear_and_half_credentials() -> None:
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(dict(SmtpProvider.config_schema))
    base = {"host": "smtp.example.com", "from": "a@example.com"}
    assert validator.is_valid(base) and validator.is_valid(base | {"security": "none"})
    assert not validator.is_valid(base | {"security": "none", "username": "u", "password": "p"})
    assert not validator.is_valid(base | {"username": "u"})
    assert not validator.is_valid(base | {"security": "ssl"})


# -- what SMTP replies mean ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "reply", "error", "code"),
    [
        ("RCPT", "550 5.1.1 <{address}>: Recipient address rejected: User unknown", PermanentDeliveryError, "invalid_recipient"),
        ("RCPT", "553 5.1.3 Bad recipient address syntax", PermanentDeliveryError, "invalid_recipient"),
        ("RCPT", "450 4.2.0 <{address}>: Recipient address rejected: Greylisted", TransientDeliveryError, "mailbox_busy"),
        ("RCPT", "452 4.5.3 Too many recipients", TransientDeliveryError, "rate_limited"),
        ("MAIL", "553 5.7.1 Sender address rejected: not owned by user", PermanentDeliveryError, "sender_refused"),
        ("MAIL", "421 4.7.0 Try again later, closing connection", TransientDeliveryError, "service_unavailable"),
        ("DATA", "554 5.7.1 Message rejected as spam", PermanentDeliveryError, "rejected"),
        ("DATA", "550 5.7.1 Rejected by policy", PermanentDeliveryError, "rejected"),
        ("DATA", "552 5.3.4 Message size exceeds fixed limit", PermanentDeliveryError, "message_too_large"),
        ("DATA", "451 4.3.0 Error: queue file write error", TransientDeliveryError, "server_error"),
        ("DATA", "452 4.3.1 Insufficient system storage", TransientDeliveryError, "server_busy"),
    ],
)
async def test_smtp_replies_are_classified(
    session: aiohttp.ClientSession, server: FakeSmtpServer, stage: Any, reply: str, error: type[Exception], code: str
) -> None:
    smtp = provider(session, server)
    server.script(stage, reply)
    with pytest.raises(error) as caught:
        await smtp.send(message(body="x"))
    assert not isinstance(caught.value, CredentialsRejectedError)
    assert caught.value.code == code  # type: ignore[attr-defined]
    assert caught.value.detail["vendor_code"] == int(reply[:3]) and caught.value.detail["smtp_stage"] == stage  # type: ignore[attr-defined]
    assert reply[4:].split("<", 1)[0] in str(caught.value)
    await smtp.send(message(body="x"))  # one reply was scripted; the next send goes through
    assert len(server.received) == 1


async def test_a_held_data_reply_times_out_as_transient(session: aiohttp.ClientSession, server: FakeSmtpServer) -> None:
    server.fail_next("timeout")
    with pytest.raises(TransientDeliveryError) as caught:
        await provider(session, server, timeout_seconds=0.2).send(message(body="x"))
    assert caught.value.code == "timeout" and caught.value.detail["smtp_stage"] == "DATA"
    await server.wait_for(lambda s: s.held == 0)  # the client hung up; the server gave up on the transaction
    assert server.received == []


async def test_an_unreachable_server_is_transient(session: aiohttp.ClientSession, server: FakeSmtpServer, unused_tcp_port: int) -> None:
    with pytest.raises(TransientDeliveryError) as caught:
        await provider(session, server, port=unused_tcp_port).send(message(body="x"))
    assert caught.value.code == "unreachable"


async def test_wrong_credentials_are_rejected_without_showing_the_password(session: aiohttp.ClientSession, server: FakeSmtpServer) -> None:
    with pytest.raises(CredentialsRejectedError) as caught:
        await provider(session, server, password="not-the-password").send(message(body="x"))
    assert caught.value.code == "535" and caught.value.detail["smtp_stage"] == "AUTH"
    assert "not-the-password" not in str(caught.value) and PASSWORD not in str(caught.value)
    assert set(server.commands) == {"AUTH refused"} and server.received == []  # every mechanism tried, no MAIL


async def test_a_server_that_wants_auth_when_none_is_configured(session: aiohttp.ClientSession, server: FakeSmtpServer) -> None:
    with pytest.raises(CredentialsRejectedError) as caught:
        await provider(session, server, username=None, password=None).send(message(body="x"))
    assert caught.value.code == "530" and caught.value.detail["smtp_stage"] == "MAIL"


# -- check_credentials --------------------------------------------------------------------------


async def test_check_credentials_names_the_server_and_sends_nothing(session: aiohttp.ClientSession, server: FakeSmtpServer) -> None:
    described = await provider(session, server).check_credentials()
    assert described == f"{SERVER_NAME} on port {server.port} (STARTTLS, AUTH accepted for {USERNAME})"
    assert server.commands == ["AUTH ok"] and server.received == []
    assert PASSWORD not in (described or "")


async def test_check_credentials_refused(session: aiohttp.ClientSession, server: FakeSmtpServer) -> None:
    with pytest.raises(CredentialsRejectedError):
        await provider(session, server, password="wrong").check_credentials()


# -- end to end ---------------------------------------------------------------------------------


@pytest.fixture
async def api(aiohttp_client: Any, tmp_path: Path, clock: FakeClock, server: FakeSmtpServer) -> Api:
    policy_dir = tmp_path / "smtp-policies"
    (policy_dir / "secrets").mkdir(parents=True)
    (policy_dir / "secrets" / "smtp-password").write_text(PASSWORD + "\n")
    (policy_dir / "policy.yaml").write_text(textwrap.dedent(f"""
        tenants:
          acme:
            api_keys: [{key_entry(LIVE_KEY)}]
            senders:
              email: {{from: orders@acme.example, name: "ACME Bücher", reply_to: help@acme.example}}
        providers:
          mail:
            plugin: smtp
            config:
              host: 127.0.0.1
              port: {server.port}
              security: starttls
              ca_file: {server.ca_file}
              username: {USERNAME}
              password: {{$file: secrets/smtp-password}}
              from: no-reply@tidings.example
              timeout_seconds: 2
        channels:
          email: {{providers: [mail]}}
        """))
    return await serve(aiohttp_client, policy_dir, {"smtp": SmtpProvider}, clock)


async def test_an_email_sent_through_the_api_arrives_as_mime(api: Api, server: FakeSmtpServer) -> None:
    status, accepted = await api.send({
        "recipient": {"email": TO},
        "notification": {"channels": ["email"], "subject": "Commande n° 1001 expédiée", "body": "Bonjour", "html": "<p>Bonjour</p>"},
    })
    assert status == 202, accepted
    found = await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")
    [delivery] = found["deliveries"]
    [mail] = server.received
    assert delivery["provider_message_id"] == mail.message["Message-ID"] == f"<{delivery['delivery_id']}@acme.example>"
    assert mail.message[DELIVERY_ID_HEADER] == delivery["delivery_id"]
    assert mail.message["Subject"] == "Commande n° 1001 expédiée"
    assert str(mail.message["From"]) == "ACME Bücher <orders@acme.example>" and b"=?utf-8?" in mail.data
    assert parts(mail.message) == [("text/plain", "Bonjour\n"), ("text/html", "<p>Bonjour</p>\n")]
    assert mail.login == USERNAME and mail.tls
