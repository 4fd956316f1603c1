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
 * changed (checksum mismatch), and a database that has migrations this
 * binary does not know (an older binary must not run on a newer schema). */

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
} AppliedMigration;

/* "0042_add_index.sql" -> 42, "add_index". -EINVAL for anything else. */
int migration_parse_filename(const char *filename, unsigned *ret_version, char **ret_name);

/* Validates and sorts; versions must run 1..n without gaps or duplicates. */
int migration_set_load(const EmbeddedMigration *embedded, size_t n, MigrationSet *ret,
                       char **ret_error);
void migration_set_done(MigrationSet *set);

/* Compares what the database has applied (sorted by version) with what we
 * know. On success *ret_first_pending is the index of the first migration
 * to apply (n_items when none). */
int migration_plan(const MigrationSet *known, const AppliedMigration *applied, size_t n_applied,
                   size_t *ret_first_pending, char **ret_error);

/* --- running them against PostgreSQL --- */

typedef enum MigrateOutcome {
        MIGRATE_OK,
        MIGRATE_RETRY,                  /* lock held elsewhere, connection lost: try again */
        MIGRATE_FATAL,                  /* needs a human: do not start */
} MigrateOutcome;

typedef struct MigrateResult {
        MigrateOutcome outcome;
        const char *error;              /* NULL when OK */
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
