/* harpoonreq.h: validation of harpoon's request bodies (no state touched). */
#ifndef CM_HARPOONREQ_H
#define CM_HARPOONREQ_H

#include "cm.h"
#include "imagedef.h"

struct cm_harpoon_body {
	char image[CM_IMAGEDEF_NAME_MAX + 1];
	char *ports;         /* start: normalized [{"ip","host","container","protocol"}], caller frees */
	bool has_ports;
	bool lock;
	double lock_timeout; /* seconds, 0 = none (only with lock) */
};

/* Parses a start_container body (start: image, ports, lock, lock_timeout) or a stop/unlock body
 * (image). ports items: [host, container], container, "host:container", "ip:host:container",
 * strings optionally ending in /tcp or /udp; host 0 or 1024-65535; ip loopback or
 * publish_address. Returns 0, or -1 with a 400 in err naming the field. */
int cm_harpoon_body(const char *body, size_t len, bool start, const char *publish_address, struct cm_harpoon_body *out,
		    struct cm_error *err);

#endif
