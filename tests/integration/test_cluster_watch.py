"""Watch behaviour of the fake API server: event order, resourceVersion starts, bookmarks,
timeouts, forced 410 Gone, dropped and split streams, and kubectl get --watch."""
import http.client
import json
import socket
import subprocess
import threading
import time
import unittest

from cluster_support import KUBECTL, FakeCluster, require_cluster

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


def configmap(name, labels=None):
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels or {}}, "data": {"k": "v"}}


class Watch:
    """A watch request read line by line through http.client (chunked decoding)."""

    def __init__(self, cluster, query, timeout=10):
        self.connection = http.client.HTTPSConnection(
            "127.0.0.1", cluster.port, context=cluster.ssl_context("admin"), timeout=timeout)
        self.connection.request("GET", CONFIGMAPS + "?watch=1&" + query,
                                headers={"Accept": "application/json"})
        self.response = self.connection.getresponse()

    def next(self):
        line = self.response.readline()
        return json.loads(line) if line.strip() else None

    def close(self):
        self.connection.close()


def raw_chunks(cluster, path):
    """Read a chunked response at the socket level; returns (status line, [chunk bytes])."""
    context = cluster.ssl_context("admin")
    with socket.create_connection(("127.0.0.1", cluster.port), timeout=10) as plain:
        with context.wrap_socket(plain, server_hostname="127.0.0.1") as sock:
            sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n"
                          "Connection: close\r\n\r\n" % path).encode())
            data = b""
            while True:
                try:
                    piece = sock.recv(65536)
                except (ConnectionResetError, OSError):
                    break
                if not piece:
                    break
                data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    chunks = []
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            chunks.append(b"")
            break
        chunks.append(rest[:size])
        body = rest[size + 2:]
    return head.split(b"\r\n")[0].decode(), chunks


