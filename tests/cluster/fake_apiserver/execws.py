"""pods/exec over WebSocket: the channel protocols (v1 to v5, binary and base64), the
pre-upgrade errors and the exec-related faults.

Frame layout: one binary message per chunk, byte 0 is the channel (0 stdin, 1 stdout,
2 stderr, 3 status, 4 resize, 255 close on v5), the rest is payload. The server writes an
empty message on the lowest requested output channel right after the upgrade, and the
final metav1.Status on channel 3 (v4 and v5) after all output.
"""
import asyncio
import base64
import fcntl
import json
import logging
import os
import random
import struct
import subprocess
import termios

import aiohttp
from aiohttp import web

from . import errors
from .procs import die_with_parent, exit_code

log = logging.getLogger("fake-apiserver.exec")

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
V3 = "v3.channel.k8s.io"
V2 = "v2.channel.k8s.io"
V1 = "channel.k8s.io"
V1_BASE64 = "base64.channel.k8s.io"
# In server preference order; the client's order decides which one is picked.
SUPPORTED = (V5, V4, V4_BASE64, V3, V2, V1, V1_BASE64)

STDIN, STDOUT, STDERR, STATUS, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
READ_SIZE = 128 * 1024
# Output pipes of the binary protocols hold this much (Linux lets root raise a pipe's
# capacity above /proc/sys/fs/pipe-max-size), and one read of up to this much becomes one
# WebSocket message. Streaming 1 GiB to kubectl, 256 KiB cost less server CPU than 64 KiB
# (the default pipe) or 1 MiB on the 2-core test machine.
PIPE_SIZE = 256 * 1024


def _bool(value):
    if value is None:
        return False
    return value.lower() not in ("0", "false")


def negotiate(header, legacy):
    """Pick the first client-offered protocol this server supports.

    Returns "" for a request without the header (v1 semantics) and None when no offered
    protocol is acceptable.
    """
    if header is None:
        return ""
    offered = [p.strip() for p in header.split(",") if p.strip()]
    if not offered:
        return ""
    supported = [p for p in SUPPORTED if not (legacy and p == V5)]
    for protocol in offered:
        if protocol in supported:
            return protocol
    return None


