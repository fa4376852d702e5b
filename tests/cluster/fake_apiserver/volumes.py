"""Pod volumes for the fake kubelet: emptyDir, configMap and secret volumes are fresh tmpfs
mounts in the pod's mount namespace, hostPath directories are bind mounts.

Each volume is mounted once at a staging directory under the pod's state directory, filled
(configMap, secret) through /proc/<pid>/root, bind-mounted at every mountPath, and the staging
mount is then removed. Nothing reaches the host's mount table: the pod's mount namespace has
private propagation, so its mounts go away with its last process.

All containers of a pod share one mount namespace here (a real runtime gives each container
its own), so every container of a pod gets the volumeMounts of all of them.
"""
import asyncio
import base64
import os
import pwd
import re
import shlex
import subprocess

from .procs import die_with_parent

CONFIGMAPS = ("", "configmaps")
SECRETS = ("", "secrets")

# Decimal and binary suffixes of a Kubernetes resource.Quantity.
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_FACTORS = {None: 1, "k": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12, "P": 10 ** 15,
            "E": 10 ** 18, "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40,
            "Pi": 2 ** 50, "Ei": 2 ** 60}
# Kinds a real kubelet supports and this one does not. A pod using one is rejected.
UNSUPPORTED_KINDS = ("persistentVolumeClaim", "projected", "downwardAPI", "ephemeral", "nfs",
                     "csi", "iscsi", "image", "gitRepo")
# The mode of configMap and secret files unless defaultMode or an item's mode sets another.
DEFAULT_FILE_MODE = 0o644


class VolumeError(Exception):
    """A volume the kubelet cannot set up. `retry` is true when the pod may start later,
    for example once a missing ConfigMap exists."""

    def __init__(self, message, retry=False):
        super().__init__(message)
        self.retry = retry


