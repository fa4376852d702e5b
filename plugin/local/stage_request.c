/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanup.h"
#include "command.h"
#include "error.h"
#include "stage_request.h"
#include "util.h"

void sbx_stage_request_clear(struct sbx_stage_request *request)
{
	sbx_command_free_strings(request->argv);
	sbx_command_free_strings(request->envp);
	free(request->cwd);
	memset(request, 0, sizeof(*request));
}

static struct json_object *strings_to_json(char *const *strings)
{
	struct json_object *array = json_object_new_array();

	for (size_t i = 0; array != NULL && strings != NULL && strings[i] != NULL; i++) {
		struct json_object *item = json_object_new_string(strings[i]);

		if (item == NULL || json_object_array_add(array, item) < 0) {
			json_object_put(item);
			json_object_put(array);
			return NULL;
		}
	}
	return array;
}

static struct json_object *request_to_json(const struct sbx_stage_request *request)
{
	struct json_object *object = json_object_new_object();
	struct json_object *argv = strings_to_json(request->argv);
	struct json_object *env = strings_to_json(request->envp);

	if (object == NULL || argv == NULL || env == NULL) {
		json_object_put(object);
		json_object_put(argv);
		json_object_put(env);
		return NULL;
	}
	json_object_object_add(object, "argv", argv);
	json_object_object_add(object, "env", env);
	json_object_object_add(object, "cwd", json_object_new_string(request->cwd));
	json_object_object_add(object, "uid", json_object_new_int64(request->uid));
	json_object_object_add(object, "gid", json_object_new_int64(request->gid));
	json_object_object_add(object, "set_groups", json_object_new_boolean(request->set_groups));
	json_object_object_add(object, "cap_last", json_object_new_int(request->cap_last));
	return object;
}

int sbx_stage_request_write(const struct sbx_stage_request *request, int *fd,
			    struct sbx_error *error)
{
	struct json_object *object = request_to_json(request);
	const char *text;
	int rc;

	if (object == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot encode the step's request");
	text = json_object_to_json_string_ext(object, JSON_C_TO_STRING_PLAIN);
	/* The same sealed, close-on-exec memfd as a script: only the init reads it. */
	rc = sbx_command_script_fd(text, strlen(text), error);
	json_object_put(object);
	if (rc < 0)
		return sbx_error_prefix(error, "cannot pass the step's request");
	*fd = rc;
	return 0;
}

/* Copies the array of strings KEY of OBJECT into *STRINGS (NULL-terminated). */
static int strings_from_json(struct json_object *object, const char *key, size_t min_count,
			     char ***strings, struct sbx_error *error)
{
	struct json_object *array;
	size_t count;
	char **copy;

	if (!json_object_object_get_ex(object, key, &array) ||
	    !json_object_is_type(array, json_type_array) ||
	    (count = json_object_array_length(array)) < min_count)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "step request: \"%s\" is missing or not an array of at least "
				     "%zu strings",
				     key, min_count);
	copy = calloc(count + 1, sizeof(char *));
	if (copy == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot read the step's request");
	for (size_t i = 0; i < count; i++) {
		struct json_object *item = json_object_array_get_idx(array, i);

		if (!json_object_is_type(item, json_type_string)) {
			sbx_command_free_strings(copy);
			return sbx_error_set(error, SBX_ERROR_INVALID,
					     "step request: \"%s\"[%zu] is not a string", key, i);
		}
		copy[i] = strdup(json_object_get_string(item));
		if (copy[i] == NULL) {
			sbx_command_free_strings(copy);
			return sbx_error_errno(error, ENOMEM, "cannot read the step's request");
		}
	}
	*strings = copy;
	return 0;
}

static int id_from_json(struct json_object *object, const char *key, uint32_t *id,
			struct sbx_error *error)
{
	struct json_object *value;
	int64_t number;

	if (!json_object_object_get_ex(object, key, &value) ||
	    !json_object_is_type(value, json_type_int) ||
	    (number = json_object_get_int64(value)) < 0 || number >= 0xffffffffLL)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "step request: \"%s\" is missing or not an id", key);
	*id = (uint32_t) number;
	return 0;
}

