#!/usr/bin/env python3
"""Local stand-ins for the service desk's outside services, recording what
they receive (one JSON line per request in RECORD):

- a ticketing API (Zendesk-like): POST /api/v2/tickets with JSON
  {"ticket": {...}} -> 201 {"ticket": {"id": N, ...}};
- an SMS API shaped like Twilio's Messages endpoint: POST
  /2010-04-01/Accounts/{AccountSid}/Messages.json, form-encoded To, From,
  Body, HTTP Basic auth (AccountSid:AuthToken) -> 201 {"sid": "SM...",
  "status": "queued", ...}; a wrong account or token -> 401.

Usage: standins.py TICKETING_PORT SMS_PORT RECORD ACCOUNT_SID AUTH_TOKEN
Listens on 127.0.0.1 only; stops on SIGTERM.
"""
import base64
import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ticket_port, sms_port, record, account, token = sys.argv[1:6]
lock = threading.Lock()
counter = {"ticket": 1000, "sms": 0}


def log(entry):
    with lock, open(record, "a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")


class Base(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, status, doc):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(min(n, 1 << 20)).decode("utf-8", "replace")


class Ticketing(Base):
    def do_POST(self):
        raw = self.body()
        if self.path != "/api/v2/tickets":
            return self.answer(404, {"error": "not found"})
        try:
            ticket = json.loads(raw)["ticket"]
        except (ValueError, KeyError, TypeError):
            return self.answer(422, {"error": "body must be {\"ticket\": {...}}"})
        with lock:
            counter["ticket"] += 1
            tid = counter["ticket"]
        log({"service": "ticketing", "path": self.path, "ticket": ticket, "id": tid})
        self.answer(201, {"ticket": dict(ticket, id=tid, status="new")})


class Sms(Base):
    def do_POST(self):
        raw = self.body()
        want = f"/2010-04-01/Accounts/{account}/Messages.json"
        auth = self.headers.get("authorization", "")
        expected = "Basic " + base64.b64encode(f"{account}:{token}".encode()).decode()
        form = urllib.parse.parse_qs(raw)
        entry = {
            "service": "sms",
            "path": self.path,
            "content_type": self.headers.get("content-type"),
            "authorized": auth == expected,
            "form": {k: v[0] for k, v in form.items()},
        }
        log(entry)
        if self.path != want:
            return self.answer(404, {"code": 20404, "message": "not found"})
        if auth != expected:
            return self.answer(401, {"code": 20003, "message": "Authenticate"})
        if not all(k in form for k in ("To", "From", "Body")):
            return self.answer(400, {"code": 21604, "message": "To, From and Body are required"})
        with lock:
            counter["sms"] += 1
            sid = "SM%032x" % counter["sms"]
        self.answer(201, {"sid": sid, "status": "queued", "to": form["To"][0],
                          "from": form["From"][0], "body": form["Body"][0],
                          "account_sid": account})


servers = [ThreadingHTTPServer(("127.0.0.1", int(ticket_port)), Ticketing),
           ThreadingHTTPServer(("127.0.0.1", int(sms_port)), Sms)]
for s in servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("stand-ins ready", flush=True)
servers[0].serve_forever()
