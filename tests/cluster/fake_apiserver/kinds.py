"""The resource kinds the fake serves: names, scope, verbs, defaults and validation, plus the
discovery documents kubectl reads."""
import datetime
import ipaddress
import re

from . import errors
from .selectors import _KEY_RE, _VALUE_RE

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

SANDBOX_GROUP = "agents.x-k8s.io"
EXTENSIONS_GROUP = "extensions.agents.x-k8s.io"


class Kind:
    """One served resource (group, version, plural) and its rules."""

    def __init__(self, group, version, kind, plural, namespaced=True, short_names=(),
                 verbs=None, subresources=(), status_subresource=False, builtin=True,
                 field_selectors=(), validate=None, default=None, categories=(),
                 singular=None, columns=None, deprecated_versions=()):
        self.group = group
        self.version = version
        self.kind = kind
        self.plural = plural
        self.singular = singular or kind.lower()
        self.namespaced = namespaced
        self.short_names = list(short_names)
        self.verbs = list(verbs if verbs is not None else ALL_VERBS)
        self.subresources = list(subresources)
        self.status_subresource = status_subresource
        self.builtin = builtin
        self.field_selectors = {"metadata.name", "metadata.namespace"} | set(field_selectors)
        self.validate = validate or (lambda obj, old: [])
        self.default = default or (lambda obj: None)
        self.categories = list(categories)
        self.columns = columns or []
        self.deprecated_versions = list(deprecated_versions)

    @property
    def api_version(self):
        return "%s/%s" % (self.group, self.version) if self.group else self.version

    @property
    def key(self):
        return (self.group, self.plural)

    def resource_name(self):
        return "%s.%s" % (self.plural, self.group) if self.group else self.plural


# --- validation helpers ---------------------------------------------------------------------

def _subdomain_message():
    return ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character (e.g. "
            "'example.com', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")


def _label_message():
    return ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
            "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
            "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")


def validate_name(name, rule="subdomain"):
    """Return Invalid causes for metadata.name under the kind's naming rule."""
    if rule == "subdomain":
        if len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
            return [errors.cause("metadata.name", 'Invalid value: "%s": %s'
                                 % (name, _subdomain_message()))]
    elif rule == "label":
        if len(name) > 63 or not DNS1123_LABEL.match(name):
            return [errors.cause("metadata.name", 'Invalid value: "%s": %s'
                                 % (name, _label_message()))]
    elif rule == "dns1035":
        if len(name) > 63 or not DNS1035_LABEL.match(name):
            return [errors.cause("metadata.name", 'Invalid value: "%s": a DNS-1035 label must '
                                 "consist of lower case alphanumeric characters or '-', start "
                                 "with an alphabetic character, and end with an alphanumeric "
                                 "character" % name)]
    return []


def validate_metadata(metadata):
    causes = []
    for key, value in (metadata.get("labels") or {}).items():
        if not _KEY_RE.match(key) or len(key.split("/")[-1]) > 63:
            causes.append(errors.cause("metadata.labels", 'Invalid value: "%s": name part must '
                                       "consist of alphanumeric characters, '-', '_' or '.'"
                                       % key))
        if not isinstance(value, str) or len(value) > 63 or not _VALUE_RE.match(value):
            causes.append(errors.cause("metadata.labels", 'Invalid value: "%s": a valid label '
                                       "must be an empty string or consist of alphanumeric "
                                       "characters, '-', '_' or '.'" % (value,)))
    for key, value in (metadata.get("annotations") or {}).items():
        if not isinstance(value, str):
            causes.append(errors.cause("metadata.annotations", 'Invalid value: "%s": '
                                       "annotation values must be strings" % key))
    return causes


def _get(obj, path):
    current = obj
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return None
        current = current[part]
    return current


def _enum(obj, path, values, causes):
    value = _get(obj, path)
    if value is not None and value not in values:
        causes.append(errors.cause(path, 'Unsupported value: "%s": supported values: %s'
                                   % (value, ", ".join('"%s"' % v for v in values)),
                                   "FieldValueNotSupported"))