def parse_quantity(text):
    """Return the bytes of a quantity such as "64Mi" or "1G", rounded up."""
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ValueError('invalid quantity "%s"; use a number with an optional suffix '
                         "such as Ki, Mi, Gi, k, M or G" % text)
    number, suffix = match.groups()
    whole, _, fraction = number.partition(".")
    scale = 10 ** len(fraction)
    value = (int(whole) * scale + int(fraction or 0)) * _FACTORS[suffix]
    return -(-value // scale)


def _clean_mount_path(path):
    if not isinstance(path, str) or not path.startswith("/"):
        raise VolumeError('mountPath "%s" is not an absolute path' % path)
    if ".." in path.split("/"):
        raise VolumeError('mountPath "%s" must not contain ".."' % path)
    return os.path.normpath(path)


def _clean_relative(path, field):
    if not isinstance(path, str) or not path or path.startswith("/") or \
            ".." in path.split("/"):
        raise VolumeError('%s "%s" must be a relative path without ".."' % (field, path))
    return os.path.normpath(path)


def _decode_base64(value, what):
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise VolumeError("%s is not valid base64" % what) from None


class Mount:
    """One volumeMount: the volume's name, the path in the pod, subPath and readOnly."""

    def __init__(self, volume, path, sub_path, read_only):
        self.volume = volume
        self.path = path
        self.sub_path = sub_path
        self.read_only = read_only

    def key(self):
        return (self.volume, self.sub_path, self.read_only)


class PodVolumes:
    """The volumes one pod mounts, checked against its spec and the stored objects."""

    def __init__(self, store, namespace, spec, staging_dir):
        self.store = store
        self.namespace = namespace
        self.spec = spec
        self.staging_dir = staging_dir
        self.volumes = {}
        self.mounts = []
        self.files = {}
        self._check_spec()

    # --- spec ----------------------------------------------------------------------------

    def _check_spec(self):
        for volume in self.spec.get("volumes") or []:
            name = volume.get("name")
            if not name or "/" in name or name in (".", ".."):
                raise VolumeError('volume name "%s" is invalid' % name)
            self.volumes[name] = volume

        by_path = {}
        for container in self.spec.get("containers") or []:
            for item in container.get("volumeMounts") or []:
                mount = self._check_mount(container["name"], item)
                previous = by_path.get(mount.path)
                if previous is None:
                    by_path[mount.path] = mount
                    self.mounts.append(mount)
                elif previous.key() != mount.key():
                    # NOTE: a real runtime gives each container its own mount namespace, where
                    # different volumes at one path are fine. Here the pod has one.
                    raise VolumeError('containers mount different volumes at "%s"; the fake '
                                      "kubelet shares one mount namespace between the "
                                      "containers of a pod" % mount.path)
        # Parents before children, so /tmp is mounted before /tmp/sbx lands inside it.
        self.mounts.sort(key=lambda m: (m.path.count("/"), m.path))

    def _check_mount(self, container, item):
        name = item.get("name")
        volume = self.volumes.get(name)
        if volume is None:
            raise VolumeError('container "%s": volumeMount "%s" names no volume of the pod'
                              % (container, name))
        path = _clean_mount_path(item.get("mountPath"))
        sub_path = item.get("subPath") or ""
        if sub_path:
            sub_path = _clean_relative(sub_path, "subPath")
            if "emptyDir" not in volume:
                raise VolumeError('volume "%s": the fake kubelet supports subPath only on '
                                  "emptyDir volumes" % name)
        return Mount(name, path, sub_path, bool(item.get("readOnly")))

    def mounted_volumes(self):
        """Return the volumes that at least one container mounts, in mount order."""
        names = []
        for mount in self.mounts:
            if mount.volume not in names:
                names.append(mount.volume)
        return [self.volumes[name] for name in names]

    def host_mount_points(self):
        """Return the mount paths that lie outside every other mount of the pod: their
        directories are made on the host file system, the others inside a parent's tmpfs."""
        paths = [m.path for m in self.mounts]
        return [p for p in paths
                if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in paths)]

    # --- object contents -----------------------------------------------------------------

    def resolve(self):
        """Read the files of configMap and secret volumes from the store and check the
        other kinds. Raises VolumeError, with retry set while a referenced object is missing."""
        files = {}
        for volume in self.mounted_volumes():
            name = volume["name"]
            for kind in UNSUPPORTED_KINDS:
                if kind in volume:
                    raise VolumeError('volume "%s": the fake kubelet does not support %s '
                                      "volumes; use emptyDir, configMap, secret or hostPath"
                                      % (name, kind))
            if "configMap" in volume:
                files[name] = self._configmap_files(name, volume["configMap"])
            elif "secret" in volume:
                files[name] = self._secret_files(name, volume["secret"])
            elif "hostPath" in volume:
                self._check_host_path(name, volume["hostPath"])
            elif "emptyDir" in volume:
                self.empty_dir_size(volume)
            else:
                raise VolumeError('volume "%s" has no volume source the fake kubelet knows'
                                  % name)
        self.files = files

    def _configmap_files(self, volume_name, source):
        object_name = source.get("name", "")
        obj = self.store.find(CONFIGMAPS, self.namespace, object_name)
        if obj is None:
            if source.get("optional"):
                return []
            raise VolumeError('MountVolume.SetUp failed for volume "%s" : configmap "%s" not '
                              "found" % (volume_name, object_name), retry=True)
        data = {key: value.encode() for key, value in (obj.get("data") or {}).items()}
        for key, value in (obj.get("binaryData") or {}).items():
            data[key] = _decode_base64(value, 'configmap "%s" binaryData key "%s"'
                                       % (object_name, key))
        return self._select(volume_name, "configmap", object_name, source, data)

    def _secret_files(self, volume_name, source):
        object_name = source.get("secretName", "")
        obj = self.store.find(SECRETS, self.namespace, object_name)
        if obj is None:
            if source.get("optional"):
                return []
            raise VolumeError('MountVolume.SetUp failed for volume "%s" : secret "%s" not '
                              "found" % (volume_name, object_name), retry=True)
        data = {}
        for key, value in (obj.get("data") or {}).items():
            data[key] = _decode_base64(value, 'secret "%s" data key "%s"' % (object_name, key))
        # A real API server merges stringData into data on write; this one stores it as sent.
        for key, value in (obj.get("stringData") or {}).items():
            data[key] = value.encode()
        return self._select(volume_name, "secret", object_name, source, data)

    @staticmethod
    def _select(volume_name, kind, object_name, source, data):
        """Return [(relative path, content, mode)] for the keys the volume projects."""
        default_mode = source.get("defaultMode", DEFAULT_FILE_MODE)
        items = source.get("items")
        if not items:
            return [(_clean_relative(key, "key"), value, default_mode)
                    for key, value in sorted(data.items())]
        files = []
        for item in items:
            key = item.get("key")
            if key not in data:
                if source.get("optional"):
                    continue
                raise VolumeError('MountVolume.SetUp failed for volume "%s" : %s "%s": key '
                                  '"%s" not found' % (volume_name, kind, object_name, key),
                                  retry=True)
            files.append((_clean_relative(item.get("path"), "item path"), data[key],
                          item.get("mode", default_mode)))
        return files

    @staticmethod
    def _check_host_path(volume_name, source):
        path = source.get("path", "")
        kind = source.get("type", "")
        if not path.startswith("/"):
            raise VolumeError('volume "%s": hostPath "%s" is not absolute' % (volume_name, path))
        if kind not in ("", "Directory", "DirectoryOrCreate"):
            raise VolumeError('volume "%s": the fake kubelet supports hostPath only for '
                              'directories, not type "%s"' % (volume_name, kind))
        if kind == "DirectoryOrCreate":
            os.makedirs(path, mode=0o755, exist_ok=True)
        if not os.path.isdir(path):
            raise VolumeError('MountVolume.SetUp failed for volume "%s" : hostPath type check '
                              'failed: %s is not a directory' % (volume_name, path))

    @staticmethod
    def empty_dir_size(volume):
        limit = (volume.get("emptyDir") or {}).get("sizeLimit")
        if limit is None:
            return None
        try:
            return parse_quantity(limit)
        except ValueError as error:
            raise VolumeError('volume "%s": emptyDir.sizeLimit: %s' % (volume["name"], error)) \
                from None

    # --- mounting -------------------------------------------------------------------------

    def staging_path(self, name):
        return os.path.join(self.staging_dir, name)

    def _tmpfs_options(self, volume, fs_group):
        if "emptyDir" in volume:
            # A real emptyDir is world-writable, so any runAsUser can write to it.
            options = ["mode=0777"]
            size = self.empty_dir_size(volume)
            if size is not None:
                options.append("size=%d" % size)
        elif "secret" in volume:
            options = ["mode=1777"]
        else:
            options = ["mode=0777"]
        if fs_group is not None:
            # fsGroup owns the volume's root directory, and new files inherit the group
            # through the set-group-ID bit, as the kubelet's volume ownership change does.
            options[0] = "mode=%s" % ("3777" if "secret" in volume else "2777")
            options.append("gid=%d" % fs_group)
        return ",".join(options)

    def mount_script(self, fs_group):
        """Return the shell script that mounts every volume at its staging directory."""
        lines = ["set -e"]
        for volume in self.mounted_volumes():
            if "hostPath" in volume:
                continue
            lines.append("mount -t tmpfs -o %s tmpfs %s" % (
                shlex.quote(self._tmpfs_options(volume, fs_group)),
                shlex.quote(self.staging_path(volume["name"]))))
        return "\n".join(lines)

    def bind_script(self):
        """Return the shell script that bind-mounts the staged volumes at their mount paths
        and then removes the staging mounts."""
        lines = ["set -e"]
        for mount in self.mounts:
            volume = self.volumes[mount.volume]
            if "hostPath" in volume:
                source = os.path.normpath(volume["hostPath"]["path"])
            else:
                source = self.staging_path(mount.volume)
            if mount.sub_path:
                source = os.path.join(source, mount.sub_path)
                lines.append("mkdir -p %s && chmod 0777 %s"
                             % (shlex.quote(source), shlex.quote(source)))
            target = shlex.quote(mount.path)
            lines.append("mkdir -p %s" % target)
            lines.append("mount --bind %s %s" % (shlex.quote(source), target))
            if mount.read_only:
                lines.append("mount -o remount,bind,ro %s" % target)
        for volume in self.mounted_volumes():
            if "hostPath" not in volume:
                lines.append("umount %s" % shlex.quote(self.staging_path(volume["name"])))
        return "\n".join(lines)

    def write_files(self, sandbox_pid, fs_group):
        """Write configMap and secret files into the staged tmpfs mounts, reached through
        the pod's root directory in /proc."""
        root = "/proc/%d/root" % sandbox_pid
        for name, files in self.files.items():
            base = root + self.staging_path(name)
            for path, content, mode in files:
                target = os.path.join(base, path)
                os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                             os.O_CLOEXEC, 0o600)
                try:
                    os.write(fd, content)
                    if fs_group is not None:
                        # The kubelet's ownership change makes files of read-only volumes
                        # readable by the fsGroup, whatever defaultMode sets.
                        os.fchown(fd, 0, fs_group)
                        mode |= 0o440
                    os.fchmod(fd, mode)
                finally:
                    os.close(fd)

    async def mount(self, sandbox_pid, fs_group):
        """Mount every volume inside the pod's mount namespace; raises VolumeError."""
        if not self.mounts:
            return
        for volume in self.mounted_volumes():
            if "hostPath" not in volume:
                os.makedirs(self.staging_path(volume["name"]), mode=0o700, exist_ok=True)
        await self._run_in_pod(sandbox_pid, self.mount_script(fs_group))
        try:
            self.write_files(sandbox_pid, fs_group)
        except OSError as error:
            raise VolumeError("writing a configMap or secret file failed: %s" % error) \
                from None
        await self._run_in_pod(sandbox_pid, self.bind_script())

    @staticmethod
    async def _run_in_pod(sandbox_pid, script):
        process = await asyncio.create_subprocess_exec(
            "nsenter", "-t", str(sandbox_pid), "-m", "--", "/bin/sh", "-c", script,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=die_with_parent)
        _, stderr = await process.communicate()
        if process.returncode != 0:
            raise VolumeError("mounting the pod's volumes failed: %s"
                              % stderr.decode(errors="replace").strip())


