"""Emulation of GitLab Runner's custom executor, driving a real driver binary.

It calls the driver the way GitLab Runner 19.x does (executors/custom and helpers/process in the
runner's source), so the integration tests and the demo see what a real runner would see:

- one fresh temp dir <T> per prepare attempt (``custom-executor<digits>``, 0700) holding
  ``response.json`` (0600, with the job token) and one ``script<digits>/script`` (0700) per stage;
- the environment built in the runner's order: its own environ, then TMPDIR,
  BUILD_FAILURE_EXIT_CODE, SYSTEM_FAILURE_EXIT_CODE, BUILD_EXIT_CODE_FILE, JOB_RESPONSE_FILE,
  then the config_exec ``job_env`` unprefixed, then ``CUSTOM_ENV_<KEY>`` for every job variable,
  ``CUSTOM_ENV_CI_JOB_SERVICES`` last; a later duplicate key wins, as with Go's os/exec;
- cwd <T>, stdin /dev/null, stdout and stderr pipes, a new process group; an exec has ended only
  when the process exited and both pipes reached EOF;
- cancellation: SIGTERM to the group, SIGKILL after the graceful timeout, then the "dormant"
  give-up after the force timeout;
- the exit code mapping: 0 ok, 1 a build failure whose code comes from BUILD_EXIT_CODE_FILE,
  2 a system failure, anything else an unknown failure;
- prepare retried up to three times, with cleanup_exec after each failed attempt;
- the stage order and skipping rules, the bash script shape and the stage bodies.

Every exec is recorded (argv, env, cwd, timings, signals, exit status, output) in ExecRecord.
Only the Python standard library is used.
"""

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time

BUILD_FAILURE_EXIT_CODE = 1
SYSTEM_FAILURE_EXIT_CODE = 2

# Exit code the runner hard-wires for a BUILD_EXIT_CODE_FILE it cannot parse.
UNPARSABLE_EXIT_CODE_FILE_CODE = 2

# The runner's defaults (helpers/process, common/consts.go): graceful_kill_timeout 600 s,
# force_kill_timeout 10 s, 3 prepare attempts 3 s apart, 5 min wait for a stage goroutine
# after the job context died.
DEFAULT_GRACEFUL_KILL_TIMEOUT = 600.0
DEFAULT_FORCE_KILL_TIMEOUT = 10.0
PREPARATION_RETRIES = 3
PREPARATION_RETRY_INTERVAL = 3.0
WAIT_FOR_BUILD_FINISH_TIMEOUT = 300.0
DEFAULT_JOB_TIMEOUT = 7200

# Some of the runner's feature flags with their defaults. NOTE: the runner sends about 50, in
# the order of helpers/featureflags/flags.go; this list and its order are from memory. Drivers
# treat them as opaque CUSTOM_ENV_FF_* variables, so a subset exercises the same code paths.
FEATURE_FLAGS = [
    ("FF_NETWORK_PER_BUILD", "false"),
    ("FF_USE_LEGACY_KUBERNETES_EXECUTION_STRATEGY", "false"),
    ("FF_USE_DIRECT_DOWNLOAD", "true"),
    ("FF_SKIP_NOOP_BUILD_STAGES", "true"),
    ("FF_USE_FASTZIP", "false"),
    ("FF_DISABLE_UMASK_FOR_DOCKER_EXECUTOR", "false"),
    ("FF_ENABLE_BASH_EXIT_CODE_CHECK", "false"),
    ("FF_USE_WINDOWS_LEGACY_PROCESS_STRATEGY", "false"),
    ("FF_USE_NEW_BASH_EVAL_STRATEGY", "false"),
    ("FF_USE_POWERSHELL_PATH_RESOLVER", "false"),
    ("FF_USE_DYNAMIC_TRACE_FORCE_SEND_INTERVAL", "false"),
    ("FF_SCRIPT_SECTIONS", "false"),
    ("FF_ENABLE_JOB_CLEANUP", "false"),
    ("FF_KUBERNETES_HONOR_ENTRYPOINT", "false"),
    ("FF_POSIXLY_CORRECT_ESCAPES", "false"),
    ("FF_RESOLVE_FULL_TLS_CHAIN", "false"),
    ("FF_DISABLE_POWERSHELL_STDIN", "false"),
    ("FF_USE_POD_ACTIVE_DEADLINE_SECONDS", "true"),
    ("FF_USE_ADVANCED_POD_SPEC_CONFIGURATION", "false"),
    ("FF_SET_PERMISSIONS_BEFORE_CLEANUP", "true"),
    ("FF_SECRET_RESOLVING_FAILS_IF_MISSING", "true"),
    ("FF_PRINT_POD_EVENTS", "false"),
    ("FF_USE_GIT_BUNDLE_URIS", "true"),
    ("FF_USE_GIT_NATIVE_CLONE", "false"),
    ("FF_USE_DUMB_INIT_WITH_KUBERNETES_EXECUTOR", "false"),
    ("FF_USE_INIT_WITH_DOCKER_EXECUTOR", "false"),
    ("FF_LOG_IMAGES_CONFIGURED_FOR_JOB", "false"),
    ("FF_CLEAN_UP_FAILED_CACHE_EXTRACT", "false"),
    ("FF_USE_WINDOWS_JOB_OBJECT", "false"),
    ("FF_TIMESTAMPS", "false"),
    ("FF_DISABLE_AUTOMATIC_TOKEN_ROTATION", "false"),
    ("FF_USE_LEGACY_GCS_CACHE_ADAPTER", "false"),
    ("FF_GIT_URLS_WITHOUT_TOKENS", "false"),
    ("FF_WAIT_FOR_POD_TO_BE_REACHABLE", "false"),
    ("FF_MASK_ALL_DEFAULT_TOKENS", "true"),
    ("FF_USE_EXPONENTIAL_BACKOFF_STAGE_RETRY", "true"),
    ("FF_USE_LEGACY_BASH_EVAL", "false"),
]

# Stages whose scripts the runner generates; the rest run user code.
RUNNER_STAGES = frozenset([
    "prepare_script", "get_sources", "clear_worktree", "restore_cache", "download_artifacts",
    "archive_cache", "archive_cache_on_failure", "upload_artifacts_on_success",
    "upload_artifacts_on_failure", "cleanup_file_variables",
])


