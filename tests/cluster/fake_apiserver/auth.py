"""Throwaway PKI, identities (client certificates and bearer tokens) and RBAC-like rules."""
import base64
import datetime
import ipaddress
import os
import secrets

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ADMIN_GROUP = "system:masters"

# Identities used when no --auth-config file is given. "runner" has the verbs an Agent
# Sandbox client needs; "runner-no-exec" lacks pods/exec, "viewer" can only read.
DEFAULT_IDENTITIES = [
    {"name": "admin", "groups": [ADMIN_GROUP]},
    {"name": "runner", "groups": ["sbx:runners"], "rules": [
        {"apiGroups": ["extensions.agents.x-k8s.io"],
         "resources": ["sandboxclaims", "sandboxwarmpools", "sandboxtemplates"],
         "verbs": ["*"]},
        {"apiGroups": ["agents.x-k8s.io"], "resources": ["sandboxes"], "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["pods", "pods/log", "services", "events"],
         "verbs": ["get", "list", "watch", "delete"]},
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["*"]},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["*"]},
    ]},
    {"name": "runner-no-exec", "groups": ["sbx:runners"], "rules": [
        {"apiGroups": ["extensions.agents.x-k8s.io", "agents.x-k8s.io"], "resources": ["*"],
         "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["pods", "pods/log"],
         "verbs": ["get", "list", "watch"]},
    ]},
    {"name": "viewer", "groups": ["sbx:viewers"], "rules": [
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]},
    ]},
]


class Identity:
    """A user: name, groups, a bearer token and rules (empty rules with system:masters = all)."""

    def __init__(self, name, groups, rules, token):
        self.name = name
        self.groups = list(groups)
        self.rules = rules
        self.token = token
        # NOTE: a token can be made to expire after a number of requests (fault
        # "token-expire"); rotate_token() issues a new one as a tokenFile refresh would.
        self.requests_left = None

    @property
    def admin(self):
        return ADMIN_GROUP in self.groups


def _rule_matches(rule, verb, group, resource, namespace, name):
    groups = rule.get("apiGroups", ["*"])
    resources = rule.get("resources", ["*"])
    verbs = rule.get("verbs", [])
    namespaces = rule.get("namespaces")
    names = rule.get("resourceNames")
    if "*" not in groups and group not in groups:
        return False
    if "*" not in verbs and verb not in verbs:
        return False
    base = resource.split("/")[0]
    if "*" not in resources and resource not in resources and \
            not ("%s/*" % base in resources and "/" in resource):
        return False
    if namespaces and "*" not in namespaces and namespace not in namespaces:
        return False
    if names and name not in names:
        return False
    return True


# Every authenticated user may ask about its own permissions and identity, as the
# system:basic-user ClusterRole grants.
SELF_REVIEWS = {("authorization.k8s.io", "selfsubjectaccessreviews"),
                ("authorization.k8s.io", "selfsubjectrulesreviews"),
                ("authentication.k8s.io", "selfsubjectreviews")}


def authorize(identity, verb, group, resource, namespace, name):
    """Return (allowed, reason) for a resource request."""
    if identity.admin:
        return True, "allowed by group %s" % ADMIN_GROUP
    if (group, resource) in SELF_REVIEWS and verb == "create":
        return True, "allowed for every authenticated user"
    for index, rule in enumerate(identity.rules):
        if _rule_matches(rule, verb, group, resource, namespace or "", name or ""):
            return True, "allowed by rule %d of identity %s" % (index, identity.name)
    return False, ""


def authorize_non_resource(identity, verb, path):
    if identity.admin:
        return True
    # Discovery and version are open to every authenticated user, as system:discovery grants.
    return verb == "get" and (path in ("/version", "/api", "/apis", "/healthz", "/readyz",
                                       "/livez") or path.startswith("/api/") or
                              path.startswith("/apis/") or path.startswith("/openapi"))


