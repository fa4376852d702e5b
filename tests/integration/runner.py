#!/usr/bin/python3
"""Runs the integration tests under DIR (files named test_*.py) with unittest.

Writes "PASSED FAILED" to the --report file so tests/run-tests.sh can add them to its total.
Tests find the built binaries through $SBX_BUILD_DIR.
"""
import argparse
import os
import sys
import unittest


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--report", required=True)
    parser.add_argument("-k", dest="pattern", action="append", default=None,
                        help="only tests whose name contains this text")
    parser.add_argument("directory")
    args = parser.parse_args()

    sys.path.insert(0, args.directory)
    loader = unittest.TestLoader()
    if args.pattern:
        loader.testNamePatterns = ["*%s*" % p for p in args.pattern]
    suite = loader.discover(args.directory, pattern="test_*.py", top_level_dir=args.directory)
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)

    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    passed = result.testsRun - failed - len(result.skipped)
    with open(args.report, "w") as report:
        report.write("%d %d\n" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
