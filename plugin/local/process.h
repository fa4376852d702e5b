/* SPDX-License-Identifier: MIT */
/*
 * Host processes recorded in the journal. A pid read from a file may have been reused by an
 * unrelated process, so every use pairs the pid with its start time (field 22 of
 * /proc/PID/stat, clock ticks since boot) and acts through a pidfd opened before the check.
 * Once the check passes, the pidfd pins that exact process.
 */
#ifndef SBX_LOCAL_PROCESS_H
#define SBX_LOCAL_PROCESS_H

#include <stdint.h>
#include <sys/types.h>

#include "sbx/executor.h"

/* Reads the start time of PID. Returns 0, or -1 with errno (ESRCH when it is gone). */
int sbx_process_start_time(pid_t pid, uint64_t *start_time);

/* Extracts field 22 from the text of a /proc/PID/stat file. */
int sbx_process_parse_start_time(const char *stat_text, uint64_t *start_time);

/* Reads the inode of PID's pid namespace (/proc/PID/ns/pid). Returns 0, or -1 with errno. */
int sbx_process_pid_namespace(pid_t pid, uint64_t *inode);

/*
 * Opens a pidfd for PID and checks that it still is the process that started at START_TIME
 * and, unless PID_NAMESPACE is 0, lives in that pid namespace. Start times count clock ticks
 * (10 ms at the usual USER_HZ of 100), so a pid reused within one tick has the same start
 * time. The pid namespace belongs to the job alone and distinguishes such a process. Returns
 * the pidfd, or -1: errno ESRCH when the process is gone or the pid was reused.
 */
int sbx_process_open_verified(pid_t pid, uint64_t start_time, uint64_t pid_namespace);

/*
 * Kills the process behind PIDFD with SIGKILL and waits up to TIMEOUT_MS for it to exit.
 * Returns 0 when it is gone.
 */
int sbx_process_kill_wait(int pidfd, int timeout_ms);

/* Waits until the process behind PIDFD has exited or TIMEOUT_MS passed (< 0: no limit).
 * Returns 1 when it exited, 0 on timeout, -1 on error. */
int sbx_process_wait_exit(int pidfd, int timeout_ms);

#endif /* SBX_LOCAL_PROCESS_H */