class MountPointRegistry:
    """The mount point directories the kubelet made on the host, with the pods using them.

    A mount point missing on the host is made there, because pods share the host's file
    system. It is removed when no pod uses it any more. Removing a directory that is a mount
    point in another mount namespace detaches that mount there (Linux 3.18 and later), so a
    directory stays while any pod that mounts at or below it runs.
    """

    def __init__(self):
        self.users = {}

    def acquire(self, uid, paths):
        for path in paths:
            missing = []
            current = path
            while not os.path.lexists(current):
                missing.append(current)
                current = os.path.dirname(current)
            for directory in reversed(missing):
                os.mkdir(directory, 0o755)
                self.users[directory] = set()
            for directory in self.users:
                if path == directory or path.startswith(directory + "/"):
                    self.users[directory].add(uid)

    def release(self, uid):
        unused = []
        for directory, users in self.users.items():
            users.discard(uid)
            if not users:
                unused.append(directory)
        # Children before parents.
        for directory in sorted(unused, key=len, reverse=True):
            del self.users[directory]
            try:
                os.rmdir(directory)
            except OSError:
                pass


def user_identity(pod_spec, container_spec):
    """Return (uid, gid, groups, home) for a container's processes, or None for root with
    the defaults. Container securityContext fields win over the pod's."""
    pod_context = pod_spec.get("securityContext") or {}
    context = container_spec.get("securityContext") or {}

    def field(name):
        if context.get(name) is not None:
            return context[name]
        return pod_context.get(name)

    uid = field("runAsUser")
    gid = field("runAsGroup")
    fs_group = pod_context.get("fsGroup")
    supplemental = list(pod_context.get("supplementalGroups") or [])
    if uid is None and gid is None and fs_group is None and not supplemental:
        return None

    uid = int(uid or 0)
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        entry = None
    if gid is None:
        # Like containerd: the primary group of the image's passwd entry, else 0.
        gid = entry.pw_gid if entry else 0
    gid = int(gid)
    groups = sorted({gid} | {int(g) for g in supplemental} |
                    ({int(fs_group)} if fs_group is not None else set()))
    home = entry.pw_dir if entry else "/"
    return uid, gid, groups, home


def setpriv_argv(identity):
    uid, gid, groups, _ = identity
    return ["setpriv", "--reuid=%d" % uid, "--regid=%d" % gid,
            "--groups=%s" % ",".join(str(g) for g in groups), "--"]
