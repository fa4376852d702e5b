#!/usr/bin/python3
"""A GitLab-shaped job run through sbx by the runner emulation.

It creates a test host (a network namespace joined to this host by a veth pair) that serves a
git repository over dumb HTTP, writes an sbx config that allows exactly that address and port for
the runner stages, and runs config, prepare, prepare_script, get_sources (git clone through the
sandbox's egress proxy), a build_script that compiles and runs a C program from the repository,
a step that tries a host outside the allow-list, after_script, cleanup_file_variables and
cleanup. It prints the job log as it goes and a summary, and exits 0 only if the job behaved as
expected. Everything it creates is removed on exit.

Usage: demo.py BUILD_DIR WORK_DIR (WORK_DIR is an empty directory that run-demo.sh removes)
"""

import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                "integration"))

from harness import gitlab_runner  # noqa: E402
from harness.support import to_yaml  # noqa: E402

PORT = 8080
HELLO_C = b"""#include <stdio.h>

int main(int argc, char **argv)
{
	unsigned long sum = 0;

	for (int i = 1; i <= 100; i++)
		sum += (unsigned long) i * i;
	printf("Hello from a sandboxed build, %s! sum of squares 1..100 = %lu\\n",
	       argc > 1 ? argv[1] : "world", sum);
	return 0;
}
"""


def say(text):
    sys.stdout.write("\033[1;34m[demo]\033[0m %s\n" % text)
    sys.stdout.flush()


def run(argv, **kwargs):
    return subprocess.run(argv, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          **kwargs)


def pick_subnet():
    """A 10.x /29 that no route of this host covers more specifically than the default."""
    for second in range(203, 250):
        base = "10.%d.41" % second
        routes = subprocess.run(["ip", "-o", "route", "show", "to", "match", base + ".2"],
                                stdout=subprocess.PIPE, text=True).stdout
        if all(line.startswith("default") for line in routes.splitlines()):
            return base
    raise RuntimeError("no free 10.x.41.0/29 subnet for the demo's test host")


