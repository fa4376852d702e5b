"""HTTP layer: TLS, authentication, authorization, routing of the Kubernetes REST paths,
lists, watches, patches, subresources and the /_fake admin endpoints."""
import asyncio
import base64
import collections
import copy
import json
import logging
import random
import socket
import struct
import time
import uuid

import yaml
from aiohttp import web

from . import auth, errors, faults as faults_mod, kinds as kinds_mod, patch as patch_mod
from . import protobuf
from .selectors import (match_fields, match_requirements, parse_field_selector,
                        parse_label_selector)

log = logging.getLogger("fake-apiserver.http")

JSON = "application/json"
BOOKMARK_INTERVAL = 5.0
REQUEST_LOG_LIMIT = 2000
# The body of GET /_fake/blob is this chunk written again and again, so a body of any size
# costs the server one chunk of memory. 128 KiB is also the size of the exec's stdout reads.
BLOB_CHUNK = bytes(128 * 1024)


def _bool_param(value):
    """Convert a query value like the API server: absent, "0" or "false" are false."""
    if value is None:
        return False
    return value.lower() not in ("0", "false")


def json_response(body, status=200, headers=None):
    return web.Response(status=status, text=json.dumps(body), content_type=JSON,
                        headers=headers)


def status_response(error):
    headers = dict(error.headers)
    return json_response(error.status(), status=error.code, headers=headers)


class RequestInfo:
    """The resource, verb and scope of a request, resolved as the API server does."""

    def __init__(self):
        self.resource_request = False
        self.verb = ""
        self.kind = None
        self.group = ""
        self.version = ""
        self.plural = ""
        self.namespace = ""
        self.name = ""
        self.subresource = ""
        self.path = ""

    @property
    def resource(self):
        return "%s/%s" % (self.plural, self.subresource) if self.subresource else self.plural

    def as_dict(self, identity=None):
        return {"verb": self.verb, "resource": self.resource, "namespace": self.namespace,
                "name": self.name, "identity": identity.name if identity else "",
                "path": self.path}


