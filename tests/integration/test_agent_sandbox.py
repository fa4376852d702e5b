"""The agent-sandbox backend end to end: the real `sbx gitlab config|prepare|run|cleanup`,
driven by the emulated GitLab Runner (harness/), against the fake cluster (tests/cluster/),
whose pods are real namespace sandboxes on this machine and whose NetworkPolicies are
enforced with nftables. Two test hosts in network namespaces stand for the outside world:
one on the job's allow-list, one off it (also the enforcement probe's destination)."""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import yaml

from cluster_support import (EXTENSIONS_API, KUBECTL, FakeCluster, TestHost, kubectl,
                             require_cluster)
from harness.gitlab_runner import (BuildError, Job, Runner, RunnerSettings, SystemFailure,
                                   sandbox_processes)

NS = "ci"
TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(TOP, "config-examples")
BUILD = os.environ.get("SBX_BUILD_DIR", "")
SBX = os.path.join(os.path.abspath(BUILD), "sbx") if BUILD else ""
ALLOWED_HOST = ("allowed", "10.250.7.2", "10.250.7.1")
DENIED_HOST = ("denied", "10.250.7.6", "10.250.7.5")
CLAIMS = EXTENSIONS_API % (NS, "sandboxclaims")
SANDBOXES = "/apis/agents.x-k8s.io/v1beta1/namespaces/%s/sandboxes" % NS
POLICIES = "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies" % NS
PDBS = "/apis/policy/v1/namespaces/%s/poddisruptionbudgets" % NS
PODS = "/api/v1/namespaces/%s/pods" % NS

# Pods of the fake cluster run host binaries and share the host's file system; private tmpfs
# mounts in the pod's own mount namespace give each pod its own /builds, /cache and /tmp, as
# emptyDir volumes do on a real cluster.
POD_COMMAND = ("mkdir -p /builds /cache && mount -t tmpfs tmpfs /builds && "
               "mount -t tmpfs tmpfs /cache && mount -t tmpfs tmpfs /tmp && "
               "touch /tmp/.pod-ready && exec sleep infinity")


def template(name, unmanaged=True):
    spec = {"podTemplate": {"spec": {"containers": [{
        "name": "job", "image": "registry.example.com/ci:1",
        "command": ["sh", "-c", POD_COMMAND],
        "readinessProbe": {"exec": {"command": ["test", "-e", "/tmp/.pod-ready"]},
                           "periodSeconds": 1}}]}}}
    if unmanaged:
        spec["networkPolicyManagement"] = "Unmanaged"
    return {"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
            "metadata": {"name": name}, "spec": spec}


