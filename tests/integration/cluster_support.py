"""Shared helpers for the test_cluster_* tests: the fake cluster, a WebSocket exec client,
kubectl, and network namespaces that act as hosts outside the cluster."""
import asyncio
import json
import os
import shutil
import subprocess
import sys
import unittest
import urllib.parse

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(TOP, "tests", "cluster"))

from fake_apiserver import FakeCluster  # noqa: E402,F401 (re-exported for the tests)

KUBECTL = shutil.which("kubectl")
# The machine image's kubectl is a dispatcher that runs a bundled client matching the server's
# /version; the bundled binaries sit next to it as kubectl.<major>.<minor>.
BUNDLED_KUBECTL_DIR = os.path.dirname(os.path.realpath(KUBECTL)) if KUBECTL else ""

SANDBOX_API = "/apis/agents.x-k8s.io/v1beta1/namespaces/%s/sandboxes"
EXTENSIONS_API = "/apis/extensions.agents.x-k8s.io/v1beta1/namespaces/%s/%s"
PODS_API = "/api/v1/namespaces/%s/pods"


def bundled_kubectl(minor):
    path = os.path.join(BUNDLED_KUBECTL_DIR, "kubectl.1.%d" % minor)
    return path if os.access(path, os.X_OK) else None


def missing_requirements():
    """Return why the cluster tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "the fake cluster needs root (namespaces, veth pairs, nftables)"
    for tool in ("ip", "unshare", "nsenter", "nft"):
        if shutil.which(tool) is None:
            return "%s is not installed (see packaging/install-build-deps.sh)" % tool
    return None


def require_cluster(test_class):
    reason = missing_requirements()
    return unittest.skip(reason)(test_class) if reason else test_class


def kubectl(cluster, *args, kubeconfig=None, input_data=None, timeout=60, binary=None):
    """Run kubectl against the cluster; returns CompletedProcess with text output."""
    return subprocess.run([binary or KUBECTL] + list(args), env=cluster.env(kubeconfig),
                          input=input_data, capture_output=True, text=True, timeout=timeout)


def sandbox_pod(name, command=("sleep", "3600"), labels=None, containers=None, **spec):
    body = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": dict({"containers": containers or [
                {"name": "main", "image": "debian:12", "command": list(command)}]},
                **spec)}
    return body


def create_running_pod(cluster, namespace, body, timeout=20):
    cluster.must("POST", PODS_API % namespace, body)
    name = body["metadata"]["name"]
    return cluster.wait_for(lambda: _ready_pod(cluster, namespace, name), timeout,
                            message="pod %s/%s to be Ready" % (namespace, name))


def _ready_pod(cluster, namespace, name):
    status, pod = cluster.api("GET", "%s/%s" % (PODS_API % namespace, name))
    if status != 200:
        return None
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition["type"] == "Ready" and condition["status"] == "True":
            return pod
    return None


def condition(obj, kind):
    for entry in (obj.get("status") or {}).get("conditions") or []:
        if entry["type"] == kind:
            return entry
    return None


# --- WebSocket exec client -------------------------------------------------------------------

class ExecResult:
    def __init__(self):
        self.handshake_status = 101
        self.handshake_body = b""
        self.protocol = None
        self.channels = {}
        self.messages = []
        self.close_code = None
        self.error = None

    def output(self, channel):
        return self.channels.get(channel, b"")

    @property
    def status(self):
        data = self.channels.get(3)
        return json.loads(data) if data else None


def exec_url(cluster, namespace, pod, argv, stdin=False, stdout=True, stderr=True, tty=False,
             container=None):
    query = [("command", arg) for arg in argv]
    for name, value in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr), ("tty", tty)):
        if value:
            query.append((name, "true"))
    if container:
        query.append(("container", container))
    return "%s/api/v1/namespaces/%s/pods/%s/exec?%s" % (
        cluster.url, namespace, pod, urllib.parse.urlencode(query, quote_via=urllib.parse.quote))


async def _exec(url, protocols, ssl_context, headers, stdin_chunks, close_stdin, timeout,
                on_message, resize=None):
    import aiohttp
    result = ExecResult()
    try:
        return await _exec_session(aiohttp, result, url, protocols, ssl_context, headers,
                                   stdin_chunks, close_stdin, timeout, on_message, resize)
    finally:
        # TLS transports close asynchronously; let them finish before the loop ends.
        await asyncio.sleep(0.02)


async def _exec_session(aiohttp, result, url, protocols, ssl_context, headers, stdin_chunks,
                        close_stdin, timeout, on_message, resize):
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(url, protocols=protocols, ssl=ssl_context,
                                          headers=headers, autoping=True, timeout=timeout)
        except aiohttp.WSServerHandshakeError as error:
            result.handshake_status = error.status
            # aiohttp 3.8 keeps the failed handshake's connection acquired; closing the
            # connector closes it before the event loop goes away.
            await session.connector.close()
            await asyncio.sleep(0.01)
            return result
        try:
            result.protocol = ws.protocol
            if resize:
                width, height = resize
                await ws.send_bytes(b"\x04" + json.dumps({"Width": width,
                                                            "Height": height}).encode())
            for chunk in stdin_chunks:
                await ws.send_bytes(b"\x00" + chunk)
            if close_stdin:
                await ws.send_bytes(b"\xff\x00")
            try:
                while True:
                    message = await asyncio.wait_for(ws.receive(), timeout)
                    if message.type == aiohttp.WSMsgType.BINARY:
                        data = message.data
                        result.messages.append(data)
                        result.channels[data[0]] = result.channels.get(data[0], b"") + data[1:]
                        if on_message:
                            await on_message(ws, data)
                    elif message.type == aiohttp.WSMsgType.CLOSE:
                        # Take the code from the server's close frame, because aiohttp's own
                        # close_code becomes 1006 when sending the reply frame fails.
                        result.close_code = message.data
                        break
                    elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                        break
                    elif message.type == aiohttp.WSMsgType.ERROR:
                        result.error = message.data
                        break
            except asyncio.TimeoutError:
                result.error = "timeout"
        finally:
            await ws.close()
    return result


def ws_exec(cluster, namespace, pod, argv, protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"),
            stdin_chunks=(), close_stdin=False, identity="admin", token=None, timeout=20,
            on_message=None, resize=None, **flags):
    """Run one exec over WebSocket with a hand-written client; returns ExecResult."""
    url = exec_url(cluster, namespace, pod, argv, stdin=bool(stdin_chunks) or close_stdin,
                   **flags)
    headers = {"Authorization": "Bearer " + token} if token else {}
    context = cluster.ssl_context(identity if token is None else None)
    return asyncio.run(_exec(url, list(protocols), context, headers, list(stdin_chunks),
                             close_stdin, timeout, on_message, resize))


# --- hosts outside the cluster -----------------------------------------------------------------

class TestHost:
    """A network namespace made by the test, linked to the cluster's node namespace by a veth
    pair, running a TCP server that sends "hello <name>" on every connection."""

    counter = 0

    def __init__(self, cluster, name, address, node_address, ports=(8080,)):
        TestHost.counter += 1
        self.cluster = cluster
        self.name = name
        self.netns = "sbxt-%d-%d" % (os.getpid(), TestHost.counter)
        self.address = address
        self.node_address = node_address
        self.ports = ports
        self.servers = []
        self.node_if = "th%d" % TestHost.counter

    def __enter__(self):
        node = self.cluster.network["nodeNetns"]
        run = lambda *argv: subprocess.run(argv, check=True, capture_output=True)  # noqa: E731
        run("ip", "netns", "add", self.netns)
        try:
            run("ip", "-n", self.netns, "link", "set", "lo", "up")
            run("ip", "-n", node, "link", "add", self.node_if, "type", "veth", "peer", "name",
                "eth0", "netns", self.netns)
            run("ip", "-n", node, "addr", "add", self.node_address + "/30", "dev", self.node_if)
            run("ip", "-n", node, "link", "set", self.node_if, "up")
            run("ip", "-n", self.netns, "addr", "add", self.address + "/30", "dev", "eth0")
            run("ip", "-n", self.netns, "link", "set", "eth0", "up")
            run("ip", "-n", self.netns, "route", "add", self.cluster.network["podCIDR"], "via",
                self.node_address)
            script = ("import socket,sys\n"
                      "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                      "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(16)\n"
                      "print('ready', flush=True)\n"
                      "while True:\n"
                      "    c,_=s.accept(); c.sendall(('hello %s\\n' % sys.argv[2]).encode());"
                      " c.close()\n")
            for port in self.ports:
                server = subprocess.Popen(["ip", "netns", "exec", self.netns, "/usr/bin/python3",
                                           "-c", script, str(port), self.name],
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                self.servers.append(server)
                server.stdout.readline()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for server in self.servers:
            server.kill()
            server.wait()
            server.stdout.close()
        subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True)


def connect_from_pod(cluster, namespace, pod, address, port, timeout=1.0):
    """Open a TCP connection from inside the pod; returns the greeting or None."""
    script = ("import socket,sys\n"
              "try:\n"
              "    s=socket.create_connection((sys.argv[1], int(sys.argv[2])), "
              "timeout=float(sys.argv[3]))\n"
              "    sys.stdout.write(s.recv(100).decode())\n"
              "except OSError as e:\n"
              "    sys.stdout.write('failed: %s' % e); sys.exit(7)\n")
    result = ws_exec(cluster, namespace, pod, ["/usr/bin/python3", "-c", script, address,
                                               str(port), str(timeout)], timeout=timeout + 10)
    text = result.output(1).decode()
    return text.strip() if text.startswith("hello") else None


def leftover_netns(prefix):
    return [n for n in (os.listdir("/run/netns") if os.path.isdir("/run/netns") else [])
            if n.startswith(prefix)]


def process_exists(pid):
    return pid is not None and os.path.exists("/proc/%d" % pid)

