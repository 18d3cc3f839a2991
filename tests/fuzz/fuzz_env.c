/* fuzz_env.c: the .env file reader (every setting, with its range checks). */
#include "config.h"
#include "cm_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[64];
	if (!path[0])
		snprintf(path, sizeof path, "/tmp/cm-fuzz-env.%ld", (long)getpid());
	FILE *f = fopen(path, "wb");
	if (!f)
		return 0;
	fwrite(data, 1, size, f);
	fclose(f);
	struct cm_config cfg;
	struct cm_error err;
	cm_config_load(&cfg, path, &err);
	unlink(path);
	return 0;
}
