/* SPDX-License-Identifier: MIT */
/*
 * exec: durable steps. A step runs detached inside the pod with its output appended to
 * <step_dir>/<step>.log and its exit status written to <step>.status when it ends, so neither
 * depends on the exec connection. The exec that starts it then follows the log. When the
 * stream breaks, sbx attaches again, resumes the output from the last byte it forwarded and
 * takes the recorded status. A step whose status cannot be had is a system failure.
 *
 * The wrapper below is installed in the step directory at prepare, so each exec runs a short
 * fixed argv and its stdin carries only the step's script. The script contains job variables,
 * so it travels on stdin and lands in a 0600 file, never on argv (argv also becomes the exec
 * URL, which must stay short). The wrapper reads exactly the bytes sbx sends, so one exec
 * works on v5 streams (stdin closed after them) and on v4 streams (stdin never closed). A
 * sandbox without the file (prepared by another sbx version) gets the wrapper on stdin in
 * front of the script, and installs it for the next steps. The wrapper talks to sbx on stderr
 * in lines "sbx-step: ..."; the step's own stdout and stderr both reach the job log through
 * the follower's stdout.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "agent_sandbox.h"
#include "cleanup.h"
#include "error.h"
#include "log.h"
#include "util.h"

#include "k8s/exec.h"

/* Attempts to attach after the stream broke, and the longest pause between two. */
#define ATTACH_ATTEMPTS_MAX 12
#define ATTACH_DELAY_MAX_MS 5000
/* Bound on stopping a step after a cancel or timeout, on top of stop_grace, and the execs
 * it may take when the stream breaks. */
#define STOP_TIMEOUT_S 30
#define STOP_ATTEMPTS_MAX 4
#define PROTOCOL_MAX (16u << 10)
/* The line sbx sends after the script; the wrapper reads it to know the script is whole. */
#define END_LINE_PREFIX "sbx-end "

/* $0 is the installed wrapper. Running it with `.` keeps the positional parameters. */
static const char launcher[] =
	"[ -r \"$0\" ] || { echo 'sbx-step: no-wrapper' >&2; exit 0; }; . \"$0\"";

/*
 * For a sandbox without the installed wrapper: reads the wrapper, $1 bytes, from stdin,
 * installs it as $0 for the next steps, and runs it. The rest of stdin is the step's script,
 * and dd reads one byte at a time, so it takes nothing of it. $(...) drops the final newline,
 * which printf puts back.
 */
static const char bootstrap_launcher[] =
	"w=$(dd bs=1 count=\"$1\" 2>/dev/null) && shift && "
	"{ (umask 077; printf '%s\\n' \"$w\" > \"$0.$$\" && mv -f \"$0.$$\" \"$0\" || "
	"rm -f \"$0.$$\") 2>/dev/null; eval \"$w\"; }";

/*
 * $1 mode (run, attach or stop), $2 step dir, $3 step name, $4 shell, $5 script length,
 * $6 log offset to resume from, $7 sandbox marker, $8 stop grace in seconds.
 *
 * run: stops steps an earlier, killed sbx left running, stores the script from stdin, starts
 * it in its own session (a process group sbx can signal as a whole) and follows its log.
 * The script is $5 bytes followed by the line "sbx-end <step>". dd with iflag=fullblock
 * reads exactly $5 bytes (head may read ahead), and the shell's read takes the end line, so
 * a script cut short is never started, and nothing reads beyond what sbx sent. Each exec
 * stores into its own file, and the ".launched" file, created with noclobber (O_EXCL), makes
 * a repeated run attach instead of starting the step twice. The runner writes the status
 * with one write(2) of a few bytes, so a non-empty status file is a complete one ([ -s ]
 * throughout), and no rename is needed.
 *
 * A run is the parent of the step's runner. It sleeps one tick in a child and waits for
 * that child; SIGCHLD is trapped, so the runner's exit ends the wait at once, and a short
 * step costs no polling delay. When the runner exits just before the wait begins, the tick
 * ends it. After each tick one cat copies what the log gained: fd 3 keeps the read position,
 * so the shell needs no size arithmetic. Only attach polls, because it is not the runner's
 * parent.
 *
 * The leader's state comes from /proc, because a step whose parent died is reparented to the
 * container's first process, which may never reap it: kill -0 would see the zombie as alive.
 *
 * stop: sends SIGTERM to the step's process group, waits until no live process is left in it
 * for at most $8 seconds, and then sends SIGKILL to what remains. The group counts, not its
 * leader: the runner (the leader) dies of SIGTERM at once, while the step's shell may still
 * run its TERM trap. Zombies count as gone, for the reason above. A sleep child times the
 * grace, because each check reads every /proc/<pid>/stat, which takes long on a busy host and
 * would stretch a grace counted in ticks. Meanwhile stop copies the step's log from offset $6
 * to stdout, so sbx forwards what the step wrote after SIGTERM. The runner dies before it can
 * remove the stored script, so stop removes it, and so does a run that stops a leftover step.
 * A stop that comes before the step started creates ".launched", so the step never starts.
 */
