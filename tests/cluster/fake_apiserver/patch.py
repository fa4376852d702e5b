"""Patch formats: JSON merge patch, JSON patch, an approximate strategic merge patch and the
merge step of server-side apply."""
import copy

from .errors import ApiError, bad_request


def merge_patch(target, patch):
    """Apply an RFC 7386 JSON merge patch: null deletes a key, lists are replaced whole."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _unescape(token):
    return token.replace("~1", "/").replace("~0", "~")


def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise bad_request('invalid JSON pointer "%s": it must start with "/"' % path)
    return [_unescape(t) for t in path[1:].split("/")]


def _resolve_parent(doc, tokens, path):
    current = doc
    for token in tokens[:-1]:
        if isinstance(current, dict):
            if token not in current:
                raise _patch_error('path "%s" does not exist' % path)
            current = current[token]
        elif isinstance(current, list):
            index = _list_index(current, token, path, allow_end=False)
            current = current[index]
        else:
            raise _patch_error('path "%s" does not exist' % path)
    return current


def _list_index(items, token, path, allow_end):
    if token == "-" and allow_end:
        return len(items)
    try:
        index = int(token)
    except ValueError:
        raise _patch_error('invalid array index "%s" in path "%s"' % (token, path)) from None
    limit = len(items) if allow_end else len(items) - 1
    if index < 0 or index > limit:
        raise _patch_error('array index %d out of range in path "%s"' % (index, path))
    return index


def _patch_error(message):
    # The API server rejects a JSON patch it cannot apply with 422 Invalid.
    return ApiError(422, "Invalid", "the server rejected our request due to an error in our "
                    "request: " + message)


def _get(doc, path):
    tokens = _pointer(path)
    current = doc
    for token in tokens:
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list):
            current = current[_list_index(current, token, path, allow_end=False)]
        else:
            raise _patch_error('path "%s" does not exist' % path)
    return current


def _add(doc, path, value):
    tokens = _pointer(path)
    if not tokens:
        return copy.deepcopy(value)
    parent = _resolve_parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent.insert(_list_index(parent, last, path, allow_end=True), copy.deepcopy(value))
    else:
        raise _patch_error('path "%s" does not exist' % path)
    return doc


def _remove(doc, path):
    tokens = _pointer(path)
    parent = _resolve_parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _patch_error('unable to remove nonexistent key "%s"' % last)
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_list_index(parent, last, path, allow_end=False))
    raise _patch_error('path "%s" does not exist' % path)


def json_patch(target, operations):
    """Apply an RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(operations, list):
        raise bad_request("json patch must be an array of operations")
    doc = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise bad_request("json patch operation needs \"op\" and \"path\": %r" % operation)
        op, path = operation["op"], operation["path"]
        if op == "add":
            doc = _add(doc, path, operation.get("value"))
        elif op == "remove":
            _remove(doc, path)
        elif op == "replace":
            _get(doc, path)
            tokens = _pointer(path)
            if not tokens:
                doc = copy.deepcopy(operation.get("value"))
            else:
                parent = _resolve_parent(doc, tokens, path)
                if isinstance(parent, list):
                    parent[_list_index(parent, tokens[-1], path, False)] = \
                        copy.deepcopy(operation.get("value"))
                else:
                    parent[tokens[-1]] = copy.deepcopy(operation.get("value"))
        elif op == "move":
            value = _remove(doc, operation["from"])
            doc = _add(doc, path, value)
        elif op == "copy":
            doc = _add(doc, path, _get(doc, operation["from"]))
        elif op == "test":
            if _get(doc, path) != operation.get("value"):
                raise _patch_error('testing value %s failed' % path)
        else:
            raise bad_request('unknown json patch operation "%s"' % op)
    return doc


def _merge_keyed_list(old, new, key):
    merged = [copy.deepcopy(item) for item in old]
    index = {item.get(key): i for i, item in enumerate(merged) if isinstance(item, dict)}
    for item in new:
        if isinstance(item, dict) and item.get("$patch") == "delete":
            if item.get(key) in index:
                merged[index[item.get(key)]] = None
            continue
        if isinstance(item, dict) and item.get(key) in index:
            position = index[item.get(key)]
            merged[position] = strategic_merge_patch(merged[position], item)
        else:
            merged.append(copy.deepcopy(item))
    return [item for item in merged if item is not None]


def _keyed_list(values):
    return bool(values) and all(isinstance(v, dict) and "name" in v for v in values)


def strategic_merge_patch(target, patch):
    """Apply a strategic merge patch, approximated for built-in kinds.

    NOTE: lists of objects that all carry "name" (containers, ports, env, volumes) merge by
    that key; every other list is replaced. Real patchMergeKey metadata differs for a few
    fields (e.g. ports merge by containerPort).
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list) and \
                _keyed_list(value) and _keyed_list(result[key]):
            result[key] = _merge_keyed_list(result[key], value, "name")
        elif isinstance(value, dict):
            result[key] = strategic_merge_patch(result.get(key), value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def apply_merge(live, applied):
    """Merge an applied configuration into the live object for server-side apply.

    NOTE: field ownership is not tracked, so a field removed from the applied configuration
    stays in the live object and conflicts between managers are never reported.
    """
    return strategic_merge_patch(live, applied)
