"""The fake cluster's Agent Sandbox controller: Sandbox to Pod, readiness, warm pools, claim
adoption and cold starts, terminal reasons, expiry, suspend, cascading deletion, and the
PodDisruptionBudget eviction check."""
import datetime
import http.client
import json
import os
import time
import unittest

from cluster_support import (EXTENSIONS_API, PODS_API, SANDBOX_API, FakeCluster, condition,
                             create_running_pod, require_cluster, sandbox_pod, ws_exec)

NS = "default"
CONTAINER = {"name": "sandbox", "image": "debian:12", "command": ["sleep", "600"]}


def fnv1a(name):
    value = 0x811C9DC5
    for byte in name.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "%08x" % value


def rfc3339(seconds_from_now):
    moment = datetime.datetime.now(datetime.timezone.utc) + \
        datetime.timedelta(seconds=seconds_from_now)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def sandbox(name, **spec):
    body = {"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
            "metadata": {"name": name},
            "spec": dict({"podTemplate": {"metadata": {"labels": {"job": name}},
                                          "spec": {"containers": [CONTAINER]}}}, **spec)}
    return body


def template(name, **spec):
    return {"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxTemplate",
            "metadata": {"name": name},
            "spec": dict({"podTemplate": {"spec": {"containers": [CONTAINER]}}}, **spec)}