# ---------------------------------------------------------------------------------------------
# Shell escaping, as helpers.ShellEscape does it.

_LITERAL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789,-./@_")
_QUOTE = frozenset(b" !\"#$%&()*+:;<=>?[]^`{|}~")
_BACKSLASH = {0x07: b"\\a", 0x08: b"\\b", 0x09: b"\\t", 0x0a: b"\\n", 0x0b: b"\\v",
              0x0c: b"\\f", 0x0d: b"\\r", 0x27: b"\\'", 0x5c: b"\\\\"}


def shell_escape(value):
    """Quote VALUE (str or bytes) for bash: unchanged when only literal bytes, else $'...'."""
    if isinstance(value, str):
        value = value.encode()
    if not value:
        return b"''"
    out = bytearray()
    quote = False
    for byte in value:
        if byte in _LITERAL:
            out.append(byte)
        elif byte in _QUOTE:
            out.append(byte)
            quote = True
        elif byte in _BACKSLASH:
            out += _BACKSLASH[byte]
            quote = True
        else:
            out += b"\\x%02x" % byte
            quote = True
    if quote:
        return b"$'" + bytes(out) + b"'"
    return bytes(out)


def go_quote(path):
    """Quote PATH like Go's %q for the ASCII paths the harness uses."""
    return json.dumps(path).encode()


# ---------------------------------------------------------------------------------------------
# Errors as the runner classifies them.

class ExecError(Exception):
    """Base of the outcomes of one exec that are not a success."""


class BuildError(ExecError):
    """Driver exited with BUILD_FAILURE_EXIT_CODE: the job failed with EXIT_CODE."""

    def __init__(self, exit_code, message):
        super().__init__(message)
        self.exit_code = exit_code


class SystemFailure(ExecError):
    """Driver exited with SYSTEM_FAILURE_EXIT_CODE, or could not be started."""


class UnknownFailure(ExecError):
    """Driver exited with another code or was killed by a signal (EXIT_CODE -1)."""

    def __init__(self, exit_code, message):
        super().__init__(message)
        self.exit_code = exit_code


class KillError(ExecError):
    """The process group outlived SIGKILL and the force timeout ("dormant")."""


class ConfigurationError(ExecError):
    """config_exec output the runner cannot use (no retry for missing directories)."""


_ATOI = re.compile(rb"^[+-]?[0-9]+$")
_BUFIO_MAX_TOKEN = 64 * 1024


def parse_exit_code_file(path):
    """Map an exit 1 to an error, reading PATH like command.waitForCommand does.

    Absent file: exit code 1. Otherwise the first line (bufio.ScanLines, trailing \\r
    dropped) must be a strconv.Atoi integer; anything else is an unknown failure with code 2.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return BuildError(1, "exit status 1")
    line = data.split(b"\n", 1)[0]
    if line.endswith(b"\r"):
        line = line[:-1]
    if len(line) > _BUFIO_MAX_TOKEN:
        line = b""  # bufio.Scanner fails on a token above its 64 KiB buffer; Text() is empty
    if _ATOI.match(line):
        value = int(line)
        if -(1 << 63) <= value < (1 << 63):
            return BuildError(value, "exit status %s" % line.decode())
    return UnknownFailure(UNPARSABLE_EXIT_CODE_FILE_CODE,
                          "unknown Custom executor executable exit code %d; executable "
                          "execution terminated with: exit status 1"
                          % UNPARSABLE_EXIT_CODE_FILE_CODE)


def classify_exit(returncode, exit_code_file):
    """Map a driver's wait status (Popen returncode) to None or an ExecError."""
    if returncode == 0:
        return None
    if returncode == BUILD_FAILURE_EXIT_CODE:
        return parse_exit_code_file(exit_code_file)
    if returncode == SYSTEM_FAILURE_EXIT_CODE:
        return SystemFailure("exit status 2")
    if returncode < 0:
        # Go's os.ProcessState prints the lowercase signal description ("signal: killed").
        name = (signal.strsignal(-returncode) or "signal %d" % -returncode).lower()
        return UnknownFailure(-1, "unknown Custom executor executable exit code -1; executable "
                              "execution terminated with: signal: %s" % name)
    return UnknownFailure(returncode, "unknown Custom executor executable exit code %d; "
                          "executable execution terminated with: exit status %d"
                          % (returncode, returncode))


# ---------------------------------------------------------------------------------------------
# Contexts: a cancel flag with an optional deadline and a parent, like Go's context.Context.

class Context:
    """Cancellation scope. REASON is "canceled" or "timedout" once done."""

    def __init__(self, parent=None, timeout=None):
        self.parent = parent
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self._reason = None
        self._lock = threading.Lock()

    def cancel(self, reason="canceled"):
        with self._lock:
            if self._reason is None:
                self._reason = reason

    @property
    def reason(self):
        with self._lock:
            if self._reason is not None:
                return self._reason
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.cancel("timedout")
            return "timedout"
        if self.parent is not None:
            return self.parent.reason
        return None

    def done(self):
        return self.reason is not None


# ---------------------------------------------------------------------------------------------
# One exec of the driver.

class ExecRecord:
    """What the harness saw of one driver exec."""

    def __init__(self, kind, argv, env, cwd, stage=None, script_path=None):
        self.kind = kind  # "config", "prepare", "run" or "cleanup"
        self.argv = list(argv)
        self.env = list(env)  # (key, value) pairs in the order passed to execve
        self.cwd = cwd
        self.stage = stage
        self.script_path = script_path
        self.pid = None
        self.start_time = None
        self.exit_time = None  # when waitpid reported the exit
        self.end_time = None  # when the exec counted as ended (exit and both pipes at EOF)
        self.returncode = None  # Popen convention: negative for a signal
        self.signals = []  # (monotonic time, signal name) sent to the process group
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.output = bytearray()  # stdout and stderr interleaved as they arrived
        self.error = None  # None or an ExecError
        self.start_error = None
        self.dormant = False
        self.started = threading.Event()
        self.finished = threading.Event()
        self._output_cond = threading.Condition()

    def env_dict(self):
        return dict(self.env)

    @property
    def pipe_delay(self):
        """Seconds between the process exit and the last pipe EOF, or None."""
        if self.exit_time is None or self.end_time is None:
            return None
        return self.end_time - self.exit_time

    def wait_output(self, needle, timeout):
        """Wait until NEEDLE (bytes) appeared in the output; return whether it did."""
        end = time.monotonic() + timeout
        with self._output_cond:
            while needle not in self.output:
                left = end - time.monotonic()
                if left <= 0 or self.finished.is_set():
                    return needle in self.output
                self._output_cond.wait(min(left, 0.2))
            return True

    def _append(self, stream, data):
        with self._output_cond:
            stream += data
            self.output += data
            self._output_cond.notify_all()

    def __repr__(self):
        return "<exec %s %s rc=%r error=%r>" % (self.kind, self.stage or "", self.returncode,
                                                self.error)


