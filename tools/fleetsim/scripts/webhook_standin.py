#!/usr/bin/env python3
"""A local stand-in for a webhook receiver, for scripts/scale-run.sh: accepts POSTs on 127.0.0.1:PORT, answers
204, and appends one JSON line per request to OUT: the time it arrived (epoch seconds), the delivery id header
and the body's notification (event ids, kind, target). The run then joins these with alert_events to compute
the alert latency (sample time -> event written -> notification received). Bodies are capped at 1 MiB.

Usage: webhook_standin.py PORT OUT
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        arrived = time.time()
        try:
            length = int(self.headers.get("content-length", "0"))
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.send_response(413)
            self.end_headers()
            return
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        n = (body or {}).get("notification") or {}
        line = {
            "arrived": arrived,
            "delivery": self.headers.get("x-octoisp-delivery"),
            "kind": n.get("kind"),
            "event_ids": n.get("event_ids") or [],
            "target": n.get("target"),
            "subject": (body or {}).get("subject"),
        }
        with LOCK, open(self.server.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: webhook_standin.py PORT OUT")
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.out = sys.argv[2]
    server.serve_forever()


if __name__ == "__main__":
    main()
