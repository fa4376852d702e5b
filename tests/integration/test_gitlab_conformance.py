"""GitLab custom executor conformance: sbx driven by the emulated runner (harness/)."""

import glob
import hashlib
import json
import os
import random
import re
import string
import subprocess
import tempfile
import threading
import time
import unittest

from harness import gitlab_runner
from harness.gitlab_runner import BuildError, UnknownFailure
from harness.support import SbxTestCase, sleeper, unique_seconds

ID_PATTERN = re.compile(r"^j(\d+)-[0-9a-f]{8}$")
USER_FLOW = ["prepare_script", "get_sources", "build_script", "after_script",
             "cleanup_file_variables"]


def ready_marker(tag):
    """A command printing "<tag>-42-ready", a line the command's own echo does not contain."""
    return "echo %s-$((6*7))-ready" % tag, ("%s-42-ready" % tag).encode()


class ExitCodeFileParsingTest(unittest.TestCase):
    """The harness reads BUILD_EXIT_CODE_FILE the way the runner does."""

    def parse(self, content):
        with tempfile.NamedTemporaryFile() as f:
            if content is None:
                path = f.name + ".absent"
            else:
                f.write(content)
                f.flush()
                path = f.name
            return gitlab_runner.parse_exit_code_file(path)

    def test_valid_first_lines(self):
        cases = [(b"42\n", 42), (b"0", 0), (b"-3\n", -3), (b"+7\n", 7), (b"42\r\nx\n", 42),
                 (b"007\n", 7)]
        for content, code in cases:
            error = self.parse(content)
            self.assertIsInstance(error, BuildError, content)
            self.assertEqual(error.exit_code, code, content)

    def test_unparsable_is_system_failure(self):
        for content in (b"", b"\n", b" 42\n", b"42 \n", b"42abc", b"0x2a", b"abc"):
            error = self.parse(content)
            self.assertIsInstance(error, UnknownFailure, content)
            self.assertEqual(error.exit_code, 2, content)

    def test_absent_file_is_exit_code_one(self):
        error = self.parse(None)
        self.assertIsInstance(error, BuildError)
        self.assertEqual(error.exit_code, 1)


