"""Kubelet emulation: every scheduled Pod becomes real processes in its own PID, mount, UTS,
IPC and network namespaces on this machine. Exec, logs, restarts and graceful deletion act on
those processes. Volumes are mounted in the pod's mount namespace (see volumes.py), and
securityContext users and groups apply to container, probe and exec processes.

Containers run host binaries: there are no images, so "image" is recorded but not pulled, and
a container without "command" runs a pause process (sleep) in place of its entrypoint.
"""
import asyncio
import logging
import os
import shutil
import signal
import subprocess
import time

from aiohttp import web

from . import errors, execws
from .procs import DEFAULT_PATH, child_pids, die_with_parent, kill_quietly, exit_code
from .network import CommandError, Network
from .store import now_rfc3339
from .volumes import (MountPointRegistry, PodVolumes, VolumeError, setpriv_argv,
                      user_identity)

log = logging.getLogger("fake-apiserver.kubelet")

NODE_NAME = "sbx-fake-node"
PODS = ("", "pods")
EVENTS = ("", "events")


class Container:
    """One container's process and its status."""

    def __init__(self, spec):
        self.spec = spec
        self.name = spec["name"]
        self.process = None
        self.restart_count = 0
        self.state = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state = {}
        self.ready = False
        self.started_at = None
        self.container_id = ""
        self.probe_ok = False

    def status(self, ready_override=None):
        ready = self.ready if ready_override is None else ready_override
        return {"name": self.name, "image": self.spec.get("image", ""),
                "imageID": "", "containerID": self.container_id,
                "ready": ready, "started": "running" in self.state,
                "restartCount": self.restart_count, "state": self.state,
                "lastState": self.last_state}


