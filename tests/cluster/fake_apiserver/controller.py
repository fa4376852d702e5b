"""Controllers: Agent Sandbox (Sandbox, SandboxTemplate, SandboxWarmPool, SandboxClaim), the
namespace lifecycle, PodDisruptionBudget status and the pods/eviction subresource.

The Agent Sandbox behaviour follows kubernetes-sigs/agent-sandbox v0.5 (v1beta1). A Sandbox owns
a Pod named like it and labelled agents.x-k8s.io/sandbox-name-hash. A warm pool keeps
spec.replicas pool-owned Sandboxes. A claim adopts a ready pool Sandbox, so its
status.sandbox.name differs from the claim name, or creates a Sandbox named like the claim.
No finalizers are used, because children go through ownerReference garbage collection.
"""
import asyncio
import copy
import datetime
import hashlib
import json
import logging

from . import errors
from .kinds import EXTENSIONS_GROUP, SANDBOX_GROUP, parse_time
from .selectors import match_label_selector_object
from .store import now_rfc3339

log = logging.getLogger("fake-apiserver.controller")

PODS = ("", "pods")
SERVICES = ("", "services")
NAMESPACES = ("", "namespaces")
EVENTS = ("", "events")
NETPOLS = ("networking.k8s.io", "networkpolicies")
PDBS = ("policy", "poddisruptionbudgets")
SANDBOXES = (SANDBOX_GROUP, "sandboxes")
TEMPLATES = (EXTENSIONS_GROUP, "sandboxtemplates")
CLAIMS = (EXTENSIONS_GROUP, "sandboxclaims")
POOLS = (EXTENSIONS_GROUP, "sandboxwarmpools")

LABEL_NAME_HASH = "agents.x-k8s.io/sandbox-name-hash"
LABEL_TEMPLATE_REF_HASH = "agents.x-k8s.io/sandbox-template-ref-hash"
LABEL_WARM_POOL = "agents.x-k8s.io/warm-pool-sandbox"
LABEL_LAUNCH_TYPE = "agents.x-k8s.io/launch-type"
LABEL_TEMPLATE_HASH = "agents.x-k8s.io/sandbox-template-hash"
LABEL_POD_TEMPLATE_HASH = "agents.x-k8s.io/sandbox-pod-template-hash"
LABEL_CREATED_BY = "agents.x-k8s.io/created-by"
LABEL_CLAIM_UID = "agents.x-k8s.io/claim-uid"
ANNOTATION_POD_NAME = "agents.x-k8s.io/pod-name"
ANNOTATION_TEMPLATE_REF = "agents.x-k8s.io/sandbox-template-ref"
ANNOTATION_SANDBOX_NAME = "agents.x-k8s.io/sandbox-name"
ANNOTATION_FIRST_OBSERVED = "agents.x-k8s.io/controller-first-observed-at"
ANNOTATION_FIRST_READY = "agents.x-k8s.io/claim-first-ready-at"
ANNOTATION_PROPAGATED_LABELS = "agents.x-k8s.io/propagated-labels"
ANNOTATION_PROPAGATED_ANNOTATIONS = "agents.x-k8s.io/propagated-annotations"
SYSTEM_PREFIXES = ("agents.x-k8s.io/", "extensions.agents.x-k8s.io/")
ALLOWED_LABEL_DOMAINS = ("sandbox.users.io",)
CLUSTER_DOMAIN = "cluster.local"
# A claim waits this long for a pool member to get a pod IP before it cold-starts.
WARM_IP_WAIT = 2.0
TERMINAL_CLAIM_REASONS = {"InvalidMetadata", "EnvVarsInjectionRejected",
                          "VolumeClaimTemplatesError", "ClaimExpired"}


def name_hash(name):
    """FNV-1a 32-bit of the name as 8 lowercase hex digits (the controller's NameHash)."""
    value = 0x811C9DC5
    for byte in name.encode():
        value ^= byte
        value = (value * 0x01000193) & 0xFFFFFFFF
    return "%08x" % value


def blueprint_hash(blueprint):
    return hashlib.sha256(json.dumps(blueprint, sort_keys=True).encode()).hexdigest()[:10]


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _controller_ref(obj):
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def _owned_by(obj, owner):
    ref = _controller_ref(obj)
    return ref is not None and ref.get("uid") == owner["metadata"]["uid"]


def owner_reference(owner, block=True):
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": block}


def get_condition(obj, kind):
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition
    return None


def set_condition(conditions, kind, status, reason, message, generation=None):
    """Set a metav1.Condition, keeping lastTransitionTime while the status is unchanged."""
    for condition in conditions:
        if condition["type"] == kind:
            if condition["status"] != status:
                condition["lastTransitionTime"] = now_rfc3339()
            condition.update({"status": status, "reason": reason, "message": message})
            if generation is not None:
                condition["observedGeneration"] = generation
            return
    entry = {"type": kind, "status": status, "reason": reason, "message": message,
             "lastTransitionTime": now_rfc3339()}
    if generation is not None:
        entry["observedGeneration"] = generation
    conditions.append(entry)


def remove_condition(conditions, kind):
    conditions[:] = [c for c in conditions if c["type"] != kind]


def _strip_system(mapping):
    return {k: v for k, v in (mapping or {}).items() if not k.startswith(SYSTEM_PREFIXES)
            and k != "opentelemetry.io/trace-context"}


def _pod_ready(pod):
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