def _dedup_env(pairs):
    """Keep the last value of each key at the position of its last occurrence (Go's dedupEnv)."""
    last = {}
    for index, (key, _) in enumerate(pairs):
        last[key] = index
    return [pair for index, pair in enumerate(pairs) if last[pair[0]] == index]


class RunnerSettings:
    """The [[runners]] / [runners.custom] part of a config.toml, plus the runner's environ."""

    def __init__(self, driver, environ=None, config_args=("gitlab", "config"),
                 prepare_args=("gitlab", "prepare"), run_args=("gitlab", "run"),
                 cleanup_args=("gitlab", "cleanup"), wrapper=(),
                 graceful_kill_timeout=DEFAULT_GRACEFUL_KILL_TIMEOUT,
                 force_kill_timeout=DEFAULT_FORCE_KILL_TIMEOUT, tmp_root=None,
                 preparation_retry_interval=PREPARATION_RETRY_INTERVAL,
                 build_finish_timeout=WAIT_FOR_BUILD_FINISH_TIMEOUT, stage_retry_delay=5.0,
                 short_token="t3stT0k3n", runner_environment=()):
        self.driver = driver
        self.environ = dict(os.environ if environ is None else environ)
        self.config_args = list(config_args)
        self.prepare_args = list(prepare_args)
        self.run_args = list(run_args)
        self.cleanup_args = list(cleanup_args)
        # Prefix of every driver argv (e.g. nsenter into a test network namespace); it must
        # exec the driver in place so the driver keeps the pid and process group.
        self.wrapper = list(wrapper)
        self.graceful_kill_timeout = graceful_kill_timeout
        self.force_kill_timeout = force_kill_timeout
        self.tmp_root = tmp_root
        self.preparation_retry_interval = preparation_retry_interval
        self.build_finish_timeout = build_finish_timeout
        self.stage_retry_delay = stage_retry_delay
        self.short_token = short_token
        self.runner_environment = list(runner_environment)


class Variable:
    """One job variable as GitLab sends it."""

    def __init__(self, key, value, file=False, masked=False, public=True, raw=False):
        self.key = key
        self.value = value
        self.file = file
        self.masked = masked
        self.public = public
        self.raw = raw

    def to_json(self):
        return {"key": self.key, "value": self.value, "public": self.public,
                "file": self.file, "masked": self.masked, "raw": self.raw}


class Job:
    """A job payload reduced to what the custom executor uses."""

    def __init__(self, job_id=None, project_id=4242, project_path="group/project",
                 script=("echo hello",), steps=(), after_script=(), variables=(),
                 image=None, services=(), timeout=3600, script_timeout=None,
                 after_script_timeout=300, protected=False, server_url="https://gitlab.invalid",
                 repo_url=None, commit_sha=None, ref="main", git_strategy=None,
                 git_depth=0, get_sources_attempts=1, pre_get_sources_script=(),
                 cache=False, artifacts=False, dependencies=False, concurrent_id=0,
                 concurrent_project_id=0, name="test", stage="test"):
        self.id = job_id if job_id is not None else random.randint(100000, 999999999)
        self.token = "glcbt-64_%s" % "".join(random.choice("abcdefghijkmnopqrstuvwxyz0123456789")
                                             for _ in range(20))
        self.project_id = project_id
        self.project_path = project_path
        self.script = list(script)
        self.steps = [(name, list(commands)) for name, commands in steps]
        self.after_script = list(after_script)
        self.variables = list(variables)
        self.image = image
        self.services = list(services)
        self.timeout = timeout
        self.script_timeout = script_timeout
        self.after_script_timeout = after_script_timeout
        self.protected = protected
        self.server_url = server_url
        self.repo_url = repo_url
        self.commit_sha = commit_sha
        self.ref = ref
        self.git_strategy = git_strategy or ("clone" if repo_url else "none")
        self.git_depth = git_depth
        self.get_sources_attempts = get_sources_attempts
        self.pre_get_sources_script = list(pre_get_sources_script)
        self.cache = cache
        self.artifacts = artifacts
        self.dependencies = dependencies
        self.concurrent_id = concurrent_id
        self.concurrent_project_id = concurrent_project_id
        self.name = name
        self.stage = stage
        self.pipeline_id = self.id // 10 + 1

    def gitlab_variables(self):
        """Variables GitLab itself sends (before the user's)."""
        slug = re.sub(r"[^a-z0-9]", "-", self.project_path.lower())[:63].strip("-")
        repo = self.repo_url or "%s/%s.git" % (self.server_url, self.project_path)
        items = [
            Variable("CI_JOB_ID", str(self.id)),
            Variable("CI_JOB_NAME", self.name),
            Variable("CI_JOB_STAGE", self.stage),
            Variable("CI_JOB_TOKEN", self.token, masked=True, public=False),
            Variable("CI_PIPELINE_ID", str(self.pipeline_id)),
            Variable("CI_PROJECT_ID", str(self.project_id)),
            Variable("CI_PROJECT_PATH", self.project_path),
            Variable("CI_PROJECT_PATH_SLUG", slug),
            Variable("CI_PROJECT_NAME", self.project_path.rsplit("/", 1)[-1]),
            Variable("CI_SERVER_URL", self.server_url),
            Variable("CI_REPOSITORY_URL", repo, masked=True),
            Variable("CI_COMMIT_SHA", self.commit_sha or "0" * 40),
            Variable("CI_COMMIT_REF_NAME", self.ref),
            Variable("CI_COMMIT_REF_PROTECTED", "true" if self.protected else "false"),
            Variable("GITLAB_CI", "true"),
            Variable("CI", "true"),
        ]
        return items + self.variables

    def response_repo_url(self):
        """git_info.repo_url as GitLab sends it: the clone URL with the job token in it."""
        if self.repo_url:
            return self.repo_url
        scheme, rest = self.server_url.split("://", 1)
        return "%s://gitlab-ci-token:%s@%s/%s.git" % (scheme, self.token, rest.rstrip("/"),
                                                      self.project_path)

    def response(self):
        """The job payload that <T>/response.json holds (json.Encode(spec.Job))."""
        return {
            "id": self.id,
            "token": self.token,
            "allow_git_fetch": True,
            "job_info": {"id": self.id, "name": self.name, "stage": self.stage,
                         "project_id": self.project_id,
                         "project_name": self.project_path.rsplit("/", 1)[-1],
                         "timeout": self.timeout},
            "git_info": {"repo_url": self.response_repo_url(), "ref": self.ref,
                         "sha": self.commit_sha or "", "before_sha": "", "ref_type": "branch",
                         "refspecs": ["+refs/heads/%s:refs/remotes/origin/%s"
                                      % (self.ref, self.ref)],
                         "depth": self.git_depth, "protected": self.protected},
            "runner_info": {"timeout": self.timeout},
            "inputs": None,
            "variables": [v.to_json() for v in self.gitlab_variables()],
            "steps": [{"name": "script", "script": self.script, "timeout": self.timeout,
                       "when": "on_success", "allow_failure": False}]
            + [{"name": name, "script": commands, "timeout": self.timeout,
                "when": "on_success", "allow_failure": False} for name, commands in self.steps]
            + ([{"name": "after_script", "script": self.after_script,
                 "timeout": self.after_script_timeout, "when": "always",
                 "allow_failure": True}] if self.after_script else []),
            "image": {"name": self.image or ""},
            "services": [{"name": s} for s in self.services],
            "artifacts": None,
            "cache": None,
            "credentials": [],
            "dependencies": [],
            "features": {"trace_sections": True},
            "policy_options": {},
            "suspend_options": {},
        }


