"""The official Python SDK client against a gateway on the real node, through its Service.

usage: client.py URL TOKEN CA_FILE TOOL:JSON_ARGS...
prints JSON: {"tools": [...], "calls": {tool: {"error": bool, "text": str}}}
"""
import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def main(url: str, token: str, ca: str, calls: list[str]) -> None:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, verify=ca, timeout=30)
    out = {"calls": {}}
    async with Client(streamable_http_client(url, http_client=http), mode="legacy") as c:
        out["tools"] = sorted(t.name for t in (await c.list_tools()).tools)
        for call in calls:
            name, args = call.split(":", 1)
            try:
                r = await c.call_tool(name, json.loads(args))
                text = r.content[0].text if r.content else ""
                out["calls"][name] = {"error": bool(r.is_error), "text": text}
            except Exception as e:  # a JSON-RPC error from the gateway
                out["calls"][name] = {"error": True, "text": str(e)}
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]))