class GitLabConformanceTest(SbxTestCase):

    def test_success_flow(self):
        job = self.new_job(script=["echo hello-$CI_JOB_ID", "echo built > built.txt"],
                           after_script=["echo after-status=$CI_JOB_STATUS", "cat built.txt"])
        result = self.runner.run_job(job)
        log = bytes(result.log)
        self.assertEqual(result.status, "success", log.decode(errors="replace"))
        self.assertEqual(result.stages(), USER_FLOW)
        self.assertEqual(result.kinds(), ["config", "prepare"] + ["run"] * 5 + ["cleanup"])
        self.assertIn(b"hello-%d\n" % job.id, log)
        self.assertIn(b"after-status=success\n", log)
        self.assertIn(b"built\n", log)

        config_record = result.execs[0]
        sandbox_id = json.loads(bytes(config_record.stdout))["job_env"]["SBX_SANDBOX_ID"]
        self.assertNotIn("SBX_SANDBOX_ID", config_record.env_dict())
        for record in result.execs[1:]:
            self.assertEqual(record.env_dict().get("SBX_SANDBOX_ID"), sandbox_id)
            self.assertEqual(record.cwd, result.attempts[0].temp_dir)
        self.assertSandboxGone(sandbox_id)
        self.assertStateEmpty()

    def test_cache_and_artifact_stages(self):
        job = self.new_job(cache=True, artifacts=True, dependencies=True,
                           script=["echo main-script"])
        result = self.runner.run_job(job)
        self.assertEqual(result.status, "success", bytes(result.log).decode(errors="replace"))
        self.assertEqual(result.stages(), [
            "prepare_script", "get_sources", "restore_cache", "download_artifacts",
            "build_script", "archive_cache", "upload_artifacts_on_success",
            "cleanup_file_variables"])
        self.assertStateEmpty()

    def test_flaky_get_sources_retried(self):
        # The hook fails on the first attempt only; /tmp is the sandbox's and lasts the job.
        job = self.new_job(get_sources_attempts=3, pre_get_sources_script=[
            "if [ ! -e /tmp/first-attempt ]; then touch /tmp/first-attempt; exit 1; fi"],
            script=["echo after-retry"])
        result = self.runner.run_job(job)
        self.assertEqual(result.status, "success", bytes(result.log).decode(errors="replace"))
        self.assertEqual(result.stages(), [
            "prepare_script", "get_sources", "clear_worktree", "get_sources", "build_script",
            "cleanup_file_variables"])
        self.assertIn(b"after-retry\n", bytes(result.log))
        self.assertStateEmpty()

    def test_script_timeout_runs_after_script(self):
        command, marker = ready_marker("script-timeout")
        seconds = unique_seconds()
        job = self.new_job(script_timeout=4, script=[command, "sleep " + seconds],
                           after_script=["echo status=$CI_JOB_STATUS"])
        result = self.runner.run_job(job)
        self.assertEqual(result.status, "timedout", bytes(result.log).decode(errors="replace"))
        self.assertEqual(result.stages(), USER_FLOW)
        self.assertIn(marker, bytes(result.log))
        self.assertIn(b"status=timedout\n", bytes(result.log))
        self.assertNoProcesses(sleeper(seconds))
        self.assertStateEmpty()

    def test_script_failure_writes_exit_code(self):
        attempt = self.prepared_with_sources(self.new_job())
        record = attempt.run_stage("build_script", commands=["echo before", "exit 42"])
        self.assertEqual(record.returncode, 1, self.describe([record]))
        with open(attempt.exit_code_file, "rb") as f:
            self.assertEqual(f.read(), b"42\n")
        self.assertIsInstance(record.error, BuildError)
        self.assertEqual(record.error.exit_code, 42)

        for code in (1, 255):
            record = attempt.run_stage("build_script", commands=["exit %d" % code])
            self.assertEqual(record.returncode, 1)
            with open(attempt.exit_code_file, "rb") as f:
                self.assertEqual(f.read(), b"%d\n" % code)
        attempt.cleanup()

    def test_job_fails_with_script_exit_code(self):
        job = self.new_job(script=["exit 42"], after_script=["echo after=$CI_JOB_STATUS"])
        result = self.runner.run_job(job)
        self.assertEqual(result.status, "failed", bytes(result.log).decode(errors="replace"))
        self.assertEqual(result.exit_code, 42)
        self.assertEqual(result.stages(), USER_FLOW)
        self.assertIn(b"after=failed\n", bytes(result.log))
        self.assertStateEmpty()

    def test_stale_exit_code_file_removed(self):
        attempt = self.prepared_with_sources(self.new_job())
        record = attempt.run_stage("build_script", commands=["exit 42"])
        self.assertEqual(record.returncode, 1)
        self.assertTrue(os.path.exists(attempt.exit_code_file))

        command, marker = ready_marker("later")
        running = attempt.start_stage("after_script", commands=[command, "sleep 2"])
        self.assertTrue(running.wait_output(marker, 30), self.describe([running]))
        self.assertFalse(os.path.exists(attempt.exit_code_file),
                         "exit code file of the failed stage still there while a later "
                         "stage runs")
        running.finished.wait(60)
        self.assertEqual(running.returncode, 0, self.describe([running]))
        self.assertFalse(os.path.exists(attempt.exit_code_file))
        attempt.cleanup()

    def test_every_stage_name_accepted(self):
        attempt = self.prepared(self.new_job())
        record = attempt.run_stage("get_sources", body=attempt.get_sources_body())
        self.assertEqual(record.returncode, 0, self.describe([record]))
        stages = ["prepare_script", "build_script", "step_release", "clear_worktree",
                  "after_script", "archive_cache", "upload_artifacts_on_failure",
                  "cleanup_file_variables", "some_future_stage"]
        for stage in stages:
            record = attempt.run_stage(stage, commands=["echo ran-$((1+1))-%s" % stage])
            self.assertEqual(record.returncode, 0, self.describe([record]))
            self.assertIn(("ran-2-%s\n" % stage).encode(), bytes(record.stdout))
        attempt.cleanup()

    def test_config_prints_json_and_new_id(self):
        job = self.new_job()
        ids = []
        for _ in range(3):
            attempt = self.new_attempt(job)
            record = attempt.execute("config", self.settings.config_args)
            self.assertEqual(record.returncode, 0, self.describe([record]))
            # One JSON value and nothing else on stdout (a trailing newline is fine).
            decoded = json.loads(bytes(record.stdout).decode())
            self.assertIsInstance(decoded, dict)
            self.assertIsInstance(decoded.get("builds_dir"), str)
            self.assertTrue(decoded["builds_dir"])
            self.assertIsInstance(decoded.get("cache_dir"), str)
            self.assertTrue(decoded["cache_dir"])
            sandbox_id = decoded["job_env"]["SBX_SANDBOX_ID"]
            match = ID_PATTERN.match(sandbox_id)
            self.assertIsNotNone(match, sandbox_id)
            self.assertEqual(match.group(1), str(job.id))
            self.assertLessEqual(len(sandbox_id), 63)
            ids.append(sandbox_id)
            attempt.job_env = decoded["job_env"]
            attempt.cleanup()
        self.assertEqual(len(set(ids)), 3, ids)

    def test_prepare_failure_retried_three_times(self):
        self.write_config(local={"unmapped_image": "reject"})
        image = "registry.invalid/unmapped-%d:1" % random.randint(0, 99999)
        job = self.new_job(image=image)
        result = self.runner.run_job(job)
        self.assertEqual(result.status, "system_failure",
                         bytes(result.log).decode(errors="replace"))
        self.assertEqual(result.kinds(), ["config", "prepare", "cleanup"] * 3)
        ids = set()
        for record in result.execs:
            if record.kind == "prepare":
                self.assertEqual(record.returncode, 2, self.describe([record]))
                self.assertIn(image.encode(), bytes(record.output))
            if record.kind == "cleanup":
                self.assertEqual(record.returncode, 0, self.describe([record]))
                ids.add(record.env_dict()["SBX_SANDBOX_ID"])
        self.assertEqual(len(ids), 3)
        for sandbox_id in ids:
            self.assertSandboxGone(sandbox_id)
        self.assertStateEmpty()
        for attempt in result.attempts:
            self.assertFalse(os.path.exists(attempt.temp_dir))

    def test_cancel_during_build_script(self):
        command, marker = ready_marker("build")
        seconds = unique_seconds()
        job = self.new_job(
            script=["echo kept > canceled-file", "sleep %s &" % seconds, command, "sleep 600"],
            after_script=["cat canceled-file", "echo status=$CI_JOB_STATUS",
                          "if grep -qs '%s' /proc/[0-9]*/cmdline; then echo sleeper-alive;"
                          % seconds.replace(".", "\\.") +
                          " else echo sleeper-gone; fi"])
        result = self.runner.run_job(job, cancel_on_output=marker)
        log = bytes(result.log)
        self.assertEqual(result.status, "canceled", log.decode(errors="replace"))
        self.assertEqual(result.stages(), USER_FLOW)
        build = [r for r in result.execs if r.stage == "build_script"][0]
        self.assertEqual([name for _, name in build.signals], ["SIGTERM"])
        self.assertLess(build.end_time - build.signals[0][0], 10,
                        "run_exec took too long to stop after SIGTERM")
        after = [r for r in result.execs if r.stage == "after_script"][0]
        self.assertEqual(after.returncode, 0, self.describe([after]))
        self.assertEqual(after.env_dict()["CUSTOM_ENV_CI_JOB_STATUS"], "canceled")
        self.assertIn(b"kept\n", bytes(after.stdout))
        self.assertIn(b"status=canceled\n", bytes(after.stdout))
        self.assertIn(b"sleeper-gone\n", bytes(after.stdout))
        self.assertNoProcesses(sleeper(seconds))
        self.assertEqual(result.kinds()[-1], "cleanup")
        self.assertStateEmpty()

    def test_job_timeout_stops_stages(self):
        # The step ignores SIGTERM, so sbx stays in its stop_grace while cleanup runs.
        self.settings.build_finish_timeout = 0.5
        command, marker = ready_marker("timeout")
        seconds = unique_seconds()
        job = self.new_job(timeout=8, script=["trap '' TERM", command, "sleep " + seconds],
                           after_script=["echo after-ran"])
        result = self.runner.run_job(job)
        self.assertEqual(result.status, "timedout", bytes(result.log).decode(errors="replace"))
        self.assertEqual(result.stages(), ["prepare_script", "get_sources", "build_script"])
        self.assertEqual(result.kinds()[-1], "cleanup")
        build = result.execs[-2]
        cleanup = result.execs[-1]
        self.assertTrue(build.signals, "the runner never signalled run_exec")
        self.assertEqual(cleanup.returncode, 0, self.describe([cleanup]))
        self.assertTrue(build.finished.wait(60), "run_exec never ended")
        self.assertLess(cleanup.start_time, build.end_time,
                        "cleanup did not overlap the terminating run_exec")
        self.assertNotIn(b"after-ran", bytes(result.log))
        self.assertNoProcesses(sleeper(seconds), timeout=10)
        self.assertStateEmpty()

    def test_large_script_and_variables(self):
        secret = "".join(random.choice(string.ascii_letters) for _ in range(24))
        variables = []
        digests = []
        for index in range(10):
            value = (secret + "%d" % index) * (60 * 1024 // (len(secret) + 1))
            value = value[:60 * 1024]
            variables.append(gitlab_runner.Variable("BIG_VAR_%d" % index, value))
            digests.append(hashlib.sha256(value.encode()).hexdigest())
        payload_marker = "".join(random.choice(string.ascii_lowercase) for _ in range(24))
        payload = (payload_marker * (10 * 1024 * 1024 // len(payload_marker) + 1))
        payload = payload[:10 * 1024 * 1024]
        big_command = ("x=1 # payload\nbig='%s'\nprintf %%s \"$big\" | sha256sum" % payload)
        command, marker = ready_marker("large")
        commands = ['printf %%s "$BIG_VAR_%d" | sha256sum' % i for i in range(10)]
        commands += [big_command, command, "sleep 3"]
        attempt = self.prepared(self.new_job(variables=variables))
        attempt.run_stage("get_sources", body=attempt.get_sources_body())
        body = attempt.user_body(commands)
        self.assertGreater(len(body), 10 * 1024 * 1024)
        record = attempt.start_stage("build_script", body=body)
        self.assertTrue(record.wait_output(marker, 120), self.describe([record]))
        leaked = []
        for needle in (secret.encode(), payload_marker.encode()):
            leaked += gitlab_runner.sandbox_processes(needle)
        self.assertEqual(leaked, [], "a variable or the script is on a command line")
        record.finished.wait(120)
        self.assertEqual(record.returncode, 0, self.describe([record]))
        output = bytes(record.stdout)
        for digest in digests:
            self.assertIn(digest.encode(), output)
        self.assertIn(hashlib.sha256(payload.encode()).hexdigest().encode(), output)
        attempt.cleanup()

    def test_output_passes_byte_exact(self):
        attempt = self.prepared(self.new_job())
        attempt.run_stage("get_sources", body=attempt.get_sources_body())
        record = attempt.run_stage("build_script", commands=[
            "head -c 5242880 /dev/zero | tr '\\0' x",
            "printf 'E\\001\\r\\377' >&2",
            "printf 'A\\000B\\377\\376\\r\\nC\\rD'"])
        self.assertEqual(record.returncode, 0, self.describe([record]))
        stdout = bytes(record.stdout)
        self.assertTrue(stdout.endswith(b"A\x00B\xff\xfe\r\nC\rD"), stdout[-200:])
        self.assertIn(b"x" * 5242880, stdout)
        self.assertIn(b"E\x01\r\xff", bytes(record.stderr))
        attempt.cleanup()

    def test_failure_codes_fall_back_when_unset(self):
        attempt = self.prepared_with_sources(self.new_job())
        env = [(k, v) for k, v in attempt.environment()
               if k not in ("BUILD_FAILURE_EXIT_CODE", "SYSTEM_FAILURE_EXIT_CODE")]
        record = attempt.run_stage("build_script", commands=["exit 3"], env=env)
        self.assertEqual(record.returncode, 1, self.describe([record]))
        with open(attempt.exit_code_file, "rb") as f:
            self.assertEqual(f.read(), b"3\n")
        unknown = [(k, v) for k, v in env if k != "SBX_SANDBOX_ID"]
        unknown.append(("SBX_SANDBOX_ID", "j1-0badc0de"))
        record = attempt.run_stage("build_script", commands=["true"], env=unknown)
        self.assertEqual(record.returncode, 2, self.describe([record]))
        attempt.cleanup()

    def test_leftover_daemon_releases_pipes(self):
        daemon = unique_seconds()
        background = unique_seconds()
        attempt = self.prepared(self.new_job())
        attempt.run_stage("get_sources", body=attempt.get_sources_body())
        record = attempt.run_stage("build_script", commands=[
            "(setsid sleep %s &)" % daemon, "nohup sleep %s &" % background, "echo left"])
        self.assertEqual(record.returncode, 0, self.describe([record]))
        self.assertLess(record.pipe_delay, 1.0)
        self.assertNoProcesses(sleeper(daemon), timeout=5)
        self.assertNoProcesses(sleeper(background), timeout=5)
        attempt.cleanup()

    def test_concurrent_jobs_of_one_project(self):
        job_a = self.new_job(concurrent_project_id=0, concurrent_id=0)
        job_b = self.new_job(concurrent_project_id=1, concurrent_id=1)
        attempts = {}

        def prepare(name, job):
            attempts[name] = self.prepared(job)

        threads = [threading.Thread(target=prepare, args=("a", job_a)),
                   threading.Thread(target=prepare, args=("b", job_b))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        self.assertEqual(sorted(attempts), ["a", "b"])
        a, b = attempts["a"], attempts["b"]
        id_a = a.job_env["SBX_SANDBOX_ID"]
        id_b = b.job_env["SBX_SANDBOX_ID"]
        self.assertNotEqual(id_a, id_b)
        for attempt in (a, b):
            record = attempt.run_stage("get_sources", body=attempt.get_sources_body())
            self.assertEqual(record.returncode, 0, self.describe([record]))

        command, marker = ready_marker("a")
        token = "only-a-%d" % random.randint(0, 999999)
        running = a.start_stage("build_script", commands=[
            "echo %s > %s" % (token, token), command, "sleep 3"])
        self.assertTrue(running.wait_output(marker, 60), self.describe([running]))
        check = b.run_stage("build_script", commands=[
            "pwd", "if [ -e %s ] || grep -rqs %s /builds; then echo visible; "
            "else echo invisible; fi" % (token, token)])
        running.finished.wait(60)
        self.assertEqual(running.returncode, 0, self.describe([running]))
        self.assertEqual(check.returncode, 0, self.describe([check]))
        self.assertIn(b"invisible\n", bytes(check.stdout))

        found = [path for path in glob.glob(os.path.join(self.state_dir, "jobs", "*", "**",
                                                          token), recursive=True)]
        self.assertEqual(len(found), 1, found)
        self.assertIn("/jobs/%s/" % id_a, found[0])
        self.assertTrue(os.path.isdir(self.job_dir(id_a)))
        self.assertTrue(os.path.isdir(self.job_dir(id_b)))
        a.cleanup()
        b.cleanup()
        self.assertSandboxGone(id_a)
        self.assertSandboxGone(id_b)


class JobDeadlineTest(SbxTestCase):
    """The journal deadline stays created + timeout + deadline_margin (600 s in these tests),
    with the timeout capped at 2147483647 s, whatever timeout the job claims."""

    TIMEOUT_MAX = 2147483647
    INT64_MAX = 9223372036854775807

    def prepared_entry(self, job):
        attempt = self.prepared(job)
        self.addCleanup(attempt.cleanup)
        sandbox_id = attempt.job_env["SBX_SANDBOX_ID"]
        with open(os.path.join(self.state_dir, "sandboxes", sandbox_id + ".json")) as f:
            return attempt, json.load(f)

    def test_huge_timeout_capped(self):
        attempt, entry = self.prepared_entry(self.new_job(timeout=self.INT64_MAX))
        self.assertEqual(entry["deadline"] - entry["created"], self.TIMEOUT_MAX + 600)
        self.assertRegex(bytes(attempt.records[-1].stderr).decode(), r"longer than 2147483647 s")
        # The init lives until the deadline, so the sandbox still runs stages.
        record = attempt.run_stage("get_sources", body=attempt.get_sources_body())
        self.assertEqual(record.returncode, 0, self.describe([record]))

    def test_variable_cannot_extend_deadline(self):
        job = self.new_job(timeout=3600, variables=[
            gitlab_runner.Variable("CI_JOB_TIMEOUT", str(self.INT64_MAX))])
        _, entry = self.prepared_entry(job)
        self.assertEqual(entry["deadline"] - entry["created"], 3600 + 600)

    def test_plugin_caps_timeout(self):
        # A host of the plugin ABI other than the shim passes the timeout as it is.
        sandbox_id = "t-" + "".join(random.choice("0123456789abcdef") for _ in range(12))
        host_tool = os.path.join(self.build, "tests", "tools", "sbx-local-host")
        result = subprocess.run([host_tool, "--config", self.config_path, "prepare", sandbox_id,
                                 "--timeout", str(self.INT64_MAX)], capture_output=True,
                                timeout=60)
        self.addCleanup(subprocess.run, [host_tool, "--config", self.config_path, "destroy",
                                         sandbox_id], capture_output=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr.decode(errors="replace"))
        self.assertIn(b"longer than 2147483647 s", result.stderr)
        with open(os.path.join(self.state_dir, "sandboxes", sandbox_id + ".json")) as f:
            entry = json.load(f)
        self.assertEqual(entry["deadline"] - entry["created"], self.TIMEOUT_MAX + 600)


if __name__ == "__main__":
    unittest.main()
