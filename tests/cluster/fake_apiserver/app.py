"""Assemble the fake cluster, serve it over TLS on loopback and tear it down on SIGTERM."""
import argparse
import asyncio
import ipaddress
import json
import logging
import os
import signal
import ssl
import sys

import yaml
from aiohttp import web

from . import auth, faults as faults_mod
from .controller import Controllers
from .kinds import build_kinds
from .kubelet import Kubelet
from .netpolicy import Enforcer
from .server import ApiServer
from .store import Store

log = logging.getLogger("fake-apiserver")

DEFAULT_VERSION = "1.33.1"
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease",
                      "agent-sandbox-system")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="fake-apiserver",
        description="Protocol-faithful fake Kubernetes API server with an Agent Sandbox "
                    "controller and a kubelet that runs pods in local namespaces (needs root).")
    parser.add_argument("--state-dir", required=True,
                        help="directory for the PKI, kubeconfigs, tokens, pod logs and the log")
    parser.add_argument("--port", type=int, default=0,
                        help="TCP port on 127.0.0.1 (default 0: pick a free port)")
    parser.add_argument("--ready-delay", type=float, default=0.2,
                        help="seconds between a pod's containers starting and the pod "
                             "becoming Ready (default 0.2)")
    parser.add_argument("--enforce-network-policies", default="true",
                        choices=("true", "false"),
                        help="enforce NetworkPolicy egress and ingress rules with nftables "
                             "(default true); false behaves like a CNI that ignores policies")
    parser.add_argument("--faults", metavar="FILE",
                        help="YAML or JSON file with a list of faults (see faults.py) active "
                             "from the start")
    parser.add_argument("--auth-config", metavar="FILE",
                        help="YAML or JSON file with identities and their rules "
                             "(default: admin, runner, runner-no-exec, viewer)")

    parser.add_argument("--kube-version", default=DEFAULT_VERSION,
                        help="version reported by /version, MAJOR.MINOR.PATCH (default %s); "
                             "from 1.35 a WebSocket exec also needs create on pods/exec"
                             % DEFAULT_VERSION)
    parser.add_argument("--pod-cidr", default="10.244.0.0/16",
                        help="pod address range inside the cluster's own network namespaces "
                             "(default 10.244.0.0/16)")
    parser.add_argument("--rv-step", type=int, default=7,
                        help="amount the global resourceVersion grows per write (default 7, "
                             "so clients cannot assume +1)")
    parser.add_argument("--bookmark-interval", type=float, default=5.0,
                        help="seconds between BOOKMARK events on watches that allow them "
                             "(default 5)")
    parser.add_argument("--ca-bundle", choices=("single", "double"), default="double",
                        help="'double' (default) puts an unrelated CA before the cluster CA in "
                             "the kubeconfig's certificate-authority-data")
    parser.add_argument("--log-level", default="INFO",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"))

    args = parser.parse_args(argv)
    parts = args.kube_version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        parser.error('--kube-version "%s" is invalid; use MAJOR.MINOR.PATCH such as 1.33.1'
                     % args.kube_version)
    try:
        ipaddress.ip_network(args.pod_cidr)
    except ValueError:
        parser.error('--pod-cidr "%s" is not a valid CIDR' % args.pod_cidr)
    return args


def _write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(text)


def write_kubeconfigs(state_dir, url, pki, identities):
    """Write kubeconfig (client certificate of admin), kubeconfig-token (a context per
    identity), kubeconfig-tokenfile (the same with tokenFile) and kubeconfig-<identity>.

    Tokens go to tokens/<identity> (mode 0600).
    """
    with open(pki.ca_file, "rb") as stream:
        ca_data = auth.b64(stream.read())
    cluster = {"name": "sbx-fake", "cluster": {"server": url,
                                               "certificate-authority-data": ca_data}}
    token_dir = os.path.join(state_dir, "tokens")
    os.makedirs(token_dir, mode=0o700, exist_ok=True)
    token_files = {}
    admin = next(i for i in identities if i.admin)
    cert_file, key_file = pki.client[admin.name]
    with open(cert_file, "rb") as c, open(key_file, "rb") as k:
        cert_user = {"name": admin.name + "-cert", "user": {
            "client-certificate-data": auth.b64(c.read()),
            "client-key-data": auth.b64(k.read())}}
    cert_config = {"apiVersion": "v1", "kind": "Config", "preferences": {},
                   "clusters": [cluster], "users": [cert_user],
                   "contexts": [{"name": "sbx-fake", "context": {
                       "cluster": "sbx-fake", "user": cert_user["name"],
                       "namespace": "default"}}],
                   "current-context": "sbx-fake"}
    paths = {"kubeconfig": os.path.join(state_dir, "kubeconfig")}
    _write_private(paths["kubeconfig"], yaml.safe_dump(cert_config, sort_keys=False))
    users, contexts = [], []
    for identity in identities:
        token_file = os.path.join(token_dir, identity.name)
        _write_private(token_file, identity.token)
        token_files[identity.name] = token_file
        users.append({"name": identity.name, "user": {"token": identity.token}})
        contexts.append({"name": identity.name, "context": {
            "cluster": "sbx-fake", "user": identity.name, "namespace": "default"}})
        single = {"apiVersion": "v1", "kind": "Config", "preferences": {},
                  "clusters": [cluster], "users": [users[-1]], "contexts": [contexts[-1]],
                  "current-context": identity.name}
        path = os.path.join(state_dir, "kubeconfig-%s" % identity.name)
        _write_private(path, yaml.safe_dump(single, sort_keys=False))
        paths["kubeconfig-%s" % identity.name] = path
    token_config = {"apiVersion": "v1", "kind": "Config", "preferences": {},
                    "clusters": [cluster], "users": users, "contexts": contexts,
                    "current-context": admin.name}
    paths["kubeconfig-token"] = os.path.join(state_dir, "kubeconfig-token")
    _write_private(paths["kubeconfig-token"], yaml.safe_dump(token_config, sort_keys=False))
    # The same contexts with tokenFile, for clients that must re-read a rotated token.
    file_users = [{"name": u["name"], "user": {"tokenFile": token_files[u["name"]]}}
                  for u in users]
    file_config = dict(token_config, users=file_users)
    paths["kubeconfig-tokenfile"] = os.path.join(state_dir, "kubeconfig-tokenfile")
    _write_private(paths["kubeconfig-tokenfile"], yaml.safe_dump(file_config, sort_keys=False))
    return paths, token_files


def load_fault_file(path):
    with open(path) as stream:
        document = yaml.safe_load(stream) or []
    if isinstance(document, dict):
        document = document.get("faults", [])
    return document


class ClusterIPs:
    """Allocates Service cluster IPs from 10.96.0.0/16 (never routed anywhere)."""

    def __init__(self):
        self.network = ipaddress.ip_network("10.96.0.0/16")
        self.next = 10

    def __call__(self, obj):
        spec = obj.setdefault("spec", {})
        if spec.get("clusterIP") not in (None, ""):
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
        else:
            address = str(self.network[self.next])
            self.next += 1
            spec["clusterIP"] = address
            spec["clusterIPs"] = [address]
        obj["status"] = {"loadBalancer": {}}


def _pod_created(obj):
    obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}


