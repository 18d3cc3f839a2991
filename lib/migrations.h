/* migrations.h: the schema migrations compiled into every program (from sql/). */
#ifndef CM_MIGRATIONS_H
#define CM_MIGRATIONS_H
struct cm_migration {
	int version;
	const char *name;
	const char *sql;
};
extern const struct cm_migration cm_migrations[];
#endif
