/* imagedef.h: named image definitions (harpoon's layout), their build contexts and hashes.
 *
 *   images:
 *     NAME:
 *       context: false | DIR        (absent: the definitions file's directory)
 *       commands:                   (Dockerfile instructions)
 *         - FROM base:tag
 *         - [ADD, {dest: /f, content: "text"}]   (inline file)
 *         - [ADD, {dest: /g, get: rel/path}]      (a file of the context)
 *         - [ENV, "A=1"]
 *       wait_condition: {command: CMD, port_open: PORT|[PORTS], timeout: S, wait_between_attempts: S}
 *       user: "UID[:GID]"            (the container's user; absent: APP_USER_UID; 0 only with
 *                                     ALLOW_ROOT_CONTAINERS=true)
 *
 * The file is YAML or the same document as JSON. Loading validates every definition and turns
 * each into a normalized JSON object, which is what the database keeps and the runner builds
 * from:
 *
 *   {"name", "user" (when given), "dockerfile", "context": "/abs/dir"|null, "inline": [{"path", "content"}],
 *    "wait": {"command": [argv]|null, "ports": [N...], "timeout": S, "interval": S}|null}
 */
#ifndef CM_IMAGEDEF_H
#define CM_IMAGEDEF_H

#include <yajl/yajl_tree.h>
#include "cm.h"

#define CM_IMAGEDEF_NAME_MAX 63
#define CM_IMAGEDEF_MAX_FILE (4 << 20)        /* the definitions file */
#define CM_IMAGEDEF_CONTEXT_MAX (512LL << 20) /* one packed build context */

struct cm_imagedef {
	char name[CM_IMAGEDEF_NAME_MAX + 1];
	char *json; /* normalized definition */
};

/* Reads and validates the definitions file (YAML or JSON). On success *defs holds *n
 * definitions sorted by name (free with cm_imagedefs_free). On failure err's message names the
 * place: "images.web.commands[2]: ...". */
int cm_imagedefs_load(const char *path, struct cm_imagedef **defs, size_t *n, struct cm_error *err);
/* The same from text; base_dir resolves relative context paths. */
int cm_imagedefs_parse(const char *text, size_t len, const char *base_dir, struct cm_imagedef **defs, size_t *n,
		       struct cm_error *err);
void cm_imagedefs_free(struct cm_imagedef *defs, size_t n);
/* Converts a YAML document (the first of the stream) to JSON text; NULL with err on bad YAML. */
char *cm_yaml_to_json(const char *text, size_t len, struct cm_error *err);
/* True for a valid definition name: [a-z0-9][a-z0-9_.-]{0,62}. */
bool cm_imagedef_valid_name(const char *s);

/* Packs the build context of a normalized definition as an uncompressed tar into out
 * (the generated Dockerfile is ".cm-Dockerfile") and computes the definition's hash: SHA-256
 * over the Dockerfile and every packed entry's path, type, mode and content (hex, 64 chars).
 * Fails with 422 BUILD_CONTEXT when the context cannot be read or is over the limit. */
int cm_imagedef_pack(yajl_val def, struct cm_buf *out, char hash[65], struct cm_error *err);

#endif
