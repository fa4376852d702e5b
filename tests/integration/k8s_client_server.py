"""A small Kubernetes API server for the client tests, on 127.0.0.1 with TLS.

It serves what the C client's tests need to control exactly: canned responses (Status errors,
429 with Retry-After, text bodies) and scripted watch streams cut at chosen bytes. Pod exec
over WebSocket runs the command as a local process (like kwok), with switches for the v4-only
legacy path, cut connections, missing status and silence. Every request is recorded.
The full fake cluster under tests/cluster does far more; this one trades breadth for exact
control of the wire.
"""
import asyncio
import datetime
import ipaddress
import json
import logging
import os
import random
import ssl
import threading
import urllib.parse

from aiohttp import WSMsgType, web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(common_name):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.utcnow()
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def make_leaf(ca, ca_key, common_name, dns=(), ips=(), client=False):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.utcnow()
    builder = (x509.CertificateBuilder()
               .subject_name(_name(common_name)).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.ExtendedKeyUsage(
                   [ExtendedKeyUsageOID.CLIENT_AUTH if client
                    else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i))
                                               for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def status_body(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class Canned:
    """One prepared HTTP response."""

    def __init__(self, status, body=b"", content_type="application/json", headers=None):
        self.status = status
        self.body = json.dumps(body).encode() if isinstance(body, dict) else body
        self.content_type = content_type
        self.headers = headers or {}


class FakeApiServer:
    """The server, running its own event loop in a thread. Attributes are the switches."""

    def __init__(self, directory):
        self.directory = directory
        self.tokens = {"good-token"}
        self.requests = []
        self.canned = {}  # path -> list of Canned, consumed first
        self.on_unauthorized = None  # called with the rejected token
        self.objects = {}  # path -> object
        self.resource_version = 100
        self.watch_scripts = []  # list of streams; see handle_watch
        self.watch_queries = []
        self.exec_protocols = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
        self.exec_mode = "run"  # run, cut, no-status, silent
        self.exec_requests = []
        self._make_pki()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._started.wait(10)
        if not hasattr(self, "port"):
            raise RuntimeError("the test API server did not start")

    # --- PKI and kubeconfigs ----------------------------------------------------------------

    def _write(self, name, data, mode=0o600):
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
        return path

    def _make_pki(self):
        ca, ca_key = make_ca("test-cluster-ca")
        other, _ = make_ca("unrelated-ca")
        # The server certificate names localhost and kubernetes.test, but not 127.0.0.1, so
        # a connection to the address verifies only with tls-server-name.
        server, server_key = make_leaf(ca, ca_key, "apiserver",
                                       dns=("localhost", "kubernetes.test"))
        client, client_key = make_leaf(ca, ca_key, "cert-user", client=True)
        self.ca_pem = pem(ca)
        # An unrelated CA first: a client that keeps only the first certificate fails.
        self.ca_bundle = pem(other) + pem(ca)
        self.client_cert_pem = pem(client)
        self.client_key_pem = _pem_key(client_key)
        self._server_cert = self._write("server.crt", pem(server))
        self._server_key = self._write("server.key", _pem_key(server_key))
        self._ca_file = self._write("ca.crt", self.ca_pem)

    def kubeconfig(self, name, host="localhost", tls_server_name=None, user=None,
                   ca=None, insecure=False):
        """Writes a kubeconfig; USER is the YAML of the user entry (default: the token)."""
        import base64
        ca_data = base64.b64encode(ca if ca is not None else self.ca_bundle).decode()
        cluster = {"server": "https://%s:%d" % (host, self.port)}
        if insecure:
            cluster["insecure-skip-tls-verify"] = True
        else:
            cluster["certificate-authority-data"] = ca_data
        if tls_server_name:
            cluster["tls-server-name"] = tls_server_name
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "u", "user": user if user is not None
                       else {"token": "good-token"}}],
            "contexts": [{"name": "test", "context": {"cluster": "c", "user": "u",
                                                     "namespace": "ns"}}],
        }
        return self._write(name, json.dumps(config).encode())

    def client_cert_user(self):
        import base64
        return {"client-certificate-data": base64.b64encode(self.client_cert_pem).decode(),
                "client-key-data": base64.b64encode(self.client_key_pem).decode()}

    # --- serving --------------------------------------------------------------------------------

    def _run(self):
        asyncio.set_event_loop(self._loop)
        # Connections cut on purpose make aiohttp log tracebacks that mean nothing here.
        logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self._server_cert, self._server_key)
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(self._ca_file)
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._started.set()
        self._loop.run_forever()

    def stop(self):
        async def shutdown():
            await self._runner.cleanup()
            # Handlers that hold a watch or an exec open are still waiting.
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _identity(self, request):
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        if peer:
            for entry in peer.get("subject", ()):
                for key, value in entry:
                    if key == "commonName":
                        return "cert:" + value
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            token = header[7:]
            if token in self.tokens:
                return "token:" + token
            if self.on_unauthorized is not None:
                self.on_unauthorized(token)
        return None

    async def handle(self, request):
        body = await request.read()
        self.requests.append({
            "method": request.method, "path": request.path,
            "query": request.rel_url.raw_query_string, "headers": dict(request.headers),
            "body": body,
        })
        if self._identity(request) is None:
            return web.json_response(status_body(401, "Unauthorized", "Unauthorized"),
                                     status=401)
        queue = self.canned.get(request.path)
        if queue:
            answer = queue.pop(0)
            return web.Response(status=answer.status, body=answer.body,
                                content_type=answer.content_type, headers=answer.headers)
        if request.path.endswith("/exec"):
            return await self.handle_exec(request)
        query = urllib.parse.parse_qs(request.rel_url.raw_query_string)
        if request.method == "GET" and query.get("watch") == ["1"]:
            return await self.handle_watch(request, query)
        return self.handle_rest(request, body, query)

    # --- REST -----------------------------------------------------------------------------------

    def handle_rest(self, request, body, query):
        path = request.path
        parts = path.strip("/").split("/")
        collection = len(parts) % 2 == 1  # /api/v1/namespaces/ns/things
        if request.method == "GET" and collection:
            items = [o for p, o in sorted(self.objects.items())
                     if p.rsplit("/", 1)[0] == path]
            return web.json_response({"kind": "List", "apiVersion": "v1",
                                      "metadata": {"resourceVersion":
                                                   str(self.resource_version)},
                                      "items": items})
        if request.method == "GET":
            if path not in self.objects:
                return web.json_response(status_body(404, "NotFound", 'configmaps "%s" not '
                                                     'found' % parts[-1]), status=404)
            return web.json_response(self.objects[path])
        if request.method == "POST":
            obj = json.loads(body)
            target = path + "/" + obj["metadata"]["name"]
            if target in self.objects:
                return web.json_response(status_body(409, "AlreadyExists",
                                                     'configmaps "%s" already exists'
                                                     % obj["metadata"]["name"]), status=409)
            self.resource_version += 7
            obj["metadata"]["resourceVersion"] = str(self.resource_version)
            self.objects[target] = obj
            return web.json_response(obj, status=201)
        if request.method == "PATCH":
            content_type = request.headers.get("Content-Type", "")
            patch = json.loads(body)
            if content_type == "application/apply-patch+yaml":
                if "fieldManager" not in query:
                    return web.json_response(status_body(400, "BadRequest",
                                                         "fieldManager is required"),
                                             status=400)
                self.objects[path] = patch
                return web.json_response(patch)
            if content_type != "application/merge-patch+json":
                return web.json_response(status_body(415, "UnsupportedMediaType",
                                                     "unsupported " + content_type),
                                         status=415)
            if path not in self.objects:
                return web.json_response(status_body(404, "NotFound", "not found"),
                                         status=404)
            merged = self.objects[path]
            for key, value in patch.get("data", {}).items():
                if value is None:
                    merged.setdefault("data", {}).pop(key, None)
                else:
                    merged.setdefault("data", {})[key] = value
            return web.json_response(merged)
        if request.method == "DELETE":
            if path not in self.objects:
                return web.json_response(status_body(404, "NotFound", "not found"),
                                         status=404)
            del self.objects[path]
            return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                      "status": "Success"})
        return web.json_response(status_body(405, "MethodNotAllowed", "no"), status=405)

    # --- watch ----------------------------------------------------------------------------------

    async def handle_watch(self, request, query):
        """Plays the next script: a list of steps ("data", bytes, piece_size),
        ("sleep", seconds), ("abort",), ("status", code, body) or ("hold",)."""
        self.watch_queries.append(query)
        script = self.watch_scripts.pop(0) if self.watch_scripts else [("hold",)]
        if script and script[0][0] == "status":
            return web.json_response(script[0][2], status=script[0][1])
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        transport = request.transport
        for step in script:
            if step[0] == "data":
                data, piece = step[1], step[2]
                for start in range(0, len(data), piece):
                    await response.write(data[start:start + piece])
                    await asyncio.sleep(0.005)
            elif step[0] == "sleep":
                await asyncio.sleep(step[1])
            elif step[0] == "abort":
                transport.abort()
                return response
            elif step[0] == "hold":
                await asyncio.sleep(3600)
        await response.write_eof()
        return response

    # --- exec -----------------------------------------------------------------------------------

    async def handle_exec(self, request):
        query = urllib.parse.parse_qs(request.rel_url.raw_query_string, keep_blank_values=True)
        self.exec_requests.append({"query": query, "headers": dict(request.headers)})
        pod = request.path.split("/")[-2]
        if pod == "missing":
            return web.json_response(status_body(404, "NotFound", 'pods "missing" not found'),
                                     status=404)
        if pod == "forbidden":
            return web.json_response(status_body(
                403, "Forbidden", 'pods "forbidden" is forbidden: User "u" cannot create '
                'resource "pods/exec"'), status=403)
        offered = [p.strip() for p in
                   request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        chosen = next((p for p in offered if p in self.exec_protocols), None)
        if chosen is None:
            # The Go server rejects an unacceptable offer with a bare 403.
            return web.Response(status=403, body=b"")
        mode = self.exec_mode
        ws = web.WebSocketResponse(protocols=(chosen,), autoping=(mode != "silent"),
                                   max_msg_size=0)
        transport = request.transport
        await ws.prepare(request)
        await ws.send_bytes(b"\x01")  # the ready message
        if mode == "silent":
            await asyncio.sleep(30)
            return ws
        if mode == "cut":
            await ws.send_bytes(b"\x01partial output\n")
            await asyncio.sleep(0.1)
            transport.abort()
            return ws
        return await self.run_command(ws, query, chosen == "v5.channel.k8s.io", mode)

    async def run_command(self, ws, query, v5, mode):
        argv = query.get("command", [])
        want_stdin = query.get("stdin", ["false"])[0] not in ("", "false", "0")
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE if want_stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            cwd=self.directory)
        lock = asyncio.Lock()

        async def pump(stream, channel):
            while True:
                # Random sizes, some far above the client's read size, so messages arrive in
                # several callbacks.
                data = await stream.read(random.choice((1, 100, 4096, 65536, 300000)))
                if not data:
                    return
                async with lock:
                    await ws.send_bytes(bytes((channel,)) + data)

        async def receive():
            async for message in ws:
                if message.type != WSMsgType.BINARY or not message.data:
                    continue
                channel, payload = message.data[0], message.data[1:]
                if channel == 0 and want_stdin:
                    try:
                        process.stdin.write(payload)
                        await process.stdin.drain()
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                elif channel == 255 and v5 and payload == b"\x00" and want_stdin:
                    process.stdin.close()

        receiver = asyncio.ensure_future(receive())
        await asyncio.gather(pump(process.stdout, 1), pump(process.stderr, 2))
        code = await process.wait()
        if code < 0:
            code = 128 - code  # killed by a signal, as container runtimes report it
        if mode != "no-status":
            if code == 0:
                status = {"metadata": {}, "status": "Success"}
            else:
                status = {"metadata": {}, "status": "Failure",
                          "message": "command terminated with non-zero exit code",
                          "reason": "NonZeroExitCode",
                          "details": {"causes": [{"reason": "ExitCode",
                                                  "message": str(code)}]}}
            await ws.send_bytes(b"\x03" + json.dumps(status).encode())
        receiver.cancel()
        await ws.close()
        return ws