class JobResult:
    """Outcome of Runner.run_job."""

    def __init__(self):
        self.status = None  # "success", "failed", "canceled", "timedout", "system_failure"
        self.failure_reason = None
        self.exit_code = None
        self.message = None
        self.execs = []
        self.attempts = []
        self.log = bytearray()

    def stages(self):
        return [record.stage for record in self.execs if record.kind == "run"]

    def kinds(self):
        return [record.kind for record in self.execs]


# ---------------------------------------------------------------------------------------------
# Script generation (shells/bash.go, default feature flags).

def bash_script(body, shell="bash"):
    """Wrap BODY (bytes) in the shape BashWriter.Finish produces."""
    return (b"#!/usr/bin/env " + shell.encode() + b"\n\n"
            b"trap 'exit 1' TERM\n\n"
            b"case \"$(set -o)\" in *\"pipefail\"*) set -o pipefail;; esac; set -o errexit\n"
            b"set +o noclobber\n"
            b"(trap 'exit 1' TERM; eval " + shell_escape(body) + b") < /dev/null\n"
            b"exit 0\n")


def _notice(text):
    return b"echo " + shell_escape(b"\x1b[32;1m" + text.encode() + b"\x1b[0;m")


def _warning(text):
    return b"echo " + shell_escape(b"\x1b[0;33m" + text.encode() + b"\x1b[0;m")


def _command_lines(commands):
    lines = []
    for command in commands:
        raw = command.encode() if isinstance(command, str) else command
        first = raw.split(b"\n", 1)[0]
        shown = first + (b" # collapsed multi-line command" if b"\n" in raw else b"")
        lines.append(b"echo " + shell_escape(b"\x1b[32;1m$ " + shown + b"\x1b[0;m"))
        lines.append(raw)
    return lines