class Controllers:
    """All reconcilers, driven by store events through one work queue."""

    def __init__(self, store):
        self.store = store
        self.pending = []
        self.pending_set = set()
        self.wakeup = asyncio.Event()
        self.timers = {}
        self.worker = None
        store.subscribe(self._on_event)

    def start(self):
        self.worker = asyncio.ensure_future(self._work())

    def stop(self):
        if self.worker:
            self.worker.cancel()
        for handle in self.timers.values():
            handle.cancel()

    # --- queue --------------------------------------------------------------------------

    def enqueue(self, key, namespace, name):
        item = (key, namespace, name)
        if item not in self.pending_set:
            self.pending_set.add(item)
            self.pending.append(item)
            self.wakeup.set()

    def enqueue_later(self, delay, key, namespace, name):
        item = (key, namespace, name)
        previous = self.timers.pop(item, None)
        if previous:
            previous.cancel()
        loop = asyncio.get_event_loop()
        self.timers[item] = loop.call_later(max(0.0, delay), self._fire, item)

    def _fire(self, item):
        self.timers.pop(item, None)
        self.enqueue(*item)

    def _on_event(self, event):
        key, ns, obj = event.kind_key, event.namespace, event.obj
        ref = _controller_ref(obj)
        if key == SANDBOXES:
            self.enqueue(SANDBOXES, ns, event.name)
            if ref and ref.get("kind") == "SandboxClaim":
                self.enqueue(CLAIMS, ns, ref["name"])
            if ref and ref.get("kind") == "SandboxWarmPool":
                self.enqueue(POOLS, ns, ref["name"])
            old_ref = _controller_ref(event.old) if event.old else None
            if old_ref and old_ref.get("kind") == "SandboxWarmPool":
                self.enqueue(POOLS, ns, old_ref["name"])
            for claim in self._claims_for_sandbox(ns, event.name):
                self.enqueue(CLAIMS, ns, claim)
        elif key in (PODS, SERVICES):
            if ref and ref.get("kind") == "Sandbox":
                self.enqueue(SANDBOXES, ns, ref["name"])
            elif self.store.find(SANDBOXES, ns, event.name):
                self.enqueue(SANDBOXES, ns, event.name)
            if key == PODS:
                for pdb in self.store.list(PDBS, ns)[0]:
                    self.enqueue(PDBS, ns, pdb["metadata"]["name"])
        elif key == CLAIMS:
            self.enqueue(CLAIMS, ns, event.name)
        elif key == POOLS:
            self.enqueue(POOLS, ns, event.name)
            for claim in self.store.list(CLAIMS, ns)[0]:
                self.enqueue(CLAIMS, ns, claim["metadata"]["name"])
        elif key == TEMPLATES:
            self.enqueue(TEMPLATES, ns, event.name)
            for pool in self.store.list(POOLS, ns)[0]:
                self.enqueue(POOLS, ns, pool["metadata"]["name"])
            for claim in self.store.list(CLAIMS, ns)[0]:
                self.enqueue(CLAIMS, ns, claim["metadata"]["name"])
        elif key == NETPOLS:
            if ref and ref.get("kind") == "SandboxTemplate":
                self.enqueue(TEMPLATES, ns, ref["name"])
        elif key == PDBS:
            self.enqueue(PDBS, ns, event.name)
        elif key == NAMESPACES:
            self.enqueue(NAMESPACES, "", event.name)
        if ns and key != NAMESPACES:
            namespace = self.store.find(NAMESPACES, "", ns)
            if namespace and namespace["metadata"].get("deletionTimestamp"):
                self.enqueue(NAMESPACES, "", ns)

    def _claims_for_sandbox(self, ns, sandbox_name):
        result = []
        for claim in self.store.list(CLAIMS, ns)[0]:
            bound = ((claim.get("status") or {}).get("sandbox") or {}).get("name")
            if bound == sandbox_name or claim["metadata"]["name"] == sandbox_name:
                result.append(claim["metadata"]["name"])
        return result

    async def _work(self):
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.pending:
                item = self.pending.pop(0)
                self.pending_set.discard(item)
                key, ns, name = item
                try:
                    self.reconcile(key, ns, name)
                except errors.ApiError as error:
                    log.info("reconcile %s %s/%s: %s (retrying)", key[1], ns, name,
                             error.message)
                    self.enqueue_later(0.2, key, ns, name)
                except Exception:
                    log.exception("reconcile %s %s/%s failed", key[1], ns, name)
                    self.enqueue_later(1.0, key, ns, name)
                # Let HTTP handlers run between reconciles.
                await asyncio.sleep(0)

    def reconcile(self, key, ns, name):
        handler = {SANDBOXES: self.reconcile_sandbox, POOLS: self.reconcile_pool,
                   CLAIMS: self.reconcile_claim, TEMPLATES: self.reconcile_template,
                   NAMESPACES: self.reconcile_namespace, PDBS: self.reconcile_pdb}.get(key)
        if handler:
            handler(ns, name)

    def record_event(self, obj, reason, message, type_="Normal"):
        meta = obj["metadata"]
        event = {"apiVersion": "v1", "kind": "Event",
                 "metadata": {"generateName": meta["name"] + ".",
                              "namespace": meta.get("namespace", "default")},
                 "involvedObject": {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                                    "name": meta["name"], "namespace": meta.get("namespace"),
                                    "uid": meta["uid"],
                                    "resourceVersion": meta.get("resourceVersion")},
                 "reason": reason, "message": message, "type": type_, "count": 1,
                 "firstTimestamp": now_rfc3339(), "lastTimestamp": now_rfc3339(),
                 "source": {"component": "agent-sandbox-controller"}}
        try:
            self.store.create(EVENTS, meta.get("namespace", "default"), event, internal=True)
        except errors.ApiError:
            pass

    # --- Sandbox ------------------------------------------------------------------------

    def reconcile_sandbox(self, ns, name):
        sandbox = self.store.find(SANDBOXES, ns, name)
        if sandbox is None or sandbox["metadata"].get("deletionTimestamp"):
            return
        spec = sandbox["spec"]
        generation = sandbox["metadata"].get("generation")
        annotations = sandbox["metadata"].get("annotations") or {}
        pod_name = annotations.get(ANNOTATION_POD_NAME) or name
        pod = self.store.find(PODS, ns, pod_name)
        status = copy.deepcopy(sandbox.get("status") or {})
        conditions = status.setdefault("conditions", [])
        hash_value = name_hash(name)

        shutdown = parse_time(spec["shutdownTime"]) if spec.get("shutdownTime") else None
        if shutdown is not None:
            remaining = (shutdown - _now()).total_seconds()
            if remaining <= 0:
                self._expire_sandbox(sandbox, pod, status, generation)
                return
            self.enqueue_later(remaining, SANDBOXES, ns, name)

        if spec.get("operatingMode") == "Suspended":
            if pod is not None and _owned_by(pod, sandbox) and \
                    not pod["metadata"].get("deletionTimestamp"):
                self.store.delete(PODS, ns, pod_name)
                pod = self.store.find(PODS, ns, pod_name)
            if ANNOTATION_POD_NAME in annotations:
                self.store.mutate(SANDBOXES, ns, name, lambda o: o["metadata"]["annotations"]
                                  .pop(ANNOTATION_POD_NAME, None))
            set_condition(conditions, "Ready", "False", "SandboxSuspended",
                          "Sandbox is suspended", generation)
            if pod is None:
                set_condition(conditions, "Suspended", "True", "PodTerminated",
                              "Pod is terminated", generation)
            elif _owned_by(pod, sandbox):
                set_condition(conditions, "Suspended", "False", "PodTerminating",
                              "Pod is terminating", generation)
            else:
                set_condition(conditions, "Suspended", "False", "PodNotOwned",
                              "Pod is not owned by the Sandbox", generation)
            remove_condition(conditions, "PodScheduled")
            for field in ("podIPs", "nodeName"):
                status.pop(field, None)
            self._write_status(SANDBOXES, ns, name, status)
            return

        if pod is None:
            pod = self._create_sandbox_pod(sandbox, pod_name, hash_value)
        elif not _owned_by(pod, sandbox):
            set_condition(conditions, "Ready", "False", "ReconcilerError",
                          'Error seen: pod "%s" exists and is not owned by the Sandbox'
                          % pod_name, generation)
            self._write_status(SANDBOXES, ns, name, status)
            return
        else:
            self._sync_pod_labels(sandbox, pod, hash_value)
        if annotations.get(ANNOTATION_POD_NAME) != pod_name:
            self.store.mutate(SANDBOXES, ns, name, lambda o: o["metadata"].setdefault(
                "annotations", {}).__setitem__(ANNOTATION_POD_NAME, pod_name))

        service_required, service = self._reconcile_service(sandbox, hash_value)
        pod_status = pod.get("status") or {}
        phase = pod_status.get("phase", "Pending")
        pod_ips = [entry["ip"] for entry in pod_status.get("podIPs") or []]
        scheduled = next((c for c in pod_status.get("conditions") or []
                          if c["type"] == "PodScheduled"), None)
        if scheduled:
            set_condition(conditions, "PodScheduled", scheduled["status"],
                          scheduled.get("reason") or "PodScheduled",
                          scheduled.get("message", ""), generation)
        else:
            set_condition(conditions, "PodScheduled", "Unknown", "PodSchedulingUnknown",
                          "Pod scheduling state is unknown", generation)
        set_condition(conditions, "Suspended", "False", "NotSuspended",
                      "Sandbox is running", generation)
        if phase in ("Succeeded", "Failed"):
            reason = "Pod" + phase
            set_condition(conditions, "Ready", "False", reason, "Pod is %s" % phase.lower(),
                          generation)
            set_condition(conditions, "Finished", "True", reason, "Pod is %s" % phase.lower(),
                          generation)
        else:
            remove_condition(conditions, "Finished")
            messages = []
            if pod["metadata"].get("deletionTimestamp"):
                messages.append("Pod is being deleted")
            elif phase != "Running":
                messages.append("Pod exists with phase: %s" % phase)
            elif not _pod_ready(pod):
                messages.append("Pod is Running but not Ready")
            elif not pod_ips:
                messages.append("Pod is Ready but has no podIPs yet")
            if service_required and service is None:
                messages.append("Service does not exist")
            if messages:
                set_condition(conditions, "Ready", "False", "DependenciesNotReady",
                              "; ".join(messages), generation)
            else:
                set_condition(conditions, "Ready", "True", "DependenciesReady",
                              "Pod is Ready" + ("; Service Exists" if service_required
                                                else ""), generation)
                status["nodeName"] = pod["spec"].get("nodeName", "")
        status["podIPs"] = pod_ips
        if not pod_ips:
            status.pop("podIPs")
        status["selector"] = "%s=%s" % (LABEL_NAME_HASH, hash_value)
        if service is not None:
            status["service"] = service["metadata"]["name"]
            status["serviceFQDN"] = "%s.%s.svc.%s" % (service["metadata"]["name"], ns,
                                                      CLUSTER_DOMAIN)
        else:
            status.pop("service", None)
            status.pop("serviceFQDN", None)
        self._write_status(SANDBOXES, ns, name, status)

    def _write_status(self, key, ns, name, status):
        def change(obj):
            obj["status"] = status
        self.store.mutate(key, ns, name, change, subresource="status")

    def _create_sandbox_pod(self, sandbox, pod_name, hash_value):
        meta = sandbox["metadata"]
        template = sandbox["spec"]["podTemplate"]
        labels = _strip_system((template.get("metadata") or {}).get("labels"))
        annotations = _strip_system((template.get("metadata") or {}).get("annotations"))
        labels[LABEL_NAME_HASH] = hash_value
        labels.update(self._propagated_sandbox_labels(sandbox))
        if ANNOTATION_PROPAGATED_LABELS not in annotations and labels:
            annotations[ANNOTATION_PROPAGATED_LABELS] = ",".join(sorted(
                k for k in labels if k != LABEL_NAME_HASH))
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": pod_name, "namespace": meta["namespace"],
                            "labels": labels, "annotations": annotations,
                            "ownerReferences": [owner_reference(sandbox)]},
               "spec": copy.deepcopy(template["spec"])}
        log.info("sandbox %s/%s: creating pod %s", meta["namespace"], meta["name"], pod_name)
        return self.store.create(PODS, meta["namespace"], pod, internal=True)

    @staticmethod
    def _propagated_sandbox_labels(sandbox):
        labels = sandbox["metadata"].get("labels") or {}
        ref = _controller_ref(sandbox)
        result = {}
        if ref and ref.get("kind") in ("SandboxClaim", "SandboxWarmPool"):
            for key in (LABEL_TEMPLATE_REF_HASH, LABEL_WARM_POOL):
                if key in labels:
                    result[key] = labels[key]
        if LABEL_CREATED_BY in labels:
            result[LABEL_CREATED_BY] = labels[LABEL_CREATED_BY]
        return result

    def _sync_pod_labels(self, sandbox, pod, hash_value):
        template = sandbox["spec"]["podTemplate"]
        wanted = _strip_system((template.get("metadata") or {}).get("labels"))
        wanted[LABEL_NAME_HASH] = hash_value
        wanted.update(self._propagated_sandbox_labels(sandbox))
        current = pod["metadata"].get("labels") or {}
        managed = set((pod["metadata"].get("annotations") or {})
                      .get(ANNOTATION_PROPAGATED_LABELS, "").split(",")) - {""}
        managed |= {LABEL_WARM_POOL, LABEL_TEMPLATE_REF_HASH}
        desired = {k: v for k, v in current.items() if k not in managed or k in wanted}
        desired.update(wanted)
        if desired != current:
            def change(obj):
                obj["metadata"]["labels"] = desired
                obj["metadata"].setdefault("annotations", {})[ANNOTATION_PROPAGATED_LABELS] = \
                    ",".join(sorted(k for k in wanted if k != LABEL_NAME_HASH))
            self.store.mutate(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"],
                              change)

    def _reconcile_service(self, sandbox, hash_value):
        meta = sandbox["metadata"]
        ns, name = meta["namespace"], meta["name"]
        wanted = sandbox["spec"].get("service")
        service = self.store.find(SERVICES, ns, name)
        if wanted is False:
            if service is not None and _owned_by(service, sandbox):
                self.store.delete(SERVICES, ns, name)
            return False, None
        if wanted is None:
            return service is not None, service
        if service is None:
            ports = []
            spec = sandbox["spec"]["podTemplate"]["spec"]
            for container in (spec.get("containers") or []) + \
                    [c for c in spec.get("initContainers") or []
                     if c.get("restartPolicy") == "Always"]:
                for port in container.get("ports") or []:
                    protocol = port.get("protocol", "TCP")
                    ports.append({"name": port.get("name") or "p-%d-%s"
                                  % (port["containerPort"], protocol.lower()),
                                  "port": port["containerPort"], "protocol": protocol,
                                  "targetPort": port["containerPort"]})
            body = {"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name, "namespace": ns,
                                 "ownerReferences": [owner_reference(sandbox)]},
                    "spec": {"clusterIP": "None", "selector": {LABEL_NAME_HASH: hash_value},
                             "ports": ports}}
            service = self.store.create(SERVICES, ns, body, internal=True)
        return True, service

    def _expire_sandbox(self, sandbox, pod, status, generation):
        meta = sandbox["metadata"]
        ns, name = meta["namespace"], meta["name"]
        if pod is not None and _owned_by(pod, sandbox) and \
                not pod["metadata"].get("deletionTimestamp"):
            self.store.delete(PODS, ns, pod["metadata"]["name"])
        service = self.store.find(SERVICES, ns, name)
        if service is not None and _owned_by(service, sandbox):
            self.store.delete(SERVICES, ns, name)
        if sandbox["spec"].get("shutdownPolicy") == "Delete":
            log.info("sandbox %s/%s expired, deleting it", ns, name)
            self.store.delete(SANDBOXES, ns, name, {"propagationPolicy": "Background"})
            return
        conditions = status.setdefault("conditions", [])
        set_condition(conditions, "Ready", "False", "SandboxExpired", "Sandbox has expired",
                      generation)
        remove_condition(conditions, "PodScheduled")
        for field in ("podIPs", "nodeName", "service", "serviceFQDN"):
            status.pop(field, None)
        self._write_status(SANDBOXES, ns, name, status)

    # --- SandboxTemplate ----------------------------------------------------------------

    def reconcile_template(self, ns, name):
        template = self.store.find(TEMPLATES, ns, name)
        if template is None or template["metadata"].get("deletionTimestamp"):
            return
        hash_value = name_hash(name)
        if (template["metadata"].get("labels") or {}).get(LABEL_TEMPLATE_REF_HASH) != hash_value:
            self.store.mutate(TEMPLATES, ns, name, lambda o: o["metadata"].setdefault(
                "labels", {}).__setitem__(LABEL_TEMPLATE_REF_HASH, hash_value))
            template = self.store.find(TEMPLATES, ns, name)

        policy_name = "%s-network-policy" % name
        existing = self.store.find(NETPOLS, ns, policy_name)
        spec = template["spec"]
        if spec.get("networkPolicyManagement", "Managed") == "Unmanaged":
            if existing is not None and _owned_by(existing, template):
                self.store.delete(NETPOLS, ns, policy_name)
            return

        custom = spec.get("networkPolicy")
        if custom is not None:
            ingress = copy.deepcopy(custom.get("ingress") or [])
            egress = copy.deepcopy(custom.get("egress") or [])
        else:
            ingress = [{"from": [{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": "agent-sandbox-system"}},
                "podSelector": {"matchLabels": {"app": "sandbox-router"}}}]}]
            egress = [{"to": [
                {"ipBlock": {"cidr": "0.0.0.0/0", "except": [
                    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"]}},
                {"ipBlock": {"cidr": "::/0", "except": ["fc00::/7", "fe80::/10"]}}]}]

        wanted = {"podSelector": {"matchLabels": {LABEL_TEMPLATE_REF_HASH: hash_value}},
                  "policyTypes": ["Ingress", "Egress"], "ingress": ingress, "egress": egress}
        for rule in ingress + egress:
            for port in rule.get("ports") or []:
                port.setdefault("protocol", "TCP")
        if existing is None:
            body = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": policy_name, "namespace": ns,
                                 "ownerReferences": [owner_reference(template)]},
                    "spec": wanted}
            self.store.create(NETPOLS, ns, body, internal=True)
        elif _owned_by(existing, template) and existing["spec"] != wanted:
            self.store.mutate(NETPOLS, ns, policy_name, lambda o: o.__setitem__("spec", wanted))

    def _blueprint(self, template):
        spec = template["spec"]
        blueprint = {"podTemplate": copy.deepcopy(spec["podTemplate"])}
        for field in ("volumeClaimTemplates", "service"):
            if field in spec:
                blueprint[field] = copy.deepcopy(spec[field])
        pod_spec = blueprint["podTemplate"].setdefault("spec", {})
        # Secure defaults the controller applies on the template paths (claim and pool).
        pod_spec.setdefault("automountServiceAccountToken", False)
        if spec.get("networkPolicy") is None and \
                spec.get("networkPolicyManagement", "Managed") == "Managed" and \
                not pod_spec.get("dnsPolicy"):
            pod_spec["dnsPolicy"] = "None"
            pod_spec["dnsConfig"] = {"nameservers": ["8.8.8.8", "1.1.1.1"]}
        return blueprint

    # --- SandboxWarmPool ----------------------------------------------------------------

    def _pool_members(self, pool):
        items, _ = self.store.list(SANDBOXES, pool["metadata"]["namespace"])
        return [s for s in items if _owned_by(s, pool)
                and not s["metadata"].get("deletionTimestamp")]

    def reconcile_pool(self, ns, name):
        pool = self.store.find(POOLS, ns, name)
        if pool is None or pool["metadata"].get("deletionTimestamp"):
            return
        template_name = pool["spec"]["sandboxTemplateRef"]["name"]
        template = self.store.find(TEMPLATES, ns, template_name)
        members = self._pool_members(pool)
        desired = pool["spec"].get("replicas", 1)
        pool_hash = name_hash(name)
        if template is not None:
            blueprint = self._blueprint(template)
            current_hash = blueprint_hash(blueprint)
            if (pool["spec"].get("updateStrategy") or {}).get("type") == "Recreate":
                for stale in [m for m in members if (m["metadata"].get("labels") or {})
                              .get(LABEL_TEMPLATE_HASH) != current_hash]:
                    self.store.delete(SANDBOXES, ns, stale["metadata"]["name"])
                    members.remove(stale)
            for _ in range(max(0, desired - len(members))):
                members.append(self._create_pool_sandbox(pool, template, blueprint,
                                                         current_hash, pool_hash))
        elif len(members) < desired:
            log.info("warm pool %s/%s: template %s not found", ns, name, template_name)
        if len(members) > desired:
            ready = [m for m in members if (get_condition(m, "Ready") or {})
                     .get("status") == "True"]
            unready = [m for m in members if m not in ready]
            ordered = unready + sorted(ready, key=lambda m: m["metadata"]["creationTimestamp"],
                                       reverse=True)
            for extra in ordered[:len(members) - desired]:
                self.store.delete(SANDBOXES, ns, extra["metadata"]["name"])
                members.remove(extra)
        ready_count = sum(1 for m in members
                          if (get_condition(m, "Ready") or {}).get("status") == "True")
        status = {"replicas": len(members), "readyReplicas": ready_count,
                  "selector": "%s=%s" % (LABEL_WARM_POOL, pool_hash),
                  "observedGeneration": pool["metadata"].get("generation", 1)}
        self._write_status(POOLS, ns, name, status)

    def _create_pool_sandbox(self, pool, template, blueprint, current_hash, pool_hash):
        ns = pool["metadata"]["namespace"]
        template_name = template["metadata"]["name"]
        labels = {LABEL_WARM_POOL: pool_hash,
                  LABEL_TEMPLATE_REF_HASH: name_hash(template_name),
                  LABEL_LAUNCH_TYPE: "warm", LABEL_TEMPLATE_HASH: current_hash,
                  LABEL_POD_TEMPLATE_HASH: current_hash, LABEL_CREATED_BY: "controller"}
        spec = copy.deepcopy(blueprint)
        pod_meta = spec["podTemplate"].setdefault("metadata", {})
        pod_meta.setdefault("labels", {}).update(_strip_system(pool["metadata"].get("labels")))
        annotations = pod_meta.setdefault("annotations", {})
        annotations.setdefault("cluster-autoscaler.kubernetes.io/safe-to-evict", "true")
        body = {"apiVersion": "%s/v1beta1" % SANDBOX_GROUP, "kind": "Sandbox",
                "metadata": {"generateName": pool["metadata"]["name"] + "-", "namespace": ns,
                             "labels": labels,
                             "annotations": {ANNOTATION_TEMPLATE_REF: template_name},
                             "ownerReferences": [owner_reference(pool)]},
                "spec": spec}
        created = self.store.create(SANDBOXES, ns, body, internal=True)
        log.info("warm pool %s/%s: created sandbox %s", ns, pool["metadata"]["name"],
                 created["metadata"]["name"])
        return created

    # --- SandboxClaim -------------------------------------------------------------------

    def reconcile_claim(self, ns, name):
        claim = self.store.find(CLAIMS, ns, name)
        if claim is None or claim["metadata"].get("deletionTimestamp"):
            return
        meta = claim["metadata"]
        generation = meta.get("generation")
        annotations = meta.get("annotations") or {}
        if ANNOTATION_FIRST_OBSERVED not in annotations:
            self.store.mutate(CLAIMS, ns, name, lambda o: o["metadata"].setdefault(
                "annotations", {}).__setitem__(ANNOTATION_FIRST_OBSERVED, now_rfc3339()))
            claim = self.store.find(CLAIMS, ns, name)
            meta = claim["metadata"]
        status = copy.deepcopy(claim.get("status") or {})
        conditions = status.setdefault("conditions", [])
        ready = get_condition(claim, "Ready") or {}
        if ready.get("reason") in TERMINAL_CLAIM_REASONS:
            return

        if self._claim_expired(claim, status, conditions, generation):
            return

        pool_name = claim["spec"]["warmPoolRef"]["name"]
        pool = self.store.find(POOLS, ns, pool_name)
        bound = self._bound_sandbox(claim)
        if bound is None:
            if pool is None:
                self._claim_failed(claim, status, "WarmPoolNotFound",
                                   'SandboxWarmPool "%s" not found' % pool_name, generation)
                self.enqueue_later(60, CLAIMS, ns, name)
                return
            template_name = pool["spec"]["sandboxTemplateRef"]["name"]
            template = self.store.find(TEMPLATES, ns, template_name)
            if template is None:
                self._claim_failed(claim, status, "TemplateNotFound",
                                   'SandboxTemplate "%s" not found' % template_name, generation)
                self.enqueue_later(60, CLAIMS, ns, name)
                return
            problem = self._claim_input_problem(claim, template)
            if problem:
                self._claim_failed(claim, status, problem[0], problem[1], generation)
                return
            conflict = self.store.find(SANDBOXES, ns, name)
            if conflict is not None and not _owned_by(conflict, claim):
                self._claim_failed(claim, status, "ReconcilerError",
                                   'Error seen: sandbox "%s" already exists and is not '
                                   "controlled by this claim. Please use a different claim "
                                   "name" % name, generation)
                return
            forced_cold = bool(claim["spec"].get("env") or
                               claim["spec"].get("volumeClaimTemplates"))
            if not forced_cold:
                outcome = self._adopt(claim, pool, template)
                if outcome == "wait":
                    return
                bound = outcome
            if bound is None:
                bound = self._cold_start(claim, template)
            claim = self.store.find(CLAIMS, ns, name)
            status = copy.deepcopy(claim.get("status") or {})
            conditions = status.setdefault("conditions", [])
        self._claim_status(claim, bound, status, conditions, generation)

    def _claim_failed(self, claim, status, reason, message, generation):
        set_condition(status["conditions"], "Ready", "False", reason, message, generation)
        meta = claim["metadata"]
        self._write_status(CLAIMS, meta["namespace"], meta["name"], status)

    def _claim_input_problem(self, claim, template):
        spec = claim["spec"]
        extra = spec.get("additionalPodMetadata") or {}
        template_labels = ((template["spec"]["podTemplate"].get("metadata") or {})
                           .get("labels") or {})
        for key, value in (extra.get("labels") or {}).items():
            domain = key.split("/")[0] if "/" in key else ""
            if domain not in ALLOWED_LABEL_DOMAINS:
                return ("InvalidMetadata", 'label "%s" is not allowed: label keys need a '
                        "domain prefix from [%s]" % (key, ", ".join(ALLOWED_LABEL_DOMAINS)))
            if key in template_labels and template_labels[key] != value:
                return ("InvalidMetadata", 'label "%s" conflicts with the template' % key)
        if (extra.get("labels") or {}).get("app") == "sandbox-router":
            return ("InvalidMetadata", 'label "app=sandbox-router" is not allowed')
        for key in extra.get("annotations") or {}:
            domain = key.split("/")[0] if "/" in key else ""
            if key == "cluster-autoscaler.kubernetes.io/safe-to-evict":
                continue
            if any(domain == d or domain.endswith("." + d)
                   for d in ("kubernetes.io", "k8s.io", "agents.x-k8s.io")):
                return ("InvalidMetadata", 'annotation "%s" is in a reserved domain' % key)
        if spec.get("env"):
            policy = template["spec"].get("envVarsInjectionPolicy", "Disallowed")
            if policy == "Disallowed":
                return ("EnvVarsInjectionRejected", "the template %s does not allow "
                        "environment variable injection (envVarsInjectionPolicy is Disallowed)"
                        % template["metadata"]["name"])
            if policy == "Allowed":
                containers = template["spec"]["podTemplate"]["spec"].get("containers") or []
                for item in spec["env"]:
                    target = item.get("containerName") or (containers[0]["name"]
                                                           if containers else "")
                    for container in containers:
                        if container["name"] == target and any(
                                e.get("name") == item["name"] for e in container.get("env")
                                or []):
                            return ("EnvVarsInjectionRejected", 'environment variable "%s" is '
                                    "already set by the template and envVarsInjectionPolicy "
                                    "is Allowed (add only)" % item["name"])
        if spec.get("volumeClaimTemplates") and \
                template["spec"].get("volumeClaimTemplatesPolicy", "Disallowed") == "Disallowed":
            return ("VolumeClaimTemplatesError", "the template %s does not allow volume claim "
                    "templates (volumeClaimTemplatesPolicy is Disallowed)"
                    % template["metadata"]["name"])
        return None

    def _bound_sandbox(self, claim):
        meta = claim["metadata"]
        ns = meta["namespace"]
        candidates = []
        bound_name = ((claim.get("status") or {}).get("sandbox") or {}).get("name")
        if bound_name:
            candidates.append(bound_name)
        annotated = (meta.get("annotations") or {}).get(ANNOTATION_SANDBOX_NAME)
        if annotated:
            candidates.append(annotated)
        candidates.append(meta["name"])
        for candidate in candidates:
            sandbox = self.store.find(SANDBOXES, ns, candidate)
            if sandbox is not None and _owned_by(sandbox, claim):
                return sandbox
        return None

    def _adopt(self, claim, pool, template):
        """Adopt a pool member. Returns the Sandbox, None for a cold start, or "wait"."""
        meta = claim["metadata"]
        ns = meta["namespace"]
        pool_hash = name_hash(pool["metadata"]["name"])
        strategy = (pool["spec"].get("updateStrategy") or {}).get("type", "OnReplenish")
        current_hash = blueprint_hash(self._blueprint(template))
        candidates = []
        for sandbox in self._pool_members(pool):
            labels = sandbox["metadata"].get("labels") or {}
            if labels.get(LABEL_WARM_POOL) != pool_hash or LABEL_TEMPLATE_REF_HASH not in labels:
                continue
            if strategy == "Recreate" and labels.get(LABEL_TEMPLATE_HASH) != current_hash:
                continue
            candidates.append(sandbox)
        candidates.sort(key=lambda s: (s["metadata"]["creationTimestamp"],
                                       int(s["metadata"]["resourceVersion"])))
        with_ip = [c for c in candidates if (c.get("status") or {}).get("podIPs")]
        ready = [c for c in with_ip if (get_condition(c, "Ready") or {}).get("status") == "True"]
        choice = ready[0] if ready else None
        if choice is None:
            created = parse_time(meta["creationTimestamp"])
            age = (_now() - created).total_seconds() if created else WARM_IP_WAIT
            if len(with_ip) < len(candidates) and age < WARM_IP_WAIT:
                self.enqueue_later(0.5, CLAIMS, ns, meta["name"])
                return "wait"
            choice = with_ip[0] if with_ip else None
        if choice is None:
            return None
        sandbox_name = choice["metadata"]["name"]

        def annotate(obj):
            obj["metadata"].setdefault("annotations", {})[ANNOTATION_SANDBOX_NAME] = sandbox_name
        self.store.mutate(CLAIMS, ns, meta["name"], annotate)
        extra = claim["spec"].get("additionalPodMetadata") or {}
        template_meta = template["spec"]["podTemplate"].get("metadata") or {}

        def adopt(obj):
            labels = obj["metadata"].setdefault("labels", {})
            labels.pop(LABEL_WARM_POOL, None)
            labels[LABEL_LAUNCH_TYPE] = "warm"
            labels[LABEL_CLAIM_UID] = meta["uid"]
            obj["metadata"]["ownerReferences"] = [owner_reference(claim)]
            obj["metadata"].setdefault("annotations", {})[ANNOTATION_POD_NAME] = sandbox_name
            pod_meta = obj["spec"]["podTemplate"].setdefault("metadata", {})
            pod_labels = dict(template_meta.get("labels") or {})
            pod_labels[LABEL_CLAIM_UID] = meta["uid"]
            pod_labels[LABEL_TEMPLATE_REF_HASH] = name_hash(template["metadata"]["name"])
            pod_labels.update(extra.get("labels") or {})
            pod_meta["labels"] = pod_labels
            pod_annotations = dict(template_meta.get("annotations") or {})
            pod_annotations.update(extra.get("annotations") or {})
            pod_meta["annotations"] = pod_annotations
        adopted = self.store.mutate(SANDBOXES, ns, sandbox_name, adopt)
        self.record_event(claim, "SandboxAdopted", "Adopted warm sandbox %s" % sandbox_name)
        log.info("claim %s/%s: adopted warm sandbox %s", ns, meta["name"], sandbox_name)
        return adopted

    def _cold_start(self, claim, template):
        meta = claim["metadata"]
        ns, name = meta["namespace"], meta["name"]
        existing = self.store.find(SANDBOXES, ns, name)
        if existing is not None:
            return existing
        blueprint = self._blueprint(template)
        spec = claim["spec"]
        pod_spec = blueprint["podTemplate"]["spec"]
        containers = pod_spec.get("containers") or []
        for item in spec.get("env") or []:
            target = item.get("containerName") or (containers[0]["name"] if containers else "")
            for container in containers:
                if container["name"] != target:
                    continue
                env = [e for e in container.get("env") or [] if e.get("name") != item["name"]]
                env.append({"name": item["name"], "value": item["value"]})
                container["env"] = env
        if spec.get("volumeClaimTemplates"):
            existing_vcts = {v["metadata"]["name"]: v for v in
                             blueprint.get("volumeClaimTemplates") or []}
            for vct in spec["volumeClaimTemplates"]:
                existing_vcts[vct["metadata"]["name"]] = vct
            blueprint["volumeClaimTemplates"] = list(existing_vcts.values())
        extra = spec.get("additionalPodMetadata") or {}
        pod_meta = blueprint["podTemplate"].setdefault("metadata", {})
        pod_meta.setdefault("labels", {}).update(extra.get("labels") or {})
        pod_meta.setdefault("annotations", {}).update(extra.get("annotations") or {})
        labels = {LABEL_CLAIM_UID: meta["uid"], LABEL_LAUNCH_TYPE: "cold",
                  LABEL_TEMPLATE_REF_HASH: name_hash(template["metadata"]["name"])}
        created_by = (meta.get("labels") or {}).get(LABEL_CREATED_BY)
        if created_by:
            labels[LABEL_CREATED_BY] = created_by
        body = {"apiVersion": "%s/v1beta1" % SANDBOX_GROUP, "kind": "Sandbox",
                "metadata": {"name": name, "namespace": ns, "labels": labels,
                             "annotations": {ANNOTATION_TEMPLATE_REF:
                                             template["metadata"]["name"]},
                             "ownerReferences": [owner_reference(claim)]},
                "spec": blueprint}
        created = self.store.create(SANDBOXES, ns, body, internal=True)
        self.record_event(claim, "SandboxProvisioned", "Created sandbox %s" % name)
        log.info("claim %s/%s: cold start, created sandbox %s", ns, name, name)
        return created

    def _claim_status(self, claim, sandbox, status, conditions, generation):
        meta = claim["metadata"]
        ns, name = meta["namespace"], meta["name"]
        sandbox_status = sandbox.get("status") or {}
        status["sandbox"] = {"name": sandbox["metadata"]["name"]}
        if sandbox_status.get("podIPs"):
            status["sandbox"]["podIPs"] = list(sandbox_status["podIPs"])
        ready = get_condition(sandbox, "Ready")
        if ready is None:
            set_condition(conditions, "Ready", "False", "SandboxNotReady",
                          "Sandbox has no Ready condition yet", generation)
        else:
            set_condition(conditions, "Ready", ready["status"], ready["reason"],
                          ready.get("message", ""), generation)
        finished = get_condition(sandbox, "Finished")
        if finished is not None:
            set_condition(conditions, "Finished", finished["status"], finished["reason"],
                          finished.get("message", ""), generation)
        else:
            remove_condition(conditions, "Finished")
        if ready is not None and ready["status"] == "True" and \
                ANNOTATION_FIRST_READY not in (meta.get("annotations") or {}):
            self.store.mutate(CLAIMS, ns, name, lambda o: o["metadata"].setdefault(
                "annotations", {}).__setitem__(ANNOTATION_FIRST_READY, now_rfc3339()))
        self._write_status(CLAIMS, ns, name, status)
        ttl = ((claim["spec"].get("lifecycle") or {}).get("ttlSecondsAfterFinished"))
        if ttl is not None and finished is not None and finished["status"] == "True":
            self.enqueue_later(ttl + 0.05, CLAIMS, ns, name)

    def _claim_expired(self, claim, status, conditions, generation):
        meta = claim["metadata"]
        ns, name = meta["namespace"], meta["name"]
        lifecycle = claim["spec"].get("lifecycle") or {}
        deadlines = []
        if lifecycle.get("shutdownTime"):
            moment = parse_time(lifecycle["shutdownTime"])
            if moment is not None:
                deadlines.append(moment)
        ttl = lifecycle.get("ttlSecondsAfterFinished")
        finished = get_condition(claim, "Finished")
        if ttl is not None and finished is not None and finished.get("status") == "True":
            start = parse_time(finished["lastTransitionTime"])
            if start is not None:
                deadlines.append(start + datetime.timedelta(seconds=ttl))
        if not deadlines:
            return False
        deadline = min(deadlines)
        remaining = (deadline - _now()).total_seconds()
        if remaining > 0:
            self.enqueue_later(remaining, CLAIMS, ns, name)
            return False
        policy = lifecycle.get("shutdownPolicy", "Retain")
        self.record_event(claim, "ClaimExpired", "Claim expired (shutdownPolicy %s)" % policy)
        log.info("claim %s/%s expired, shutdownPolicy %s", ns, name, policy)
        if policy == "Delete":
            self.store.delete(CLAIMS, ns, name, {"propagationPolicy": "Background"})
            return True
        if policy == "DeleteForeground":
            self.store.delete(CLAIMS, ns, name, {"propagationPolicy": "Foreground"})
            return True
        bound = self._bound_sandbox(claim)
        if bound is not None and not bound["metadata"].get("deletionTimestamp"):
            self.store.delete(SANDBOXES, ns, bound["metadata"]["name"])
        set_condition(conditions, "Ready", "False", "ClaimExpired", "Claim has expired",
                      generation)
        status.get("sandbox", {}).pop("podIPs", None)
        self._write_status(CLAIMS, ns, name, status)
        return True

    # --- namespaces ---------------------------------------------------------------------

    def reconcile_namespace(self, ns, name):
        namespace = self.store.find(NAMESPACES, "", name)
        if namespace is None or not namespace["metadata"].get("deletionTimestamp"):
            return
        remaining = 0
        for key, kind in self.store.kinds.items():
            if not kind.namespaced:
                continue
            for obj in self.store.list(key, name)[0]:
                remaining += 1
                if not obj["metadata"].get("deletionTimestamp"):
                    self.store.delete(key, name, obj["metadata"]["name"],
                                      {"propagationPolicy": "Background"})
        if remaining == 0:
            self.finalize_namespace(name, {"spec": {"finalizers": []}})

    def finalize_namespace(self, name, body):
        finalizers = (body.get("spec") or {}).get("finalizers") or []

        def change(obj):
            obj.setdefault("spec", {})["finalizers"] = finalizers
        updated = self.store.mutate(NAMESPACES, "", name, change)
        if updated is None:
            raise errors.not_found("", "namespaces", name)
        if not finalizers and updated["metadata"].get("deletionTimestamp"):
            removed = self.store.force_remove(NAMESPACES, "", name)
            return removed or updated
        return updated

    # --- PodDisruptionBudget and eviction -----------------------------------------------

    def _pdb_numbers(self, pdb):
        ns = pdb["metadata"]["namespace"]
        selector = pdb["spec"].get("selector")
        pods = [p for p in self.store.list(PODS, ns)[0]
                if match_label_selector_object(selector if selector is not None else {},
                                               p["metadata"].get("labels"))
                and not p["metadata"].get("deletionTimestamp")]
        expected = len(pods)
        healthy = sum(1 for p in pods if _pod_ready(p))
        spec = pdb["spec"]

        def resolve(value):
            if isinstance(value, str) and value.endswith("%"):
                return -(-int(value[:-1]) * expected // 100)
            return int(value)
        if "maxUnavailable" in spec:
            desired = max(0, expected - resolve(spec["maxUnavailable"]))
        else:
            desired = resolve(spec.get("minAvailable", 1))
        return expected, healthy, desired, max(0, healthy - desired)

    def reconcile_pdb(self, ns, name):
        pdb = self.store.find(PDBS, ns, name)
        if pdb is None or pdb["metadata"].get("deletionTimestamp"):
            return
        expected, healthy, desired, allowed = self._pdb_numbers(pdb)
        status = copy.deepcopy(pdb.get("status") or {})
        status.update({"expectedPods": expected, "currentHealthy": healthy,
                       "desiredHealthy": desired, "disruptionsAllowed": allowed,
                       "observedGeneration": pdb["metadata"].get("generation", 1)})
        conditions = status.setdefault("conditions", [])
        if allowed > 0:
            set_condition(conditions, "DisruptionAllowed", "True", "SufficientPods", "",
                          pdb["metadata"].get("generation"))
        else:
            set_condition(conditions, "DisruptionAllowed", "False", "InsufficientPods", "",
                          pdb["metadata"].get("generation"))
        self._write_status(PDBS, ns, name, status)

    def evict(self, ns, name, body):
        from .server import json_response
        pod = self.store.get(PODS, ns, name)
        labels = pod["metadata"].get("labels") or {}
        matching = [p for p in self.store.list(PDBS, ns)[0]
                    if match_label_selector_object(p["spec"].get("selector") or {}, labels)]
        if len(matching) > 1:
            raise errors.ApiError(500, "InternalError", "This pod has more than one "
                                  "PodDisruptionBudget, which the eviction subresource does "
                                  "not support.")
        if matching:
            pdb = matching[0]
            _, healthy, desired, allowed = self._pdb_numbers(pdb)
            pod_healthy = _pod_ready(pod)
            policy = pdb["spec"].get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
            blocked = allowed <= 0
            if not pod_healthy and (policy == "AlwaysAllow" or healthy >= desired):
                blocked = False
            if blocked:
                raise errors.ApiError(
                    429, "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    {"causes": [{"reason": "DisruptionBudget", "message":
                                 "The disruption budget %s needs %d healthy pods and has %d "
                                 "currently" % (pdb["metadata"]["name"], desired, healthy)}]})
        options = (body or {}).get("deleteOptions") or {}
        self.store.delete(PODS, ns, name, options)
        return json_response(errors.success_status(), status=201)

