import subprocess, sys, time, orjson
from tests.perf.servers import tidings_server, receiver_server, post_json, count_rows, BULK_PATH
from tests.perf.load import HEADERS
out = sys.argv[1]
with receiver_server() as receiver, tidings_server(live_key=True) as s:
    hook = receiver.base_url + "/hook/prof"
    headers = dict(HEADERS, **{"X-API-Key": s.live_key})
    body = {"channels": ["webhook"], "body": "bench delivery", "recipients": [{"url": hook} for _ in range(10000)]}
    t0 = time.perf_counter()
    spy = subprocess.Popen([".venv/bin/py-spy", "record", "--pid", str(s.proc.pid), "--duration", "6", "--rate", "200", "--threads", "--format", "raw", "--output", out, "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu0 = s.cpu_seconds()
    status, _ = post_json(s.base_url + BULK_PATH, body, headers=headers)
    t1 = time.perf_counter()
    while count_rows(s.database, "select count(*) from deliveries where status in ('queued','sending')") > 0 and time.perf_counter() - t0 < 60:
        time.sleep(0.05)
    t2 = time.perf_counter()
    print("status", status, "accept", round(t1 - t0, 2), "all sent after", round(t2 - t0, 2), "rate", round(10000 / (t2 - t0)), "cpu", s.cpu_seconds() - cpu0)
    spy.wait()
