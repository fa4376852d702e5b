"""Pod networking: a node network namespace with a bridge, one network namespace per pod
with a veth pair into the bridge, and addresses from the cluster's pod CIDR.

Nothing is created in the host's network namespace: the bridge, both veth ends and every
address live in namespaces this module creates, named "<prefix>-node" and "<prefix>-p<N>".
"""
import asyncio
import ipaddress
import logging
import os
import re
import subprocess

log = logging.getLogger("fake-apiserver.network")

NETNS_DIR = "/run/netns"
NAME_RE = re.compile(r"^sbxk-(\d+)-")


class CommandError(RuntimeError):
    pass


async def run(*argv, input_data=None, check=True):
    """Run a command without blocking the event loop; return (code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.PIPE if input_data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = await process.communicate(input_data)
    except asyncio.CancelledError:
        # A cancelled caller (shutdown) must not leave the command to finish later, say
        # an `ip netns add` after teardown has listed what to delete.
        if process.returncode is None:
            process.kill()
        await asyncio.shield(process.wait())
        raise
    if check and process.returncode != 0:
        raise CommandError("%s failed with exit code %d: %s"
                           % (" ".join(argv), process.returncode, err.decode().strip()))
    return process.returncode, out.decode(), err.decode()


def run_sync(*argv, check=True):
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise CommandError("%s failed with exit code %d: %s"
                           % (" ".join(argv), result.returncode, result.stderr.strip()))
    return result


def list_netns():
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def sweep_stale():
    """Delete namespaces left by fake clusters whose process no longer exists."""
    removed = []
    for name in list_netns():
        match = NAME_RE.match(name)
        if not match:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or os.path.exists("/proc/%d" % pid):
            continue
        run_sync("ip", "netns", "delete", name, check=False)
        removed.append(name)
    if removed:
        log.info("removed network namespaces of stopped fake clusters: %s", ", ".join(removed))
    return removed


class Network:
    """The node namespace, its bridge and the address pool of one fake cluster."""

    def __init__(self, pod_cidr="10.244.0.0/16"):
        self.prefix = "sbxk-%d" % os.getpid()
        self.node_netns = self.prefix + "-node"
        self.bridge = "cni0"
        self.cidr = ipaddress.ip_network(pod_cidr)
        self.gateway = next(self.cidr.hosts())
        self.allocated = set()
        self.last_index = 0
        self.counter = 0
        self.created = []
        self.ready = False

    def setup(self):
        sweep_stale()
        run_sync("ip", "netns", "add", self.node_netns)
        self.created.append(self.node_netns)
        prefix_len = self.cidr.prefixlen
        for argv in (
                ("ip", "-n", self.node_netns, "link", "set", "lo", "up"),
                # A bridge without an address of its own takes the lowest address of its
                # ports, so it would change as pods come and go and leave the gateway's old
                # address in the pods' neighbour caches for seconds. A fixed, locally
                # administered address keeps the gateway where the pods expect it.
                ("ip", "-n", self.node_netns, "link", "add", self.bridge, "address",
                 "02:00:0a:f4:00:01", "type", "bridge"),
                ("ip", "-n", self.node_netns, "addr", "add",
                 "%s/%d" % (self.gateway, prefix_len), "dev", self.bridge),
                ("ip", "-n", self.node_netns, "link", "set", self.bridge, "up"),
                ("ip", "netns", "exec", self.node_netns, "sysctl", "-qw",
                 "net.ipv4.ip_forward=1")):
            run_sync(*argv)
        self.ready = True
        log.info("node network namespace %s ready, pod CIDR %s, gateway %s", self.node_netns,
                 self.cidr, self.gateway)

    def allocate_ip(self):
        """Return the next free address after the last one handed out.

        Addresses are not reused right away: a peer's neighbour cache would still map a
        reused address to the deleted pod's MAC address for a while.
        """
        size = self.cidr.num_addresses
        for step in range(1, size):
            index = (self.last_index + step) % size
            host = self.cidr[index]
            if index == 0 or index == size - 1 or host == self.gateway or \
                    host in self.allocated:
                continue
            self.last_index = index
            self.allocated.add(host)
            return host
        raise CommandError("pod CIDR %s is exhausted" % self.cidr)

    async def add_pod(self):
        """Create a pod network namespace; return (netns name, address)."""
        self.counter += 1
        netns = "%s-p%d" % (self.prefix, self.counter)
        host_if = "veth%d" % self.counter
        address = self.allocate_ip()
        await run("ip", "netns", "add", netns)
        self.created.append(netns)
        # Two `ip -batch` runs, one per namespace, in place of one process per command.
        node_commands = ("link add %s type veth peer name eth0 netns %s\n"
                         "link set %s master %s up\n"
                         % (host_if, netns, host_if, self.bridge))
        pod_commands = ("link set lo up\n"
                        "addr add %s/%d dev eth0\n"
                        "link set eth0 up\n"
                        "route add default via %s\n"
                        % (address, self.cidr.prefixlen, self.gateway))
        try:
            await run("ip", "-n", self.node_netns, "-batch", "-",
                      input_data=node_commands.encode())
            await run("ip", "-n", netns, "-batch", "-", input_data=pod_commands.encode())
        except CommandError:
            await self.remove_pod(netns, address)
            raise
        return netns, address

    async def remove_pod(self, netns, address):
        await run("ip", "netns", "delete", netns, check=False)
        if netns in self.created:
            self.created.remove(netns)
        self.allocated.discard(address)

    def teardown(self):
        for netns in reversed(list(self.created)):
            run_sync("ip", "netns", "delete", netns, check=False)
        # A pod start cancelled by shutdown may have made its namespace without recording
        # it; every namespace of this server carries its prefix.
        for netns in list_netns():
            if netns.startswith(self.prefix + "-"):
                run_sync("ip", "netns", "delete", netns, check=False)
        self.created = []
        self.ready = False

    def info(self):
        return {"nodeNetns": self.node_netns, "bridge": self.bridge,
                "gateway": str(self.gateway), "podCIDR": str(self.cidr),
                "netnsPrefix": self.prefix}
