"""Label and field selectors: the query-string grammar and the LabelSelector object."""
import re

from .errors import bad_request

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_KEY_RE = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                     + _NAME + "$")
_VALUE_RE = re.compile(r"^(" + _NAME + ")?$")


def _split_top_level(text):
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def _check_key(key, selector):
    if not _KEY_RE.match(key) or len(key.split("/")[-1]) > 63:
        raise bad_request('unable to parse requirement: invalid label key "%s" in selector "%s"'
                          % (key, selector))


def _check_value(value, selector):
    if len(value) > 63 or not _VALUE_RE.match(value):
        raise bad_request('unable to parse requirement: invalid label value "%s" in selector '
                          '"%s"' % (value, selector))


_SET_RE = re.compile(r"^(\S+)\s+(in|notin)\s*\((.*)\)$")
_EQ_RE = re.compile(r"^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$")


def parse_label_selector(text):
    """Parse a labelSelector query value into (key, operator, values) requirements.

    Operators: "=", "!=", "in", "notin", "exists", "!exists". An invalid selector raises a
    400 BadRequest like the API server does.
    """
    requirements = []
    if text is None or not text.strip():
        return requirements
    for part in _split_top_level(text):
        if not part:
            raise bad_request('unable to parse requirement: empty requirement in selector "%s"'
                              % text)
        match = _SET_RE.match(part)
        if match:
            key, op, inner = match.group(1), match.group(2), match.group(3)
            values = [v.strip() for v in inner.split(",")] if inner.strip() else []
            if not values:
                raise bad_request('unable to parse requirement: for "in", "notin" operators, '
                                  'values set can\'t be empty in selector "%s"' % text)
            _check_key(key, text)
            for value in values:
                _check_value(value, text)
            requirements.append((key, op, values))
            continue
        match = _EQ_RE.match(part)
        if match:
            key, op, value = match.group(1), match.group(2), match.group(3)
            _check_key(key, text)
            _check_value(value, text)
            requirements.append((key, "!=" if op == "!=" else "=", [value]))
            continue
        if part.startswith("!"):
            key = part[1:].strip()
            _check_key(key, text)
            requirements.append((key, "!exists", []))
            continue
        _check_key(part, text)
        requirements.append((part, "exists", []))
    return requirements


def match_requirements(requirements, labels):
    labels = labels or {}
    for key, op, values in requirements:
        present = key in labels
        if op == "=" and (not present or labels[key] != values[0]):
            return False
        if op == "!=" and present and labels[key] == values[0]:
            return False
        if op == "in" and (not present or labels[key] not in values):
            return False
        if op == "notin" and present and labels[key] in values:
            return False
        if op == "exists" and not present:
            return False
        if op == "!exists" and present:
            return False
    return True


def parse_field_selector(text, supported):
    """Parse a fieldSelector into (field, operator, value); unsupported fields give 400."""
    requirements = []
    if text is None or not text.strip():
        return requirements
    for part in text.split(","):
        part = part.strip()
        match = re.match(r"^([^=!]+)(==|=|!=)(.*)$", part)
        if not match:
            raise bad_request('invalid selector: \'%s\'; can\'t understand \'%s\'' % (text, part))
        field, op, value = match.group(1).strip(), match.group(2), match.group(3).strip()
        if field not in supported:
            raise bad_request('field label not supported: %s' % field)
        requirements.append((field, "!=" if op == "!=" else "=", value))
    return requirements


def field_value(obj, path):
    current = obj
    for part in path.split("."):
        if not isinstance(current, dict):
            return ""
        current = current.get(part)
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


def match_fields(requirements, obj):
    for field, op, value in requirements:
        actual = field_value(obj, field)
        if op == "=" and actual != value:
            return False
        if op == "!=" and actual == value:
            return False
    return True


def match_label_selector_object(selector, labels):
    """Match a metav1.LabelSelector (matchLabels, matchExpressions).

    A None selector matches nothing and an empty one matches everything, as in the API.
    """
    if selector is None:
        return False
    labels = labels or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key = expression.get("key")
        op = expression.get("operator")
        values = expression.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def label_selector_object_to_string(selector):
    parts = ["%s=%s" % (k, v) for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        op = expression.get("operator")
        key = expression.get("key")
        values = ",".join(expression.get("values") or [])
        if op == "In":
            parts.append("%s in (%s)" % (key, values))
        elif op == "NotIn":
            parts.append("%s notin (%s)" % (key, values))
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append("!" + key)
    return ",".join(parts)
