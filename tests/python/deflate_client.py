"""Talks to a running wschat with Python's `websockets`, which compresses.

Usage: deflate_client.py HOST:PORT. Exits non-zero with a message on any
mismatch; prints "ok" when every check passed.
"""

import asyncio
import sys

import websockets
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory


async def main(addr: str) -> None:
    base = f"ws://{addr}"
    async with websockets.connect(f"{base}/echo", max_size=None) as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert ext.startswith("permessage-deflate"), ext
        for message in ["short", "x" * 1000, "κόσμε " * 500, bytes(range(256)) * 64, ""]:
            await ws.send(message)
            echo = await ws.recv()
            assert echo == message, (len(echo), len(message))
        await ws.send(["frag", "mented " * 30])
        assert await ws.recv() == "frag" + "mented " * 30

    # Context takeover asked for by the client, narrow windows.
    offer = ClientPerMessageDeflateFactory(server_max_window_bits=10, client_max_window_bits=10)
    async with websockets.connect(f"{base}/echo", extensions=[offer]) as ws:
        for i in range(20):
            line = f"line {i}: " + "repeated words " * 20
            await ws.send(line)
            assert await ws.recv() == line

    async with websockets.connect(f"{base}/room/py") as a, websockets.connect(
        f"{base}/room/py", compression=None
    ) as b:
        text = "hello from python, long enough to be compressed " * 3
        await a.send(text)
        got_a, got_b = await a.recv(), await b.recv()
        assert got_a == got_b and got_a.endswith(":" + text), (got_a, got_b)
    print("ok")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(sys.argv[1]), timeout=30))
