"""Python SDK scenarios beyond the common flow.

usage: py_special.py fs URL ROOT         filesystem server: write, read back, refuse outside ROOT
       py_special.py sse URL             legacy HTTP+SSE transport client (2024-11-05 era clients)
"""
import asyncio
import json
import sys

from mcp import Client, ClientSession
from mcp.client.sse import sse_client


async def fs(url: str, root: str) -> None:
    out = {}
    async with Client(url, mode="legacy") as c:
        out["tools"] = sorted(t.name for t in (await c.list_tools()).tools)
        w = await c.call_tool("write_file", {"path": f"{root}/palisade.txt", "content": "written through the gateway"})
        out["write_error"] = bool(w.is_error)
        r = await c.call_tool("read_text_file", {"path": f"{root}/palisade.txt"})
        out["read"] = r.content[0].text
        outside = await c.call_tool("read_text_file", {"path": "/etc/hostname"})
        out["outside_error"] = bool(outside.is_error)
    print(json.dumps(out))


async def sse(url: str) -> None:
    out = {}
    async with sse_client(url) as (read, write):
        async with ClientSession(read, write) as s:
            init = await s.initialize()
            out["protocolVersion"] = init.protocol_version
            out["tools"] = [t.name for t in (await s.list_tools()).tools]
            r = await s.call_tool("echo", {"message": "hello over sse"})
            out["echo"] = r.content[0].text
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "fs":
        asyncio.run(fs(sys.argv[2], sys.argv[3]))
    else:
        asyncio.run(sse(sys.argv[2]))
