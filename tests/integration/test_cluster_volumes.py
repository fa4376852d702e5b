"""Pod volumes, securityContext users and `kubectl create` of core kinds against the fake
cluster: emptyDir volumes are private tmpfs mounts per pod that vanish with the pod, and exec
runs as the container's user."""
import os
import unittest

from cluster_support import (KUBECTL, PODS_API, FakeCluster, create_running_pod, kubectl,
                             require_cluster, sandbox_pod, ws_exec)

NS = "default"


def volume_pod(name, mounts, volumes, **spec):
    body = sandbox_pod(name, volumes=volumes, **spec)
    body["spec"]["containers"][0]["volumeMounts"] = mounts
    return body


def mount_options(mountinfo, path):
    """Return (mount options, super block options) of the mount at path, or None."""
    for line in mountinfo.splitlines():
        fields = line.split()
        if fields[4] == path:
            separator = fields.index("-")
            return fields[5], fields[separator + 3]
    return None


@require_cluster
class ClusterVolumesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = FakeCluster().start()
        # A directory missing on the host, so the kubelet has to make and remove it.
        cls.mount_path = "/sbx-test-volume-%d" % os.getpid()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    def run_in(self, pod, script, namespace=NS):
        result = ws_exec(self.cluster, namespace, pod, ["sh", "-c", script])
        output = result.output(1).decode() + result.output(2).decode()
        return result.status["status"], output

    def ready(self, name, namespace=NS):
        pod = self.cluster.must("GET", "%s/%s" % (PODS_API % namespace, name))
        conditions = (pod.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def delete_pod(self, name, namespace=NS):
        self.cluster.must("DELETE", "%s/%s?gracePeriodSeconds=0" % (PODS_API % namespace, name))
        self.cluster.wait_for(lambda: self.cluster.api(
            "GET", "%s/%s" % (PODS_API % namespace, name))[0] == 404, 20,
            message="pod %s to be gone" % name)

    def wait_gone(self, path):
        """Wait for path to vanish: the API object of a pod deleted with grace period 0 is
        gone before the kubelet has stopped its processes."""
        self.cluster.wait_for(lambda: not os.path.exists(path), 10,
                              message="%s to be removed" % path)

    def sandbox_pid(self, name):
        for pod in self.cluster.pod_runtimes():
            if pod["name"] == name:
                return pod["sandboxPid"]
        return None

    def test_empty_dir_private_per_pod(self):
        path = self.mount_path
        mounts = [{"name": "work", "mountPath": path},
                  {"name": "work", "mountPath": path + "/nested", "subPath": "inner"}]
        volumes = [{"name": "work", "emptyDir": {}}]
        for name in ("private-a", "private-b"):
            create_running_pod(self.cluster, NS, volume_pod(name, mounts, volumes))
        self.assertTrue(os.path.isdir(path), "the kubelet did not make the mount point")

        status, output = self.run_in("private-a", "echo from-a > %s/step && "
                                     "echo deep > %s/nested/file" % (path, path))
        self.assertEqual(status, "Success", output)
        status, output = self.run_in("private-a", "cat %s/inner/file" % path)
        self.assertEqual(status, "Success", output)
        self.assertEqual(output, "deep\n")
        status, output = self.run_in("private-b", "ls -A %s" % path)
        self.assertEqual(status, "Success", output)
        # Its own subPath directory and mount point, but not private-a's files.
        self.assertEqual(output, "inner\nnested\n")
        status, output = self.run_in("private-b", "stat -c %%a %s" % path)
        self.assertEqual(output, "777\n")
        self.assertEqual(os.listdir(path), [])

        pid = self.sandbox_pid("private-a")
        with open("/proc/%d/mountinfo" % pid) as stream:
            options = mount_options(stream.read(), path)
        self.assertIsNotNone(options)
        with open("/proc/self/mountinfo") as stream:
            self.assertIsNone(mount_options(stream.read(), path))

        self.delete_pod("private-a")
        self.wait_gone("/proc/%d" % pid)
        # private-b still mounts there, so the directory stays.
        self.assertTrue(os.path.isdir(path))
        status, output = self.run_in("private-b", "touch %s/still-mounted" % path)
        self.assertEqual(status, "Success", output)
        self.delete_pod("private-b")
        self.wait_gone(path)

    def test_empty_dir_size_and_read_only(self):
        path = self.mount_path + "-options"
        mounts = [{"name": "memory", "mountPath": path},
                  {"name": "frozen", "mountPath": path + "-ro", "readOnly": True}]
        volumes = [{"name": "memory", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}},
                   {"name": "frozen", "emptyDir": {}}]
        create_running_pod(self.cluster, NS, volume_pod("options", mounts, volumes))
        status, mountinfo = self.run_in("options", "cat /proc/self/mountinfo")
        self.assertEqual(status, "Success", mountinfo)
        memory = mount_options(mountinfo, path)
        self.assertIsNotNone(memory, mountinfo)
        self.assertIn("size=8192k", memory[1])
        frozen = mount_options(mountinfo, path + "-ro")
        self.assertIsNotNone(frozen, mountinfo)
        self.assertTrue(frozen[0].startswith("ro"), frozen)
        status, output = self.run_in("options", "touch %s-ro/file" % path)
        self.assertEqual(status, "Failure")
        self.assertIn("Read-only file system", output)
        status, output = self.run_in("options", "head -c 9M /dev/zero > %s/big" % path)
        self.assertEqual(status, "Failure", "an 8Mi emptyDir took 9 MiB")
        self.delete_pod("options")
        self.wait_gone(path)
        self.wait_gone(path + "-ro")

    def test_configmap_and_secret_volumes(self):
        result = kubectl(self.cluster, "create", "configmap", "settings",
                         "--from-literal=app.conf=level=debug", "--from-literal=other=x")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = kubectl(self.cluster, "create", "secret", "generic", "credentials",
                         "--from-literal=token=not-a-real-token")
        self.assertEqual(result.returncode, 0, result.stderr)
        path = self.mount_path + "-objects"
        mounts = [{"name": "config", "mountPath": path + "/config"},
                  {"name": "secret", "mountPath": path + "/secret"}]
        volumes = [{"name": "config", "configMap": {
                       "name": "settings", "items": [{"key": "app.conf", "path": "etc/app"}]}},
                   {"name": "secret", "secret": {"secretName": "credentials",
                                                 "defaultMode": 0o400}}]
        create_running_pod(self.cluster, NS, volume_pod(
            "objects", mounts, volumes, securityContext={"runAsUser": 1234, "fsGroup": 2345}))
        status, output = self.run_in("objects", "cat %s/config/etc/app" % path)
        self.assertEqual(status, "Success", output)
        self.assertEqual(output, "level=debug")
        status, output = self.run_in("objects", "ls -A %s/config" % path)
        self.assertEqual(output, "etc\n")
        # defaultMode 0400 plus the group read bit that fsGroup adds.
        status, output = self.run_in("objects", "stat -c '%%a %%g' %s/secret/token && "
                                     "cat %s/secret/token" % (path, path))
        self.assertEqual(status, "Success", output)
        self.assertEqual(output, "440 2345\nnot-a-real-token")
        self.delete_pod("objects")
        self.wait_gone(path)

    def test_missing_configmap_waits(self):
        path = self.mount_path + "-late"
        volumes = [{"name": "config", "configMap": {"name": "late"}}]
        self.cluster.must("POST", PODS_API % NS, volume_pod(
            "late", [{"name": "config", "mountPath": path}], volumes))

        def failed_mount_event():
            _, events = self.cluster.api("GET", "/api/v1/namespaces/%s/events" % NS)
            return [e for e in events["items"] if e["involvedObject"]["name"] == "late"
                    and e["reason"] == "FailedMount"]
        events = self.cluster.wait_for(failed_mount_event, 10,
                                       message="a FailedMount event for pod late")
        self.assertIn('configmap "late" not found', events[0]["message"])
        pod = self.cluster.must("GET", "%s/late" % (PODS_API % NS))
        self.assertEqual(pod["status"]["phase"], "Pending")

        self.cluster.must("POST", "/api/v1/namespaces/%s/configmaps" % NS,
                          {"metadata": {"name": "late"}, "data": {"key": "arrived"}})
        self.cluster.wait_for(lambda: self.ready("late"), 20,
                              message="pod late to start with its ConfigMap")
        status, output = self.run_in("late", "cat %s/key" % path)
        self.assertEqual(status, "Success", output)
        self.assertEqual(output, "arrived")
        self.delete_pod("late")

    def test_unsupported_volume_rejected(self):
        volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
        self.cluster.must("POST", PODS_API % NS, volume_pod(
            "claim", [{"name": "data", "mountPath": "/data"}], volumes))

        def failed():
            pod = self.cluster.must("GET", "%s/claim" % (PODS_API % NS))
            return pod if pod["status"].get("reason") == "FailedMount" else None
        pod = self.cluster.wait_for(failed, 10, message="pod claim to report FailedMount")
        self.assertIn("persistentVolumeClaim", pod["status"]["message"])
        self.assertEqual(pod["status"]["phase"], "Pending")
        self.delete_pod("claim")

    def test_run_as_user_applies_to_exec(self):
        path = self.mount_path + "-user"
        container = {"name": "main", "image": "debian:12", "command": ["sleep", "3600"],
                     "securityContext": {"runAsUser": 2001},
                     "volumeMounts": [{"name": "work", "mountPath": path}]}
        body = sandbox_pod("user", containers=[container],
                           volumes=[{"name": "work", "emptyDir": {}}],
                           securityContext={"runAsUser": 1001, "runAsGroup": 1002,
                                            "supplementalGroups": [1003]})
        create_running_pod(self.cluster, NS, body)
        status, output = self.run_in("user", "id -u; id -g; id -G; touch %s/mine && "
                                     "stat -c %%u %s/mine" % (path, path))
        self.assertEqual(status, "Success", output)
        self.assertEqual(output.split("\n")[:2], ["2001", "1002"])
        self.assertEqual(sorted(output.split("\n")[2].split()), ["1002", "1003"])
        self.assertEqual(output.split("\n")[3], "2001")
        # Root's privileges are gone: mounting fails for the container's user.
        status, output = self.run_in("user", "mount -t tmpfs tmpfs %s" % path)
        self.assertEqual(status, "Failure", output)

        main_pid = self.cluster.pod_runtimes()
        pids = [p["containers"]["main"] for p in main_pid if p["name"] == "user"]
        self.assertEqual(len(pids), 1)
        self.assertTrue(self.cluster.wait_for(lambda: self._uid_of_sleep(pids[0]) == 2001, 5,
                                              message="the container's sleep to run as 2001"))
        if KUBECTL:
            result = kubectl(self.cluster, "exec", "user", "--", "id", "-u")
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(result.stdout, "2001\n")
        self.delete_pod("user")

    @staticmethod
    def _uid_of_sleep(nsenter_pid):
        """Return the real uid of the sleep process below the container's nsenter."""
        pending = [nsenter_pid]
        while pending:
            pid = pending.pop()
            try:
                with open("/proc/%d/comm" % pid) as stream:
                    comm = stream.read().strip()
                with open("/proc/%d/status" % pid) as stream:
                    status = stream.read()
            except FileNotFoundError:
                continue
            if comm == "sleep":
                return int(status.split("\nUid:")[1].split()[0])
            with open("/proc/%d/task/%d/children" % (pid, pid)) as stream:
                pending += [int(child) for child in stream.read().split()]
        return None

    def test_run_as_non_root_without_user(self):
        body = sandbox_pod("rootless", securityContext={"runAsNonRoot": True})
        self.cluster.must("POST", PODS_API % NS, body)

        def config_error():
            pod = self.cluster.must("GET", "%s/rootless" % (PODS_API % NS))
            statuses = pod["status"].get("containerStatuses") or []
            waiting = statuses[0]["state"].get("waiting", {}) if statuses else {}
            return waiting if waiting.get("reason") == "CreateContainerConfigError" else None
        waiting = self.cluster.wait_for(config_error, 10,
                                        message="pod rootless to report its config error")
        self.assertIn("runAsNonRoot", waiting["message"])
        self.delete_pod("rootless")


