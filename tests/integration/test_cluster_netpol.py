"""NetworkPolicy enforcement in the fake cluster: a pod reaches an allowed host and not
another, both served from network namespaces the test makes, and nothing is enforced when
the cluster runs with --enforce-network-policies=false."""
import subprocess
import time
import unittest

from cluster_support import (PODS_API, FakeCluster, TestHost, connect_from_pod,
                             create_running_pod, require_cluster, sandbox_pod)

NS = "np"
POLICIES = "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies" % NS
ALLOWED_HOST = ("allowed", "10.250.1.2", "10.250.1.1")
DENIED_HOST = ("denied", "10.250.1.6", "10.250.1.5")


def egress_policy(name, selector, rules):
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name},
            "spec": {"podSelector": {"matchLabels": selector}, "policyTypes": ["Egress"],
                     "egress": rules}}


CIDR_RULES = [
    {"to": [{"ipBlock": {"cidr": "10.250.1.0/24", "except": ["10.250.1.4/30"]}}],
     "ports": [{"protocol": "TCP", "port": 8080}]},
    {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
]


class NetpolBase(unittest.TestCase):
    enforce = True

    @classmethod
    def setUpClass(cls):
        cls.cluster = FakeCluster(ready_delay=0.1,
                                  enforce_network_policies=cls.enforce).start()
        try:
            cls.cluster.must("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
            cls.allowed = TestHost(cls.cluster, *ALLOWED_HOST, ports=(8080, 8081)).__enter__()
            cls.denied = TestHost(cls.cluster, *DENIED_HOST).__enter__()
            create_running_pod(cls.cluster, NS, sandbox_pod("client", labels={"role": "client"}))
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for host in ("denied", "allowed"):
            if hasattr(cls, host):
                getattr(cls, host).__exit__(None, None, None)
        cls.cluster.cleanup()

    def reach(self, pod, address, port):
        return connect_from_pod(self.cluster, NS, pod, address, port, timeout=0.5)

    def nft_tables(self, pod):
        runtime = next(r for r in self.cluster.pod_runtimes() if r["name"] == pod)
        result = subprocess.run(["ip", "netns", "exec", runtime["netns"], "nft", "list",
                                 "tables"], capture_output=True, text=True, check=True)
        return result.stdout


@require_cluster
class ClusterNetworkPolicyTest(NetpolBase):
    def tearDown(self):
        self.cluster.api("DELETE", POLICIES + "?labelSelector=")
        for policy in self.cluster.must("GET", POLICIES)["items"]:
            self.cluster.must("DELETE", POLICIES + "/" + policy["metadata"]["name"])

    def wait_unreachable(self, pod, address, port):
        # Policies apply asynchronously, as with a real CNI.
        self.cluster.wait_for(lambda: self.reach(pod, address, port) is None, 10, 0.1,
                              message="%s:%d to become unreachable" % (address, port))

    def test_egress_allows_one_host(self):
        self.assertEqual(self.reach("client", "10.250.1.2", 8080), "hello allowed")
        self.assertEqual(self.reach("client", "10.250.1.6", 8080), "hello denied")
        self.cluster.must("POST", POLICIES, egress_policy("client-egress", {"role": "client"},
                                                          CIDR_RULES))
        self.wait_unreachable("client", "10.250.1.6", 8080)
        self.assertEqual(self.reach("client", "10.250.1.2", 8080), "hello allowed")
        self.assertIsNone(self.reach("client", "10.250.1.2", 8081), "port not allowed")
        self.assertIn("sbx_netpol", self.nft_tables("client"))

        self.cluster.must("DELETE", POLICIES + "/client-egress")
        self.cluster.wait_for(lambda: self.reach("client", "10.250.1.6", 8080), 10, 0.1,
                              message="the denied host to be reachable again")
        self.assertNotIn("sbx_netpol", self.nft_tables("client"))

    def test_pod_selector_peer(self):
        server = sandbox_pod("server", labels={"role": "server"}, command=[
            "/usr/bin/python3", "-c",
            "import socket\ns=socket.socket(); s.bind(('0.0.0.0', 9000)); s.listen(8)\n"
            "while True:\n    c,_=s.accept(); c.sendall(b'hello server\\n'); c.close()\n"])
        pod = create_running_pod(self.cluster, NS, server)
        address = pod["status"]["podIP"]
        self.cluster.wait_for(lambda: self.reach("client", address, 9000), 10, 0.1,
                              message="the server pod to listen")
        self.cluster.must("POST", POLICIES, egress_policy("deny-all", {"role": "client"}, []))
        self.wait_unreachable("client", address, 9000)
        self.cluster.must("POST", POLICIES, egress_policy("to-server", {"role": "client"}, [
            {"to": [{"podSelector": {"matchLabels": {"role": "server"}}}],
             "ports": [{"protocol": "TCP", "port": 9000}]}]))
        self.cluster.wait_for(lambda: self.reach("client", address, 9000), 10, 0.1,
                              message="the server pod to become reachable")
        self.assertIsNone(self.reach("client", "10.250.1.2", 8080))
        self.cluster.must("DELETE", PODS_API % NS + "/server?gracePeriodSeconds=0")

    def test_ingress_from_selected_pods_only(self):
        server = sandbox_pod("guarded", labels={"role": "guarded"}, command=[
            "/usr/bin/python3", "-c",
            "import socket\ns=socket.socket(); s.bind(('0.0.0.0', 9100)); s.listen(8)\n"
            "while True:\n    c,_=s.accept(); c.sendall(b'hello guarded\\n'); c.close()\n"])
        address = create_running_pod(self.cluster, NS, server)["status"]["podIP"]
        self.cluster.wait_for(lambda: self.reach("client", address, 9100), 10, 0.1,
                              message="the guarded pod to listen")
        self.assertEqual(self.from_host(self.allowed, address, 9100), "hello guarded")
        policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                  "metadata": {"name": "guarded-ingress"},
                  "spec": {"podSelector": {"matchLabels": {"role": "guarded"}},
                           "ingress": [{"from": [{"podSelector": {"matchLabels":
                                                                   {"role": "client"}}}],
                                        "ports": [{"port": 9100}]}]}}
        created = self.cluster.must("POST", POLICIES, policy)
        self.assertEqual(created["spec"]["policyTypes"], ["Ingress"])
        self.cluster.wait_for(lambda: self.from_host(self.allowed, address, 9100) is None, 10,
                              0.1, message="the outside host to be blocked")
        self.assertEqual(self.reach("client", address, 9100), "hello guarded")
        self.cluster.must("DELETE", PODS_API % NS + "/guarded?gracePeriodSeconds=0")

    def from_host(self, host, address, port):
        script = ("import socket,sys\n"
                  "try:\n"
                  "    s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.5)\n"
                  "    print(s.recv(100).decode().strip())\n"
                  "except OSError:\n"
                  "    pass\n")
        result = subprocess.run(["ip", "netns", "exec", host.netns, "/usr/bin/python3", "-c",
                                 script, address, str(port)], capture_output=True, text=True,
                                timeout=10)
        return result.stdout.strip() or None

    def test_new_pod_isolated_before_start(self):
        self.cluster.must("POST", POLICIES, egress_policy("early", {"role": "early"},
                                                          CIDR_RULES))
        probe = ("import socket\n"
                 "for address in ('10.250.1.2', '10.250.1.6'):\n"
                 "    try:\n"
                 "        socket.create_connection((address, 8080), timeout=0.5)\n"
                 "        print(address, 'open', flush=True)\n"
                 "    except OSError:\n"
                 "        print(address, 'blocked', flush=True)\n"
                 "import time; time.sleep(600)\n")
        create_running_pod(self.cluster, NS, sandbox_pod(
            "early", labels={"role": "early"}, command=["/usr/bin/python3", "-c", probe]))
        deadline = time.monotonic() + 10
        log = ""
        while time.monotonic() < deadline and log.count("\n") < 2:
            log = self.cluster.api("GET", PODS_API % NS + "/early/log")[1]
            time.sleep(0.1)
        self.assertEqual(log.splitlines(), ["10.250.1.2 open", "10.250.1.6 blocked"])
        self.cluster.must("DELETE", PODS_API % NS + "/early?gracePeriodSeconds=0")

    def test_many_policies_enforced_promptly(self):
        count = 50
        for index in range(count):
            self.cluster.must("POST", PODS_API % NS, sandbox_pod(
                "bulk-%d" % index, labels={"bulk": "b%d" % index}))
        self.cluster.wait_for(lambda: self.running_pods("bulk-") == count, 60, 0.2,
                              message="%d pods to run" % count)
        netns = {r["name"]: r["netns"] for r in self.cluster.pod_runtimes()}
        for index in range(count):
            self.cluster.must("POST", POLICIES, egress_policy(
                "bulk-%d" % index, {"bulk": "b%d" % index}, CIDR_RULES))
        created = time.monotonic()

        # Generous for a test: the fake loads a burst of policies in well under a second.
        missing = ["bulk-%d" % index for index in range(count)]
        while missing and time.monotonic() - created < 5:
            missing = [pod for pod in missing
                       if "sbx_netpol" not in self.netns_tables(netns[pod])]
        self.assertEqual(missing, [], "pods without their policy 5 s after it was created")
        for index in range(0, count, 10):
            pod = "bulk-%d" % index
            self.assertIsNone(self.reach(pod, "10.250.1.6", 8080), pod)
            self.assertEqual(self.reach(pod, "10.250.1.2", 8080), "hello allowed", pod)
        self.assertNotIn("sbx_netpol", self.nft_tables("client"),
                         "a pod no policy selects is not isolated")
        self.assertEqual(connect_from_pod(self.cluster, NS, "client", "10.250.1.6", 8080,
                                          timeout=2), "hello denied")
        self.cluster.must("DELETE", PODS_API % NS + "?labelSelector=bulk&gracePeriodSeconds=0")

    def running_pods(self, prefix):
        pods = self.cluster.must("GET", PODS_API % NS)["items"]
        return sum(1 for p in pods if p["metadata"]["name"].startswith(prefix)
                   and (p.get("status") or {}).get("phase") == "Running"
                   and p["status"].get("podIP"))

    @staticmethod
    def netns_tables(netns):
        return subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "tables"],
                              capture_output=True, text=True, check=True).stdout


@require_cluster
class ClusterNetworkPolicyOffTest(NetpolBase):
    enforce = False

    def test_policies_ignored_when_enforcement_off(self):
        created = self.cluster.must("POST", POLICIES, egress_policy(
            "client-egress", {"role": "client"}, CIDR_RULES))
        self.assertEqual(created["spec"]["policyTypes"], ["Egress"])
        time.sleep(0.5)
        self.assertEqual(self.reach("client", "10.250.1.6", 8080), "hello denied")
        self.assertEqual(self.reach("client", "10.250.1.2", 8081), "hello allowed")
        self.assertNotIn("sbx_netpol", self.nft_tables("client"))


if __name__ == "__main__":
    unittest.main()