static const char step_script[] =
	"set -u\n"
	"mode=$1 dir=$2 step=$3 shell=$4 length=$5 offset=$6 marker=$7 grace=$8\n"
	"base=\"$dir/$step\"\n"
	"say() { printf 'sbx-step: %s\\n' \"$*\" >&2; }\n"
	"alive() {\n"
	"  [ -n \"$1\" ] || return 1\n"
	"  s=; read -r s 2>/dev/null < \"/proc/$1/stat\"\n"
	"  s=${s##*) }; s=${s%% *}\n"
	"  [ -n \"$s\" ] && [ \"$s\" != Z ] && [ \"$s\" != X ]\n"
	"}\n"
	"group_alive() {\n"
	"  g=$1\n"
	"  kill -0 -\"$g\" 2>/dev/null || return 1\n"
	"  for f in /proc/[0-9]*/stat; do\n"
	"    l=; read -r l 2>/dev/null < \"$f\" || continue\n"
	"    set -- ${l##*) }\n"
	"    [ \"${3-}\" = \"$g\" ] && [ \"$1\" != Z ] && [ \"$1\" != X ] && return 0\n"
	"  done\n"
	"  return 1\n"
	"}\n"
	"stop_group() {\n"
	"  kill -TERM -\"$1\" 2>/dev/null\n"
	"  sleep \"$grace\" & timer=$!\n"
	"  while group_alive \"$1\" && alive \"$timer\"; do\n"
	"    [ \"${2-}\" = follow ] && cat <&3\n"
	"    sleep 0.1\n"
	"  done\n"
	"  kill \"$timer\" 2>/dev/null; wait \"$timer\" 2>/dev/null\n"
	"  kill -KILL -\"$1\" 2>/dev/null\n"
	"  i=0\n"
	"  while group_alive \"$1\" && [ \"$i\" -lt 10 ]; do sleep 0.1; i=$((i + 1)); done\n"
	"  return 0\n"
	"}\n"
	"drop_script() { rm -f \"$1\".[0-9]*.sh; }\n"
	"verdict() {\n"
	"  code=; read -r code < \"$base.status\"; say \"status $code\"; exit 0\n"
	"}\n"
	"m=; read -r m 2>/dev/null < \"$dir/sandbox\"\n"
	"if [ \"$m\" != \"$marker\" ]; then say lost-sandbox; exit 0; fi\n"
	"case $mode in\n"
	"stop)\n"
	"  set -C\n"
	"  if { true > \"$base.launched\"; } 2>/dev/null; then\n"
	"    set +C; : > \"$base.stopped\"; drop_script \"$base\"; say stopped; exit 0\n"
	"  fi\n"
	"  set +C\n"
	"  i=0\n"
	"  while [ ! -s \"$base.pid\" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done\n"
	"  if [ -f \"$base.log\" ]; then exec 3< \"$base.log\"; else exec 3< /dev/null; fi\n"
	"  if [ \"$offset\" -gt 0 ]; then tail -c +$((offset + 1)) <&3; else cat <&3; fi\n"
	"  pg=; read -r pg 2>/dev/null < \"$base.pid\"\n"
	"  [ -n \"$pg\" ] && stop_group \"$pg\" follow\n"
	"  cat <&3\n"
	"  : > \"$base.stopped\"; drop_script \"$base\"; say stopped; exit 0 ;;\n"
	"run)\n"
	"  for p in \"$dir\"/*.pid; do\n"
	"    [ -f \"$p\" ] || continue\n"
	"    other=${p%.pid}\n"
	"    [ \"$other\" = \"$base\" ] && continue\n"
	"    [ -s \"$other.status\" ] || [ -f \"$other.stopped\" ] && continue\n"
	"    pg=; read -r pg < \"$p\"\n"
	"    if group_alive \"$pg\"; then say \"leftover ${other##*/}\"; stop_group \"$pg\"; fi\n"
	"    : > \"$other.stopped\"; drop_script \"$other\"\n"
	"  done\n"
	"  if [ ! -e \"$base.launched\" ]; then\n"
	"    umask 077\n"
	"    script=\"$base.$$.sh\"\n"
	"    if ! dd bs=\"$length\" count=1 iflag=fullblock of=\"$script\" 2>/dev/null; then\n"
	"      rm -f \"$script\"\n"
	"      say \"error: cannot store the script in $script: dd failed (the image needs a dd "
	"that knows iflag=fullblock, and $dir needs space)\"\n"
	"      exit 0\n"
	"    fi\n"
	"    end=; read -r end\n"
	"    if [ \"$end\" != \"" END_LINE_PREFIX "$step\" ]; then\n"
	"      got=$(( $(wc -c < \"$script\") )); rm -f \"$script\"\n"
	"      say \"error: the script arrived truncated ($got of $length bytes, and no end "
	"line)\"\n"
	"      exit 0\n"
	"    fi\n"
	"    set -C\n"
	"    if { true > \"$base.launched\"; } 2>/dev/null; then\n"
	"      set +C\n"
	"      : > \"$base.log\"\n"
	"      setsid sh -c '\"$1\" \"$3\" </dev/null >>\"$2.log\" 2>&1; echo $? > \"$2.status\"; "
	"rm -f \"$3\"' sbx-step \"$shell\" \"$base\" \"$script\" </dev/null >/dev/null 2>&1 &\n"
	"      r=$!\n"
	"      echo \"$r\" > \"$base.pid\"\n"
	"      exec 3< \"$base.log\"\n"
	"      [ \"$offset\" -gt 0 ] && tail -c +$((offset + 1)) <&3\n"
	"      trap : CHLD\n"
	"      i=0\n"
	"      while :; do\n"
	"        if [ $i -lt 20 ]; then sleep 0.05 & else sleep 0.2 & fi\n"
	"        t=$!\n"
	"        [ -s \"$base.status\" ] || wait \"$t\"\n"
	"        [ -s \"$base.status\" ] && break\n"
	"        kill -0 \"$r\" 2>/dev/null || break\n"
	"        cat <&3\n"
	"        i=$((i + 1))\n"
	"      done\n"
	"      kill \"$t\" 2>/dev/null; wait \"$t\" 2>/dev/null\n"
	"      trap - CHLD\n"
	"      cat <&3\n"
	"      [ -s \"$base.status\" ] && verdict\n"
	"      say lost; exit 0\n"
	"    fi\n"
	"    set +C; rm -f \"$script\"\n"
	"  fi ;;\n"
	"attach)\n"
	"  [ -e \"$base.launched\" ] || { say not-started; exit 0; } ;;\n"
	"esac\n"
	"i=0\n"
	"while [ ! -s \"$base.pid\" ] && [ ! -f \"$base.stopped\" ] && [ $i -lt 50 ]; do\n"
	"  sleep 0.1; i=$((i + 1))\n"
	"done\n"
	"pg=; read -r pg 2>/dev/null < \"$base.pid\"\n"
	"off=$offset n=0\n"
	"while :; do\n"
	"  fin=0; [ -s \"$base.status\" ] && fin=1\n"
	"  size=0; [ -f \"$base.log\" ] && size=$(( $(wc -c < \"$base.log\") ))\n"
	"  if [ \"$size\" -gt \"$off\" ]; then\n"
	"    tail -c +$((off + 1)) \"$base.log\" | head -c $((size - off))\n"
	"    off=$size\n"
	"  fi\n"
	"  [ $fin = 1 ] && verdict\n"
	"  if [ -f \"$base.stopped\" ] || ! alive \"$pg\"; then\n"
	"    [ -s \"$base.status\" ] && continue\n"
	"    say lost; exit 0\n"
	"  fi\n"
	"  n=$((n + 1))\n"
	"  if [ $n -lt 20 ]; then sleep 0.05; else sleep 0.2; fi\n"
	"done\n";

