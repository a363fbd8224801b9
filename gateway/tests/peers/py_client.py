"""An official Python SDK client that exercises a server through the gateway and prints what it saw.

usage: py_client.py URL MODE [TOKEN]    (MODE: legacy | 2026-07-28)
"""
import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def main(url: str, mode: str, token: str | None) -> None:
    out: dict = {"mode": mode}
    progress: list[float] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append(p)

    headers = {"Authorization": f"Bearer {token}"} if token else None
    http = httpx2.AsyncClient(headers=headers, timeout=30) if headers else None
    transport = streamable_http_client(url, http_client=http) if http else url
    async with Client(transport, mode=mode) as c:
        tools = await c.list_tools()
        names = [t.name for t in tools.tools]
        out["tools"] = names
        echo = "echo" if "echo" in names else names[0]
        r = await c.call_tool(echo, {"message": "hello through palisade"})
        out["echo"] = r.content[0].text if r.content else None
        out["echo_error"] = bool(r.is_error)
        slow = next((n for n in names if n in ("trigger-long-running-operation", "slow_count")), None)
        if slow:
            args = {"duration": 1, "steps": 4} if slow.startswith("trigger") else {"n": 4}
            await c.call_tool(slow, args, progress_callback=on_progress)
        out["progress"] = progress
        res = await c.list_resources()
        out["resources"] = [str(x.uri) for x in res.resources]
        if res.resources:
            rr = await c.read_resource(res.resources[0].uri)
            first = rr.contents[0]
            out["read"] = getattr(first, "text", None) or getattr(first, "blob", "")[:16]
        prompts = await c.list_prompts()
        out["prompts"] = [p.name for p in prompts.prompts]
        if prompts.prompts:
            p = prompts.prompts[0]
            args = {a.name: "palisade" for a in (p.arguments or []) if a.required}
            gp = await c.get_prompt(p.name, args)
            out["prompt_messages"] = len(gp.messages)
        try:
            u = await c.call_tool("definitely-not-a-tool", {})
            out["unknown_tool"] = ("error: " + (u.content[0].text if u.content else "")) if u.is_error else "accepted"
        except Exception as e:  # the SDK raises on JSON-RPC errors
            out["unknown_tool"] = "error: " + str(e)[:120]
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
