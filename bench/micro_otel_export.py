"""Micro-benchmark: the CPU a run's span and a log record cost the tracer's OTLP export.

    python bench/micro_otel_export.py [--n 20000]

In one process, against a local OTLP/HTTP endpoint (a process of its
own) that drops what it gets: ``start_run`` + ``finish_run`` for N runs (one in ten
failed), then N ``emit_log`` records, each followed by a flush. Prints the CPU per item on
the calling thread (what a handler pays) and for the whole process (the calling thread plus
the export thread's encoding and sending).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SINK = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


def _requests(otel: object, signal: str) -> str:
    runs = getattr(otel, "runs", None)
    exporter = getattr(runs, signal, None)
    return f"{exporter.requests} requests so far" if exporter is not None else "SDK"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args()
    n = args.n
    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    try:
        port = int(sink.stdout.readline())
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
        from google.protobuf.internal import api_implementation

        from iii_broker.modules.observability.traces.otel import Otel
        from iii_broker.observe import Run
        from iii_broker.tracing import SpanContext
        otel = Otel("otlp", service_name="bench", kind="worker", process_id="p")
        parent = SpanContext.new_root()
        error = ValueError("boom")

        def runs(count: int) -> list[Run]:
            out = []
            for i in range(count):
                r = Run("bench::noop", f"inv-{i}", 1, parent.child(), parent.span_id,
                        kind="job", queue="bench", worker_id="w1")
                if i % 10 == 0:
                    r.error = error
                out.append(r)
            return out

        warm = runs(500)
        for r in warm:
            otel.start_run(r)
            otel.finish_run(r)
        otel.flush(10)
        todo = runs(n)
        t0, c0 = time.thread_time(), time.process_time()
        for r in todo:
            otel.start_run(r)
            otel.finish_run(r)
        t1 = time.thread_time()
        otel.flush(30)
        c1 = time.process_time()
        print(f"protobuf: {api_implementation.Type()}")
        print(f"span: {(t1 - t0) / n * 1e6:6.1f} us on the handler's thread, "
              f"{(c1 - c0) / n * 1e6:6.1f} us in all ({_requests(otel, 'spans')})")
        record = {"timestamp_unix_nano": time.time_ns(), "severity_number": 9,
                  "severity_text": "INFO", "body": "handled one job", "attributes": {},
                  "trace_id": parent.trace_id, "span_id": parent.span_id,
                  "service_name": "bench", "function_id": "bench::noop",
                  "invocation_id": "inv-1", "quiet": False}
        for _ in range(500):
            otel.emit_log(dict(record))
        otel.flush(10)
        recs = [dict(record, invocation_id=f"inv-{i}") for i in range(n)]
        t0, c0 = time.thread_time(), time.process_time()
        for rec in recs:
            otel.emit_log(rec)
        t1 = time.thread_time()
        otel.flush(30)
        c1 = time.process_time()
        print(f"log record: {(t1 - t0) / n * 1e6:6.1f} us on the caller's thread, "
              f"{(c1 - c0) / n * 1e6:6.1f} us in all ({_requests(otel, 'logs')})")
        otel.shutdown()
    finally:
        sink.kill()
        sink.wait()


if __name__ == "__main__":
    main()