def _required(obj, path, causes):
    value = _get(obj, path)
    if value is None or value == "" or value == []:
        causes.append(errors.required(path))
        return False
    return True


def _date_time(obj, path, causes):
    value = _get(obj, path)
    if value is None:
        return
    if not isinstance(value, str) or parse_time(value) is None:
        causes.append(errors.cause(path, 'Invalid value: "%s": %s in body must be of type '
                                   "date-time" % (value, path)))


def parse_time(text):
    try:
        return datetime.datetime.strptime(text.replace("Z", "+00:00")[:25],
                                          "%Y-%m-%dT%H:%M:%S%z")
    except (ValueError, TypeError, AttributeError):
        try:
            return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except (ValueError, TypeError, AttributeError):
            return None


def _minimum(obj, path, minimum, causes):
    value = _get(obj, path)
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        causes.append(errors.cause(path, 'Invalid value: "%s": %s in body must be of type '
                                   "integer" % (value, path), "FieldValueTypeInvalid"))
    elif value < minimum:
        causes.append(errors.cause(path, "Invalid value: %d: %s in body should be greater than "
                                   "or equal to %d" % (value, path, minimum)))


def validate_pod_spec(spec, path, causes):
    if not isinstance(spec, dict):
        causes.append(errors.required(path))
        return
    containers = spec.get("containers")
    if not containers:
        causes.append(errors.required(path + ".containers"))
        return
    seen = set()
    for i, container in enumerate(containers):
        where = "%s.containers[%d]" % (path, i)
        name = container.get("name")
        if not name:
            causes.append(errors.required(where + ".name"))
        elif not DNS1123_LABEL.match(name):
            causes.append(errors.cause(where + ".name", 'Invalid value: "%s": %s'
                                       % (name, _label_message())))
        elif name in seen:
            causes.append(errors.cause(where + ".name", 'Duplicate value: "%s"' % name,
                                       "FieldValueDuplicate"))
        seen.add(name)
        if not container.get("image"):
            causes.append(errors.required(where + ".image"))
    _enum({"s": spec}, "s.restartPolicy", ["Always", "OnFailure", "Never"], causes)


# --- per-kind validation --------------------------------------------------------------------

def validate_pod(obj, old):
    causes = []
    validate_pod_spec(obj.get("spec"), "spec", causes)
    return causes


