/* spec.h: validation of container specs from requests (create, patch, ports). */
#ifndef CM_SPEC_H
#define CM_SPEC_H

#include "cm.h"
#include "cm_config.h"
#include "json.h"

/* A validated container spec. Text members are canonical JSON generated here. */
struct cm_spec {
	char *image;
	char *command; /* JSON array of strings */
	char *env;     /* JSON object of strings */
	char *tags;    /* JSON array of strings */
	double cpus;   /* 0 = no limit */
	int64_t memory;
	int64_t pids;
	char *ports;   /* JSON array of {host, container, protocol} */
	char *volumes; /* JSON array of {type: volume|bind, source, target, read_only} */
};

enum {
	CM_CHANGED_IMAGE = 1,
	CM_CHANGED_ENV = 2,
	CM_CHANGED_TAGS = 4,
	CM_CHANGED_RESOURCES = 8,
	CM_CHANGED_COMMAND = 16,
	CM_CHANGED_PORTS = 32,
	CM_CHANGED_VOLUMES = 64,
};

void cm_spec_free(struct cm_spec *s);
/* Validates a POST /containers body. Returns 0, or -1 with err naming the field. */
int cm_spec_from_create(const struct cm_config *cfg, yajl_val req, struct cm_spec *out, struct cm_error *err);
/* Applies a PATCH body onto spec (which it updates in place); *changed gets CM_CHANGED_* bits. */
int cm_spec_apply_patch(const struct cm_config *cfg, struct cm_spec *spec, yajl_val patch, unsigned *changed,
			struct cm_error *err);
/* Validates a ports array value (from PATCH .../ports); *out is canonical JSON. */
int cm_spec_ports(yajl_val v, char **out, struct cm_error *err);
/* Validates a volumes array: [{name, target, read_only}] (a named volume) or
 * [{source, target, read_only}] (a host directory under ALLOWED_BIND_ROOTS); *out is canonical. */
int cm_spec_volumes(const struct cm_config *cfg, yajl_val v, char **out, struct cm_error *err);
/* Whether s is a name Docker accepts for a volume: [a-zA-Z0-9][a-zA-Z0-9_.-]+, at most 255. */
bool cm_valid_volume_name(const char *s);
/* Whether a Docker volume (its inspect object) carries this stack's instance label: the only
 * volumes the API shows, mounts or deletes. Anything else on the dockerd is another stack's, or
 * was made outside the service (perhaps a local-driver bind of a host path), and is "not found". */
bool cm_volume_is_ours(yajl_val inspect, const char *instance);
/* Whether s is an app name: [a-z0-9][a-z0-9-]{0,62}. */
bool cm_valid_app_name(const char *s);
/* Returns the comma-joined tags of a tags JSON array (caller frees). */
char *cm_spec_tags_csv(const char *tags_json);
/* Whether t is an acceptable tag (1-64 of letters, digits, _.:/- starting alphanumeric). */
bool cm_spec_valid_tag(const char *t);
/* Maximum CPUs a request may ask for (online CPUs). */
double cm_spec_max_cpus(void);

/* A Docker image reference: [host[:port]/]name[:tag][@sha256:...], or an image id
 * (sha256:HEX, or 12-64 hex digits). tag_only: name[:tag] only (what a build or commit names). */
bool cm_valid_image_ref(const char *s, bool tag_only);

#endif
