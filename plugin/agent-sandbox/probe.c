/* SPDX-License-Identifier: MIT */
/*
 * Setting up the pod for the job in one exec: the step directory and its marker, the builds
 * and cache directories, and the probe that the NetworkPolicy is enforced.
 *
 * A NetworkPolicy that exists is not yet enforced (the CNI applies it asynchronously), and a
 * cluster without an enforcing CNI ignores it. So before the first step, a connection from
 * inside the pod to a destination outside the allow-list, one the pod could reach without the
 * policy, must fail. The probe retries until it does or agent_sandbox.probe.timeout passes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent_sandbox.h"
#include "cleanup.h"
#include "error.h"
#include "log.h"
#include "netpol.h"
#include "podexec.h"
#include "util.h"

/* Exit codes of the setup script. */
enum {
	SETUP_OK = 0,
	SETUP_NO_STEP_DIR = 10,
	SETUP_NOT_WRITABLE = 11,
	SETUP_NO_PROBE_TOOL = 12,
	SETUP_REACHABLE = 13,
};

/*
 * $1 step dir, $2 marker, $3 probe address (empty: no probe), $4 port, $5 probe seconds,
 * $6 "setup" to create the directories first (the doctor's probe pod skips it), $7 the file
 * name of the step wrapper, which setup installs in the step directory.
 * A connection attempt gives up after 2 s; "refused" and "timed out" both mean unreachable.
 */
static const char setup_start[] =
	"set -u\n"
	"dir=$1 marker=$2 host=$3 port=$4 seconds=$5 setup=$6 wrapper=$7\n"
	"umask 077\n"
	"if [ \"$setup\" = setup ]; then\n"
	"  mkdir -p \"$dir\" && printf '%s' \"$marker\" > \"$dir/sandbox\" || exit 10\n";

/* Between setup_start and setup_rest: the step wrapper as a here-document, written under a
 * temporary name and renamed, so a step finds either the whole file or none. */
#define WRAPPER_END "SBX_STEP_WRAPPER_END"
static const char install_start[] =
	"  cat > \"$dir/$wrapper.tmp\" <<'" WRAPPER_END "' && mv -f \"$dir/$wrapper.tmp\" "
	"\"$dir/$wrapper\" || exit 10\n";
static const char install_end[] = WRAPPER_END "\n";

static const char setup_rest[] =
	"  for d in /builds /cache; do\n"
	"    mkdir -p \"$d\" 2>/dev/null\n"
	"    if [ ! -w \"$d\" ]; then echo \"$d\" >&2; exit 11; fi\n"
	"  done\n"
	"fi\n"
	"[ -n \"$host\" ] || exit 0\n"
	"command -v timeout >/dev/null 2>&1 || { echo timeout >&2; exit 12; }\n"
	"probe() {\n"
	"  if command -v bash >/dev/null 2>&1; then\n"
	"    timeout 2 bash -c 'exec 3<>\"/dev/tcp/$0/$1\"' \"$host\" \"$port\" 2>/dev/null\n"
	"  elif command -v nc >/dev/null 2>&1; then\n"
	"    timeout 2 nc -z -w 2 \"$host\" \"$port\" 2>/dev/null </dev/null\n"
	"  elif command -v python3 >/dev/null 2>&1; then\n"
	"    timeout 2 python3 -c 'import socket,sys; "
	"socket.create_connection((sys.argv[1], int(sys.argv[2])), 2)' \"$host\" \"$port\" "
	"2>/dev/null\n"
	"  else return 99; fi\n"
	"}\n"
	"start=$(date +%s)\n"
	"while :; do\n"
	"  probe; rc=$?\n"
	"  [ $rc -eq 99 ] && { echo 'bash, nc or python3' >&2; exit 12; }\n"
	"  [ $rc -ne 0 ] && exit 0\n"
	"  if [ $(( $(date +%s) - start )) -ge \"$seconds\" ]; then exit 13; fi\n"
	"  sleep 0.5\n"
	"done\n";

static int split_destination(const char *destination, char *host, size_t host_size, char *port,
			     size_t port_size)
{
	const char *colon = strrchr(destination, ':');
	const char *start = destination;
	size_t length;

	if (colon == NULL)
		return -1;
	length = (size_t) (colon - start);
	if (start[0] == '[' && length >= 2 && colon[-1] == ']') {
		start++;
		length -= 2;
	}
	if (length == 0 || length >= host_size || strlen(colon + 1) >= port_size)
		return -1;
	memcpy(host, start, length);
	host[length] = '\0';
	snprintf(port, port_size, "%s", colon + 1);
	return 0;
}

