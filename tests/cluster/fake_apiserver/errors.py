"""Kubernetes Status objects and the exception that carries one to the HTTP layer."""


class ApiError(Exception):
    """An API error returned as a JSON Status (kind Status, apiVersion v1)."""

    def __init__(self, code, reason, message, details=None, headers=None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self):
        return failure_status(self.code, self.reason, self.message, self.details)


def failure_status(code, reason, message, details=None):
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def success_status(details=None):
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    if details:
        body["details"] = details
    return body


def _details(name, group, plural):
    details = {"name": name, "kind": plural}
    if group:
        details["group"] = group
    return details


def _qualified(group, plural):
    return "%s.%s" % (plural, group) if group else plural


def not_found(group, plural, name):
    return ApiError(404, "NotFound", '%s "%s" not found' % (_qualified(group, plural), name),
                    _details(name, group, plural))


def already_exists(group, plural, name):
    return ApiError(409, "AlreadyExists",
                    '%s "%s" already exists' % (_qualified(group, plural), name),
                    _details(name, group, plural))


def conflict(group, plural, name, message=None):
    text = message or ("the object has been modified; please apply your changes to the "
                       "latest version and try again")
    return ApiError(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": %s'
                    % (_qualified(group, plural), name, text), _details(name, group, plural))


def invalid(group, kind, name, causes):
    """Return a 422 Invalid error; details.kind is the Kind, not the plural."""
    details = {"name": name or "", "kind": kind, "causes": causes}
    if group:
        details["group"] = group
    summary = ", ".join("%s: %s" % (c["field"], c["message"]) for c in causes)
    qualified = "%s.%s" % (kind, group) if group else kind
    return ApiError(422, "Invalid", '%s "%s" is invalid: %s' % (qualified, name or "", summary),
                    details)


def bad_request(message):
    return ApiError(400, "BadRequest", message)


def forbidden(message, details=None):
    return ApiError(403, "Forbidden", message, details)


def gone(message):
    return ApiError(410, "Expired", message)


def method_not_allowed(message="the server does not allow this method on the requested resource"):
    return ApiError(405, "MethodNotAllowed", message)


def unsupported_media_type(content_type):
    return ApiError(415, "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types "
                    "include: application/json-patch+json, application/merge-patch+json, "
                    "application/apply-patch+yaml (got %s)" % content_type)


def cause(field, message, reason="FieldValueInvalid"):
    return {"reason": reason, "message": message, "field": field}


def required(field):
    return cause(field, "Required value", "FieldValueRequired")
