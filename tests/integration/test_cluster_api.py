"""REST behaviour of the fake API server: auth, Status errors, resourceVersion, selectors,
patches, deletion propagation and injected faults, checked with raw HTTPS and kubectl."""
import http.client
import json
import time
import unittest

from cluster_support import (EXTENSIONS_API, PODS_API, SANDBOX_API, FakeCluster, condition,
                             kubectl, require_cluster)

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


def configmap(name, labels=None, owners=None, finalizers=None):
    metadata = {"name": name, "labels": labels or {}}
    if owners:
        metadata["ownerReferences"] = owners
    if finalizers:
        metadata["finalizers"] = finalizers
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"k": "v"}}


def owner_ref(obj, block=True):
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
            "name": obj["metadata"]["name"], "uid": obj["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": block}


def sandbox(name):
    return {"apiVersion": "agents.x-k8s.io/v1beta1", "kind": "Sandbox",
            "metadata": {"name": name},
            "spec": {"podTemplate": {"spec": {"containers": [
                {"name": "sandbox", "image": "debian:12", "command": ["sleep", "600"]}]}}}}


@require_cluster
class ClusterApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = FakeCluster().start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    # --- authentication and authorization -----------------------------------------------

    def test_no_credentials_401(self):
        status, body = self.cluster.api("GET", CONFIGMAPS, identity=None)
        self.assertEqual(status, 401)
        self.assertEqual(body["kind"], "Status")
        self.assertEqual(body["apiVersion"], "v1")
        self.assertEqual(body["status"], "Failure")
        self.assertEqual(body["reason"], "Unauthorized")
        self.assertEqual(body["code"], 401)

    def test_wrong_token_401(self):
        status, body = self.cluster.api("GET", CONFIGMAPS, identity=None, token="not-a-token")
        self.assertEqual(status, 401)
        self.assertEqual(body["reason"], "Unauthorized")

    def test_token_and_certificate_auth(self):
        status, _ = self.cluster.api("GET", CONFIGMAPS, identity=None,
                                     token=self.cluster.token("runner"))
        self.assertEqual(status, 403, "runner has no configmaps rule")
        status, _ = self.cluster.api("GET", CONFIGMAPS, identity=None,
                                     token=self.cluster.token("viewer"))
        self.assertEqual(status, 200)
        status, _ = self.cluster.api("GET", CONFIGMAPS, identity="viewer")
        self.assertEqual(status, 200)

    def test_forbidden_verb_403(self):
        status, body = self.cluster.api("POST", CONFIGMAPS, configmap("forbidden"),
                                        identity="viewer")
        self.assertEqual(status, 403)
        self.assertEqual(body["reason"], "Forbidden")
        self.assertIn('User "viewer" cannot create resource "configmaps"', body["message"])
        self.assertEqual(self.cluster.api("GET", CONFIGMAPS + "/forbidden")[0], 404)

    def test_access_review_pods_exec(self):
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                  "spec": {"resourceAttributes": {"namespace": "default", "verb": "create",
                                                  "resource": "pods", "subresource": "exec"}}}
        path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
        status, allowed = self.cluster.api("POST", path, review, identity="runner")
        self.assertEqual(status, 201)
        self.assertTrue(allowed["status"]["allowed"])
        status, denied = self.cluster.api("POST", path, review, identity="runner-no-exec")
        self.assertEqual(status, 201)
        self.assertFalse(denied["status"]["allowed"])

    def test_kubectl_auth_can_i(self):
        # "pods/exec" would be the pod named "exec"; a subresource needs --subresource.
        allowed = kubectl(self.cluster, "auth", "can-i", "create", "pods", "--subresource=exec",
                          kubeconfig=self.cluster.kubeconfig_for("runner"))
        self.assertEqual(allowed.stdout.strip(), "yes", allowed.stderr)
        denied = kubectl(self.cluster, "auth", "can-i", "get", "pods", "--subresource=exec",
                         kubeconfig=self.cluster.kubeconfig_for("runner-no-exec"))
        self.assertEqual(denied.stdout.strip(), "no", denied.stderr)
        self.assertNotEqual(denied.returncode, 0)

    # --- Status errors and metadata -----------------------------------------------------

    def test_not_found_404(self):
        status, body = self.cluster.api("GET", CONFIGMAPS + "/missing")
        self.assertEqual(status, 404)
        self.assertEqual(body["reason"], "NotFound")
        self.assertEqual(body["details"], {"name": "missing", "kind": "configmaps"})
        self.assertEqual(body["message"], 'configmaps "missing" not found')

    def test_unknown_path_404(self):
        status, body = self.cluster.api("GET", "/apis/nothing.example.com/v1/things")
        self.assertEqual(status, 404)
        self.assertEqual(body["kind"], "Status")

    def test_duplicate_create_409(self):
        self.cluster.must("POST", CONFIGMAPS, configmap("dup"))
        status, body = self.cluster.api("POST", CONFIGMAPS, configmap("dup"))
        self.assertEqual(status, 409)
        self.assertEqual(body["reason"], "AlreadyExists")
        self.assertEqual(body["details"]["kind"], "configmaps")

    def test_missing_required_fields_422(self):
        invalid = sandbox("broken")
        del invalid["spec"]["podTemplate"]
        status, body = self.cluster.api("POST", SANDBOX_API % "default", invalid)
        self.assertEqual(status, 422)
        self.assertEqual(body["reason"], "Invalid")
        self.assertEqual(body["details"]["kind"], "Sandbox")
        self.assertEqual(body["details"]["causes"][0]["field"], "spec.podTemplate")
        claim = {"apiVersion": "extensions.agents.x-k8s.io/v1beta1", "kind": "SandboxClaim",
                 "metadata": {"name": "c"}, "spec": {}}
        status, body = self.cluster.api("POST", EXTENSIONS_API % ("default", "sandboxclaims"),
                                        claim)
        self.assertEqual(status, 422)
        self.assertEqual(body["details"]["causes"][0]["field"], "spec.warmPoolRef")
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name"},
               "spec": {"containers": [{"name": "c"}]}}
        status, body = self.cluster.api("POST", PODS_API % "default", pod)
        self.assertEqual(status, 422)
        fields = {c["field"] for c in body["details"]["causes"]}
        self.assertEqual(fields, {"metadata.name", "spec.containers[0].image"})

    def test_generate_name_and_metadata(self):
        body = configmap("")
        del body["metadata"]["name"]
        body["metadata"]["generateName"] = "gen-"
        first = self.cluster.must("POST", CONFIGMAPS, body)
        second = self.cluster.must("POST", CONFIGMAPS, body)
        name = first["metadata"]["name"]
        self.assertRegex(name, r"^gen-[bcdfghjklmnpqrstvwxz2456789]{5}$")
        self.assertNotEqual(name, second["metadata"]["name"])
        self.assertRegex(first["metadata"]["uid"], r"^[0-9a-f-]{36}$")
        self.assertRegex(first["metadata"]["creationTimestamp"],
                         r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(first["metadata"]["generation"], 1)
        self.assertIsInstance(first["metadata"]["resourceVersion"], str)
        self.assertGreater(int(second["metadata"]["resourceVersion"]),
                           int(first["metadata"]["resourceVersion"]) + 1,
                           "resourceVersion should jump by more than one")

    def test_stale_update_409_conflict(self):
        self.cluster.must("POST", SANDBOX_API % "default", sandbox("conflict"))
        path = SANDBOX_API % "default" + "/conflict"
        # The controller writes to a new Sandbox; wait until it has settled.
        self.cluster.wait_for(lambda: (condition(self.cluster.must("GET", path), "Ready") or {})
                              .get("status") == "True", message="sandbox conflict to be Ready")
        created = self.cluster.must("GET", path)
        fresh = json.loads(json.dumps(created))
        fresh["metadata"]["labels"] = {"a": "b"}
        updated = self.cluster.must("PUT", path, fresh)
        self.assertNotEqual(updated["metadata"]["resourceVersion"],
                            created["metadata"]["resourceVersion"])
        self.assertEqual(updated["metadata"]["generation"], 1, "labels are not spec")
        stale = json.loads(json.dumps(created))
        stale["spec"]["shutdownPolicy"] = "Delete"
        status, body = self.cluster.api("PUT", path, stale)
        self.assertEqual(status, 409)
        self.assertEqual(body["reason"], "Conflict")
        self.assertIn("the object has been modified", body["message"])
        current = self.cluster.must("GET", path)
        current["spec"]["shutdownPolicy"] = "Delete"
        self.assertEqual(self.cluster.must("PUT", path, current)["metadata"]["generation"], 2)

    def test_noop_update_keeps_resource_version(self):
        created = self.cluster.must("POST", CONFIGMAPS, configmap("noop"))
        again = self.cluster.must("PUT", CONFIGMAPS + "/noop", created)
        self.assertEqual(again["metadata"]["resourceVersion"],
                         created["metadata"]["resourceVersion"])

    # --- selectors and lists ------------------------------------------------------------

    def test_label_selectors(self):
        for name, labels in (("sel-a", {"tier": "web", "env": "prod"}),
                             ("sel-b", {"tier": "db", "env": "prod"}),
                             ("sel-c", {"tier": "web"})):
            self.cluster.must("POST", CONFIGMAPS, configmap(name, labels))
        cases = {
            "tier=web": {"sel-a", "sel-c"},
            "tier==web,env=prod": {"sel-a"},
            "tier!=web": {"sel-b"},
            "tier in (web,db),env": {"sel-a", "sel-b"},
            "tier notin (web)": {"sel-b"},
            "!env": {"sel-c"},
        }
        for selector, expected in cases.items():
            query = "?labelSelector=" + selector.replace(" ", "%20").replace("!", "%21")
            items = self.cluster.must("GET", CONFIGMAPS + query)["items"]
            names = {i["metadata"]["name"] for i in items} & {"sel-a", "sel-b", "sel-c"}
            self.assertEqual(names, expected, selector)
        status, body = self.cluster.api("GET", CONFIGMAPS + "?labelSelector=a%20in%20()")
        self.assertEqual(status, 400)
        self.assertEqual(body["reason"], "BadRequest")

    def test_field_selectors(self):
        self.cluster.must("POST", CONFIGMAPS, configmap("field-one"))
        items = self.cluster.must("GET", CONFIGMAPS + "?fieldSelector=metadata.name%3Dfield-one")
        self.assertEqual([i["metadata"]["name"] for i in items["items"]], ["field-one"])
        pods = self.cluster.must("GET", "/api/v1/pods?fieldSelector=status.phase%3DFailed")
        self.assertEqual(pods["items"], [])
        status, body = self.cluster.api("GET", CONFIGMAPS + "?fieldSelector=data.k%3Dv")
        self.assertEqual(status, 400)
        self.assertIn("field label not supported", body["message"])

    def test_list_pagination(self):
        for index in range(5):
            self.cluster.must("POST", CONFIGMAPS, configmap("page-%d" % index, {"page": "yes"}))
        seen, token, pages = [], None, 0
        while True:
            query = "?labelSelector=page%3Dyes&limit=2"
            if token:
                query += "&continue=" + token
            page = self.cluster.must("GET", CONFIGMAPS + query)
            pages += 1
            self.assertLessEqual(len(page["items"]), 2)
            seen += [i["metadata"]["name"] for i in page["items"]]
            token = page["metadata"].get("continue")
            if not token:
                break
        self.assertEqual(seen, ["page-%d" % i for i in range(5)])
        self.assertEqual(pages, 3)
        self.assertEqual(page["kind"], "ConfigMapList")
        self.assertNotIn("kind", page["items"][0], "built-in list items carry no kind")

    # --- patches ------------------------------------------------------------------------

    def test_merge_and_json_patch(self):
        self.cluster.must("POST", CONFIGMAPS, configmap("patched", {"a": "1", "b": "2"}))
        path = CONFIGMAPS + "/patched"
        merged = self.cluster.must("PATCH", path, {"metadata": {"labels": {"a": None, "c": "3"}}},
                                   content_type="application/merge-patch+json")
        self.assertEqual(merged["metadata"]["labels"], {"b": "2", "c": "3"})
        patched = self.cluster.must("PATCH", path, [
            {"op": "add", "path": "/data/extra", "value": "x"},
            {"op": "replace", "path": "/metadata/labels/b", "value": "20"}],
            content_type="application/json-patch+json")
        self.assertEqual(patched["data"], {"k": "v", "extra": "x"})
        self.assertEqual(patched["metadata"]["labels"]["b"], "20")
        status, body = self.cluster.api("PATCH", path, [
            {"op": "test", "path": "/metadata/resourceVersion", "value": "1"}],
            content_type="application/json-patch+json")
        self.assertEqual(status, 422)
        status, _ = self.cluster.api("PATCH", SANDBOX_API % "default" + "/missing", {},
                                     content_type="application/merge-patch+json")
        self.assertEqual(status, 404)

    def test_strategic_patch_rejected_for_custom_resources(self):
        self.cluster.must("POST", SANDBOX_API % "default", sandbox("smp"))
        status, body = self.cluster.api("PATCH", SANDBOX_API % "default" + "/smp",
                                        {"metadata": {"labels": {"x": "y"}}},
                                        content_type="application/strategic-merge-patch+json")
        self.assertEqual(status, 415)
        self.assertEqual(body["reason"], "UnsupportedMediaType")

    def test_server_side_apply(self):
        path = CONFIGMAPS + "/applied"
        document = ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\n"
                    "data:\n  key: one\n")
        status, body = self.cluster.api("PATCH", path, document,
                                        content_type="application/apply-patch+yaml")
        self.assertEqual(status, 422, "fieldManager is required")
        status, created = self.cluster.api("PATCH", path + "?fieldManager=sbx", document,
                                           content_type="application/apply-patch+yaml")
        self.assertEqual(status, 201)
        self.assertEqual(created["data"], {"key": "one"})
        self.assertEqual(created["metadata"]["managedFields"][0]["manager"], "sbx")
        status, updated = self.cluster.api("PATCH", path + "?fieldManager=sbx",
                                           document.replace("one", "two"),
                                           content_type="application/apply-patch+yaml")
        self.assertEqual(status, 200)
        self.assertEqual(updated["data"], {"key": "two"})
        self.assertEqual(updated["metadata"]["uid"], created["metadata"]["uid"])

    # --- deletion -----------------------------------------------------------------------

    def test_background_cascade(self):
        owner = self.cluster.must("POST", CONFIGMAPS, configmap("bg-owner"))
        self.cluster.must("POST", CONFIGMAPS, configmap("bg-child", owners=[owner_ref(owner)]))
        status, body = self.cluster.api("DELETE", CONFIGMAPS + "/bg-owner")
        self.assertEqual(status, 200)
        self.assertEqual(body["kind"], "Status")
        self.assertEqual(body["status"], "Success")
        self.cluster.wait_for(lambda: self.cluster.api("GET", CONFIGMAPS + "/bg-child")[0] == 404,
                              5, message="garbage collection of bg-child")

    def test_foreground_waits_for_dependents(self):
        owner = self.cluster.must("POST", CONFIGMAPS, configmap("fg-owner"))
        self.cluster.must("POST", CONFIGMAPS, configmap("fg-child", owners=[owner_ref(owner)],
                                                        finalizers=["test/hold"]))
        status, body = self.cluster.api("DELETE", CONFIGMAPS + "/fg-owner",
                                        {"propagationPolicy": "Foreground"})
        self.assertEqual(status, 200)
        self.assertIn("foregroundDeletion", body["metadata"]["finalizers"])
        self.assertIn("deletionTimestamp", body["metadata"])
        time.sleep(0.3)
        owner_now = self.cluster.must("GET", CONFIGMAPS + "/fg-owner")
        self.assertIn("deletionTimestamp", owner_now["metadata"])
        child = self.cluster.must("GET", CONFIGMAPS + "/fg-child")
        self.assertIn("deletionTimestamp", child["metadata"])
        self.cluster.must("PATCH", CONFIGMAPS + "/fg-child", {"metadata": {"finalizers": None}},
                          content_type="application/merge-patch+json")
        self.cluster.wait_for(lambda: self.cluster.api("GET", CONFIGMAPS + "/fg-owner")[0] == 404,
                              5, message="fg-owner to go after its dependent")

    def test_orphan_keeps_dependents(self):
        owner = self.cluster.must("POST", CONFIGMAPS, configmap("or-owner"))
        self.cluster.must("POST", CONFIGMAPS, configmap("or-child", owners=[owner_ref(owner)]))
        self.cluster.must("DELETE", CONFIGMAPS + "/or-owner?propagationPolicy=Orphan")
        self.cluster.wait_for(lambda: self.cluster.api("GET", CONFIGMAPS + "/or-owner")[0] == 404,
                              5, message="or-owner deletion")
        child = self.cluster.must("GET", CONFIGMAPS + "/or-child")
        self.assertNotIn("ownerReferences", child["metadata"])

    def test_delete_precondition_conflict(self):
        self.cluster.must("POST", CONFIGMAPS, configmap("precondition"))
        status, body = self.cluster.api("DELETE", CONFIGMAPS + "/precondition",
                                        {"preconditions": {"uid": "0000"}})
        self.assertEqual(status, 409)
        self.assertIn("Precondition failed", body["message"])

    # --- faults and counters ------------------------------------------------------------

    def test_injected_429_with_retry_after(self):
        self.cluster.set_faults([{"type": "status", "code": 429, "retryAfter": 2, "times": 1,
                                  "verb": "list", "resource": "secrets"},
                                 {"type": "status", "code": 429, "retryAfter": 1, "times": 1,
                                  "contentType": "text", "verb": "get", "resource": "secrets"}])
        status, headers, data = self.cluster.raw_request("GET", "/api/v1/namespaces/default/"
                                                         "secrets")
        self.assertEqual(status, 429)
        self.assertEqual(headers["Retry-After"], "2")
        body = json.loads(data)
        self.assertEqual(body["reason"], "TooManyRequests")
        self.assertEqual(body["details"]["retryAfterSeconds"], 2)
        status, headers, data = self.cluster.raw_request("GET", "/api/v1/namespaces/default/"
                                                         "secrets/x")
        self.assertEqual(status, 429)
        self.assertTrue(headers["Content-Type"].startswith("text/plain"))
        self.assertEqual(headers["Retry-After"], "1")
        status, _, _ = self.cluster.raw_request("GET", "/api/v1/namespaces/default/secrets")
        self.assertEqual(status, 200, "the fault fired only once")

    def test_kubectl_retries_after_429(self):
        self.cluster.set_faults([{"type": "status", "code": 429, "retryAfter": 1, "times": 2,
                                  "verb": "list", "resource": "serviceaccounts"}])
        self.cluster.reset_requests()
        started = time.monotonic()
        result = kubectl(self.cluster, "get", "serviceaccounts", "-o", "name")
        elapsed = time.monotonic() - started
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.cluster.request_counts().get("list serviceaccounts"), 3)
        self.assertGreaterEqual(elapsed, 2.0, "kubectl honours Retry-After: 1 twice")

    def test_expired_continue_token(self):
        for index in range(3):
            self.cluster.must("POST", CONFIGMAPS, configmap("cont-%d" % index, {"cont": "yes"}))
        first = self.cluster.must("GET", CONFIGMAPS + "?labelSelector=cont%3Dyes&limit=1")
        token = first["metadata"]["continue"]
        self.cluster.set_faults([{"type": "continue-expire", "times": 1}])
        status, body = self.cluster.api("GET", CONFIGMAPS + "?labelSelector=cont%3Dyes&limit=1"
                                        "&continue=" + token)
        self.assertEqual(status, 410)
        self.assertEqual(body["reason"], "Expired")
        status, _ = self.cluster.api("GET", CONFIGMAPS + "?labelSelector=cont%3Dyes&limit=1"
                                     "&continue=" + token)
        self.assertEqual(status, 200)

    def test_connection_reset(self):
        self.cluster.set_faults([{"type": "reset", "times": 1, "resource": "configmaps",
                                  "name": "reset-me"}])
        with self.assertRaises((ConnectionResetError, http.client.RemoteDisconnected)):
            self.cluster.raw_request("GET", CONFIGMAPS + "/reset-me")
        self.assertEqual(self.cluster.api("GET", CONFIGMAPS + "/reset-me")[0], 404)

    def test_namespace_termination(self):
        self.cluster.must("POST", "/api/v1/namespaces", {"metadata": {"name": "doomed"}})
        self.cluster.must("POST", "/api/v1/namespaces/doomed/configmaps", configmap("inside"))
        self.cluster.must("POST", "/api/v1/namespaces/doomed/configmaps",
                          configmap("held", finalizers=["test/hold"]))
        deleting = self.cluster.must("DELETE", "/api/v1/namespaces/doomed")
        self.assertEqual(deleting["status"]["phase"], "Terminating")
        status, body = self.cluster.api("POST", "/api/v1/namespaces/doomed/configmaps",
                                        configmap("late"))
        self.assertEqual(status, 403)
        self.assertEqual(body["details"]["causes"][0]["reason"], "NamespaceTerminating")
        self.cluster.wait_for(lambda: self.cluster.api(
            "GET", "/api/v1/namespaces/doomed/configmaps/inside")[0] == 404, 5,
            message="namespace contents to be deleted")
        self.assertEqual(self.cluster.api("GET", "/api/v1/namespaces/doomed")[0], 200)
        self.cluster.must("PATCH", "/api/v1/namespaces/doomed/configmaps/held",
                          {"metadata": {"finalizers": None}},
                          content_type="application/merge-patch+json")
        self.cluster.wait_for(lambda: self.cluster.api("GET", "/api/v1/namespaces/doomed")[0]
                              == 404, 5, message="namespace removal")
        status, body = self.cluster.api("POST", "/api/v1/namespaces/doomed/configmaps",
                                        configmap("after"))
        self.assertEqual(status, 404)

    def test_warning_header(self):
        self.cluster.set_faults([{"type": "warning", "times": 1, "resource": "configmaps",
                                  "text": 'v1 ConfigMap "x" is deprecated'}])
        status, headers, _ = self.cluster.raw_request("GET", CONFIGMAPS)
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("Warning"), '299 - "v1 ConfigMap \\"x\\" is deprecated"')
        status, headers, _ = self.cluster.raw_request("GET", CONFIGMAPS)
        self.assertNotIn("Warning", headers, "the warning fired only once")
        self.cluster.set_faults([{"type": "warning", "times": 1, "verb": "list",
                                  "resource": "configmaps", "text": "kubectl sees this"}])
        result = kubectl(self.cluster, "get", "configmaps")
        self.assertIn("Warning: kubectl sees this", result.stderr)

    def test_injected_latency(self):
        self.cluster.set_faults([{"type": "latency", "ms": 400, "times": 1,
                                  "resource": "configmaps", "name": "slow"}])
        started = time.monotonic()
        self.cluster.api("GET", CONFIGMAPS + "/slow")
        self.assertGreaterEqual(time.monotonic() - started, 0.4)

    def test_request_counts(self):
        self.cluster.reset_requests()
        self.cluster.api("GET", CONFIGMAPS)
        self.cluster.api("GET", CONFIGMAPS)
        self.cluster.api("GET", CONFIGMAPS + "/missing")
        counts = self.cluster.request_counts()
        self.assertEqual(counts.get("list configmaps"), 2)
        self.assertEqual(counts.get("get configmaps"), 1)
        log = self.cluster.request_log()
        self.assertEqual([entry["code"] for entry in log], [200, 200, 404])

    def test_token_expiry_and_rotation(self):
        self.cluster.set_faults([{"type": "token-expire", "identity": "viewer",
                                  "afterRequests": 1}])
        old = self.cluster.token("viewer")
        self.assertEqual(self.cluster.api("GET", CONFIGMAPS, identity=None, token=old)[0], 200)
        self.assertEqual(self.cluster.api("GET", CONFIGMAPS, identity=None, token=old)[0], 401)
        self.cluster.rotate_token("viewer")
        new = self.cluster.token("viewer")
        self.assertNotEqual(old, new)
        self.assertEqual(self.cluster.api("GET", CONFIGMAPS, identity=None, token=new)[0], 200)
        # kubectl reads tokenFile when it starts, so it picks up the rotated token.
        result = kubectl(self.cluster, "get", "configmaps", "-o", "name", "--context", "viewer",
                         kubeconfig=self.cluster.info["kubeconfigs"]["kubeconfig-tokenfile"])
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_kubectl_crud(self):
        manifest = json.dumps(configmap("via-kubectl", {"app": "k"}))
        created = kubectl(self.cluster, "create", "-f", "-", input_data=manifest)
        self.assertEqual(created.returncode, 0, created.stderr)
        again = kubectl(self.cluster, "create", "-f", "-", input_data=manifest)
        self.assertNotEqual(again.returncode, 0)
        self.assertIn("AlreadyExists", again.stderr)
        listed = kubectl(self.cluster, "get", "configmaps", "-l", "app=k", "-o", "name")
        self.assertEqual(listed.stdout.split(), ["configmap/via-kubectl"])
        got = kubectl(self.cluster, "get", "configmap", "via-kubectl", "-o",
                      "jsonpath={.data.k}")
        self.assertEqual(got.stdout, "v")
        deleted = kubectl(self.cluster, "delete", "configmap", "via-kubectl")
        self.assertEqual(deleted.returncode, 0, deleted.stderr)
        missing = kubectl(self.cluster, "get", "configmap", "via-kubectl")
        self.assertIn("NotFound", missing.stderr)
        with_token = kubectl(self.cluster, "get", "sandboxes.agents.x-k8s.io",
                             kubeconfig=self.cluster.kubeconfig_token)
        self.assertEqual(with_token.returncode, 0, with_token.stderr)


if __name__ == "__main__":
    unittest.main()