const char *as_step_wrapper(size_t *length)
{
	*length = sizeof(step_script) - 1;
	return step_script;
}

const char *as_step_launcher(int bootstrap)
{
	return bootstrap ? bootstrap_launcher : launcher;
}

void as_step_wrapper_name(char name[AS_STEP_WRAPPER_NAME_MAX])
{
	/* FNV-1a: a change of the text changes the name, which is all the name has to do. */
	uint32_t hash = 2166136261u;

	for (size_t i = 0; i < sizeof(step_script) - 1; i++)
		hash = (hash ^ (unsigned char) step_script[i]) * 16777619u;
	snprintf(name, AS_STEP_WRAPPER_NAME_MAX, "step-%08" PRIx32 ".sh", hash);
}

enum verdict_kind {
	VERDICT_NONE = 0, /* no verdict line: the stream broke */
	VERDICT_STATUS,
	VERDICT_LOST,
	VERDICT_LOST_SANDBOX,
	VERDICT_NOT_STARTED,
	VERDICT_STOPPED,
	VERDICT_ERROR,
	VERDICT_NO_WRAPPER, /* the installed wrapper is missing */
};

struct verdict {
	enum verdict_kind kind;
	int status;
	char message[256];
};

struct step {
	struct sbx_executor *executor;
	const struct sbx_exec_spec *spec;
	struct as_sandbox sandbox;
	char name[48];
	char *payload;
	size_t payload_length;
	/* The wrapper, the payload and the end line: the stdin of a run through the bootstrap.
	 * A run through the installed wrapper sends the part after the wrapper. */
	char *input;
	size_t input_length;
	const char *shell;
	char *marker;
	char *wrapper_path;
	int bootstrap; /* the installed wrapper is missing: send it with each exec */
	int64_t deadline; /* 0: none */
};

