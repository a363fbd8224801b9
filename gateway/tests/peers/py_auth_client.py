"""The official Python SDK client with a bearer token: what a principal sees and may call.

usage: py_auth_client.py URL TOKEN MODE [--ca FILE] [TOOL:JSON_ARGS ...]
  MODE: legacy | 2026-07-28; --ca: the CA that issued the server's certificate; the calls
  default to echo, add and show_auth
prints JSON: {"tools": [...], "calls": {name: {"error": bool, "text": str}}}
"""
import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

DEFAULT_CALLS = [("echo", {"message": "hi"}), ("add", {"a": 1, "b": 2}), ("show_auth", {})]


async def main(url: str, token: str, mode: str, ca: str | None, calls: list) -> None:
    verify = ca if ca else True
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, verify=verify, timeout=30)
    out = {"calls": {}}
    async with Client(streamable_http_client(url, http_client=http), mode=mode) as c:
        out["tools"] = sorted(t.name for t in (await c.list_tools()).tools)
        for name, args in calls:
            try:
                r = await c.call_tool(name, args)
                text = r.content[0].text if r.content else ""
                out["calls"][name] = {"error": bool(r.is_error), "text": text}
            except Exception as e:  # a JSON-RPC error from the gateway
                out["calls"][name] = {"error": True, "text": str(e)}
    print(json.dumps(out))


if __name__ == "__main__":
    rest = sys.argv[4:]
    ca = None
    if rest[:1] == ["--ca"]:
        ca, rest = rest[1], rest[2:]
    calls = [(c.split(":", 1)[0], json.loads(c.split(":", 1)[1])) for c in rest] or DEFAULT_CALLS
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], ca, calls))