class Attempt:
    """One executor object: a prepare attempt with its own <T>, config_exec and job_env."""

    def __init__(self, runner, job, number, log):
        self.runner = runner
        self.settings = runner.settings
        self.job = job
        self.number = number
        self.log = log
        self.records = []
        self.job_env = {}
        self.config_output = None
        self.builds_dir = ""
        self.cache_dir = ""
        self.project_dir = ""
        self.shell = "bash"
        self.job_status = "running"
        self.temp_dir = _make_temp_dir(self.settings.tmp_root, "custom-executor")
        self.response_file = os.path.join(self.temp_dir, "response.json")
        self.exit_code_file = os.path.join(self.temp_dir, "build_exit_code")
        fd = os.open(self.response_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(job.response(), f)
            f.write("\n")

    # -- variables and environment -------------------------------------------------------

    def variables(self):
        """Build.GetAllVariables() for the current state of the attempt."""
        job = self.job
        items = [Variable(name, value) for name, value in FEATURE_FLAGS]
        if job.image:
            items.append(Variable("CI_JOB_IMAGE", job.image))
        items.append(Variable("CI_RUNNER_SHORT_TOKEN", self.settings.short_token))
        items += [Variable(k, v) for k, v in self.settings.runner_environment]
        items += [
            Variable("CI_BUILDS_DIR", self.builds_dir),
            Variable("CI_PROJECT_DIR", self.project_dir),
            Variable("CI_CONCURRENT_ID", str(job.concurrent_id)),
            Variable("CI_CONCURRENT_PROJECT_ID", str(job.concurrent_project_id)),
            Variable("CI_SERVER", "yes"),
            Variable("CI_JOB_STATUS", self.job_status),
            Variable("CI_JOB_TIMEOUT", str(job.timeout)),
        ]
        items += job.gitlab_variables()
        items += [
            Variable("CI_SHARED_ENVIRONMENT", "true"),
            Variable("CI_RUNNER_VERSION", "19.4.0"),
            Variable("CI_RUNNER_REVISION", "d79f3e7b"),
            Variable("CI_RUNNER_EXECUTABLE_ARCH", "linux/amd64"),
            Variable("RUNNER_TEMP_PROJECT_DIR",
                     (self.project_dir + ".tmp") if self.project_dir else ".tmp"),
        ]
        return items

    def services_json(self):
        if not self.job.services:
            return ""
        return json.dumps([{"name": s, "alias": "", "entrypoint": None, "command": None}
                           for s in self.job.services], separators=(",", ":"))

    def environment(self, with_job_env=True):
        pairs = list(self.settings.environ.items())
        pairs += [
            ("TMPDIR", self.temp_dir),
            ("BUILD_FAILURE_EXIT_CODE", str(BUILD_FAILURE_EXIT_CODE)),
            ("SYSTEM_FAILURE_EXIT_CODE", str(SYSTEM_FAILURE_EXIT_CODE)),
            ("BUILD_EXIT_CODE_FILE", self.exit_code_file),
            ("JOB_RESPONSE_FILE", self.response_file),
        ]
        if with_job_env:
            pairs += list(self.job_env.items())
        pairs += [("CUSTOM_ENV_" + v.key, v.value) for v in self.variables()]
        pairs.append(("CUSTOM_ENV_CI_JOB_SERVICES", self.services_json()))
        return _dedup_env(pairs)

    # -- executing -----------------------------------------------------------------------

    def start(self, kind, args, ctx=None, stage=None, script_path=None, env=None,
              on_output=None):
        """Start one exec in a thread; return its ExecRecord (wait on .finished)."""
        argv = self.settings.wrapper + [self.settings.driver] + list(args)
        if env is None:
            env = self.environment(with_job_env=(kind != "config"))
        record = ExecRecord(kind, argv, env, self.temp_dir, stage=stage, script_path=script_path)
        self.records.append(record)
        self.runner.records.append(record)
        thread = threading.Thread(target=self._execute, args=(record, ctx, on_output),
                                  daemon=True)
        thread.start()
        record.thread = thread
        return record

    def execute(self, kind, args, ctx=None, **kwargs):
        record = self.start(kind, args, ctx=ctx, **kwargs)
        record.finished.wait()
        return record

    def _execute(self, record, ctx, on_output):
        settings = self.settings
        log_output = record.kind != "cleanup"  # cleanup output goes to the runner's own log
        try:
            record.start_time = time.monotonic()
            try:
                process = subprocess.Popen(
                    record.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, cwd=record.cwd, env=dict(record.env),
                    process_group=0)
            except OSError as exc:
                record.start_error = "failed to start command: %s" % exc
                record.error = SystemFailure(record.start_error)
                record.end_time = time.monotonic()
                return
            record.pid = process.pid
            record.started.set()

            done = {"stdout": threading.Event(), "stderr": threading.Event()}

            def pump(name, pipe, stream):
                fd = pipe.fileno()
                while True:
                    try:
                        data = os.read(fd, 65536)
                    except OSError:
                        data = b""
                    if not data:
                        break
                    record._append(stream, data)
                    if log_output and (record.kind != "config" or name == "stderr"):
                        self.log.write(data)
                    if on_output is not None:
                        on_output(record)
                pipe.close()
                done[name].set()

            readers = [threading.Thread(target=pump, args=("stdout", process.stdout,
                                                           record.stdout), daemon=True),
                       threading.Thread(target=pump, args=("stderr", process.stderr,
                                                           record.stderr), daemon=True)]
            for reader in readers:
                reader.start()

            phase = None
            phase_deadline = None
            while True:
                if record.returncode is None:
                    returncode = process.poll()
                    if returncode is not None:
                        record.returncode = returncode
                        record.exit_time = time.monotonic()
                if record.returncode is not None and all(e.is_set() for e in done.values()):
                    record.end_time = time.monotonic()
                    break
                now = time.monotonic()
                if phase is None and ctx is not None and ctx.done():
                    if not self._signal(record, signal.SIGTERM):
                        self._signal(record, signal.SIGKILL)
                    phase = "terminate"
                    phase_deadline = now + settings.graceful_kill_timeout
                elif phase == "terminate" and now >= phase_deadline:
                    self._signal(record, signal.SIGKILL)
                    phase = "kill"
                    phase_deadline = now + settings.force_kill_timeout
                elif phase == "kill" and now >= phase_deadline:
                    record.dormant = True
                    record.error = KillError("failed to kill process PID=%d, likely process "
                                             "is dormant" % record.pid)
                    record.end_time = now
                    return
                time.sleep(0.01)
            record.error = classify_exit(record.returncode, self.exit_code_file)
        finally:
            record.finished.set()
            with record._output_cond:
                record._output_cond.notify_all()

    @staticmethod
    def _signal(record, signum):
        record.signals.append((time.monotonic(), signal.Signals(signum).name))
        try:
            os.killpg(record.pid, signum)
            return True
        except OSError:
            return False

    # -- the four executables -----------------------------------------------------------

    def config(self, ctx=None):
        """Run config_exec and apply its JSON; raise ExecError on failure."""
        record = self.execute("config", self.settings.config_args, ctx=ctx)
        if record.error is not None:
            raise record.error
        self.config_output = bytes(record.stdout)
        if not record.stdout:
            raise ConfigurationError("the builds_dir is not configured")
        try:
            decoded = _decode_single_json(bytes(record.stdout))
        except ValueError as exc:
            raise SystemFailure("error while parsing JSON output: %s" % exc) from None
        if not isinstance(decoded, dict):
            raise SystemFailure("error while parsing JSON output: not an object")
        _check_types(decoded)
        if decoded.get("builds_dir") is not None:
            self.builds_dir = decoded["builds_dir"]
        if decoded.get("cache_dir") is not None:
            self.cache_dir = decoded["cache_dir"]
        if decoded.get("shell") is not None:
            if decoded["shell"] not in ("bash", "sh"):
                raise SystemFailure("shell %s not found" % decoded["shell"])
            self.shell = decoded["shell"]
        if decoded.get("job_env") is not None:
            self.job_env = dict(decoded["job_env"])
        driver = decoded.get("driver") or {}
        banner = "Using Custom executor"
        if driver.get("name"):
            banner += " with driver %s" % driver["name"]
            if driver.get("version"):
                banner += " %s" % driver["version"]
        self.log.line(banner + "...")
        if not self.builds_dir:
            raise ConfigurationError("the builds_dir is not configured")
        if not self.cache_dir:
            raise ConfigurationError("the cache_dir is not configured")
        self.project_dir = self.builds_dir.rstrip("/") + "/" + self.job.project_path
        if self.job.git_strategy == "empty":
            self.project_dir += "-empty"
        return decoded

    def prepare(self, ctx=None):
        record = self.execute("prepare", self.settings.prepare_args, ctx=ctx)
        if record.error is not None:
            raise record.error
        return record

    def cleanup(self):
        """Run cleanup_exec (never cancelled), then remove <T> like executor.Cleanup()."""
        record = self.execute("cleanup", self.settings.cleanup_args, ctx=None)
        if record.error is not None:
            self.log.line("WARNING: Cleanup script failed: %s" % record.error)
        return record

    def remove_temp_dir(self):
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def write_script(self, script):
        """Write SCRIPT into a new <T>/script<digits>/script (0700) and return its path."""
        directory = _make_temp_dir(self.temp_dir, "script")
        path = os.path.join(directory, "script")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o700)
        with os.fdopen(fd, "wb") as f:
            f.write(script)
        return path

    def start_stage(self, stage, body=None, commands=None, ctx=None, script=None,
                    on_output=None, env=None):
        """Start run_exec for STAGE. Give SCRIPT (whole file), BODY, or user COMMANDS."""
        if script is None:
            if body is None:
                body = self.user_body(commands or [])
            script = bash_script(body, self.shell)
        path = self.write_script(script)
        return self.start("run", self.settings.run_args + [path, stage], ctx=ctx, stage=stage,
                          script_path=path, on_output=on_output, env=env)

    def run_stage(self, stage, **kwargs):
        record = self.start_stage(stage, **kwargs)
        record.finished.wait()
        return record

    # -- stage bodies ---------------------------------------------------------------------

    def exports(self, file_contents=True):
        project_tmp = self.project_dir + ".tmp"
        lines = []
        for variable in self.variables():
            if variable.file:
                path = project_tmp + "/" + variable.key
                lines.append(b"mkdir -p " + go_quote(project_tmp))
                if file_contents:
                    lines.append(b"printf '%s' " + shell_escape(variable.value) + b" > "
                                 + go_quote(path))
                lines.append(b"export " + variable.key.encode() + b"=" + go_quote(path))
            else:
                lines.append(b"export " + variable.key.encode() + b"="
                             + shell_escape(variable.value))
        env_file = project_tmp + "/gitlab_runner_env"
        lines.append(b"export GITLAB_ENV=" + shell_escape(env_file))
        lines.append(b"mkdir -p " + go_quote(project_tmp))
        lines.append(b"touch " + go_quote(env_file))
        lines.append(b"while read -r line; do export \"$line\"; done < " + go_quote(env_file))
        return lines

    def _cd_project(self):
        return b"cd " + shell_escape(self.project_dir)

    def user_body(self, commands, after_script=False):
        lines = self.exports()
        lines.append(self._cd_project())
        if after_script:
            lines.append(_notice("Running after script..."))
        lines += _command_lines(commands)
        return b"\n".join(lines) + b"\n"

    def prepare_script_body(self):
        project_tmp = self.project_dir + ".tmp"
        lines = [b"echo \"Running on $(hostname)...\"",
                 b"rm \"-f\" " + go_quote(project_tmp + "/gitlab_runner_env"),
                 b"rm \"-f\" " + go_quote(project_tmp + "/masking.db")]
        return b"\n".join(lines) + b"\n"

    def get_sources_body(self):
        job = self.job
        p = self.project_dir
        template = p + ".tmp/git-template"
        lines = self.exports()
        lines += [b"export GIT_TERMINAL_PROMPT=0", b"export GCM_INTERACTIVE=Never",
                  b"export GIT_LFS_SKIP_SMUDGE=1"]
        lines += _command_lines(job.pre_get_sources_script)
        if job.git_strategy == "none":
            lines.append(b"mkdir -p " + shell_escape(p))
            lines.append(_notice("Skipping Git repository setup"))
        elif job.git_strategy == "empty":
            lines.append(_notice("Skipping Git repository setup and creating an empty build "
                                 "directory"))
            lines.append(b"rm -r -f " + shell_escape(p))
            lines.append(b"mkdir -p " + shell_escape(p))
        else:
            lines.append(_notice("Fetching changes..."))
            if job.git_strategy == "clone":
                lines.append(b"rm -r -f " + shell_escape(p))
            lines.append(b"mkdir -p " + shell_escape(template))
            lines.append(b"git config -f " + shell_escape(template + "/config")
                         + b" init.defaultBranch none")
            lines.append(b"git config -f " + shell_escape(template + "/config")
                         + b" fetch.recurseSubmodules false")
            lines.append(b"git init " + shell_escape(p) + b" --template "
                         + shell_escape(template))
            lines.append(self._cd_project())
            lines.append(b"if git remote add origin " + shell_escape(job.repo_url)
                         + b" >/dev/null 2>/dev/null; then")
            lines.append(_notice("Created fresh repository."))
            lines.append(b"else")
            lines.append(b"git remote set-url origin " + shell_escape(job.repo_url))
            lines.append(b"fi")
            fetch = [b"git", b"-c", shell_escape("http.userAgent=gitlab-runner 19.4.0 linux/amd64"),
                     b"fetch", b"origin", shell_escape("+refs/heads/%s:refs/remotes/origin/%s"
                                                       % (job.ref, job.ref))]
            if job.git_depth:
                fetch += [b"--depth", str(job.git_depth).encode()]
            fetch += [b"--prune", b"--quiet"]
            lines.append(b" ".join(fetch))
            target = job.commit_sha or ("refs/remotes/origin/" + job.ref)
            lines.append(_notice("Checking out %s as detached HEAD (ref is %s)..."
                                 % (target[:8], job.ref)))
            lines.append(b"git -c submodule.recurse=false checkout -f -q " + shell_escape(target))
            lines.append(b"git clean -ffdx")
            lines.append(_notice("Skipping Git submodules setup"))
        return b"\n".join(lines) + b"\n"

    def clear_worktree_body(self):
        lines = [_notice("Deleting tracked and untracked files..."), self._cd_project(),
                 b"git rm -rf --ignore-unmatch --quiet .", b"git clean -ffdx -q"]
        return b"\n".join(lines) + b"\n"

    def helper_body(self, notice, action, missing):
        """Body of a cache or artifact stage: runs bare gitlab-runner, as the runner does."""
        lines = self.exports() + [self._cd_project(), _notice(notice),
                                  b"if gitlab-runner --version >/dev/null 2>/dev/null; then",
                                  action, b"else", _warning("Missing gitlab-runner. %s is "
                                                            "disabled." % missing), b"fi"]
        return b"\n".join(lines) + b"\n"

    def cleanup_file_variables_body(self):
        project_tmp = self.project_dir + ".tmp"
        lines = self.exports(file_contents=False)
        for name in ("gitlab_runner_env", "masking.db", ".gitlab-runner.ext.conf", ".glr.gconf"):
            lines.append(b"rm \"-f\" " + go_quote(project_tmp + "/" + name))
        for variable in self.variables():
            if variable.file:
                lines.append(b"rm \"-f\" " + go_quote(project_tmp + "/" + variable.key))
        lines.append(b"rm \"-f\" " + go_quote(self.builds_dir.rstrip("/")
                                              + "/.gitlab-build-uid-gid"))
        return b"\n".join(lines) + b"\n"


