"""NetworkPolicy enforcement with nftables inside each pod's network namespace.

Each pod selected by a policy gets the table "inet sbx_netpol" with an output chain (egress)
and an input chain (ingress). A direction is isolated (policy drop) once any policy that
selects the pod lists it in policyTypes; the allowed traffic is the union of the rules of all
those policies, and replies are allowed through conntrack. Loopback is never filtered.
With enforcement off the objects are stored and nothing is enforced, like a CNI that ignores
NetworkPolicy.

Every change to a policy, pod or namespace marks the rulesets stale. One pass then computes
the ruleset of every running pod from a snapshot of the store, compares it with the ruleset
last loaded into that pod, and loads only the changed ones, all in one batch. Changes that
arrive while a batch is loading are collected into the next pass.
"""
import asyncio
import concurrent.futures
import ctypes
import ipaddress
import logging
import os

from .network import NETNS_DIR, run
from .selectors import match_label_selector_object

log = logging.getLogger("fake-apiserver.netpolicy")

TABLE = "sbx_netpol"
WATCHED = {("networking.k8s.io", "networkpolicies"), ("", "pods"), ("", "namespaces")}


def _collapse(networks):
    by_version = {4: [], 6: []}
    for network in networks:
        by_version[network.version].append(network)
    return {version: list(ipaddress.collapse_addresses(items))
            for version, items in by_version.items() if items}


def _set(items):
    return "{ %s }" % ", ".join(str(item) for item in items)


class NftLoader:
    """Loads nft scripts into network namespaces through libnftables, from one thread.

    The thread enters a pod's network namespace with setns(), which changes the network
    namespace of the calling thread only, and opens a libnftables context there. A context's
    netlink socket stays in the namespace it was opened in, so the context is kept for the
    pod's later scripts. Freeing a context can take over 10 ms (measured with nftables 1.0.6
    on kernel 6.18), so a second thread frees them. This replaces two process starts per pod
    (`ip netns exec` and `nft`). Without libnftables.so.1 the loader runs
    `ip netns exec NETNS nft -f -` per pod.
    """

    CLONE_NEWNET = 0x40000000

    def __init__(self):
        self.executor = None
        self.releaser = None
        self.libc = None
        self.nft = None
        self.host_netns = None
        # libnftables contexts by network namespace name. Only the loading thread uses them.
        self.contexts = {}
        try:
            self.libc = ctypes.CDLL(None, use_errno=True)
            self.nft = ctypes.CDLL("libnftables.so.1", use_errno=True)
        except OSError as error:
            log.info("libnftables is not available (%s); running nft once per pod", error)
            self.nft = None
            return
        self.nft.nft_ctx_new.restype = ctypes.c_void_p
        self.nft.nft_ctx_new.argtypes = [ctypes.c_uint32]
        self.nft.nft_ctx_free.argtypes = [ctypes.c_void_p]
        self.nft.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        self.nft.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        self.nft.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        self.nft.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        self.nft.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.host_netns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="nft-load")
        self.releaser = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="nft-free")

    def close(self):
        if self.executor is not None:
            self.executor.submit(self._release_all)
            self.executor.shutdown(wait=True)
            self.executor = None
        if self.releaser is not None:
            self.releaser.shutdown(wait=True)
            self.releaser = None
        if self.host_netns is not None:
            os.close(self.host_netns)
            self.host_netns = None

    def forget(self, netns):
        """Free the context of a network namespace that is about to be deleted."""
        if self.executor is not None:
            self.executor.submit(self._release, netns)

    def _release(self, netns):
        ctx = self.contexts.pop(netns, None)
        if ctx:
            self.releaser.submit(self.nft.nft_ctx_free, ctx)

    def _release_all(self):
        for netns in list(self.contexts):
            self._release(netns)

    async def load(self, batch):
        """Load [(netns, script)]; returns {netns: error message} for the failed ones."""
        if not batch:
            return {}
        if self.executor is None:
            results = await asyncio.gather(*(self._load_with_nft(netns, script)
                                             for netns, script in batch))
            return {netns: error for (netns, _), error in zip(batch, results) if error}
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._load_batch, batch)

    @staticmethod
    async def _load_with_nft(netns, script):
        code, _, err = await run("ip", "netns", "exec", netns, "nft", "-f", "-",
                                 input_data=script.encode(), check=False)
        if code == 0:
            return None
        return err.strip() or "nft exited with %d" % code

    def _setns(self, fd):
        if self.libc.setns(fd, self.CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))

    def _context(self, netns):
        """Return the context of netns, opening it inside the namespace the first time."""
        ctx = self.contexts.get(netns)
        if ctx:
            return ctx
        fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._setns(fd)
        finally:
            os.close(fd)
        try:
            ctx = self.nft.nft_ctx_new(0)
        finally:
            self._setns(self.host_netns)
        if not ctx:
            raise OSError("nft_ctx_new failed")
        self.nft.nft_ctx_buffer_output(ctx)
        self.nft.nft_ctx_buffer_error(ctx)
        self.contexts[netns] = ctx
        return ctx

    def _load_batch(self, batch):
        failures = {}
        for netns, script in batch:
            try:
                ctx = self._context(netns)
            except OSError as error:
                failures[netns] = "cannot open an nftables context in the namespace: %s" % error
                continue
            if self.nft.nft_run_cmd_from_buffer(ctx, script.encode()) != 0:
                message = self.nft.nft_ctx_get_error_buffer(ctx) or b""
                failures[netns] = message.decode(errors="replace").strip() or \
                    "nft_run_cmd_from_buffer failed"
        return failures


