#!/usr/bin/env python3
"""A local stand-in for the payments team's refund API, recording every
request it receives (one JSON object per line in DIR/records.jsonl); its
port is written to DIR/ports.json.

    POST /v1/refunds   form-encoded order, amount, currency, reason;
                       `Authorization: Bearer <key>` (the key it was started
                       with); `idempotency-key`. Answers 200 {"id": "re_…"},
                       the same refund again for a key it has seen; 401
                       without the key.

    standins.py DIR API_KEY
"""
import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LOCK = threading.Lock()
REFUNDS = {}


def handler(out, key):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status, doc, rec):
            rec["status"] = status
            with LOCK, out.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            rec = {"method": "GET", "path": self.path, "authorized": False, "form": None}
            self.answer(404, {"error": "not found"}, rec)

        def do_POST(self):
            n = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(min(n, 1 << 20)).decode("utf-8", "replace")
            form = {k: v[0] for k, v in urllib.parse.parse_qs(raw).items()}
            idem = self.headers.get("idempotency-key")
            rec = {
                "method": "POST",
                "path": self.path,
                "authorized": self.headers.get("authorization") == f"Bearer {key}",
                "idempotency_key": idem,
                "form": form,
            }
            if self.path != "/v1/refunds":
                return self.answer(404, {"error": "not found"}, rec)
            if not rec["authorized"]:
                return self.answer(401, {"error": "invalid API key"}, rec)
            with LOCK:
                refund = REFUNDS.get(idem)
                if refund is None:
                    refund = {
                        "id": f"re_{len(REFUNDS) + 1:04d}",
                        "order": form.get("order"),
                        "amount": int(form.get("amount", "0")),
                        "status": "succeeded",
                    }
                    if idem:
                        REFUNDS[idem] = refund
            self.answer(200, refund, rec)

    return H


def serve(work, key):
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    out = work / "records.jsonl"
    out.write_text("")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler(out, key))
    tmp = work / "ports.json.tmp"
    tmp.write_text(json.dumps({"payments": srv.server_address[1]}))
    tmp.rename(work / "ports.json")
    srv.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    serve(sys.argv[1], sys.argv[2])