class TestHost:
    """A network namespace with two HTTP servers: the git server and one outside the list."""

    def __init__(self, work_dir):
        tag = os.getpid() % 100000
        self.namespace = "sbx-demo-%d" % tag
        self.veth_host = "sbxdh%d" % tag
        self.veth_ns = "sbxdn%d" % tag
        base = pick_subnet()
        self.host_address = base + ".1"
        self.git_address = base + ".2"
        self.other_address = base + ".3"
        self.work_dir = work_dir
        self.servers = []
        with open(os.path.join(work_dir, "netns"), "w") as f:
            f.write("%s %s\n" % (self.namespace, self.veth_host))

    def create(self):
        run(["ip", "netns", "add", self.namespace])
        run(["ip", "link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_ns])
        run(["ip", "link", "set", self.veth_ns, "netns", self.namespace])
        run(["ip", "addr", "add", self.host_address + "/29", "dev", self.veth_host])
        run(["ip", "link", "set", self.veth_host, "up"])
        for address in (self.git_address, self.other_address):
            run(["ip", "-n", self.namespace, "addr", "add", address + "/29", "dev", self.veth_ns])
        run(["ip", "-n", self.namespace, "link", "set", self.veth_ns, "up"])
        run(["ip", "-n", self.namespace, "link", "set", "lo", "up"])

    def serve(self, address, directory):
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, sys.executable, "-m", "http.server",
             "--bind", address, "--directory", directory, str(PORT)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.servers.append(process)
        url = "http://%s:%d/" % (address, PORT)
        for _ in range(100):
            probe = subprocess.run(["curl", "-sS", "--noproxy", "*", "-m", "1", "-o",
                                    "/dev/null", url], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("the demo's HTTP server at %s did not start" % url)

    def destroy(self):
        for process in self.servers:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
        subprocess.run(["ip", "link", "del", self.veth_host], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "netns", "del", self.namespace], stderr=subprocess.DEVNULL)


def make_repository(work_dir):
    """A repository with hello.c, its bare clone under www/group/demo.git, and its commit."""
    source = os.path.join(work_dir, "source")
    os.makedirs(source)
    with open(os.path.join(source, "hello.c"), "wb") as f:
        f.write(HELLO_C)
    with open(os.path.join(source, "README"), "w") as f:
        f.write("Demo project built by sbx.\n")
    env = dict(os.environ, GIT_AUTHOR_NAME="sbx demo", GIT_AUTHOR_EMAIL="demo@sbx.invalid",
               GIT_COMMITTER_NAME="sbx demo", GIT_COMMITTER_EMAIL="demo@sbx.invalid",
               GIT_CONFIG_NOSYSTEM="1", HOME=work_dir)
    run(["git", "init", "-q", "-b", "main", source], env=env)
    run(["git", "-C", source, "add", "."], env=env)
    run(["git", "-C", source, "commit", "-q", "-m", "Add the demo program"], env=env)
    sha = run(["git", "-C", source, "rev-parse", "HEAD"], env=env).stdout.decode().strip()
    www = os.path.join(work_dir, "www")
    bare = os.path.join(www, "group", "demo.git")
    os.makedirs(os.path.dirname(bare))
    run(["git", "clone", "-q", "--bare", source, bare], env=env)
    # Dumb HTTP needs info/refs and objects/info/packs.
    run(["git", "-C", bare, "update-server-info"], env=env)
    os.chmod(work_dir, 0o755)
    return www, sha


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: demo.py BUILD_DIR WORK_DIR\n")
        return 2
    build = os.path.abspath(sys.argv[1])
    work_dir = os.path.abspath(sys.argv[2])
    if os.geteuid() != 0:
        sys.stderr.write("demo: run as root (it creates a network namespace and sandboxes)\n")
        return 2
    sbx = os.path.join(build, "sbx")

    def interrupted(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, interrupted)

    host = TestHost(work_dir)
    try:
        say("creating the test host: network namespace %s, git server at %s:%d"
            % (host.namespace, host.git_address, PORT))
        host.create()
        www, sha = make_repository(work_dir)
        other = os.path.join(work_dir, "other")
        os.makedirs(other)
        with open(os.path.join(other, "index.html"), "w") as f:
            f.write("this host is not on the allow-list\n")
        host.serve(host.git_address, www)
        host.serve(host.other_address, other)

        state_dir = os.path.join(work_dir, "state")
        config_path = os.path.join(work_dir, "sbx.yaml")
        git_entry = "%s:%d" % (host.git_address, PORT)
        config = {"state_dir": state_dir, "stop_grace": 5,
                  "network": {"allow_ci_server": False, "runner_allow": [git_entry],
                              "user_allow": []}}
        with open(config_path, "w") as f:
            f.write(to_yaml(config) + "\n")
        say("sbx config %s:" % config_path)
        sys.stdout.write(to_yaml(config) + "\n")

        environ = dict(os.environ, SBX_CONFIG=config_path, SBX_PLUGIN_DIR=build)
        settings = gitlab_runner.RunnerSettings(sbx, environ=environ,
                                                graceful_kill_timeout=60,
                                                force_kill_timeout=10)
        runner = gitlab_runner.Runner(settings, echo=sys.stdout.buffer)
        outside = "http://%s:%d/" % (host.other_address, PORT)
        job = gitlab_runner.Job(
            project_path="group/demo", server_url="http://%s:%d" % (host.git_address, PORT),
            repo_url="http://%s:%d/group/demo.git" % (host.git_address, PORT),
            commit_sha=sha, ref="main", git_strategy="clone", name="build", stage="build",
            script=["gcc --version | sed -n 1p", "gcc -Wall -Wextra -O2 -o hello hello.c",
                    "./hello sbx"],
            steps=[("egress_check", [
                "if curl -fsS -m 10 -o /dev/null %s; then echo 'UNEXPECTED: reached %s'; "
                "exit 1; else echo \"egress to %s refused as expected (curl exit $?)\"; fi"
                % (outside, outside, outside)])],
            after_script=["echo \"after_script sees job status $CI_JOB_STATUS\"",
                          "ls -l hello"])

        say("running job %d through the GitLab Runner emulation" % job.id)
        sys.stdout.write("-" * 78 + "\n")
        sys.stdout.flush()
        result = runner.run_job(job)
        sys.stdout.write("-" * 78 + "\n")
        return check(result, job, host, state_dir, outside)
    except KeyboardInterrupt as exc:
        say("interrupted (%s)" % exc)
        return 130
    finally:
        host.destroy()


def check(result, job, host, state_dir, outside):
    log = bytes(result.log)
    expected_stages = ["prepare_script", "get_sources", "build_script", "step_egress_check",
                       "after_script", "cleanup_file_variables"]
    checks = [
        ("job succeeded", result.status == "success"),
        ("stages ran in the runner's order", result.stages() == expected_stages),
        # The sandbox's only route out is the egress proxy, so a clone that worked went
        # through it.
        ("get_sources cloned the repository through the proxy",
         any(r.stage == "get_sources" and r.returncode == 0 for r in result.execs)
         and b"Checking out %s" % job.commit_sha[:8].encode() in log),
        ("the C program compiled and ran",
         b"Hello from a sandboxed build, sbx! sum of squares 1..100 = 338350" in log),
        ("the step outside the allow-list was refused",
         ("egress to %s refused as expected" % outside).encode() in log),
        ("sbx logged the refusal naming the destination",
         any(host.other_address.encode() in line and b"refused as expected" not in line
             and b"curl" not in line for line in log.split(b"\n"))),
        ("after_script saw the job status", b"after_script sees job status success" in log),
        ("every sbx exec exited 0", all(r.returncode == 0 for r in result.execs)),
        ("cleanup left nothing in the state dir",
         not any(os.listdir(os.path.join(state_dir, sub))
                 for sub in ("sandboxes", "jobs") if os.path.isdir(os.path.join(state_dir,
                                                                                sub)))),
    ]
    refusals = [line for line in log.split(b"\n")
                if host.other_address.encode() in line and b"curl" not in line]
    say("refusal lines in the job log:")
    for line in refusals:
        sys.stdout.write("    %s\n" % line.decode(errors="replace"))
    say("job status: %s%s" % (result.status, " (%s)" % result.message if result.message
                              else ""))
    say("execs: %s" % ", ".join("%s%s=%s" % (r.kind, ":" + r.stage if r.stage else "",
                                             r.returncode) for r in result.execs))
    failed = 0
    for text, ok in checks:
        sys.stdout.write("  [%s] %s\n" % ("ok" if ok else "FAILED", text))
        failed += 0 if ok else 1
    if failed:
        say("DEMO FAILED: %d of %d checks failed" % (failed, len(checks)))
        return 1
    say("DEMO PASSED: the job behaved as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
