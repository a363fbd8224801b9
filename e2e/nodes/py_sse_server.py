"""An official Python SDK server over the legacy HTTP+SSE transport, for the real-node tests:
the Python image of e2e/server-images runs it as /app/server.py.

usage: py_sse_server.py [PORT]     listens on 127.0.0.1 (the gateway in the pod is its only client)
"""
import sys

from mcp.server.mcpserver import MCPServer

mcp = MCPServer("palisade-python-sse")


@mcp.tool()
def echo(message: str) -> str:
    """Echo the message back."""
    return f"Echo: {message}"


@mcp.tool()
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


if __name__ == "__main__":
    mcp.run("sse", host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 8000)
