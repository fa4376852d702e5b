"""The Kubernetes client (REST, watch, exec) against a local TLS API server.

The tests drive build/tests/tools/k8s_client_tool against the server in
k8s_client_server.py, which runs in this process on 127.0.0.1.
"""
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from k8s_client_server import Canned, FakeApiServer, status_body

BUILD = os.environ.get("SBX_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build"))
TOOL = os.path.join(BUILD, "tests", "tools", "k8s_client_tool")
CM = "/api/v1/namespaces/ns/configmaps"


@unittest.skipUnless(os.access(TOOL, os.X_OK), "k8s_client_tool is not built")
class K8sClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="sbx-k8s-client-")
        cls.server = FakeApiServer(cls.dir)
        cls.kubeconfig = cls.server.kubeconfig("kubeconfig")

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def setUp(self):
        server = self.server
        server.requests.clear()
        server.canned.clear()
        server.objects.clear()
        server.watch_scripts.clear()
        server.watch_queries.clear()
        server.exec_requests.clear()
        server.exec_protocols = ["v5.channel.k8s.io", "v4.channel.k8s.io"]
        server.exec_mode = "run"
        server.tokens = {"good-token"}
        server.on_unauthorized = None

    def tool(self, *args, kubeconfig=None, timeout=60, **kwargs):
        command = [TOOL, "--kubeconfig", kubeconfig or self.kubeconfig, "--backoff-ms", "20"]
        command += list(args)
        return subprocess.run(command, capture_output=True, timeout=timeout, **kwargs)

    def requests_to(self, path):
        return [r for r in self.server.requests if r["path"] == path]

    # --- REST ---------------------------------------------------------------------------

    def test_create_get_patch_apply_delete(self):
        created = self.tool("create", CM, '{"metadata":{"name":"a"},"data":{"k":"v"}}')
        self.assertEqual(created.returncode, 0, created.stderr)
        self.assertEqual(json.loads(created.stdout)["metadata"]["resourceVersion"], "107")
        post = self.requests_to(CM)[0]
        self.assertEqual(post["method"], "POST")
        self.assertEqual(post["headers"]["Content-Type"], "application/json")
        self.assertEqual(post["headers"]["Authorization"], "Bearer good-token")

        again = self.tool("create", CM, '{"metadata":{"name":"a"}}')
        self.assertEqual(again.returncode, 1)
        self.assertIn(b"error: AlreadyExists 409", again.stderr)
        self.assertIn(b'configmaps \\"a\\" already exists'.replace(b"\\", b""), again.stderr)

        patched = self.tool("merge-patch", CM + "/a", '{"data":{"k":null,"n":"2"}}')
        self.assertEqual(patched.returncode, 0, patched.stderr)
        self.assertEqual(json.loads(patched.stdout)["data"], {"n": "2"})
        self.assertEqual(self.requests_to(CM + "/a")[-1]["headers"]["Content-Type"],
                         "application/merge-patch+json")

        applied = self.tool("apply-force", CM + "/b",
                            '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b"}}')
        self.assertEqual(applied.returncode, 0, applied.stderr)
        apply_request = self.requests_to(CM + "/b")[-1]
        self.assertEqual(apply_request["method"], "PATCH")
        self.assertEqual(apply_request["headers"]["Content-Type"], "application/apply-patch+yaml")
        self.assertEqual(apply_request["query"], "fieldManager=sbx&force=true")

        got = self.tool("get", CM + "/b")
        self.assertEqual(got.returncode, 0, got.stderr)
        self.assertEqual(json.loads(got.stdout)["metadata"]["name"], "b")

        deleted = self.tool("delete", CM + "/b", "Foreground")
        self.assertEqual(deleted.returncode, 0, deleted.stderr)
        self.assertEqual(self.requests_to(CM + "/b")[-1]["query"], "propagationPolicy=Foreground")
        missing = self.tool("get", CM + "/b")
        self.assertEqual(missing.returncode, 1)
        self.assertIn(b"error: NotFound 404", missing.stderr)

    def test_list_selectors_encoded(self):
        result = self.tool("list", CM, "app=web,tier in (a,b),!legacy", "metadata.name=x+y")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.requests_to(CM)[0]["query"],
                         "labelSelector=app%3Dweb%2Ctier%20in%20%28a%2Cb%29%2C%21legacy&"
                         "fieldSelector=metadata.name%3Dx%2By")

    def test_retry_429_honours_retry_after(self):
        path = CM + "/busy"
        self.server.objects[path] = {"metadata": {"name": "busy"}}
        self.server.canned[path] = [
            Canned(429, b"Too many requests, please try again later.\n", "text/plain",
                   {"Retry-After": "1"}),
            Canned(429, status_body(429, "TooManyRequests", "slow down"),
                   headers={"Retry-After": "0"}),
        ]
        start = time.monotonic()
        result = self.tool("get", path)
        elapsed = time.monotonic() - start
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(len(self.requests_to(path)), 3)
        self.assertGreaterEqual(elapsed, 1.0)

    def test_retry_5xx_then_success(self):
        path = CM + "/flaky"
        self.server.objects[path] = {"metadata": {"name": "flaky"}}
        self.server.canned[path] = [
            Canned(500, status_body(500, "InternalError", "etcd hiccup")),
            Canned(502, b"<html>Bad Gateway</html>", "text/html"),
            Canned(503, status_body(503, "ServiceUnavailable", "starting")),
        ]
        result = self.tool("get", path)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(len(self.requests_to(path)), 4)

    def test_no_retry_for_4xx(self):
        for code, reason in ((400, "BadRequest"), (403, "Forbidden"), (404, "NotFound"),
                             (409, "Conflict"), (422, "Invalid")):
            with self.subTest(code=code):
                path = CM + "/c%d" % code
                self.server.canned[path] = [Canned(code, status_body(code, reason, "no: %d" % code))]
                result = self.tool("get", path)
                self.assertEqual(result.returncode, 1)
                self.assertIn(("error: %s %d" % (reason, code)).encode(), result.stderr)
                self.assertIn(("no: %d" % code).encode(), result.stderr)
                self.assertEqual(len(self.requests_to(path)), 1)

    def test_retries_bounded_by_deadline(self):
        path = CM + "/down"
        self.server.canned[path] = [Canned(503, status_body(503, "ServiceUnavailable", "down"),
                                           headers={"Retry-After": "1"})] * 20
        start = time.monotonic()
        result = self.tool("--timeout-ms", "2500", "get", path)
        elapsed = time.monotonic() - start
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"ServiceUnavailable", result.stderr)
        self.assertLess(elapsed, 4.5)
        self.assertLessEqual(len(self.requests_to(path)), 4)

    def test_connection_refused_is_retried_until_deadline(self):
        import socket
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        config = self.server.kubeconfig("refused", host="localhost")
        with open(config) as f:
            text = f.read().replace(":%d" % self.server.port, ":%d" % port)
        with open(config, "w") as f:
            f.write(text)
        start = time.monotonic()
        result = self.tool("--timeout-ms", "1500", "get", CM + "/x", kubeconfig=config)
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"ConnectionError", result.stderr)
        self.assertGreaterEqual(time.monotonic() - start, 1.0)

    def test_token_file_reread_on_401(self):
        token_file = os.path.join(self.dir, "rotating-token")
        with open(token_file, "w") as f:
            f.write("old-token\n")
        self.server.tokens = {"new-token"}

        def rotate(token):
            # The kubelet rotated the token just before the server rejected the old one.
            with open(token_file, "w") as f:
                f.write("new-token-but-longer\n" if token == "old-token" else "x")
        self.server.tokens = {"new-token-but-longer"}
        self.server.on_unauthorized = rotate
        config = self.server.kubeconfig("token-file", user={"tokenFile": token_file})
        path = CM + "/t"
        self.server.objects[path] = {"metadata": {"name": "t"}}
        result = self.tool("get", path, kubeconfig=config)
        self.assertEqual(result.returncode, 0, result.stderr)
        auth = [r["headers"]["Authorization"] for r in self.requests_to(path)]
        self.assertEqual(auth, ["Bearer old-token", "Bearer new-token-but-longer"])

    def test_exec_plugin_rerun_on_401(self):
        plugin = os.path.join(self.dir, "cred-plugin.sh")
        counter = os.path.join(self.dir, "cred-count")
        if os.path.exists(counter):
            os.unlink(counter)
        with open(plugin, "w") as f:
            f.write("#!/bin/sh\n"
                    "n=$(cat %s 2>/dev/null || echo 0); n=$((n + 1)); echo $n > %s\n"
                    "printf '{\"apiVersion\":\"client.authentication.k8s.io/v1\","
                    "\"kind\":\"ExecCredential\",\"status\":{\"token\":\"plugin-%%s\","
                    "\"expirationTimestamp\":\"2999-01-01T00:00:00Z\"}}' $n\n"
                    % (counter, counter))
        os.chmod(plugin, 0o755)
        self.server.tokens = {"plugin-2"}
        config = self.server.kubeconfig("exec-plugin", user={"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": plugin,
            "interactiveMode": "Never"}})
        cache = os.path.join(self.dir, "cred-cache")
        path = CM + "/p"
        self.server.objects[path] = {"metadata": {"name": "p"}}
        result = self.tool("--cache-dir", cache, "get", path, kubeconfig=config)
        self.assertEqual(result.returncode, 0, result.stderr)
        auth = [r["headers"]["Authorization"] for r in self.requests_to(path)]
        self.assertEqual(auth, ["Bearer plugin-1", "Bearer plugin-2"])
        # A second process takes the refreshed credential from the cache.
        result = self.tool("--cache-dir", cache, "get", path, kubeconfig=config)
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(counter) as f:
            self.assertEqual(f.read().strip(), "2")

    def test_debug_log_redacts_token(self):
        path = CM + "/d"
        self.server.objects[path] = {"metadata": {"name": "d"}}
        result = self.tool("--debug", "get", path)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"Authorization: <redacted>", result.stderr)
        self.assertIn(b"GET https://localhost:%d%s -> 200" % (self.server.port, path.encode()),
                      result.stderr)
        self.assertNotIn(b"good-token", result.stderr)
        self.assertNotIn(b"good-token", result.stdout)

    # --- TLS ---------------------------------------------------------------------------

    def test_tls_server_name_and_ca_bundle(self):
        path = CM + "/tls"
        self.server.objects[path] = {"metadata": {"name": "tls"}}
        by_address = self.server.kubeconfig("by-address", host="127.0.0.1")
        result = self.tool("get", path, kubeconfig=by_address)
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"TLSVerifyError", result.stderr)
        self.assertIn(b"127.0.0.1", result.stderr)

        named = self.server.kubeconfig("named", host="127.0.0.1",
                                       tls_server_name="kubernetes.test")
        result = self.tool("get", path, kubeconfig=named)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(self.requests_to(path)[-1]["headers"]["Host"].startswith("127.0.0.1:"))

        wrong_ca = self.server.kubeconfig("wrong-ca", ca=self.server.ca_bundle.split(
            b"-----END CERTIFICATE-----\n")[0] + b"-----END CERTIFICATE-----\n")
        result = self.tool("get", path, kubeconfig=wrong_ca)
        self.assertEqual(result.returncode, 1)

        insecure = self.server.kubeconfig("insecure", host="127.0.0.1", insecure=True)
        result = self.tool("get", path, kubeconfig=insecure)
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_client_certificate(self):
        path = CM + "/cert"
        self.server.objects[path] = {"metadata": {"name": "cert"}}
        config = self.server.kubeconfig("cert", user=self.server.client_cert_user())
        result = self.tool("get", path, kubeconfig=config)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("Authorization", self.requests_to(path)[-1]["headers"])

    # --- watch -------------------------------------------------------------------------

    @staticmethod
    def event(kind, name, version):
        return (json.dumps({"type": kind, "object": {"metadata": {
            "name": name, "resourceVersion": version}}}) + "\n").encode()

    def watch_output(self, result):
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout.decode().splitlines()

    def test_watch_resumes_after_close_with_bookmark_version(self):
        first = (self.event("ADDED", "a", "10") + self.event("MODIFIED", "a", "17")
                 + self.event("BOOKMARK", "", "24"))
        self.server.watch_scripts = [
            [("data", first, 3)],
            [("data", self.event("ADDED", "b", "31"), 7), ("hold",)],
        ]
        lines = self.watch_output(self.tool("watch", CM, "3"))
        self.assertEqual(lines, ["EVENT ADDED a 10", "EVENT MODIFIED a 17", "EVENT ADDED b 31",
                                 "RV 31"])
        queries = self.server.watch_queries
        self.assertEqual(len(queries), 2)
        self.assertNotIn("resourceVersion", queries[0])
        self.assertEqual(queries[0]["allowWatchBookmarks"], ["true"])
        self.assertIn("timeoutSeconds", queries[0])
        self.assertEqual(queries[1]["resourceVersion"], ["24"])

    def test_watch_cut_mid_event_resumes(self):
        half = self.event("MODIFIED", "a", "40")
        self.server.watch_scripts = [
            [("data", self.event("ADDED", "a", "33") + half[:20], 5), ("abort",)],
            [("data", half, 4), ("hold",)],
        ]
        lines = self.watch_output(self.tool("watch", CM, "2", "30"))
        self.assertEqual(lines, ["EVENT ADDED a 33", "EVENT MODIFIED a 40", "RV 40"])
        self.assertEqual(self.server.watch_queries[0]["resourceVersion"], ["30"])
        self.assertEqual(self.server.watch_queries[1]["resourceVersion"], ["33"])

    def test_watch_error_event_410_relists(self):
        expired = (json.dumps({"type": "ERROR", "object": status_body(
            410, "Expired", "too old resource version: 5 (100)")}) + "\n").encode()
        self.server.resource_version = 100
        self.server.watch_scripts = [
            [("data", expired, 1000), ("hold",)],
            [("data", self.event("ADDED", "c", "107"), 1000), ("hold",)],
        ]
        lines = self.watch_output(self.tool("watch", CM, "1", "5"))
        self.assertEqual(lines, ["RELIST 100", "EVENT ADDED c 107", "RV 107"])
        self.assertEqual(self.server.watch_queries[1]["resourceVersion"], ["100"])

    def test_watch_http_410_relists(self):
        self.server.resource_version = 200
        self.server.watch_scripts = [
            [("status", 410, status_body(410, "Gone", "too old"))],
            [("data", self.event("ADDED", "d", "207"), 1000), ("hold",)],
        ]
        lines = self.watch_output(self.tool("watch", CM, "1", "5"))
        self.assertEqual(lines, ["RELIST 200", "EVENT ADDED d 207", "RV 207"])

    def test_watch_deadline(self):
        self.server.watch_scripts = [[("hold",)]]
        start = time.monotonic()
        result = self.tool("--timeout-ms", "1500", "watch", CM, "1")
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"error: Timeout", result.stderr)
        self.assertLess(time.monotonic() - start, 5)

    def test_watch_forbidden_fails(self):
        self.server.watch_scripts = [[("status", 403, status_body(403, "Forbidden",
                                                                  "cannot watch"))]]
        result = self.tool("watch", CM, "1")
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"cannot watch", result.stderr)
        self.assertEqual(len(self.server.watch_queries), 1)

    # --- exec --------------------------------------------------------------------------

    def exec_tool(self, *argv, options=(), kubeconfig=None, **kwargs):
        result_file = os.path.join(self.dir, "exec-result.json")
        if os.path.exists(result_file):
            os.unlink(result_file)
        completed = self.tool("--result", result_file, *options, "exec", "ns", "pod", "--",
                              *argv, kubeconfig=kubeconfig, **kwargs)
        with open(result_file) as f:
            summary = json.load(f)
        return completed, summary

    def test_exec_success_both_channels(self):
        completed, summary = self.exec_tool("sh", "-c", "echo out; echo err >&2; echo 'a+b&c'")
        self.assertEqual(completed.returncode, 0, completed.stderr)
        self.assertEqual(summary["exit_code"], 0)
        self.assertEqual(summary["protocol"], "v5.channel.k8s.io")
        self.assertEqual(completed.stdout, b"out\na+b&c\n")
        self.assertEqual(completed.stderr, b"err\n")
        query = self.server.exec_requests[0]["query"]
        self.assertEqual(query["command"], ["sh", "-c", "echo out; echo err >&2; echo 'a+b&c'"])
        self.assertNotIn("stdin", query)
        self.assertEqual(self.server.exec_requests[0]["headers"]["Authorization"],
                         "Bearer good-token")

    def test_exec_nonzero_exit(self):
        completed, summary = self.exec_tool("sh", "-c", "echo bye; exit 7")
        self.assertEqual(completed.returncode, 0, completed.stderr)
        self.assertTrue(summary["ok"])
        self.assertEqual(summary["exit_code"], 7)
        self.assertEqual(completed.stdout, b"bye\n")

    def test_exec_killed_process(self):
        completed, summary = self.exec_tool("sh", "-c", "kill -9 $$")
        self.assertEqual(completed.returncode, 0, completed.stderr)
        self.assertEqual(summary["exit_code"], 137)

    def test_exec_stream_cut_is_system_failure(self):
        self.server.exec_mode = "cut"
        completed, summary = self.exec_tool("true")
        self.assertEqual(completed.returncode, 1)
        self.assertFalse(summary["ok"])
        self.assertEqual(summary["error_class"], "system failure")
        self.assertIn("ended before the command's status", summary["error"])
        self.assertEqual(completed.stdout, b"partial output\n")

    def test_exec_missing_status_is_system_failure(self):
        self.server.exec_mode = "no-status"
        completed, summary = self.exec_tool("true")
        self.assertEqual(completed.returncode, 1)
        self.assertEqual(summary["error_class"], "system failure")
        self.assertIn("ended before the command's status", summary["error"])

    def test_exec_v4_only_server(self):
        self.server.exec_protocols = ["v4.channel.k8s.io"]
        completed, summary = self.exec_tool("sh", "-c", "echo v4; exit 3")
        self.assertEqual(completed.returncode, 0, completed.stderr)
        self.assertEqual(summary["protocol"], "v4.channel.k8s.io")
        self.assertEqual(summary["exit_code"], 3)
        self.assertEqual(completed.stdout, b"v4\n")

        # Counted stdin works without a way to close stdin.
        completed, summary = self.exec_tool("cat", options=("--stdin-mode", "counted",
                                                            "--stdin-text", "hello v4"))
        self.assertEqual(completed.returncode, 0, completed.stderr)
        self.assertEqual(completed.stdout, b"hello v4")
        self.assertEqual(summary["exit_code"], 0)
        self.assertEqual(self.server.exec_requests[-1]["query"]["command"][:3],
                         ["sh", "-c", 'head -c 8 | "$@"'])

        # Streamed stdin cannot end on v4: refused before anything is sent.
        completed, summary = self.exec_tool("cat", options=("--stdin-mode", "stream",
                                                            "--stdin-text", "x"))
        self.assertEqual(completed.returncode, 1)
        self.assertIn("cannot close stdin", summary["error"])

    def test_exec_no_common_protocol(self):
        self.server.exec_protocols = ["channel.k8s.io"]
        completed, summary = self.exec_tool("true")
        self.assertEqual(completed.returncode, 1)
        self.assertIn("HTTP 403", summary["error"])

    def test_exec_binary_output(self):
        data = bytes(range(256)) * 4096 + os.urandom(100000)
        source = os.path.join(self.dir, "binary.bin")
        with open(source, "wb") as f:
            f.write(data)
        completed, summary = self.exec_tool("cat", source)
        self.assertEqual(completed.returncode, 0, completed.stderr)
        self.assertEqual(len(completed.stdout), len(data))
        self.assertEqual(completed.stdout, data)
        self.assertEqual(summary["stdout_bytes"], len(data))

    def test_exec_stdin_eof_v5(self):
        data = os.urandom(3 * 1024 * 1024 + 17)
        source = os.path.join(self.dir, "stdin.bin")
        with open(source, "wb") as f:
            f.write(data)
        for mode in ("stream", "counted"):
            with self.subTest(mode=mode):
                completed, summary = self.exec_tool(
                    "sha256sum", options=("--stdin-mode", mode, "--stdin-file", source))
                self.assertEqual(completed.returncode, 0, completed.stderr)
                self.assertEqual(summary["exit_code"], 0)
                self.assertEqual(completed.stdout.split()[0].decode(),
                                 hashlib.sha256(data).hexdigest())

    def test_exec_stdin_from_pipe(self):
        completed, summary = self.exec_tool("wc", "-c", options=("--stdin-mode", "stream"),
                                            input=b"z" * 100000)
        self.assertEqual(completed.returncode, 0, completed.stderr)
        self.assertEqual(completed.stdout.strip(), b"100000")

    def test_exec_large_output_flat_memory(self):
        size = 128 * 1024 * 1024
        result_file = os.path.join(self.dir, "large-result.json")
        # Under AddressSanitizer freed memory waits in a quarantine of up to 256 MiB, which
        # would look like growth. Keep it small; builds without ASan ignore the variable.
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = ":".join(filter(None, (
            env.get("ASAN_OPTIONS"), "quarantine_size_mb=4:thread_local_quarantine_size_kb=64")))
        process = subprocess.Popen(
            [TOOL, "--kubeconfig", self.kubeconfig, "--timeout-ms", "120000",
             "--output-queue", "1048576", "--result", result_file, "exec", "ns", "pod", "--",
             "head", "-c", str(size), "/dev/zero"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        # A slow start fills the queue, so the client must stop reading the socket.
        time.sleep(1.5)
        total = 0
        while True:
            chunk = process.stdout.read(1 << 20)
            if not chunk:
                break
            total += len(chunk)
        stderr = process.stderr.read()
        self.assertEqual(process.wait(timeout=120), 0, stderr)
        with open(result_file) as f:
            summary = json.load(f)
        self.assertEqual(total, size)
        self.assertEqual(summary["exit_code"], 0)
        self.assertLessEqual(summary["queue_peak"], 1048576)
        self.assertGreater(summary["queue_peak"], 0)
        # The output is 128 MiB; the client's peak memory stays within a few MiB of what a
        # command without output needs.
        _, baseline = self.exec_tool("true", env=env)
        self.assertLess(summary["maxrss_kb"] - baseline["maxrss_kb"], 16 * 1024,
                        (summary, baseline))

    def test_exec_upgrade_errors_report_status(self):
        result_file = os.path.join(self.dir, "upgrade.json")
        for pod, expected, error_class in (
                ("missing", 'HTTP 404 NotFound: pods "missing" not found', "not found"),
                ("forbidden", 'HTTP 403 Forbidden: pods "forbidden" is forbidden',
                 "system failure")):
            with self.subTest(pod=pod):
                completed = self.tool("--result", result_file, "exec", "ns", pod, "--", "true")
                self.assertEqual(completed.returncode, 1)
                with open(result_file) as f:
                    summary = json.load(f)
                self.assertIn(expected, summary["error"])
                self.assertEqual(summary["error_class"], error_class)

    def test_exec_unauthorized_refreshes_token_file(self):
        token_file = os.path.join(self.dir, "exec-token")
        with open(token_file, "w") as f:
            f.write("stale-token\n")

        def rotate(token):
            with open(token_file, "w") as f:
                f.write("fresh-token-value\n")
        self.server.tokens = {"fresh-token-value"}
        self.server.on_unauthorized = rotate
        config = self.server.kubeconfig("exec-token", user={"tokenFile": token_file})
        completed, summary = self.exec_tool("echo", "ok", kubeconfig=config)
        self.assertEqual(completed.returncode, 0, completed.stderr)
        self.assertEqual(completed.stdout, b"ok\n")

    def start_proxy(self, handle):
        """A proxy on loopback that reads each request head and calls handle(client, head);
        returns its port."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        self.addCleanup(listener.close)

        def serve():
            while True:
                try:
                    client, _ = listener.accept()
                except OSError:
                    return
                head = b""
                while b"\r\n\r\n" not in head:
                    data = client.recv(1)
                    if not data:
                        break
                    head += data
                handle(client, head)

        threading.Thread(target=serve, daemon=True).start()
        return listener.getsockname()[1]

    def kubeconfig_with_proxy(self, name, proxy_url):
        path = self.server.kubeconfig(name, host="127.0.0.1", tls_server_name="kubernetes.test")
        with open(path) as f:
            config = json.load(f)
        config["clusters"][0]["cluster"]["proxy-url"] = proxy_url
        with open(path, "w") as f:
            json.dump(config, f)
        return path

    def test_exec_through_http_proxy(self):
        # A CONNECT proxy that records each request head and relays bytes.
        heads = []

        def relay(source, destination):
            try:
                while True:
                    data = source.recv(65536)
                    if not data:
                        break
                    destination.sendall(data)
            except OSError:
                pass
            finally:
                for end in (source, destination):
                    try:
                        end.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        def tunnel(client, head):
            heads.append(head.decode())
            host, port = head.split()[1].decode().rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)))
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            threading.Thread(target=relay, args=(client, upstream), daemon=True).start()
            threading.Thread(target=relay, args=(upstream, client), daemon=True).start()

        port = self.start_proxy(tunnel)
        path = self.kubeconfig_with_proxy("exec-proxy", "http://user:secret@127.0.0.1:%d" % port)
        completed, summary = self.exec_tool("echo", "proxied", kubeconfig=path)
        self.assertEqual(completed.returncode, 0, completed.stderr)
        self.assertEqual(completed.stdout, b"proxied\n")
        exec_heads = [h for h in heads if h.startswith("CONNECT 127.0.0.1:%d " % self.server.port)]
        self.assertTrue(exec_heads, heads)
        # Basic credentials from the URL's user part: base64("user:secret").
        self.assertIn("Proxy-Authorization: Basic dXNlcjpzZWNyZXQ=\r\n", exec_heads[-1])
        # The debug log of REST and exec through the proxy names no proxy credential.
        self.server.objects[CM + "/proxied"] = {"metadata": {"name": "proxied"}}
        for args in (("--debug", "get", CM + "/proxied"),
                     ("--debug", "exec", "ns", "pod", "--", "true")):
            heads.clear()
            result = self.tool(*args, kubeconfig=path)
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertTrue(any(h.startswith("CONNECT ") for h in heads), heads)
            self.assertNotIn(b"secret", result.stderr)
            self.assertNotIn(b"dXNlcjpzZWNyZXQ=", result.stderr)

        # Another scheme fails when the kubeconfig loads, for REST as for exec, and the
        # message does not repeat the URL's password.
        path = self.kubeconfig_with_proxy("socks-proxy", "socks5://user:pw-secret@127.0.0.1:1080")
        for args in (("get", CM + "/proxied"), ("exec", "ns", "pod", "--", "true")):
            result = self.tool(*args, kubeconfig=path)
            self.assertEqual(result.returncode, 1)
            self.assertIn(b'proxy-url": scheme "socks5" is not supported', result.stderr)
            self.assertNotIn(b"pw-secret", result.stderr)

    def test_proxy_407_not_retried(self):
        tunnels = []

        def reject_tunnel(client, head):
            tunnels.append(head)
            client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                           b"Proxy-Authenticate: Basic realm=\"p\"\r\n"
                           b"Content-Length: 0\r\n\r\n")
            client.close()

        port = self.start_proxy(reject_tunnel)
        path = self.kubeconfig_with_proxy("refusing-proxy", "http://127.0.0.1:%d" % port)
        result = self.tool("get", CM + "/any", kubeconfig=path)
        self.assertEqual(result.returncode, 1)
        self.assertIn(b"the proxy answered HTTP 407 to CONNECT; check proxy-url", result.stderr)
        self.assertEqual(len(tunnels), 1, tunnels)

    def test_exec_tls_server_name_client_cert_and_insecure(self):
        named = self.server.kubeconfig("exec-named", host="127.0.0.1",
                                       tls_server_name="kubernetes.test",
                                       user=self.server.client_cert_user())
        completed, summary = self.exec_tool("echo", "named", kubeconfig=named)
        self.assertEqual(completed.returncode, 0, completed.stderr)
        self.assertEqual(completed.stdout, b"named\n")
        # tls-server-name is for SNI and verification; Host names the server, as in REST.
        self.assertTrue(self.server.exec_requests[-1]["headers"]["Host"].startswith(
            "127.0.0.1:"), self.server.exec_requests[-1]["headers"])
        self.assertNotIn("Authorization", self.server.exec_requests[-1]["headers"])

        by_address = self.server.kubeconfig("exec-address", host="127.0.0.1")
        completed, summary = self.exec_tool("echo", "x", kubeconfig=by_address)
        self.assertEqual(completed.returncode, 1)
        self.assertFalse(summary["ok"])

        insecure = self.server.kubeconfig("exec-insecure", host="127.0.0.1", insecure=True)
        completed, summary = self.exec_tool("echo", "insecure", kubeconfig=insecure)
        self.assertEqual(completed.returncode, 0, completed.stderr)
        self.assertEqual(completed.stdout, b"insecure\n")

    def test_exec_idle_connection_detected(self):
        self.server.exec_mode = "silent"
        start = time.monotonic()
        completed, summary = self.exec_tool("true", options=("--ping-ms", "200",
                                                             "--idle-ms", "1000"))
        self.assertEqual(completed.returncode, 1)
        self.assertIn("no data and no pong", summary["error"])
        self.assertLess(time.monotonic() - start, 10)

    def test_exec_pings_keep_quiet_command_alive(self):
        completed, summary = self.exec_tool("sh", "-c", "sleep 2; echo done",
                                            options=("--ping-ms", "200", "--idle-ms", "1000"))
        self.assertEqual(completed.returncode, 0, completed.stderr)
        self.assertEqual(completed.stdout, b"done\n")

    def test_exec_deadline(self):
        start = time.monotonic()
        completed, summary = self.exec_tool("sleep", "10", options=("--timeout-ms", "1500"))
        self.assertEqual(completed.returncode, 1)
        self.assertIn("deadline passed", summary["error"])
        self.assertLess(time.monotonic() - start, 6)

    def test_exec_cancel(self):
        read_end, write_end = os.pipe()
        timer = threading.Timer(0.5, lambda: os.write(write_end, b"x"))
        timer.start()
        try:
            completed, summary = self.exec_tool("sleep", "10",
                                                options=("--cancel-fd", str(read_end)),
                                                pass_fds=(read_end,))
        finally:
            timer.cancel()
            os.close(read_end)
            os.close(write_end)
        self.assertEqual(completed.returncode, 1)
        self.assertEqual(summary["error_class"], "cancelled")


if __name__ == "__main__":
    unittest.main()