def _decode_single_json(data):
    """Decode exactly one JSON value (surrounding whitespace allowed), like encoding/json."""
    text = data.decode("utf-8")
    decoder = json.JSONDecoder()
    stripped = text.lstrip(" \t\r\n")
    value, end = decoder.raw_decode(stripped)
    if stripped[end:].strip(" \t\r\n"):
        raise ValueError("invalid character after top-level value")
    return value


def _check_types(decoded):
    for key in ("builds_dir", "cache_dir", "hostname", "shell"):
        if decoded.get(key) is not None and not isinstance(decoded[key], str):
            raise SystemFailure("error while parsing JSON output: %s is not a string" % key)
    if decoded.get("builds_dir_is_shared") is not None and \
            not isinstance(decoded["builds_dir_is_shared"], bool):
        raise SystemFailure("error while parsing JSON output: builds_dir_is_shared is not a bool")
    job_env = decoded.get("job_env")
    if job_env is not None:
        if not isinstance(job_env, dict) or \
                not all(isinstance(v, str) for v in job_env.values()):
            raise SystemFailure("error while parsing JSON output: job_env is not a string map")


def _make_temp_dir(parent, prefix):
    """os.MkdirTemp(PARENT, PREFIX): PREFIX plus random digits, mode 0700."""
    parent = parent or os.environ.get("TMPDIR") or "/tmp"
    for _ in range(10000):
        path = os.path.join(parent, "%s%d" % (prefix, random.randint(0, 4294967295)))
        try:
            os.mkdir(path, 0o700)
            return path
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, "cannot create a temp dir under %s" % parent)


