"""Recipient addresses a vendor would misread are refused at the door, whole: no control characters, ASCII digits only."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Api, MemoryProvider, sms_body

from gateway.policy.durations import parse_duration, parse_rate

ARABIC_INDIC = "+١٤١٥٥٥٥٠١٠٠"  # +14155550100 in Arabic-Indic digits
DEVANAGARI = "+१४१५५५५०१००"


def chat_body(channel: str, field: str, address: str) -> dict[str, Any]:
    """A send on a channel whose address has no format of its own: only control characters make it wrong."""
    return {"recipient": {field: address}, "notification": {"channels": [channel], "body": "Hello"}}


def email_body(address: str) -> dict[str, Any]:
    return {"recipient": {"email": address}, "notification": {"channels": ["email"], "subject": "Hi", "body": "Hello"}}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (sms_body("+14155550100\n"), "recipient.phone"),
        (sms_body("+14155550100\r\n"), "recipient.phone"),
        (sms_body(ARABIC_INDIC), "recipient.phone"),
        (sms_body(DEVANAGARI), "recipient.phone"),
        (sms_body("+1415555٠١٠٠"), "recipient.phone"),  # mixed: the tail in Arabic-Indic
        (email_body("ada@example.com\n"), "recipient.email"),
        (chat_body("slack", "slack_user_id", "U123\x00"), "recipient.slack_user_id"),
        (chat_body("telegram", "telegram_chat_id", "42\r\nX-Injected: 1"), "recipient.telegram_chat_id"),
        (chat_body("slack", "slack_channel", "#ops\x7f"), "recipient.slack_channel"),
    ],
    ids=["phone-newline", "phone-crlf", "arabic-indic", "devanagari", "mixed-digits", "email-newline", "slack-nul", "telegram-crlf",
         "slack-del"],
)
async def test_a_recipient_a_vendor_would_misread_is_a_422_and_reaches_no_vendor(
    api: Api, memory_provider: type[MemoryProvider], body: dict[str, Any], field: str
) -> None:
    status, answer = await api.send(body)
    assert status == 422, answer
    assert answer["error"]["code"] == "invalid_recipient"
    assert [detail["field"] for detail in answer["error"]["details"]] == [field]
    _, listing = await api.get("/api/v1/notifications")
    assert listing["items"] == []
    await api.idle()
    assert memory_provider.sent == []


async def test_a_bulk_row_with_a_trailing_newline_is_refused_and_the_good_row_goes_out(api: Api, memory_provider: type[MemoryProvider]) -> None:
    body = {"channels": ["sms"], "template_id": "otp", "data": {"code": "1"}, "recipients": [{"phone": "+14155550100\n"}, {"phone": "+14155550101"}]}
    status, answer = await api.send_bulk(body)
    assert status == 202, answer
    assert (answer["accepted"], [e["code"] for e in answer["errors"]]) == (1, ["invalid_recipient"])
    await api.idle()
    assert [message.to for message in memory_provider.sent] == ["+14155550101"]


async def test_a_plain_e164_number_still_goes_out(api: Api, memory_provider: type[MemoryProvider]) -> None:
    status, answer = await api.send(sms_body("+14155550100"))
    assert status == 202, answer
    await api.idle()
    assert [message.to for message in memory_provider.sent] == ["+14155550100"]


async def test_a_fallback_after_with_a_trailing_newline_or_foreign_digits_is_a_422(api: Api) -> None:
    for value in ("5m\n", "٥m"):
        status, answer = await api.send(sms_body(strategy="fallback", fallback_after=value))
        assert status == 422, answer
        assert answer["error"]["code"] == "validation_failed"


@pytest.mark.parametrize("text", ["5m\n", "٥m", "1.٥s"])
def test_policy_durations_take_ascii_digits_and_nothing_after(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text", ["10/s\n", "١٠/s"])
def test_policy_rates_take_ascii_digits_and_nothing_after(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)
