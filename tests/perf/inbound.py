"""Provider receipts acknowledged and reconciled per second (step 11 of ``make bench``).

The gateway sends WhatsApp templates through the ``whatsapp_cloud`` plugin to a stand-in Graph
API (tests.perf.graph), so every delivery is ``sent`` with a ``wamid``. Then wrk posts a
``delivered`` status callback per message, each signed with the app secret as Meta signs them
(X-Hub-Signature-256 over the raw body), as fast as the gateway acknowledges them. Two rates:
acknowledged (200s per second over the wrk run; a callback beyond the last message repeats an
earlier one, as a vendor's retry would) and reconciled (distinct deliveries that reached
``delivered``, from the first callback until the last was applied).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.perf import graph
from tests.perf.dispatch import accept_in_bulk, bulk_sizes, wait_for_status
from tests.perf.load import HEADERS, wrk_path
from tests.perf.servers import Server, _editing, graph_server, query_rows, tidings_server

MESSAGES = 15_000
CONNECTIONS = 50
SECONDS = 5
APP_SECRET = "bench-app-secret"
TIMEOUT = 120.0

_LUA = r"""
local path = %(path)s
local requests = {}
local next_one = 0
function init(args)
  for line in io.lines(%(file)s) do
    local signature, body = line:match("^([^\t]+)\t(.*)$")
    table.insert(requests, wrk.format("POST", path, {["Content-Type"] = "application/json", ["X-Hub-Signature-256"] = signature}, body))
  end
  next_one = (wrk.thread:get("offset") or 0)
end
function request()
  next_one = next_one %% #requests + 1
  return requests[next_one]
end
local threads = {}
function setup(thread) thread:set("offset", #threads * 7919); table.insert(threads, thread) end
statuses = {}
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests_)
  local merged = {}
  for _, t in ipairs(threads) do
    for code, n in pairs(t:get("statuses")) do merged[code] = (merged[code] or 0) + n end
  end
  local parts = {}
  for code, n in pairs(merged) do table.insert(parts, string.format('"%%d": %%d', code, n)) end
  io.write(string.format('WRKJSON {"duration_us": %%d, "p99_us": %%d, "errors": %%d, "statuses": {%%s}}\n',
    summary.duration, latency:percentile(99), summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    table.concat(parts, ", ")))
end
"""


@dataclass
class InboundRun:
    messages: int = 0
    sent: int = 0
    acknowledged: int = 0
    refused: int = 0
    ack_rate: float = math.nan
    ack_p99_ms: float = math.nan
    delivered: int = 0
    reconcile_rate: float = math.nan
    cpu_per_callback_us: float = math.nan  # the server's CPU time (all threads) over the wrk run, per callback answered

    def describe(self) -> str:
        return (f"{self.sent:,}/{self.messages:,} sent; {self.acknowledged:,} callbacks acknowledged at {self.ack_rate:,.0f}/s "
                f"(p99 {self.ack_p99_ms:.1f} ms, {self.refused} refused); {self.delivered:,} delivered, "
                f"reconciled at {self.reconcile_rate:,.0f}/s; server CPU {self.cpu_per_callback_us:,.0f} us per callback")


def with_whatsapp(graph_url: str) -> Callable[[Path], None]:
    def edit(policy_dir: Path) -> None:
        with _editing(policy_dir / "providers.yaml") as doc:
            doc["providers"]["wa"] = {
                "plugin": "whatsapp_cloud",
                "config": {
                    "base_url": graph_url, "phone_number_id": "106540352242922",
                    "access_token": {"$env": "BENCH_GRAPH_TOKEN"}, "app_secret": {"$env": "BENCH_APP_SECRET"},
                },
            }
            doc["channels"]["whatsapp"] = {"providers": ["wa"]}

    return edit


def measure_inbound() -> InboundRun:
    run = InboundRun(messages=MESSAGES)
    env = {"TIDINGS_POLICY_RELOAD": "false", "BENCH_GRAPH_TOKEN": graph.TOKEN, "BENCH_APP_SECRET": APP_SECRET}
    with graph_server() as peer, tidings_server(env, live_key=True, edit=with_whatsapp(peer.base_url)) as server:
        assert server.live_key is not None
        headers = HEADERS | {"X-API-Key": server.live_key}
        bodies = [
            {"channels": ["whatsapp"], "template_id": "otp", "data": {"code": "123456", "product": "Acme"},
             "recipients": [{"phone": f"+1415{n:07d}"} for n in range(start, start + rows)]}
            for start, rows in zip(range(0, MESSAGES, 10_000), bulk_sizes(MESSAGES), strict=True)
        ]
        accepted, _ = accept_in_bulk(server, bodies, headers)
        run.sent = wait_for_status(server, "sent", accepted, time.perf_counter() + TIMEOUT)
        wamids = [row[0] for row in query_rows(server.database, "SELECT provider_message_id FROM deliveries WHERE status = 'sent'")]
        started, cpu = time.perf_counter(), server.cpu_seconds()
        _post_callbacks(server, wamids, run)
        answered = run.acknowledged + run.refused
        run.cpu_per_callback_us = (server.cpu_seconds() - cpu) / answered * 1e6 if answered else math.nan
        # Callbacks go out in order (wrk cycles through the list), so the first `acknowledged` messages got one.
        run.delivered = wait_for_status(server, "delivered", min(run.acknowledged, len(wamids)), started + TIMEOUT)
        last_applied = query_rows(server.database, "SELECT MAX(updated_at) - MIN(updated_at) FROM deliveries WHERE status = 'delivered'")
        span = last_applied[0][0] if last_applied and last_applied[0][0] else math.nan
        run.reconcile_rate = run.delivered / span if span and span > 0 else math.nan
    return run


def _post_callbacks(server: Server, wamids: list[str], run: InboundRun) -> None:
    with tempfile.TemporaryDirectory(prefix="tidings-perf-inbound-") as tmp:
        lines = []
        now = int(time.time())
        for wamid in wamids:
            item = {"id": wamid, "status": "delivered", "timestamp": str(now), "recipient_id": "14155550100"}
            value = {"messaging_product": "whatsapp", "metadata": {"phone_number_id": "106540352242922"}, "statuses": [item]}
            body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"value": value, "field": "messages"}]}]},
                              separators=(",", ":"))
            signature = "sha256=" + hmac.new(APP_SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
            lines.append(f"{signature}\t{body}")
        callbacks = Path(tmp) / "callbacks.tsv"
        callbacks.write_text("\n".join(lines) + "\n")
        script = Path(tmp) / "callbacks.lua"
        script.write_text(_LUA % {"path": json.dumps("/api/v1/webhooks/wa"), "file": json.dumps(str(callbacks))})
        cmd = [wrk_path() or "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--timeout", "5s", "-s", str(script), server.base_url]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SECONDS + 60, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    data = json.loads(line[len("WRKJSON "):])
    statuses = {int(k): v for k, v in data["statuses"].items()}
    run.acknowledged = statuses.get(200, 0)
    run.refused = sum(n for code, n in statuses.items() if code != 200) + data["errors"]
    run.ack_rate = run.acknowledged / (data["duration_us"] / 1e6)
    run.ack_p99_ms = data["p99_us"] / 1000


if __name__ == "__main__":
    print(measure_inbound().describe())
