"""An official Python SDK server (both protocol eras) used as an upstream in gateway tests.

usage: py_server.py stdio | py_server.py http PORT | py_server.py sse PORT
  (sse: the legacy HTTP+SSE transport; the python-mcp image of e2e/server-images runs it so)
"""
import asyncio
import base64
import hashlib
import json
import sys

from mcp.server.mcpserver import Context, MCPServer

mcp = MCPServer("palisade-test-python")


@mcp.tool()
def echo(message: str) -> str:
    """Echo the message back."""
    return f"Echo: {message}"


@mcp.tool()
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@mcp.tool()
async def slow_count(n: int, ctx: Context) -> str:
    """Count to n, reporting progress."""
    for i in range(n):
        await ctx.report_progress(i + 1, n)
        await asyncio.sleep(0.05)
    return f"counted {n}"


@mcp.tool()
def read_file(path: str) -> str:
    """Pretend to read a file (the gateway's path policy is under test, not this server)."""
    return f"contents of {path}"


@mcp.tool()
def fetch(url: str) -> str:
    """Pretend to fetch a URL (never connects)."""
    return f"fetched {url}"


@mcp.tool()
def read_many(paths: list[str]) -> str:
    """Pretend to read several files."""
    return "read " + ",".join(paths)


@mcp.tool()
def fetch_all(targets: list[dict[str, str]]) -> str:
    """Pretend to fetch several URLs."""
    return "fetched " + ",".join(t.get("url", "") for t in targets)


@mcp.tool(annotations={"destructiveHint": True, "readOnlyHint": False})
def delete_item(name: str, dry_run: bool = False) -> str:
    """Delete an item, or say what would be deleted."""
    if dry_run:
        return f"would delete {name}"
    DELETED.append(name)
    return f"deleted {name}"


@mcp.tool()
def deleted() -> str:
    """What delete_item really deleted, in order."""
    return ",".join(DELETED)


@mcp.tool()
def show_auth(ctx: Context) -> str:
    """The Authorization header this server received (the gateway must never pass one on)."""
    headers = ctx.headers or {}
    return headers.get("authorization", "none")


@mcp.tool()
def show_auth_claims(ctx: Context) -> str:
    """What the bearer token this server received says (its claims, unverified) and its
    SHA-256: the token itself would be redacted on the way back."""
    header = (ctx.headers or {}).get("authorization", "")
    if not header.startswith("Bearer "):
        return json.dumps({"scheme": header.split(" ")[0] if header else "none"})
    token = header[len("Bearer "):]
    payload = token.split(".")[1] if token.count(".") == 2 else ""
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        claims = {}
    keep = {k: claims[k] for k in ("sub", "aud", "act", "scope") if k in claims}
    return json.dumps({"sha256": hashlib.sha256(token.encode()).hexdigest(), "claims": keep})


@mcp.tool()
def leak() -> str:
    """Returns text with credentials in it (redaction test)."""
    return "aws=" + "AKIA" + "IOSFODNN7EXAMPLE" + " gh=ghp_" + "a" * 36


DELETED: list[str] = []
CANCELLED: list[str] = []


@mcp.tool()
async def wait(seconds: float, tag: str) -> str:
    """Waits; records the tag when the request is cancelled before it finishes."""
    try:
        await asyncio.sleep(seconds)
    except BaseException:
        CANCELLED.append(tag)
        raise
    return f"waited {tag}"


@mcp.tool()
def cancelled() -> str:
    """The tags of the wait calls that were cancelled."""
    return ",".join(CANCELLED)


@mcp.tool()
def show_trace(ctx: Context) -> str:
    """The traceparent this server received in the request's _meta."""
    params = ctx.request_context.params or {}
    meta = params.get("_meta") or {}
    return meta.get("traceparent", "none")


@mcp.resource("note://hello")
def hello() -> str:
    """A greeting."""
    return "hello from python"


@mcp.resource("note://secret")
def secret_note() -> str:
    """A note only some roles may read."""
    return "the secret note"


@mcp.prompt()
def greet(name: str) -> str:
    """Greet someone."""
    return f"Say hello to {name}"


@mcp.prompt()
def internal_prompt() -> str:
    """A prompt only some roles may use."""
    return "internal instructions"


if __name__ == "__main__":
    if sys.argv[1] == "stdio":
        mcp.run("stdio")
    elif sys.argv[1] == "sse":
        mcp.run("sse", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        mcp.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
