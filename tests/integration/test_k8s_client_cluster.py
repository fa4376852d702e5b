"""The C Kubernetes client against the fake cluster (tests/cluster): real pods, real exec.

Where test_k8s_client.py controls every byte with a small server, these tests check that the
client and the fake cluster (written independently) agree: TLS with the two-certificate CA
bundle, client certificates, RBAC errors, retries on injected faults, watches with expired
resourceVersions, and exec of real processes over v5 and v4.
"""
import hashlib
import json
import os
import subprocess
import tempfile
import time
import unittest

from cluster_support import FakeCluster, create_running_pod, require_cluster, sandbox_pod

BUILD = os.environ.get("SBX_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build"))
TOOL = os.path.join(BUILD, "tests", "tools", "k8s_client_tool")
PODS = "/api/v1/namespaces/default/pods"


@require_cluster
@unittest.skipUnless(os.access(TOOL, os.X_OK), "k8s_client_tool is not built")
class K8sClientClusterTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = FakeCluster().start()
        cls.dir = tempfile.mkdtemp(prefix="sbx-k8s-cluster-")
        pod = sandbox_pod("client-target", labels={"app": "client", "tier": "a"})
        create_running_pod(cls.cluster, "default", pod)

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()
        subprocess.run(["rm", "-rf", cls.dir])

    def tearDown(self):
        self.cluster.clear_faults()

    def tool(self, *args, kubeconfig=None, timeout=60):
        command = [TOOL, "--kubeconfig", kubeconfig or self.cluster.kubeconfig,
                   "--backoff-ms", "20"] + list(args)
        return subprocess.run(command, capture_output=True, timeout=timeout)

    def exec_tool(self, *argv, options=(), kubeconfig=None):
        result_file = os.path.join(self.dir, "result.json")
        if os.path.exists(result_file):
            os.unlink(result_file)
        completed = self.tool("--result", result_file, *options, "exec", "default",
                              "client-target", "--", *argv, kubeconfig=kubeconfig)
        with open(result_file) as f:
            return completed, json.load(f)

    def test_get_and_list_with_selector(self):
        got = self.tool("get", PODS + "/client-target")
        self.assertEqual(got.returncode, 0, got.stderr)
        self.assertEqual(json.loads(got.stdout)["metadata"]["name"], "client-target")
        listed = self.tool("list", PODS, "app=client,tier in (a,b)")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        names = [item["metadata"]["name"] for item in json.loads(listed.stdout)["items"]]
        self.assertEqual(names, ["client-target"])
        none = self.tool("list", PODS, "app=client,!tier")
        self.assertEqual(json.loads(none.stdout)["items"], [])

    def test_create_conflict_and_delete(self):
        body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "client-cm"}, "data": {"a": "1"}})
        path = "/api/v1/namespaces/default/configmaps"
        created = self.tool("create", path, body)
        self.assertEqual(created.returncode, 0, created.stderr)
        again = self.tool("create", path, body)
        self.assertEqual(again.returncode, 1)
        self.assertIn(b"AlreadyExists 409", again.stderr)
        patched = self.tool("merge-patch", path + "/client-cm", '{"data":{"a":null,"b":"2"}}')
        self.assertEqual(json.loads(patched.stdout)["data"], {"b": "2"})
        applied = self.tool("apply", path + "/client-cm", body)
        self.assertEqual(applied.returncode, 0, applied.stderr)
        deleted = self.tool("delete", path + "/client-cm", "Background")
        self.assertEqual(deleted.returncode, 0, deleted.stderr)
        gone = self.tool("get", path + "/client-cm")
        self.assertIn(b"NotFound 404", gone.stderr)

    def test_retry_after_injected_429(self):
        self.cluster.reset_requests()
        self.cluster.set_faults([{"type": "status", "code": 429, "retryAfter": 0, "times": 2,
                                  "contentType": "text", "verb": "get", "resource": "pods"}])
        got = self.tool("get", PODS + "/client-target")
        self.assertEqual(got.returncode, 0, got.stderr)
        self.assertEqual(self.cluster.request_counts().get("get pods"), 3)

    def test_token_kubeconfig_and_forbidden(self):
        got = self.tool("get", PODS + "/client-target",
                        kubeconfig=self.cluster.kubeconfig_for("viewer"))
        self.assertEqual(got.returncode, 0, got.stderr)
        denied = self.tool("delete", PODS + "/client-target",
                           kubeconfig=self.cluster.kubeconfig_for("viewer"))
        self.assertEqual(denied.returncode, 1)
        self.assertIn(b"Forbidden 403", denied.stderr)

    def test_watch_relists_after_expired_version(self):
        listed = json.loads(self.tool("list", PODS).stdout)
        version = listed["metadata"]["resourceVersion"]
        self.cluster.set_faults([{"type": "expire-rv", "before": "current"}])
        body = json.dumps(sandbox_pod("watched-pod"))
        watcher = subprocess.Popen([TOOL, "--kubeconfig", self.cluster.kubeconfig, "watch",
                                    PODS, "1", version], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        created = self.tool("create", PODS, body)
        self.assertEqual(created.returncode, 0, created.stderr)
        out, err = watcher.communicate(timeout=60)
        self.assertEqual(watcher.returncode, 0, err)
        lines = out.decode().splitlines()
        self.assertTrue(lines[0].startswith("RELIST "), lines)
        self.assertTrue(any(line.startswith("EVENT ") for line in lines), lines)
        self.tool("delete", PODS + "/watched-pod")

    def test_exec_exit_codes(self):
        completed, summary = self.exec_tool("sh", "-c", "echo out; echo err >&2; exit 4")
        self.assertEqual(completed.returncode, 0, completed.stderr)
        self.assertEqual(summary["protocol"], "v5.channel.k8s.io")
        self.assertEqual(summary["exit_code"], 4)
        self.assertEqual(completed.stdout, b"out\n")
        self.assertEqual(completed.stderr, b"err\n")

    def test_libcurl_loaded_only_for_rest(self):
        """Exec needs no libcurl; the first REST request loads it (dlopen)."""
        def mapped_while_running(*args):
            process = subprocess.Popen([TOOL, "--kubeconfig", self.cluster.kubeconfig] +
                                       list(args), stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE)
            try:
                maps = ""
                for _ in range(200):
                    with open("/proc/%d/maps" % process.pid) as f:
                        maps = f.read()
                    if "libssl" in maps:
                        break
                    time.sleep(0.01)
                time.sleep(0.3)
                with open("/proc/%d/maps" % process.pid) as f:
                    return "libcurl" in f.read()
            finally:
                process.wait(timeout=30)

        self.assertFalse(mapped_while_running("exec", "default", "client-target", "--",
                                              "sleep", "1"))
        self.assertTrue(mapped_while_running("--timeout-ms", "1500", "watch", PODS, "1000"))

    def test_exec_stdin_v5_and_v4(self):
        data = os.urandom(700000)
        source = os.path.join(self.dir, "stdin.bin")
        with open(source, "wb") as f:
            f.write(data)
        expected = hashlib.sha256(data).hexdigest().encode()
        completed, summary = self.exec_tool("sha256sum", options=("--stdin-mode", "stream",
                                                                  "--stdin-file", source))
        self.assertEqual(completed.returncode, 0, completed.stderr)
        self.assertEqual(completed.stdout.split()[0], expected)

        self.cluster.set_faults([{"type": "exec-legacy"}])
        completed, summary = self.exec_tool("sha256sum", options=("--stdin-mode", "counted",
                                                                  "--stdin-file", source))
        self.assertEqual(completed.returncode, 0, completed.stderr)
        self.assertEqual(summary["protocol"], "v4.channel.k8s.io")
        self.assertEqual(completed.stdout.split()[0], expected)

    def test_exec_faults_are_system_failures(self):
        for fault in ({"type": "exec-cut", "afterBytes": 10}, {"type": "exec-no-status"}):
            with self.subTest(fault=fault["type"]):
                self.cluster.set_faults([fault], replace=True)
                completed, summary = self.exec_tool("sh", "-c", "seq 1 1000",
                                                    options=("--timeout-ms", "15000"))
                self.assertEqual(completed.returncode, 1)
                self.assertFalse(summary["ok"])
                self.assertEqual(summary["error_class"], "system failure")

    def test_exec_fragmented_large_output(self):
        self.cluster.set_faults([{"type": "exec-fragment"}])
        # mktemp: the fake's pods share the host's /tmp, and pids repeat across pods.
        completed, summary = self.exec_tool("sh", "-c", "f=$(mktemp) && "
                                            "head -c 5000000 /dev/urandom | "
                                            "tee \"$f\" | sha256sum >&2; "
                                            "cat \"$f\"; rm \"$f\"")
        self.assertEqual(completed.returncode, 0, completed.stderr)
        self.assertEqual(len(completed.stdout), 5000000)
        self.assertEqual(hashlib.sha256(completed.stdout).hexdigest().encode(),
                         completed.stderr.split()[0])

    def test_exec_forbidden_reports_status(self):
        completed, summary = self.exec_tool(
            "true", kubeconfig=self.cluster.kubeconfig_for("runner-no-exec"))
        self.assertEqual(completed.returncode, 1)
        self.assertIn("HTTP 403 Forbidden", summary["error"])
        self.assertIn("pods/exec", summary["error"])

    def test_exec_long_url_limit(self):
        # The exec URL carries the command. A URL of several KiB must work (the fake cluster's
        # HTTP server takes request lines up to 8190 bytes), and a request head over 1 MiB,
        # Go's default header limit on the API server, is rejected before connecting.
        long_argument = "a" * 6000
        completed, summary = self.exec_tool("sh", "-c", 'printf %s "$1" | wc -c', "sh",
                                            long_argument)
        self.assertEqual(completed.returncode, 0, summary)
        self.assertEqual(completed.stdout.strip(), str(len(long_argument)).encode())

        # One argument may be at most 128 KiB (the kernel's MAX_ARG_STRLEN), so nine of them.
        self.cluster.reset_requests()
        completed, summary = self.exec_tool("sh", "-c", 'printf %s "$1" | wc -c', "sh",
                                            *(["a" * 120000] * 9))
        self.assertEqual(completed.returncode, 1)
        self.assertEqual(summary["error_class"], "invalid input")
        self.assertIn("over the limit of 1048576", summary["error"])
        self.assertIn("on stdin", summary["error"])
        self.assertNotIn("get pods/exec", self.cluster.request_counts())

if __name__ == "__main__":
    unittest.main()
