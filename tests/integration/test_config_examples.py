"""The GitLab Runner config.toml examples: each names sbx correctly, and the local one runs a job."""

import glob
import os
import tomllib

from harness import gitlab_runner
from harness.support import SbxTestCase

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = sorted(glob.glob(os.path.join(TOP, "config-examples", "*.toml")))
STAGES = ("config", "prepare", "run", "cleanup")


def custom_section(path):
    with open(path, "rb") as stream:
        document = tomllib.load(stream)
    runners = document["runners"]
    return runners[0]["executor"], runners[0]["custom"]


def with_test_config(args, config_path):
    """ARGS with the value of --config replaced by CONFIG_PATH."""
    args = list(args)
    index = args.index("--config")
    args[index + 1] = config_path
    return args


class RunnerTomlExamplesTest(SbxTestCase):

    def test_examples_exist(self):
        names = [os.path.basename(path) for path in EXAMPLES]
        self.assertIn("gitlab-runner-local.toml", names)
        self.assertIn("gitlab-runner-agent-sandbox.toml", names)

    def test_examples_call_sbx_gitlab_stages(self):
        for path in EXAMPLES:
            executor, custom = custom_section(path)
            self.assertEqual(executor, "custom", path)
            for stage in STAGES:
                self.assertEqual(os.path.basename(custom[stage + "_exec"]), "sbx", path)
                args = custom[stage + "_args"]
                self.assertEqual(args[-2:], ["gitlab", stage], path)
                # Every stage reads the same sbx configuration.
                self.assertEqual(args[:2], custom["config_args"][:2], path)

    def test_local_example_runs_job(self):
        _, custom = custom_section(os.path.join(TOP, "config-examples",
                                                "gitlab-runner-local.toml"))
        environ = dict(self.settings.environ)
        environ.pop("SBX_CONFIG")  # the example's --config must be what sbx reads
        settings = gitlab_runner.RunnerSettings(
            self.sbx, environ=environ,
            config_args=with_test_config(custom["config_args"], self.config_path),
            prepare_args=with_test_config(custom["prepare_args"], self.config_path),
            run_args=with_test_config(custom["run_args"], self.config_path),
            cleanup_args=with_test_config(custom["cleanup_args"], self.config_path),
            graceful_kill_timeout=custom["graceful_kill_timeout"],
            force_kill_timeout=custom["force_kill_timeout"],
            preparation_retry_interval=0.5, build_finish_timeout=30, stage_retry_delay=0.5)
        # A host name only this test's configuration sets shows that sbx read it.
        self.write_config(local={"hostname": "toml-example"})
        runner = gitlab_runner.Runner(settings)
        self.extra_runners.append(runner)
        job = self.new_job(script=["echo example-ran > out.txt", "cat out.txt",
                                   "echo host-is-$(cat /etc/hostname)"])
        result = runner.run_job(job)
        log = bytes(result.log)
        self.assertEqual(result.status, "success", log.decode(errors="replace"))
        self.assertIn(b"example-ran\n", log)
        self.assertIn(b"host-is-toml-example\n", log)
        self.assertStateEmpty()
