"""Helpers that every benchmark of tests/bench uses: progress output, running commands through
`measure`, interleaving a candidate with its baseline, and formatting command lines."""

import re
import subprocess
import sys
import time

import stats


def say(text):
    sys.stderr.write("[bench] %s\n" % text)
    sys.stderr.flush()


class BenchError(Exception):
    pass


def command_line(argv):
    return " ".join(arg if re.fullmatch(r"[A-Za-z0-9_./:=@%+,$-]+", arg)
                    else "'" + arg.replace("'", "'\\''") + "'" for arg in argv)


def pair_ratio_text(candidate, baseline):
    ratios = [a / b for a, b in zip(candidate, baseline)]
    return "median %.2fx, p25-p75 %.2fx-%.2fx" % (
        stats.median(ratios), stats.quantile(ratios, 0.25), stats.quantile(ratios, 0.75))


# ---------------------------------------------------------------------------------------------
# Running and measuring commands

class Measurer:
    """Runs commands through the `measure` helper, which times fork to wait4 in C."""

    def __init__(self, measure_path):
        self.measure_path = measure_path

    def run(self, argv, env=None, peak_rss=False, stdout_path=None, expect_status=0):
        command = [self.measure_path]
        if peak_rss:
            command.append("--peak-rss")
        if stdout_path is not None:
            command += ["--stdout", stdout_path]
        command += ["--"] + list(argv)
        result = subprocess.run(command, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        stderr = result.stderr.decode(errors="replace")
        if result.returncode != 0:
            raise BenchError("measure %s failed (exit %d): %s"
                             % (command_line(argv), result.returncode, stderr.strip()))
        fields = dict(item.split("=", 1) for item in result.stdout.decode().split())
        values = {key: int(value) for key, value in fields.items()}
        if expect_status is not None and values["status"] != expect_status:
            raise BenchError("%s exited with status %d, expected %d; its stderr:\n%s"
                             % (command_line(argv), values["status"], expect_status,
                                stderr.strip()))
        values["stderr"] = stderr
        return values


def interleaved(count, first, second, gap=0.0):
    """Run FIRST and SECOND COUNT times each, alternating which goes first in each pair, and
    sleeping GAP seconds before every run."""
    def one(function):
        if gap:
            time.sleep(gap)
        return function()

    results_first, results_second = [], []
    for i in range(count):
        if i % 2 == 0:
            results_first.append(one(first))
            results_second.append(one(second))
        else:
            results_second.append(one(second))
            results_first.append(one(first))
    return results_first, results_second


def wall_ms(runs):
    return [r["wall_ns"] / 1e6 for r in runs]
