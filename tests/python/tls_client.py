"""Talks to a running wschat over wss:// with Python's `websockets` and `ssl`.

Usage: tls_client.py TLS_HOST:PORT PLAIN_HOST:PORT CA_FILE. The client
trusts CA_FILE alone and checks the host name `localhost`. Exits non-zero
with a message on any mismatch; prints "ok" when every check passed.
"""

import asyncio
import ssl
import sys

import websockets


def connect(url: str, context: ssl.SSLContext | None, **kwargs):
    # No proxy from the environment: the test talks to loopback only.
    return websockets.connect(url, ssl=context, proxy=None, max_size=None, **kwargs)


async def main(tls_addr: str, plain_addr: str, cafile: str) -> None:
    context = ssl.create_default_context(cafile=cafile)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    tls_port = tls_addr.rsplit(":", 1)[1]
    secure = f"wss://localhost:{tls_port}"
    plain = f"ws://{plain_addr}"

    async with connect(f"{secure}/echo", context) as ws:
        tls = ws.transport.get_extra_info("ssl_object")
        assert tls is not None and tls.version() in ("TLSv1.3", "TLSv1.2"), tls
        ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert ext.startswith("permessage-deflate"), ext
        for message in ["short", "x" * 1000, "κόσμε " * 500, bytes(range(256)) * 64, ""]:
            await ws.send(message)
            echo = await ws.recv()
            assert echo == message, (len(echo), len(message))
        big = bytes(i % 251 for i in range(300 * 1024))
        await ws.send(big)
        assert await ws.recv() == big
        await ws.send(["frag", "mented " * 30])
        assert await ws.recv() == "frag" + "mented " * 30

    # A room shared by two wss clients (one compressing, one not) and a
    # plain ws client on the other listener.
    async with connect(f"{secure}/room/py-tls", context) as a, connect(
        f"{secure}/room/py-tls", context, compression=None
    ) as b, connect(f"{plain}/room/py-tls", None) as c:
        assert a.response.headers.get("Sec-WebSocket-Extensions", "").startswith(
            "permessage-deflate"
        )
        assert "Sec-WebSocket-Extensions" not in b.response.headers
        text = "hello over TLS, long enough to be compressed " * 3
        await a.send(text)
        got = [await ws.recv() for ws in (a, b, c)]
        assert len(set(got)) == 1 and got[0].endswith(":" + text), got
        await c.send("from the plain port")
        got = [await ws.recv() for ws in (a, b, c)]
        assert len(set(got)) == 1 and got[0].endswith(":from the plain port"), got
        await a.close()
        assert a.close_code == 1000, a.close_code

    # A client that does not trust the test CA refuses the server.
    try:
        async with connect(f"{secure}/echo", ssl.create_default_context()):
            raise AssertionError("connected without trusting the test CA")
    except ssl.SSLCertVerificationError:
        pass
    print("ok")


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(*sys.argv[1:4]), timeout=30))