def pool(name, template_name, replicas):
    return {"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxWarmPool",
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": template_name}}}


def claim(name, pool_name, **spec):
    return {"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxClaim",
            "metadata": {"name": name},
            "spec": dict({"warmPoolRef": {"name": pool_name}}, **spec)}


@require_cluster
class ClusterControllerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = FakeCluster(ready_delay=0.1).start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    def get(self, path):
        status, obj = self.cluster.api("GET", path)
        return obj if status == 200 else None

    def wait_ready(self, path, timeout=15):
        def ready():
            obj = self.get(path)
            return obj if obj and (condition(obj, "Ready") or {}).get("status") == "True" \
                else None
        return self.cluster.wait_for(ready, timeout, message="%s to be Ready" % path)

    def wait_reason(self, path, reason, timeout=15):
        def reached():
            obj = self.get(path)
            return obj if obj and (condition(obj, "Ready") or {}).get("reason") == reason \
                else None
        return self.cluster.wait_for(reached, timeout, message="%s reason %s" % (path, reason))

    def wait_gone(self, path, timeout=15):
        self.cluster.wait_for(lambda: self.cluster.api("GET", path)[0] == 404, timeout,
                              message="%s to be deleted" % path)

    def test_sandbox_creates_owned_pod(self):
        created = self.cluster.must("POST", SANDBOX_API % NS, sandbox("sb-direct"))
        ready = self.wait_ready(SANDBOX_API % NS + "/sb-direct")
        pod = self.get(PODS_API % NS + "/sb-direct")
        self.assertIsNotNone(pod, "the pod is named like the Sandbox")
        self.assertEqual(pod["metadata"]["labels"]["agents.x-k8s.io/sandbox-name-hash"],
                         fnv1a("sb-direct"))
        self.assertEqual(pod["metadata"]["labels"]["job"], "sb-direct")
        owner = pod["metadata"]["ownerReferences"][0]
        self.assertEqual((owner["kind"], owner["uid"], owner["controller"]),
                         ("Sandbox", created["metadata"]["uid"], True))
        self.assertEqual(ready["status"]["selector"],
                         "agents.x-k8s.io/sandbox-name-hash=" + fnv1a("sb-direct"))
        self.assertEqual(ready["status"]["podIPs"], [pod["status"]["podIP"]])
        self.assertEqual(condition(ready, "Ready")["reason"], "DependenciesReady")
        self.assertEqual(ready["metadata"]["annotations"]["agents.x-k8s.io/pod-name"],
                         "sb-direct")
        result = ws_exec(self.cluster, NS, "sb-direct", ["hostname"])
        self.assertEqual(result.output(1), b"sb-direct\n")

    def test_sandbox_service_and_suspend(self):
        body = sandbox("sb-svc", service=True)
        body["spec"]["podTemplate"]["spec"]["containers"] = [
            dict(CONTAINER, ports=[{"containerPort": 8080}])]
        self.cluster.must("POST", SANDBOX_API % NS, body)
        ready = self.wait_ready(SANDBOX_API % NS + "/sb-svc")
        service = self.get("/api/v1/namespaces/%s/services/sb-svc" % NS)
        self.assertEqual(service["spec"]["clusterIP"], "None")
        self.assertEqual(service["spec"]["ports"][0]["name"], "p-8080-tcp")
        self.assertEqual(ready["status"]["serviceFQDN"], "sb-svc.default.svc.cluster.local")
        self.cluster.must("PATCH", SANDBOX_API % NS + "/sb-svc",
                          {"spec": {"operatingMode": "Suspended"}},
                          content_type="application/merge-patch+json")
        self.wait_reason(SANDBOX_API % NS + "/sb-svc", "SandboxSuspended")
        self.wait_gone(PODS_API % NS + "/sb-svc")
        self.cluster.must("PATCH", SANDBOX_API % NS + "/sb-svc",
                          {"spec": {"operatingMode": "Running"}},
                          content_type="application/merge-patch+json")
        self.wait_ready(SANDBOX_API % NS + "/sb-svc")

    def test_failed_pod_is_terminal(self):
        body = sandbox("sb-fails")
        body["spec"]["podTemplate"]["spec"]["restartPolicy"] = "Never"
        body["spec"]["podTemplate"]["spec"]["containers"] = [
            dict(CONTAINER, command=["sh", "-c", "exit 4"])]
        self.cluster.must("POST", SANDBOX_API % NS, body)
        failed = self.wait_reason(SANDBOX_API % NS + "/sb-fails", "PodFailed")
        self.assertEqual(condition(failed, "Finished")["status"], "True")
        pod = self.get(PODS_API % NS + "/sb-fails")
        self.assertEqual(pod["status"]["phase"], "Failed")
        terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
        self.assertEqual(terminated["exitCode"], 4)

    def test_shutdown_time_delete_and_retain(self):
        self.cluster.must("POST", SANDBOX_API % NS,
                          sandbox("sb-expire-delete", shutdownTime=rfc3339(2),
                                  shutdownPolicy="Delete"))
        self.cluster.must("POST", SANDBOX_API % NS,
                          sandbox("sb-expire-retain", shutdownTime=rfc3339(2)))
        self.wait_ready(SANDBOX_API % NS + "/sb-expire-delete")
        self.wait_gone(SANDBOX_API % NS + "/sb-expire-delete", 10)
        self.wait_gone(PODS_API % NS + "/sb-expire-delete", 10)
        retained = self.wait_reason(SANDBOX_API % NS + "/sb-expire-retain", "SandboxExpired")
        self.assertNotIn("podIPs", retained["status"])
        self.wait_gone(PODS_API % NS + "/sb-expire-retain", 10)

    def test_warm_pool_and_claim_adoption(self):
        self.cluster.must("POST", EXTENSIONS_API % (NS, "sandboxtemplates"), template("tpl-warm"))
        self.cluster.must("POST", EXTENSIONS_API % (NS, "sandboxwarmpools"),
                          pool("warm", "tpl-warm", 2))
        pool_path = EXTENSIONS_API % (NS, "sandboxwarmpools") + "/warm"
        self.cluster.wait_for(lambda: (self.get(pool_path).get("status") or {})
                              .get("readyReplicas") == 2, 15, message="pool warm-up")
        members = [s["metadata"]["name"] for s in self.cluster.must(
            "GET", SANDBOX_API % NS + "?labelSelector=agents.x-k8s.io%2Fwarm-pool-sandbox%3D"
            + fnv1a("warm"))["items"]]
        self.assertEqual(len(members), 2)
        self.assertTrue(all(m.startswith("warm-") for m in members))

        self.cluster.must("POST", EXTENSIONS_API % (NS, "sandboxclaims"), claim("job-1", "warm"))
        bound = self.wait_ready(EXTENSIONS_API % (NS, "sandboxclaims") + "/job-1", 5)
        name = bound["status"]["sandbox"]["name"]
        self.assertIn(name, members)
        self.assertNotEqual(name, "job-1")
        self.assertTrue(bound["status"]["sandbox"]["podIPs"])
        adopted = self.get(SANDBOX_API % NS + "/" + name)
        self.assertEqual(adopted["metadata"]["ownerReferences"][0]["kind"], "SandboxClaim")
        self.assertNotIn("agents.x-k8s.io/warm-pool-sandbox", adopted["metadata"]["labels"])
        pod = self.cluster.wait_for(lambda: (lambda p: p if p and "agents.x-k8s.io/warm-pool-"
                                             "sandbox" not in p["metadata"]["labels"] else None)(
            self.get(PODS_API % NS + "/" + name)), 5, message="pod relabel")
        self.assertEqual(pod["metadata"]["labels"]["agents.x-k8s.io/sandbox-template-ref-hash"],
                         fnv1a("tpl-warm"))
        self.cluster.wait_for(lambda: (self.get(pool_path).get("status") or {})
                              .get("readyReplicas") == 2, 15, message="pool refill")

        policy = self.get("/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies/"
                          "tpl-warm-network-policy" % NS)
        self.assertEqual(policy["spec"]["podSelector"]["matchLabels"],
                         {"agents.x-k8s.io/sandbox-template-ref-hash": fnv1a("tpl-warm")})

        runtime = next(r for r in self.cluster.pod_runtimes() if r["name"] == name)
        self.cluster.must("DELETE", EXTENSIONS_API % (NS, "sandboxclaims") + "/job-1",
                          {"propagationPolicy": "Foreground"})
        self.wait_gone(EXTENSIONS_API % (NS, "sandboxclaims") + "/job-1")
        self.assertIsNone(self.get(SANDBOX_API % NS + "/" + name))
        self.assertIsNone(self.get(PODS_API % NS + "/" + name))
        self.assertFalse(os.path.exists("/proc/%d" % runtime["sandboxPid"]))

    def test_warm_claim_ready_quickly(self):
        self.cluster.must("POST", EXTENSIONS_API % (NS, "sandboxtemplates"), template("tpl-quick"))
        self.cluster.must("POST", EXTENSIONS_API % (NS, "sandboxwarmpools"),
                          pool("quick", "tpl-quick", 1))
        pool_path = EXTENSIONS_API % (NS, "sandboxwarmpools") + "/quick"
        claims = EXTENSIONS_API % (NS, "sandboxclaims")
        for index in range(3):
            self.cluster.wait_for(lambda: (self.get(pool_path).get("status") or {})
                                  .get("readyReplicas") == 1, 15, message="pool warm-up")
            name = "quick-%d" % index
            version = self.cluster.state()["resourceVersion"]
            connection = http.client.HTTPSConnection(
                "127.0.0.1", self.cluster.port, context=self.cluster.ssl_context("admin"),
                timeout=15)
            connection.request("GET", "%s?watch=1&resourceVersion=%s&fieldSelector="
                               "metadata.name%%3D%s" % (claims, version, name))
            response = connection.getresponse()
            self.assertEqual(response.status, 200)

            started = time.monotonic()
            self.cluster.must("POST", claims, claim(name, "quick"))
            ready = None
            while ready is None:
                line = response.readline()
                self.assertTrue(line, "the watch ended before %s was Ready" % name)
                event = json.loads(line)["object"]
                if (condition(event, "Ready") or {}).get("status") == "True":
                    ready = event
            elapsed = time.monotonic() - started
            connection.close()

            self.assertNotEqual(ready["status"]["sandbox"]["name"], name, "not a warm hit")
            # Generous for a test: the controller reacts to events without polling, so a
            # warm hit takes a few milliseconds plus the HTTP round trips.
            self.assertLess(elapsed, 1.0, "%s took %.3f s to become Ready" % (name, elapsed))
            self.cluster.must("DELETE", claims + "/" + name)

    def test_cold_start_with_empty_pool(self):
        self.cluster.must("POST", EXTENSIONS_API % (NS, "sandboxtemplates"),
                          template("tpl-cold", envVarsInjectionPolicy="Allowed"))
        self.cluster.must("POST", EXTENSIONS_API % (NS, "sandboxwarmpools"),
                          pool("cold", "tpl-cold", 0))
        self.cluster.must("POST", EXTENSIONS_API % (NS, "sandboxclaims"),
                          claim("job-cold", "cold", env=[{"name": "JOB", "value": "42"}]))
        bound = self.wait_ready(EXTENSIONS_API % (NS, "sandboxclaims") + "/job-cold")
        self.assertEqual(bound["status"]["sandbox"]["name"], "job-cold")
        created = self.get(SANDBOX_API % NS + "/job-cold")
        self.assertEqual(created["metadata"]["labels"]["agents.x-k8s.io/launch-type"], "cold")
        pod_spec = created["spec"]["podTemplate"]["spec"]
        self.assertFalse(pod_spec["automountServiceAccountToken"])
        result = ws_exec(self.cluster, NS, "job-cold", ["sh", "-c", "echo $JOB"])
        self.assertEqual(result.output(1), b"42\n")

    def test_claim_terminal_reasons(self):
        claims = EXTENSIONS_API % (NS, "sandboxclaims")
        self.cluster.must("POST", claims, claim("no-pool", "missing-pool"))
        self.wait_reason(claims + "/no-pool", "WarmPoolNotFound")
        self.cluster.must("POST", EXTENSIONS_API % (NS, "sandboxwarmpools"),
                          pool("orphan-pool", "missing-template", 1))
        self.cluster.must("POST", claims, claim("no-template", "orphan-pool"))
        self.wait_reason(claims + "/no-template", "TemplateNotFound")
        self.cluster.must("POST", EXTENSIONS_API % (NS, "sandboxtemplates"),
                          template("tpl-strict"))
        self.cluster.must("POST", EXTENSIONS_API % (NS, "sandboxwarmpools"),
                          pool("strict", "tpl-strict", 0))
        self.cluster.must("POST", claims, claim("env-rejected", "strict",
                                                env=[{"name": "A", "value": "1"}]))
        self.wait_reason(claims + "/env-rejected", "EnvVarsInjectionRejected")
        self.cluster.must("POST", claims, claim("bad-label", "strict", additionalPodMetadata={
            "labels": {"team": "x"}}))
        self.wait_reason(claims + "/bad-label", "InvalidMetadata")
        self.assertIsNone(self.get(SANDBOX_API % NS + "/env-rejected"))

    def test_claim_expiry_retain(self):
        self.cluster.must("POST", EXTENSIONS_API % (NS, "sandboxtemplates"), template("tpl-exp"))
        self.cluster.must("POST", EXTENSIONS_API % (NS, "sandboxwarmpools"),
                          pool("exp", "tpl-exp", 0))
        claims = EXTENSIONS_API % (NS, "sandboxclaims")
        self.cluster.must("POST", claims, claim("job-exp", "exp", lifecycle={
            "shutdownTime": rfc3339(2), "shutdownPolicy": "Retain"}))
        self.wait_ready(claims + "/job-exp")
        self.wait_reason(claims + "/job-exp", "ClaimExpired", 10)
        self.wait_gone(SANDBOX_API % NS + "/job-exp")
        self.cluster.must("POST", claims, claim("job-exp-delete", "exp", lifecycle={
            "shutdownTime": rfc3339(1), "shutdownPolicy": "Delete"}))
        self.wait_gone(claims + "/job-exp-delete", 10)

    def test_deleted_sandbox_is_replaced_for_claim(self):
        self.cluster.must("POST", EXTENSIONS_API % (NS, "sandboxtemplates"), template("tpl-re"))
        self.cluster.must("POST", EXTENSIONS_API % (NS, "sandboxwarmpools"),
                          pool("re", "tpl-re", 0))
        claims = EXTENSIONS_API % (NS, "sandboxclaims")
        self.cluster.must("POST", claims, claim("job-re", "re"))
        first = self.wait_ready(SANDBOX_API % NS + "/job-re")
        self.cluster.must("DELETE", SANDBOX_API % NS + "/job-re")
        second = self.cluster.wait_for(
            lambda: (lambda s: s if s and s["metadata"]["uid"] != first["metadata"]["uid"]
                     else None)(self.get(SANDBOX_API % NS + "/job-re")), 10,
            message="a replacement sandbox")
        self.assertEqual(second["metadata"]["ownerReferences"][0]["name"], "job-re")

    def test_eviction_blocked_by_pdb(self):
        create_running_pod(self.cluster, NS, sandbox_pod("protected", labels={
            "sandbox-disruption-policy": "manual-protection"}))
        pdb = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": {"name": "shared-sandbox-pdb"},
               "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {
                   "sandbox-disruption-policy": "manual-protection"}}}}
        self.cluster.must("POST", "/apis/policy/v1/namespaces/%s/poddisruptionbudgets" % NS, pdb)
        eviction = {"apiVersion": "policy/v1", "kind": "Eviction",
                    "metadata": {"name": "protected", "namespace": NS}}
        status, body = self.cluster.api("POST", PODS_API % NS + "/protected/eviction", eviction)
        self.assertEqual(status, 429)
        self.assertEqual(body["reason"], "TooManyRequests")
        self.assertEqual(body["details"]["causes"][0]["reason"], "DisruptionBudget")
        self.cluster.must("DELETE", "/apis/policy/v1/namespaces/%s/poddisruptionbudgets/"
                          "shared-sandbox-pdb" % NS)
        status, body = self.cluster.api("POST", PODS_API % NS + "/protected/eviction", eviction)
        self.assertEqual(status, 201)
        self.wait_gone(PODS_API % NS + "/protected")


if __name__ == "__main__":
    unittest.main()
