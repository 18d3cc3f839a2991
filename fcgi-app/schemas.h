/* schemas.h: the JSON Schemas of schema/NAME.json, embedded at build time (fcgi-app/schemas.c). */
#ifndef CM_SCHEMAS_H
#define CM_SCHEMAS_H

struct cm_schema {
	const char *name; /* file name without .json */
	const char *text;
};

extern const struct cm_schema cm_schemas[]; /* ends with {0, 0} */

#endif
