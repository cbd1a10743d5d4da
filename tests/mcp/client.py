"""Drive Charter's MCP server with the official Python MCP SDK (a client
nobody here wrote). One scenario per invocation; prints one JSON document
with what the client saw (its last line). Used by tests/all/mcp.rs.

    python client.py SCENARIO CHARTER_BIN CONFIG AGENT [ARG...]

Over stdio (`charter mcp`) unless CHARTER_MCP_URL is set: then over
streamable HTTP to that URL (`charter up`'s /mcp), the agent's token from
CHARTER_TOKEN as `Authorization: Bearer`. Interactive scenarios print
`WAIT <json>` lines and read one line of stdin before going on (the test
acts as a person meanwhile, the session staying open).
"""

import asyncio
import contextlib
import json
import os
import sys

import anyio
import httpx2
import mcp_types
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client


def seen(result):
    """What a tool result said: error flag, text, structured content."""
    text = " ".join(c.text for c in result.content if getattr(c, "type", "") == "text")
    return {"error": bool(result.is_error), "text": text, "structured": result.structured_content}


async def call(session, name, args):
    try:
        return seen(await session.call_tool(name, args))
    except Exception as e:  # a protocol error, or a result the client refused
        return {"error": True, "text": f"client: {e}", "structured": None}


def listing(tools):
    return {
        t.name: {
            "description": t.description,
            "input": t.input_schema,
            "output": t.output_schema,
            "annotations": t.annotations.model_dump(by_alias=True, exclude_none=True)
            if t.annotations
            else None,
        }
        for t in tools
    }


async def wait_for_person(what):
    """Say what the test needs, then wait for its one line."""
    print("WAIT " + json.dumps(what), flush=True)
    await anyio.to_thread.run_sync(sys.stdin.readline)


@contextlib.asynccontextmanager
async def transport(charter, config, agent):
    url = os.environ.get("CHARTER_MCP_URL")
    if url:
        headers = {}
        if "CHARTER_TOKEN" in os.environ:
            headers["Authorization"] = "Bearer " + os.environ["CHARTER_TOKEN"]
        async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
            async with streamable_http_client(url, http_client=http) as (read, write):
                yield read, write
        return
    # The SDK passes the server only a safe part of its environment: the
    # agent's token goes explicitly, as a desktop client's "env" does.
    env = {"CHARTER_TOKEN": os.environ["CHARTER_TOKEN"]} if "CHARTER_TOKEN" in os.environ else {}
    params = StdioServerParameters(
        command=charter, args=["mcp", "--config", config, "--agent", agent], env=env
    )
    async with stdio_client(params) as (read, write):
        yield read, write


async def main():
    scenario, charter, config, agent, *rest = sys.argv[1:]
    out = {}
    changed = anyio.Event()

    async def on_message(message):
        method = getattr(getattr(message, "root", message), "method", None)
        if isinstance(message, mcp_types.ToolListChangedNotification) or method == "notifications/tools/list_changed":
            changed.set()

    async with transport(charter, config, agent) as (read, write):
        async with ClientSession(read, write, message_handler=on_message) as session:
            await session.initialize()
            tools = (await session.list_tools()).tools
            out["tools"] = listing(tools)
            if scenario == "list":
                pass
            elif scenario == "calls":
                out["allowed"] = await call(session, "orders.lookup-order", {"order-id": "A-1001"})
                out["scalars"] = await call(session, "orders.echo-scalars", {"values": {
                    "a": 255, "b": 65535, "c": 4294967295, "d": 9223372036854775807,
                    "e": -128, "f": -32768, "g": -2147483648, "h": -9223372036854775808,
                    "x": 1.5, "y": -2.25, "flag": True, "text": "ünï"}})
                out["denied"] = await call(session, "orders.cancel-order",
                                           {"order-id": "LOCKED-7", "reason": "r", "refund-cents": 100})
                out["proposed"] = await call(session, "orders.cancel-order",
                                             {"order-id": "A-2002", "reason": "damaged", "refund-cents": 20000,
                                              "_reason": "the customer sent photos of the damage"})
                out["to-reject"] = await call(session, "orders.cancel-order",
                                              {"order-id": "A-3003", "reason": "changed mind", "refund-cents": 30000})
                # Hostile: arguments that violate the schema, and a huge one.
                out["wrong-kind"] = await call(session, "orders.lookup-order", {"order-id": 5})
                out["out-of-range"] = await call(session, "orders.find-orders",
                                                 {"query": {"tag": "recent"}, "limit": 256})
                out["extra"] = await call(session, "orders.lookup-order",
                                          {"order-id": "A-1", "admin": True})
                out["huge"] = await call(session, "orders.lookup-order", {"order-id": "x" * (2 << 20)})
            elif scenario == "status":
                for p in rest:
                    out[p] = await call(session, "charter_proposal_status", {"proposal": p})
            elif scenario == "open-session":
                # A proposal decided by a person while this session stays open;
                # then the real result, read in the same session.
                a = await call(session, "orders.cancel-order",
                               {"order-id": "H-1", "reason": "damaged", "refund-cents": 20000,
                                "_reason": "photos of the damage"})
                r = await call(session, "orders.cancel-order",
                               {"order-id": "H-2", "reason": "changed mind", "refund-cents": 30000})
                out["proposed"], out["to-reject"] = a, r
                await wait_for_person({"approve": a, "reject": r})
                ids = [x["structured"]["pending_approval"]["proposal"] for x in (a, r)]
                out["status"] = {p: await call(session, "charter_proposal_status", {"proposal": p})
                                 for p in ids}
            elif scenario == "list-changed":
                await wait_for_person({"listed": sorted(out["tools"])})
                with anyio.move_on_after(60):
                    await changed.wait()
                out["notified"] = changed.is_set()
                out["after"] = sorted(t.name for t in (await session.list_tools()).tools)
            elif scenario == "copilot":
                out["lookup"] = await call(session, "orders.lookup-order", {"order-id": "A-1001"})
                out["small-refund"] = await call(session, "refunds.issue-refund",
                                                 {"order-id": "A-1001", "amount-cents": 500,
                                                  "reason": "late delivery",
                                                  "_reason": "the parcel arrived a week late"})
                out["cancel"] = await call(session, "orders.cancel-order",
                                           {"order-id": "A-1001", "reason": "r", "refund-cents": 1})
            elif scenario == "hostile":
                out["ungranted"] = await call(session, "orders.lookup-order", {"order-id": "A-1001"})
                out["status-of-other"] = await call(session, "charter_proposal_status", {"proposal": rest[0]})
                out["flood"] = [await call(session, "refunds.issue-refund",
                                           {"order-id": f"F-{i}", "amount-cents": 1, "reason": "flood"})
                                for i in range(12)]
            else:
                raise SystemExit(f"unknown scenario {scenario}")
    print(json.dumps(out))


asyncio.run(main())
