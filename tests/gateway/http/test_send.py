from __future__ import annotations

from conftest import LIVE_KEY, TEST_KEY, Api, MemoryProvider, sms_body

from gateway import Sender


async def test_send_answers_202_after_persisting_and_the_message_is_delivered(api: Api, memory_provider: type[MemoryProvider]) -> None:
    status, body = await api.send(sms_body())
    assert status == 202
    assert body["notification_id"].startswith("ntf_")
    assert body["status"] == "queued"
    assert [d["channel"] for d in body["deliveries"]] == ["sms"]

    done = await api.wait_for(body["notification_id"], lambda n: n["status"] == "sent")
    delivery = done["deliveries"][0]
    assert delivery["provider"] == "memory"
    assert delivery["content"] == {"body": "Your code is 123456"}
    assert [a["outcome"] for a in delivery["attempts"]] == ["sent"]
    # The claim is no line of its own: the attempt records it.
    assert [(e["action"], e["to_status"]) for e in done["audit"]] == [("accepted", "queued"), ("sent", "sent")]
    assert memory_provider.sent[0].to == "+14155550100"
    assert memory_provider.sent[0].idempotency_key == delivery["delivery_id"]


async def test_test_key_goes_to_the_sandbox_which_reports_sent_then_delivered(api: Api, memory_provider: type[MemoryProvider]) -> None:
    status, body = await api.send(sms_body(), key=TEST_KEY)
    assert status == 202
    assert body["mode"] == "test"
    done = await api.wait_for(body["notification_id"], lambda n: n["status"] == "delivered", key=TEST_KEY)
    assert done["deliveries"][0]["provider"] == "sandbox"
    assert [e["to_status"] for e in done["audit"] if e["to_status"]] == ["queued", "sent", "delivered"]
    assert memory_provider.sent == []


async def test_bearer_authorization_is_accepted_like_x_api_key(api: Api) -> None:
    response = await api.client.post(
        "/api/v1/notifications/send", json=sms_body(), headers={"Authorization": f"Bearer {LIVE_KEY}"}
    )
    assert response.status == 202


async def test_transient_failure_is_retried_on_backoff_then_sent(api: Api, memory_provider: type[MemoryProvider], clock) -> None:
    memory_provider.script["+14155550111"] = ["transient"]
    _, body = await api.send(sms_body("+14155550111"))
    retrying = await api.wait_for(body["notification_id"], lambda n: n["deliveries"][0]["attempt_count"] == 1 and n["deliveries"][0]["last_error"])
    assert retrying["status"] == "sending"
    assert retrying["deliveries"][0]["attempts"][0]["outcome"] == "transient"

    clock.advance(3600)
    api.wake()
    done = await api.wait_for(body["notification_id"], lambda n: n["status"] == "sent")
    assert [a["outcome"] for a in done["deliveries"][0]["attempts"]] == ["transient", "sent"]


async def test_permanent_failure_fails_the_delivery_without_retry(api: Api, memory_provider: type[MemoryProvider]) -> None:
    memory_provider.script["+14155550122"] = ["permanent"]
    _, body = await api.send(sms_body("+14155550122"))
    done = await api.wait_for(body["notification_id"], lambda n: n["status"] == "failed")
    delivery = done["deliveries"][0]
    assert (delivery["last_error"], delivery["dead_reason"]) == ("recipient rejected", "permanent")
    assert [a["outcome"] for a in delivery["attempts"]] == ["permanent"]
    assert len(memory_provider.sent) == 1


async def test_retries_stop_after_max_attempts(api: Api, memory_provider: type[MemoryProvider], clock) -> None:
    memory_provider.script["+14155550133"] = ["transient", "crash", "transient"]
    _, body = await api.send(sms_body("+14155550133"))
    nid = body["notification_id"]
    await api.idle()
    for attempts in (1, 2):
        waiting = await api.notification(nid)
        assert (waiting["status"], waiting["deliveries"][0]["attempt_count"]) == ("sending", attempts)
        clock.advance(7200)  # each attempt is recorded before the clock moves, so its retry is due by then
        await api.idle()
    done = await api.notification(nid)
    assert done["status"] == "failed"
    delivery = done["deliveries"][0]
    assert delivery["dead_reason"] == "retries_exhausted"
    assert delivery["last_error"].startswith("gave up after 3 attempts")
    assert "KeyError" in delivery["attempts"][1]["error"]


async def test_another_tenants_notification_is_404(api: Api) -> None:
    from conftest import OTHER_KEY

    _, body = await api.send(sms_body())
    status, error = await api.get(f"/api/v1/notifications/{body['notification_id']}", key=OTHER_KEY)
    assert status == 404
    assert error["error"]["code"] == "notification_not_found"


async def test_the_tenants_sender_identity_for_a_channel_reaches_the_provider(api: Api, memory_provider: type[MemoryProvider]) -> None:
    body = {
        "recipient": {"email": "ada@example.com", "phone": "+14155550100"},
        "notification": {"channels": ["email", "sms"], "template_id": "otp", "data": {"code": "1"}},
    }
    _, accepted = await api.send(body)
    await api.wait_for(accepted["notification_id"], lambda n: n["status"] == "sent")
    senders = {message.channel: message.sender for message in memory_provider.sent}
    assert senders == {"email": Sender("no-reply@acme.example", "ACME", "help@acme.example"), "sms": None}