def validate_service(obj, old):
    causes = []
    spec = obj.get("spec") or {}
    _enum(obj, "spec.type", ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"], causes)
    ports = spec.get("ports") or []
    if not ports and spec.get("clusterIP") != "None" and spec.get("type") != "ExternalName":
        causes.append(errors.required("spec.ports"))
    for i, port in enumerate(ports):
        number = port.get("port")
        if not isinstance(number, int) or not 1 <= number <= 65535:
            causes.append(errors.cause("spec.ports[%d].port" % i, "Invalid value: %r: must be "
                                       "between 1 and 65535, inclusive" % (number,)))
        if len(ports) > 1 and not port.get("name"):
            causes.append(errors.required("spec.ports[%d].name" % i))
    return causes


def _validate_peer_ports(rule, path, causes):
    for j, port in enumerate(rule.get("ports") or []):
        where = "%s.ports[%d]" % (path, j)
        protocol = port.get("protocol", "TCP")
        if protocol not in ("TCP", "UDP", "SCTP"):
            causes.append(errors.cause(where + ".protocol", 'Unsupported value: "%s": '
                                       'supported values: "SCTP", "TCP", "UDP"' % protocol,
                                       "FieldValueNotSupported"))
        number = port.get("port")
        if isinstance(number, int) and not 1 <= number <= 65535:
            causes.append(errors.cause(where + ".port", "Invalid value: %d: must be between 1 "
                                       "and 65535, inclusive" % number))
        end = port.get("endPort")
        if end is not None:
            if not isinstance(number, int):
                causes.append(errors.cause(where + ".endPort", "Invalid value: %r: may not be "
                                           "specified when `port` is non-numeric" % (end,)))
            elif end < number:
                causes.append(errors.cause(where + ".endPort", "Invalid value: %r: must be "
                                           "greater than or equal to `port`" % (end,)))


def _validate_peers(peers, path, causes):
    for j, peer in enumerate(peers or []):
        where = "%s[%d]" % (path, j)
        block = peer.get("ipBlock")
        if block is None:
            continue
        try:
            network = ipaddress.ip_network(block.get("cidr", ""), strict=False)
        except ValueError:
            causes.append(errors.cause(where + ".ipBlock.cidr", 'Invalid value: "%s": must be '
                                       "a valid CIDR" % block.get("cidr")))
            continue
        for k, text in enumerate(block.get("except") or []):
            try:
                excluded = ipaddress.ip_network(text, strict=False)
            except ValueError:
                causes.append(errors.cause("%s.ipBlock.except[%d]" % (where, k),
                                           'Invalid value: "%s": must be a valid CIDR' % text))
                continue
            if excluded.version != network.version or not excluded.subnet_of(network):
                causes.append(errors.cause("%s.ipBlock.except[%d]" % (where, k),
                                           'Invalid value: "%s": must be a strict subset of '
                                           '`cidr`' % text))


def validate_network_policy(obj, old):
    causes = []
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [errors.required("spec")]
    for i, value in enumerate(spec.get("policyTypes") or []):
        if value not in ("Ingress", "Egress"):
            causes.append(errors.cause("spec.policyTypes[%d]" % i, 'Unsupported value: "%s": '
                                       'supported values: "Ingress", "Egress"' % value,
                                       "FieldValueNotSupported"))
    for i, rule in enumerate(spec.get("egress") or []):
        _validate_peer_ports(rule, "spec.egress[%d]" % i, causes)
        _validate_peers(rule.get("to"), "spec.egress[%d].to" % i, causes)
    for i, rule in enumerate(spec.get("ingress") or []):
        _validate_peer_ports(rule, "spec.ingress[%d]" % i, causes)
        _validate_peers(rule.get("from"), "spec.ingress[%d].from" % i, causes)
    return causes


def validate_pdb(obj, old):
    spec = obj.get("spec") or {}
    causes = []
    if "minAvailable" in spec and "maxUnavailable" in spec:
        causes.append(errors.cause("spec", "Invalid value: minAvailable and maxUnavailable "
                                   "cannot be both set"))
    for field in ("minAvailable", "maxUnavailable"):
        value = spec.get(field)
        if isinstance(value, str) and not re.match(r"^\d+%$", value):
            causes.append(errors.cause("spec." + field, 'Invalid value: "%s": must be an '
                                       "integer or percentage (e.g '5%%')" % value))
        if isinstance(value, int) and value < 0:
            causes.append(errors.cause("spec." + field, "Invalid value: %d: must be greater "
                                       "than or equal to 0" % value))
    _enum(obj, "spec.unhealthyPodEvictionPolicy", ["IfHealthyBudget", "AlwaysAllow"], causes)
    return causes


def validate_sandbox(obj, old):
    causes = []
    if not _required(obj, "spec", causes):
        return causes
    if _required(obj, "spec.podTemplate", causes) and \
            _required(obj, "spec.podTemplate.spec", causes):
        if not (_get(obj, "spec.podTemplate.spec.containers")):
            causes.append(errors.required("spec.podTemplate.spec.containers"))
    _enum(obj, "spec.operatingMode", ["Running", "Suspended"], causes)
    _enum(obj, "spec.shutdownPolicy", ["Delete", "Retain"], causes)
    _date_time(obj, "spec.shutdownTime", causes)
    if old is not None and _get(old, "spec.volumeClaimTemplates") != \
            _get(obj, "spec.volumeClaimTemplates"):
        causes.append(errors.cause("spec", "Invalid value: \"object\": volumeClaimTemplates is "
                                   "immutable"))
    return causes


def validate_sandbox_template(obj, old):
    causes = []
    if not _required(obj, "spec", causes):
        return causes
    if _required(obj, "spec.podTemplate", causes):
        _required(obj, "spec.podTemplate.spec", causes)
    _enum(obj, "spec.networkPolicyManagement", ["Managed", "Unmanaged"], causes)
    _enum(obj, "spec.envVarsInjectionPolicy", ["Allowed", "Overrides", "Disallowed"], causes)
    _enum(obj, "spec.volumeClaimTemplatesPolicy", ["Disallowed", "Allowed", "Overrides"], causes)
    return causes


def validate_sandbox_claim(obj, old):
    causes = []
    if not _required(obj, "spec", causes):
        return causes
    if _required(obj, "spec.warmPoolRef", causes):
        _required(obj, "spec.warmPoolRef.name", causes)
    _enum(obj, "spec.lifecycle.shutdownPolicy", ["Delete", "DeleteForeground", "Retain"], causes)
    _date_time(obj, "spec.lifecycle.shutdownTime", causes)
    _minimum(obj, "spec.lifecycle.ttlSecondsAfterFinished", 0, causes)
    for i, env in enumerate(_get(obj, "spec.env") or []):
        for field in ("name", "value"):
            if field not in env:
                causes.append(errors.required("spec.env[%d].%s" % (i, field)))
    return causes


def validate_warm_pool(obj, old):
    causes = []
    if not _required(obj, "spec", causes):
        return causes
    if _required(obj, "spec.sandboxTemplateRef", causes):
        _required(obj, "spec.sandboxTemplateRef.name", causes)
    _minimum(obj, "spec.replicas", 0, causes)
    _enum(obj, "spec.updateStrategy.type", ["Recreate", "OnReplenish"], causes)
    return causes


def validate_access_review(obj, old):
    spec = obj.get("spec") or {}
    if not spec.get("resourceAttributes") and not spec.get("nonResourceAttributes"):
        return [errors.cause("spec.resourceAttributes", "Required value: exactly one of "
                             "nonResourceAttributes or resourceAttributes must be specified",
                             "FieldValueRequired")]
    return []


# --- defaults -------------------------------------------------------------------------------

def _set_default(obj, path, value):
    parts = path.split(".")
    current = obj
    for part in parts[:-1]:
        if not isinstance(current.get(part), dict):
            current[part] = {}
        current = current[part]
    current.setdefault(parts[-1], value)


def default_pod_spec(spec):
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("securityContext", {})
    for container in spec.get("containers") or []:
        container.setdefault("imagePullPolicy", "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
        for port in container.get("ports") or []:
            port.setdefault("protocol", "TCP")


def default_pod(obj):
    if isinstance(obj.get("spec"), dict):
        default_pod_spec(obj["spec"])


def default_service(obj):
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))


