"""Order statistics and Markdown table rows for the benchmark report."""


def quantile(values, q):
    """Return the Q quantile of VALUES, interpolating linearly between order statistics."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("quantile of no values")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values):
    return quantile(values, 0.5)


def table_header():
    return "| | median | p25-p75 | min | max | n |\n|---|---|---|---|---|---|"


def table_row(label, values, unit):
    def number(value):
        return "%.2f" % value if abs(value) < 100 else "%.0f" % value

    return "| %s | **%s %s** | %s-%s | %s | %s | %d |" % (
        label, number(median(values)), unit, number(quantile(values, 0.25)),
        number(quantile(values, 0.75)), number(min(values)), number(max(values)), len(values))
