"""Python API for tests: start and stop a fake cluster and talk to it.

    from fake_apiserver import FakeCluster

    with FakeCluster() as cluster:
        status, body = cluster.api("GET", "/api/v1/namespaces/default/pods")
        cluster.set_faults([{"type": "status", "code": 429, "retryAfter": 1, "times": 2}])
        print(cluster.request_counts())

The server runs as a child process (tests/cluster/fake-apiserver, as root) so that a crash of
the test never leaves its pods behind: they die with the server.
"""
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.join(os.path.dirname(HERE), "fake-apiserver")
PYTHON = "/usr/bin/python3"


class ClusterError(RuntimeError):
    pass


class FakeCluster:
    """One fake API server process and its state directory."""

    def __init__(self, state_dir=None, ready_delay=0.2, enforce_network_policies=True,
                 faults_file=None, auth_config=None, kube_version=None, extra_args=()):
        self.owns_state_dir = state_dir is None
        self.state_dir = state_dir or tempfile.mkdtemp(prefix="sbx-fake-cluster-")
        self.args = ["--state-dir", self.state_dir, "--ready-delay", str(ready_delay),
                     "--enforce-network-policies",
                     "true" if enforce_network_policies else "false"]
        if faults_file:
            self.args += ["--faults", faults_file]
        if auth_config:
            self.args += ["--auth-config", auth_config]
        if kube_version:
            self.args += ["--kube-version", kube_version]
        self.args += list(extra_args)
        self.process = None
        self.info = None
        self.stderr_path = os.path.join(self.state_dir, "stderr.log")

    # --- lifecycle ----------------------------------------------------------------------

    def start(self, timeout=30):
        stderr = open(self.stderr_path, "wb")
        try:
            self.process = subprocess.Popen([PYTHON, SERVER] + self.args,
                                            stdout=subprocess.PIPE, stderr=stderr,
                                            stdin=subprocess.DEVNULL)
        finally:
            stderr.close()
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if line or self.process.poll() is not None:
                break
        if not line:
            self.process.kill()
            self.process.wait()
            raise ClusterError("fake-apiserver did not start: %s" % self.log_tail())
        self.info = json.loads(line)
        return self

    def stop(self, timeout=30):
        """Send SIGTERM and wait; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise ClusterError("fake-apiserver did not stop within %ds" % timeout) from None
        self.process.stdout.close()
        return self.process.returncode

    def cleanup(self):
        self.stop()
        if self.owns_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    def log_tail(self, lines=40):
        text = ""
        for path in (self.stderr_path, os.path.join(self.state_dir, "fake-apiserver.log")):
            try:
                with open(path, errors="replace") as stream:
                    text += "".join(stream.readlines()[-lines:])
            except FileNotFoundError:
                pass
        return text

    # --- addresses and credentials ------------------------------------------------------

    @property
    def url(self):
        return self.info["url"]

    @property
    def port(self):
        return int(self.url.rsplit(":", 1)[1])

    @property
    def pid(self):
        return self.info["pid"]

    @property
    def kubeconfig(self):
        return self.info["kubeconfig"]

    @property
    def kubeconfig_token(self):
        return self.info["kubeconfigToken"]

    def kubeconfig_for(self, identity):
        return self.info["kubeconfigs"]["kubeconfig-%s" % identity]

    def token(self, identity):
        with open(self.info["tokenFiles"][identity]) as stream:
            return stream.read().strip()

    @property
    def network(self):
        return self.info["network"]

    def ssl_context(self, identity=None):
        context = ssl.create_default_context(cafile=self.info["caFile"])
        if identity:
            files = self.info["clientCertificates"][identity]
            context.load_cert_chain(files["cert"], files["key"])
        return context

    # --- HTTP ---------------------------------------------------------------------------

    def raw_request(self, method, path, body=None, identity="admin", token=None,
                    content_type="application/json", headers=None, timeout=30):
        """Send one request; returns (status, headers, body bytes).

        Authenticates with the client certificate of identity, or with token when given
        (identity=None and token=None sends no credentials).
        """
        context = self.ssl_context(identity if token is None else None)
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=context,
                                                 timeout=timeout)
        all_headers = {"Accept": "application/json"}
        if token:
            all_headers["Authorization"] = "Bearer " + token
        if body is not None:
            if not isinstance(body, (bytes, str)):
                body = json.dumps(body)
            all_headers["Content-Type"] = content_type
        all_headers.update(headers or {})
        try:
            connection.request(method, path, body=body, headers=all_headers)
            response = connection.getresponse()
            data = response.read()
            return response.status, dict(response.getheaders()), data
        finally:
            connection.close()

    def api(self, method, path, body=None, **kwargs):
        """Send a request and decode the JSON response; returns (status, object)."""
        status, headers, data = self.raw_request(method, path, body, **kwargs)
        if headers.get("Content-Type", "").startswith("application/json") and data:
            return status, json.loads(data)
        return status, data.decode(errors="replace")

    def must(self, method, path, body=None, expect=(200, 201), **kwargs):
        status, obj = self.api(method, path, body, **kwargs)
        if status not in expect:
            raise ClusterError("%s %s returned %d: %s" % (method, path, status, obj))
        return obj

    # --- admin endpoints ----------------------------------------------------------------

    def set_faults(self, faults, replace=False):
        return self.must("POST", "/_fake/faults", {"faults": faults, "replace": replace})

    def clear_faults(self):
        return self.must("DELETE", "/_fake/faults")

    def request_counts(self):
        return self.must("GET", "/_fake/requests")["counts"]

    def request_log(self):
        return self.must("GET", "/_fake/requests")["log"]

    def reset_requests(self):
        self.must("DELETE", "/_fake/requests")

    def rotate_token(self, identity):
        return self.must("POST", "/_fake/tokens/%s/rotate" % identity)

    def pod_runtimes(self):
        return self.must("GET", "/_fake/pods")["pods"]

    def state(self):
        return self.must("GET", "/_fake/state")

    # --- helpers ------------------------------------------------------------------------

    def wait_for(self, predicate, timeout=20, interval=0.05, message="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise ClusterError("timed out after %ss waiting for %s" % (timeout, message))

    def env(self, kubeconfig=None):
        """Return an environment for kubectl against this cluster."""
        environment = dict(os.environ)
        environment["KUBECONFIG"] = kubeconfig or self.kubeconfig
        environment.pop("HTTPS_PROXY", None)
        environment.pop("https_proxy", None)
        return environment