def default_network_policy(obj):
    spec = obj.setdefault("spec", {})
    spec.setdefault("podSelector", {})
    if "policyTypes" not in spec:
        # The API server fills policyTypes: Ingress always, Egress when egress rules exist.
        spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    for rule in (spec.get("egress") or []) + (spec.get("ingress") or []):
        for port in rule.get("ports") or []:
            port.setdefault("protocol", "TCP")


def default_pdb(obj):
    spec = obj.setdefault("spec", {})
    if "minAvailable" not in spec and "maxUnavailable" not in spec:
        spec["minAvailable"] = 1


def default_sandbox(obj):
    _set_default(obj, "spec.operatingMode", "Running")
    _set_default(obj, "spec.shutdownPolicy", "Retain")


def default_sandbox_template(obj):
    _set_default(obj, "spec.networkPolicyManagement", "Managed")
    _set_default(obj, "spec.envVarsInjectionPolicy", "Disallowed")
    _set_default(obj, "spec.volumeClaimTemplatesPolicy", "Disallowed")


def default_sandbox_claim(obj):
    if isinstance(_get(obj, "spec.lifecycle"), dict):
        _set_default(obj, "spec.lifecycle.shutdownPolicy", "Retain")


def default_warm_pool(obj):
    _set_default(obj, "spec.replicas", 1)
    if isinstance(_get(obj, "spec.updateStrategy"), dict):
        _set_default(obj, "spec.updateStrategy.type", "OnReplenish")