class JobLog:
    """The job trace: driver output plus the runner's own lines, thread-safe."""

    def __init__(self, echo=None):
        self.data = bytearray()
        self.lock = threading.Lock()
        self.echo = echo

    def write(self, data):
        with self.lock:
            self.data += data
            if self.echo is not None:
                self.echo.write(data)
                self.echo.flush()

    def line(self, text):
        if self.data and not self.data.endswith(b"\n"):
            self.write(b"\n")
        self.write(text.encode() + b"\n")


# ---------------------------------------------------------------------------------------------
# The job flow (common/build.go).

class Runner:
    """Runs jobs through a custom executor driver the way GitLab Runner does."""

    def __init__(self, settings, echo=None):
        self.settings = settings
        self.records = []
        self.echo = echo

    def new_attempt(self, job, number=1, log=None):
        return Attempt(self, job, number, log or JobLog(self.echo))

    def run_job(self, job, cancel_on_output=None, cancel_after=None, abort_on_output=None,
                keep_temp=False):
        """Run JOB to the end; return a JobResult.

        CANCEL_ON_OUTPUT (bytes) or CANCEL_AFTER (seconds) trigger a graceful cancel (GitLab's
        "canceling"); ABORT_ON_OUTPUT kills the whole job context (abort, no more stages).
        """
        result = JobResult()
        log = JobLog(self.echo)
        first_record = len(self.records)
        job_ctx = Context(timeout=job.timeout)
        user_ctx_holder = {"ctx": None, "user_started": False}

        def request_cancel():
            ctx = user_ctx_holder["ctx"]
            if user_ctx_holder["user_started"] and ctx is not None:
                ctx.cancel("canceled")
            else:
                job_ctx.cancel("canceled")

        def on_output(record):
            if cancel_on_output is not None and cancel_on_output in record.output:
                request_cancel()
            if abort_on_output is not None and abort_on_output in record.output:
                job_ctx.cancel("aborted")

        if cancel_after is not None:
            timer = threading.Timer(cancel_after, request_cancel)
            timer.daemon = True
            timer.start()

        log.line("Running with gitlab-runner 19.4.0 (d79f3e7b)")
        log.line("Preparing the \"custom\" executor")
        attempt = None
        error = None
        for number in range(1, PREPARATION_RETRIES + 1):
            attempt = Attempt(self, job, number, log)
            result.attempts.append(attempt)
            error = None
            try:
                attempt.config(ctx=job_ctx)
                attempt.prepare(ctx=job_ctx)
            except ExecError as exc:
                error = exc
            if error is None:
                break
            attempt.cleanup()
            attempt.remove_temp_dir()
            if isinstance(error, (BuildError, ConfigurationError)) or job_ctx.done():
                break
            log.line("ERROR: Preparation failed: %s" % error)
            if number < PREPARATION_RETRIES:
                log.line("Will be retried in %ds ..." % self.settings.preparation_retry_interval)
                time.sleep(self.settings.preparation_retry_interval)
        if error is not None:
            self._finish(result, log, error, job_ctx)
            result.execs = self.records[first_record:]
            return result

        try:
            error = self._execute_stages(attempt, job, job_ctx, user_ctx_holder, on_output, log)
        finally:
            attempt.cleanup()
            if not keep_temp:
                attempt.remove_temp_dir()
        self._finish(result, log, error, job_ctx)
        result.execs = self.records[first_record:]
        return result

    def _run_stage(self, attempt, stage, body, ctx, job_ctx, on_output):
        """run_exec one stage; return (record, error). A dead job context stops the flow."""
        if ctx.done() or job_ctx.done():
            return None, _context_error(ctx if ctx.done() else job_ctx)
        record = attempt.start_stage(stage, body=body, ctx=ctx, on_output=on_output)
        while not record.finished.wait(0.05):
            if job_ctx.done():
                # Build.Run gives the stage goroutine WaitForBuildFinishTimeout, then moves on
                # to cleanup_exec even though run_exec may still be terminating.
                record.finished.wait(self.settings.build_finish_timeout)
                break
        if ctx.done():
            return record, _context_error(ctx)
        return record, record.error

    def _execute_stages(self, attempt, job, job_ctx, holder, on_output, log):
        run = self._run_stage

        record, error = run(attempt, "prepare_script", attempt.prepare_script_body(), job_ctx,
                            job_ctx, on_output)
        if error is not None:
            log.line("ERROR: Job failed: prepare environment: %s" % error)
            return error

        sources_ctx = job_ctx
        for number in range(1, max(1, job.get_sources_attempts) + 1):
            if number == 2:
                run(attempt, "clear_worktree", attempt.clear_worktree_body(), sources_ctx,
                    job_ctx, on_output)
            record, error = run(attempt, "get_sources", attempt.get_sources_body(),
                                sources_ctx, job_ctx, on_output)
            if error is None or job_ctx.done():
                break
            if number < job.get_sources_attempts:
                time.sleep(self.settings.stage_retry_delay * (2 ** (number - 1)))
        if job_ctx.done():
            return error
        if error is None and job.cache:
            record, error = run(attempt, "restore_cache", attempt.helper_body(
                "Checking cache for default...", b"gitlab-runner cache-extractor --file "
                b"../../../cache/default/cache.zip --timeout 10", "Extracting cache"),
                job_ctx, job_ctx, on_output)
        if error is None and job.dependencies:
            record, error = run(attempt, "download_artifacts", attempt.helper_body(
                "Downloading artifacts...", b"gitlab-runner artifacts-downloader --url "
                + shell_escape(job.server_url) + b" --id 1", "Artifacts downloading"),
                job_ctx, job_ctx, on_output)
        if job_ctx.done():
            return error

        if error is None:
            user_ctx = Context(parent=job_ctx, timeout=job.script_timeout)
            holder["ctx"] = user_ctx
            holder["user_started"] = True
            steps = [("build_script", job.script)] + [("step_" + name.lower(), commands)
                                                      for name, commands in job.steps]
            for stage, commands in steps:
                record, error = run(attempt, stage, attempt.user_body(commands), user_ctx,
                                    job_ctx, on_output)
                if error is not None:
                    break
            if job_ctx.done():
                return error
            attempt.job_status = _final_status(error, user_ctx)
            if job.after_script:
                after_ctx = Context(parent=job_ctx, timeout=job.after_script_timeout)
                after_record, after_error = run(attempt, "after_script", attempt.user_body(
                    job.after_script, after_script=True), after_ctx, job_ctx, on_output)
                if after_error is not None:
                    log.line("WARNING: after_script failed, but job will continue "
                             "unaffected: %s" % after_error)
            if job_ctx.done():
                return error
        else:
            attempt.job_status = _final_status(error, job_ctx)

        suffix = "archive_cache" if error is None else "archive_cache_on_failure"
        if job.cache:
            _, cache_error = run(attempt, suffix, attempt.helper_body(
                "Saving cache for successful job..." if error is None
                else "Saving cache for failed job...",
                b"gitlab-runner cache-archiver --file ../../../cache/default/cache.zip "
                b"--timeout 10 --path .", "Creating cache"), job_ctx, job_ctx, on_output)
            if error is None and cache_error is not None:
                error = cache_error
        if job.artifacts:
            stage = "upload_artifacts_on_success" if error is None \
                else "upload_artifacts_on_failure"
            _, upload_error = run(attempt, stage, attempt.helper_body(
                "Uploading artifacts for %s job..." % ("successful" if error is None
                                                       else "failed"),
                b"gitlab-runner artifacts-uploader --url " + shell_escape(job.server_url)
                + b" --token " + shell_escape(job.token) + b" --id " + str(job.id).encode()
                + b" --path .", "Uploading artifacts"), job_ctx, job_ctx, on_output)
            if error is None and upload_error is not None:
                error = upload_error
        if job_ctx.done():
            return error
        _, cleanup_error = run(attempt, "cleanup_file_variables",
                               attempt.cleanup_file_variables_body(), job_ctx, job_ctx,
                               on_output)
        if cleanup_error is not None:
            log.line("WARNING: Failed to cleanup file variables: %s" % cleanup_error)
        return error

    @staticmethod
    def _finish(result, log, error, job_ctx):
        result.log = log.data
        if error is None:
            result.status = "success"
            log.line("Job succeeded")
        elif isinstance(error, ContextDone):
            result.status = error.reason
            result.failure_reason = {"canceled": "job_canceled", "aborted": "job_canceled",
                                     "timedout": "job_execution_timeout"}[error.reason]
            log.line("ERROR: Job failed: %s" % error)
        elif isinstance(error, BuildError):
            result.status = "failed"
            result.failure_reason = "script_failure"
            result.exit_code = error.exit_code
            log.line("ERROR: Job failed: %s" % error)
        else:
            result.status = "system_failure"
            result.failure_reason = "runner_system_failure"
            if isinstance(error, UnknownFailure):
                result.exit_code = error.exit_code
            log.line("ERROR: Job failed (system failure): %s" % error)
        result.message = str(error) if error is not None else None
        result.log = log.data


class ContextDone(ExecError):
    """The stage's context was cancelled or timed out."""

    def __init__(self, reason):
        super().__init__({"canceled": "canceled", "aborted": "aborted",
                          "timedout": "execution took longer than the timeout"}[reason])
        self.reason = reason


def _context_error(ctx):
    return ContextDone(ctx.reason)


def _final_status(error, ctx):
    if error is None:
        return "success"
    if isinstance(error, ContextDone):
        return {"canceled": "canceled", "aborted": "canceled", "timedout": "timedout"}[
            error.reason]
    return "failed"


def sandbox_processes(marker):
    """Host pids whose command line contains MARKER (bytes)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as f:
                if marker in f.read():
                    pids.append(int(name))
        except OSError:
            continue
    return pids


def default_driver():
    """The sbx binary under $SBX_BUILD_DIR."""
    build = os.environ.get("SBX_BUILD_DIR")
    if not build:
        raise RuntimeError("SBX_BUILD_DIR is not set; run the tests through tests/run-tests.sh "
                           "or set it to the build directory")
    return os.path.join(os.path.abspath(build), "sbx")