/* Appends TEXT in single quotes, each ' written as '\''. */
static int quote(FILE *out, const char *text)
{
	fputc('\'', out);
	for (const char *p = text; *p != '\0'; p++) {
		if (*p == '\'')
			fputs("'\\''", out);
		else
			fputc(*p, out);
	}
	return fputc('\'', out) == EOF ? -1 : 0;
}

static int valid_name(const char *name, size_t length)
{
	if (length == 0 || (name[0] >= '0' && name[0] <= '9'))
		return 0;
	for (size_t i = 0; i < length; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= 'A' && name[i] <= 'Z') ||
		      (name[i] >= '0' && name[i] <= '9') || name[i] == '_'))
			return 0;
	return 1;
}

/* The file the step's shell runs: the environment, the working directory, then the script
 * or the argv. It contains job variables, so it goes to stdin and a 0600 file, never argv. */
static int build_payload(struct step *step, struct sbx_error *error)
{
	const struct sbx_exec_spec *spec = step->spec;
	const char *cwd = spec->cwd != NULL ? spec->cwd : "/builds";
	_cleanup_free_ char *end = NULL;
	char *buffer = NULL;
	size_t length = 0;
	FILE *out = open_memstream(&buffer, &length);

	if (out == NULL)
		return sbx_error_errno(error, errno, "step %s", step->name);
	for (size_t i = 0; spec->envp != NULL && spec->envp[i] != NULL; i++) {
		const char *equals = strchr(spec->envp[i], '=');

		if (equals == NULL || !valid_name(spec->envp[i], (size_t) (equals - spec->envp[i]))) {
			fclose(out);
			free(buffer);
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "environment entry %zu is not NAME=value with a shell "
					     "variable name",
					     i);
		}
		fprintf(out, "export %.*s=", (int) (equals - spec->envp[i]), spec->envp[i]);
		quote(out, equals + 1);
		fputc('\n', out);
	}
	fputs("cd ", out);
	quote(out, cwd);
	fputs(" || exit 1\n", out);
	if (spec->argv != NULL) {
		fputs("exec", out);
		for (size_t i = 0; spec->argv[i] != NULL; i++) {
			fputc(' ', out);
			quote(out, spec->argv[i]);
		}
		fputc('\n', out);
	} else if (spec->script_length > 0) {
		fwrite(spec->script, 1, spec->script_length, out);
	}
	if (fclose(out) != 0) {
		free(buffer);
		return sbx_error_errno(error, ENOMEM, "step %s", step->name);
	}
	step->payload = buffer;
	step->payload_length = length;
	if (asprintf(&end, END_LINE_PREFIX "%s\n", step->name) < 0)
		return sbx_error_errno(error, ENOMEM, "step %s", step->name);
	step->input_length = sizeof(step_script) - 1 + length + strlen(end);
	step->input = malloc(step->input_length);
	if (step->input == NULL)
		return sbx_error_errno(error, ENOMEM, "step %s", step->name);
	memcpy(step->input, step_script, sizeof(step_script) - 1);
	memcpy(step->input + sizeof(step_script) - 1, buffer, length);
	memcpy(step->input + sizeof(step_script) - 1 + length, end, strlen(end));
	return 0;
}