def default_namespace(obj):
    name = obj.get("metadata", {}).get("name")
    labels = obj["metadata"].setdefault("labels", {})
    if name:
        labels["kubernetes.io/metadata.name"] = name
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {})["phase"] = "Active"


# --- printer columns for Table responses ----------------------------------------------------

def _condition(obj, kind, field):
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return condition.get(field, "")
    return ""


def _pod_ready(obj):
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    total = len((obj.get("spec") or {}).get("containers") or [])
    return "%d/%d" % (sum(1 for s in statuses if s.get("ready")), total)


def _pod_status(obj):
    if obj["metadata"].get("deletionTimestamp"):
        return "Terminating"
    status = obj.get("status") or {}
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason"):
            return state["waiting"]["reason"]
        if "terminated" in state and status.get("phase") not in ("Succeeded", "Failed"):
            return state["terminated"].get("reason", "Error")
    if status.get("phase") == "Succeeded":
        return "Completed"
    if status.get("phase") == "Failed":
        return "Error"
    return status.get("phase", "Pending")


def _restarts(obj):
    return sum(s.get("restartCount", 0)
               for s in (obj.get("status") or {}).get("containerStatuses") or [])


POD_COLUMNS = [
    ("Ready", "string", _pod_ready),
    ("Status", "string", _pod_status),
    ("Restarts", "string", lambda o: str(_restarts(o))),
    ("IP", "string", lambda o: (o.get("status") or {}).get("podIP", "<none>")),
]
SANDBOX_COLUMNS = [
    ("Ready", "string", lambda o: _condition(o, "Ready", "status")),
    ("Reason", "string", lambda o: _condition(o, "Ready", "reason")),
]
CLAIM_COLUMNS = [
    ("Ready", "string", lambda o: _condition(o, "Ready", "status")),
    ("Sandbox", "string", lambda o: ((o.get("status") or {}).get("sandbox") or {}).get("name", "")),
    ("Reason", "string", lambda o: _condition(o, "Ready", "reason")),
]
POOL_COLUMNS = [
    ("Ready", "integer", lambda o: (o.get("status") or {}).get("readyReplicas", 0)),
    ("Desired", "integer", lambda o: (o.get("spec") or {}).get("replicas", 0)),
]
NAMESPACE_COLUMNS = [("Status", "string", lambda o: (o.get("status") or {}).get("phase", ""))]


