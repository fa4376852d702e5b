"""Faults: a killed sbx, cleanup racing a run, a crashed runner, and bad input."""

import json
import os
import random
import signal
import threading
import time
import unittest

from harness import gitlab_runner
from harness.support import SbxTestCase, sleeper, unique_seconds


def ready_marker(tag):
    return "echo %s-$((6*7))-ready" % tag, ("%s-42-ready" % tag).encode()


class KilledSbxTest(SbxTestCase):

    def test_sigkill_mid_stage_stops_step(self):
        first = unique_seconds()
        second = unique_seconds()
        attempt = self.prepared(self.new_job())
        self.run_ok(attempt, "get_sources", ["true"], body=attempt.get_sources_body())
        command, marker = ready_marker("kill")
        record = attempt.start_stage("build_script", commands=[
            "echo kept > kept-file", "sleep %s &" % first, command, "sleep " + second])
        self.assertTrue(record.wait_output(marker, 60), self.describe([record]))
        self.assertTrue(self.wait_until(
            lambda: len(gitlab_runner.sandbox_processes(sleeper(first))) == 1
            and len(gitlab_runner.sandbox_processes(sleeper(second))) == 1, 10),
            "the step's sleep processes never started")
        self.exempt_records.add(id(record))

        os.kill(record.pid, signal.SIGKILL)  # sbx only, not its process group
        self.assertTrue(self.wait_until(
            lambda: not gitlab_runner.sandbox_processes(sleeper(first))
            and not gitlab_runner.sandbox_processes(sleeper(second)), 10),
            "the step's processes outlived the SIGKILLed sbx")
        self.assertTrue(record.finished.wait(10), "stdout/stderr stayed open")
        self.assertEqual(record.returncode, -signal.SIGKILL)

        after = attempt.run_stage("after_script", commands=["cat kept-file"])
        self.assertEqual(after.returncode, 0, self.describe([after]))
        self.assertIn(b"kept\n", bytes(after.stdout))
        sandbox_id = attempt.job_env["SBX_SANDBOX_ID"]
        cleanup = attempt.cleanup()
        self.assertEqual(cleanup.returncode, 0, self.describe([cleanup]))
        self.assertSandboxGone(sandbox_id)
        self.assertStateEmpty()

    def test_cleanup_races_terminating_run(self):
        seconds = unique_seconds()
        attempt = self.prepared(self.new_job())
        self.run_ok(attempt, "get_sources", ["true"], body=attempt.get_sources_body())
        command, marker = ready_marker("race")
        ctx = gitlab_runner.Context()
        record = attempt.start_stage("build_script", ctx=ctx, commands=[
            "trap '' TERM", command, "sleep " + seconds])
        self.assertTrue(record.wait_output(marker, 60), self.describe([record]))

        self.assertTrue(self.wait_until(
            lambda: gitlab_runner.sandbox_processes(sleeper(seconds)), 10))
        ctx.cancel()  # the runner's SIGTERM to run_exec's process group
        self.assertTrue(self.wait_until(lambda: record.signals, 5))
        sandbox_id = attempt.job_env["SBX_SANDBOX_ID"]
        cleanup = attempt.start("cleanup", self.settings.cleanup_args)
        self.assertTrue(cleanup.finished.wait(90), "cleanup did not end")
        self.assertTrue(record.finished.wait(60), "run_exec did not end")
        self.assertEqual(cleanup.returncode, 0, self.describe([cleanup]))
        self.assertIn(record.returncode, (0, 1, 2), self.describe([record]))
        self.assertEqual(gitlab_runner.sandbox_processes(sleeper(seconds)), [])
        self.assertSandboxGone(sandbox_id)
        self.assertStateEmpty()


class InitEnvironmentTest(SbxTestCase):

    def test_job_token_not_in_init_environment(self):
        job = self.new_job()
        attempt = self.prepared(job)
        sandbox_id = attempt.job_env["SBX_SANDBOX_ID"]
        pids = self.processes_of(sandbox_id)
        self.assertTrue(pids, "no process of the sandbox runs after prepare")
        for pid in pids:
            with open("/proc/%d/environ" % pid, "rb") as stream:
                environ = stream.read()
            # assertFalse keeps the environment itself out of the failure message.
            self.assertFalse(job.token.encode() in environ,
                             "the job token is in /proc/%d/environ" % pid)
            self.assertFalse(b"CUSTOM_ENV_" in environ,
                             "job variables are in /proc/%d/environ" % pid)
        cleanup = attempt.cleanup()
        self.assertEqual(cleanup.returncode, 0, self.describe([cleanup]))
        self.assertSandboxGone(sandbox_id)