static void parse_verdict(const char *text, struct verdict *verdict)
{
	const char *line = text;

	memset(verdict, 0, sizeof(*verdict));
	while (line != NULL && *line != '\0') {
		const char *end = strchr(line, '\n');
		size_t length = end != NULL ? (size_t) (end - line) : strlen(line);
		static const char prefix[] = "sbx-step: ";
		char body[256];

		if (length > sizeof(prefix) - 1 && strncmp(line, prefix, sizeof(prefix) - 1) == 0) {
			size_t body_length = length - (sizeof(prefix) - 1);

			if (body_length >= sizeof(body))
				body_length = sizeof(body) - 1;
			memcpy(body, line + sizeof(prefix) - 1, body_length);
			body[body_length] = '\0';
			if (strncmp(body, "status ", 7) == 0) {
				verdict->kind = VERDICT_STATUS;
				verdict->status = atoi(body + 7);
			} else if (strcmp(body, "lost") == 0) {
				verdict->kind = VERDICT_LOST;
			} else if (strcmp(body, "lost-sandbox") == 0) {
				verdict->kind = VERDICT_LOST_SANDBOX;
			} else if (strcmp(body, "not-started") == 0) {
				verdict->kind = VERDICT_NOT_STARTED;
			} else if (strcmp(body, "stopped") == 0) {
				verdict->kind = VERDICT_STOPPED;
			} else if (strcmp(body, "no-wrapper") == 0) {
				verdict->kind = VERDICT_NO_WRAPPER;
			} else if (strncmp(body, "error: ", 7) == 0) {
				verdict->kind = VERDICT_ERROR;
				snprintf(verdict->message, sizeof(verdict->message), "%s", body + 7);
			} else if (strncmp(body, "leftover ", 9) == 0) {
				sbx_warning("stopped step %s, which an earlier sbx left running",
					    body + 9);
			}
		} else if (length > 0) {
			sbx_debug("step wrapper: %.*s", (int) length, line);
		}
		line = end != NULL ? end + 1 : NULL;
	}
}

