"""The fake-apiserver command line: start-up output, files it writes, configuration files,
and clean shutdown that leaves no process, network namespace or nftables table behind."""
import json
import os
import signal
import socket
import stat
import subprocess
import tempfile
import time
import unittest

from cluster_support import (PODS_API, SANDBOX_API, TOP, FakeCluster, create_running_pod,
                             kubectl, leftover_netns, process_exists, require_cluster,
                             sandbox_pod, ws_exec)

SERVER = os.path.join(TOP, "tests", "cluster", "fake-apiserver")


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@require_cluster
class ClusterLifecycleTest(unittest.TestCase):
    def setUp(self):
        self.state_dir = tempfile.mkdtemp(prefix="sbx-fake-lifecycle-")

    def tearDown(self):
        subprocess.run(["rm", "-rf", self.state_dir])

    def test_cli_output_and_files(self):
        process = subprocess.Popen(["/usr/bin/python3", SERVER, "--state-dir", self.state_dir,
                                    "--port", "0", "--ready-delay", "0.1",
                                    "--enforce-network-policies=true"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            info = json.loads(process.stdout.readline())
            self.assertEqual(info["pid"], process.pid)
            self.assertRegex(info["url"], r"^https://127\.0\.0\.1:\d+$")
            for key in ("kubeconfig", "kubeconfigToken"):
                mode = stat.S_IMODE(os.stat(info[key]).st_mode)
                self.assertEqual(mode, 0o600, key)
            with open(info["kubeconfig"]) as stream:
                text = stream.read()
            self.assertIn("client-certificate-data", text)
            self.assertNotIn("token", text)
            with open(info["kubeconfigToken"]) as stream:
                self.assertIn("token:", stream.read())
            with open(info["caFile"]) as stream:
                self.assertEqual(stream.read().count("BEGIN CERTIFICATE"), 2)
            cluster = FakeCluster(state_dir=self.state_dir)
            cluster.info = info
            version = kubectl(cluster, "version", "-o", "json")
            self.assertEqual(version.returncode, 0, version.stderr)
            self.assertEqual(json.loads(version.stdout)["serverVersion"]["gitVersion"],
                             "v1.33.1")
            for host in ("127.0.0.1", "localhost"):
                environment = cluster.env()
                server = info["url"].replace("127.0.0.1", host)
                result = subprocess.run(["kubectl", "--server", server, "get", "ns", "-o",
                                         "name"], env=environment, capture_output=True,
                                        text=True, timeout=30)
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertIn("namespace/default", result.stdout)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
            process.stdout.close()
            process.stderr.close()
        self.assertEqual(process.returncode, 0)

    def test_shutdown_leaves_nothing(self):
        cluster = FakeCluster(state_dir=self.state_dir, ready_delay=0.1).start()
        prefix = cluster.network["netnsPrefix"]
        try:
            create_running_pod(cluster, "default", sandbox_pod("busy"))
            cluster.must("POST", "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies",
                         {"metadata": {"name": "deny"},
                          "spec": {"podSelector": {}, "policyTypes": ["Egress"]}})
            cluster.must("POST", SANDBOX_API % "default", {
                "apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
                "metadata": {"name": "sb"},
                "spec": {"podTemplate": {"spec": {"containers": [
                    {"name": "c", "image": "x", "command": ["sleep", "900"]}]}}}})
            cluster.wait_for(lambda: len(cluster.pod_runtimes()) == 2 and all(
                r["sandboxPid"] for r in cluster.pod_runtimes()), 15, message="two pods")
            runtimes = cluster.pod_runtimes()
            # A background exec keeps a process running inside the pod at shutdown time.
            result = ws_exec(cluster, "default", "busy",
                             ["sh", "-c", "sleep 900 >/dev/null 2>&1 & echo $!"])
            self.assertEqual(result.status["status"], "Success")
            netns = [r["netns"] for r in runtimes]
            for name in netns:
                self.assertIn(name, leftover_netns(prefix))
            nft = subprocess.run(["ip", "netns", "exec", netns[0], "nft", "list", "tables"],
                                 capture_output=True, text=True)
            self.assertIn("sbx_netpol", nft.stdout + " ".join(
                subprocess.run(["ip", "netns", "exec", n, "nft", "list", "tables"],
                               capture_output=True, text=True).stdout for n in netns))
            pids = []
            for runtime in runtimes:
                pids += [runtime["sandboxPid"], runtime["unsharePid"]]
                pids += list(runtime["containers"].values())
            port = cluster.port
        finally:
            code = cluster.stop()
        self.assertEqual(code, 0, cluster.log_tail())
        self.assertEqual(leftover_netns(prefix), [])
        for pid in pids:
            self.assertFalse(process_exists(pid), "pid %d is still running" % pid)
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        self.assertNotIn("sleep 900", ps)
        self.assertFalse(port_open(port))
        with open(os.path.join(self.state_dir, "fake-apiserver.log")) as stream:
            self.assertIn("stopped; removed all pods", stream.read())

    def test_shutdown_while_pods_wait_to_start(self):
        """Pods still queued for a start slot or their volumes do not hold up shutdown."""
        cluster = FakeCluster(state_dir=self.state_dir).start()
        prefix = cluster.network["netnsPrefix"]
        try:
            for i in range(20):
                cluster.must("POST", PODS_API % "default", sandbox_pod("queued-%d" % i))
            # One waits for a ConfigMap that never comes.
            waiting = sandbox_pod("waits-for-volume")
            waiting["spec"]["volumes"] = [{"name": "c", "configMap": {"name": "missing"}}]
            waiting["spec"]["containers"][0]["volumeMounts"] = [
                {"name": "c", "mountPath": "/etc/missing"}]
            cluster.must("POST", PODS_API % "default", waiting)
        finally:
            started = time.monotonic()
            code = cluster.stop(timeout=60)
        self.assertEqual(code, 0, cluster.log_tail())
        self.assertLess(time.monotonic() - started, 30)
        self.assertEqual(leftover_netns(prefix), [])

    def test_killed_server_pods_die_and_sweep(self):
        cluster = FakeCluster(state_dir=self.state_dir, ready_delay=0.1).start()
        prefix = cluster.network["netnsPrefix"]
        create_running_pod(cluster, "default", sandbox_pod("orphan"))
        runtime = cluster.pod_runtimes()[0]
        cluster.process.kill()
        cluster.process.wait()
        cluster.process.stdout.close()
        # The pod's processes get SIGKILL through the parent-death signal.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and process_exists(runtime["sandboxPid"]):
            time.sleep(0.05)
        self.assertFalse(process_exists(runtime["sandboxPid"]))
        self.assertTrue(leftover_netns(prefix), "a killed server cannot clean up")
        second = FakeCluster().start()
        try:
            self.assertEqual(leftover_netns(prefix), [],
                             "the next server removes namespaces of dead servers")
        finally:
            second.cleanup()

    def test_auth_and_fault_files(self):
        auth_path = os.path.join(self.state_dir, "auth.yaml")
        faults_path = os.path.join(self.state_dir, "faults.json")
        with open(auth_path, "w") as stream:
            stream.write("identities:\n- name: ci\n  groups: [ci]\n  rules:\n"
                         "  - {apiGroups: [''], resources: [pods], verbs: [list],"
                         " namespaces: [default]}\n")
        with open(faults_path, "w") as stream:
            json.dump([{"type": "status", "code": 503, "retryAfter": 1, "times": 1,
                        "verb": "list", "resource": "pods", "identity": "ci"}], stream)
        with FakeCluster(auth_config=auth_path, faults_file=faults_path) as cluster:
            token = cluster.token("ci")
            status, body = cluster.api("GET", PODS_API % "default", identity=None, token=token)
            self.assertEqual(status, 503)
            self.assertEqual(body["reason"], "ServiceUnavailable")
            self.assertEqual(cluster.api("GET", PODS_API % "default", identity=None,
                                         token=token)[0], 200)
            self.assertEqual(cluster.api("GET", PODS_API % "kube-system", identity=None,
                                         token=token)[0], 403)
            self.assertEqual(cluster.api("GET", PODS_API % "default")[0], 200,
                             "an admin identity is added when the file has none")

    def test_kube_version_135_needs_exec_create(self):
        auth_path = os.path.join(self.state_dir, "auth.yaml")
        with open(auth_path, "w") as stream:
            stream.write("identities:\n- name: admin\n  groups: [system:masters]\n"
                         "- name: get-only\n  rules:\n"
                         "  - {apiGroups: [''], resources: [pods, pods/exec], verbs: [get]}\n")
        with FakeCluster(auth_config=auth_path, kube_version="1.35.0",
                         ready_delay=0.1) as cluster:
            create_running_pod(cluster, "default", sandbox_pod("p"))
            denied = ws_exec(cluster, "default", "p", ["true"], identity=None,
                             token=cluster.token("get-only"))
            self.assertEqual(denied.handshake_status, 403)
            allowed = ws_exec(cluster, "default", "p", ["true"])
            self.assertEqual(allowed.status["status"], "Success")


if __name__ == "__main__":
    unittest.main()
