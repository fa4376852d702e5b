"""pods/exec against the fake cluster: kubectl (v5), the official Python client (v4) and a
hand-written WebSocket client for the protocol details and faults. Commands run for real in
the pod's namespaces."""
import json
import os
import time
import unittest

from cluster_support import (PODS_API, FakeCluster, bundled_kubectl, create_running_pod, kubectl,
                             require_cluster, sandbox_pod, ws_exec)

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"


@require_cluster
class ClusterExecTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = FakeCluster().start()
        cls.pod = create_running_pod(cls.cluster, "default", sandbox_pod("exec-target"))
        two = sandbox_pod("two-containers", containers=[
            {"name": "a", "image": "debian:12", "command": ["sleep", "600"]},
            {"name": "b", "image": "debian:12", "command": ["sleep", "600"]}])
        create_running_pod(cls.cluster, "default", two)

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    def tearDown(self):
        self.cluster.clear_faults()

    # --- real clients -------------------------------------------------------------------

    def test_kubectl_exec_stdin_and_exit_code(self):
        result = kubectl(self.cluster, "exec", "-i", "exec-target", "--", "sh", "-c",
                         "tr a-z A-Z; echo to-stderr >&2; exit 3", input_data="hello\n")
        self.assertEqual(result.returncode, 3, result.stderr)
        self.assertEqual(result.stdout, "HELLO\n")
        self.assertIn("to-stderr", result.stderr)
        ok = kubectl(self.cluster, "exec", "exec-target", "--", "true")
        self.assertEqual(ok.returncode, 0, ok.stderr)
        self.assertEqual(self.cluster.request_log()[-1]["resource"], "pods/exec")

    def test_kubectl_exec_forbidden_without_rbac(self):
        result = kubectl(self.cluster, "exec", "exec-target", "--", "true",
                         kubeconfig=self.cluster.kubeconfig_for("runner-no-exec"))
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("forbidden", result.stderr.lower())
        allowed = kubectl(self.cluster, "exec", "exec-target", "--", "true",
                          kubeconfig=self.cluster.kubeconfig_for("runner"))
        self.assertEqual(allowed.returncode, 0, allowed.stderr)

    def test_bundled_kubectl_132_baseline(self):
        binary = bundled_kubectl(32)
        if binary is None:
            self.skipTest("no bundled kubectl 1.32 next to the kubectl dispatcher")
        started = time.monotonic()
        result = kubectl(self.cluster, "exec", "exec-target", "--", "echo", "baseline",
                         binary=binary)
        elapsed = time.monotonic() - started
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout, "baseline\n")
        print("\n    kubectl 1.32 exec round trip: %.0f ms (%s)" % (elapsed * 1000, binary))

    def test_python_client_exec_v4(self):
        from kubernetes import client, config
        from kubernetes.stream import stream
        api_client = config.new_client_from_config(self.cluster.kubeconfig)
        core = client.CoreV1Api(api_client)
        response = stream(core.connect_get_namespaced_pod_exec, "exec-target", "default",
                          command=["sh", "-c", "echo out; echo err >&2; exit 5"],
                          stdin=False, stdout=True, stderr=True, tty=False,
                          _preload_content=False)
        response.run_forever(timeout=20)
        self.assertEqual(response.read_stdout(), "out\n")
        self.assertEqual(response.read_stderr(), "err\n")
        self.assertEqual(response.returncode, 5)
        response.close()
        api_client.close()
        exec_entries = [e for e in self.cluster.request_log() if e["resource"] == "pods/exec"]
        self.assertEqual(exec_entries[-1]["code"], 101)

    # --- protocol details ---------------------------------------------------------------

    def test_v5_stdin_close_and_channels(self):
        result = ws_exec(self.cluster, "default", "exec-target", ["sh", "-c", "cat; exit 0"],
                         stdin_chunks=[b"part one ", b"part two"], close_stdin=True)
        self.assertEqual(result.protocol, V5)
        self.assertEqual(result.messages[0], b"\x01", "first message: empty stdout frame")
        self.assertEqual(result.output(1), b"part one part two")
        self.assertEqual(result.status, {"metadata": {}, "status": "Success"})
        self.assertEqual(result.close_code, 1000)

    def test_v4_chosen_when_offered_first(self):
        result = ws_exec(self.cluster, "default", "exec-target", ["sh", "-c", "exit 42"],
                         protocols=(V4, V5))
        self.assertEqual(result.protocol, V4)
        status = result.status
        self.assertEqual(status["status"], "Failure")
        self.assertEqual(status["reason"], "NonZeroExitCode")
        self.assertEqual(status["details"]["causes"], [{"reason": "ExitCode", "message": "42"}])

    def test_no_common_protocol_bare_403(self):
        result = ws_exec(self.cluster, "default", "exec-target", ["true"],
                         protocols=("v9.channel.k8s.io",))
        self.assertEqual(result.handshake_status, 403)

    def test_legacy_server_rejects_v5(self):
        self.cluster.set_faults([{"type": "exec-legacy"}])
        only_v5 = ws_exec(self.cluster, "default", "exec-target", ["true"], protocols=(V5,))
        self.assertEqual(only_v5.handshake_status, 403)
        both = ws_exec(self.cluster, "default", "exec-target", ["echo", "legacy"])
        self.assertEqual(both.protocol, V4)
        self.assertEqual(both.output(1), b"legacy\n")

    def test_pre_upgrade_errors(self):
        cases = [
            ("missing-pod", {}, 404, "NotFound"),
            ("exec-target", {"container": "nope"}, 400, "BadRequest"),
            ("two-containers", {}, 400, "BadRequest"),
        ]
        for pod, extra, code, reason in cases:
            query = "command=true&stdout=true"
            if extra.get("container"):
                query += "&container=" + extra["container"]
            status, body = self.cluster.api(
                "GET", "%s/%s/exec?%s" % (PODS_API % "default", pod, query),
                headers={"Upgrade": "websocket", "Connection": "Upgrade",
                         "Sec-WebSocket-Version": "13",
                         "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                         "Sec-WebSocket-Protocol": V5})
            self.assertEqual(status, code, (pod, body))
            self.assertEqual(body["reason"], reason)
        status, body = self.cluster.api("GET", PODS_API % "default" +
                                        "/exec-target/exec?command=true&stdout=true")
        self.assertEqual(status, 400)
        self.assertEqual(body["message"], "Upgrade request required")

    def test_large_output_and_fragments(self):
        self.cluster.set_faults([{"type": "exec-fragment", "times": 1}])
        result = ws_exec(self.cluster, "default", "exec-target",
                         ["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x"])
        self.assertEqual(result.output(1), b"x" * 300000)
        self.assertGreater(len(result.messages), 3)
        self.assertEqual(result.status["status"], "Success")

    def test_cut_mid_frame(self):
        self.cluster.set_faults([{"type": "exec-cut", "afterBytes": 5, "times": 1}])
        result = ws_exec(self.cluster, "default", "exec-target",
                         ["sh", "-c", "echo 0123456789; sleep 0.2; echo more"], timeout=5)
        self.assertIsNone(result.status, "no status after a cut")
        self.assertNotEqual(result.close_code, 1000)
        self.assertNotIn(b"more", result.output(1))

    def test_no_status_fault(self):
        self.cluster.set_faults([{"type": "exec-no-status", "times": 1}])
        result = ws_exec(self.cluster, "default", "exec-target", ["echo", "frozen"], timeout=1.5)
        self.assertEqual(result.output(1), b"frozen\n")
        self.assertIsNone(result.status)
        self.assertEqual(result.error, "timeout")

    def test_tty_and_resize(self):
        result = ws_exec(self.cluster, "default", "exec-target",
                         ["sh", "-c", "sleep 0.3; stty size; test -t 0 && echo tty"],
                         tty=True, stderr=False, resize=(100, 40))
        self.assertEqual(result.output(1).replace(b"\r", b"").split(), [b"40", b"100", b"tty"])
        self.assertEqual(result.output(2), b"", "stderr is merged into the terminal")
        self.assertEqual(result.status["status"], "Success")

    def test_exec_into_stopped_container(self):
        body = sandbox_pod("half-done", restartPolicy="Never", containers=[
            {"name": "runs", "image": "debian:12", "command": ["sleep", "600"]},
            {"name": "done", "image": "debian:12", "command": ["true"]}])
        self.cluster.must("POST", PODS_API % "default", body)
        self.cluster.wait_for(lambda: any(
            "terminated" in s["state"] for s in (self.cluster.must(
                "GET", PODS_API % "default" + "/half-done").get("status") or {})
            .get("containerStatuses", [])), 10, message="container done to exit")
        result = ws_exec(self.cluster, "default", "half-done", ["true"], container="done")
        self.assertEqual(result.protocol, V5)
        self.assertEqual(result.status["reason"], "InternalError")
        self.assertIn('container not found ("done")', result.status["message"])
        finished = sandbox_pod("finished", command=["true"], restartPolicy="Never")
        self.cluster.must("POST", PODS_API % "default", finished)
        self.cluster.wait_for(lambda: (self.cluster.must(
            "GET", PODS_API % "default" + "/finished").get("status") or {})
            .get("phase") == "Succeeded", 10, message="pod finished to succeed")
        status, body = self.cluster.api("GET", PODS_API % "default" +
                                        "/finished/exec?command=true&stdout=true")
        self.assertEqual(status, 400)
        self.assertIn("current phase is Succeeded", body["message"])

    def test_container_selection(self):
        result = ws_exec(self.cluster, "default", "two-containers", ["echo", "b"],
                         container="b")
        self.assertEqual(result.output(1), b"b\n")

    # --- the pod is a real namespace sandbox --------------------------------------------

    def test_exec_runs_inside_pod_namespaces(self):
        script = ("hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; readlink /proc/self/ns/net; "
                  "readlink /proc/self/ns/pid")
        result = ws_exec(self.cluster, "default", "exec-target", ["sh", "-c", script])
        hostname, init, net_ns, pid_ns = result.output(1).decode().splitlines()
        self.assertEqual(hostname, "exec-target")
        self.assertEqual(init.strip(), "sleep infinity")
        self.assertNotEqual(net_ns, os.readlink("/proc/self/ns/net"))
        self.assertNotEqual(pid_ns, os.readlink("/proc/self/ns/pid"))
        runtime = next(r for r in self.cluster.pod_runtimes() if r["name"] == "exec-target")
        self.assertEqual(net_ns, os.readlink("/proc/%d/ns/net" % runtime["sandboxPid"]))
        address = ws_exec(self.cluster, "default", "exec-target",
                          ["sh", "-c", "ip -4 -o addr show eth0"]).output(1).decode()
        pod = self.cluster.must("GET", PODS_API % "default" + "/exec-target")
        self.assertIn(" %s/" % pod["status"]["podIP"], address)

    def test_pod_delete_kills_processes(self):
        create_running_pod(self.cluster, "default", sandbox_pod("short-lived"))
        runtime = next(r for r in self.cluster.pod_runtimes() if r["name"] == "short-lived")
        pids = [runtime["sandboxPid"], runtime["unsharePid"]] + \
            list(runtime["containers"].values())

        async def delete_while_running(ws, data):
            if data == b"\x01started\n":
                self.cluster.must("DELETE", PODS_API % "default" + "/short-lived")
        result = ws_exec(self.cluster, "default", "short-lived",
                         ["sh", "-c", "echo started; exec sleep 300"],
                         on_message=delete_while_running, timeout=20)
        self.assertEqual(result.status["reason"], "NonZeroExitCode")
        self.assertEqual(result.status["details"]["causes"][0]["message"], "137")
        self.cluster.wait_for(lambda: self.cluster.api(
            "GET", PODS_API % "default" + "/short-lived")[0] == 404, 10, message="pod removal")
        # A killed process disappears from /proc once its parent has reaped it.
        for pid in pids:
            self.cluster.wait_for(lambda: not os.path.exists("/proc/%d" % pid), 3,
                                  message="pid %d to exit" % pid)
        self.assertFalse(os.path.exists("/run/netns/" + runtime["netns"]))

    def test_exit_codes_table(self):
        for code in (0, 1, 2, 126, 255):
            result = ws_exec(self.cluster, "default", "exec-target",
                             ["sh", "-c", "exit %d" % code])
            status = result.status
            if code == 0:
                self.assertEqual(status["status"], "Success")
            else:
                self.assertEqual(json.dumps(status["details"]["causes"]),
                                 json.dumps([{"reason": "ExitCode", "message": str(code)}]))


if __name__ == "__main__":
    unittest.main()