async def serve(args):
    state_dir = os.path.abspath(args.state_dir)
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    identities = auth.load_identities(args.auth_config)
    authenticator = auth.Authenticator(identities)
    pki = auth.Pki(state_dir, identities, ca_bundle=args.ca_bundle)

    kinds = build_kinds()
    store = Store(kinds, rv_step=args.rv_step)
    store.create_hooks[("", "services")] = ClusterIPs()
    store.create_hooks[("", "pods")] = _pod_created
    for name in INITIAL_NAMESPACES:
        store.create(("", "namespaces"), "", {"metadata": {"name": name}}, internal=True)

    faults = faults_mod.Faults()
    enforcer = Enforcer(store, faults, enabled=args.enforce_network_policies == "true")
    kubelet = Kubelet(store, state_dir, faults, ready_delay=args.ready_delay,
                      pod_cidr=args.pod_cidr, netpolicy=enforcer)
    enforcer.kubelet = kubelet
    controllers = Controllers(store)
    server = ApiServer(store, authenticator, faults, args.kube_version, kubelet=kubelet,
                       controllers=controllers, bookmark_interval=args.bookmark_interval)
    if args.faults:
        server.apply_faults(load_fault_file(args.faults))

    loop = asyncio.get_event_loop()
    gc_state = {"scheduled": False}

    def run_gc():
        gc_state["scheduled"] = False
        store.gc_pass()

    def schedule_gc():
        if not gc_state["scheduled"]:
            gc_state["scheduled"] = True
            loop.call_soon(run_gc)
    store.gc_scheduler = schedule_gc

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    try:
        kubelet.setup()
    except Exception:
        kubelet.network.teardown()
        raise
    controllers.start()

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert_file, pki.server_key_file)
    context.load_verify_locations(pki.ca_only_file)
    context.verify_mode = ssl.CERT_OPTIONAL
    runner = web.AppRunner(server.app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, ssl_context=context,
                       shutdown_timeout=1.0)
    try:
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        url = "https://127.0.0.1:%d" % port
        paths, token_files = write_kubeconfigs(state_dir, url, pki, identities)
        server.token_files = token_files
        ready = {"url": url, "pid": os.getpid(), "stateDir": state_dir,
                 "kubeconfig": paths["kubeconfig"], "kubeconfigToken": paths["kubeconfig-token"],
                 "kubeconfigs": paths, "tokenFiles": token_files, "caFile": pki.ca_file,
                 "clientCertificates": {name: {"cert": c, "key": k}
                                        for name, (c, k) in pki.client.items()},
                 "network": kubelet.network_info(), "version": args.kube_version}
        _write_private(os.path.join(state_dir, "cluster.json"), json.dumps(ready, indent=2))
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        log.info("serving %s (pid %d)", url, os.getpid())
        await stop.wait()
        log.info("stopping")
    finally:
        await server.close_streams()
        controllers.stop()
        await kubelet.shutdown()
        await runner.cleanup()
        log.info("stopped; removed all pods and network namespaces")


def main(argv=None):
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.stderr.write("fake-apiserver: must run as root to create pod namespaces; run it "
                         "with sudo or as root\n")
        return 2
    os.makedirs(args.state_dir, mode=0o700, exist_ok=True)
    logging.basicConfig(
        filename=os.path.join(args.state_dir, "fake-apiserver.log"),
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.websocket").setLevel(logging.ERROR)
    try:
        asyncio.run(serve(args))
    except Exception as error:  # report startup failures on stderr for the caller
        log.exception("fake-apiserver failed")
        sys.stderr.write("fake-apiserver: %s\n" % error)
        return 1
    return 0
