"""The Debian packages: build them, install them, run jobs with the installed files, then remove
and purge them.

The test builds with packaging/build-deb.sh (its own compile, independent of $SBX_BUILD_DIR) and
installs the result on this host, so it checks what a user gets: /usr/bin/sbx with its
compiled-in paths, /usr/lib/sbx, the maintainer scripts and the systemd units. It leaves the
host as it found it, also when it fails: the packages are purged, packages apt pulled in are
purged, and a /var/lib/sbx that existed before is moved aside and put back.
"""

import glob
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import unittest

from harness import gitlab_runner

TOP = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PACKAGES_DIR = os.path.join(TOP, "build", "packages")
PACKAGES = ("sbx", "sbx-agent-sandbox", "sbx-dev")
STATE_DIR = "/var/lib/sbx"
CONFIG_DIR = "/etc/sbx"
UNIT_DIR = "/lib/systemd/system"
TIMER_LINK = "/etc/systemd/system/timers.target.wants/sbx-gc.timer"
# Where deb-systemd-helper records enabled units, also when systemd is not PID 1.
SYSTEMD_STATE_DIRS = ("/etc/systemd/system", "/var/lib/systemd/deb-systemd-helper-enabled")
TOOLS = ("dpkg-buildpackage", "dh", "lintian", "apt-get", "systemd-analyze", "setpriv",
         "pkg-config", "cc", "readelf")
APT_ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive")

# A host of the plugin ABI built against the installed header and pkg-config file: it loads
# the plugin from the pkg-config plugindir and prints the backend the handshake returns.
HOST_SOURCE = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <sbx/executor.h>

int main(int argc, char **argv)
{
	struct sbx_error error = { .struct_size = sizeof(error) };
	const struct sbx_executor_ops *ops = NULL;
	sbx_executor_entry_fn entry;
	void *plugin = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);

	if (argc != 2 || plugin == NULL)
		return 2;
	*(void **) &entry = dlsym(plugin, SBX_EXECUTOR_ENTRY_SYMBOL);
	if (entry == NULL || entry(SBX_EXECUTOR_ABI_VERSION, &ops, &error) < 0)
		return 3;
	printf("%s %u\n", ops->backend_name, ops->abi_version);
	return 0;
}
"""


def run(argv, timeout=120, env=None, check=True):
    """Run ARGV and return the CompletedProcess, stdout and stderr merged into .output."""
    process = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=timeout, env=env, cwd="/")
    process.output = process.stdout.decode(errors="replace")
    if check and process.returncode != 0:
        raise AssertionError("%s exited with %d:\n%s" % (" ".join(argv), process.returncode,
                                                         process.output[-6000:]))
    return process


def installed_packages():
    """{package: status} for every package in dpkg's database."""
    output = run(["dpkg-query", "-W", "-f", "${Package}\t${Status}\n"]).output
    return dict(line.split("\t", 1) for line in output.splitlines() if "\t" in line)


def package_installed(name):
    status = installed_packages().get(name, "")
    return status.endswith(" installed") or "config-files" in status


def tree(paths):
    found = set()
    for top in paths:
        for root, dirs, files in os.walk(top):
            found.update(os.path.join(root, name) for name in dirs + files)
    return found


def makefile_version():
    with open(os.path.join(TOP, "Makefile")) as f:
        return re.search(r"^VERSION := (\S+)$", f.read(), re.M).group(1)


