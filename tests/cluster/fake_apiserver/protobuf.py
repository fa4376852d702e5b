"""Just enough of the Kubernetes protobuf encoding to read the request bodies kubectl's typed
clients send that way: the review kinds, Eviction, and the core kinds `kubectl create`
makes (Namespace, ConfigMap, Secret, ServiceAccount).

A body is the 4-byte magic "k8s\\0" followed by a runtime.Unknown message: field 1 TypeMeta
(apiVersion = 1, kind = 2) and field 2 the raw bytes of the object's own message.
"""
import base64

from .errors import ApiError

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"


def _varint(data, position):
    result = shift = 0
    while True:
        if position >= len(data):
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def fields(data):
    """Decode one message level into {field number: [values]} (bytes for length-delimited)."""
    result = {}
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _varint(data, position)
        elif wire_type == 2:
            length, position = _varint(data, position)
            value = data[position:position + length]
            position += length
        elif wire_type == 1:
            value, position = data[position:position + 8], position + 8
        elif wire_type == 5:
            value, position = data[position:position + 4], position + 4
        else:
            raise ValueError("unsupported wire type %d" % wire_type)
        result.setdefault(number, []).append(value)
    return result


def _string(message, number):
    values = message.get(number)
    return values[0].decode() if values else ""


def _message(message, number):
    values = message.get(number)
    return fields(values[0]) if values else None


def _strings(message, number):
    return [value.decode() for value in message.get(number, [])]


def _map(message, number, decode_value=bytes.decode):
    """Decode a protobuf map field: repeated entries with the key in field 1, the value in 2."""
    result = {}
    for entry in message.get(number, []):
        item = fields(entry)
        result[_string(item, 1)] = decode_value(item.get(2, [b""])[0])
    return result


def _base64(value):
    return base64.b64encode(value).decode()


def _object_meta(meta):
    result = {}
    if meta is not None:
        for number, key in ((1, "name"), (2, "generateName"), (3, "namespace")):
            if meta.get(number):
                result[key] = _string(meta, number)
        for number, key in ((11, "labels"), (12, "annotations")):
            if meta.get(number):
                result[key] = _map(meta, number)
        if meta.get(14):
            result["finalizers"] = _strings(meta, 14)
    return result


def _namespace(raw):
    namespace = fields(raw)
    body = {"metadata": _object_meta(_message(namespace, 1))}
    spec = _message(namespace, 2)
    if spec and spec.get(1):
        body["spec"] = {"finalizers": _strings(spec, 1)}
    return body


def _config_map(raw):
    config_map = fields(raw)
    body = {"metadata": _object_meta(_message(config_map, 1))}
    if config_map.get(2):
        body["data"] = _map(config_map, 2)
    if config_map.get(3):
        body["binaryData"] = _map(config_map, 3, _base64)
    if config_map.get(4):
        body["immutable"] = bool(config_map[4][0])
    return body


def _secret(raw):
    secret = fields(raw)
    body = {"metadata": _object_meta(_message(secret, 1))}
    if secret.get(2):
        body["data"] = _map(secret, 2, _base64)
    if secret.get(3):
        body["type"] = _string(secret, 3)
    if secret.get(4):
        body["stringData"] = _map(secret, 4)
    if secret.get(5):
        body["immutable"] = bool(secret[5][0])
    return body


def _service_account(raw):
    account = fields(raw)
    body = {"metadata": _object_meta(_message(account, 1))}
    if account.get(3):
        body["imagePullSecrets"] = [{"name": _string(fields(entry), 1)}
                                    for entry in account[3]]
    if account.get(4):
        body["automountServiceAccountToken"] = bool(account[4][0])
    return body


def _access_review(raw):
    review = fields(raw)
    spec = _message(review, 2) or {}
    body = {"metadata": _object_meta(_message(review, 1)), "spec": {}}
    resource = _message(spec, 1)
    if resource is not None:
        names = ("namespace", "verb", "group", "version", "resource", "subresource", "name")
        body["spec"]["resourceAttributes"] = {
            name: _string(resource, index + 1) for index, name in enumerate(names)}
    non_resource = _message(spec, 2)
    if non_resource is not None:
        body["spec"]["nonResourceAttributes"] = {"path": _string(non_resource, 1),
                                                 "verb": _string(non_resource, 2)}
    return body


def _eviction(raw):
    eviction = fields(raw)
    body = {"metadata": _object_meta(_message(eviction, 1))}
    options = _message(eviction, 2)
    if options is not None and options.get(1):
        body["deleteOptions"] = {"gracePeriodSeconds": options[1][0]}
    return body


DECODERS = {
    "SelfSubjectAccessReview": _access_review,
    "SelfSubjectRulesReview": lambda raw: {"spec": {}},
    "SelfSubjectReview": lambda raw: {},
    "Eviction": _eviction,
    "Namespace": _namespace,
    "ConfigMap": _config_map,
    "Secret": _secret,
    "ServiceAccount": _service_account,
}


def decode(data):
    """Return the object of a protobuf request body as a JSON-like dict, or raise 415."""
    if not data.startswith(MAGIC):
        raise ApiError(415, "UnsupportedMediaType", "protobuf body without the k8s magic")
    try:
        unknown = fields(data[len(MAGIC):])
        type_meta = _message(unknown, 1) or {}
        api_version, kind = _string(type_meta, 1), _string(type_meta, 2)
        raw = unknown.get(2, [b""])[0]
        decoder = DECODERS.get(kind)
        if decoder is None:
            raise ApiError(415, "UnsupportedMediaType", "this test server reads protobuf "
                           "bodies only for %s; send %s as JSON"
                           % (", ".join(sorted(DECODERS)), kind or "the object"))
        body = decoder(raw)
    except (ValueError, UnicodeDecodeError, IndexError) as error:
        raise ApiError(400, "BadRequest", "invalid protobuf body: %s" % error) from None
    body["apiVersion"] = api_version
    body["kind"] = kind
    return body