def build_kinds():
    """Return the kinds this fake serves, keyed by (group, plural)."""
    kinds = [
        Kind("", "v1", "Namespace", "namespaces", namespaced=False, short_names=["ns"],
             subresources=["status", "finalize"], status_subresource=True,
             field_selectors=["status.phase"], default=default_namespace,
             validate=lambda o, old: [], columns=NAMESPACE_COLUMNS),
        Kind("", "v1", "Node", "nodes", namespaced=False, short_names=["no"],
             subresources=["status"], status_subresource=True),
        Kind("", "v1", "Pod", "pods", short_names=["po"], categories=["all"],
             subresources=["status", "exec", "log", "eviction", "attach", "portforward"],
             status_subresource=True, validate=validate_pod, default=default_pod,
             field_selectors=["status.phase", "spec.nodeName", "spec.restartPolicy",
                              "spec.schedulerName", "spec.serviceAccountName",
                              "status.podIP", "status.nominatedNodeName"],
             columns=POD_COLUMNS),
        Kind("", "v1", "Service", "services", short_names=["svc"], categories=["all"],
             subresources=["status"], status_subresource=True, validate=validate_service,
             default=default_service),
        Kind("", "v1", "ConfigMap", "configmaps", short_names=["cm"]),
        Kind("", "v1", "Secret", "secrets", field_selectors=["type"]),
        Kind("", "v1", "ServiceAccount", "serviceaccounts", short_names=["sa"]),
        Kind("", "v1", "Event", "events", short_names=["ev"],
             field_selectors=["involvedObject.kind", "involvedObject.name",
                              "involvedObject.namespace", "involvedObject.uid", "reason",
                              "type", "source"]),
        Kind("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies",
             short_names=["netpol"], validate=validate_network_policy,
             default=default_network_policy),
        Kind("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", short_names=["pdb"],
             subresources=["status"], status_subresource=True, validate=validate_pdb,
             default=default_pdb),
        Kind("authorization.k8s.io", "v1", "SelfSubjectAccessReview",
             "selfsubjectaccessreviews", namespaced=False, verbs=["create"],
             validate=validate_access_review),
        Kind("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews",
             namespaced=False, verbs=["create"]),
        Kind("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews",
             namespaced=False, verbs=["create"]),
        Kind(SANDBOX_GROUP, "v1beta1", "Sandbox", "sandboxes", short_names=["sandbox"],
             subresources=["status"], status_subresource=True, builtin=False,
             validate=validate_sandbox, default=default_sandbox, columns=SANDBOX_COLUMNS),
        Kind(EXTENSIONS_GROUP, "v1beta1", "SandboxTemplate", "sandboxtemplates",
             short_names=["sandboxtemplate"], builtin=False,
             validate=validate_sandbox_template, default=default_sandbox_template),
        Kind(EXTENSIONS_GROUP, "v1beta1", "SandboxClaim", "sandboxclaims",
             short_names=["sandboxclaim"], subresources=["status"], status_subresource=True,
             builtin=False, validate=validate_sandbox_claim, default=default_sandbox_claim,
             columns=CLAIM_COLUMNS),
        Kind(EXTENSIONS_GROUP, "v1beta1", "SandboxWarmPool", "sandboxwarmpools",
             short_names=["swp"], subresources=["status", "scale"], status_subresource=True,
             builtin=False, validate=validate_warm_pool, default=default_warm_pool,
             columns=POOL_COLUMNS),
    ]
    return {kind.key: kind for kind in kinds}


def group_versions(kinds):
    """Return {group: [versions]} in a stable order, core group as ""."""
    result = {}
    for kind in kinds.values():
        versions = result.setdefault(kind.group, [])
        if kind.version not in versions:
            versions.append(kind.version)
    return result


def api_resource_list(kinds, group, version):
    resources = []
    for kind in kinds.values():
        if kind.group != group or kind.version != version:
            continue
        entry = {"name": kind.plural, "singularName": kind.singular,
                 "namespaced": kind.namespaced, "kind": kind.kind, "verbs": kind.verbs}
        if kind.short_names:
            entry["shortNames"] = kind.short_names
        if kind.categories:
            entry["categories"] = kind.categories
        resources.append(entry)
        for sub in kind.subresources:
            sub_kind, verbs = {
                "status": (kind.kind, ["get", "patch", "update"]),
                "scale": ("Scale", ["get", "patch", "update"]),
                "exec": ("PodExecOptions", ["create", "get"]),
                "attach": ("PodAttachOptions", ["create", "get"]),
                "portforward": ("PodPortForwardOptions", ["create", "get"]),
                "log": ("Pod", ["get"]),
                "eviction": ("Eviction", ["create"]),
                "finalize": ("Namespace", ["update"]),
            }[sub]
            entry = {"name": "%s/%s" % (kind.plural, sub), "singularName": "",
                     "namespaced": kind.namespaced, "kind": sub_kind, "verbs": verbs}
            if sub == "eviction":
                entry.update({"group": "policy", "version": "v1"})
            if sub == "scale" and not kind.builtin:
                entry.update({"group": "autoscaling", "version": "v1"})
            resources.append(entry)
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": "%s/%s" % (group, version) if group else version,
            "resources": resources}


