"""A misbehaving MCP server (raw JSON-RPC over stdio, session era, no SDK) for the gateway's
fail-closed tests: it puts credentials, internal paths and addresses in everything it says,
lists its tools over two pages, hangs, and records every tool call it receives.

usage: hostile_server.py CALLS_FILE
  CALLS_FILE  each tool call received is appended as one JSON line (name, arguments, pid)
"""
import json
import os
import sys
import time

CALLS = sys.argv[1]
KEY = "AKIA" + "IOSFODNN7EXAMPLE"
LEAK = f"failed in /srv/app/handlers/db.py talking to 10.1.2.3:5432 with {KEY}"

PAGE_1 = [
    {"name": "boom", "description": f"Fails with a JSON-RPC error. {LEAK}",
     "inputSchema": {"type": "object"}},
    {"name": "fail", "description": "Returns a failed result.", "inputSchema": {"type": "object"}},
    {"name": "chatty", "description": "Logs and reports progress before answering.",
     "inputSchema": {"type": "object"}},
    {"name": "big", "description": "Answers with a large structured result.",
     "inputSchema": {"type": "object"},
     "outputSchema": {"type": "object", "properties": {"rows": {"type": "array"}}}},
    {"name": "hang", "description": "Never answers.", "inputSchema": {"type": "object"}},
    {"name": "pid", "description": "The server's process id.", "inputSchema": {"type": "object"}},
    {"name": "ask", "description": "Asks the client for input (elicitation).",
     "inputSchema": {"type": "object"}},
    {"name": "remove", "description": "Removes an item; has no dry-run mode.",
     "inputSchema": {"type": "object", "properties": {"item": {"type": "string"}},
                     "required": ["item"]},
     "annotations": {"destructiveHint": True, "readOnlyHint": False}},
]
PAGE_2 = [
    {"name": "late", "description": "Listed on the second page only.",
     "inputSchema": {"type": "object", "properties": {"n": {"type": "integer"}},
                     "required": ["n"], "additionalProperties": False}},
    {"name": "calls", "description": "The tool calls this server received.",
     "inputSchema": {"type": "object"}},
]


def send(msg):
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def text(t, error=False):
    r = {"content": [{"type": "text", "text": t}]}
    if error:
        r["isError"] = True
    return r


def call(mid, params):
    name = params.get("name")
    args = params.get("arguments", {})
    with open(CALLS, "a") as f:
        f.write(json.dumps({"name": name, "arguments": args, "pid": os.getpid()}) + "\n")
    token = params.get("_meta", {}).get("progressToken")
    if name == "boom":
        return send({"jsonrpc": "2.0", "id": mid, "error": {
            "code": -32603, "message": LEAK, "data": {"detail": LEAK, "where": ["/srv/app/x/y.py"]}}})
    if name == "fail":
        return send({"jsonrpc": "2.0", "id": mid, "result": text(LEAK, error=True)})
    if name == "chatty":
        send({"jsonrpc": "2.0", "method": "notifications/message",
              "params": {"level": "error", "data": {"msg": LEAK}}})
        if token is not None:
            send({"jsonrpc": "2.0", "method": "notifications/progress",
                  "params": {"progressToken": token, "progress": 1, "total": 2, "message": LEAK}})
        return send({"jsonrpc": "2.0", "id": mid, "result": text("done")})
    if name == "big":
        rows = ["x" * 100] * 5000
        return send({"jsonrpc": "2.0", "id": mid, "result": {
            "content": [{"type": "text", "text": "rows"}], "structuredContent": {"rows": rows}}})
    if name == "hang":
        time.sleep(3600)
        return None
    if name == "pid":
        return send({"jsonrpc": "2.0", "id": mid, "result": text(str(os.getpid()))})
    if name == "ask":
        send({"jsonrpc": "2.0", "id": "elicit-1", "method": "elicitation/create", "params": {
            "message": f"Please confirm. {LEAK}",
            "requestedSchema": {"type": "object", "properties": {"ok": {"type": "boolean"}}}}})
        return send({"jsonrpc": "2.0", "id": mid, "result": text("asked")})
    if name == "remove":
        return send({"jsonrpc": "2.0", "id": mid, "result": text(f"removed {args.get('item')}")})
    if name == "late":
        return send({"jsonrpc": "2.0", "id": mid, "result": text(f"late {args.get('n')}")})
    if name == "calls":
        with open(CALLS) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        return send({"jsonrpc": "2.0", "id": mid, "result": text(json.dumps(lines))})
    return send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32602, "message": f"Unknown tool: {name}"}})


def main():
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        method = msg.get("method")
        mid = msg.get("id")
        params = msg.get("params") or {}
        if method is None or mid is None:
            continue  # notifications and responses (to elicitation) need no answer
        if method == "initialize":
            info = params.get("clientInfo", {})
            if info.get("name") == "reject-me":
                send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32603, "message": LEAK,
                                                              "data": {"trace": LEAK}}})
                continue
            version = params.get("protocolVersion")
            if version not in ("2025-03-26", "2025-06-18", "2025-11-25"):
                version = "2025-11-25"
            send({"jsonrpc": "2.0", "id": mid, "result": {
                "protocolVersion": version,
                "capabilities": {"tools": {}, "logging": {}},
                "serverInfo": {"name": "hostile", "version": "1"},
                "instructions": f"Use the tools. {LEAK}"}})
        elif method == "tools/list":
            if params.get("cursor") == "page-2":
                send({"jsonrpc": "2.0", "id": mid, "result": {"tools": PAGE_2}})
            else:
                send({"jsonrpc": "2.0", "id": mid, "result": {"tools": PAGE_1, "nextCursor": "page-2"}})
        elif method == "tools/call":
            call(mid, params)
        elif method == "ping":
            send({"jsonrpc": "2.0", "id": mid, "result": {}})
        else:
            send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": "Method not found"}})


if __name__ == "__main__":
    main()
