import subprocess, sys, time
from tests.perf.servers import tidings_server, receiver_server, post_json, count_rows, BULK_PATH
from tests.perf.load import HEADERS
with receiver_server() as receiver, tidings_server({"TIDINGS_LOG_LEVEL": "WARNING"}, live_key=True) as s:
    hook = receiver.base_url + "/hook/prof"
    headers = dict(HEADERS, **{"X-API-Key": s.live_key})
    body = {"channels": ["webhook"], "body": "bench delivery", "recipients": [{"url": hook} for _ in range(10000)]}
    t0 = time.perf_counter()
    status, _ = post_json(s.base_url + BULK_PATH, body, headers=headers)
    while count_rows(s.database, "select count(*) from deliveries where status in ('queued','sending')") > 0 and time.perf_counter() - t0 < 60:
        time.sleep(0.05)
    print("rate", round(10000 / (time.perf_counter() - t0)))
    import shutil; shutil.copy(s.log_path, "/work/prof/claims.log")