class ApiServer:
    """The aiohttp application and everything it needs from the other modules."""

    def __init__(self, store, authenticator, faults, kube_version, kubelet=None,
                 controllers=None, bookmark_interval=BOOKMARK_INTERVAL):
        self.store = store
        self.kinds = store.kinds
        self.authenticator = authenticator
        self.faults = faults
        self.kube_version = kube_version
        self.kubelet = kubelet
        self.controllers = controllers
        self.bookmark_interval = bookmark_interval
        self.request_counts = collections.Counter()
        self.request_log = collections.deque(maxlen=REQUEST_LOG_LIMIT)
        self.token_files = {}
        self.active_streams = set()
        self.app = web.Application(middlewares=[self.middleware], client_max_size=64 << 20)
        self.app.router.add_route("*", "/{tail:.*}", self.dispatch)

    @property
    def minor_version(self):
        return int(self.kube_version.split(".")[1])

    # --- request info -------------------------------------------------------------------

    def resolve(self, request):
        info = RequestInfo()
        info.path = request.path
        parts = [p for p in request.path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return info
        if not rest:
            return info

        watch_path = False
        if rest[0] == "watch":
            watch_path = True
            rest = rest[1:]

        namespace = ""
        if rest and rest[0] == "namespaces" and len(rest) >= 3 and \
                not (len(rest) == 3 and rest[2] in ("status", "finalize")):
            namespace = rest[1]
            rest = rest[2:]
        if not rest:
            return info

        info.resource_request = True
        info.group, info.version, info.plural = group, version, rest[0]
        info.namespace = namespace
        info.name = rest[1] if len(rest) > 1 else ""
        info.subresource = "/".join(rest[2:])
        kind = self.kinds.get((group, info.plural))
        if kind is not None and kind.version == version:
            info.kind = kind
            if not kind.namespaced:
                info.namespace = ""

        method = request.method
        watch = watch_path or _bool_param(request.query.get("watch"))
        if method == "GET":
            if info.name and not info.subresource and watch:
                info.verb = "watch"
            elif info.name:
                info.verb = "get"
            else:
                info.verb = "watch" if watch else "list"
        elif method == "POST":
            info.verb = "create"
        elif method == "PUT":
            info.verb = "update"
        elif method == "PATCH":
            info.verb = "patch"
        elif method == "DELETE":
            info.verb = "delete" if info.name else "deletecollection"
        else:
            info.verb = method.lower()
        return info

    # --- middleware: count, authenticate, faults, authorize -----------------------------

    def identify(self, request):
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return self.authenticator.from_token(header[len("Bearer "):].strip())
        peercert = request.transport.get_extra_info("peercert") if request.transport else None
        return self.authenticator.from_certificate(peercert)

    @web.middleware
    async def middleware(self, request, handler):
        info = self.resolve(request)
        request["info"] = info
        audit_id = str(uuid.uuid4())
        started = time.monotonic()
        key = "%s %s" % (info.verb, info.resource) if info.resource_request else \
            "%s %s" % (request.method.lower(), request.path)
        if not request.path.startswith("/_fake/"):
            self.request_counts[key] += 1
        entry = {"method": request.method, "path": request.path_qs, "verb": info.verb,
                 "resource": info.resource, "namespace": info.namespace, "name": info.name,
                 "time": time.time()}
        try:
            response = await self._guarded(request, handler, info, entry)
        except errors.ApiError as error:
            response = status_response(error)
        if response is not None and not response.prepared:
            response.headers.setdefault("Audit-Id", audit_id)
            response.headers.setdefault("X-Kubernetes-Pf-Flowschema-Uid", str(uuid.uuid4()))
            response.headers.setdefault("X-Kubernetes-Pf-Prioritylevel-Uid", str(uuid.uuid4()))
        entry["code"] = getattr(response, "status", 0)
        entry["ms"] = round((time.monotonic() - started) * 1000, 1)
        if not request.path.startswith("/_fake/"):
            self.request_log.append(entry)
        log.debug("%s %s -> %s", request.method, request.path_qs, entry["code"])
        return response

    async def _guarded(self, request, handler, info, entry):
        identity = self.identify(request)
        request["identity"] = identity
        entry["identity"] = identity.name if identity else ""
        if identity is None:
            raise errors.ApiError(401, "Unauthorized", "Unauthorized")
        fault_info = info.as_dict(identity)
        if not request.path.startswith("/_fake/"):
            latency = self.faults.take("latency", fault_info)
            if latency:
                await asyncio.sleep(latency["ms"] / 1000.0)
            if self.faults.take("reset", fault_info):
                self._reset(request)
                return web.Response(status=500)
            injected = self.faults.take("status", fault_info)
            if injected:
                return self._injected_response(injected)
        self._authorize(request, info, identity)
        warning = None
        if not request.path.startswith("/_fake/"):
            warning = self.faults.take("warning", fault_info)
        response = await handler(request)
        if warning and response is not None and not response.prepared:
            text = warning["text"].replace("\\", "\\\\").replace('"', '\\"')
            response.headers.add("Warning", '299 - "%s"' % text)
        return response

    def _reset(self, request):
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport else None
        if sock is not None:
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if transport:
            transport.abort()

    def _injected_response(self, fault):
        code = fault["code"]
        headers = {}
        if fault.get("retryAfter") is not None:
            headers["Retry-After"] = str(fault["retryAfter"])
        content_type = fault.get("contentType", "json")
        if content_type == "text":
            # The API Priority and Fairness filter returns 429 in plain text.
            text = fault.get("message", "Too many requests, please try again later.\n")
            return web.Response(status=code, text=text, content_type="text/plain",
                                headers=headers)
        if content_type == "html":
            text = fault.get("message", "<html><body><h1>%d Bad Gateway</h1></body></html>"
                             % code)
            return web.Response(status=code, text=text, content_type="text/html",
                                headers=headers)
        reasons = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                   409: "Conflict", 410: "Expired", 422: "Invalid", 429: "TooManyRequests",
                   500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}
        details = None
        if fault.get("retryAfter") is not None:
            details = {"retryAfterSeconds": int(fault["retryAfter"])}
        error = errors.ApiError(code, fault.get("reason", reasons.get(code, "InternalError")),
                                fault.get("message", "injected failure"), details, headers)
        return status_response(error)

    def _authorize(self, request, info, identity):
        if request.path.startswith("/_fake/"):
            if not identity.admin:
                raise errors.forbidden('User "%s" cannot use the test endpoints; they need '
                                       'the group %s' % (identity.name, auth.ADMIN_GROUP))
            return
        if not info.resource_request:
            if not auth.authorize_non_resource(identity, "get", request.path):
                raise errors.forbidden('forbidden: User "%s" cannot get path "%s"'
                                       % (identity.name, request.path))
            return
        verbs = [info.verb]
        if info.subresource in ("exec", "attach", "portforward") and request.method == "GET" \
                and self.minor_version >= 35:
            # Since 1.35 a WebSocket upgrade of pods/exec also needs "create".
            verbs.append("create")
        for verb in verbs:
            allowed, _ = auth.authorize(identity, verb, info.group, info.resource,
                                        info.namespace, info.name)
            if allowed:
                continue
            group_text = info.group
            where = ' in the namespace "%s"' % info.namespace if info.namespace else \
                " at the cluster scope"
            subject = '%s "%s"' % (info.resource if not info.group else
                                   "%s.%s" % (info.resource, info.group), info.name) \
                if info.name else info.resource
            raise errors.forbidden(
                '%s is forbidden: User "%s" cannot %s resource "%s" in API group "%s"%s'
                % (subject, identity.name, verb, info.resource, group_text, where),
                {"name": info.name, "group": info.group, "kind": info.plural}
                if info.name else {"group": info.group, "kind": info.plural})

    # --- dispatch -----------------------------------------------------------------------

    async def dispatch(self, request):
        path = request.path
        info = request["info"]
        if path.startswith("/_fake/"):
            return await self.admin(request)
        if path == "/version":
            major, minor, patch_level = self.kube_version.split(".")
            return json_response({
                "major": major, "minor": minor, "gitVersion": "v" + self.kube_version,
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean", "buildDate": "2025-06-01T00:00:00Z",
                "goVersion": "go1.24.0", "compiler": "gc", "platform": "linux/amd64"})

        if path in ("/healthz", "/readyz", "/livez"):
            return web.Response(text="ok")
        if path == "/api":
            return json_response({"kind": "APIVersions", "versions": ["v1"],
                                  "serverAddressByClientCIDRs": [
                                      {"clientCIDR": "0.0.0.0/0",
                                       "serverAddress": request.host}]})
        if path == "/apis":
            return json_response(kinds_mod.api_group_list(self.kinds))
        if path == "/openapi/v2":
            # An empty protobuf message is a valid, empty OpenAPI v2 document; kubectl then
            # skips client-side schema validation and relies on the v3 documents below.
            return web.Response(body=b"", content_type="application/com.github.proto-openapi"
                                ".spec.v2.v1.0+protobuf")
        if path == "/openapi/v3":
            return json_response(kinds_mod.openapi_v3_root(self.kinds))
        if path.startswith("/openapi/v3/"):
            rest = path[len("/openapi/v3/"):].split("/")
            if len(rest) == 2 and rest[0] == "api":
                return json_response(kinds_mod.openapi_v3_document(self.kinds, "", rest[1]))
            if len(rest) == 3 and rest[0] == "apis":
                return json_response(kinds_mod.openapi_v3_document(self.kinds, rest[1],
                                                                   rest[2]))

        parts = [p for p in path.split("/") if p]
        if not info.resource_request:
            versions = kinds_mod.group_versions(self.kinds)
            if len(parts) == 2 and parts[0] == "api" and parts[1] == "v1":
                return json_response(kinds_mod.api_resource_list(self.kinds, "", "v1"))
            if len(parts) == 2 and parts[0] == "apis" and parts[1] in versions:
                group = parts[1]
                entries = [{"groupVersion": "%s/%s" % (group, v), "version": v}
                           for v in versions[group]]
                return json_response({"kind": "APIGroup", "apiVersion": "v1", "name": group,
                                      "versions": entries, "preferredVersion": entries[0]})
            if len(parts) == 3 and parts[0] == "apis" and parts[2] in versions.get(parts[1], []):
                return json_response(kinds_mod.api_resource_list(self.kinds, parts[1],
                                                                 parts[2]))
            raise errors.ApiError(404, "NotFound", "the server could not find the requested "
                                  "resource", {})
        if info.kind is None:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested "
                                  "resource", {})
        return await self.resource(request, info)

    async def resource(self, request, info):
        kind = info.kind
        if info.verb not in kind.verbs and not info.subresource:
            raise errors.method_not_allowed()
        if info.subresource:
            return await self.subresource(request, info)

        if info.verb == "list":
            return self.list(request, info)
        if info.verb == "watch":
            return await self.watch(request, info)
        if info.verb == "get":
            obj = self.store.get(kind.key, info.namespace, info.name)
            if kinds_mod.wants_table(request.headers.get("Accept")):
                return json_response(kinds_mod.table(
                    kind, [obj], request.query.get("includeObject", "Metadata"),
                    obj["metadata"]["resourceVersion"]))
            return self.respond_object(obj)

        if info.verb == "create":
            return await self.create(request, info)
        if info.verb == "update":
            body = await self.read_body(request)
            obj = self.store.update(kind.key, info.namespace, info.name, body,
                                    dry_run=self.dry_run(request))
            return self.respond_object(obj)
        if info.verb == "patch":
            return await self.patch(request, info)
        if info.verb == "delete":
            return await self.delete(request, info)
        if info.verb == "deletecollection":
            return await self.delete_collection(request, info)
        raise errors.method_not_allowed()

    # --- helpers ------------------------------------------------------------------------

    @staticmethod
    def dry_run(request):
        return "All" in request.query.getall("dryRun", [])

    async def read_body(self, request, yaml_ok=False):
        raw = await request.read()
        if not raw:
            raise errors.bad_request("the request body is empty")
        if request.headers.get("Content-Type", "").startswith(protobuf.CONTENT_TYPE):
            return protobuf.decode(raw)
        try:
            if yaml_ok:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as error:
            raise errors.bad_request("the request body is not valid %s: %s"
                                     % ("YAML" if yaml_ok else "JSON", error)) from None

    def respond_object(self, obj, status=200):
        return json_response(obj, status=status)

    # --- create -------------------------------------------------------------------------

    async def create(self, request, info):
        kind = info.kind
        body = await self.read_body(request)
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be a JSON object")
        if body.get("kind") not in (None, kind.kind):
            raise errors.bad_request('the kind "%s" of the body does not match the resource '
                                     '"%s" of the URL (expected kind "%s")'
                                     % (body.get("kind"), kind.plural, kind.kind))
        if kind.key == ("authorization.k8s.io", "selfsubjectaccessreviews"):
            return self.access_review(request, body)
        if kind.key == ("authorization.k8s.io", "selfsubjectrulesreviews"):
            return self.rules_review(request, body)
        if kind.key == ("authentication.k8s.io", "selfsubjectreviews"):
            identity = request["identity"]
            return json_response({"kind": "SelfSubjectReview",
                                  "apiVersion": "authentication.k8s.io/v1",
                                  "metadata": {"creationTimestamp": None},
                                  "status": {"userInfo": {"username": identity.name,
                                                          "groups": identity.groups +
                                                          ["system:authenticated"]}}},
                                 status=201)
        obj = self.store.create(kind.key, info.namespace, body, dry_run=self.dry_run(request))
        return self.respond_object(obj, status=201)

    def access_review(self, request, body):
        causes = kinds_mod.validate_access_review(body, None)
        if causes:
            raise errors.invalid("authorization.k8s.io", "SelfSubjectAccessReview", "", causes)
        identity = request["identity"]
        spec = body.get("spec") or {}
        attributes = spec.get("resourceAttributes")
        if attributes:
            resource = attributes.get("resource", "")
            if attributes.get("subresource"):
                resource += "/" + attributes["subresource"]
            allowed, reason = auth.authorize(identity, attributes.get("verb", ""),
                                             attributes.get("group", ""), resource,
                                             attributes.get("namespace", ""),
                                             attributes.get("name", ""))
        else:
            attributes = spec["nonResourceAttributes"]
            allowed = auth.authorize_non_resource(identity, attributes.get("verb", ""),
                                                  attributes.get("path", ""))
            reason = ""
        status = {"allowed": allowed}
        if allowed:
            status["reason"] = reason
        else:
            status["denied"] = False
        result = copy.deepcopy(body)
        result.update({"kind": "SelfSubjectAccessReview",
                       "apiVersion": "authorization.k8s.io/v1", "status": status})
        result.setdefault("metadata", {})["creationTimestamp"] = None
        return json_response(result, status=201)

    def rules_review(self, request, body):
        identity = request["identity"]
        if identity.admin:
            rules = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]
        else:
            rules = [{"verbs": r.get("verbs", []), "apiGroups": r.get("apiGroups", ["*"]),
                      "resources": r.get("resources", ["*"])} for r in identity.rules]
        result = copy.deepcopy(body)
        result.update({"kind": "SelfSubjectRulesReview",
                       "apiVersion": "authorization.k8s.io/v1",
                       "status": {"resourceRules": rules, "nonResourceRules": [
                           {"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis",
                                                                  "/apis/*", "/version"]}],
                                  "incomplete": False}})
        return json_response(result, status=201)

    # --- list ---------------------------------------------------------------------------

    def selector_predicate(self, request, kind):
        labels = parse_label_selector(request.query.get("labelSelector"))
        fields = parse_field_selector(request.query.get("fieldSelector"), kind.field_selectors)

        def predicate(obj):
            return match_requirements(labels, obj["metadata"].get("labels")) and \
                match_fields(fields, obj)
        return predicate

    def list(self, request, info):
        kind = info.kind
        predicate = self.selector_predicate(request, kind)

        rv_param = request.query.get("resourceVersion")
        if rv_param and request.query.get("resourceVersionMatch") == "Exact":
            if self._parse_rv(rv_param) != self.store.rv:
                raise errors.gone("too old resource version: %s (%d)" % (rv_param,
                                                                         self.store.rv))

        items, rv = self.store.list(kind.key, info.namespace or None, predicate)
        start_after = None
        token = request.query.get("continue")
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
                token_rv, start_after = int(decoded["rv"]), decoded["start"]
            except (ValueError, KeyError, TypeError):
                raise errors.bad_request('continue key is not valid: "%s"' % token) from None
            if self.faults.take("continue-expire", info.as_dict(request["identity"])) or \
                    self.store.is_expired(token_rv):
                raise errors.ApiError(
                    410, "Expired", "The provided continue parameter is too old to display a "
                    "consistent list result. You can start a new list without the continue "
                    "parameter.")
            rv = token_rv
            items = [i for i in items if self._item_key(i) > start_after]

        metadata = {"resourceVersion": str(rv)}
        limit = request.query.get("limit")
        if limit and int(limit) > 0 and len(items) > int(limit):
            remaining = len(items) - int(limit)
            items = items[:int(limit)]
            metadata["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"rv": rv, "start": self._item_key(items[-1])}).encode()).decode()
            metadata["remainingItemCount"] = remaining
        if kinds_mod.wants_table(request.headers.get("Accept")):
            result = kinds_mod.table(kind, items, request.query.get("includeObject", "Metadata"),
                                     rv)
            result["metadata"].update(metadata)
            return json_response(result)
        if kind.builtin:
            for item in items:
                item.pop("kind", None)
                item.pop("apiVersion", None)
        return json_response({"kind": kind.kind + "List", "apiVersion": kind.api_version,
                              "metadata": metadata, "items": items})

    @staticmethod
    def _item_key(obj):
        return "%s/%s" % (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])

    @staticmethod
    def _parse_rv(text):
        try:
            return int(text)
        except (TypeError, ValueError):
            raise errors.bad_request('invalid resource version "%s"' % text) from None

    # --- watch --------------------------------------------------------------------------

    async def watch(self, request, info):
        kind = info.kind
        identity = request["identity"]
        fault_info = info.as_dict(identity)
        predicate = self.selector_predicate(request, kind)
        if info.name:
            base_predicate = predicate

            def predicate(obj):
                return obj["metadata"]["name"] == info.name and base_predicate(obj)
        rv_param = request.query.get("resourceVersion")
        timeout = request.query.get("timeoutSeconds")
        timeout = float(timeout) if timeout else random.uniform(1800, 3600)
        bookmarks = _bool_param(request.query.get("allowWatchBookmarks"))
        send_initial = _bool_param(request.query.get("sendInitialEvents"))
        namespace = info.namespace or None

        queue = asyncio.Queue()

        def on_event(event):
            if event.kind_key == kind.key and (namespace is None or
                                               event.namespace == namespace):
                queue.put_nowait(event)

        initial = []
        too_old = None
        start_rv = None
        if rv_param in (None, "", "0") or send_initial:
            items, _ = self.store.list(kind.key, namespace, predicate)
            initial = [("ADDED", item) for item in items]
        else:
            start_rv = self._parse_rv(rv_param)
            if self.store.is_expired(start_rv):
                too_old = start_rv
            else:
                for event in self.store.history:
                    if event.rv > start_rv and event.kind_key == kind.key and \
                            (namespace is None or event.namespace == namespace):
                        queue.put_nowait(event)
        self.store.subscribe(on_event)
        try:
            if too_old is not None:
                expire = self.faults.peek("expire-rv", fault_info) or {}
                message = "too old resource version: %d (%d)" % (too_old, self.store.rv)
                if expire.get("mode") == "http":
                    raise errors.gone(message)
            response = web.StreamResponse(status=200, headers={"Content-Type": JSON})
            response.enable_chunked_encoding()
            response.headers["Audit-Id"] = str(uuid.uuid4())
            await response.prepare(request)
            stream = WatchStream(self, request, response, kind, fault_info)
            self.active_streams.add(stream)
            try:
                if too_old is not None:
                    await stream.send({"type": "ERROR", "object": errors.gone(
                        message).status()})
                    return await stream.finish()
                for type_, obj in initial:
                    await stream.send({"type": type_, "object": obj})
                if send_initial and bookmarks:
                    await stream.send({"type": "BOOKMARK", "object": self._bookmark(
                        kind, {"k8s.io/initial-events-end": "true"})})
                await self._pump(stream, queue, predicate, timeout, bookmarks)
                return await stream.finish()
            finally:
                self.active_streams.discard(stream)
        finally:
            self.store.unsubscribe(on_event)

    def _bookmark(self, kind, annotations=None):
        metadata = {"resourceVersion": str(self.store.rv)}
        if annotations:
            metadata["annotations"] = annotations
        return {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": metadata}

    async def _pump(self, stream, queue, predicate, timeout, bookmarks):
        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + self.bookmark_interval
        while not stream.closed:
            now = time.monotonic()
            if now >= deadline:
                return
            wait = deadline - now
            if bookmarks:
                wait = min(wait, max(0.0, next_bookmark - now))
            try:
                event = await asyncio.wait_for(queue.get(), timeout=wait)
            except asyncio.TimeoutError:
                if bookmarks and time.monotonic() >= next_bookmark:
                    await stream.send({"type": "BOOKMARK",
                                       "object": self._bookmark(stream.kind)})
                    next_bookmark = time.monotonic() + self.bookmark_interval
                continue
            batch = [event]
            while not queue.empty():
                batch.append(queue.get_nowait())
            lines = []
            for event in batch:
                converted = self._convert_event(event, predicate)
                if converted:
                    lines.append(converted)
            if lines:
                await stream.send_many(lines)

    @staticmethod
    def _convert_event(event, predicate):
        """Turn a store event into a watch event for this selector, or None.

        An object that starts or stops matching the selector shows up as ADDED or DELETED,
        as the watch cache does.
        """
        now_matches = predicate(event.obj)
        if event.type == "ADDED":
            return {"type": "ADDED", "object": event.obj} if now_matches else None
        if event.type == "DELETED":
            return {"type": "DELETED", "object": event.obj} if now_matches or \
                (event.old is not None and predicate(event.old)) else None
        was_matching = event.old is not None and predicate(event.old)
        if now_matches and was_matching:
            return {"type": "MODIFIED", "object": event.obj}
        if now_matches:
            return {"type": "ADDED", "object": event.obj}
        if was_matching:
            return {"type": "DELETED", "object": event.obj}
        return None

    # --- patch --------------------------------------------------------------------------

    async def patch(self, request, info, subresource=None):
        kind = info.kind
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        dry_run = self.dry_run(request)
        if content_type == "application/apply-patch+yaml":
            return await self.apply(request, info, subresource)

        body = await self.read_body(request)
        existing = self.store.get(kind.key, info.namespace, info.name)
        if content_type == "application/merge-patch+json":
            patched = patch_mod.merge_patch(existing, body)
        elif content_type == "application/json-patch+json":
            patched = patch_mod.json_patch(existing, body)
        elif content_type == "application/strategic-merge-patch+json":
            if not kind.builtin:
                raise errors.unsupported_media_type(content_type)
            patched = patch_mod.strategic_merge_patch(existing, body)
        else:
            raise errors.unsupported_media_type(content_type or "<none>")

        if not isinstance(patched, dict):
            raise errors.bad_request("the patch did not produce a JSON object")
        patched.setdefault("metadata", {})
        if isinstance(body, dict) and (body.get("metadata") or {}).get("resourceVersion"):
            # A resourceVersion in a merge patch is an optimistic-concurrency precondition.
            patched["metadata"]["resourceVersion"] = body["metadata"]["resourceVersion"]
        elif patched["metadata"].get("resourceVersion") != \
                existing["metadata"]["resourceVersion"]:
            pass
        else:
            patched["metadata"].pop("resourceVersion", None)
        obj = self.store.update(kind.key, info.namespace, info.name, patched,
                                subresource=subresource, dry_run=dry_run)
        return self.respond_object(obj)

    async def apply(self, request, info, subresource=None):
        kind = info.kind
        manager = request.query.get("fieldManager")
        if not manager:
            raise errors.invalid("", "PatchOptions", "", [errors.cause(
                "fieldManager", "Required value: is required for apply patch",
                "FieldValueRequired")])

        body = await self.read_body(request, yaml_ok=True)
        if not isinstance(body, dict):
            raise errors.bad_request("the apply configuration must be an object")
        for field in ("apiVersion", "kind"):
            if not body.get(field):
                raise errors.bad_request("%s must be set in the apply configuration" % field)
        if (body.get("metadata") or {}).get("managedFields"):
            raise errors.bad_request("metadata.managedFields must be nil in an apply "
                                     "configuration")
        metadata = body.setdefault("metadata", {})
        if metadata.get("name") not in (None, info.name):
            raise errors.bad_request("the name of the object (%s) does not match the name on "
                                     "the URL (%s)" % (metadata.get("name"), info.name))
        metadata["name"] = info.name

        entry = {"manager": manager, "operation": "Apply", "apiVersion": kind.api_version,
                 "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "fieldsType": "FieldsV1", "fieldsV1": {}}
        existing = self.store.find(kind.key, info.namespace, info.name)
        dry_run = self.dry_run(request)
        if existing is None:
            if subresource:
                raise errors.not_found(kind.group, kind.plural, info.name)
            body["metadata"]["managedFields"] = [entry]
            obj = self.store.create(kind.key, info.namespace, body, dry_run=dry_run)
            return self.respond_object(obj, status=201)

        merged = patch_mod.apply_merge(existing, body)
        fields = [m for m in merged["metadata"].get("managedFields") or []
                  if m.get("manager") != manager]
        merged["metadata"]["managedFields"] = fields + [entry]
        merged["metadata"].pop("resourceVersion", None)
        if body["metadata"].get("resourceVersion"):
            merged["metadata"]["resourceVersion"] = body["metadata"]["resourceVersion"]
        obj = self.store.update(kind.key, info.namespace, info.name, merged,
                                subresource=subresource, dry_run=dry_run)
        return self.respond_object(obj)

    # --- delete -------------------------------------------------------------------------

    async def delete_options(self, request):
        options = {}
        raw = await request.read()
        if raw:
            try:
                options = json.loads(raw)
            except ValueError:
                raise errors.bad_request("DeleteOptions body is not valid JSON") from None
        query = request.query
        if "propagationPolicy" in query:
            options["propagationPolicy"] = query["propagationPolicy"]
        if "gracePeriodSeconds" in query:
            try:
                options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
            except ValueError:
                raise errors.bad_request("gracePeriodSeconds must be an integer") from None
        if "orphanDependents" in query:
            options["orphanDependents"] = _bool_param(query["orphanDependents"])
        if options.get("gracePeriodSeconds") is not None and options["gracePeriodSeconds"] < 0:
            options["gracePeriodSeconds"] = 0
        return options

    async def delete(self, request, info):
        kind = info.kind
        options = await self.delete_options(request)
        obj, removed = self.store.delete(kind.key, info.namespace, info.name, options,
                                         dry_run=self.dry_run(request))
        if removed and kind.builtin and kind.key != ("", "pods"):
            return json_response(errors.success_status({
                "name": info.name, "group": kind.group, "kind": kind.plural,
                "uid": obj["metadata"]["uid"]}))
        return self.respond_object(obj)

    async def delete_collection(self, request, info):
        kind = info.kind
        options = await self.delete_options(request)
        predicate = self.selector_predicate(request, kind)
        items, _ = self.store.list(kind.key, info.namespace or None, predicate)
        deleted = []
        for item in items:
            meta = item["metadata"]
            try:
                obj, _ = self.store.delete(kind.key, meta.get("namespace", ""), meta["name"],
                                           options, dry_run=self.dry_run(request))
                deleted.append(obj)
            except errors.ApiError as error:
                if error.code != 404:
                    raise
        return json_response({"kind": kind.kind + "List", "apiVersion": kind.api_version,
                              "metadata": {"resourceVersion": str(self.store.rv)},
                              "items": deleted})

    # --- subresources -------------------------------------------------------------------

    async def subresource(self, request, info):
        kind = info.kind
        sub = info.subresource
        if sub not in kind.subresources:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested "
                                  "resource", {})
        if sub == "status":
            if request.method == "GET":
                return self.respond_object(self.store.get(kind.key, info.namespace, info.name))
            if request.method == "PUT":
                body = await self.read_body(request)
                return self.respond_object(self.store.update(
                    kind.key, info.namespace, info.name, body, subresource="status",
                    dry_run=self.dry_run(request)))
            if request.method == "PATCH":
                return await self.patch(request, info, subresource="status")
            raise errors.method_not_allowed()
        if sub == "scale":
            return await self.scale(request, info)
        if sub == "finalize" and request.method == "PUT":
            body = await self.read_body(request)
            return self.respond_object(self.controllers.finalize_namespace(info.name, body))
        if sub == "eviction" and request.method == "POST":
            body = await self.read_body(request)
            return self.controllers.evict(info.namespace, info.name, body)
        if sub == "log" and request.method == "GET":
            return await self.kubelet.logs(request, info.namespace, info.name)
        if sub == "exec" and request.method in ("GET", "POST"):
            return await self.kubelet.exec_request(request, info)
        if sub in ("attach", "portforward"):
            raise errors.bad_request("pods/%s is not supported by this test server" % sub)
        raise errors.method_not_allowed()

    async def scale(self, request, info):
        kind = info.kind
        obj = self.store.get(kind.key, info.namespace, info.name)

        def scale_object(obj):
            return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                    "metadata": {"name": obj["metadata"]["name"],
                                 "namespace": obj["metadata"]["namespace"],
                                 "uid": obj["metadata"]["uid"],
                                 "resourceVersion": obj["metadata"]["resourceVersion"],
                                 "creationTimestamp": obj["metadata"]["creationTimestamp"]},
                    "spec": {"replicas": obj["spec"].get("replicas", 0)},
                    "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                               "selector": (obj.get("status") or {}).get("selector", "")}}
        if request.method == "GET":
            return json_response(scale_object(obj))
        body = await self.read_body(request)
        if request.method == "PATCH":
            body = patch_mod.merge_patch(scale_object(obj), body)
        replicas = (body.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise errors.invalid("autoscaling", "Scale", info.name, [errors.cause(
                "spec.replicas", "Invalid value: %r: must be greater than or equal to 0"
                % (replicas,))])
        sent_rv = (body.get("metadata") or {}).get("resourceVersion")
        if sent_rv and sent_rv != obj["metadata"]["resourceVersion"]:
            raise errors.conflict(kind.group, kind.plural, info.name)
        obj["spec"]["replicas"] = replicas
        obj["metadata"].pop("resourceVersion", None)
        updated = self.store.update(kind.key, info.namespace, info.name, obj)
        return json_response(scale_object(updated))

    # --- admin endpoints ----------------------------------------------------------------

    async def admin(self, request):
        path = request.path
        if path == "/_fake/requests":
            if request.method == "DELETE":
                self.request_counts.clear()
                self.request_log.clear()
                return json_response({"cleared": True})
            return json_response({"counts": dict(self.request_counts),
                                  "total": sum(self.request_counts.values()),
                                  "log": list(self.request_log)})
        if path == "/_fake/faults":
            if request.method == "GET":
                return json_response({"faults": self.faults.snapshot()})
            if request.method == "DELETE":
                self.faults.clear()
                return json_response({"faults": []})
            if request.method == "POST":
                body = await self.read_body(request)
                items = body.get("faults") if isinstance(body, dict) and "faults" in body \
                    else body
                if isinstance(items, dict):
                    items = [items]
                try:
                    self.apply_faults(items, replace=bool(isinstance(body, dict) and
                                                          body.get("replace")))
                except faults_mod.FaultError as error:
                    raise errors.bad_request(str(error)) from None
                return json_response({"faults": self.faults.snapshot(),
                                      "resourceVersion": str(self.store.rv)})
        if path.startswith("/_fake/tokens/") and path.endswith("/rotate") and \
                request.method == "POST":
            name = path[len("/_fake/tokens/"):-len("/rotate")]
            if name not in self.authenticator.identities:
                raise errors.not_found("", "identities", name)
            token = self.authenticator.rotate_token(name)
            token_file = self.token_files.get(name)
            if token_file:
                auth._write(token_file, token.encode())
            return json_response({"identity": name, "tokenFile": token_file})
        if path == "/_fake/pods" and request.method == "GET":
            return json_response({"pods": self.kubelet.describe() if self.kubelet else []})
        if path == "/_fake/state" and request.method == "GET":
            return json_response({
                "resourceVersion": str(self.store.rv),
                "expiredBefore": str(self.store.expired_before),
                "network": self.kubelet.network_info() if self.kubelet else None})
        if path == "/_fake/blob" and request.method == "GET":
            return await self.blob(request)
        raise errors.ApiError(404, "NotFound", "unknown test endpoint %s" % path)

    async def blob(self, request):
        """Stream `size` zero bytes (default 1 GiB) with a Content-Length: a bulk transfer
        over this server's TLS without pods or WebSocket framing, as a throughput baseline."""
        text = request.query.get("size", str(1 << 30))
        if not text.isdigit():
            raise errors.bad_request('size "%s" is invalid; use a number of bytes' % text)
        left = int(text)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = left
        await response.prepare(request)
        chunk = memoryview(BLOB_CHUNK)
        while left > 0:
            part = chunk[:min(left, len(chunk))]
            await response.write(part)
            left -= len(part)
        await response.write_eof()
        return response

    def apply_faults(self, items, replace=False):
        for fault in items:
            faults_mod.validate(fault)
        if replace:
            self.faults.clear()
        persistent = []
        for fault in items:
            if fault["type"] == "expire-rv":
                before = self.store.rv + 1 if fault["before"] == "current" else \
                    int(fault["before"])
                self.store.expire(before)
                persistent.append(dict(fault, times=1 << 30))
            elif fault["type"] == "token-expire":
                identity = self.authenticator.identities.get(fault["identity"])
                if identity is None:
                    raise faults_mod.FaultError('identity "%s" is unknown'
                                                % fault["identity"])
                identity.requests_left = int(fault.get("afterRequests", 0))
            else:
                persistent.append(fault)
        self.faults.add(persistent)

    async def close_streams(self):
        for stream in list(self.active_streams):
            stream.closed = True


class WatchStream:
    """One watch response: writes newline-delimited events and applies watch faults."""

    def __init__(self, server, request, response, kind, fault_info):
        self.server = server
        self.request = request
        self.response = response
        self.kind = kind
        self.fault_info = fault_info
        self.sent = 0
        self.closed = False
        drop = server.faults.take("watch-drop", fault_info)
        self.drop_after = int(drop.get("afterEvents", 1)) if drop else None
        self.split = server.faults.take("watch-split", fault_info) is not None
        self.table = kinds_mod.wants_table(request.headers.get("Accept"))
        self.include_object = request.query.get("includeObject", "Metadata")

    async def send(self, event):
        await self.send_many([event])

    async def send_many(self, events):
        if self.closed:
            return
        payload = bytearray()
        for event in events:
            if self.drop_after is not None and self.sent >= self.drop_after:
                break
            if self.table and event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                event = {"type": event["type"], "object": kinds_mod.table(
                    self.kind, [event["object"]], self.include_object)}
            payload += json.dumps(event).encode() + b"\n"
            self.sent += 1
        try:
            if payload:
                if self.split:
                    # Cut the bytes at random points so events span several chunks.
                    position = 0
                    while position < len(payload):
                        step = random.randint(1, max(1, len(payload) // 3))
                        await self.response.write(bytes(payload[position:position + step]))
                        position += step
                else:
                    await self.response.write(bytes(payload))
        except (ConnectionResetError, RuntimeError):
            self.closed = True
            return
        if self.drop_after is not None and self.sent >= self.drop_after:
            # Abort mid-stream: no terminating zero-length chunk reaches the client.
            self.closed = True
            if self.request.transport:
                self.request.transport.abort()

    async def finish(self):
        if not self.closed:
            try:
                await self.response.write_eof()
            except (ConnectionResetError, RuntimeError):
                pass
        return self.response
