"""The object store: one global resourceVersion counter, bounded event history for watches,
finalizers, graceful pod deletion and the ownerReference garbage collector."""
import collections
import copy
import datetime
import logging
import random
import uuid

from . import errors
from .kinds import validate_metadata, validate_name

log = logging.getLogger("fake-apiserver.store")

GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
HISTORY_LIMIT = 20000


def now_rfc3339(offset_seconds=0):
    moment = datetime.datetime.now(datetime.timezone.utc) + \
        datetime.timedelta(seconds=offset_seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class Event:
    """One change: ADDED, MODIFIED or DELETED of an object at a resourceVersion."""

    __slots__ = ("rv", "type", "kind_key", "namespace", "name", "obj", "old")

    def __init__(self, rv, type_, kind_key, namespace, name, obj, old):
        self.rv = rv
        self.type = type_
        self.kind_key = kind_key
        self.namespace = namespace
        self.name = name
        self.obj = obj
        self.old = old


class Store:
    """In-memory objects of every kind. All methods are synchronous and run on the event loop
    thread, so each one is atomic with respect to watches and controllers."""

    def __init__(self, kinds, rv_step=1):
        self.kinds = kinds
        self.rv = 100
        self.rv_step = rv_step
        self.objects = {key: {} for key in kinds}
        self.uids = {}
        self.history = collections.deque(maxlen=HISTORY_LIMIT)
        self.oldest_rv = self.rv
        # Watches and lists that ask for a resourceVersion below this get 410 Gone.
        self.expired_before = 0
        self.subscribers = []
        self.gc_scheduler = None
        self.create_hooks = {}
        self.update_hooks = {}

    # --- helpers ------------------------------------------------------------------------

    def kind(self, key):
        return self.kinds[key]

    def next_rv(self):
        self.rv += self.rv_step
        return self.rv

    def subscribe(self, callback):
        self.subscribers.append(callback)
        return callback

    def unsubscribe(self, callback):
        if callback in self.subscribers:
            self.subscribers.remove(callback)

    def _emit(self, type_, kind, obj, old):
        meta = obj["metadata"]
        event = Event(int(meta["resourceVersion"]), type_, kind.key, meta.get("namespace", ""),
                      meta["name"], copy.deepcopy(obj), old)
        if len(self.history) == self.history.maxlen:
            self.oldest_rv = self.history[0].rv
        self.history.append(event)
        for callback in list(self.subscribers):
            try:
                callback(event)
            except Exception:  # a broken subscriber must not break the write
                log.exception("watch subscriber failed on %s %s", type_, meta["name"])
        if type_ == "DELETED" or meta.get("deletionTimestamp") or \
                (type_ == "MODIFIED" and old is not None and
                 old["metadata"].get("ownerReferences") != meta.get("ownerReferences")):
            self.schedule_gc()

    def schedule_gc(self):
        if self.gc_scheduler:
            self.gc_scheduler()

    def expire(self, before_rv):
        """Make every resourceVersion older than before_rv return 410 Gone."""
        self.expired_before = max(self.expired_before, int(before_rv))

    def is_expired(self, rv):
        return rv < self.expired_before or rv < self.oldest_rv - 1

    def _check_namespace(self, kind, namespace, creating):
        if not kind.namespaced:
            return
        ns = self.objects[("", "namespaces")].get(("", namespace))
        if ns is None:
            raise errors.not_found("", "namespaces", namespace)
        if creating and ns["metadata"].get("deletionTimestamp"):
            raise errors.ApiError(
                403, "Forbidden", "%s \"%s\" is forbidden: unable to create new content in "
                "namespace %s because it is being terminated" % (kind.plural, "", namespace),
                {"kind": kind.plural, "causes": [{"reason": "NamespaceTerminating",
                                                  "message": "namespace %s is being terminated"
                                                  % namespace,
                                                  "field": "metadata.namespace"}]})

    def _typed(self, kind, obj):
        obj["apiVersion"] = kind.api_version
        obj["kind"] = kind.kind
        return obj

    # --- reads --------------------------------------------------------------------------

    def get(self, key, namespace, name):
        kind = self.kinds[key]
        obj = self.objects[key].get((namespace if kind.namespaced else "", name))
        if obj is None:
            raise errors.not_found(kind.group, kind.plural, name)
        return copy.deepcopy(obj)

    def find(self, key, namespace, name):
        """Return a copy of the object or None."""
        kind = self.kinds[key]
        obj = self.objects[key].get((namespace if kind.namespaced else "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, key, namespace=None, predicate=None):
        """Return (items, resourceVersion) sorted by namespace and name."""
        items = []
        for (ns, _), obj in sorted(self.objects[key].items()):
            if namespace and ns != namespace:
                continue
            if predicate and not predicate(obj):
                continue
            items.append(copy.deepcopy(obj))
        return items, self.rv

    def snapshot(self, key, namespace=None):
        """Return the stored objects of one kind without copying them, in no order.

        Writes replace stored objects and never change them in place, so the result stays
        consistent while the caller yields. The caller must not modify the objects.
        """
        objects = self.objects[key]
        if namespace is None:
            return list(objects.values())
        return [obj for (ns, _), obj in objects.items() if ns == namespace]

    def by_uid(self, uid):
        location = self.uids.get(uid)
        if location is None:
            return None
        key, ns, name = location
        return self.objects[key].get((ns, name))

    def dependents(self, uid):
        result = []
        for key, objects in self.objects.items():
            for obj in objects.values():
                for ref in obj["metadata"].get("ownerReferences") or []:
                    if ref.get("uid") == uid:
                        result.append((key, obj))
                        break
        return result

    # --- create -------------------------------------------------------------------------

    def create(self, key, namespace, body, dry_run=False, internal=False):
        kind = self.kinds[key]
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        if kind.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and namespace and body_ns != namespace:
                raise errors.bad_request("the namespace of the provided object does not match "
                                         "the namespace sent on the request")
            namespace = namespace or body_ns or "default"
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
            namespace = ""
        self._check_namespace(kind, namespace, creating=True)

        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise errors.invalid(kind.group, kind.kind, "", [errors.cause(
                    "metadata.name", "Required value: name or generateName is required",
                    "FieldValueRequired")])
            prefix = prefix[:58]
            for _ in range(8):
                candidate = prefix + "".join(random.choice(GENERATE_NAME_ALPHABET)
                                             for _ in range(5))
                if (namespace, candidate) not in self.objects[key]:
                    break
            meta["name"] = candidate
        name = meta["name"]

        rule = "label" if key in (("", "namespaces"), ("", "services")) else "subdomain"
        if key == ("", "services"):
            rule = "dns1035"
        causes = validate_name(name, rule) if isinstance(name, str) else \
            [errors.cause("metadata.name", "Invalid value: must be a string")]
        causes += validate_metadata(meta)
        kind.default(obj)
        causes += kind.validate(obj, None)
        if causes:
            raise errors.invalid(kind.group, kind.kind, name, causes)
        if (namespace, name) in self.objects[key]:
            raise errors.already_exists(kind.group, kind.plural, name)
        if meta.get("resourceVersion"):
            raise errors.bad_request("resourceVersion should not be set on objects to be "
                                     "created")

        if kind.status_subresource and not internal and key != ("", "namespaces"):
            obj.pop("status", None)
        hook = self.create_hooks.get(key)
        if hook:
            hook(obj)
        self._typed(kind, obj)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        meta.pop("deletionTimestamp", None)
        meta.pop("deletionGracePeriodSeconds", None)
        if dry_run:
            return obj
        meta["resourceVersion"] = str(self.next_rv())
        self.objects[key][(namespace, name)] = obj
        self.uids[meta["uid"]] = (key, namespace, name)
        self._emit("ADDED", kind, obj, None)
        return copy.deepcopy(obj)

    # --- update -------------------------------------------------------------------------

    def update(self, key, namespace, name, body, subresource=None, dry_run=False,
               internal=False):
        """Replace an object (PUT semantics) and return the stored copy."""
        kind = self.kinds[key]
        namespace = namespace if kind.namespaced else ""
        old = self.objects[key].get((namespace, name))
        if old is None:
            raise errors.not_found(kind.group, kind.plural, name)
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be a JSON object")
        new = copy.deepcopy(body)
        meta = new.setdefault("metadata", {})
        if meta.get("name") not in (None, name):
            raise errors.bad_request("the name of the object (%s) does not match the name on "
                                     "the URL (%s)" % (meta.get("name"), name))
        if kind.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise errors.bad_request("the namespace of the provided object does not match the "
                                     "namespace sent on the request")
        sent_rv = meta.get("resourceVersion")
        if sent_rv not in (None, "") and sent_rv != old["metadata"]["resourceVersion"]:
            raise errors.conflict(kind.group, kind.plural, name)

        old_meta = old["metadata"]
        meta["name"] = name
        if kind.namespaced:
            meta["namespace"] = namespace
        for field in ("uid", "creationTimestamp", "deletionTimestamp",
                      "deletionGracePeriodSeconds", "generation"):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        if old_meta.get("deletionTimestamp"):
            # Finalizers can only be removed from an object that is being deleted.
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added and not internal:
                raise errors.invalid(kind.group, kind.kind, name, [errors.cause(
                    "metadata.finalizers", "Forbidden: no new finalizers can be added if the "
                    "object is being deleted", "FieldValueForbidden")])

        if subresource == "status":
            # Writes to /status change only the status (and metadata kept from the old object).
            merged = copy.deepcopy(old)
            merged["status"] = new.get("status", {})
            new = merged
        elif kind.status_subresource and not internal:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        self._typed(kind, new)

        if not internal:
            causes = validate_metadata(new["metadata"]) + kind.validate(new, old)
            if key == ("", "pods"):
                causes += self._pod_update_causes(old, new)
            if causes:
                raise errors.invalid(kind.group, kind.kind, name, causes)
        kind.default(new)
        hook = self.update_hooks.get(key)
        if hook:
            hook(old, new)

        new["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
        if new == old:
            return copy.deepcopy(old)
        if self._spec_changed(kind, old, new):
            new["metadata"]["generation"] = old_meta.get("generation", 1) + 1
        if dry_run:
            return new
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers") \
                and not self._waits_for_kubelet(key, new):
            return self._remove(kind, namespace, name, new)
        new["metadata"]["resourceVersion"] = str(self.next_rv())
        self.objects[key][(namespace, name)] = new
        self._emit("MODIFIED", kind, new, old)
        return copy.deepcopy(new)

    def _pod_update_causes(self, old, new):
        old_spec = copy.deepcopy(old.get("spec") or {})
        new_spec = copy.deepcopy(new.get("spec") or {})
        for spec in (old_spec, new_spec):
            for container in spec.get("containers") or []:
                container.pop("image", None)
            spec.pop("activeDeadlineSeconds", None)
            spec.pop("tolerations", None)
            spec.pop("terminationGracePeriodSeconds", None)
        if old_spec != new_spec:
            return [errors.cause("spec", "Forbidden: pod updates may not change fields other "
                                 "than `spec.containers[*].image`, `spec.activeDeadlineSeconds`, "
                                 "`spec.tolerations` (only additions to existing tolerations) "
                                 "or `spec.terminationGracePeriodSeconds`",
                                 "FieldValueForbidden")]
        return []

    @staticmethod
    def _spec_changed(kind, old, new):
        if kind.builtin:
            return old.get("spec") != new.get("spec")
        skip = ("metadata", "status") if kind.status_subresource else ("metadata",)
        strip = lambda o: {k: v for k, v in o.items() if k not in skip}  # noqa: E731
        return strip(old) != strip(new)

    def mutate(self, key, namespace, name, change, subresource=None):
        """Apply change(obj) to a copy and store it as a controller write (no validation).

        Returns the stored object, or None when the object does not exist.
        """
        obj = self.find(key, namespace, name)
        if obj is None:
            return None
        change(obj)
        return self.update(key, namespace, name, obj, subresource=subresource, internal=True)

    # --- delete -------------------------------------------------------------------------

    def _waits_for_kubelet(self, key, obj):
        """Report whether a deleted pod stays until the kubelet has stopped it."""
        return key == ("", "pods") and obj["metadata"].get("deletionGracePeriodSeconds", 0) > 0

    def delete(self, key, namespace, name, options=None, dry_run=False):
        """Delete an object. Returns (object_or_None, removed)."""
        kind = self.kinds[key]
        options = options or {}
        namespace = namespace if kind.namespaced else ""
        obj = self.objects[key].get((namespace, name))
        if obj is None:
            raise errors.not_found(kind.group, kind.plural, name)
        meta = obj["metadata"]
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != meta["uid"]:
            raise errors.conflict(kind.group, kind.plural, name,
                                  "Precondition failed: UID in precondition: %s, UID in object "
                                  "meta: %s" % (preconditions["uid"], meta["uid"]))
        if preconditions.get("resourceVersion") and \
                preconditions["resourceVersion"] != meta["resourceVersion"]:
            raise errors.conflict(kind.group, kind.plural, name,
                                  "Precondition failed: ResourceVersion in precondition: %s, "
                                  "ResourceVersion in object meta: %s"
                                  % (preconditions["resourceVersion"], meta["resourceVersion"]))
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is True:
            policy = "Orphan"
        if policy not in (None, "Background", "Foreground", "Orphan"):
            raise errors.bad_request('unsupported propagationPolicy "%s": use Background, '
                                     'Foreground or Orphan' % policy)
        grace = options.get("gracePeriodSeconds")
        if dry_run:
            return copy.deepcopy(obj), False

        updated = copy.deepcopy(obj)
        umeta = updated["metadata"]
        finalizers = list(umeta.get("finalizers") or [])
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")

        if key == ("", "namespaces"):
            if not umeta.get("deletionTimestamp"):
                umeta["deletionTimestamp"] = now_rfc3339()
                umeta["deletionGracePeriodSeconds"] = 0
                updated.setdefault("status", {})["phase"] = "Terminating"
                return self._store_modified(kind, namespace, name, updated, obj), False
            return copy.deepcopy(obj), False

        if key == ("", "pods"):
            spec_grace = (updated.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            grace = spec_grace if grace is None else int(grace)
            phase = (updated.get("status") or {}).get("phase")
            scheduled = bool((updated.get("spec") or {}).get("nodeName"))
            if not scheduled or phase in ("Succeeded", "Failed"):
                grace = 0
            current = umeta.get("deletionGracePeriodSeconds")
            if umeta.get("deletionTimestamp") and current is not None and grace >= current \
                    and finalizers == list(meta.get("finalizers") or []):
                return copy.deepcopy(obj), False
            if grace > 0 or finalizers:
                if grace > 0 or not umeta.get("deletionTimestamp"):
                    umeta["deletionTimestamp"] = now_rfc3339(grace)
                umeta["deletionGracePeriodSeconds"] = grace
                umeta["finalizers"] = finalizers
                if not finalizers:
                    umeta.pop("finalizers")
                return self._store_modified(kind, namespace, name, updated, obj), False
            return self._remove(kind, namespace, name, updated), True

        if finalizers:
            if umeta.get("deletionTimestamp") and finalizers == (meta.get("finalizers") or []):
                return copy.deepcopy(obj), False
            umeta.setdefault("deletionTimestamp", now_rfc3339())
            umeta.setdefault("deletionGracePeriodSeconds", 0)
            umeta["finalizers"] = finalizers
            return self._store_modified(kind, namespace, name, updated, obj), False
        return self._remove(kind, namespace, name, updated), True

    def _store_modified(self, kind, namespace, name, new, old):
        new["metadata"]["resourceVersion"] = str(self.next_rv())
        self.objects[kind.key][(namespace, name)] = new
        self._emit("MODIFIED", kind, new, old)
        return copy.deepcopy(new)

    def _remove(self, kind, namespace, name, final):
        old = self.objects[kind.key].pop((namespace, name), None)
        self.uids.pop(final["metadata"]["uid"], None)
        final["metadata"]["resourceVersion"] = str(self.next_rv())
        self._emit("DELETED", kind, final, old)
        return copy.deepcopy(final)

    def force_remove(self, key, namespace, name):
        """Remove an object at once, skipping grace periods (the kubelet's final delete)."""
        kind = self.kinds[key]
        obj = self.objects[key].get((namespace if kind.namespaced else "", name))
        if obj is None:
            return None
        if obj["metadata"].get("finalizers"):
            return None
        return self._remove(kind, namespace, name, copy.deepcopy(obj))

    def remove_finalizer(self, key, namespace, name, finalizer):
        def change(obj):
            obj["metadata"]["finalizers"] = [f for f in obj["metadata"].get("finalizers") or []
                                             if f != finalizer]
            if not obj["metadata"]["finalizers"]:
                del obj["metadata"]["finalizers"]
        return self.mutate(key, namespace, name, change)

    # --- garbage collector --------------------------------------------------------------

    def gc_pass(self):
        """Run one garbage collection pass over ownerReferences and deletion finalizers."""
        changed = False
        for key, objects in list(self.objects.items()):
            for ns, name in list(objects):
                # Earlier steps of this pass may have changed or removed the object.
                obj = self.objects[key].get((ns, name))
                if obj is None:
                    continue
                changed |= self._gc_object(key, ns, name, obj)
        return changed

    def _gc_object(self, key, ns, name, obj):
        meta = obj["metadata"]
        finalizers = meta.get("finalizers") or []
        uid = meta["uid"]
        if meta.get("deletionTimestamp") and "orphan" in finalizers:
            for dep_key, dep in self.dependents(uid):
                dmeta = dep["metadata"]

                def drop(o, uid=uid):
                    o["metadata"]["ownerReferences"] = [
                        r for r in o["metadata"].get("ownerReferences") or []
                        if r.get("uid") != uid]
                    if not o["metadata"]["ownerReferences"]:
                        del o["metadata"]["ownerReferences"]
                self.mutate(dep_key, dmeta.get("namespace", ""), dmeta["name"], drop)
            self.remove_finalizer(key, ns, name, "orphan")
            return True
        if meta.get("deletionTimestamp") and "foregroundDeletion" in finalizers:
            blocking = 0
            for dep_key, dep in self.dependents(uid):
                dmeta = dep["metadata"]
                refs = [r for r in dmeta.get("ownerReferences") or [] if r.get("uid") == uid]
                if any(r.get("blockOwnerDeletion") for r in refs):
                    blocking += 1
                if not dmeta.get("deletionTimestamp"):
                    log.info("gc: deleting %s/%s (foreground owner %s)", dep_key[1],
                             dmeta["name"], name)
                    self.delete(dep_key, dmeta.get("namespace", ""), dmeta["name"],
                                {"propagationPolicy": "Foreground"})
            if blocking == 0:
                self.remove_finalizer(key, ns, name, "foregroundDeletion")
                return True
            return False
        refs = meta.get("ownerReferences") or []
        if not refs or meta.get("deletionTimestamp"):
            return False
        live = []
        foreground_owner = False
        for ref in refs:
            owner = self.by_uid(ref.get("uid"))
            if owner is not None:
                live.append(ref)
                if "foregroundDeletion" in (owner["metadata"].get("finalizers") or []):
                    foreground_owner = True
        if not live:
            log.info("gc: deleting %s/%s/%s (owners gone)", key[1], ns, name)
            self.delete(key, ns, name, {"propagationPolicy": "Background"})
            return True
        if len(live) != len(refs):
            self.mutate(key, ns, name,
                        lambda o: o["metadata"].__setitem__("ownerReferences", live))
            return True
        if foreground_owner:
            return False
        return False
