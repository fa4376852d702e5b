"""`sbx doctor` of the agent-sandbox backend against the fake cluster (tests/cluster/).

The enforcement probe runs only with the verbs to clean up after itself, and each failure gets
the fix of its class. A few of the backend's messages name the objects they acted on."""
import base64
import json
import os
import signal
import tempfile
import unittest

import yaml

from cluster_support import EXTENSIONS_API, KUBECTL, kubectl, require_cluster
from test_agent_sandbox import (NS, POD_COMMAND, POLICIES, PODS, ClusterTestCase,
                                example_role_rules, warm_pool)

DOCTOR_LABEL = "sbx.dev/doctor"
DIRECT_TEMPLATE = ("  allowed_images: [\"direct/*\"]\n"
                   "  pod_template:\n"
                   "    spec:\n"
                   "      containers:\n"
                   "        - name: job\n"
                   "          command: [sh, -c, %s]\n" % json.dumps(POD_COMMAND))
PROBE_RULES = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete"],
                "namespaces": [NS]}]


def rules_without(rules, resource, verb):
    """RULES with VERB removed from every rule on RESOURCE."""
    result = []
    for rule in rules:
        rule = dict(rule)
        if resource in rule["resources"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != verb]
        result.append(rule)
    return result


def doctor_lines(output, name):
    """The lines of check NAME in doctor OUTPUT, each with its fix line when it has one."""
    lines = output.splitlines()
    found = []
    for index, line in enumerate(lines):
        if line[9:].startswith(name + ":"):
            fix = lines[index + 1] if index + 1 < len(lines) else ""
            found.append((line, fix if fix.startswith("  fix: ") else ""))
    return found


@require_cluster
class DoctorProbeTest(ClusterTestCase):
    """The identities differ only in what the enforcement probe needs."""

    @classmethod
    def setUpClass(cls):
        role = example_role_rules()
        identities = [
            {"name": "example-role", "rules": role},
            {"name": "prober", "rules": role + PROBE_RULES},
            # May create its NetworkPolicy and pod but not delete the policy.
            {"name": "no-policy-delete",
             "rules": rules_without(role, "networkpolicies", "delete") + PROBE_RULES},
        ]
        handle, cls.auth_config = tempfile.mkstemp(prefix="sbx-doctor-", suffix=".json")
        with os.fdopen(handle, "w") as stream:
            json.dump({"identities": identities}, stream)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        os.unlink(cls.auth_config)

    def doctor_objects(self):
        """Names of the pods and NetworkPolicies that carry the doctor's label."""
        names = []
        for kind, path in (("Pod", PODS), ("NetworkPolicy", POLICIES)):
            items = self.cluster.must("GET", path + "?labelSelector=" + DOCTOR_LABEL)["items"]
            names.extend("%s %s" % (kind, o["metadata"]["name"]) for o in items)
        return names

    def delete_doctor_objects(self):
        self.cluster.clear_faults()
        for name in self.doctor_objects():
            kind, object_name = name.split()
            path = PODS if kind == "Pod" else POLICIES
            self.cluster.api("DELETE", "%s/%s" % (path, object_name))

    def creates(self):
        counts = self.cluster.request_counts()
        return counts.get("create networkpolicies", 0), counts.get("create pods", 0)

    def test_probe_skipped_without_policy_delete(self):
        config = self.write_config(identity="no-policy-delete")
        self.cluster.reset_requests()
        doctor = self.sbx(config, "doctor")
        [(line, fix)] = doctor_lines(doctor.stdout, "NetworkPolicy enforcement")
        self.assertRegex(line, r"^warning +NetworkPolicy enforcement: skipped: ", doctor.stdout)
        self.assertIn("delete networkpolicies.networking.k8s.io", line)
        self.assertNotIn("create pods", line)
        self.assertIn("each job still probes its own pod", fix)
        self.assertEqual(self.creates(), (0, 0))
        self.assertEqual(self.doctor_objects(), [])

    def test_probe_skipped_without_pod_verbs(self):
        config = self.write_config(identity="example-role")
        self.cluster.reset_requests()
        doctor = self.sbx(config, "doctor")
        self.assertEqual(doctor.returncode, 1, doctor.stdout)  # the public-pool template
        [(line, _)] = doctor_lines(doctor.stdout, "NetworkPolicy enforcement")
        self.assertIn("skipped: the identity may not create pods, delete pods in namespace "
                      "ci", line)
        self.assertRegex(doctor.stdout, r"(?m)^ok +permissions: all \d+ verbs")
        self.assertEqual(self.creates(), (0, 0))

    def test_probe_runs_and_removes_its_objects(self):
        config = self.write_config(identity="prober")
        self.cluster.reset_requests()
        doctor = self.sbx(config, "doctor")
        self.assertRegex(doctor.stdout, r"(?m)^ok +NetworkPolicy enforcement: a pod under a "
                                        r"deny-all policy cannot reach")
        self.assertEqual(self.creates(), (1, 1))
        self.cluster.wait_for(lambda: self.doctor_objects() == [], 20,
                              message="the probe's pod and policy to be deleted")

    def test_probe_leftover_reported_and_labelled(self):
        config = self.write_config(identity="prober")
        self.cluster.set_faults([{"type": "status", "code": 403, "reason": "Forbidden",
                                  "message": "pods is forbidden", "verb": "delete",
                                  "resource": "pods", "identity": "prober"}])
        self.addCleanup(self.delete_doctor_objects)
        doctor = self.sbx(config, "doctor")
        lines = doctor_lines(doctor.stdout, "NetworkPolicy enforcement")
        self.assertEqual(len(lines), 2, doctor.stdout)
        self.assertRegex(lines[0][0], r"^ok +")
        self.assertRegex(lines[1][0], r"^warning +NetworkPolicy enforcement: cannot delete the "
                                      r"probe's pod and NetworkPolicy ci/sbx-doctor-[0-9a-f]{8}:")
        command = "kubectl -n ci delete pods,networkpolicies -l " + DOCTOR_LABEL
        self.assertIn(command, lines[1][1])
        left = self.doctor_objects()
        self.assertEqual(len(left), 2, left)
        self.assertEqual({name.split()[1] for name in left}, {lines[1][0].split("/")[1][:19]})
        self.cluster.clear_faults()
        if KUBECTL is None:
            self.skipTest("kubectl is not installed: the documented command was not run")
        result = kubectl(self.cluster, *command.split()[1:])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.cluster.wait_for(lambda: self.doctor_objects() == [], 30,
                              message="kubectl to delete the doctor's objects")