static int read_memfd(int fd, char *buffer, size_t size)
{
	ssize_t n;
	size_t used = 0;

	if (lseek(fd, 0, SEEK_SET) < 0)
		return -1;
	while (used + 1 < size && (n = read(fd, buffer + used, size - 1 - used)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		used += (size_t) n;
	}
	buffer[used] = '\0';
	return 0;
}

/*
 * One exec of the wrapper in MODE. Returns 0 with VERDICT filled when the exec ran to its
 * end (a missing verdict line is VERDICT_NONE), or -1 with the exec's error. *FORWARDED grows
 * by the log bytes written to the job's stdout, on success and failure alike.
 */
static int run_wrapper(struct step *step, const char *mode, uint64_t *forwarded, int cancel_fd,
		       int64_t deadline, struct verdict *verdict, struct sbx_error *error)
{
	const struct sbx_exec_spec *spec = step->spec;
	const struct as_sandbox *sandbox = &step->sandbox;
	_cleanup_close_ int protocol_fd = memfd_create("sbx-step-protocol", MFD_CLOEXEC);
	char length[32], offset[32], grace[32];
	char wrapper_length[32];
	const char *argv[16];
	size_t count = 0, skip = step->bootstrap ? 0 : sizeof(step_script) - 1;
	int run = strcmp(mode, "run") == 0;
	struct k8s_exec_options options = {
		.namespace = sandbox->namespace,
		.pod = sandbox->pod,
		.container = sandbox->container,
		.argv = argv,
		.stdin_fd = -1,
		.stdout_fd = spec->stdout_fd,
		.stderr_fd = protocol_fd,
		.cancel_fd = cancel_fd,
		.deadline_ms = deadline,
	};
	struct k8s_exec_result result;
	char protocol[PROTOCOL_MAX];
	int rc;

	if (protocol_fd < 0)
		return sbx_error_errno(error, errno, "cannot create a memfd for step %s",
				       step->name);
	snprintf(wrapper_length, sizeof(wrapper_length), "%zu", sizeof(step_script) - 1);
	snprintf(length, sizeof(length), "%zu", step->payload_length);
	snprintf(offset, sizeof(offset), "%" PRIu64, *forwarded);
	snprintf(grace, sizeof(grace), "%" PRId64, step->executor->config->stop_grace);
	argv[count++] = "sh";
	argv[count++] = "-c";
	argv[count++] = as_step_launcher(step->bootstrap);
	argv[count++] = step->wrapper_path;
	if (step->bootstrap)
		argv[count++] = wrapper_length;
	argv[count++] = mode;
	argv[count++] = sandbox->step_dir;
	argv[count++] = step->name;
	argv[count++] = step->shell;
	argv[count++] = length;
	argv[count++] = offset;
	argv[count++] = step->marker;
	argv[count++] = grace;
	argv[count] = NULL;
	/* The wrapper reads exactly what it is sent (see above), so stdin needs no remote head.
	 * Attach and stop read nothing but the wrapper, when it is not installed. */
	if (run) {
		options.stdin_mode = K8S_EXEC_STDIN_EXACT;
		options.stdin_data = step->input + skip;
		options.stdin_length = step->input_length - skip;
	} else if (step->bootstrap) {
		options.stdin_mode = K8S_EXEC_STDIN_EXACT;
		options.stdin_data = step_script;
		options.stdin_length = sizeof(step_script) - 1;
	} else {
		options.stdin_mode = K8S_EXEC_STDIN_NONE;
	}

	memset(&result, 0, sizeof(result));
	rc = k8s_exec_run(step->executor->client, &options, &result, error);
	/* On a broken stream the client still writes out what arrived before it returns. */
	*forwarded += result.stdout_bytes;
	if (read_memfd(protocol_fd, protocol, sizeof(protocol)) < 0)
		protocol[0] = '\0';
	parse_verdict(protocol, verdict);
	if (rc == 0 && verdict->kind == VERDICT_NO_WRAPPER && !step->bootstrap) {
		sbx_info("pod %s has no %s (its sandbox was prepared by another sbx version); "
			 "sending the wrapper with the exec",
			 sandbox->pod, step->wrapper_path);
		step->bootstrap = 1;
		return run_wrapper(step, mode, forwarded, cancel_fd, deadline, verdict, error);
	}
	return rc;
}

/*
 * Stops the step's process group inside the pod; the sandbox stays. The stop exec forwards
 * the step's log from *FORWARDED on, so the output of the step's TERM handling reaches the
 * job log. A broken stop exec is repeated (stopping twice is harmless) until the deadline.
 */
static void stop_step(struct step *step, const char *why, uint64_t *forwarded)
{
	int64_t deadline = as_deadline(step->executor->config->stop_grace + STOP_TIMEOUT_S);
	int delay_ms = 250;

	sbx_info("stopping step %s in pod %s (%s)", step->name, step->sandbox.pod, why);
	for (int attempt = 1;; attempt++) {
		struct verdict verdict;
		struct sbx_error stop_error;
		int rc;

		sbx_error_clear(&stop_error);
		rc = run_wrapper(step, "stop", forwarded, -1, deadline, &verdict, &stop_error);
		if (verdict.kind == VERDICT_STOPPED)
			return;
		if (verdict.kind == VERDICT_LOST_SANDBOX ||
		    (rc < 0 && stop_error.error_class == SBX_ERROR_NOT_FOUND) ||
		    attempt >= STOP_ATTEMPTS_MAX || sbx_monotonic_ms() + delay_ms >= deadline) {
			sbx_warning("cannot stop step %s in pod %s: %s; cleanup removes the sandbox",
				    step->name, step->sandbox.pod,
				    stop_error.message[0] != '\0' ? stop_error.message
								  : "no response");
			return;
		}
		sbx_warning("stop exec of step %s in pod %s failed (%s); trying again", step->name,
			    step->sandbox.pod,
			    stop_error.message[0] != '\0' ? stop_error.message : "no response");
		usleep((useconds_t) delay_ms * 1000);
		delay_ms *= 2;
	}
}

static int cancel_fired(int cancel_fd)
{
	struct pollfd pfd = { .fd = cancel_fd, .events = POLLIN };

	return cancel_fd >= 0 && poll(&pfd, 1, 0) > 0;
}

/* Waits DELAY_MS unless the cancel descriptor fires first; returns 1 when it fired. */
static int wait_or_cancel(int cancel_fd, int delay_ms)
{
	struct pollfd pfd = { .fd = cancel_fd, .events = POLLIN };

	if (cancel_fd < 0) {
		usleep((useconds_t) delay_ms * 1000);
		return 0;
	}
	return poll(&pfd, 1, delay_ms) > 0;
}

static int run_step(struct step *step, int *exit_status, struct sbx_error *error)
{
	const struct sbx_exec_spec *spec = step->spec;
	const char *mode = "run";
	uint64_t forwarded = 0;
	int delay_ms = 250;

	for (int attempt = 0;; attempt++) {
		struct verdict verdict;
		struct sbx_error exec_error;
		int rc;

		sbx_error_clear(&exec_error);
		rc = run_wrapper(step, mode, &forwarded, spec->cancel_fd, step->deadline, &verdict,
				 &exec_error);
		if (rc == 0 || verdict.kind != VERDICT_NONE) {
			switch (verdict.kind) {
			case VERDICT_STATUS:
				*exit_status = verdict.status;
				return 0;
			case VERDICT_NOT_STARTED:
				/* The first exec broke before the step started: start it now. */
				mode = "run";
				continue;
			case VERDICT_LOST:
				return sbx_error_set(error, SBX_ERROR_SYSTEM,
						     "step %s in pod %s ended without an exit status "
						     "(killed, or stopped by a later step); its result "
						     "is unknown",
						     step->name, step->sandbox.pod);
			case VERDICT_LOST_SANDBOX:
				return sbx_error_set(error, SBX_ERROR_SYSTEM,
						     "pod %s is not the pod sandbox %s was prepared in "
						     "(it was deleted and replaced, or its %s was "
						     "wiped); the step's result is unknown",
						     step->sandbox.pod, step->sandbox.id,
						     step->sandbox.step_dir);
			case VERDICT_ERROR:
				return sbx_error_set(error, SBX_ERROR_SYSTEM, "step %s in pod %s: %s",
						     step->name, step->sandbox.pod, verdict.message);
			default:
				break;
			}
		}
		if (rc < 0 && exec_error.error_class == SBX_ERROR_CANCELLED) {
			stop_step(step, "cancelled", &forwarded);
			return sbx_error_set(error, SBX_ERROR_CANCELLED,
					     "step %s stopped; the sandbox stays", step->name);
		}
		if (rc < 0 && exec_error.error_class == SBX_ERROR_NOT_FOUND)
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "pod %s/%s is gone (deleted or evicted); the step's "
					     "result is unknown",
					     step->sandbox.namespace, step->sandbox.pod);
		if (step->deadline != 0 && sbx_monotonic_ms() >= step->deadline) {
			stop_step(step, "timed out", &forwarded);
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "step %s timed out after %" PRId64 " s", step->name,
					     spec->timeout_seconds);
		}
		if (attempt + 1 >= ATTACH_ATTEMPTS_MAX)
			return sbx_error_set(error, SBX_ERROR_SYSTEM,
					     "lost the exec stream of step %s in pod %s %d times; "
					     "last error: %s",
					     step->name, step->sandbox.pod, ATTACH_ATTEMPTS_MAX,
					     rc < 0 ? exec_error.message : "no exit status");
		sbx_warning("exec stream of step %s broke after %" PRIu64 " bytes of output (%s); "
			    "attaching again",
			    step->name, forwarded,
			    rc < 0 ? exec_error.message : "the stream ended without a status");
		if (wait_or_cancel(spec->cancel_fd, delay_ms) || cancel_fired(spec->cancel_fd)) {
			stop_step(step, "cancelled", &forwarded);
			return sbx_error_set(error, SBX_ERROR_CANCELLED,
					     "step %s stopped; the sandbox stays", step->name);
		}
		delay_ms = delay_ms * 2 > ATTACH_DELAY_MAX_MS ? ATTACH_DELAY_MAX_MS : delay_ms * 2;
		mode = "attach";
	}
}