class ExecSession:
    """One upgraded exec connection and the process it runs."""

    def __init__(self, kubelet, request, runtime, container, argv, flags, protocol,
                 fault_info):
        self.kubelet = kubelet
        self.request = request
        self.runtime = runtime
        self.container = container
        self.argv = argv
        self.stdin, self.stdout, self.stderr, self.tty = flags
        self.protocol = protocol
        self.base64 = "base64" in protocol
        self.v5 = protocol == V5
        self.json_status = protocol in (V5, V4, V4_BASE64)
        self.ws = None
        self.process = None
        self.pty_master = None
        faults = kubelet.faults
        self.cut = faults.take("exec-cut", fault_info)
        self.no_status = faults.take("exec-no-status", fault_info) is not None
        self.wait_close = faults.take("exec-wait-close", fault_info)
        self.fragment = faults.take("exec-fragment", fault_info) is not None
        self.sent_bytes = 0
        self.aborted = False
        # Binary protocols without a stream fault write output frames to the transport
        # directly, see send_frame().
        self.direct = not self.base64 and self.cut is None and not self.fragment
        # Read ends of the output pipes by channel, and those with a reader registered.
        self.output_fds = {}
        self.polled_fds = set()

    # --- framing ------------------------------------------------------------------------

    async def send(self, channel, payload):
        if self.aborted or self.ws.closed:
            return
        if self.cut is not None and channel in (STDOUT, STDERR):
            limit = int(self.cut.get("afterBytes", 0))
            if self.sent_bytes + len(payload) > limit:
                await self.cut_mid_frame(channel, payload[:max(0, limit - self.sent_bytes)])
                return
        self.sent_bytes += len(payload) if channel in (STDOUT, STDERR) else 0
        try:
            if self.base64:
                await self.ws.send_str(chr(ord("0") + channel) +
                                       base64.b64encode(payload).decode())
            else:
                await self.ws.send_bytes(bytes([channel]) + payload)
        except (ConnectionResetError, RuntimeError):
            self.aborted = True

    async def cut_mid_frame(self, channel, partial):
        """Send a frame header announcing more payload than follows, then drop TCP."""
        full = len(partial) + 4096
        header = bytearray([0x82])
        length = full + 1
        if length < 126:
            header.append(length)
        elif length < 65536:
            header.append(126)
            header += struct.pack("!H", length)
        else:
            header.append(127)
            header += struct.pack("!Q", length)
        transport = self.request.transport
        log.info("exec fault: cutting the stream mid-frame after %d bytes", self.sent_bytes)
        if transport is not None:
            transport.write(bytes(header) + bytes([channel]) + partial)
            await asyncio.sleep(0.05)
            transport.abort()
        self.abort()

    def abort(self):
        # Like the real API server, a dropped connection leaves the process running; it ends
        # on its own or with its pod.
        self.aborted = True
        transport = self.request.transport
        if transport is not None:
            transport.abort()

    def send_frame(self, channel, data):
        """Write one unfragmented binary message, the channel byte and data, to the TLS
        transport; returns True when the transport's buffer is over its high-water mark.

        aiohttp's send_bytes() copies the payload twice, once to prepend the channel and
        once to prepend the frame header. Here the header and the channel go in a small
        buffer and the payload is handed to the transport as it came from the pipe. A
        server's frames are never masked (RFC 6455, section 5.1), and the two parts go to
        the transport in one call, so no other frame can come between them.
        """
        if self.aborted or self.ws.closed:
            return False
        transport = self.request.transport
        if transport is None or transport.is_closing():
            self.aborted = True
            return False
        length = len(data) + 1
        if length < 126:
            header = struct.pack("!BBB", 0x82, length, channel)
        elif length < 65536:
            header = struct.pack("!BBHB", 0x82, 126, length, channel)
        else:
            header = struct.pack("!BBQB", 0x82, 127, length, channel)
        transport.writelines((header, data))
        self.sent_bytes += len(data)
        return transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]

    async def send_output(self, channel, data):
        if not self.fragment:
            await self.send(channel, data)
            return
        position = 0
        while position < len(data):
            step = random.randint(1, max(1, min(len(data) - position, 8192)))
            await self.send(channel, data[position:position + step])
            position += step

    # --- process ------------------------------------------------------------------------

    async def start_process(self):
        runtime = self.runtime
        env = runtime.environment(self.container, {"TERM": "xterm"} if self.tty else None)
        argv = runtime.nsenter_argv(self.container.spec.get("workingDir"),
                                    self.container) + self.argv
        if self.tty:
            master, slave = os.openpty()
            self.pty_master = master

            def preexec():
                die_with_parent()
                os.setsid()
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            self.process = await asyncio.create_subprocess_exec(
                *argv, stdin=slave, stdout=slave, stderr=slave, env=env, preexec_fn=preexec)
            os.close(slave)
            os.set_blocking(master, False)
        elif self.direct:
            # The output pipes are read here directly: asyncio's StreamReader would copy
            # every chunk into its buffer and out again.
            child_ends = {}
            try:
                for channel, wanted in ((STDOUT, self.stdout), (STDERR, self.stderr)):
                    if wanted:
                        read_end, write_end = os.pipe2(os.O_CLOEXEC)
                        self.output_fds[channel] = read_end
                        child_ends[channel] = write_end
                        try:
                            fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
                        except OSError as error:
                            log.info("exec: keeping the default pipe size: %s", error)
                        os.set_blocking(read_end, False)
                self.process = await asyncio.create_subprocess_exec(
                    *argv, stdin=subprocess.PIPE if self.stdin else subprocess.DEVNULL,
                    stdout=child_ends.get(STDOUT, subprocess.DEVNULL),
                    stderr=child_ends.get(STDERR, subprocess.DEVNULL),
                    env=env, preexec_fn=die_with_parent)
            except BaseException:
                self.close_output()
                raise
            finally:
                for fd in child_ends.values():
                    os.close(fd)
        else:
            self.process = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.PIPE if self.stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if self.stdout else subprocess.DEVNULL,
                stderr=subprocess.PIPE if self.stderr else subprocess.DEVNULL,
                env=env, preexec_fn=die_with_parent)
        runtime.exec_processes.add(self.process)

    def close_output(self):
        loop = asyncio.get_running_loop()
        for fd in self.output_fds.values():
            if fd in self.polled_fds:
                self.polled_fds.discard(fd)
                loop.remove_reader(fd)
            os.close(fd)
        self.output_fds = {}

    async def pump_fd(self, fd, channel):
        """Send everything the process writes to the pipe fd, one message per read.

        After an abort the pipe is still read to its end, so the process does not block on
        a full pipe.
        """
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = os.read(fd, PIPE_SIZE)
            except BlockingIOError:
                readable = loop.create_future()
                loop.add_reader(fd, readable.set_result, None)
                self.polled_fds.add(fd)
                try:
                    await readable
                finally:
                    # close_output() may have removed the reader and closed fd already.
                    if fd in self.polled_fds:
                        self.polled_fds.discard(fd)
                        loop.remove_reader(fd)
                continue
            if not data:
                break
            if self.send_frame(channel, data):
                try:
                    # NOTE: aiohttp 3.8 has no public drain for a WebSocketResponse; its
                    # own WebSocketWriter waits on the request handler's _drain_helper().
                    await self.request.protocol._drain_helper()
                except ConnectionResetError:
                    self.aborted = True

    async def pump_pipe(self, reader, channel):
        buffered = b""
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            if self.fragment and len(buffered) + len(data) < 70 * 1024 and \
                    random.random() < 0.3:
                # Keep some output back so an occasional message exceeds 64 KiB.
                buffered += data
                continue
            await self.send_output(channel, buffered + data)
            buffered = b""
        if buffered:
            await self.send_output(channel, buffered)

    async def pump_pty(self):
        loop = asyncio.get_event_loop()
        queue = asyncio.Queue()

        def readable():
            try:
                data = os.read(self.pty_master, READ_SIZE)
            except OSError:
                data = b""
            queue.put_nowait(data)
            if not data:
                loop.remove_reader(self.pty_master)
        loop.add_reader(self.pty_master, readable)
        try:
            while True:
                data = await queue.get()
                if not data:
                    break
                await self.send_output(STDOUT, data)
        finally:
            loop.remove_reader(self.pty_master)

    async def write_stdin(self, data):
        if self.tty:
            os.write(self.pty_master, data)
            return
        if self.process.stdin is None or self.process.stdin.is_closing():
            return
        try:
            self.process.stdin.write(data)
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def close_stdin(self):
        if self.tty:
            os.write(self.pty_master, b"\x04")
        elif self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()

    def resize(self, payload):
        if not self.tty:
            return
        try:
            size = json.loads(payload)
            packed = struct.pack("HHHH", int(size.get("Height", 24)), int(size.get("Width", 80)),
                                 0, 0)
            fcntl.ioctl(self.pty_master, termios.TIOCSWINSZ, packed)
        except (ValueError, OSError, TypeError):
            log.info("exec: ignoring invalid resize message %r", payload[:100])

    async def read_client(self):
        """Read client messages: stdin, resize and (v5) close until the socket closes."""
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                data = message.data
            elif message.type == aiohttp.WSMsgType.TEXT and self.base64:
                text = message.data
                if not text:
                    continue
                try:
                    data = bytes([ord(text[0]) - ord("0")]) + base64.b64decode(text[1:])
                except ValueError:
                    continue
            else:
                continue
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == STDIN and self.stdin:
                await self.write_stdin(payload)
            elif channel == RESIZE:
                self.resize(payload)
            elif channel == CLOSE and self.v5:
                # The server stops reading when the close message is malformed.
                if len(payload) != 1 or payload[0] > RESIZE:
                    log.info("exec: malformed close message %r, no longer reading", data)
                    return
                if payload[0] == STDIN and self.stdin:
                    self.close_stdin()
        # The client is gone: its stdin ends with the connection, as with the kubelet's
        # stream server.
        if self.stdin and self.process.returncode is None:
            self.close_stdin()

    # --- status -------------------------------------------------------------------------

    def status_payload(self, code):
        if self.json_status:
            if code == 0:
                return json.dumps({"metadata": {}, "status": "Success"}).encode()
            return json.dumps({
                "metadata": {}, "status": "Failure",
                "message": "command terminated with non-zero exit code: error executing "
                           "command [%s], exit code %d" % (" ".join(self.argv), code),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}).encode()
        if code == 0:
            return None
        return ("command terminated with non-zero exit code: error executing command [%s], "
                "exit code %d" % (" ".join(self.argv), code)).encode()

    async def run(self, ws):
        self.ws = ws
        await self.start_process()
        if self.stdout:
            first = STDOUT
        elif self.stderr and not self.tty:
            first = STDERR
        else:
            first = STATUS
        await self.send(first, b"")
        pumps = []
        if self.tty:
            pumps.append(asyncio.ensure_future(self.pump_pty()))
        else:
            for channel, fd in self.output_fds.items():
                pumps.append(asyncio.ensure_future(self.pump_fd(fd, channel)))
            if self.stdout and not self.direct:
                pumps.append(asyncio.ensure_future(self.pump_pipe(self.process.stdout, STDOUT)))
            if self.stderr and not self.direct:
                pumps.append(asyncio.ensure_future(self.pump_pipe(self.process.stderr, STDERR)))
        reader = asyncio.ensure_future(self.read_client())
        waiter = asyncio.ensure_future(self.process.wait())
        try:
            await asyncio.wait([waiter], return_when=asyncio.FIRST_COMPLETED)
            if pumps:
                await asyncio.gather(*pumps, return_exceptions=True)
            code = exit_code(self.process.returncode)
            if self.aborted:
                return
            log.info("exec in %s/%s: %s exited with %d", self.runtime.namespace,
                     self.runtime.name, self.argv[0], code)
            if self.no_status:
                # A frozen pod: nothing more is sent until the client gives up.
                await reader
                return
            payload = self.status_payload(code)
            if payload is not None:
                await self.send(STATUS, payload)
            if self.wait_close:
                try:
                    await asyncio.wait_for(asyncio.shield(reader),
                                           float(self.wait_close.get("seconds", 15)))
                except asyncio.TimeoutError:
                    pass
            if not ws.closed:
                await ws.close(code=aiohttp.WSCloseCode.OK)
        finally:
            reader.cancel()
            for pump in pumps:
                pump.cancel()
            self.close_output()
            self.runtime.exec_processes.discard(self.process)
            if self.pty_master is not None:
                os.close(self.pty_master)
            if self.process.stdin is not None and not self.process.stdin.is_closing():
                self.process.stdin.close()


