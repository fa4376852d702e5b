"""The download benchmark's test host: a network namespace running blob_server.py."""

import os
import subprocess

BLOB_PORT = 8080


class TestHostError(Exception):
    pass


def run(argv):
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise TestHostError("%s failed: %s" % (" ".join(argv), result.stderr.strip()))
    return result.stdout


def pick_subnet():
    """Return a 10.x.42.0/29 prefix that no route of this host covers more specifically than
    the default route."""
    for second in range(203, 250):
        base = "10.%d.42" % second
        routes = run(["ip", "-o", "route", "show", "to", "match", base + ".2"])
        if all(line.startswith("default") for line in routes.splitlines()):
            return base
    raise TestHostError("no free 10.x.42.0/29 subnet for the benchmark's test host")


class TestHost:
    """A network namespace joined to this host by a veth pair, running blob_server.py."""

    def __init__(self, work_dir):
        tag = os.getpid() % 100000
        self.namespace = "sbx-bench-%d" % tag
        self.veth_host = "sbxbh%d" % tag
        self.veth_ns = "sbxbn%d" % tag
        base = pick_subnet()
        self.host_address = base + ".1"
        self.server_address = base + ".2"
        self.server = None
        # run-bench.sh removes these after a crash.
        with open(os.path.join(work_dir, "netns"), "w") as f:
            f.write("%s %s\n" % (self.namespace, self.veth_host))

    def create(self):
        run(["ip", "netns", "add", self.namespace])
        run(["ip", "link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_ns])
        run(["ip", "link", "set", self.veth_ns, "netns", self.namespace])
        run(["ip", "addr", "add", self.host_address + "/29", "dev", self.veth_host])
        run(["ip", "link", "set", self.veth_host, "up"])
        run(["ip", "-n", self.namespace, "addr", "add", self.server_address + "/29", "dev",
             self.veth_ns])
        run(["ip", "-n", self.namespace, "link", "set", self.veth_ns, "up"])
        run(["ip", "-n", self.namespace, "link", "set", "lo", "up"])

    def serve(self, size):
        server = os.path.join(os.path.dirname(os.path.abspath(__file__)), "blob_server.py")
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, "/usr/bin/python3", server,
             "--bind", self.server_address, "--port", str(BLOB_PORT), "--size", str(size)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = self.server.stdout.readline()
        if line.strip() != b"ready":
            raise TestHostError("blob_server.py did not start in %s" % self.namespace)

    def url(self):
        return "http://%s:%d/blob" % (self.server_address, BLOB_PORT)

    def destroy(self):
        if self.server is not None:
            # Closing its stdin makes the server exit.
            self.server.stdin.close()
            try:
                self.server.wait(10)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
            self.server = None
        subprocess.run(["ip", "link", "del", self.veth_host], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", self.namespace], stderr=subprocess.DEVNULL)
