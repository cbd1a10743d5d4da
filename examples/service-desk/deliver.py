#!/usr/bin/env python3
"""Deliver a post-call payload to `charter up` as a voice platform does
after a call: POST the file's bytes to URL with the HMAC-SHA256 of the body
keyed by KEY in `X-Hub-Signature-256: sha256=<hex>` and the call id (the
payload's call.call_id, or `-` for none) in `X-Retell-Call-Id`. Prints the
HTTP status and the answer's body on one line.

    deliver.py URL FILE KEY
"""
import hashlib
import hmac
import json
import sys
import urllib.error
import urllib.request

url, path, key = sys.argv[1:4]
body = open(path, "rb").read()
try:
    call_id = json.loads(body)["call"]["call_id"]
except (ValueError, KeyError, TypeError):
    call_id = "-"
req = urllib.request.Request(url, data=body, method="POST")
req.add_header("content-type", "application/json")
req.add_header("x-hub-signature-256", "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest())
req.add_header("x-retell-call-id", str(call_id))
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
