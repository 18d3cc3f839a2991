/* fuzz_imagedef.c: the image definitions file (YAML or JSON) through the whole loader:
 * YAML → JSON, validation, normalization, and packing of definitions without a context.
 * Invariants: a refusal always carries a message; an accepted definition has a valid name,
 * a Dockerfile starting with FROM or ARG, and packs to a tar with a 64-hex hash. */
#include "config.h"
#include "cm.h"
#include "imagedef.h"
#include "json.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 65536)
		return 0;
	struct cm_imagedef *defs = NULL;
	size_t n = 0;
	struct cm_error err = {0};
	/* a base directory that does not exist: definitions with a context are refused or unread */
	if (cm_imagedefs_parse((const char *)data, size, "/nonexistent-cm-fuzz", &defs, &n, &err) < 0) {
		if (!err.message[0] || err.status < 400)
			abort();
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (!cm_imagedef_valid_name(defs[i].name))
			abort();
		yajl_val v = cm_json_parse(defs[i].json, strlen(defs[i].json), &err);
		if (!v)
			abort();
		const char *df = cm_json_get_str(v, "dockerfile");
		if (!df || (strncmp(df, "FROM ", 5) && strncmp(df, "ARG ", 4)))
			abort();
		yajl_val ctx = cm_json_get(v, "context");
		if (!ctx || YAJL_IS_NULL(ctx)) {
			struct cm_buf tar = {0};
			char hash[65] = "";
			if (cm_imagedef_pack(v, &tar, hash, &err) == 0 && strlen(hash) != 64)
				abort();
			cm_buf_free(&tar);
		}
		yajl_tree_free(v);
	}
	cm_imagedefs_free(defs, n);
	return 0;
}
