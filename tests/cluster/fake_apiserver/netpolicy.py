"""NetworkPolicy enforcement with nftables inside each pod's network namespace.

Each pod selected by a policy gets the table "inet sbx_netpol" with an output chain (egress)
and an input chain (ingress). A direction is isolated (policy drop) once any policy that
selects the pod lists it in policyTypes; the allowed traffic is the union of the rules of all
those policies, and replies are allowed through conntrack. Loopback is never filtered.
With enforcement off the objects are stored and nothing is enforced, like a CNI that ignores
NetworkPolicy.
"""
import asyncio
import ipaddress
import logging

from .network import run
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


class Enforcer:
    """Computes and applies the nftables ruleset of every running pod."""

    def __init__(self, store, faults, enabled=True):
        self.store = store
        self.faults = faults
        self.enabled = enabled
        self.kubelet = None
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

    def forget_all(self):
        self.applied.clear()

    # --- selection ----------------------------------------------------------------------

    def _pods(self):
        items, _ = self.store.list(("", "pods"))
        return [p for p in items if (p.get("status") or {}).get("podIP")
                and not p["metadata"].get("deletionTimestamp")]

    def _namespace_labels(self):
        items, _ = self.store.list(("", "namespaces"))
        return {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in items}

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

    def _chain_rules(self, policies, direction, pod_ns, pods, ns_labels):
        rules = []
        field = "daddr" if direction == "Egress" else "saddr"
        rule_key = "egress" if direction == "Egress" else "ingress"
        peer_key = "to" if direction == "Egress" else "from"
        for policy in policies:
            for rule in policy["spec"].get(rule_key) or []:
                peers = rule.get(peer_key) or []
                if peers:
                    addresses = []
                    for peer in peers:
                        addresses += self._peer_matchers(peer, pod_ns, pods, ns_labels, field)
                    if not addresses:
                        continue
                else:
                    addresses = [""]
                for address in addresses:
                    for port in self._port_matchers(rule.get("ports")):
                        rules.append(" ".join(p for p in (address, port, "accept") if p))
        return rules

    def ruleset(self, pod, policies, pods, ns_labels):
        """Return the nft script for one pod, or None when no policy selects it."""
        labels = pod["metadata"].get("labels") or {}
        pod_ns = pod["metadata"]["namespace"]
        selecting = [p for p in policies if p["metadata"]["namespace"] == pod_ns and
                     match_label_selector_object(p["spec"].get("podSelector", {}), labels)]
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
                for rule in self._chain_rules(isolating, "Egress" if chain == "egress"
                                              else "Ingress", pod_ns, pods, ns_labels):
                    lines.append("    " + rule)
            lines.append("  }")
        lines.append("}")
        return "\n".join(lines) + "\n"

    async def apply_all(self):
        if not self.enabled or self.kubelet is None:
            return
        for runtime in self.kubelet.running_pods():
            await self.apply_pod(runtime)

    async def apply_pod(self, runtime):
        """Bring one pod's ruleset up to date. The kubelet calls this before it starts the
        containers, so a pod created after its policies never runs unprotected."""
        if not self.enabled or not runtime.netns:
            return
        pod = self.store.find(("", "pods"), runtime.namespace, runtime.name)
        if pod is None or pod["metadata"]["uid"] != runtime.uid:
            return
        policies, _ = self.store.list(("networking.k8s.io", "networkpolicies"))
        script = self.ruleset(pod, policies, self._pods(), self._namespace_labels())
        if runtime.netns in self.applied and self.applied[runtime.netns] == script:
            return
        text = "table inet %s {}\ndelete table inet %s\n" % (TABLE, TABLE)
        if script:
            text += script
        code, _, err = await run("ip", "netns", "exec", runtime.netns, "nft", "-f", "-",
                                 input_data=text.encode(), check=False)
        if code != 0:
            log.error("nft failed in %s for pod %s/%s: %s\n%s", runtime.netns,
                      runtime.namespace, runtime.name, err.strip(), text)
            return
        self.applied[runtime.netns] = script
        log.info("network policy for pod %s/%s %s", runtime.namespace, runtime.name,
                 "applied" if script else "cleared")