@require_cluster
class ClusterWatchTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = FakeCluster(extra_args=["--bookmark-interval", "0.3"]).start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.cleanup()

    def tearDown(self):
        self.cluster.clear_faults()

    def test_events_from_resource_version(self):
        first = self.cluster.must("POST", CONFIGMAPS, configmap("w-one", {"w": "order"}))
        start = first["metadata"]["resourceVersion"]
        self.cluster.must("PATCH", CONFIGMAPS + "/w-one", {"data": {"k": "changed"}},
                          content_type="application/merge-patch+json")
        self.cluster.must("DELETE", CONFIGMAPS + "/w-one")
        watch = Watch(self.cluster, "labelSelector=w%3Dorder&resourceVersion=" + start)
        try:
            self.assertEqual(watch.response.status, 200)
            self.assertEqual(watch.response.getheader("Transfer-Encoding"), "chunked")
            modified = watch.next()
            deleted = watch.next()
        finally:
            watch.close()
        self.assertEqual(modified["type"], "MODIFIED")
        self.assertEqual(modified["object"]["data"]["k"], "changed")
        self.assertEqual(deleted["type"], "DELETED")
        self.assertGreater(int(deleted["object"]["metadata"]["resourceVersion"]),
                           int(modified["object"]["metadata"]["resourceVersion"]))

    def test_synthetic_added_then_live_events(self):
        self.cluster.must("POST", CONFIGMAPS, configmap("w-live-a", {"w": "live"}))
        watch = Watch(self.cluster, "labelSelector=w%3Dlive")
        try:
            added = watch.next()
            self.assertEqual((added["type"], added["object"]["metadata"]["name"]),
                             ("ADDED", "w-live-a"))
            self.cluster.must("POST", CONFIGMAPS, configmap("w-live-b", {"w": "live"}))
            live = watch.next()
            self.assertEqual((live["type"], live["object"]["metadata"]["name"]),
                             ("ADDED", "w-live-b"))
            # Leaving the selector is a DELETED event for this watch.
            self.cluster.must("PATCH", CONFIGMAPS + "/w-live-b",
                              {"metadata": {"labels": {"w": "other"}}},
                              content_type="application/merge-patch+json")
            left = watch.next()
            self.assertEqual((left["type"], left["object"]["metadata"]["name"]),
                             ("DELETED", "w-live-b"))
        finally:
            watch.close()

    def test_bookmarks_and_timeout(self):
        started = time.monotonic()
        watch = Watch(self.cluster, "labelSelector=w%3Dnone&allowWatchBookmarks=true"
                      "&timeoutSeconds=1&resourceVersion=0")
        events = []
        try:
            while True:
                event = watch.next()
                if event is None:
                    break
                events.append(event)
        finally:
            watch.close()
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 0.9)
        self.assertLess(elapsed, 5)
        self.assertTrue(events, "expected bookmarks within one second")
        for event in events:
            self.assertEqual(event["type"], "BOOKMARK")
            self.assertEqual(event["object"]["kind"], "ConfigMap")
            self.assertTrue(event["object"]["metadata"]["resourceVersion"].isdigit())

    def test_expired_resource_version_error_event(self):
        created = self.cluster.must("POST", CONFIGMAPS, configmap("w-expired"))
        old = created["metadata"]["resourceVersion"]
        self.cluster.set_faults([{"type": "expire-rv", "before": "current"}])
        watch = Watch(self.cluster, "resourceVersion=" + old)
        try:
            self.assertEqual(watch.response.status, 200)
            error = watch.next()
            self.assertIsNone(watch.next(), "the watch ends after the ERROR event")
        finally:
            watch.close()
        self.assertEqual(error["type"], "ERROR")
        self.assertEqual(error["object"]["code"], 410)
        self.assertEqual(error["object"]["reason"], "Expired")
        self.assertIn("too old resource version", error["object"]["message"])

    def test_expired_resource_version_http_410(self):
        created = self.cluster.must("POST", CONFIGMAPS, configmap("w-expired-http"))
        self.cluster.set_faults([{"type": "expire-rv", "before": "current", "mode": "http"}])
        status, body = self.cluster.api(
            "GET", CONFIGMAPS + "?watch=1&resourceVersion=" +
            created["metadata"]["resourceVersion"])
        self.assertEqual(status, 410)
        self.assertEqual(body["reason"], "Expired")

    def test_dropped_watch(self):
        self.cluster.must("POST", CONFIGMAPS, configmap("w-drop-1", {"w": "drop"}))
        self.cluster.must("POST", CONFIGMAPS, configmap("w-drop-2", {"w": "drop"}))
        self.cluster.set_faults([{"type": "watch-drop", "afterEvents": 1, "times": 1}])
        status, chunks = raw_chunks(self.cluster, CONFIGMAPS + "?watch=1&labelSelector=w%3Ddrop")
        self.assertIn("200", status)
        self.assertEqual(len(chunks), 1)
        self.assertEqual(json.loads(chunks[0])["type"], "ADDED")
        self.assertNotEqual(chunks[-1], b"", "no terminating chunk after a dropped watch")

    def test_events_split_across_chunks(self):
        self.cluster.must("POST", CONFIGMAPS, configmap("w-split", {"w": "split"}))
        self.cluster.set_faults([{"type": "watch-split", "times": 1}])
        _, chunks = raw_chunks(self.cluster, CONFIGMAPS + "?watch=1&labelSelector=w%3Dsplit"
                               "&timeoutSeconds=1")
        self.assertEqual(chunks[-1], b"", "a timed out watch ends with the zero chunk")
        payload = b"".join(chunks)
        self.assertGreater(len(chunks) - 1, 1, "the event should span several chunks")
        self.assertEqual(json.loads(payload)["object"]["metadata"]["name"], "w-split")

    def test_kubectl_watch_with_timeout(self):
        self.cluster.must("POST", CONFIGMAPS, configmap("w-kubectl-a", {"w": "kubectl"}))
        process = subprocess.Popen([KUBECTL, "get", "configmaps", "-l", "w=kubectl", "--watch",
                                    "--output-watch-events", "--no-headers",
                                    "--request-timeout=3s"], env=self.cluster.env(),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(process.stdout))
        reader.start()
        self.cluster.wait_for(lambda: lines, 10, message="kubectl to print the first event")
        self.cluster.must("POST", CONFIGMAPS, configmap("w-kubectl-b", {"w": "kubectl"}))
        self.cluster.must("DELETE", CONFIGMAPS + "/w-kubectl-a")
        process.wait(15)
        reader.join()
        process.stdout.close()
        stderr = process.stderr.read()
        process.stderr.close()
        self.assertEqual(process.returncode, 0, stderr)
        events = [line.split()[:2] for line in lines]
        self.assertIn(["ADDED", "w-kubectl-a"], events)
        self.assertIn(["ADDED", "w-kubectl-b"], events)
        self.assertIn(["DELETED", "w-kubectl-a"], events)


if __name__ == "__main__":
    unittest.main()