/* Returns 1 when BLOCK contains ADDRESS of FAMILY. */
static int block_contains(const struct as_egress_block *block, int family,
			  const unsigned char *address)
{
	unsigned bits = block->prefix_length, bytes = bits / 8;

	if (block->family != family)
		return 0;
	if (memcmp(block->address, address, bytes) != 0)
		return 0;
	if (bits % 8 == 0)
		return 1;
	return ((block->address[bytes] ^ address[bytes]) & (0xff00u >> (bits % 8)) & 0xff) == 0;
}

int as_probe_check_destination(struct sbx_executor *executor, const struct as_egress *egress,
			       struct sbx_error *error)
{
	const char *destination = executor->config->agent_sandbox.probe.destination;
	unsigned char address[16];
	char host[128], port_text[16], *end;
	unsigned long port;
	int family;

	if (destination == NULL)
		return 0;
	if (split_destination(destination, host, sizeof(host), port_text, sizeof(port_text)) < 0)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "agent_sandbox.probe.destination \"%s\" is not IP:port",
				     destination);
	family = strchr(host, ':') != NULL ? AF_INET6 : AF_INET;
	port = strtoul(port_text, &end, 10);
	if (inet_pton(family, host, address) != 1 || *end != '\0' || port == 0 || port > 65535)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "agent_sandbox.probe.destination \"%s\" is not IP:port",
				     destination);
	/* A destination the job may reach proves nothing about enforcement: the probe would
	 * reach it through the job's own policy and blame the cluster. */
	for (size_t i = 0; i < egress->count; i++) {
		const struct as_egress_block *block = &egress->blocks[i];

		if ((block->port == 0 || block->port == port) &&
		    block_contains(block, family, address))
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "agent_sandbox.probe.destination %s is on the job's "
					     "egress allow-list, so the probe would reach it through "
					     "the job's own NetworkPolicy; choose an address outside "
					     "network.runner_allow, network.user_allow and the CI "
					     "server that pods can reach without a policy",
					     destination);
	}
	return 0;
}

static int run_setup(struct sbx_executor *executor, const struct as_sandbox *sandbox, int setup,
		     struct as_capture *capture, struct sbx_error *error)
{
	const struct sbx_agent_sandbox_probe_config *probe = &executor->config->agent_sandbox.probe;
	_cleanup_free_ char *marker = as_sandbox_marker(sandbox);
	_cleanup_free_ char *script = NULL;
	char host[128] = "", port[16] = "", seconds[32];
	char wrapper_name[AS_STEP_WRAPPER_NAME_MAX];
	/* The script goes on stdin: exec URLs carry argv, and long URLs fail. */
	const char *argv[] = { "sh",	"-s", "--", sandbox->step_dir, marker, host, port, seconds,
			       setup ? "setup" : "probe", wrapper_name, NULL };
	size_t wrapper_length, script_length = 0;
	const char *wrapper = as_step_wrapper(&wrapper_length);
	char what[300];
	FILE *out;

	if (marker == NULL)
		return sbx_error_errno(error, ENOMEM, "pod setup");
	as_step_wrapper_name(wrapper_name);
	out = open_memstream(&script, &script_length);
	if (out == NULL)
		return sbx_error_errno(error, errno, "pod setup");
	fputs(setup_start, out);
	if (setup) {
		fputs(install_start, out);
		fwrite(wrapper, 1, wrapper_length, out);
		fputs(install_end, out);
	}
	fputs(setup_rest, out);
	if (fclose(out) != 0)
		return sbx_error_errno(error, ENOMEM, "pod setup");
	if (probe->destination != NULL &&
	    split_destination(probe->destination, host, sizeof(host), port, sizeof(port)) < 0)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "agent_sandbox.probe.destination \"%s\" is not IP:port",
				     probe->destination);
	snprintf(seconds, sizeof(seconds), "%" PRId64, probe->timeout);
	snprintf(what, sizeof(what), "exec in pod %s/%s", sandbox->namespace, sandbox->pod);
	if (as_pod_exec_capture(executor, sandbox, argv, script, script_length,
				as_deadline(probe->timeout + 60), capture, error) < 0) {
		if (strstr(error->message, "403") != NULL)
			return sbx_error_prefix(error, "%s: forbidden; grant the runner's identity "
						"get and create on pods/exec in its Role "
						"(config-examples/kubernetes/rbac.yaml)",
						what);
		return sbx_error_prefix(error, "%s", what);
	}
	return 0;
}

