/* replay.c: runs a fuzz harness over saved inputs (files or directories of files) and
 * speaks TAP, so `make check` replays every corpus with whatever sanitizers the build has. */
#include "config.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int n;

static void one(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		printf("not ok %d - cannot open %s\n", ++n, path);
		return;
	}
	static uint8_t buf[1 << 20];
	size_t len = fread(buf, 1, sizeof buf, f);
	fclose(f);
	/* a copy of exactly the input's size, so ASan sees any read past its end */
	uint8_t *copy = malloc(len ? len : 1);
	if (!copy)
		exit(1);
	memcpy(copy, buf, len);
	LLVMFuzzerTestOneInput(copy, len);
	free(copy);
	printf("ok %d - %s\n", ++n, path);
}

static void walk(const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0) {
		printf("not ok %d - missing %s\n", ++n, path);
		return;
	}
	if (!S_ISDIR(st.st_mode)) {
		one(path);
		return;
	}
	struct dirent **names;
	int k = scandir(path, &names, NULL, alphasort);
	for (int i = 0; i < k; i++) {
		if (names[i]->d_name[0] != '.') {
			char p[4096];
			snprintf(p, sizeof p, "%s/%s", path, names[i]->d_name);
			walk(p);
		}
		free(names[i]);
	}
	free(names);
}

int main(int argc, char **argv)
{
	if (argc > 1)
		for (int i = 1; i < argc; i++)
			walk(argv[i]);
	else
		walk(CORPUS); /* the harness's saved corpus (make check) */
	printf("1..%d\n", n);
	return 0;
}
