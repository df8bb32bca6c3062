"""A test key sees and touches test-mode data only; idempotency is scoped by (tenant, mode).

Live keys see the tenant's data in both modes (each item says its ``mode``); test keys see
only what test keys made. What a test key cannot reach answers as if it did not exist (404,
or an empty list), except opt-outs and endpoint controls, which are about real recipients and
real endpoints: a test key is refused those with ``403 live_key_required``.
"""

from __future__ import annotations

from conftest import LIVE_KEY, TEST_KEY, Api, MemoryProvider, sms_body

SEND = "/api/v1/notifications/send"


async def send_keyed(api: Api, key: str, idempotency_key: str, phone: str = "+14155550100") -> tuple[int, dict[str, object], bool]:
    response = await api.client.post(SEND, json=sms_body(phone), headers=api.headers(key, **{"Idempotency-Key": idempotency_key}))
    return response.status, await response.json(), response.headers.get("Idempotent-Replayed") == "true"


async def test_a_test_send_with_a_key_does_not_swallow_the_live_send_with_the_same_key(
    api: Api, memory_provider: type[MemoryProvider]
) -> None:
    status, test, replayed = await send_keyed(api, TEST_KEY, "order-7")
    assert (status, replayed, test["mode"]) == (202, False, "test")

    status, live, replayed = await send_keyed(api, LIVE_KEY, "order-7")
    assert (status, replayed, live["mode"]) == (202, False, "live")
    assert live["notification_id"] != test["notification_id"]

    await api.idle()
    assert [message.notification_id for message in memory_provider.sent] == [live["notification_id"]]  # the test one went to the sandbox

    # Within each mode the key still deduplicates.
    status, again, replayed = await send_keyed(api, LIVE_KEY, "order-7")
    assert (status, replayed, again) == (202, True, live)
    status, again, replayed = await send_keyed(api, TEST_KEY, "order-7")
    assert (status, replayed, again) == (202, True, test)