async def handle_exec(kubelet, request, info):
    query = request.query
    command = query.getall("command", [])
    flags = (_bool(query.get("stdin")), _bool(query.get("stdout")), _bool(query.get("stderr")),
             _bool(query.get("tty")))
    pod = kubelet.store.get(("", "pods"), info.namespace, info.name)
    name = info.name
    containers = [c["name"] for c in pod["spec"].get("containers") or []]
    container_name = query.get("container")
    if not container_name:
        if len(containers) != 1:
            raise errors.bad_request("a container name must be specified for pod %s, choose "
                                     "one of: [%s]" % (name, " ".join(containers)))
        container_name = containers[0]
    if container_name not in containers:
        raise errors.bad_request("container %s is not valid for pod %s" % (container_name, name))
    if not pod["spec"].get("nodeName"):
        raise errors.bad_request("pod %s does not have a host assigned" % name)
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        raise errors.bad_request("cannot exec into a container in a completed pod; current "
                                 "phase is %s" % phase)
    if not command:
        raise errors.bad_request("you must specify at least one command for the container")
    if not (flags[0] or flags[1] or flags[2]):
        raise errors.bad_request("you must specify at least 1 of stdin, stdout, stderr")
    upgrade = request.headers.get("Upgrade", "").lower()
    if upgrade.startswith("spdy"):
        raise errors.bad_request("SPDY exec is not supported by this test server; use a "
                                 "WebSocket with v5.channel.k8s.io or v4.channel.k8s.io")
    if upgrade != "websocket":
        raise errors.bad_request("Upgrade request required")

    fault_info = info.as_dict(request["identity"])
    legacy = kubelet.faults.peek("exec-legacy", fault_info) is not None
    protocol = negotiate(request.headers.get("Sec-WebSocket-Protocol"), legacy)
    if protocol is None:
        # golang.org/x/net/websocket rejects a handshake without a common protocol with a
        # bare 403 and no body.
        log.info("exec: no acceptable protocol in %r",
                 request.headers.get("Sec-WebSocket-Protocol"))
        return web.Response(status=403, body=b"")

    runtime = kubelet.runtime_for(info.namespace, name)
    container = None
    if runtime is not None:
        container = next(c for c in runtime.containers if c.name == container_name)
    ws = web.WebSocketResponse(protocols=(protocol,) if protocol else (), compress=False,
                               autoping=True, max_msg_size=32 << 20)
    await ws.prepare(request)
    if container is None or "running" not in container.state or \
            container.process is None or container.process.returncode is not None:
        message = 'container not found ("%s")' % container_name
        status = {"metadata": {}, "status": "Failure",
                  "message": "Internal error occurred: unable to upgrade connection: " + message,
                  "reason": "InternalError",
                  "details": {"causes": [{"message": message}]}, "code": 500}
        payload = json.dumps(status).encode() if protocol in (V5, V4, V4_BASE64) \
            else message.encode()
        await ws.send_bytes(bytes([STATUS]) + payload)
        await ws.close()
        return ws
    session = ExecSession(kubelet, request, runtime, container, command, flags, protocol,
                          fault_info)
    kubelet.exec_sessions.add(session)
    try:
        await session.run(ws)
    finally:
        kubelet.exec_sessions.discard(session)
    return ws