static int request_from_json(struct json_object *object, struct sbx_stage_request *request,
			     struct sbx_error *error)
{
	struct json_object *value;
	uint32_t uid, gid, cap_last;

	if (!json_object_is_type(object, json_type_object))
		return sbx_error_set(error, SBX_ERROR_INVALID, "step request is not a JSON object");
	if (strings_from_json(object, "argv", 1, &request->argv, error) < 0 ||
	    strings_from_json(object, "env", 0, &request->envp, error) < 0)
		return -1;
	if (request->argv[0][0] == '\0')
		return sbx_error_set(error, SBX_ERROR_INVALID, "step request: argv[0] is empty");
	if (!json_object_object_get_ex(object, "cwd", &value) ||
	    !json_object_is_type(value, json_type_string) ||
	    json_object_get_string(value)[0] != '/')
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "step request: \"cwd\" is missing or not absolute");
	request->cwd = strdup(json_object_get_string(value));
	if (request->cwd == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot read the step's request");
	if (id_from_json(object, "uid", &uid, error) < 0 ||
	    id_from_json(object, "gid", &gid, error) < 0 ||
	    id_from_json(object, "cap_last", &cap_last, error) < 0)
		return -1;
	if (cap_last > 63)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "step request: \"cap_last\" %u is above 63", cap_last);
	request->uid = uid;
	request->gid = gid;
	request->cap_last = (int) cap_last;
	request->set_groups = json_object_object_get_ex(object, "set_groups", &value) &&
			      json_object_get_boolean(value);
	return 0;
}

/* Reads the whole of the memfd FD from offset 0 into *TEXT (NUL-terminated). */
static int read_request_text(int fd, char **text, size_t *length, struct sbx_error *error)
{
	struct stat st;
	char *buf;
	size_t done = 0;

	if (fstat(fd, &st) < 0)
		return sbx_error_errno(error, errno, "cannot read the step's request");
	if (st.st_size <= 0 || (uint64_t) st.st_size > SBX_STAGE_REQUEST_MAX)
		return sbx_error_set(error, SBX_ERROR_INVALID,
				     "step request of %lld bytes is empty or above the limit of %u",
				     (long long) st.st_size, SBX_STAGE_REQUEST_MAX);
	buf = malloc((size_t) st.st_size + 1);
	if (buf == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot read the step's request");
	while (done < (size_t) st.st_size) {
		ssize_t n = pread(fd, buf + done, (size_t) st.st_size - done, (off_t) done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(buf);
			return sbx_error_errno(error, n < 0 ? errno : EIO,
					       "cannot read the step's request");
		}
		done += (size_t) n;
	}
	buf[done] = '\0';
	*text = buf;
	*length = done;
	return 0;
}

int sbx_stage_request_read(int fd, struct sbx_stage_request *request, struct sbx_error *error)
{
	struct sbx_stage_request decoded;
	_cleanup_free_ char *text = NULL;
	struct json_tokener *tokener;
	struct json_object *object;
	size_t length = 0;
	int rc;

	if (read_request_text(fd, &text, &length, error) < 0)
		return -1;
	tokener = json_tokener_new();
	if (tokener == NULL)
		return sbx_error_errno(error, ENOMEM, "cannot read the step's request");
	object = json_tokener_parse_ex(tokener, text, (int) length);
	rc = object != NULL && json_tokener_get_parse_end(tokener) == length ? 0 : -1;
	json_tokener_free(tokener);
	if (rc < 0) {
		json_object_put(object);
		return sbx_error_set(error, SBX_ERROR_INVALID, "step request is not one JSON value");
	}
	memset(&decoded, 0, sizeof(decoded));
	rc = request_from_json(object, &decoded, error);
	json_object_put(object);
	if (rc < 0) {
		sbx_stage_request_clear(&decoded);
		return -1;
	}
	*request = decoded;
	return 0;
}