class Authenticator:
    """Identity registry: finds the caller from a client certificate or a bearer token."""

    def __init__(self, identities):
        self.identities = {i.name: i for i in identities}
        self.by_token = {i.token: i for i in identities}

    def from_token(self, token):
        identity = self.by_token.get(token)
        if identity is None:
            return None
        if identity.requests_left is not None:
            if identity.requests_left <= 0:
                return None
            identity.requests_left -= 1
        return identity

    def from_certificate(self, peercert):
        if not peercert:
            return None
        common_name = None
        organizations = []
        for rdn in peercert.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    common_name = value
                elif key == "organizationName":
                    organizations.append(value)
        identity = self.identities.get(common_name)
        if identity is None and common_name:
            # A certificate signed by the cluster CA for an unknown user still authenticates.
            return Identity(common_name, organizations, [], None)
        return identity

    def rotate_token(self, name):
        identity = self.identities[name]
        self.by_token.pop(identity.token, None)
        identity.token = secrets.token_urlsafe(32)
        identity.requests_left = None
        self.by_token[identity.token] = identity
        return identity.token


def load_identities(path):
    """Read identities from a YAML or JSON file ({identities: [...]}) or use the defaults."""
    if path:
        with open(path) as stream:
            document = yaml.safe_load(stream) or {}
        entries = document.get("identities", [])
    else:
        entries = DEFAULT_IDENTITIES
    identities = []
    for entry in entries:
        identities.append(Identity(entry["name"], entry.get("groups", []),
                                   entry.get("rules", []),
                                   entry.get("token") or secrets.token_urlsafe(32)))
    if not any(i.admin for i in identities):
        identities.insert(0, Identity("admin", [ADMIN_GROUP], [], secrets.token_urlsafe(32)))
    return identities


# --- PKI ------------------------------------------------------------------------------------

def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name, organizations=()):
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _builder(subject, issuer, public_key, days):
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days)))


def make_ca(common_name):
    key = _key()
    name = _name(common_name)
    cert = (_builder(name, name, key.public_key(), 30)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _leaf(ca_key, ca_cert, common_name, organizations, server, hosts=()):
    key = _key()
    builder = (_builder(_name(common_name, organizations), ca_cert.subject, key.public_key(), 30)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(
                   [ExtendedKeyUsageOID.SERVER_AUTH if server else
                    ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    if hosts:
        names = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def pem_cert(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path, data, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)


class Pki:
    """The files of one fake cluster's PKI inside the state directory."""

    def __init__(self, state_dir, identities, server_hosts=("127.0.0.1", "localhost"),
                 ca_bundle="double"):
        self.dir = os.path.join(state_dir, "pki")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        ca_key, ca_cert = make_ca("sbx-fake-cluster-ca")
        server_key, server_cert = _leaf(ca_key, ca_cert, "kube-apiserver", (), True,
                                        server_hosts)
        self.ca_file = os.path.join(self.dir, "ca.crt")
        self.ca_only_file = os.path.join(self.dir, "ca-only.crt")
        self.server_cert_file = os.path.join(self.dir, "apiserver.crt")
        self.server_key_file = os.path.join(self.dir, "apiserver.key")
        bundle = pem_cert(ca_cert)
        if ca_bundle == "double":
            # A second, unrelated CA first in the bundle catches clients that load only the
            # first certificate of certificate-authority-data.
            _, decoy = make_ca("sbx-fake-cluster-unrelated-ca")
            bundle = pem_cert(decoy) + bundle
        _write(self.ca_file, bundle, 0o644)
        _write(self.ca_only_file, pem_cert(ca_cert), 0o644)
        _write(self.server_cert_file, pem_cert(server_cert))
        _write(self.server_key_file, pem_key(server_key))
        self.client = {}
        for identity in identities:
            key, cert = _leaf(ca_key, ca_cert, identity.name, identity.groups, False)
            cert_file = os.path.join(self.dir, "%s.crt" % identity.name)
            key_file = os.path.join(self.dir, "%s.key" % identity.name)
            _write(cert_file, pem_cert(cert))
            _write(key_file, pem_key(key))
            self.client[identity.name] = (cert_file, key_file)


def b64(data):
    return base64.b64encode(data).decode()