int as_probe_reachable(struct sbx_executor *executor, const struct as_sandbox *sandbox,
		       struct sbx_error *error)
{
	struct as_capture capture = { 0 };
	int code;

	if (run_setup(executor, sandbox, 0, &capture, error) < 0)
		return -1;
	code = capture.exit_code;
	if (code != SETUP_OK && code != SETUP_REACHABLE)
		sbx_error_set(error, SBX_ERROR_SYSTEM,
			      "the probe in pod %s failed with exit code %d: %.200s",
			      sandbox->pod, code, capture.err);
	as_capture_clear(&capture);
	if (code == SETUP_OK)
		return 0;
	return code == SETUP_REACHABLE ? 1 : -1;
}

int as_pod_setup(struct sbx_executor *executor, const struct as_sandbox *sandbox,
		 struct sbx_error *error)
{
	const struct sbx_agent_sandbox_probe_config *probe = &executor->config->agent_sandbox.probe;
	struct as_capture capture = { 0 };
	int64_t started = sbx_monotonic_ms();

	if (probe->destination == NULL && probe->required)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "agent_sandbox.probe.destination is not set, so sbx cannot "
				     "check that the cluster enforces the job's NetworkPolicy; set "
				     "it to an IP:port outside the allow-list that pods can reach "
				     "without a policy, or set agent_sandbox.probe.required: false "
				     "to run jobs unchecked");
	if (run_setup(executor, sandbox, 1, &capture, error) < 0)
		return -1;
	switch (capture.exit_code) {
	case SETUP_OK:
		break;
	case SETUP_NO_STEP_DIR:
		sbx_error_set(error, SBX_ERROR_SYSTEM,
			      "cannot create %s in pod %s; set agent_sandbox.step_dir to a writable "
			      "directory of the image (an emptyDir volume works)",
			      sandbox->step_dir, sandbox->pod);
		goto fail;
	case SETUP_NOT_WRITABLE:
		sbx_error_set(error, SBX_ERROR_SYSTEM,
			      "%.*s is not writable in pod %s; mount an emptyDir volume there in "
			      "the pod template (see config-examples/kubernetes/warm-pool.yaml)",
			      (int) strcspn(capture.err, "\n"), capture.err, sandbox->pod);
		goto fail;
	case SETUP_NO_PROBE_TOOL:
		sbx_error_set(error, SBX_ERROR_SYSTEM,
			      "cannot probe NetworkPolicy enforcement in pod %s: the image has no "
			      "%.*s; add one to the image, or set agent_sandbox.probe.required: "
			      "false and remove probe.destination",
			      sandbox->pod, (int) strcspn(capture.err, "\n"), capture.err);
		goto fail;
	case SETUP_REACHABLE:
		sbx_error_set(error, SBX_ERROR_SYSTEM,
			      "pod %s still reaches %s, which is outside the job's allow-list, %" PRId64
			      " s after NetworkPolicy %s was created: the cluster does not enforce "
			      "NetworkPolicies (or not yet); use a CNI that enforces them (Calico, "
			      "Cilium, GKE Dataplane V2), or raise agent_sandbox.probe.timeout",
			      sandbox->pod, probe->destination, probe->timeout,
			      sandbox->network_policy);
		goto fail;
	default:
		sbx_error_set(error, SBX_ERROR_SYSTEM,
			      "setting up pod %s failed with exit code %d: %.200s; the image needs "
			      "a POSIX sh",
			      sandbox->pod, capture.exit_code, capture.err);
		goto fail;
	}
	if (probe->destination != NULL)
		sbx_info("NetworkPolicy enforced: pod %s cannot reach %s (checked in %" PRId64
			 " ms)",
			 sandbox->pod, probe->destination, sbx_monotonic_ms() - started);
	else
		sbx_warning("NetworkPolicy enforcement not checked: agent_sandbox.probe.destination "
			    "is not set");
	as_capture_clear(&capture);
	return 0;

fail:
	as_capture_clear(&capture);
	return -1;
}
