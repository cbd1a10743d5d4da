#!/usr/bin/env python3
"""support-copilot's MCP session, scripted: `charter mcp` over stdio (one
JSON-RPC message per line, as the protocol's stdio transport has it), no
MCP library needed. Prints each tool call and what came back, and writes
what the session saw to OUT (JSON): the tools listed and each call's result.

    CHARTER_TOKEN=cht_support-copilot_… copilot_session.py CHARTER CONFIG OUT
"""
import json
import subprocess
import sys

CALLS = [
    ("lookup", "orders.lookup-order", {"order-id": "A-1001"}),
    ("refund", "refunds.issue-refund",
     # The reason is the agent's free text, here shaped to smuggle a form
     # field: the connector escapes it, so the API reads one reason.
     {"order-id": "A-1001", "amount-cents": 4200, "reason": "late delivery&amount=990000",
      "_reason": "the parcel arrived nine days late; the customer asks for the shipping back"}),
    ("one-cent", "refunds.issue-refund",
     {"order-id": "A-1002", "amount-cents": 1, "reason": "rounding",
      "_reason": "a cent, surely nobody needs to look at that"}),
    ("test-order", "refunds.issue-refund",
     {"order-id": "TEST-9", "amount-cents": 100, "reason": "test"}),
    ("void-all", "refunds.void-all-refunds", {}),
]


def main():
    charter, config, out_path = sys.argv[1:4]
    proc = subprocess.Popen(
        [charter, "mcp", "--config", config, "--agent", "support-copilot"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    ids = iter(range(1, 1000))

    def send(msg):
        proc.stdin.write(json.dumps(msg) + "\n")
        proc.stdin.flush()

    def request(method, params):
        n = next(ids)
        send({"jsonrpc": "2.0", "id": n, "method": method, "params": params})
        while True:
            line = proc.stdout.readline()
            if not line:
                sys.exit(f"copilot_session: charter mcp ended before answering {method}")
            msg = json.loads(line)
            if msg.get("id") == n:
                if "error" in msg:
                    sys.exit(f"copilot_session: {method}: {msg['error']}")
                return msg["result"]
            # a notification (e.g. tools/list_changed): not ours

    request("initialize", {"protocolVersion": "2025-03-26", "capabilities": {},
                           "clientInfo": {"name": "refunds-run-sh", "version": "1"}})
    send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    tools = sorted(t["name"] for t in request("tools/list", {})["tools"])
    print("tools: " + ", ".join(tools))
    seen = {"tools": tools}
    for key, name, args in CALLS:
        r = request("tools/call", {"name": name, "arguments": args})
        text = " ".join(c.get("text", "") for c in r.get("content", []) if c.get("type") == "text")
        seen[key] = {"error": bool(r.get("isError")), "text": text,
                     "structured": r.get("structuredContent")}
        shown = {k: v for k, v in args.items() if k != "_reason"}
        print(f"{name} {json.dumps(shown)}\n  -> {'error: ' if r.get('isError') else ''}{text[:200]}")
    proc.stdin.close()
    proc.wait(timeout=30)
    with open(out_path, "w") as f:
        json.dump(seen, f, indent=1)


if __name__ == "__main__":
    main()