@require_cluster
class DoctorFixTest(ClusterTestCase):
    """Each failure class gets its own fix line."""

    def kubeconfig_variant(self, change):
        with open(self.cluster.kubeconfig_for("runner")) as stream:
            document = yaml.safe_load(stream)
        change(document)
        path = os.path.join(self.work, "kubeconfig")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as stream:
            yaml.safe_dump(document, stream)
        return path

    def config_with_kubeconfig(self, kubeconfig):
        config = self.write_config()
        with open(config) as stream:
            text = stream.read().replace(self.cluster.kubeconfig_for("runner"), kubeconfig)
        with open(config, "w") as stream:
            stream.write(text)
        return config

    def test_rejected_token_fix(self):
        def bad_token(document):
            document["users"][0]["user"]["token"] = "not-a-valid-token"
        config = self.config_with_kubeconfig(self.kubeconfig_variant(bad_token))
        doctor = self.sbx(config, "doctor")
        self.assertEqual(doctor.returncode, 1)
        failed = [item for item in doctor_lines(doctor.stdout, "API server") +
                  doctor_lines(doctor.stdout, "authentication") if item[0].startswith("FAILED")]
        self.assertEqual(len(failed), 1, doctor.stdout)
        self.assertIn("a token may have expired", failed[0][1])
        self.assertIn("check the credential of user", failed[0][1])
        self.assertNotIn("server URL", failed[0][1])

    def test_unknown_ca_fix(self):
        def other_ca(document):
            cluster = document["clusters"][0]["cluster"]
            bundle = base64.b64decode(cluster["certificate-authority-data"]).decode()
            end = "-----END CERTIFICATE-----"
            # The fake writes an unrelated CA first, then its own: keep only the first.
            first = bundle[:bundle.index(end) + len(end)] + "\n"
            cluster["certificate-authority-data"] = base64.b64encode(first.encode()).decode()
        config = self.config_with_kubeconfig(self.kubeconfig_variant(other_ca))
        doctor = self.sbx(config, "doctor")
        self.assertEqual(doctor.returncode, 1)
        [(line, fix)] = doctor_lines(doctor.stdout, "API server")
        self.assertRegex(line, r"^FAILED ", doctor.stdout)
        self.assertIn("certificate-authority-data", fix)
        self.assertIn("tls-server-name", fix)
        self.assertNotIn("server URL", fix)

    def test_forbidden_pool_fix(self):
        config = self.write_config()
        self.cluster.set_faults([{"type": "status", "code": 403, "reason": "Forbidden",
                                  "message": "sandboxwarmpools is forbidden",
                                  "verb": "get", "resource": "sandboxwarmpools",
                                  "name": "ci-pool"}])
        doctor = self.sbx(config, "doctor")
        [(line, fix)] = doctor_lines(doctor.stdout, "warm pool ci-pool")
        self.assertRegex(line, r"^FAILED +warm pool ci-pool: get SandboxWarmPool ci/ci-pool: ")
        self.assertIn("get on sandboxwarmpools.extensions.agents.x-k8s.io", fix)
        self.assertIn("config-examples/kubernetes/rbac.yaml", fix)
        self.assertNotIn("Unmanaged", fix)

    def test_missing_pool_fix(self):
        config = self.write_config(pools="    \"missing/*\": missing-pool\n")
        doctor = self.sbx(config, "doctor")
        [(line, fix)] = doctor_lines(doctor.stdout, "warm pool missing-pool")
        self.assertIn("SandboxWarmPool ci/missing-pool not found", line)
        self.assertIn("create the pool", fix)
        self.assertNotIn("Unmanaged", fix)

    def test_managed_template_without_egress(self):
        template = {"apiVersion": "extensions.agents.x-k8s.io/v1beta1",
                    "kind": "SandboxTemplate", "metadata": {"name": "closed"},
                    "spec": {"networkPolicyManagement": "Managed",
                             "networkPolicy": {"egress": []},
                             "podTemplate": {"spec": {"containers": [
                                 {"name": "job", "image": "registry.example.com/ci:1"}]}}}}
        self.cluster.must("POST", EXTENSIONS_API % (NS, "sandboxtemplates"), template)
        self.cluster.must("POST", EXTENSIONS_API % (NS, "sandboxwarmpools"),
                          warm_pool("closed-pool", "closed", 0))
        config = self.write_config(pools="    \"closed/*\": closed-pool\n")
        doctor = self.sbx(config, "doctor")
        [(line, _)] = doctor_lines(doctor.stdout, "warm pool closed-pool")
        self.assertRegex(line, r"^ok +warm pool closed-pool: the controller manages a "
                               r"NetworkPolicy for the pods of template closed that allows "
                               r"no egress")
        [(line, _)] = doctor_lines(doctor.stdout, "warm pool ci-pool")
        self.assertIn("template ci leaves the NetworkPolicy to sbx", line)

    def test_sandboxes_lines_print_when_ok(self):
        doctor = self.sbx(self.write_config(DIRECT_TEMPLATE), "doctor")
        [(line, _)] = doctor_lines(doctor.stdout, "sandboxes")
        self.assertRegex(line, r"^ok +sandboxes: jobs run in warm pools \(3 image patterns\) "
                               r"and in direct Sandboxes$")
        [(line, _)] = doctor_lines(doctor.stdout, "direct Sandbox")
        self.assertRegex(line, r"^ok +direct Sandbox: .* 1 allowed_images pattern$")

        empty = DIRECT_TEMPLATE.replace("[\"direct/*\"]", "[]")
        doctor = self.sbx(self.write_config(empty), "doctor")
        [(line, fix)] = doctor_lines(doctor.stdout, "direct Sandbox")
        self.assertRegex(line, r"^warning +direct Sandbox: ")
        self.assertIn("allowed_images", fix)