class Enforcer:
    """Computes the nftables ruleset of every running pod and loads the changed ones."""

    def __init__(self, store, faults, enabled=True):
        self.store = store
        self.faults = faults
        self.enabled = enabled
        self.kubelet = None
        self.loader = NftLoader() if enabled else None
        # The script last loaded into each pod's network namespace, None for no table. A
        # namespace missing here is new and has no table yet.
        self.applied = {}
        self.task = None
        self.dirty = False
        store.subscribe(self._on_event)

    def _on_event(self, event):
        if event.kind_key in WATCHED:
            self.schedule()

    def schedule(self):
        if not self.enabled or self.kubelet is None:
            return
        self.dirty = True
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._apply_loop())

    async def _apply_loop(self):
        delay = self.faults.peek("netpol-delay")
        if delay:
            await asyncio.sleep(float(delay.get("seconds", 0)))
        while self.dirty:
            self.dirty = False
            try:
                await self.apply_all()
            except Exception:
                log.exception("applying network policies failed")

    def forget(self, netns):
        self.applied.pop(netns, None)
        if self.loader is not None:
            self.loader.forget(netns)

    def forget_all(self):
        self.applied.clear()

    def close(self):
        if self.task is not None:
            self.task.cancel()
        if self.loader is not None:
            self.loader.close()

    # --- selection ----------------------------------------------------------------------

    def _snapshot(self):
        """Return the store's pods with an IP, namespace labels and policies by namespace."""
        pods = [p for p in self.store.snapshot(("", "pods"))
                if (p.get("status") or {}).get("podIP")
                and not p["metadata"].get("deletionTimestamp")]
        ns_labels = {n["metadata"]["name"]: n["metadata"].get("labels") or {}
                     for n in self.store.snapshot(("", "namespaces"))}
        policies = {}
        for policy in self.store.snapshot(("networking.k8s.io", "networkpolicies")):
            policies.setdefault(policy["metadata"]["namespace"], []).append(policy)
        return Snapshot(pods, ns_labels, policies)

    def _peer_matchers(self, peer, policy_ns, pods, ns_labels, address_field):
        """Return nft address expressions for one peer, or [] when it matches nothing."""
        block = peer.get("ipBlock")
        if block is not None:
            network = ipaddress.ip_network(block["cidr"], strict=False)
            family = "ip" if network.version == 4 else "ip6"
            expression = "%s %s %s" % (family, address_field, network)
            excluded = [ipaddress.ip_network(e, strict=False) for e in block.get("except") or []]
            excluded = [e for e in excluded if e.version == network.version]
            if excluded:
                expression += " %s %s != %s" % (family, address_field,
                                                _set(_collapse(excluded)[network.version]))
            return [expression]
        pod_selector = peer.get("podSelector")
        ns_selector = peer.get("namespaceSelector")
        addresses = []
        for pod in pods:
            pod_ns = pod["metadata"]["namespace"]
            if ns_selector is not None:
                if not match_label_selector_object(ns_selector, ns_labels.get(pod_ns, {})):
                    continue
            elif pod_ns != policy_ns:
                continue
            if pod_selector is not None and \
                    not match_label_selector_object(pod_selector, pod["metadata"].get("labels")):
                continue
            addresses.append(ipaddress.ip_address(pod["status"]["podIP"]))
        if not addresses:
            return []
        v4 = sorted(a for a in addresses if a.version == 4)
        return ["ip %s %s" % (address_field, _set(v4))] if v4 else []

    @staticmethod
    def _port_matchers(ports):
        if not ports:
            return [""]
        result = []
        for port in ports:
            protocol = port.get("protocol", "TCP").lower()
            number = port.get("port")
            if number is None:
                result.append("meta l4proto %s" % protocol)
            elif isinstance(number, int):
                end = port.get("endPort")
                span = "%d-%d" % (number, end) if end else str(number)
                result.append("%s dport %s" % (protocol, span))
            else:
                # NOTE: named ports are not resolved against container ports; such a rule
                # allows nothing.
                log.info("named port %r in a NetworkPolicy is not supported", number)
        return result

    def _chain_rules(self, policies, direction, snapshot):
        rules = []
        for policy in policies:
            key = (policy["metadata"]["uid"], direction)
            if key not in snapshot.rules:
                snapshot.rules[key] = self._policy_rules(policy, direction, snapshot)
            rules += snapshot.rules[key]
        return rules

    def _policy_rules(self, policy, direction, snapshot):
        """Return the accept rules of one policy in one direction. A policy selects pods of
        its own namespace only, so they do not depend on the selected pod."""
        rules = []
        field = "daddr" if direction == "Egress" else "saddr"
        rule_key = "egress" if direction == "Egress" else "ingress"
        peer_key = "to" if direction == "Egress" else "from"
        policy_ns = policy["metadata"]["namespace"]
        for rule in policy["spec"].get(rule_key) or []:
            peers = rule.get(peer_key) or []
            if peers:
                addresses = []
                for peer in peers:
                    addresses += self._peer_matchers(peer, policy_ns, snapshot.pods,
                                                     snapshot.ns_labels, field)
                if not addresses:
                    continue
            else:
                addresses = [""]
            for address in addresses:
                for port in self._port_matchers(rule.get("ports")):
                    rules.append(" ".join(p for p in (address, port, "accept") if p))
        return rules

    def ruleset(self, pod, snapshot):
        """Return the nft script for one pod, or None when no policy selects it."""
        labels = pod["metadata"].get("labels") or {}
        pod_ns = pod["metadata"]["namespace"]
        selecting = [p for p in snapshot.policies.get(pod_ns, ())
                     if match_label_selector_object(p["spec"].get("podSelector", {}), labels)]
        egress = [p for p in selecting if "Egress" in (p["spec"].get("policyTypes") or [])]
        ingress = [p for p in selecting if "Ingress" in (p["spec"].get("policyTypes") or [])]
        if not egress and not ingress:
            return None
        lines = ["table inet %s {" % TABLE]
        for chain, hook, isolating, interface in (("egress", "output", egress, "oif"),
                                                  ("ingress", "input", ingress, "iif")):
            lines.append("  chain %s {" % chain)
            lines.append("    type filter hook %s priority 0; policy %s;"
                         % (hook, "drop" if isolating else "accept"))
            if isolating:
                lines.append('    %s "lo" accept' % interface)
                lines.append("    ct state established,related accept")
                direction = "Egress" if chain == "egress" else "Ingress"
                for rule in self._chain_rules(isolating, direction, snapshot):
                    lines.append("    " + rule)
            lines.append("  }")
        lines.append("}")
        return "\n".join(lines) + "\n"

    # --- loading ------------------------------------------------------------------------

    async def apply_all(self):
        """Load the changed rulesets of all running pods in one batch."""
        if not self.enabled or self.kubelet is None:
            return
        await self._apply(self.kubelet.running_pods())

    async def apply_pod(self, runtime):
        """Bring one pod's ruleset up to date. The kubelet calls this before it starts the
        containers, so a pod created after its policies never runs unprotected."""
        if not self.enabled or not runtime.netns:
            return
        await self._apply([runtime])

    async def _apply(self, runtimes):
        snapshot = self._snapshot()
        pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p
                for p in self.store.snapshot(("", "pods"))}
        changed = []
        for runtime in runtimes:
            if not runtime.netns:
                continue
            pod = pods.get((runtime.namespace, runtime.name))
            if pod is None or pod["metadata"]["uid"] != runtime.uid:
                continue
            script = self.ruleset(pod, snapshot)
            if self.applied.get(runtime.netns) == script:
                continue
            changed.append((runtime, script))
        if not changed:
            return
        # Creating and deleting the table first makes the script valid whether or not the
        # table exists, and nft loads the whole script as one transaction.
        reset = "table inet %s {}\ndelete table inet %s\n" % (TABLE, TABLE)
        batch = [(runtime.netns, reset + (script or "")) for runtime, script in changed]
        failures = await self.loader.load(batch)
        for (runtime, script), (netns, text) in zip(changed, batch):
            if netns in failures and not runtime.stopping:
                log.error("nft failed in %s for pod %s/%s: %s\n%s", netns, runtime.namespace,
                          runtime.name, failures[netns], text)
                continue
            if netns in failures or runtime.stopping:
                continue
            self.applied[netns] = script
            log.info("network policy for pod %s/%s %s", runtime.namespace, runtime.name,
                     "applied" if script else "cleared")


class Snapshot:
    """The store's state one pass of the enforcer works from, with the rules computed so far
    for each (policy uid, direction)."""

    def __init__(self, pods, ns_labels, policies):
        self.pods = pods
        self.ns_labels = ns_labels
        self.policies = policies
        self.rules = {}
