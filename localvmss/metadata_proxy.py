"""The metadata proxy: listens on a guest network's gateway address and forwards to the daemon.

Started by the daemon as ``ip netns exec NS python -m localvmss.metadata_proxy --listen
GATEWAY:PORT --upstream <state_dir>/metadata.sock --host NAME`` (or without ``ip netns exec`` for
a local libvirtd in the root namespace), as OpenStack's metadata proxy runs in its router's
namespace. One request per connection: the proxy reads it (headers at most 16 KiB, body at most
64 KiB), drops any ``X-Forwarded-For``/``X-Localvmss-Host`` the guest sent, names the guest's
real address and the host instead, and passes the daemon's answer back. It is part of the data
plane: it keeps running when the daemon stops (the next daemon adopts it), and answers 503 at
once while the daemon's socket does not answer. Standard library only, no libvirt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
READ_TIMEOUT_S = 10.0
UPSTREAM_TIMEOUT_S = 10.0
DROPPED = {"x-forwarded-for", "x-localvmss-host", "connection", "keep-alive", "proxy-connection"}


def _answer(status: int, reason: str, error: str) -> bytes:
    body = json.dumps({"error": error}).encode()
    return (
        f"HTTP/1.0 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


def rewrite_head(head: bytes, guest_ip: str, host: str) -> tuple[bytes, int]:
    """The request head as it goes upstream, and its body length. ValueError for a malformed
    request (the guest gets a 400)."""
    lines = head.decode("latin-1").split("\r\n")
    request_line = lines[0]
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError("malformed request line")
    out = [f"{parts[0]} {parts[1]} HTTP/1.0"]
    length = 0
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError("malformed header")
        key = name.strip().lower()
        if key in DROPPED:
            continue
        if key == "content-length":
            length = int(value.strip())
            if not 0 <= length <= MAX_BODY:
                raise ValueError("body too large")
        if key == "transfer-encoding":
            raise ValueError("chunked bodies are not supported")
        out.append(f"{name.strip()}: {value.strip()}")
    out += [f"X-Forwarded-For: {guest_ip}", f"X-Localvmss-Host: {host}", "Connection: close", "", ""]
    return "\r\n".join(out).encode("latin-1"), length


class Proxy:
    def __init__(self, upstream: str, host: str) -> None:
        self.upstream = upstream
        self.host = host

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = writer.get_extra_info("peername")
            guest_ip = str(peer[0]) if peer else ""
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
                if len(head) > MAX_HEAD:
                    raise ValueError("request head too large")
                upstream_head, length = rewrite_head(head[:-4], guest_ip, self.host)
                body = await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT_S) if length else b""
            except (ValueError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
                writer.write(_answer(400, "Bad Request", "malformed request"))
                return
            except TimeoutError:
                return
            try:
                up_reader, up_writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(self.upstream), UPSTREAM_TIMEOUT_S
                )
            except (OSError, TimeoutError):
                writer.write(_answer(503, "Service Unavailable", "the localvmss daemon does not answer; try again"))
                return
            try:
                up_writer.write(upstream_head + body)
                await up_writer.drain()
                answer = await asyncio.wait_for(up_reader.read(), UPSTREAM_TIMEOUT_S)
            except (OSError, TimeoutError):
                answer = _answer(503, "Service Unavailable", "the localvmss daemon did not answer; try again")
            finally:
                up_writer.close()
            writer.write(answer)
        finally:
            try:
                await writer.drain()
                writer.close()
            except OSError:
                pass


async def serve(listen_host: str, port: int, upstream: str, host: str) -> None:
    proxy = Proxy(upstream, host)
    server = await asyncio.start_server(proxy.handle, listen_host, port, limit=MAX_HEAD, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"localvmss metadata proxy for host {host} on {listen_host}:{port} -> {upstream}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localvmss.metadata_proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", required=True, help="GATEWAY:PORT")
    parser.add_argument("--upstream", required=True, help="the daemon's metadata unix socket")
    parser.add_argument("--host", required=True, help="the localvmss host whose guests this serves")
    args = parser.parse_args(argv)
    listen_host, _, port = args.listen.rpartition(":")
    try:
        asyncio.run(serve(listen_host, int(port), args.upstream, args.host))
    except OSError as exc:
        print(f"localvmss metadata proxy: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