@require_cluster
class BackendMessageTest(ClusterTestCase):
    """Messages of prepare and cleanup name the objects they acted on."""

    def test_watch_forbidden_names_claim(self):
        config = self.write_config()
        self.cluster.set_faults([{"type": "status", "code": 403, "reason": "Forbidden",
                                  "message": "sandboxclaims is forbidden", "verb": "watch",
                                  "resource": "sandboxclaims"}])
        result = self.runner(config).run_job(self.job())
        log = bytes(result.log).decode(errors="replace")
        self.assertEqual(result.status, "system_failure", log)
        self.assertRegex(log, r"watch SandboxClaim ci/j\d+-[0-9a-f]{8}: forbidden; grant")
        self.assertNotIn("watch: forbidden", log)

    def test_cleanup_names_deleted_policy(self):
        config = self.write_config(DIRECT_TEMPLATE + "  disruption_protection: none\n")
        # The Sandbox's create hangs, so prepare is killed with only the policy made.
        self.cluster.set_faults([{"type": "latency", "ms": 60000, "verb": "create",
                                  "resource": "sandboxes"}])
        attempt = self.runner(config).new_attempt(self.job(image="direct/app:1"))
        attempt.config()
        prepare = attempt.start("prepare", attempt.settings.prepare_args)
        sandbox_id = self.sandbox_id(attempt)
        policy = "%s/%s-egress" % (POLICIES, sandbox_id)
        self.cluster.wait_for(lambda: self.cluster.api("GET", policy)[0] == 200, 30,
                              message="the job's NetworkPolicy")
        os.killpg(prepare.pid, signal.SIGKILL)
        prepare.finished.wait(30)
        self.cluster.clear_faults()
        cleanup = attempt.cleanup()
        output = bytes(cleanup.output).decode(errors="replace")
        self.assertEqual(cleanup.returncode, 0, output)
        self.assertIn("(deleted NetworkPolicy ci/%s-egress; Sandbox ci/%s already gone)"
                      % (sandbox_id, sandbox_id), output)
        self.assertEqual(self.cluster.api("GET", policy)[0], 404)
        attempt.remove_temp_dir()


if __name__ == "__main__":
    unittest.main()