def warm_pool(name, template_name, replicas):
    return {"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxWarmPool",
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": template_name}}}


def marker(tag):
    """A command printing "<tag>-42", a line its own echo in the job log does not contain."""
    return "echo %s-$((6*7))" % tag, ("%s-42" % tag).encode()


class ClusterTestCase(unittest.TestCase):
    enforce = True
    auth_config = None

    @classmethod
    def setUpClass(cls):
        if not BUILD:
            raise unittest.SkipTest("SBX_BUILD_DIR is not set")
        cls.created_dirs = [d for d in ("/builds", "/cache") if not os.path.exists(d)]
        cls.cluster = FakeCluster(ready_delay=0.1, enforce_network_policies=cls.enforce,
                                  auth_config=cls.auth_config).start()
        try:
            cls.cluster.must("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
            for body in (template("ci"), template("public", unmanaged=False)):
                cls.cluster.must("POST", EXTENSIONS_API % (NS, "sandboxtemplates"), body)
            for body in (warm_pool("ci-pool", "ci", 2), warm_pool("cold-pool", "ci", 0),
                         warm_pool("public-pool", "public", 0)):
                cls.cluster.must("POST", EXTENSIONS_API % (NS, "sandboxwarmpools"), body)
            cls.allowed = TestHost(cls.cluster, *ALLOWED_HOST).__enter__()
            cls.denied = TestHost(cls.cluster, *DENIED_HOST).__enter__()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for host in ("denied", "allowed"):
            if hasattr(cls, host):
                getattr(cls, host).__exit__(None, None, None)
        cls.cluster.cleanup()
        for directory in cls.created_dirs:
            try:
                os.rmdir(directory)
            except OSError:
                pass

    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="sbx-agent-sandbox-")
        self.addCleanup(shutil.rmtree, self.work, True)
        self.cluster.clear_faults()

    def add_pool(self, template_body, pool, replicas):
        """Create TEMPLATE_BODY and a warm pool POOL of REPLICAS from it; both are deleted
        after the test."""
        templates = EXTENSIONS_API % (NS, "sandboxtemplates")
        pools = EXTENSIONS_API % (NS, "sandboxwarmpools")
        name = template_body["metadata"]["name"]
        self.cluster.must("POST", templates, template_body)
        self.addCleanup(self.cluster.api, "DELETE", "%s/%s" % (templates, name))
        self.cluster.must("POST", pools, warm_pool(pool, name, replicas))
        self.addCleanup(self.cluster.api, "DELETE", "%s/%s" % (pools, pool))

    def write_config(self, extra="", identity="runner", probe_timeout=10, margin=3600,
                     pools=""):
        path = os.path.join(self.work, "sbx.yaml")
        with open(path, "w") as stream:
            stream.write(
                "backend: agent-sandbox\n"
                "plugin_dir: %s\n"
                "state_dir: %s/state\n"
                "deadline_margin: %d\n"
                "stop_grace: 1\n"
                "network:\n"
                "  user_allow: [\"%s:8080\"]\n"
                "agent_sandbox:\n"
                "  kubeconfig: %s\n"
                "  namespace: %s\n"
                "  warm_pools:\n"
                "    \"*\": ci-pool\n"
                "    \"cold/*\": cold-pool\n"
                "    \"public/*\": public-pool\n%s"
                "  probe:\n"
                "    destination: \"%s:8080\"\n"
                "    timeout: %d\n%s"
                % (os.path.abspath(BUILD), self.work, margin, ALLOWED_HOST[1],
                   self.cluster.kubeconfig_for(identity), NS, pools, DENIED_HOST[1],
                   probe_timeout, extra))
        os.chmod(path, 0o600)
        return path

    def runner(self, config):
        environ = dict(os.environ, SBX_CONFIG=config)
        return Runner(RunnerSettings(SBX, environ=environ, preparation_retry_interval=0.1,
                                     graceful_kill_timeout=30, force_kill_timeout=5))

    def job(self, **kwargs):
        kwargs.setdefault("server_url", "http://127.0.0.1:9/")
        return Job(**kwargs)

    def sbx(self, config, *args):
        return subprocess.run([SBX] + list(args), env=dict(os.environ, SBX_CONFIG=config),
                              capture_output=True, text=True, timeout=120)

    def claim_names(self):
        return sorted(c["metadata"]["name"] for c in self.cluster.must("GET", CLAIMS)["items"])

    def sandbox_id(self, result_or_attempt):
        attempt = getattr(result_or_attempt, "attempts", [result_or_attempt])[-1]
        return attempt.job_env["SBX_SANDBOX_ID"]

    def objects_left(self, sandbox_id):
        """Names of the claim, policy and PDB of SANDBOX_ID that still exist."""
        left = []
        for path, name in ((CLAIMS, sandbox_id), (POLICIES, sandbox_id + "-egress"),
                           (PDBS, sandbox_id + "-pdb")):
            status, _ = self.cluster.api("GET", "%s/%s" % (path, name))
            if status == 200:
                left.append(name)
        return left

    def wait_all_gone(self, sandbox_id, timeout=20):
        self.cluster.wait_for(lambda: not self.objects_left(sandbox_id), timeout,
                              message="the objects of %s to be deleted" % sandbox_id)

    def journal_entries(self):
        directory = os.path.join(self.work, "state", "sandboxes")
        return sorted(os.listdir(directory)) if os.path.isdir(directory) else []

    def bound_pod(self, sandbox_id):
        claim = self.cluster.must("GET", "%s/%s" % (CLAIMS, sandbox_id))
        return claim["status"]["sandbox"]["name"]


@require_cluster
class AgentSandboxJobTest(ClusterTestCase):
    def test_success_path(self):
        config = self.write_config()
        command, expected = marker("hello")
        self.cluster.reset_requests()
        result = self.runner(config).run_job(self.job(script=[command, "hostname"]))
        log = bytes(result.log)
        self.assertEqual(result.status, "success", log.decode(errors="replace"))
        self.assertIn(expected, log)
        self.assertIn(b"(warm pool hit)", log)
        self.assertIn(b"NetworkPolicy enforced", log)
        self.assertEqual(result.stages(), ["prepare_script", "get_sources", "build_script",
                                           "cleanup_file_variables"])
        sandbox_id = self.sandbox_id(result)
        self.wait_all_gone(sandbox_id)
        self.assertEqual(self.journal_entries(), [])
        counts = self.cluster.request_counts()
        # One exec sets up and probes the pod, then one per stage.
        self.assertEqual(counts.get("get pods/exec"), 5, counts)
        self.assertEqual(counts.get("create sandboxclaims"), 1, counts)
        self.assertEqual(counts.get("delete sandboxclaims"), 1, counts)
        print("\nAPI requests of one job:", dict(sorted(counts.items())))

    def runner_requests(self):
        counts = {}
        for entry in self.cluster.request_log():
            if entry["identity"] == "runner":
                key = "%s %s" % (entry["verb"], entry["resource"])
                counts[key] = counts.get(key, 0) + 1
        return counts

    def test_api_requests_per_job(self):
        # The first job of a fresh state directory: no request is saved for later jobs.
        config = self.write_config()
        self.cluster.wait_for(lambda: self.cluster.must("GET", "%s/ci-pool" % (
            EXTENSIONS_API % (NS, "sandboxwarmpools"))).get("status", {}).get(
                "readyReplicas", 0) >= 1, 60, message="a ready sandbox in ci-pool")
        self.cluster.reset_requests()
        result = self.runner(config).run_job(self.job(script=["echo counted"], steps=[
            ("second", ["echo second"]), ("third", ["echo third"])]))
        self.assertEqual(result.status, "success", bytes(result.log).decode(errors="replace"))
        self.assertIn(b"(warm pool hit)", bytes(result.log))
        stages = len([r for r in result.execs if r.kind == "run"])
        self.assertEqual(stages, 6)
        counts = self.runner_requests()
        # A warm hit with a per-job NetworkPolicy and PDB makes these requests. Prepare: the
        # claim, its watch, the bound pod, the job's policy and PDB, and the list of the other
        # policies (the template's among them). Then one exec that sets the pod up and probes
        # egress, one exec per stage, and the claim's deletion.
        self.assertEqual(counts, {
            "create sandboxclaims": 1, "watch sandboxclaims": 1,
            "get pods": 1, "create networkpolicies": 1, "create poddisruptionbudgets": 1,
            "list networkpolicies": 1, "get pods/exec": 1 + stages,
            "delete sandboxclaims": 1})
        self.assertEqual(sum(counts.values()), 8 + stages)

    def test_template_made_managed_after_pool_filled_refused(self):
        """The policy a managed template makes is checked where it is in force: on the pod."""
        templates = EXTENSIONS_API % (NS, "sandboxtemplates")
        self.add_pool(template("switched"), "switched-pool", 1)
        config = self.write_config(pools="    \"switched/*\": switched-pool\n")
        result = self.runner(config).run_job(self.job(image="switched/app:1",
                                                      script=["echo ok"]))
        self.assertEqual(result.status, "success", bytes(result.log).decode(errors="replace"))

        # The pool's ready sandbox stays; the template now lets the controller manage a policy
        # with egress rules, which selects that sandbox's pod.
        self.cluster.must("PATCH", templates + "/switched",
                          {"spec": {"networkPolicyManagement": "Managed", "networkPolicy": {
                              "egress": [{"to": [{"ipBlock": {"cidr": "10.250.9.0/24"}}]}]}}},
                          content_type="application/merge-patch+json")
        self.cluster.wait_for(lambda: self.cluster.api(
            "GET", POLICIES + "/switched-network-policy")[0] == 200, 10,
            message="the template's NetworkPolicy")
        result = self.runner(config).run_job(self.job(image="switched/app:1"))
        log = bytes(result.log).decode(errors="replace")
        self.assertEqual(result.status, "system_failure", log)
        self.assertEqual([r.kind for r in result.execs if r.kind == "run"], [], log)
        self.assertIn("SandboxTemplate ci/switched of warm pool switched-pool lets the "
                      "controller manage NetworkPolicy switched-network-policy", log)
        self.wait_all_gone(self.sandbox_id(result))

    def test_script_failure_keeps_exit_code(self):
        config = self.write_config()
        result = self.runner(config).run_job(self.job(script=["echo failing", "exit 7"]))
        self.assertEqual(result.status, "failed", bytes(result.log).decode(errors="replace"))
        self.assertEqual(result.exit_code, 7)
        self.wait_all_gone(self.sandbox_id(result))

    def test_stream_cut_loses_no_output(self):
        config = self.write_config()
        attempt = self.runner(config).new_attempt(self.job())
        attempt.config()
        attempt.prepare()
        self.addCleanup(attempt.cleanup)
        sources = attempt.run_stage("get_sources", body=attempt.get_sources_body())
        self.assertIsNone(sources.error)
        # The next exec is cut mid-frame after 3000 bytes of output.
        self.cluster.set_faults([{"type": "exec-cut", "afterBytes": 3000, "times": 1,
                                  "namespace": NS}])
        record = attempt.run_stage("build_script", commands=[
            "for i in $(seq 1 300); do echo line-$i-abcdefghijklmnopqrstuvwxyz; "
            "[ $((i % 50)) = 0 ] && sleep 0.2; done", "exit 5"])
        self.assertIsInstance(record.error, BuildError, record.output.decode(errors="replace"))
        self.assertEqual(record.error.exit_code, 5)
        lines = [line for line in bytes(record.stdout).decode().splitlines()
                 if line.startswith("line-")]
        self.assertEqual(lines, ["line-%d-abcdefghijklmnopqrstuvwxyz" % i
                                 for i in range(1, 301)])
        self.assertIn(b"attaching again", bytes(record.stderr))

    def test_cancel_then_after_script_in_same_sandbox(self):
        config = self.write_config()
        ready, ready_bytes = marker("sleeping")
        after, after_bytes = marker("after")
        job = self.job(script=["hostname", ready, "sleep 777"],
                       after_script=["hostname", after])
        result = self.runner(config).run_job(job, cancel_on_output=ready_bytes)
        log = bytes(result.log)
        self.assertEqual(result.status, "canceled", log.decode(errors="replace"))
        self.assertIn(after_bytes, log)
        self.assertEqual(sandbox_processes(b"sleep\x00777"), [])
        stages = [r for r in result.execs if r.kind == "run"]
        build = next(r for r in stages if r.stage == "build_script")
        after_record = next(r for r in stages if r.stage == "after_script")
        pod = self.bound_pod_from(build)
        self.assertIn(pod.encode(), bytes(after_record.stdout))
        self.wait_all_gone(self.sandbox_id(result))

    def config_with_stop_grace(self, seconds):
        """write_config's file with stop_grace set to SECONDS."""
        path = self.write_config()
        with open(path) as stream:
            text = stream.read()
        self.assertIn("stop_grace: 1\n", text)
        with open(path, "w") as stream:
            stream.write(text.replace("stop_grace: 1\n", "stop_grace: %d\n" % seconds))
        return path

    def test_cancel_runs_term_trap_to_end(self):
        """SIGTERM to `sbx gitlab run` gives the whole step stop_grace: the TERM trap runs to
        its end, its output reaches the job log, and the stored script is removed."""
        config = self.config_with_stop_grace(5)
        waiting, waiting_bytes = marker("waiting")
        trap = ("trap 'echo got-TERM-$((6*7)); sleep 1; echo after-sleep-$((6*7)); exit 143' "
                "TERM")
        # Runs in after_script: for the stopped build step, names any stored script left.
        scripts_left = ("for f in /tmp/sbx/*.stopped; do echo stopped-$((6*7)); "
                        "for s in \"${f%.stopped}\".*.sh; do "
                        "[ -e \"$s\" ] && echo \"left-$((6*7)) $s\"; done; done; true")
        # The marker follows the background sleep, so SIGTERM cannot miss the sleep.
        job = self.job(script=[trap, "sleep 783 & %s; wait" % waiting],
                       after_script=[scripts_left])
        result = self.runner(config).run_job(job, cancel_on_output=waiting_bytes)

        log = bytes(result.log)
        self.assertEqual(result.status, "canceled", log.decode(errors="replace"))
        build = next(r for r in result.execs if r.stage == "build_script")
        after = next(r for r in result.execs if r.stage == "after_script")
        build_output = bytes(build.stdout)
        self.assertEqual([name for _, name in build.signals], ["SIGTERM"])
        # A cancelled stage exits with SYSTEM_FAILURE_EXIT_CODE (2), never a build failure.
        self.assertEqual(build.returncode, 2, bytes(build.output).decode(errors="replace"))
        self.assertIsInstance(build.error, SystemFailure)
        self.assertIn(b"got-TERM-42", build_output)
        self.assertIn(b"after-sleep-42", build_output)
        self.assertIn(b"got-TERM-42", log)
        self.assertIn(b"after-sleep-42", log)

        # The trap sleeps 1 s. The pod's first process never reaps the step's shell, and
        # its zombie must not hold the stop until the 5 s grace ends.
        stopped_after = build.exit_time - build.signals[0][0]
        self.assertGreaterEqual(stopped_after, 1.0)
        self.assertLess(stopped_after, 4.5)

        self.assertIsNone(after.error, bytes(after.output).decode(errors="replace"))
        after_output = bytes(after.stdout)
        self.assertEqual(after_output.count(b"stopped-42"), 1, after_output)
        self.assertNotIn(b"left-42", after_output)
        self.assertEqual(sandbox_processes(b"sleep\x00783"), [])
        self.wait_all_gone(self.sandbox_id(result))

    def bound_pod_from(self, record):
        for line in bytes(record.stdout).decode(errors="replace").splitlines():
            if line.startswith("ci-pool-"):
                return line.strip()
        self.fail("no pod name in the output: %r" % bytes(record.stdout))

    def test_cold_start(self):
        config = self.write_config()
        result = self.runner(config).run_job(self.job(image="cold/app:1",
                                                      script=["echo cold"]))
        log = bytes(result.log)
        self.assertEqual(result.status, "success", log.decode(errors="replace"))
        self.assertIn(b"(cold start)", log)
        self.wait_all_gone(self.sandbox_id(result))

    def test_egress_follows_allow_list(self):
        config = self.write_config()
        script = [
            "exec 3<>/dev/tcp/%s/8080 && head -1 <&3" % ALLOWED_HOST[1],
            "if timeout 3 bash -c 'exec 3<>/dev/tcp/%s/8080'; then echo denied-$((6*7))-reached; "
            "else echo denied-$((6*7))-blocked; fi" % DENIED_HOST[1],
        ]
        result = self.runner(config).run_job(self.job(script=script))
        log = bytes(result.log)
        self.assertEqual(result.status, "success", log.decode(errors="replace"))
        self.assertIn(b"hello allowed", log)
        self.assertIn(b"denied-42-blocked", log)
        self.assertNotIn(b"denied-42-reached", log)

    def test_sigkill_then_next_step_and_gc(self):
        config = self.write_config(margin=0)
        attempt = self.runner(config).new_attempt(self.job(timeout=8))
        attempt.config()
        attempt.prepare()
        sandbox_id = self.sandbox_id(attempt)
        kept = self.sbx(config, "gc")
        self.assertIn("kept", kept.stdout)
        self.assertEqual(self.objects_left(sandbox_id),
                         [sandbox_id, sandbox_id + "-egress", sandbox_id + "-pdb"])
        attempt.run_stage("get_sources", body=attempt.get_sources_body())
        started, started_bytes = marker("started")
        record = attempt.start_stage("build_script", commands=[started, "sleep 778"])
        self.assertTrue(record.wait_output(started_bytes, 30))
        os.killpg(record.pid, signal.SIGKILL)
        record.finished.wait(30)
        self.assertTrue(sandbox_processes(b"sleep\x00778"), "the step must outlive a killed sbx")
        after, after_bytes = marker("after")
        after_record = attempt.run_stage("after_script",
                                         body=attempt.user_body([after], after_script=True))
        self.assertIsNone(after_record.error, after_record.output.decode(errors="replace"))
        self.assertIn(after_bytes, bytes(after_record.output))
        self.assertIn(b"left running", bytes(after_record.output))
        self.assertEqual(sandbox_processes(b"sleep\x00778"), [])
        # No cleanup: the runner is gone. gc removes everything once the deadline passed.
        end = time.monotonic() + 20
        while True:
            destroyed = self.sbx(config, "gc")
            if "destroyed" in destroyed.stdout or time.monotonic() > end:
                break
            time.sleep(0.5)
        self.assertIn("destroyed", destroyed.stdout, destroyed.stderr)
        self.assertEqual(self.journal_entries(), [])
        self.wait_all_gone(sandbox_id)
        attempt.remove_temp_dir()

    def test_pod_deleted_mid_job(self):
        config = self.write_config()
        attempt = self.runner(config).new_attempt(self.job())
        attempt.config()
        attempt.prepare()
        sandbox_id = self.sandbox_id(attempt)
        attempt.run_stage("get_sources", body=attempt.get_sources_body())
        started, started_bytes = marker("started")
        record = attempt.start_stage("build_script", commands=[started, "sleep 30"])
        self.assertTrue(record.wait_output(started_bytes, 30))
        pod = self.bound_pod(sandbox_id)
        self.cluster.must("DELETE", "%s/%s?gracePeriodSeconds=0" % (PODS, pod))
        self.assertTrue(record.finished.wait(90))
        self.assertIsInstance(record.error, SystemFailure,
                              record.output.decode(errors="replace"))
        cleanup = attempt.cleanup()
        self.assertEqual(cleanup.returncode, 0, cleanup.output.decode(errors="replace"))
        self.wait_all_gone(sandbox_id)
        attempt.remove_temp_dir()

    def test_direct_sandbox_runs_job_image(self):
        extra = ("  allowed_images: [\"direct/*\"]\n"
                 "  pod_template:\n"
                 "    spec:\n"
                 "      containers:\n"
                 "        - name: job\n"
                 "          command: [sh, -c, %s]\n"
                 "          readinessProbe:\n"
                 "            exec: {command: [test, -e, /tmp/.pod-ready]}\n"
                 "            periodSeconds: 1\n" % json.dumps(POD_COMMAND))
        config = self.write_config(extra)
        attempt = self.runner(config).new_attempt(self.job(image="direct/app:1"))
        attempt.config()
        prepare = attempt.prepare()
        sandbox_id = self.sandbox_id(attempt)
        self.assertIn(b"(direct Sandbox)", bytes(prepare.output))
        sandbox = self.cluster.must("GET", "%s/%s" % (SANDBOXES, sandbox_id))
        pod_spec = sandbox["spec"]["podTemplate"]["spec"]
        self.assertEqual(pod_spec["containers"][0]["image"], "direct/app:1")
        self.assertIs(pod_spec["automountServiceAccountToken"], False)
        self.assertEqual(sandbox["spec"]["shutdownPolicy"], "Delete")
        self.assertEqual(sandbox["metadata"]["labels"]["sbx.dev/job"], str(attempt.job.id))
        # Created before the Sandbox, the policy is handed to it right after, so it goes with
        # the Sandbox even if the runner host loses its state.
        policy = self.cluster.must("GET", "%s/%s-egress" % (POLICIES, sandbox_id))
        self.assertEqual([(o["kind"], o["name"], o["uid"])
                          for o in policy["metadata"].get("ownerReferences", [])],
                         [("Sandbox", sandbox_id, sandbox["metadata"]["uid"])])
        command, expected = marker("direct")
        attempt.run_stage("get_sources", body=attempt.get_sources_body())
        record = attempt.run_stage("build_script", commands=[command])
        self.assertIsNone(record.error, record.output.decode(errors="replace"))
        self.assertIn(expected, bytes(record.stdout))
        cleanup = attempt.cleanup()
        self.assertEqual(cleanup.returncode, 0, cleanup.output.decode(errors="replace"))
        attempt.remove_temp_dir()
        self.cluster.wait_for(
            lambda: all(self.cluster.api("GET", "%s/%s" % (path, name))[0] == 404
                        for path, name in ((SANDBOXES, sandbox_id),
                                           (POLICIES, sandbox_id + "-egress"),
                                           (PDBS, sandbox_id + "-pdb"))),
            20, message="the direct Sandbox's objects to be deleted")

    def test_api_errors_during_prepare_are_retried(self):
        config = self.write_config()
        self.cluster.reset_requests()
        self.cluster.set_faults([
            {"type": "status", "code": 429, "retryAfter": 1, "times": 2, "contentType": "text",
             "verb": "create", "resource": "sandboxclaims"},
            {"type": "status", "code": 503, "times": 2, "verb": "get", "resource": "pods"},
        ])
        result = self.runner(config).run_job(self.job(script=["echo ok"]))
        self.assertEqual(result.status, "success", bytes(result.log).decode(errors="replace"))
        self.assertEqual(len(result.attempts), 1)
        counts = self.cluster.request_counts()
        self.assertEqual(counts.get("create sandboxclaims"), 3, counts)
        self.assertEqual(counts.get("get pods"), 3, counts)

    def test_job_timeout_stops_and_cleans_up(self):
        config = self.write_config()
        runner = self.runner(config)
        # Cleanup starts as soon as the job times out, while `run` is still stopping the step.
        runner.settings.build_finish_timeout = 0
        started, started_bytes = marker("started")
        job = self.job(timeout=12, script=[started, "sleep 779"],
                       after_script=[marker("after")[0]])
        result = runner.run_job(job)
        log = bytes(result.log)
        self.assertEqual(result.status, "timedout", log.decode(errors="replace"))
        self.assertIn(started_bytes, log)
        self.assertNotIn(b"after-42", log)
        run_stages = [r.stage for r in result.execs if r.kind == "run"]
        self.assertEqual(run_stages, ["prepare_script", "get_sources", "build_script"])
        build = next(r for r in result.execs if r.stage == "build_script")
        cleanup = next(r for r in result.execs if r.kind == "cleanup")
        self.assertTrue(build.signals, "the runner must signal the timed-out run")
        self.assertTrue(build.finished.wait(60), "the timed-out run must end")
        self.assertLess(cleanup.start_time, build.end_time,
                        "cleanup must start while run is still terminating")
        self.assertEqual(cleanup.returncode, 0, cleanup.output.decode(errors="replace"))
        self.wait_all_gone(self.sandbox_id(result))
        self.assertEqual(self.journal_entries(), [])
        self.cluster.wait_for(lambda: not sandbox_processes(b"sleep\x00779"), 30,
                              message="the timed-out step to stop")

    def test_prepare_retried_while_objects_terminate(self):
        config = self.write_config()
        # A finalizer keeps every claim of this test terminating after its deletion, and the
        # first two attempts fail in their setup exec, after the claim, policy and PDB exist.
        # Each failed upgrade is one request: its response body carries the Status.
        # The slow PDB creation gives the holder time to reach each claim first.
        holder = FinalizerHolder(self.cluster)
        self.addCleanup(holder.release)
        self.cluster.set_faults([{"type": "status", "code": 500, "times": 2,
                                  "resource": "pods/exec", "namespace": NS},
                                 {"type": "latency", "ms": 1000, "verb": "create",
                                  "resource": "poddisruptionbudgets", "namespace": NS}])
        result = self.runner(config).run_job(self.job(script=["echo third-$((6*7))"]))
        log = bytes(result.log)
        self.assertEqual(result.status, "success", log.decode(errors="replace"))
        self.assertIn(b"third-42", log)
        self.assertEqual(len(result.attempts), 3, log.decode(errors="replace"))
        ids = [attempt.job_env["SBX_SANDBOX_ID"] for attempt in result.attempts]
        self.assertEqual(len(set(ids)), 3, ids)
        cleanups = [r for r in result.execs if r.kind == "cleanup"]
        self.assertEqual(len(cleanups), 3)
        for record in cleanups:
            self.assertEqual(record.returncode, 0, record.output.decode(errors="replace"))
        # Each failed attempt's claim was deleted but is still there, terminating: the next
        # attempt and its cleanup ran beside it.
        for sandbox_id in ids:
            claim = self.cluster.must("GET", "%s/%s" % (CLAIMS, sandbox_id))
            self.assertIn("deletionTimestamp", claim["metadata"], sandbox_id)
        self.assertEqual(self.journal_entries(), [])
        holder.release()
        for sandbox_id in ids:
            self.wait_all_gone(sandbox_id)

    def test_killed_run_stopped_before_next_script(self):
        config = self.write_config()
        attempt = self.runner(config).new_attempt(self.job())
        attempt.config()
        attempt.prepare()
        self.addCleanup(attempt.remove_temp_dir)
        self.addCleanup(attempt.cleanup)
        attempt.run_stage("get_sources", body=attempt.get_sources_body())
        started, started_bytes = marker("started")
        record = attempt.start_stage("build_script", commands=[started, "sleep 781"])
        self.assertTrue(record.wait_output(started_bytes, 30))
        os.killpg(record.pid, signal.SIGKILL)
        record.finished.wait(30)
        self.assertTrue(sandbox_processes(b"sleep\x00781"), "the step must outlive a killed sbx")
        # The first command of the next stage counts live processes running "sleep 781"
        # (zombies have an empty command line); the [p] keeps grep itself out.
        count = ("n=0; for f in /proc/[0-9]*/cmdline; do "
                 "if tr '\\0' ' ' < \"$f\" 2>/dev/null | grep -q '^slee[p] 781'; then "
                 "n=$((n + 1)); fi; done; echo leftover-count-$n")
        after = attempt.run_stage("after_script", body=attempt.user_body([count],
                                                                        after_script=True))
        output = bytes(after.output)
        self.assertIsNone(after.error, output.decode(errors="replace"))
        self.assertIn(b"left running", output)
        self.assertIn(b"leftover-count-0", output)
        self.assertEqual(sandbox_processes(b"sleep\x00781"), [])

    def test_busybox_shell_runs_job(self):
        """A pod whose sh and tools are busybox's (ash, dd, cat, sleep, setsid) runs the
        step wrapper and a job with `shell: sh`, exit code included."""
        if shutil.which("busybox") is None:
            self.skipTest("busybox is not installed (apt-get install busybox)")

        body = template("busybox")
        container = body["spec"]["podTemplate"]["spec"]["containers"][0]
        container["command"] = ["sh", "-c", POD_COMMAND.replace(
            "touch /tmp/.pod-ready", "mkdir /tmp/bb && busybox --install -s /tmp/bb && "
            "touch /tmp/.pod-ready")]
        # The exec inherits the container's environment, so sh and every tool the wrapper
        # runs come from /tmp/bb first.
        container["env"] = [{"name": "PATH", "value": "/tmp/bb:/usr/local/sbin:"
                             "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}]

        self.add_pool(body, "busybox-pool", 1)
        config = self.write_config(extra="shell: sh\n",
                                   pools="    \"busybox/*\": busybox-pool\n")

        shells, shells_bytes = marker("shells")
        job = self.job(image="busybox/app:1", script=[
            "echo \"$(readlink /proc/$$/exe) $(readlink /proc/$PPID/exe)\"",
            shells, "exit 6"])
        result = self.runner(config).run_job(job)

        log = bytes(result.log)
        self.assertEqual(result.status, "failed", log.decode(errors="replace"))
        self.assertEqual(result.exit_code, 6)
        self.assertIn(shells_bytes, log)
        # The step's shell and its runner (started by the wrapper) are both busybox.
        self.assertRegex(log, rb"\n/usr/bin/busybox /usr/bin/busybox\r?\n")
        # Prepare installed the wrapper, so no stage needed the bootstrap.
        self.assertNotIn(b"prepared by another sbx version", log)
        self.wait_all_gone(self.sandbox_id(result))

    def test_missing_wrapper_bootstrapped(self):
        """A sandbox prepared without the installed wrapper (another sbx version) gets it
        on stdin once; the stages after that use the file."""
        config = self.write_config()
        attempt = self.runner(config).new_attempt(self.job())
        attempt.config()
        attempt.prepare()
        self.addCleanup(attempt.remove_temp_dir)
        self.addCleanup(attempt.cleanup)
        sources = attempt.run_stage("get_sources", body=attempt.get_sources_body())
        self.assertIsNone(sources.error, sources.output.decode(errors="replace"))
        remove = "rm -f /tmp/sbx/step-*.sh; echo removed-$((6*7))"
        first = attempt.run_stage("build_script", commands=[remove])
        self.assertIsNone(first.error, first.output.decode(errors="replace"))
        self.assertIn(b"removed-42", bytes(first.stdout))
        command, expected = marker("second")
        second = attempt.run_stage("after_script", body=attempt.user_body(
            [command, "ls /tmp/sbx/ | grep -c '^step-.*\\.sh$'"], after_script=True))
        self.assertIsNone(second.error, second.output.decode(errors="replace"))
        self.assertIn(expected, bytes(second.stdout))
        self.assertIn(b"prepared by another sbx version", bytes(second.output))
        # The bootstrap installed the wrapper again before the step ran.
        self.assertIn(b"\n1\n", bytes(second.stdout).replace(b"\r", b""))
        third = attempt.run_stage("cleanup_file_variables", commands=["true"])
        self.assertIsNone(third.error, third.output.decode(errors="replace"))
        self.assertNotIn(b"prepared by another sbx version", bytes(third.output))


class FinalizerHolder:
    """Adds a finalizer to every SandboxClaim of the namespace until release(), so deleted
    claims stay terminating with their Sandbox, pod, NetworkPolicy and PDB."""

    FINALIZER = "test.sbx.dev/hold"

    def __init__(self, cluster):
        self.cluster = cluster
        self.held = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.wait(0.02):
            status, claims = self.cluster.api("GET", CLAIMS)
            if status != 200:
                continue
            for claim in claims["items"]:
                meta = claim["metadata"]
                if meta["name"] in self.held or meta.get("deletionTimestamp"):
                    continue
                status, _ = self.cluster.api(
                    "PATCH", "%s/%s" % (CLAIMS, meta["name"]),
                    {"metadata": {"finalizers": [self.FINALIZER]}},
                    content_type="application/merge-patch+json")
                if status == 200:
                    self.held.add(meta["name"])

    def release(self):
        self.stop.set()
        self.thread.join()
        for name in sorted(self.held):
            self.cluster.api("PATCH", "%s/%s" % (CLAIMS, name),
                             {"metadata": {"finalizers": None}},
                             content_type="application/merge-patch+json")
        self.held.clear()


# Jobs of the parallel test; SBX_PARALLEL_JOBS lowers it on slow machines.
PARALLEL_JOBS = int(os.environ.get("SBX_PARALLEL_JOBS", "50"))


@require_cluster
class AgentSandboxParallelTest(ClusterTestCase):
    def wait_pool_pods_gone(self):
        self.cluster.wait_for(lambda: not [
            pod for pod in self.cluster.must("GET", PODS)["items"]
            if pod["metadata"]["name"].startswith("parallel-pool-")], 120,
            message="the pods of parallel-pool to be deleted")

    def test_parallel_jobs_stay_apart(self):
        count = PARALLEL_JOBS
        pools = "    \"parallel/*\": parallel-pool\n"
        config = self.write_config(pools=pools, probe_timeout=60)
        started = time.monotonic()
        # Pods that stop at once, so the pool's 50 pods are gone before the next test.
        body = template("parallel")
        body["spec"]["podTemplate"]["spec"]["terminationGracePeriodSeconds"] = 0
        # Cleanups run last first: the pool and template go, then their pods are awaited.
        self.addCleanup(self.wait_pool_pods_gone)
        self.add_pool(body, "parallel-pool", count)
        self.cluster.wait_for(lambda: self.cluster.must("GET", "%s/parallel-pool" % (
            EXTENSIONS_API % (NS, "sandboxwarmpools"))).get("status", {}).get(
                "readyReplicas") == count, 180, message="%d warm sandboxes" % count)
        pool_ready = time.monotonic() - started

        results = [None] * count
        jobs = [self.job(job_id=700000 + i, image="parallel/app:1", script=[
            "echo own-%d-$((6*7)) > /builds/own-%d" % (i, i),
            "ls /builds /tmp | tr '\\n' ' '; echo",
            "cat /builds/own-*"]) for i in range(count)]

        def run(index):
            results[index] = self.runner(config).run_job(jobs[index])

        started = time.monotonic()
        threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        jobs_time = time.monotonic() - started
        print("\n%d parallel jobs: warm pool ready in %.1f s, jobs done in %.1f s"
              % (count, pool_ready, jobs_time))

        for index, result in enumerate(results):
            log = bytes(result.log).decode(errors="replace")
            self.assertEqual(result.status, "success", log)
            self.assertIn("own-%d-42" % index, log)
            self.assertEqual(set(re.findall(r"own-(\d+)", log)), {str(index)}, log)
        ids = [self.sandbox_id(result) for result in results]
        self.assertEqual(len(set(ids)), count)

        def sbx_objects():
            selector = "?labelSelector=sbx.dev%2Fsandbox-id"
            return [item["metadata"]["name"] for path in (CLAIMS, POLICIES, PDBS, SANDBOXES)
                    for item in self.cluster.must("GET", path + selector)["items"]]

        self.cluster.wait_for(lambda: not sbx_objects(), 60,
                              message="the objects of %d jobs to be deleted" % count)
        self.assertEqual(self.claim_names(), [])
        self.assertEqual(self.journal_entries(), [])
        self.assertEqual(os.listdir(os.path.join(self.work, "state", "locks")), [])


@require_cluster
class AgentSandboxRefusalTest(ClusterTestCase):
    def failed_prepare(self, result):
        log = bytes(result.log).decode(errors="replace")
        self.assertEqual(result.status, "system_failure", log)
        self.assertEqual([r.kind for r in result.execs if r.kind == "run"], [], log)
        return log

    def test_terminal_claim_reason_fails_fast(self):
        extra = ("  allowed_label_domains: [example.com]\n"
                 "  pod_labels: {\"example.com/team\": ci}\n")
        config = self.write_config(extra)
        started = time.monotonic()
        result = self.runner(config).run_job(self.job())
        log = self.failed_prepare(result)
        self.assertIn("InvalidMetadata", log)
        self.assertLess(time.monotonic() - started, 30)
        self.assertEqual(self.claim_names(), [])
        self.assertEqual(self.journal_entries(), [])

    def test_probe_destination_on_allow_list_refused(self):
        config = self.write_config()
        with open(config) as stream:
            text = stream.read()
        probe = '    destination: "%s:8080"' % DENIED_HOST[1]
        self.assertIn(probe, text)
        with open(config, "w") as stream:
            stream.write(text.replace(probe, '    destination: "%s:8080"' % ALLOWED_HOST[1]))
        self.cluster.reset_requests()
        result = self.runner(config).run_job(self.job())
        log = self.failed_prepare(result)
        self.assertIn("agent_sandbox.probe.destination %s:8080 is on the job's egress "
                      "allow-list" % ALLOWED_HOST[1], log)
        self.assertNotIn("create sandboxclaims", self.cluster.request_counts())

    def test_template_with_public_egress_refused(self):
        config = self.write_config()
        self.cluster.reset_requests()
        result = self.runner(config).run_job(self.job(image="public/app:1"))
        log = self.failed_prepare(result)
        self.assertIn("networkPolicyManagement: Unmanaged", log)
        self.assertIn("NetworkPolicy public-network-policy", log)
        self.wait_all_gone(self.sandbox_id(result))
        # The runner's retries of the prepare meet the same policy: only the first claims.
        self.assertEqual(len(result.attempts), 3, log)
        self.assertIn("an earlier attempt of job %d was rejected" % result.attempts[0].job.id,
                      log)
        self.assertEqual(self.cluster.request_counts().get("create sandboxclaims"), 1, log)
        # Another job checks again.
        again = self.runner(config).run_job(self.job(image="public/app:1"))
        self.assertEqual(self.cluster.request_counts().get("create sandboxclaims"), 2)
        self.assertIn("NetworkPolicy public-network-policy",
                      bytes(again.log).decode(errors="replace"))

    def test_other_policy_allowing_more_refused(self):
        policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                  "metadata": {"name": "open-egress"},
                  "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                           "egress": [{"to": [{"ipBlock": {"cidr": "10.250.9.0/24"}}]}]}}
        self.cluster.must("POST", POLICIES, policy)
        self.addCleanup(self.cluster.api, "DELETE", POLICIES + "/open-egress")
        config = self.write_config()
        result = self.runner(config).run_job(self.job())
        log = self.failed_prepare(result)
        self.assertIn("NetworkPolicy ci/open-egress selects the job's pod", log)
        self.assertIn("allows 10.250.9.0/24 on every port", log)
        self.assertEqual(self.claim_names(), [])

        accepted = self.write_config("  accepted_policies: [open-egress]\n")
        result = self.runner(accepted).run_job(self.job(script=["echo accepted"]))
        self.assertEqual(result.status, "success", bytes(result.log).decode(errors="replace"))
        self.assertIn(b"accepted by agent_sandbox.accepted_policies", bytes(result.log))

    def test_forbidden_exec_reported(self):
        config = self.write_config()
        self.cluster.set_faults([{"type": "status", "code": 403, "reason": "Forbidden",
                                  "message": "pods \"x\" is forbidden: cannot create "
                                             "resource \"pods/exec\"",
                                  "resource": "pods/exec"}])
        result = self.runner(config).run_job(self.job())
        log = self.failed_prepare(result)
        self.assertIn("grant the runner's identity get and create on pods/exec", log)
        self.assertEqual(self.claim_names(), [])


@require_cluster
class AgentSandboxUnenforcedTest(ClusterTestCase):
    enforce = False

    def test_unenforced_policy_caught_by_probe(self):
        config = self.write_config(probe_timeout=2)
        result = self.runner(config).run_job(self.job())
        log = bytes(result.log).decode(errors="replace")
        self.assertEqual(result.status, "system_failure", log)
        self.assertIn("does not enforce NetworkPolicies", log)
        self.assertEqual([r for r in result.execs if r.kind == "run"], [])
        self.assertEqual(self.claim_names(), [])


def example_documents(name):
    with open(os.path.join(EXAMPLES, "kubernetes", name)) as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def example_role_rules():
    role = next(d for d in example_documents("rbac.yaml") if d["kind"] == "Role")
    return [dict(rule, namespaces=[role["metadata"]["namespace"]]) for rule in role["rules"]]


@require_cluster
class ConfigExamplesTest(ClusterTestCase):
    """Every sbx example loads, and the Kubernetes examples apply and are enough for a job."""

    @classmethod
    def setUpClass(cls):
        handle, cls.auth_config = tempfile.mkstemp(prefix="sbx-example-role-", suffix=".json")
        with os.fdopen(handle, "w") as stream:
            json.dump({"identities": [{"name": "example-role", "rules": example_role_rules()}]},
                      stream)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        os.unlink(cls.auth_config)

    def test_sbx_examples_load(self):
        names = sorted(n for n in os.listdir(EXAMPLES) if n.endswith(".yaml"))
        self.assertIn("k8s-warm-pool.yaml", names)
        self.assertIn("k8s-direct.yaml", names)
        for name in names:
            result = subprocess.run([SBX, "--config", os.path.join(EXAMPLES, name),
                                     "--plugin-dir", os.path.abspath(BUILD), "doctor"],
                                    capture_output=True, text=True, timeout=60)
            self.assertRegex(result.stdout, r"(?m)^ok +config: ", name + result.stdout)
            self.assertNotRegex(result.stdout, r"(?m)^FAILED +(config|plugin|backend):",
                                name + result.stdout)

    @unittest.skipIf(KUBECTL is None, "kubectl is not installed")
    def test_kubernetes_examples_apply(self):
        for name in ("warm-pool.yaml", "shared-pdb.yaml"):
            result = kubectl(self.cluster, "apply", "-f", os.path.join(EXAMPLES, "kubernetes",
                                                                      name))
            self.assertEqual(result.returncode, 0, result.stderr)
        # The fake serves no RBAC kinds: the ServiceAccount is applied here, and the Role's
        # rules are this cluster's "example-role" identity, which the job below uses.
        accounts = [d for d in example_documents("rbac.yaml") if d["kind"] == "ServiceAccount"]
        result = kubectl(self.cluster, "apply", "-f", "-", input_data=yaml.safe_dump_all(accounts))
        self.assertEqual(result.returncode, 0, result.stderr)
        template = self.cluster.must("GET", "%s/ci-debian" % EXTENSIONS_API % (
            NS, "sandboxtemplates"))
        self.assertEqual(template["spec"]["networkPolicyManagement"], "Unmanaged")
        self.assertEqual(template["spec"]["podTemplate"]["spec"]["runtimeClassName"], "gvisor")
        self.cluster.must("GET", PDBS + "/sbx-shared")
        self.cluster.must("GET", "/api/v1/namespaces/%s/serviceaccounts/sbx-runner" % NS)

    def test_example_role_runs_a_job(self):
        config = self.write_config(identity="example-role")
        result = self.runner(config).run_job(self.job(script=["echo role-$((6*7))"]))
        log = bytes(result.log)
        self.assertEqual(result.status, "success", log.decode(errors="replace"))
        self.assertIn(b"role-42", log)
        doctor = self.sbx(config, "doctor")
        self.assertRegex(doctor.stdout, r"(?m)^ok +permissions: all \d+ verbs", doctor.stdout)
        self.assertRegex(doctor.stdout, r"(?m)^ok +warm pool ci-pool: ", doctor.stdout)
        self.assertRegex(doctor.stdout, r"(?m)^FAILED +warm pool public-pool: ", doctor.stdout)
        self.assertRegex(doctor.stdout, r"(?m)^ok +agents.x-k8s.io: ", doctor.stdout)
        # The example Role cannot create pods, so the doctor's probe pod is only a warning.
        self.assertRegex(doctor.stdout, r"(?m)^warning +NetworkPolicy enforcement: ",
                         doctor.stdout)

    def test_doctor_probe_pod_sees_enforcement(self):
        config = self.write_config(identity="admin")
        doctor = self.sbx(config, "doctor")
        self.assertRegex(doctor.stdout, r"(?m)^ok +NetworkPolicy enforcement: ", doctor.stdout)
        self.assertRegex(doctor.stdout, r"(?m)^ok +authentication: authenticated as admin",
                         doctor.stdout)


if __name__ == "__main__":
    unittest.main()
