/* fuzz_spec.c: request JSON through the strict parser and every body validator
 * (POST /containers, PATCH /containers/{cuid}, PATCH .../ports, and harpoon's
 * start_container / stop_container bodies). */
#include "config.h"
#include "harpoonreq.h"
#include "spec.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct cm_config cfg;
	static int ready;
	if (!ready) {
		struct cm_error e;
		setenv("CM_DATA_DIR", "/tmp/cm-fuzz", 1);
		if (cm_config_load(&cfg, NULL, &e) < 0)
			abort();
		ready = 1;
	}
	struct cm_error err = {0};
	/* harpoon's bodies: accepted ones carry a valid name and normalized ports */
	for (int start = 0; start < 2; start++) {
		struct cm_harpoon_body hb;
		if (cm_harpoon_body((const char *)data, size, start, "127.0.0.1", &hb, &err) == 0) {
			if (!cm_imagedef_valid_name(hb.image) || (start && (!hb.ports || hb.ports[0] != '[')) || hb.lock_timeout < 0)
				abort();
			free(hb.ports);
		} else if (err.status != 400 || !err.message[0]) {
			abort();
		}
	}
	yajl_val v = cm_json_parse((const char *)data, size, &err);
	if (!v)
		return 0;
	struct cm_spec s;
	if (cm_spec_from_create(&cfg, v, &s, &err) == 0) {
		unsigned changed;
		/* the same document as a patch of what it created */
		if (cm_spec_apply_patch(&cfg, &s, v, &changed, &err) == 0) {
			char *csv = cm_spec_tags_csv(s.tags);
			free(csv);
		}
		cm_spec_free(&s);
	}
	char *ports = NULL;
	yajl_val p = cm_json_get(v, "ports");
	if (p && cm_spec_ports(p, &ports, &err) == 0)
		free(ports);
	yajl_tree_free(v);
	return 0;
}