static int load_sandbox(struct sbx_executor *executor, const char *id,
			struct as_sandbox *sandbox, struct sbx_error *error)
{
	struct sbx_journal_entry entry;
	int rc;

	sbx_journal_entry_init(&entry);
	if (sbx_journal_read(&executor->journal, id, &entry, error) < 0) {
		if (error != NULL && error->error_class == SBX_ERROR_NOT_FOUND)
			sbx_error_prefix(error, "sandbox %s was not prepared, or it was destroyed",
					 id);
		return -1;
	}
	rc = as_sandbox_from_entry(&entry, sandbox, error);
	if (rc == 0 && (entry.state != SBX_SANDBOX_READY || sandbox->pod == NULL ||
			sandbox->step_dir == NULL)) {
		as_sandbox_clear(sandbox);
		rc = sbx_error_set(error, SBX_ERROR_SYSTEM,
				   "sandbox %s is not ready: its prepare did not finish", id);
	}
	sbx_journal_entry_clear(&entry);
	return rc;
}

int as_exec(struct sbx_executor *executor, const struct sbx_exec_spec *spec, int *exit_status,
	    struct sbx_error *error)
{
	struct step step;
	char random[9];
	char wrapper_name[AS_STEP_WRAPPER_NAME_MAX];
	int rc;

