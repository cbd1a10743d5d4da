#!/usr/bin/env python3
"""Local stand-ins for the IT-ops example's outside services, recording
every request they receive (one JSON object per line in DIR/records.jsonl).

Three listeners on free loopback ports (written to DIR/ports.json):

- services:     GET /<service>/healthz. `checkout` is down (503) until the
                orchestrator restarted it, then 200; `payments` is down
                whatever happens (its restart does not help).
- orchestrator: POST /v1/services/<service>/restart. The first request
                under each idempotency key answers 503 (busy), so the
                workflow's retry and backoff show; the retry, under the
                same key, restarts the service (202). A key seen restarting
                before answers 200 without restarting again.
- pager:        POST /oncall, the notify channel's webhook (Slack-shaped
                JSON): the on-call notification.

Also `standins.py post URL BODY_FILE TOKEN DELIVERY_ID`: deliver an alert
(prints the status and the answer), so the example needs no curl.
"""
import json
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LOCK = threading.Lock()
STATE = {"healthy": set(), "keys": {}}


def handler(kind, out):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def record(self, status, body):
            rec = {
                "listener": kind,
                "method": self.command,
                "path": self.path,
                "idempotency_key": self.headers.get("idempotency-key"),
                "body": body,
                "status": status,
            }
            with LOCK, out.open("a") as f:
                f.write(json.dumps(rec) + "\n")

        def answer(self, status, doc):
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            parts = self.path.strip("/").split("/")
            if kind == "services" and len(parts) == 2 and parts[1] == "healthz":
                with LOCK:
                    up = parts[0] in STATE["healthy"]
                status = 200 if up else 503
                self.record(status, None)
                return self.answer(status, {"service": parts[0], "up": up})
            self.record(404, None)
            self.answer(404, {"error": "not found"})

        def do_POST(self):
            n = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(n).decode("utf-8", "replace")
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            parts = self.path.strip("/").split("/")
            if kind == "orchestrator" and len(parts) == 4 and parts[3] == "restart":
                service = parts[2]
                key = self.headers.get("idempotency-key") or ""
                with LOCK:
                    seen = STATE["keys"].get(key)
                    if seen is None:
                        STATE["keys"][key] = "busy"
                        status = 503
                    elif seen == "busy":
                        STATE["keys"][key] = "restarted"
                        if service == "checkout":
                            STATE["healthy"].add(service)
                        status = 202
                    else:
                        status = 200
                self.record(status, body)
                return self.answer(status, {"service": service, "restart": status != 503})
            if kind == "pager" and parts == ["oncall"]:
                self.record(200, body)
                return self.answer(200, {"ok": True})
            self.record(404, body)
            self.answer(404, {"error": "not found"})

    return H


def serve(work):
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    out = work / "records.jsonl"
    out.write_text("")
    ports = {}
    for kind in ("services", "orchestrator", "pager"):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), handler(kind, out))
        ports[kind] = srv.server_address[1]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    tmp = work / "ports.json.tmp"
    tmp.write_text(json.dumps(ports))
    tmp.rename(work / "ports.json")
    threading.Event().wait()


def post(url, body_file, token, delivery):
    data = Path(body_file).read_bytes()
    req = urllib.request.Request(url, data=data, method="POST")
    req.add_header("content-type", "application/json")
    req.add_header("authorization", f"Bearer {token}")
    req.add_header("x-delivery-id", delivery)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            print(r.status, r.read().decode())
    except urllib.error.HTTPError as e:
        print(e.code, e.read().decode())


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "post":
        post(*sys.argv[2:])
    elif len(sys.argv) == 2:
        serve(sys.argv[1])
    else:
        sys.exit(__doc__)
