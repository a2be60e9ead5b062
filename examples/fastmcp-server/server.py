#!/usr/bin/env python3
"""An MCP server (FastMCP, Streamable HTTP) that joins a Federation Core.

Serves two tools over MCP Streamable HTTP at http://<host>:<port>/mcp,
registers itself with the federation as an MCP agent (transport
TRANSPORT_MCP_STREAMABLE_HTTP, its tools listed with their input schemas, so
they appear in the federation's tool catalog), heartbeats on its lease
(keeping the renewed passport every answer carries), and unregisters on
SIGTERM or Ctrl-C, then exits 0. The federation dispatches a routed task to it
as one tools/call: Route {"capabilities": [...], "task": {"tool":
"reverse_text", "arguments": {"text": "..."}}, "dispatch": true}.

It talks to the federation over its REST/JSON surface with the standard
library, so it needs no generated stubs: only the `mcp` package.

Environment: FEDERATION_ADDR (host:port, default localhost:9405) and
FEDERATION_TOKEN (a bearer token with the agents:write scope). One line per
event on stdout ("registered", "passport renewed", "tool", "unregistered");
failures on stderr, exit status 1.
"""
import argparse
import asyncio
import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime

import uvicorn

try:  # mcp 2 renamed FastMCP to MCPServer; mcp 1.x has it as FastMCP
    from mcp.server.mcpserver import MCPServer as FastMCP
except ImportError:  # pragma: no cover - mcp 1.x
    from mcp.server.fastmcp import FastMCP

TIMEOUT = 10  # seconds, for every call to the federation
MIN_HEARTBEAT_INTERVAL = 0.5  # seconds

mcp = FastMCP("fastmcp-example")


@mcp.tool(description="Reverses a piece of text.")
def reverse_text(text: str) -> str:
    print(f"tool reverse_text chars={len(text)}", flush=True)
    return text[::-1]


@mcp.tool(description="Counts the words of a piece of text (split on white space).")
def count_words(text: str) -> int:
    print(f"tool count_words chars={len(text)}", flush=True)
    return len(text.split())


class FederationError(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body}")
        self.status = status


def seconds(duration):
    """A proto3 JSON duration ("30s", "1.500s") in seconds."""
    return float(duration.rstrip("s"))


def unix_time(timestamp):
    """A proto3 JSON timestamp (RFC 3339, 0 to 9 fractional digits, Z) in seconds."""
    m = re.fullmatch(r"(.*?)(?:\.(\d+))?Z", timestamp)
    whole = datetime.fromisoformat(m.group(1) + "+00:00").timestamp()
    return whole + (float("0." + m.group(2)) if m.group(2) else 0.0)


class Federation:
    """The REST/JSON calls this server makes, and its registration: id, lease, passport."""

    def __init__(self, addr, token, registration):
        self.base = addr if "://" in addr else f"http://{addr}"
        self.token = token
        self.registration = registration
        self.agent_id = ""
        self.passport = ""
        self.passport_expires_at = 0.0
        self.lease_ttl = 0.0

    def _call(self, method, path, body, token):
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as res:
                text = res.read()
        except urllib.error.HTTPError as err:
            raise FederationError(err.code, err.read().decode(errors="replace")) from None
        return json.loads(text) if text else {}

    def _keep(self, answer):
        passport = answer.get("passport", "")
        if passport and passport != self.passport:
            renewed = bool(self.passport)
            self.passport = passport
            self.passport_expires_at = unix_time(answer["passportExpiresAt"])
            if renewed:
                print(f"passport renewed agent={self.agent_id} expires_at={answer['passportExpiresAt']}", flush=True)
        self.lease_ttl = seconds(answer["leaseTtl"])

    def register(self):
        # Registering again with our id (after a lost lease or an expired
        # passport) keeps the id.
        body = dict(self.registration, agentId=self.agent_id) if self.agent_id else self.registration
        answer = self._call("POST", "/agents/register", body, self.token)
        self.agent_id = answer["agent"]["id"]
        self.passport = ""
        self._keep(answer)

    def heartbeat(self):
        try:
            answer = self._call("POST", f"/agents/{self.agent_id}/heartbeat", {}, self.passport)
        except FederationError as err:
            if err.status not in (401, 404):  # 404: the lease ran out; 401: the passport did
                raise
            print(f"re-registering agent={self.agent_id} after HTTP {err.status}", flush=True)
            self.register()
            return
        self._keep(answer)

    def next_heartbeat_in(self, now):
        # A third of the lease, and soon enough that the passport is renewed
        # before it expires (the federation renews it in its second half).
        return max(MIN_HEARTBEAT_INTERVAL, min(self.lease_ttl / 3, (self.passport_expires_at - now) / 3))

    def unregister(self):
        self._call("DELETE", f"/agents/{self.agent_id}", None, self.passport)


class Server(uvicorn.Server):
    """uvicorn that leaves the signal to us: unregister first, then stop serving."""

    def __init__(self, config, on_signal):
        super().__init__(config)
        self.on_signal = on_signal

    def handle_exit(self, sig, frame):
        self.on_signal()


async def tool_list():
    """The tools as the federation's RegisterRequest wants them."""
    tools = []
    for tool in await mcp.list_tools():
        t = tool.model_dump(by_alias=True, exclude_none=True, mode="json")
        tools.append({"name": t["name"], "description": t.get("description", ""), "inputSchema": t["inputSchema"]})
    return tools


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capability", action="append", help="a capability to register (repeatable; default text.tools)")
    parser.add_argument("--name", default="fastmcp-example")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve MCP on and to register")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--lease-ttl", type=float, default=30, help="seconds")
    args = parser.parse_args()

    token = os.environ.get("FEDERATION_TOKEN")
    if not token:
        print("FAIL config: FEDERATION_TOKEN is not set", file=sys.stderr)
        return 1

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Bound here so a port of 0 is known before registering.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(mcp.streamable_http_app(), log_level="warning", timeout_graceful_shutdown=2)
    server = Server(config, lambda: loop.call_soon_threadsafe(stop.set))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            return serving.result() or 1
        await asyncio.sleep(0.02)

    capabilities = args.capability or ["text.tools"]
    endpoint = f"http://{args.host}:{port}/mcp"
    federation = Federation(
        os.environ.get("FEDERATION_ADDR") or "localhost:9405",
        token,
        {
            "name": args.name,
            "version": "1.0.0",
            "endpoint": {"url": endpoint, "transport": "TRANSPORT_MCP_STREAMABLE_HTTP"},
            "capabilities": [{"name": c, "tags": ["python", "mcp", "example"]} for c in capabilities],
            "tools": await tool_list(),
            "leaseTtl": f"{args.lease_ttl}s",
        },
    )
    step = "register"
    try:
        await asyncio.to_thread(federation.register)
        print(f"registered agent={federation.agent_id} capabilities={','.join(capabilities)} endpoint={endpoint}", flush=True)
        step = "heartbeat"
        while True:
            try:
                await asyncio.wait_for(stop.wait(), federation.next_heartbeat_in(time.time()))
                break
            except asyncio.TimeoutError:
                pass
            try:
                await asyncio.to_thread(federation.heartbeat)
            except (FederationError, OSError) as err:  # the federation may be restarting: try again
                print(f"heartbeat failed: {err}", file=sys.stderr, flush=True)
        step = "unregister"
        await asyncio.to_thread(federation.unregister)
        print(f"unregistered agent={federation.agent_id}", flush=True)
        return 0
    except (FederationError, OSError) as err:
        print(f"FAIL {step}: {err}", file=sys.stderr)
        return 1
    finally:
        server.should_exit = True
        await serving


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
