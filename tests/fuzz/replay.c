/* SPDX-License-Identifier: MIT */
/*
 * Replays a fuzz target's corpus without libFuzzer: every file named on the command line, or
 * found in a directory named there, goes through LLVMFuzzerTestOneInput once. A crash or a
 * sanitizer report fails the run.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	unsigned char *data = NULL;
	size_t size = 0, capacity = 0, n;
	unsigned char buf[4096];

	if (f == NULL) {
		perror(path);
		return -1;
	}
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
		if (size + n > capacity) {
			unsigned char *bigger;

			capacity = (size + n) * 2;
			bigger = realloc(data, capacity);
			if (bigger == NULL) {
				free(data);
				fclose(f);
				return -1;
			}
			data = bigger;
		}
		memcpy(data + size, buf, n);
		size += n;
	}
	fclose(f);
	/* An exact-size copy lets ASan see reads past the end. */
	{
		unsigned char *exact = malloc(size > 0 ? size : 1);

		if (exact == NULL) {
			free(data);
			return -1;
		}
		if (size > 0)
			memcpy(exact, data, size);
		LLVMFuzzerTestOneInput(exact, size);
		free(exact);
	}
	free(data);
	return 0;
}

static int compare_names(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

int main(int argc, char **argv)
{
	int i, count = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
		return 2;
	}
	for (i = 1; i < argc; i++) {
		struct dirent **entries;
		struct stat st;
		int n, j;

		if (stat(argv[i], &st) < 0) {
			perror(argv[i]);
			return 1;
		}
		if (!S_ISDIR(st.st_mode)) {
			if (replay_file(argv[i]) < 0)
				return 1;
			count++;
			continue;
		}
		n = scandir(argv[i], &entries, NULL, compare_names);
		if (n < 0) {
			perror(argv[i]);
			return 1;
		}
		for (j = 0; j < n; j++) {
			char path[4096];

			if (entries[j]->d_name[0] != '.') {
				snprintf(path, sizeof(path), "%s/%s", argv[i], entries[j]->d_name);
				if (replay_file(path) < 0)
					return 1;
				count++;
			}
			free(entries[j]);
		}
		free(entries);
	}
	printf("%s: replayed %d inputs\n", argv[0], count);
	return count > 0 ? 0 : 1;
}