class DebianPackageTest(unittest.TestCase):
    """packaging/build-deb.sh output installed, used, removed and purged on this host."""

    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise AssertionError("the package test installs packages and runs sandboxes as "
                                 "root")
        missing = [tool for tool in TOOLS if shutil.which(tool) is None]
        if missing:
            raise AssertionError("missing %s; run packaging/install-build-deps.sh"
                                 % ", ".join(missing))
        # Never replace an installation or configuration the host already has.
        for name in PACKAGES:
            if package_installed(name):
                raise unittest.SkipTest("package %s is installed on this host" % name)
        for path in ("/usr/bin/sbx", "/usr/lib/sbx", CONFIG_DIR):
            if os.path.lexists(path):
                raise unittest.SkipTest("%s exists on this host (an sbx installed with make "
                                        "install?)" % path)
        if glob.glob(os.path.join(STATE_DIR, "sandboxes", "*.json")):
            raise unittest.SkipTest("%s has sandboxes in use" % STATE_DIR)

        version = makefile_version()
        run([os.path.join(TOP, "packaging", "build-deb.sh")], timeout=600)
        cls.debs = {}
        for name in PACKAGES:
            arch = "all" if name == "sbx-dev" else "*"
            matches = glob.glob(os.path.join(PACKAGES_DIR, "%s_%s_%s.deb" % (name, version,
                                                                             arch)))
            if len(matches) != 1:
                raise AssertionError("build-deb.sh made %r for %s" % (matches, name))
            cls.debs[name] = matches[0]

    def save_host_state(self):
        """Record what the lifecycle test may change, and undo it at cleanup."""
        self.packages_before = installed_packages()
        self.systemd_before = tree(SYSTEMD_STATE_DIRS)
        self.sandbox_ids = []
        self.scratch = tempfile.mkdtemp(prefix="sbx-package-test-")
        self.addCleanup(shutil.rmtree, self.scratch, True)
        self.state_backup = None
        if os.path.lexists(STATE_DIR):
            self.state_backup = tempfile.mkdtemp(prefix="sbx-state-backup-", dir="/var/lib")
            os.rename(STATE_DIR, os.path.join(self.state_backup, "sbx"))
        # Cleanups run last-in first-out: purge first, then put the old state back.
        self.addCleanup(self.restore_state_dir)
        self.addCleanup(self.restore_systemd_state)
        self.addCleanup(self.purge_everything)

    # -- cleanup ------------------------------------------------------------------------------

    def purge_everything(self):
        """Purge the sbx packages and whatever apt installed with them."""
        installed = [name for name in PACKAGES if package_installed(name)]
        if installed:
            # The prerm destroys the sandboxes that are still listed.
            run(["dpkg", "--purge"] + installed, env=APT_ENV, check=False)
        added = sorted(set(installed_packages()) - set(self.packages_before) - set(PACKAGES))
        if added:
            run(["apt-get", "purge", "-y", "-q"] + added, env=APT_ENV, check=False)
        for sandbox_id in self.sandbox_ids:
            for path in self.cgroup_paths(sandbox_id):
                self.kill_cgroup(path)

    @staticmethod
    def remove_admin_config(path):
        """Remove the config.yaml the test wrote as the administrator, and /etc/sbx if that
        leaves it empty."""
        if os.path.lexists(path):
            os.unlink(path)
        if os.path.isdir(CONFIG_DIR) and not os.listdir(CONFIG_DIR):
            os.rmdir(CONFIG_DIR)

    def restore_systemd_state(self):
        for path in sorted(tree(SYSTEMD_STATE_DIRS) - self.systemd_before, reverse=True):
            if os.path.islink(path) or os.path.isfile(path):
                os.unlink(path)
            elif os.path.isdir(path) and not os.listdir(path):
                os.rmdir(path)

    def restore_state_dir(self):
        if self.state_backup is None:
            if os.path.isdir(STATE_DIR) and not glob.glob(os.path.join(STATE_DIR, "sandboxes",
                                                                       "*.json")):
                shutil.rmtree(STATE_DIR, ignore_errors=True)
            return
        shutil.rmtree(STATE_DIR, ignore_errors=True)
        os.rename(os.path.join(self.state_backup, "sbx"), STATE_DIR)
        os.rmdir(self.state_backup)

    @staticmethod
    def cgroup_paths(sandbox_id):
        return [path for path in glob.glob("/sys/fs/cgroup/*/sbx/%s" % sandbox_id)
                + glob.glob("/sys/fs/cgroup/sbx/%s" % sandbox_id) if os.path.isdir(path)]

    @staticmethod
    def kill_cgroup(path):
        for leaf, _, _ in sorted(os.walk(path), reverse=True):
            try:
                with open(os.path.join(leaf, "cgroup.procs")) as f:
                    for pid in f.read().split():
                        os.kill(int(pid), 9)
            except OSError:
                pass
            for _ in range(50):
                try:
                    os.rmdir(leaf)
                    break
                except OSError:
                    time.sleep(0.1)

    # -- helpers ------------------------------------------------------------------------------

    def sbx(self, args, env=None, check=True, timeout=120):
        environ = {key: value for key, value in os.environ.items()
                   if not key.startswith("SBX_") and not key.startswith("CUSTOM_ENV_")}
        environ.update(env or {})
        return run(["/usr/bin/sbx"] + list(args), env=environ, check=check, timeout=timeout)

    def prepare_sandbox(self, job_id, env=None):
        """sbx gitlab config + prepare; returns the sandbox id."""
        environ = dict(env or {}, CUSTOM_ENV_CI_JOB_ID=str(job_id))
        output = self.sbx(["gitlab", "config"], env=environ).stdout
        # stdout and stderr are merged: the JSON is the line that starts with "{".
        line = [text for text in output.decode().splitlines() if text.startswith("{")][0]
        sandbox_id = json.loads(line)["job_env"]["SBX_SANDBOX_ID"]
        self.sandbox_ids.append(sandbox_id)
        self.sbx(["gitlab", "prepare"], env=dict(environ, SBX_SANDBOX_ID=sandbox_id))
        return sandbox_id

    @staticmethod
    def processes_of(sandbox_id):
        """Live processes in the sandbox's cgroups. A killed init is reparented to PID 1, which
        may take a while to reap it; a zombie holds nothing but its pid, so it is left out."""
        pids = []
        for name in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open("/proc/%s/cgroup" % name) as f:
                    if "/sbx/%s" % sandbox_id not in f.read():
                        continue
                with open("/proc/%s/stat" % name) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        continue
            except (OSError, IndexError):
                continue
            pids.append(int(name))
        return pids

    def assertSandboxGone(self, sandbox_id):
        self.assertFalse(os.path.exists("%s/sandboxes/%s.json" % (STATE_DIR, sandbox_id)))
        self.assertFalse(os.path.exists("%s/jobs/%s" % (STATE_DIR, sandbox_id)))
        self.assertEqual(self.cgroup_paths(sandbox_id), [])
        self.assertEqual(self.processes_of(sandbox_id), [])

    def gitlab_runner(self):
        environ = {key: value for key, value in os.environ.items()
                   if not key.startswith("SBX_")}
        settings = gitlab_runner.RunnerSettings(
            "/usr/bin/sbx", environ=environ, graceful_kill_timeout=30, force_kill_timeout=10,
            preparation_retry_interval=0.5, build_finish_timeout=30, stage_retry_delay=0.5)
        return gitlab_runner.Runner(settings)

    # -- the tests ----------------------------------------------------------------------------

    def test_lintian_clean(self):
        debs = [self.debs[name] for name in PACKAGES]
        result = run(["lintian", "--fail-on", "error,warning", "--pedantic", "--info"] + debs,
                     check=False, timeout=300)
        tags = [line for line in result.output.splitlines() if re.match(r"^[EWIP]: ", line)]
        self.assertEqual(tags, [], result.output)
        self.assertEqual(result.returncode, 0, result.output)

    def test_local_plugin_links_no_network_library(self):
        extract = tempfile.mkdtemp(prefix="sbx-deb-")
        self.addCleanup(shutil.rmtree, extract, True)
        run(["dpkg-deb", "-x", self.debs["sbx"], extract])
        dynamic = run(["readelf", "-d", os.path.join(extract, "usr/lib/sbx/sbx-local.so")]).output
        libraries = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic)
        self.assertIn("libseccomp.so.2", libraries)
        for library in libraries:
            self.assertNotRegex(library, r"^lib(curl|ssl|crypto|websockets)\b")
        contents = run(["dpkg-deb", "-c", self.debs["sbx"]]).output
        self.assertNotIn("sbx-agent-sandbox.so", contents)
        self.assertNotIn("etc/sbx/config.yaml\n", contents)

    def test_agent_sandbox_package_depends_on_libcurl(self):
        # The plugin opens libcurl.so.4 with dlopen(), which dpkg-shlibdeps cannot see.
        depends = run(["dpkg-deb", "-f", self.debs["sbx-agent-sandbox"], "Depends"]).output
        self.assertRegex(depends, r"(^|, )libcurl4\b", depends)
        extract = tempfile.mkdtemp(prefix="sbx-deb-")
        self.addCleanup(shutil.rmtree, extract, True)
        run(["dpkg-deb", "-x", self.debs["sbx-agent-sandbox"], extract])
        strings = run(["strings", os.path.join(extract, "usr/lib/sbx/sbx-agent-sandbox.so")])
        self.assertIn("libcurl.so.4", strings.output.splitlines())

    def test_install_use_remove_purge(self):
        self.save_host_state()
        self.assertFalse(os.path.exists(STATE_DIR))
        result = run(["apt-get", "install", "-y", "-q", "--no-install-recommends"]
                     + [self.debs[name] for name in PACKAGES], env=APT_ENV, timeout=300)
        for name in PACKAGES:
            self.assertEqual(installed_packages().get(name), "install ok installed",
                             result.output)

        # What the maintainer scripts and dh_installsystemd set up.
        mode = os.stat(STATE_DIR).st_mode
        self.assertTrue(stat.S_ISDIR(mode))
        self.assertEqual(oct(stat.S_IMODE(mode)), "0o700")
        self.assertTrue(os.path.isfile(os.path.join(CONFIG_DIR, "config.yaml.example")))
        self.assertFalse(os.path.exists(os.path.join(CONFIG_DIR, "config.yaml")))
        conffiles = run(["dpkg-query", "-W", "-f", "${Conffiles}", "sbx"]).output
        self.assertIn("/etc/sbx/config.yaml.example", conffiles)
        self.assertEqual(os.readlink(TIMER_LINK), os.path.join(UNIT_DIR, "sbx-gc.timer"))
        verify = run(["systemd-analyze", "verify", os.path.join(UNIT_DIR, "sbx-gc.service"),
                      os.path.join(UNIT_DIR, "sbx-gc.timer")], check=False)
        self.assertEqual(verify.returncode, 0, verify.output)
        self.assertEqual(verify.output.strip(), "")

        # The installed sbx finds its installed plugin and built-in defaults.
        self.assertIn(makefile_version(), self.sbx(["--version"]).output)
        self.assertEqual(self.sbx(["exec", "--", "true"]).returncode, 0)
        self.assertEqual(self.sbx(["exec", "--", "sh", "-c", "exit 7"], check=False).returncode,
                         7)
        doctor = self.sbx(["doctor"], check=False)
        self.assertEqual(doctor.returncode, 0, doctor.output)
        self.assertIn("ok       config: built-in defaults", doctor.output)
        self.assertIn("ok       plugin: /usr/lib/sbx/sbx-local.so (backend local", doctor.output)
        self.assertIn("ok       state directory: /var/lib/sbx (mode 0700)", doctor.output)

        self.check_gitlab_jobs()
        self.check_abi_host()
        self.check_agent_sandbox_plugin()
        self.check_gc_under_unit_capabilities()

        # remove: the prerm destroys sandboxes still listed; conffiles and the state stay.
        running = self.prepare_sandbox(424242)
        self.assertNotEqual(self.processes_of(running), [])
        result = run(["apt-get", "remove", "-y", "-q"] + list(PACKAGES), env=APT_ENV)
        self.assertIn("destroying sandbox %s" % running, result.output)
        self.assertSandboxGone(running)
        self.assertEqual(installed_packages().get("sbx"), "deinstall ok config-files")
        self.assertFalse(os.path.exists("/usr/bin/sbx"))
        self.assertFalse(os.path.exists("/usr/lib/sbx"))
        self.assertTrue(os.path.isfile(os.path.join(CONFIG_DIR, "config.yaml.example")))
        self.assertTrue(os.path.isdir(STATE_DIR))

        # purge: nothing the packages made stays, but a config.yaml the administrator wrote
        # does, as dpkg leaves every file no package installed. Only sbx has conffiles, so
        # only sbx is left to purge.
        for name in ("sbx-agent-sandbox", "sbx-dev"):
            self.assertNotIn(name, installed_packages())
        admin_config = os.path.join(CONFIG_DIR, "config.yaml")
        self.addCleanup(self.remove_admin_config, admin_config)
        with open(admin_config, "w") as f:
            f.write("log_level: info\n")
        run(["apt-get", "purge", "-y", "-q", "sbx"], env=APT_ENV)
        self.assertEqual(os.listdir(CONFIG_DIR), ["config.yaml"])
        self.remove_admin_config(admin_config)
        self.assertFalse(os.path.lexists(CONFIG_DIR))
        self.assertFalse(os.path.lexists(STATE_DIR))
        self.assertFalse(os.path.lexists(TIMER_LINK))
        for name in PACKAGES:
            listing = run(["dpkg", "-L", name], check=False)
            self.assertNotEqual(listing.returncode, 0, listing.output)
            self.assertNotIn(name, installed_packages())
        self.assertEqual(tree(SYSTEMD_STATE_DIRS), self.systemd_before)
        self.assertEqual(installed_packages(), self.packages_before)

    def check_gitlab_jobs(self):
        runner = self.gitlab_runner()
        job = gitlab_runner.Job(script=["echo installed-$((6*7))", "test \"$(id -u)\" = 1000"],
                                after_script=["echo after-$((2*3))"])
        result = runner.run_job(job)
        log = bytes(result.log).decode(errors="replace")
        self.assertEqual(result.status, "success", log)
        self.assertIn("installed-42", log)
        self.assertIn("after-6", log)
        self.assertEqual(result.kinds().count("cleanup"), 1)

        failing = gitlab_runner.Job(script=["exit 3"])
        result = runner.run_job(failing)
        log = bytes(result.log).decode(errors="replace")
        self.assertEqual(result.status, "failed", log)
        self.assertEqual(result.exit_code, 3, log)
        self.assertEqual(glob.glob(os.path.join(STATE_DIR, "sandboxes", "*.json")), [])

    def check_abi_host(self):
        """The sbx-dev header and pkg-config file build a host that loads the plugin."""
        source = os.path.join(self.scratch, "host.c")
        binary = os.path.join(self.scratch, "host")
        with open(source, "w") as f:
            f.write(HOST_SOURCE)
        cflags = run(["pkg-config", "--cflags", "sbx-executor"]).output.split()
        plugin_dir = run(["pkg-config", "--variable=plugindir", "sbx-executor"]).output.strip()
        self.assertEqual(plugin_dir, "/usr/lib/sbx")
        run(["cc", "-Wall", "-Werror", "-o", binary, source] + cflags + ["-ldl"])
        loaded = run([binary, os.path.join(plugin_dir, "sbx-local.so")]).output
        self.assertEqual(loaded.strip(), "local 1")

    def check_agent_sandbox_plugin(self):
        config = os.path.join(self.scratch, "agent-sandbox.yaml")
        with open(config, "w") as f:
            f.write("backend: agent-sandbox\n")
        os.chmod(self.scratch, 0o755)
        doctor = self.sbx(["--config", config, "doctor"], check=False)
        self.assertIn("ok       plugin: /usr/lib/sbx/sbx-agent-sandbox.so (backend agent-sandbox",
                      doctor.output)

    def check_gc_under_unit_capabilities(self):
        """sbx gc reclaims an expired sandbox with only the capabilities sbx-gc.service keeps."""
        with open(os.path.join(UNIT_DIR, "sbx-gc.service")) as f:
            unit = f.read()
        capabilities = re.search(r"^CapabilityBoundingSet=(.+)$", unit, re.M).group(1).split()
        self.assertIn("NoNewPrivileges=yes", unit)
        bounding = ",".join(["-all"] + ["+" + cap[4:].lower() for cap in capabilities])

        config = os.path.join(self.scratch, "expire.yaml")
        with open(config, "w") as f:
            f.write("deadline_margin: 0\n")
        os.chmod(self.scratch, 0o755)
        environ = {"SBX_CONFIG": config}
        expired = self.prepare_sandbox(515151, dict(environ, CUSTOM_ENV_CI_JOB_TIMEOUT="1"))
        self.assertNotEqual(self.cgroup_paths(expired), [])
        time.sleep(2.2)

        gc = run(["setpriv", "--no-new-privs", "--inh-caps=-all", "--bounding-set=" + bounding,
                  "--", "/usr/bin/sbx", "gc"], env=dict(os.environ, **environ), check=False)
        self.assertEqual(gc.returncode, 0, gc.output)
        self.assertRegex(gc.output, r"(?m)^destroyed +%s " % expired)
        self.assertSandboxGone(expired)


if __name__ == "__main__":
    sys.exit(unittest.main())