def api_group_list(kinds):
    groups = []
    for group, versions in group_versions(kinds).items():
        if not group:
            continue
        entries = [{"groupVersion": "%s/%s" % (group, v), "version": v} for v in versions]
        groups.append({"name": group, "versions": entries, "preferredVersion": entries[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def openapi_v3_root(kinds):
    """Return the /openapi/v3 index: one document per group version."""
    paths = {}
    for group, versions in group_versions(kinds).items():
        for version in versions:
            path = "apis/%s/%s" % (group, version) if group else "api/%s" % version
            paths[path] = {"serverRelativeURL": "/openapi/v3/%s?hash=%s" % (path, "0" * 16)}
    return {"paths": paths}


def openapi_v3_document(kinds, group, version):
    """Return a minimal OpenAPI v3 document for one group version.

    kubectl reads it to decide whether the server validates fields itself: every PATCH
    operation lists the fieldValidation query parameter and carries the
    x-kubernetes-group-version-kind extension. NOTE: there are no schemas, so kubectl
    explain has nothing to show and the server does not reject unknown fields.
    """
    paths = {}
    for kind in kinds.values():
        if kind.group != group or kind.version != version or "patch" not in kind.verbs:
            continue
        prefix = "/apis/%s/%s" % (group, version) if group else "/api/%s" % version
        scope = "/namespaces/{namespace}" if kind.namespaced else ""
        parameters = [{"name": name, "in": "query", "schema": {"type": "string"}}
                      for name in ("dryRun", "fieldManager", "fieldValidation", "force")]
        operation = {"parameters": parameters, "responses": {"200": {"description": "OK"}},
                     "x-kubernetes-action": "patch",
                     "x-kubernetes-group-version-kind": {"group": group, "version": version,
                                                         "kind": kind.kind}}
        paths["%s%s/%s/{name}" % (prefix, scope, kind.plural)] = {"patch": operation}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "unversioned"},
            "paths": paths, "components": {"schemas": {}}}


def _age(timestamp):
    moment = parse_time(timestamp or "")
    if moment is None:
        return "<unknown>"
    seconds = int((datetime.datetime.now(datetime.timezone.utc) - moment).total_seconds())
    seconds = max(0, seconds)
    if seconds < 120:
        return "%ds" % seconds
    if seconds < 3600:
        return "%dm%ds" % (seconds // 60, seconds % 60) if seconds < 600 else \
            "%dm" % (seconds // 60)
    if seconds < 86400:
        return "%dh" % (seconds // 3600)
    return "%dd" % (seconds // 86400)


def table(kind, objects, include_object="Metadata", resource_version=None):
    """Return a meta.k8s.io/v1 Table, the form kubectl get requests to print columns."""
    definitions = [{"name": "Name", "type": "string", "format": "name", "priority": 0,
                    "description": "Name must be unique within a namespace."}]
    for name, type_, _ in kind.columns:
        definitions.append({"name": name, "type": type_, "format": "", "priority": 0,
                            "description": name})
    definitions.append({"name": "Age", "type": "string", "format": "", "priority": 0,
                        "description": "CreationTimestamp of the object."})
    rows = []
    for obj in objects:
        cells = [obj["metadata"]["name"]]
        cells += [function(obj) for _, _, function in kind.columns]
        cells.append(_age(obj["metadata"].get("creationTimestamp")))
        row = {"cells": cells}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj["metadata"]}
        rows.append(row)
    metadata = {}
    if resource_version is not None:
        metadata["resourceVersion"] = str(resource_version)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
            "columnDefinitions": definitions, "rows": rows}


def wants_table(accept):
    """Report whether an Accept header requests a meta.k8s.io/v1 Table."""
    for part in (accept or "").split(","):
        params = [p.strip() for p in part.split(";")]
        if "as=Table" in params and "g=meta.k8s.io" in params and \
                ("v=v1" in params or "v=v1beta1" in params):
            return True
    return False
