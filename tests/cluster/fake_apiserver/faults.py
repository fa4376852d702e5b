"""Fault injection: errors, latency, dropped connections, expired resourceVersions and exec
stream failures, set from a file at start or at run time through POST /_fake/faults.

A fault is a JSON object with a "type" and optional match keys. Match keys: "verb" (get, list,
watch, create, update, patch, delete, deletecollection), "resource" ("pods", "pods/exec",
"sandboxclaims", ...), "namespace", "name", "identity", "path" (prefix of the URL path).
"times" limits how often it fires (unset: until cleared).

Types:
  status          return "code" (and "reason", "message", "retryAfter" seconds,
                  "contentType": json | text | html) instead of serving the request
  latency         sleep "ms" milliseconds before serving
  warning         add the header Warning: 299 - "<text>" to the response, as the API server
                  does for deprecated APIs
  reset           reset the TCP connection without a response
  watch-drop      abort a watch after "afterEvents" events (default 1), mid-stream
  watch-split     split every watch event across several HTTP chunks
  expire-rv       resourceVersions older than "before" (a number, or "current") are gone:
                  watches get an ERROR event with a 410 Status ("mode": "event", default) or an
                  HTTP 410 response ("mode": "http"); applied once when the fault is added
  continue-expire list continue tokens return 410 Expired
  exec-legacy     reject v5.channel.k8s.io like a server older than 1.29 (v4 and older only)
  exec-cut        cut the exec connection mid-frame after "afterBytes" output bytes
  exec-no-status  never send the status on channel 3 (a frozen pod)
  exec-wait-close after the status, wait up to "seconds" for the client to close
  exec-fragment   send output in random-sized messages, some larger than 64 KiB
  token-expire    the token of "identity" stops working after "afterRequests" requests
  netpol-delay    apply NetworkPolicy changes to pods only after "seconds"
"""
import threading

TYPES = {"status", "latency", "warning", "reset", "watch-drop", "watch-split", "expire-rv",
         "continue-expire", "exec-legacy", "exec-cut", "exec-no-status", "exec-wait-close",
         "exec-fragment", "token-expire", "netpol-delay"}
MATCH_KEYS = ("verb", "resource", "namespace", "name", "identity")


class FaultError(ValueError):
    pass


def validate(fault):
    if not isinstance(fault, dict):
        raise FaultError("fault must be a JSON object, got %r" % (fault,))
    kind = fault.get("type")
    if kind not in TYPES:
        raise FaultError('fault type "%s" is unknown; use one of: %s'
                         % (kind, ", ".join(sorted(TYPES))))
    if kind == "status" and not isinstance(fault.get("code"), int):
        raise FaultError('fault "status" needs an integer "code"')
    if kind == "latency" and not isinstance(fault.get("ms"), (int, float)):
        raise FaultError('fault "latency" needs a number "ms"')
    if kind == "warning" and not fault.get("text"):
        raise FaultError('fault "warning" needs "text"')
    if kind == "token-expire" and not fault.get("identity"):
        raise FaultError('fault "token-expire" needs "identity"')
    if kind == "expire-rv" and "before" not in fault:
        raise FaultError('fault "expire-rv" needs "before" (a resourceVersion or "current")')
    return fault


class Faults:
    """The active faults, matched against each request in the order they were added."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items = []

    def add(self, faults):
        for fault in faults:
            validate(fault)
        with self.lock:
            self.items.extend(dict(f) for f in faults)

    def clear(self):
        with self.lock:
            self.items = []

    def snapshot(self):
        with self.lock:
            return [dict(f) for f in self.items]

    def take(self, kind, info=None, consume=True):
        """Return the first active fault of this type matching the request, or None.

        Taking a fault with "times" uses up one of its firings.
        """
        info = info or {}
        with self.lock:
            for fault in self.items:
                if fault["type"] != kind or not self._matches(fault, info):
                    continue
                if consume and "times" in fault:
                    fault["times"] -= 1
                    if fault["times"] <= 0:
                        self.items.remove(fault)
                return dict(fault)
        return None

    def peek(self, kind, info=None):
        return self.take(kind, info, consume=False)

    @staticmethod
    def _matches(fault, info):
        for key in MATCH_KEYS:
            if key in fault and fault[key] != info.get(key):
                return False
        if "path" in fault and not info.get("path", "").startswith(fault["path"]):
            return False
        return True