@require_cluster
@unittest.skipIf(KUBECTL is None, "kubectl is not installed")
class ClusterKubectlCreateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = FakeCluster().start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    def test_kubectl_create_namespace(self):
        result = kubectl(self.cluster, "create", "namespace", "ci")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("namespace/ci created", result.stdout)
        namespace = self.cluster.must("GET", "/api/v1/namespaces/ci")
        self.assertEqual(namespace["metadata"]["name"], "ci")
        self.assertEqual(namespace["status"]["phase"], "Active")
        verbs = [r["verb"] for r in self.cluster.request_log() if r["resource"] == "namespaces"]
        self.assertIn("create", verbs)

    def test_kubectl_create_core_kinds(self):
        result = kubectl(self.cluster, "create", "serviceaccount", "builder")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.cluster.must("GET", "/api/v1/namespaces/default/serviceaccounts/builder")

        result = kubectl(self.cluster, "create", "configmap", "plain",
                         "--from-literal=greeting=hello")
        self.assertEqual(result.returncode, 0, result.stderr)
        config_map = self.cluster.must("GET", "/api/v1/namespaces/default/configmaps/plain")
        self.assertEqual(config_map["data"], {"greeting": "hello"})

        result = kubectl(self.cluster, "create", "secret", "generic", "pair",
                         "--from-literal=user=ci", "--type=Opaque")
        self.assertEqual(result.returncode, 0, result.stderr)
        secret = self.cluster.must("GET", "/api/v1/namespaces/default/secrets/pair")
        self.assertEqual(secret["data"], {"user": "Y2k="})
        self.assertEqual(secret["type"], "Opaque")


if __name__ == "__main__":
    unittest.main()