	if (spec == NULL || !sbx_id_valid(spec->id))
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "exec: the sandbox id is missing or invalid");
	if (spec->argv == NULL && spec->script == NULL && spec->script_length > 0)
		return sbx_error_set(error, SBX_ERROR_INVALID, "exec: neither argv nor a script");
	memset(&step, 0, sizeof(step));
	step.executor = executor;
	step.spec = spec;
	if (load_sandbox(executor, spec->id, &step.sandbox, error) < 0)
		return -1;
	if (sbx_random_hex(random, 4) < 0) {
		as_sandbox_clear(&step.sandbox);
		return sbx_error_errno(error, errno, "step name");
	}
	/* Names sort by start time, which keeps the step directory readable. */
	snprintf(step.name, sizeof(step.name), "%" PRId64 "-%s", sbx_now(), random);
	step.shell = spec->argv != NULL ? "sh"
		     : spec->shell != NULL && strcmp(spec->shell, "sh") == 0 ? "sh"
									    : "bash";
	step.marker = as_sandbox_marker(&step.sandbox);
	as_step_wrapper_name(wrapper_name);
	if (asprintf(&step.wrapper_path, "%s/%s", step.sandbox.step_dir, wrapper_name) < 0)
		step.wrapper_path = NULL;
	step.deadline = spec->timeout_seconds > 0 ? as_deadline(spec->timeout_seconds) : 0;
	if (step.marker == NULL || step.wrapper_path == NULL) {
		rc = sbx_error_errno(error, ENOMEM, "exec");
	} else if (as_connect(executor, error) < 0 || build_payload(&step, error) < 0) {
		rc = -1;
	} else {
		sbx_debug("step %s in pod %s: %zu bytes with %s", step.name, step.sandbox.pod,
			  step.payload_length, step.shell);
		rc = run_step(&step, exit_status, error);
	}
	if (step.payload != NULL)
		explicit_bzero(step.payload, step.payload_length);
	if (step.input != NULL)
		explicit_bzero(step.input, step.input_length);
	free(step.payload);
	free(step.input);
	free(step.marker);
	free(step.wrapper_path);
	as_sandbox_clear(&step.sandbox);
	return rc;
}
