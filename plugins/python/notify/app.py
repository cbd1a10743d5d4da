"""Notify in Python: the same step as plugins/rust/fx-notify.

Sends `input.subject` / `input.body` to `input.channel` (default `ops`) and
returns the delivery id as `sent`. `notify.send` is new in
`charter:host@0.2.0`; the build imports it from there and everything else
from 0.1.0 (sdk/wit/guest-wit.py).
"""
import charter
from wit_world.imports import log, notify


def run(input):
    channel = input.get("channel", "ops")
    subject = input.get("subject", "")
    body = input.get("body", "")
    if not all(isinstance(v, str) for v in (channel, subject, body)):
        raise charter.Fatal("input.channel, .subject and .body must be strings")
    # A host error (the channel did not take it) raises Err: retryable.
    sent = notify.send(channel, subject, body)
    log.write(log.Level.INFO, f"notified {channel}: {sent}")
    return {"sent": sent}


WitWorld = charter.step(run)
