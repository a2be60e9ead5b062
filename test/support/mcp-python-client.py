"""An MCP client in Python (the official `mcp` package) against the federation's /mcp.

    FEDERATION_MCP_URL=http://127.0.0.1:9405/mcp FEDERATION_TOKEN=... \
        python3 mcp-python-client.py <tool> '<arguments as JSON>'

Connects with the package's Client over Streamable HTTP (its default
negotiation: a server/discover probe, then the initialize handshake), lists
every tool (following nextCursor), calls <tool>, and prints one line each:

    PROTOCOL <negotiated protocol version>
    TOOLS <JSON list of tool names>
    RESULT <JSON: isError, structuredContent, text>

Any failure is one "FAIL <what>: <why>" line on stderr and exit status 1.
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def main() -> None:
    url = os.environ["FEDERATION_MCP_URL"]
    token = os.environ.get("FEDERATION_TOKEN", "")
    tool, arguments = sys.argv[1], json.loads(sys.argv[2])
    headers = {"authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=60.0))
    step = "connect"
    try:
        async with http, Client(streamable_http_client(url, http_client=http)) as client:
            print("PROTOCOL", client.protocol_version, flush=True)
            step = "list tools"
            names: list[str] = []
            cursor = None
            while True:
                page = await client.list_tools(cursor=cursor)
                names += [t.name for t in page.tools]
                cursor = page.next_cursor
                if not cursor:
                    break
            print("TOOLS", json.dumps(names), flush=True)
            step = f"call {tool}"
            result = await client.call_tool(tool, arguments)
            text = " ".join(c.text for c in result.content if getattr(c, "type", "") == "text")
            print("RESULT", json.dumps({"isError": bool(result.is_error), "structuredContent": result.structured_content, "text": text}), flush=True)
    except BaseException as e:  # noqa: BLE001 - a client script reports whatever stopped it
        print(f"FAIL {step}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    asyncio.run(main())
