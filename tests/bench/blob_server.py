#!/usr/bin/python3
"""A minimal HTTP/1.1 server that returns SIZE bytes for every GET, for the egress benchmark.

The body comes from a memfd filled once at start and goes out with sendfile(), so the server
costs little CPU next to the client and the proxy it is compared through. It serves one
connection at a time and closes each after one response. It prints "ready" on stdout once it
listens, and exits after --max-requests requests, after --max-seconds, or when stdin closes.

Usage: blob_server.py --bind ADDRESS --port PORT --size BYTES
"""

import argparse
import os
import select
import socket
import struct
import sys
import time

HEAD_MAX = 16384


def read_request_head(connection, deadline):
    """Read the request head up to its blank line. Return it, or None on EOF or timeout."""
    data = b""
    while b"\r\n\r\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or len(data) > HEAD_MAX:
            return None
        connection.settimeout(remaining)
        chunk = connection.recv(4096)
        if not chunk:
            return None
        data += chunk
    return data


def serve_one(connection, body_fd, size, deadline):
    head = read_request_head(connection, deadline)
    if head is None:
        return
    request_line = head.split(b"\r\n", 1)[0].split(b" ")
    if len(request_line) != 3 or request_line[0] not in (b"GET", b"HEAD"):
        connection.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n"
                           b"Connection: close\r\n\r\n")
        return
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                       b"Content-Length: %d\r\nConnection: close\r\n\r\n" % size)
    if request_line[0] == b"HEAD":
        return
    # os.sendfile() needs a blocking socket (a Python timeout makes it non-blocking), so the
    # kernel's SO_SNDTIMEO bounds a stalled client instead.
    connection.settimeout(None)
    seconds = max(int(deadline - time.monotonic()), 1)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                          struct.pack("ll", seconds, 0))
    offset = 0
    while offset < size:
        sent = os.sendfile(connection.fileno(), body_fd, offset, size - offset)
        if sent == 0:
            break
        offset += sent


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bind", required=True, help="IPv4 address to listen on")
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    parser.add_argument("--size", type=int, required=True, help="body size in bytes")
    parser.add_argument("--max-requests", type=int, default=200,
                        help="exit after this many requests (default 200)")
    parser.add_argument("--max-seconds", type=float, default=900,
                        help="exit after this many seconds (default 900)")
    options = parser.parse_args()

    body_fd = os.memfd_create("blob", os.MFD_CLOEXEC)
    chunk = bytes(range(256)) * 4096
    written = 0
    while written < options.size:
        written += os.write(body_fd, chunk[:options.size - written])

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((options.bind, options.port))
    listener.listen(16)
    sys.stdout.write("ready\n")
    sys.stdout.flush()

    stop_at = time.monotonic() + options.max_seconds
    requests = 0
    while requests < options.max_requests and time.monotonic() < stop_at:
        readable, _, _ = select.select([listener, sys.stdin], [], [], 1.0)
        if sys.stdin in readable and not os.read(sys.stdin.fileno(), 4096):
            break
        if listener not in readable:
            continue
        connection, _ = listener.accept()
        requests += 1
        with connection:
            try:
                # Also bounds one slow client, since the benchmark's downloads take seconds.
                serve_one(connection, body_fd, options.size, time.monotonic() + 120)
            except OSError as error:
                sys.stderr.write("blob_server: connection failed: %s\n" % error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