class PodRuntime:
    """The namespaces and processes that make up one running Pod."""

    def __init__(self, kubelet, pod):
        self.kubelet = kubelet
        meta = pod["metadata"]
        self.namespace = meta["namespace"]
        self.name = meta["name"]
        self.uid = meta["uid"]
        self.spec = pod["spec"]
        self.netns = None
        self.address = None
        self.unshare = None
        self.pause_pid = None
        self.containers = [Container(c) for c in self.spec.get("containers") or []]
        self.log_dir = os.path.join(kubelet.state_dir, "pods", "%s_%s_%s"
                                    % (self.namespace, self.name, self.uid[:8]))
        self.tasks = []
        self.exec_processes = set()
        self.stopping = False
        self.stopped = asyncio.Event()
        self.start_done = asyncio.Event()
        self.started = False
        self.phase = "Pending"
        self.stop_requested = asyncio.Event()
        self.volumes = None
        fs_group = (self.spec.get("securityContext") or {}).get("fsGroup")
        self.fs_group = int(fs_group) if fs_group is not None else None

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self):
        try:
            # A pod deleted while it waited for a start slot is not started at all.
            if not self.stopping:
                await self._start()
        finally:
            self.start_done.set()

    async def _start(self):
        os.makedirs(self.log_dir, mode=0o700, exist_ok=True)
        host_network = self.spec.get("hostNetwork", False)
        if not host_network:
            self.netns, self.address = await self.kubelet.network.add_pod()

        argv = []
        if self.netns:
            argv += ["nsenter", "--net=/run/netns/%s" % self.netns, "--"]
        # The pod's mount namespace starts as a copy of the host's, with bind mounts of other
        # network namespaces under /run/netns. Unmounting them there keeps those namespaces
        # from living on after they are deleted.
        script = 'umount -l /run/netns 2>/dev/null; hostname "$1"; exec sleep infinity'
        argv += ["unshare", "--fork", "--kill-child", "--pid", "--mount-proc", "--uts",
                 "--ipc", "--", "/bin/sh", "-c", script, "pause", self.hostname()]
        self.unshare = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)

        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            children = child_pids(self.unshare.pid)
            if children:
                self.pause_pid = children[0]
                break
            if self.unshare.returncode is not None:
                break
            await asyncio.sleep(0.005)
        if self.pause_pid is None:
            raise CommandError("the pod sandbox process did not start (unshare exited with %s)"
                               % self.unshare.returncode)

        # Wait until the pause shell has replaced itself with sleep, so the hostname is set.
        for _ in range(200):
            if self._is_sleeping(self.pause_pid) or not os.path.exists("/proc/%d"
                                                                        % self.pause_pid):
                break
            await asyncio.sleep(0.005)

        if not os.path.exists("/proc/%d" % self.pause_pid):
            raise CommandError("the pod sandbox process %d exited during its setup"
                               % self.pause_pid)
        if self.volumes is not None and self.volumes.mounts:
            self.kubelet.mount_points.acquire(self.uid, self.volumes.host_mount_points())
            await self.volumes.mount(self.pause_pid, self.fs_group)

        self.started = True
        await self.kubelet.netpolicy.apply_pod(self)
        log.info("pod %s/%s: sandbox pid %d, netns %s, ip %s", self.namespace, self.name,
                 self.pause_pid, self.netns, self.address)
        for container in self.containers:
            await self.start_container(container)

    @staticmethod
    def _is_sleeping(pid):
        try:
            with open("/proc/%d/comm" % pid) as stream:
                return stream.read().strip() == "sleep"
        except (FileNotFoundError, ProcessLookupError):
            return False

    async def wait_for_volumes(self):
        """Check the pod's volumes and read the objects they project, retrying once a second
        while an object is missing, as the kubelet's volume manager does. Raises VolumeError
        for volumes that can never be set up; returns early when the pod is deleted."""
        last_message = None
        while not self.stopping:
            try:
                if self.volumes is None:
                    staging = os.path.join(self.log_dir, "volumes")
                    self.volumes = PodVolumes(self.kubelet.store, self.namespace, self.spec,
                                              staging)
                self.volumes.resolve()
                return
            except VolumeError as error:
                if not error.retry:
                    raise
                if str(error) != last_message:
                    last_message = str(error)
                    log.info("pod %s/%s: waiting for a volume: %s", self.namespace, self.name,
                             error)
                    self.kubelet.record_event(self, "FailedMount", last_message)
            try:
                await asyncio.wait_for(self.stop_requested.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    def hostname(self):
        return (self.spec.get("hostname") or self.name)[:63]

    def identity(self, container):
        """Return (uid, gid, groups, home) of the container's processes, or None for root."""
        return user_identity(self.spec, container.spec)

    def environment(self, container, extra=None):
        identity = self.identity(container)
        home = identity[3] if identity else "/root"
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": self.hostname(), "HOME": home}
        for item in container.spec.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
        if extra:
            env.update(extra)
        return env

    def nsenter_argv(self, working_dir=None, container=None):
        """Return the argv prefix that runs a command in the pod's namespaces, as the
        container's user when its securityContext sets one."""
        argv = ["nsenter", "-t", str(self.pause_pid), "-m", "-u", "-i", "-p"]
        if self.netns:
            argv.append("-n")
        wd = working_dir if working_dir and os.path.isdir(working_dir) else "/"
        argv += ["--wd=%s" % wd, "--"]
        identity = self.identity(container) if container is not None else None
        if identity is not None:
            argv += setpriv_argv(identity)
        return argv

    def non_root_violation(self, container):
        """Return the kubelet's message when runAsNonRoot is set and the container would run
        as root, else None. Containers run host binaries, whose image user is root."""
        pod_context = self.spec.get("securityContext") or {}
        context = container.spec.get("securityContext") or {}
        non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        identity = self.identity(container)
        if non_root and (identity is None or identity[0] == 0):
            return ("container has runAsNonRoot and image will run as root (pod: "
                    '"%s_%s(%s)", container: %s)' % (self.name, self.namespace, self.uid,
                                                    container.name))
        return None

    def container_argv(self, container):
        spec = container.spec
        command = list(spec.get("command") or [])
        args = list(spec.get("args") or [])
        if not command:
            # NOTE: without an image there is no entrypoint to run; the container runs a pause
            # process and "args" alone are ignored.
            return ["sleep", "infinity"]
        return command + args

    async def start_container(self, container):
        if self.stopping:
            return
        violation = self.non_root_violation(container)
        if violation:
            log.info("pod %s/%s: %s", self.namespace, self.name, violation)
            container.state = {"waiting": {"reason": "CreateContainerConfigError",
                                           "message": violation}}
            self.kubelet.record_event(self, "Failed", "Error: " + violation, "Warning")
            return
        log_path = os.path.join(self.log_dir, "%s.log" % container.name)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            container.process = await asyncio.create_subprocess_exec(
                *self.nsenter_argv(container.spec.get("workingDir"), container),
                *self.container_argv(container), stdin=subprocess.DEVNULL, stdout=log_fd,
                stderr=log_fd, env=self.environment(container), preexec_fn=die_with_parent)
        finally:
            os.close(log_fd)
        container.container_id = "fake://%s-%s-%d" % (self.uid[:8], container.name,
                                                      container.restart_count)
        container.started_at = now_rfc3339()
        container.state = {"running": {"startedAt": container.started_at}}
        container.probe_ok = not (container.spec.get("readinessProbe") or {}).get("exec")
        self.tasks.append(asyncio.ensure_future(self.watch_container(container)))
        if not container.probe_ok:
            self.tasks.append(asyncio.ensure_future(self.probe(container)))

    async def probe(self, container):
        """Run an exec readinessProbe on its schedule inside the pod."""
        probe = container.spec["readinessProbe"]
        command = probe["exec"].get("command") or ["true"]
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        process = container.process
        while not self.stopping and container.process is process and \
                process.returncode is None:
            proc = await asyncio.create_subprocess_exec(
                *self.nsenter_argv(container=container), *command, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                env=self.environment(container), preexec_fn=die_with_parent)
            try:
                code = await asyncio.wait_for(proc.wait(), probe.get("timeoutSeconds", 1))
            except asyncio.TimeoutError:
                kill_quietly(proc.pid, signal.SIGKILL)
                code = -1
            ok = code == 0
            if ok != container.probe_ok:
                container.probe_ok = ok
                self.kubelet.schedule_status(self)
            await asyncio.sleep(probe.get("periodSeconds", 10))

    async def watch_container(self, container):
        process = container.process
        code = exit_code(await process.wait())
        if self.stopping:
            container.state = {"terminated": {"exitCode": code, "reason": "Error" if code
                                              else "Completed", "finishedAt": now_rfc3339(),
                                              "startedAt": container.started_at}}
            return
        reason = "Completed" if code == 0 else "Error"
        terminated = {"exitCode": code, "reason": reason, "startedAt": container.started_at,
                      "finishedAt": now_rfc3339(), "containerID": container.container_id}
        policy = self.spec.get("restartPolicy", "Always")
        log.info("pod %s/%s: container %s exited with %d", self.namespace, self.name,
                 container.name, code)
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            container.last_state = {"terminated": terminated}
            container.state = {"waiting": {"reason": "CrashLoopBackOff",
                                           "message": "back-off restarting failed container"}}
            container.ready = False
            self.kubelet.schedule_status(self)
            await asyncio.sleep(min(10.0, 0.5 * (2 ** container.restart_count)))
            if self.stopping:
                return
            container.restart_count += 1
            await self.start_container(container)
        else:
            container.state = {"terminated": terminated}
            container.ready = False
        self.kubelet.schedule_status(self)

    def compute_phase(self):
        states = [c.state for c in self.containers]
        if self.containers and all("terminated" in s for s in states):
            if all(s["terminated"]["exitCode"] == 0 for s in states):
                return "Succeeded"
            return "Failed"
        if any("running" in s or "terminated" in s for s in states):
            return "Running"
        return "Pending"

    async def stop(self, grace):
        """Stop the pod: SIGTERM its containers, SIGKILL after grace seconds, then remove
        its namespaces."""
        if self.stopping:
            await self.stopped.wait()
            return
        self.stopping = True
        self.stop_requested.set()
        # A pod deleted while it starts is stopped once its processes exist.
        await self.start_done.wait()
        try:
            if grace > 0:
                for container in self.containers:
                    if container.process and container.process.returncode is None:
                        for child in child_pids(container.process.pid):
                            kill_quietly(child, signal.SIGTERM)
                waits = [c.process.wait() for c in self.containers
                         if c.process and c.process.returncode is None]
                if waits:
                    try:
                        await asyncio.wait_for(asyncio.gather(*waits), grace)
                    except asyncio.TimeoutError:
                        log.info("pod %s/%s: grace period of %ss over, killing", self.namespace,
                                 self.name, grace)
            self.kill_all()
            if self.unshare:
                try:
                    await asyncio.wait_for(self.unshare.wait(), 5)
                except asyncio.TimeoutError:
                    log.error("pod %s/%s: sandbox process %d did not exit, killing it",
                              self.namespace, self.name, self.unshare.pid)
                    kill_quietly(self.unshare.pid, signal.SIGKILL)
                    await self.unshare.wait()
            for process in [c.process for c in self.containers] + list(self.exec_processes):
                if process and process.returncode is None:
                    try:
                        await asyncio.wait_for(process.wait(), 5)
                    except asyncio.TimeoutError:
                        log.error("pod %s/%s: process %d outlived its PID namespace, killing "
                                  "it", self.namespace, self.name, process.pid)
                        kill_quietly(process.pid, signal.SIGKILL)
            for task in self.tasks:
                task.cancel()
            # Every volume went away with the pod's mount namespace and its last process.
            # Only the mount point directories made on the host are left to remove.
            self.kubelet.mount_points.release(self.uid)
            if self.netns:
                self.kubelet.netpolicy.forget(self.netns)
                await self.kubelet.network.remove_pod(self.netns, self.address)
            shutil.rmtree(self.log_dir, ignore_errors=True)
            log.info("pod %s/%s: stopped", self.namespace, self.name)
        finally:
            self.stopped.set()

    def kill_all(self):
        """SIGKILL the pod's init process, which ends every process in its PID namespace.

        unshare, the init's parent, then reaps it and exits. Killing unshare first would
        leave the init as a zombie for the host's PID 1, which may never reap it.
        """
        if self.pause_pid:
            kill_quietly(self.pause_pid, signal.SIGKILL)
        elif self.unshare and self.unshare.returncode is None:
            kill_quietly(self.unshare.pid, signal.SIGKILL)

    def describe(self):
        return {"namespace": self.namespace, "name": self.name, "uid": self.uid,
                "netns": self.netns, "ip": str(self.address) if self.address else None,
                "sandboxPid": self.pause_pid,
                "unsharePid": self.unshare.pid if self.unshare else None,
                "containers": {c.name: c.process.pid if c.process else None
                               for c in self.containers}}


class Kubelet:
    """Runs the pods bound to the one fake node and serves exec and logs for them."""

    def __init__(self, store, state_dir, faults, ready_delay=0.2, pod_cidr="10.244.0.0/16",
                 netpolicy=None):
        self.store = store
        self.state_dir = state_dir
        self.faults = faults
        self.ready_delay = ready_delay
        self.network = Network(pod_cidr)
        self.netpolicy = netpolicy
        self.pods = {}
        self.queue = asyncio.Queue()
        self.worker = None
        self.pending_status = set()
        self.status_handle = None
        self.closing = False
        self.exec_sessions = set()
        self.starts = set()
        # Pod starts in progress at once. Each start runs a few short processes (ip, unshare),
        # so a handful in parallel keeps both cores busy without a fork storm.
        self.start_slots = asyncio.Semaphore(8)
        self.mount_points = MountPointRegistry()

    def setup(self):
        self.network.setup()
        self.store.subscribe(self._on_event)
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": NODE_NAME, "labels": {
                    "kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux"}},
                "spec": {"podCIDR": str(self.network.cidr)},
                "status": {"addresses": [{"type": "InternalIP",
                                          "address": str(self.network.gateway)}],
                           "conditions": [{"type": "Ready", "status": "True",
                                           "reason": "KubeletReady"}]}}
        self.store.create(("", "nodes"), "", node, internal=True)
        self.worker = asyncio.ensure_future(self._work())

    def _on_event(self, event):
        if event.kind_key == PODS:
            self.queue.put_nowait(event)

    async def _work(self):
        while True:
            event = await self.queue.get()
            try:
                await self._handle(event)
            except Exception:
                log.exception("kubelet failed on pod event %s %s/%s", event.type,
                              event.namespace, event.name)

    async def _handle(self, event):
        uid = event.obj["metadata"]["uid"]
        meta = event.obj["metadata"]
        runtime = self.pods.get(uid)
        if event.type == "DELETED":
            if runtime:
                self.pods.pop(uid, None)
                await runtime.stop(0)
                self.netpolicy.schedule()
            return
        if meta.get("deletionTimestamp"):
            if runtime is None or runtime.stopping:
                if runtime is None and self.store.find(PODS, event.namespace, event.name):
                    self._final_delete(event.namespace, event.name, uid)
                return
            grace = meta.get("deletionGracePeriodSeconds", 0)
            asyncio.ensure_future(self._terminate(runtime, grace))
            return
        if runtime is None and event.type == "ADDED" and not self.closing:
            runtime = self._admit(event.obj)
            # Pods start concurrently, as the kubelet's pod workers do, so one slow start
            # does not hold back the others or the handling of later events.
            self.starts.add(asyncio.ensure_future(self._run(runtime)))

    def _admit(self, pod):
        """Bind the pod to the node and register its runtime; returns the runtime."""
        meta = pod["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        if not pod["spec"].get("nodeName"):
            def bind(obj):
                obj["spec"]["nodeName"] = NODE_NAME
            self.store.mutate(PODS, namespace, name, bind)

            def scheduled(obj):
                status = obj.setdefault("status", {})
                status["phase"] = "Pending"
                status["conditions"] = [{"type": "PodScheduled", "status": "True",
                                         "lastProbeTime": None,
                                         "lastTransitionTime": now_rfc3339()}]
                status["qosClass"] = "BestEffort"
            self.store.mutate(PODS, namespace, name, scheduled, subresource="status")
        runtime = PodRuntime(self, pod)
        self.pods[meta["uid"]] = runtime
        return runtime

    async def _run(self, runtime):
        try:
            await self._start(runtime)
        except Exception:
            log.exception("pod %s/%s: start failed", runtime.namespace, runtime.name)
        finally:
            # A start cancelled by shutdown while it waited for its volumes or a start slot
            # never reached runtime.start(), and stop() waits for this event.
            runtime.start_done.set()
            self.starts.discard(asyncio.current_task())

    async def _start(self, runtime):
        namespace, name = runtime.namespace, runtime.name
        try:
            # A pod that waits for a missing ConfigMap or Secret takes no start slot.
            await runtime.wait_for_volumes()
            async with self.start_slots:
                await runtime.start()
        except (CommandError, OSError, VolumeError) as error:
            reason = "FailedMount" if isinstance(error, VolumeError) else \
                "CreatePodSandboxError"
            log.error("pod %s/%s: sandbox creation failed: %s", namespace, name, error)
            message = str(error)
            # A volume that can never be set up fails the pod before start() runs, and
            # stop() waits for this event.
            runtime.start_done.set()
            self.record_event(runtime, reason, message)

            def failed(obj):
                obj.setdefault("status", {}).update({
                    "phase": "Pending", "reason": reason, "message": message})
            self.store.mutate(PODS, namespace, name, failed, subresource="status")
            return
        self.netpolicy.schedule()
        self.write_status(runtime, starting=True)
        await asyncio.sleep(self.ready_delay)
        for container in runtime.containers:
            container.ready = "running" in container.state
        self.write_status(runtime)

    def record_event(self, runtime, reason, message, type_="Warning"):
        """Store an Event about the pod from the kubelet, as `kubectl describe pod` shows."""
        event = {"apiVersion": "v1", "kind": "Event",
                 "metadata": {"generateName": runtime.name + ".",
                              "namespace": runtime.namespace},
                 "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": runtime.name,
                                    "namespace": runtime.namespace, "uid": runtime.uid},
                 "reason": reason, "message": message, "type": type_, "count": 1,
                 "firstTimestamp": now_rfc3339(), "lastTimestamp": now_rfc3339(),
                 "source": {"component": "kubelet", "host": NODE_NAME}}
        try:
            self.store.create(EVENTS, runtime.namespace, event, internal=True)
        except errors.ApiError as error:
            log.info("pod %s/%s: event %s not stored: %s", runtime.namespace, runtime.name,
                     reason, error)

    def schedule_status(self, runtime):
        self.pending_status.add(runtime.uid)
        if self.status_handle is None:
            self.status_handle = asyncio.get_event_loop().call_soon(self._flush_status)

    def _flush_status(self):
        self.status_handle = None
        for uid in list(self.pending_status):
            runtime = self.pods.get(uid)
            if runtime and not runtime.stopping:
                self.write_status(runtime)
        self.pending_status.clear()

    def write_status(self, runtime, starting=False):
        phase = runtime.compute_phase()
        runtime.phase = phase
        ready_containers = [c.ready and c.probe_ok and "running" in c.state
                            for c in runtime.containers]
        all_ready = not starting and all(ready_containers) and phase == "Running"
        transition = now_rfc3339()

        def change(obj):
            status = obj.setdefault("status", {})
            old_conditions = {c["type"]: c for c in status.get("conditions") or []}

            def condition(kind, value, reason=None):
                previous = old_conditions.get(kind)
                entry = {"type": kind, "status": value, "lastProbeTime": None,
                         "lastTransitionTime": previous["lastTransitionTime"]
                         if previous and previous["status"] == value else transition}
                if reason:
                    entry["reason"] = reason
                return entry
            ready_value = "True" if all_ready else "False"
            reason = None if all_ready else ("PodCompleted" if phase in ("Succeeded", "Failed")
                                             else "ContainersNotReady")
            status["conditions"] = [
                condition("PodReadyToStartContainers", "True"),
                condition("Initialized", "True"),
                condition("Ready", ready_value, reason),
                condition("ContainersReady", ready_value, reason),
                condition("PodScheduled", "True"),
            ]
            status["phase"] = phase
            status["hostIP"] = str(self.network.gateway)
            status["hostIPs"] = [{"ip": str(self.network.gateway)}]
            if runtime.address:
                status["podIP"] = str(runtime.address)
                status["podIPs"] = [{"ip": str(runtime.address)}]
            status.setdefault("startTime", transition)
            status["qosClass"] = "BestEffort"
            status["containerStatuses"] = [
                c.status(ready_override=ready and not starting)
                for c, ready in zip(runtime.containers, ready_containers)]
        self.store.mutate(PODS, runtime.namespace, runtime.name, change, subresource="status")

    async def _terminate(self, runtime, grace):
        await runtime.stop(grace)
        self.pods.pop(runtime.uid, None)
        self.netpolicy.schedule()
        self._final_delete(runtime.namespace, runtime.name, runtime.uid)

    def _final_delete(self, namespace, name, uid):
        current = self.store.find(PODS, namespace, name)
        if current is None or current["metadata"]["uid"] != uid:
            return

        def zero_grace(obj):
            obj["metadata"]["deletionGracePeriodSeconds"] = 0
        self.store.mutate(PODS, namespace, name, zero_grace)
        self.store.force_remove(PODS, namespace, name)

    def runtime_for(self, namespace, name):
        for runtime in self.pods.values():
            if runtime.namespace == namespace and runtime.name == name and \
                    not runtime.stopping:
                return runtime
        return None

    def running_pods(self):
        return [r for r in self.pods.values() if r.started and not r.stopping]

    # --- exec and logs ------------------------------------------------------------------

    async def exec_request(self, request, info):
        return await execws.handle_exec(self, request, info)

    async def logs(self, request, namespace, name):
        pod = self.store.get(PODS, namespace, name)
        containers = [c["name"] for c in pod["spec"].get("containers") or []]
        container = request.query.get("container")
        if not container:
            if len(containers) != 1:
                raise errors.bad_request("a container name must be specified for pod %s, "
                                         "choose one of: [%s]" % (name, " ".join(containers)))
            container = containers[0]
        if container not in containers:
            raise errors.bad_request("container %s is not valid for pod %s" % (container, name))

        runtime = self.runtime_for(namespace, name)
        if runtime is None:
            raise errors.bad_request('container "%s" in pod "%s" is waiting to start: '
                                     "ContainerCreating" % (container, name))
        path = os.path.join(runtime.log_dir, "%s.log" % container)
        try:
            with open(path, "rb") as stream:
                data = stream.read()
        except FileNotFoundError:
            data = b""

        tail = request.query.get("tailLines")
        if tail:
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(tail):]) if int(tail) > 0 else b""

        follow = request.query.get("follow", "").lower() in ("true", "1")
        if not follow:
            return web.Response(body=data, content_type="text/plain")

        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(data)
        offset = os.path.getsize(path) if os.path.exists(path) else 0
        target = next(c for c in runtime.containers if c.name == container)
        while not runtime.stopping:
            await asyncio.sleep(0.1)
            try:
                with open(path, "rb") as stream:
                    stream.seek(offset)
                    chunk = stream.read()
            except FileNotFoundError:
                break
            if chunk:
                offset += len(chunk)
                await response.write(chunk)
            elif target.process is None or target.process.returncode is not None:
                break
        await response.write_eof()
        return response

    # --- introspection and shutdown -----------------------------------------------------

    def describe(self):
        return [runtime.describe() for runtime in self.pods.values()]

    def network_info(self):
        return self.network.info()

    async def shutdown(self):
        self.closing = True
        if self.worker:
            self.worker.cancel()
        for task in list(self.starts):
            task.cancel()
        for session in list(self.exec_sessions):
            session.abort()
        runtimes = list(self.pods.values())
        self.pods.clear()
        for runtime in runtimes:
            runtime.kill_all()
        await asyncio.gather(*(runtime.stop(0) for runtime in runtimes),
                             return_exceptions=True)
        self.netpolicy.forget_all()
        self.netpolicy.close()
        self.network.teardown()