class GarbageCollectionTest(SbxTestCase):
    config_overrides = {"default_job_timeout": 3, "deadline_margin": 1}

    def test_gc_reclaims_only_expired(self):
        crashed = self.prepared(self.new_job(timeout=3))
        # A job for which GitLab sent no timeout gets default_job_timeout.
        untimed_job = self.new_job()
        untimed = self.new_attempt(untimed_job)
        untimed.config()
        # sbx reads the timeout from runner_info.timeout first, then CI_JOB_TIMEOUT: drop both.
        with open(untimed.response_file) as stream:
            response = json.load(stream)
        del response["runner_info"]["timeout"]
        with open(untimed.response_file, "w") as stream:
            json.dump(response, stream)
        env = [(k, v) for k, v in untimed.environment() if k != "CUSTOM_ENV_CI_JOB_TIMEOUT"]
        record = untimed.execute("prepare", self.settings.prepare_args, env=env)
        self.assertEqual(record.returncode, 0, self.describe([record]))
        live = self.prepared(self.new_job(timeout=3600))
        for attempt in (crashed, untimed, live):
            self.run_ok(attempt, "get_sources", ["true"], body=attempt.get_sources_body())
        crashed_ids = [crashed.job_env["SBX_SANDBOX_ID"], untimed.job_env["SBX_SANDBOX_ID"]]
        live_id = live.job_env["SBX_SANDBOX_ID"]
        self.assertEqual(sorted(self.sandbox_ids()), sorted(crashed_ids + [live_id]))

        # The runner dies: no cleanup_exec, and its temp dirs go with it.
        crashed.remove_temp_dir()
        untimed.remove_temp_dir()
        time.sleep(5.5)  # past timeout + deadline_margin of the crashed jobs

        gc = self.sbx_direct(["gc"], timeout=120)
        self.assertEqual(gc.returncode, 0, self.describe([gc]))
        for sandbox_id in crashed_ids:
            self.assertSandboxGone(sandbox_id)
        self.assertEqual(self.sandbox_ids(), [live_id])
        self.assertTrue(os.path.isdir(self.job_dir(live_id)))
        self.assertTrue(self.processes_of(live_id), "the live job's init was killed")
        record = live.run_stage("build_script", commands=["echo still-alive"])
        self.assertEqual(record.returncode, 0, self.describe([record]))
        self.assertIn(b"still-alive\n", bytes(record.stdout))
        live.cleanup()
        self.assertStateEmpty()


class BadInputTest(SbxTestCase):

    def assertOneLine(self, record, *needles):
        text = (bytes(record.stdout) + bytes(record.stderr)).decode(errors="replace")
        lines = [line for line in text.split("\n") if line.strip()]
        self.assertEqual(len(lines), 1, "expected one line, got:\n%s" % text)
        for needle in needles:
            self.assertIn(needle, lines[0])
        self.assertEqual(record.returncode, 2, text)

    def snapshot(self, path):
        if not os.path.isdir(path):
            return None
        return sorted(os.path.relpath(os.path.join(d, n), path)
                      for d, dirs, files in os.walk(path) for n in dirs + files)

    def test_missing_config_file(self):
        missing = os.path.join(self.root, "absent-%d.yaml" % random.randint(0, 99999))
        default_state = self.snapshot("/var/lib/sbx")
        job = self.new_job()
        attempt = self.new_attempt(job)
        env = [(k, v) for k, v in attempt.environment() if k != "SBX_CONFIG"]
        env.append(("SBX_CONFIG", missing))
        record = attempt.execute("config", self.settings.config_args, env=env)
        self.assertOneLine(record, missing)
        env.append(("SBX_SANDBOX_ID", "j%d-0badc0de" % job.id))
        for kind, args in (("prepare", self.settings.prepare_args),
                           ("cleanup", self.settings.cleanup_args)):
            record = attempt.execute(kind, args, env=env)
            self.assertOneLine(record, missing)
        path = attempt.write_script(gitlab_runner.bash_script(b"echo hi\n"))
        record = attempt.execute("run", self.settings.run_args + [path, "build_script"],
                                 env=env)
        self.assertOneLine(record, missing)
        self.assertEqual(self.snapshot("/var/lib/sbx"), default_state)
        self.assertFalse(os.path.exists(self.state_dir))

    def test_invalid_config_names_line_and_key(self):
        with open(self.config_path, "w") as f:
            f.write("state_dir: %s\n" % self.state_dir)
            f.write("local:\n")
            f.write("  memory_max: 1G\n")
            f.write("  memory_maximum: 2G\n")
        attempt = self.new_attempt(self.new_job())
        record = attempt.execute("config", self.settings.config_args)
        self.assertOneLine(record, "%s:4" % self.config_path, "memory_maximum")
        self.assertEqual(bytes(record.stdout), b"")
        self.assertFalse(os.path.exists(self.state_dir))

    def test_unreadable_script(self):
        attempt = self.prepared_with_sources(self.new_job())
        sandbox_id = attempt.job_env["SBX_SANDBOX_ID"]
        before = self.snapshot(self.state_dir)
        missing = os.path.join(attempt.temp_dir, "script0", "script")
        record = attempt.execute("run", self.settings.run_args + [missing, "build_script"])
        self.assertOneLine(record, missing)
        directory = os.path.join(attempt.temp_dir, "scriptdir")
        os.mkdir(directory)
        record = attempt.execute("run", self.settings.run_args + [directory, "build_script"])
        self.assertOneLine(record, directory)
        self.assertEqual(self.snapshot(self.state_dir), before)
        record = attempt.run_stage("build_script", commands=["echo usable"])
        self.assertEqual(record.returncode, 0, self.describe([record]))
        attempt.cleanup()
        self.assertSandboxGone(sandbox_id)

    def test_unknown_sandbox_id(self):
        attempt = self.new_attempt(self.new_job())
        unknown = "j%d-0badc0de" % attempt.job.id
        attempt.job_env = {"SBX_SANDBOX_ID": unknown}
        path = attempt.write_script(gitlab_runner.bash_script(b"echo should-not-run\n"))
        record = attempt.execute("run", self.settings.run_args + [path, "build_script"])
        self.assertOneLine(record, unknown)
        self.assertNotIn(b"should-not-run", bytes(record.output))
        for sub in ("sandboxes", "jobs", "locks"):
            directory = os.path.join(self.state_dir, sub)
            if os.path.isdir(directory):
                self.assertEqual([n for n in os.listdir(directory) if unknown in n], [],
                                 "%s/ has an entry for the unknown id" % sub)
        self.assertEqual(self.sandbox_ids(), [])


if __name__ == "__main__":
    unittest.main()
