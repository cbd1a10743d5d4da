"""Hostile fixture in Python, one mode per input: {"mode": ...}

loop: spin forever; bomb: allocate until memory runs out; flood: call
log.write without end; fatal / retryable: fail the step so; print: write to
stdout and stderr, then succeed.
"""
import sys

import charter
from wit_world.imports import log


def run(input):
    mode = input.get("mode")
    if mode == "loop":
        n = 0
        while True:
            n += 1
    if mode == "bomb":
        hoard = []
        while True:
            hoard.append(bytearray(1 << 20))
    if mode == "flood":
        i = 0
        while True:
            log.write(log.Level.TRACE, f"flood {i}")
            i += 1
    if mode == "fatal":
        raise charter.Fatal("fatal on purpose")
    if mode == "retryable":
        raise charter.Retryable("retryable on purpose")
    if mode == "print":
        print("hello from stdout")
        print("hello from stderr", file=sys.stderr)
        return {"printed": True}
    raise charter.Fatal(f"unknown mode {mode!r}")


WitWorld = charter.step(run)
