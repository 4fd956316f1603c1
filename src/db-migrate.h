/* SPDX-License-Identifier: MIT */
#pragma once

/* Schema migrations. The SQL files of migrations/ are embedded at build time
 * (tools/embed-migrations) with their SHA-256. At startup they are applied
 * in version order, each in its own transaction, and recorded in
 * schema_migrations (version, name, checksum, applied_at). A session
 * advisory lock lets exactly one of several starting instances apply them;
 * the others wait and then find nothing to do.
 *
 * Refused, with a clear error and no READY: an applied migration whose file
 * changed (checksum mismatch), and a database that has a migration this
 * binary does not know that is not additive.
 *
 * The compatibility contract (expand/contract): a migration whose first
 * line is exactly "-- baton:additive" promises that binaries built before
 * it keep working on the schema it leaves (new tables, new nullable
 * columns, new functions). Any other migration is breaking. The mark is
 * recorded in schema_migrations.additive when the migration is applied,
 * so that an older binary, which has not got the file, can still tell:
 * it starts on a newer schema when every migration it does not know is
 * additive, and refuses, naming the first breaking one, otherwise. */

#include "db.h"
#include "util.h"

typedef struct EmbeddedMigration {
        const char *filename;           /* "0001_create_topics_and_events.sql" */
        const char *checksum;           /* SHA-256, lowercase hex */
        const char *sql;
} EmbeddedMigration;

extern const EmbeddedMigration embedded_migrations[];
extern const size_t n_embedded_migrations;

typedef struct Migration {
        unsigned version;
        char *name;                     /* "create_topics_and_events" */
        const char *checksum;
        const char *sql;
        bool additive;                  /* first line "-- baton:additive" */
} Migration;

typedef struct MigrationSet {
        Migration *items;               /* sorted by version: 1, 2, ..., n */
        size_t n_items;
} MigrationSet;

typedef struct AppliedMigration {
        unsigned version;
        const char *name;
        const char *checksum;
        const char *applied_at;
        bool additive;                  /* as recorded when it was applied */
} AppliedMigration;

#define MIGRATION_ADDITIVE_MARK "-- baton:additive"

/* Whether the SQL's first line is exactly MIGRATION_ADDITIVE_MARK. */
bool migration_sql_is_additive(const char *sql);

/* "0042_add_index.sql" -> 42, "add_index". -EINVAL for anything else. */
int migration_parse_filename(const char *filename, unsigned *ret_version, char **ret_name);

/* Validates and sorts; versions must run 1..n without gaps or duplicates. */
int migration_set_load(const EmbeddedMigration *embedded, size_t n, MigrationSet *ret,
                       char **ret_error);
void migration_set_done(MigrationSet *set);

typedef struct MigrationPlan {
        size_t first_pending;           /* index of the first to apply; n_items when none */
        size_t first_breaking;          /* index of the first breaking one to apply; n_items: none */
        size_t n_unknown;               /* applied, not known to this binary (all additive) */
        size_t first_unknown;           /* index into applied of the first of those */
} MigrationPlan;

/* Compares what the database has applied (sorted by version) with what we
 * know, and says what applying would do. -EPROTO (with *ret_error) when
 * this binary must not run on the database. */
int migration_plan(const MigrationSet *known, const AppliedMigration *applied, size_t n_applied,
                   MigrationPlan *ret, char **ret_error);

/* --- running them against PostgreSQL --- */

typedef enum MigrateOutcome {
        MIGRATE_OK,
        MIGRATE_RETRY,                  /* lock held elsewhere, connection lost: try again */
        MIGRATE_FATAL,                  /* needs a human: do not start */
} MigrateOutcome;

typedef struct MigrateResult {
        MigrateOutcome outcome;
        const char *error;              /* NULL when OK; may quote libpq (hosts, roles) */
        const char *error_code;         /* db_error_code() when the database failed, else NULL */
        unsigned n_applied;             /* applied by this run */
        unsigned version;               /* schema version now */
} MigrateResult;

typedef void (*MigrateCallback)(const MigrateResult *result, void *userdata);

typedef struct Migrator Migrator;

/* Applies pending migrations on db (connected). cb runs exactly once, unless
 * the migrator is freed first. lock_timeout bounds how long a migration
 * waits for table locks held by running instances. */
int migrator_run(Db *db, const MigrationSet *set, usec_t lock_timeout_usec,
                 MigrateCallback cb, void *userdata, Migrator **ret);
Migrator *migrator_free(Migrator *m);
DEFINE_POINTER_CLEANUP(Migrator, migrator_free);

/* For "batond migrate --status": one line per migration known or applied. */
typedef void (*MigrateStatusCallback)(int error, const char *message, char **lines, size_t n_lines,
                                      bool problems, void *userdata);
int migrator_status(Db *db, const MigrationSet *set, MigrateStatusCallback cb, void *userdata,
                    Migrator **ret);
/* For "batond migrate --plan": what starting this binary would do, as
 * name=value lines (database_version, binary_version, apply, unknown,
 * breaking, refused), read without writing anything; problems: it would
 * refuse to start. */
int migrator_plan(Db *db, const MigrationSet *set, MigrateStatusCallback cb, void *userdata,
                  Migrator **ret);
