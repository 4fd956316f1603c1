/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

#include "log.h"
#include "db-migrate.h"

/* "batonmig" as a big-endian int64: the session advisory lock key. */
#define MIGRATION_LOCK_KEY "7089075310400727399"

/* Control statements answer fast; migration SQL may rewrite a big table. */
#define CONTROL_TIMEOUT_USEC   (30 * USEC_PER_SEC)
#define MIGRATION_TIMEOUT_USEC (24 * 3600 * USEC_PER_SEC)

int migration_parse_filename(const char *filename, unsigned *ret_version, char **ret_name) {
        assert(filename && ret_version && ret_name);

        const char *p = filename;
        unsigned long version = 0;
        size_t digits = 0, name_len;

        for (; isdigit((unsigned char) *p); p++, digits++) {
                version = version * 10 + (unsigned long) (*p - '0');
                if (version > 999999)
                        return -EINVAL;
        }
        if (digits == 0 || version == 0 || *p != '_')
                return -EINVAL;
        p++;
        name_len = strlen(p);
        if (name_len <= 4 || strcmp(p + name_len - 4, ".sql") != 0)
                return -EINVAL;
        name_len -= 4;
        for (size_t i = 0; i < name_len; i++)
                if (!isalnum((unsigned char) p[i]) && p[i] != '_' && p[i] != '-')
                        return -EINVAL;

        char *name = strndup(p, name_len);
        if (!name)
                return -ENOMEM;
        *ret_version = (unsigned) version;
        *ret_name = name;
        return 0;
}

bool migration_sql_is_additive(const char *sql) {
        size_t n = strlen(MIGRATION_ADDITIVE_MARK);

        assert(sql);

        return strncmp(sql, MIGRATION_ADDITIVE_MARK, n) == 0 &&
               (sql[n] == '\0' || sql[n] == '\n' || (sql[n] == '\r' && sql[n + 1] == '\n'));
}

static int compare_version(const void *a, const void *b) {
        const Migration *x = a, *y = b;
        return (x->version > y->version) - (x->version < y->version);
}

void migration_set_done(MigrationSet *set) {
        for (size_t i = 0; i < set->n_items; i++)
                free(set->items[i].name);
        free(set->items);
        *set = (MigrationSet) { 0 };
}

int migration_set_load(const EmbeddedMigration *embedded, size_t n, MigrationSet *ret,
                       char **ret_error) {
        MigrationSet set = { 0 };
        int r;

        assert((embedded || n == 0) && ret && ret_error);

        set.items = calloc(n > 0 ? n : 1, sizeof(Migration));
        if (!set.items)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                Migration *m = &set.items[i];
                r = migration_parse_filename(embedded[i].filename, &m->version, &m->name);
                if (r < 0) {
                        migration_set_done(&set);
                        if (r == -EINVAL && asprintf(ret_error, "migration file name '%s' is not "
                                                     "NNNN_description.sql", embedded[i].filename) < 0)
                                return -ENOMEM;
                        return r;
                }
                m->checksum = embedded[i].checksum;
                m->sql = embedded[i].sql;
                m->additive = migration_sql_is_additive(m->sql);
                set.n_items = i + 1;
        }
        qsort(set.items, set.n_items, sizeof(Migration), compare_version);
        for (size_t i = 0; i < set.n_items; i++) {
                if (set.items[i].version == i + 1)
                        continue;
                r = asprintf(ret_error, i > 0 && set.items[i].version == set.items[i - 1].version
                             ? "two migrations have version %u" : "migration versions must run "
                             "1, 2, 3, ... without gaps; version %u is out of sequence",
                             set.items[i].version);
                migration_set_done(&set);
                return r < 0 ? -ENOMEM : -EINVAL;
        }
        *ret = set;
        return 0;
}

int migration_plan(const MigrationSet *known, const AppliedMigration *applied, size_t n_applied,
                   MigrationPlan *ret, char **ret_error) {
        MigrationPlan plan = { .first_breaking = known->n_items };
        int r;

        assert(known && (applied || n_applied == 0) && ret && ret_error);

        for (size_t i = 0; i < n_applied; i++) {
                const AppliedMigration *a = &applied[i];

                if (a->version != i + 1) {
                        r = asprintf(ret_error, "the database lacks migration %zu but has %u: "
                                     "schema_migrations was edited by hand", i + 1, a->version);
                        return r < 0 ? -ENOMEM : -EPROTO;
                }
                if (a->version > known->n_items) {
                        if (!a->additive) {
                                r = asprintf(ret_error, "the database has migration %04u_%s, which this "
                                             "batond does not know (it knows up to %zu) and which is "
                                             "breaking (not marked additive): refusing to run an older "
                                             "binary against a schema it cannot work with", a->version,
                                             a->name, known->n_items);
                                return r < 0 ? -ENOMEM : -EPROTO;
                        }
                        if (plan.n_unknown++ == 0)
                                plan.first_unknown = i;
                        continue;
                }
                const Migration *m = &known->items[i];
                if (!streq(a->checksum, m->checksum)) {
                        r = asprintf(ret_error, "migration %04u_%s.sql changed after it was applied "
                                     "(database checksum %.12s, this batond %.12s): applied "
                                     "migrations must never change; add a new one instead",
                                     m->version, m->name, a->checksum, m->checksum);
                        return r < 0 ? -ENOMEM : -EPROTO;
                }
        }
        plan.first_pending = n_applied < known->n_items ? n_applied : known->n_items;
        for (size_t i = plan.first_pending; i < known->n_items; i++)
                if (!known->items[i].additive) {
                        plan.first_breaking = i;
                        break;
                }
        *ret = plan;
        return 0;
}

/* --- the runner: a chain of queries on Db --- */

typedef enum MigratorMode {
        MIGRATOR_APPLY,
        MIGRATOR_STATUS,
        MIGRATOR_PLAN,
} MigratorMode;

struct Migrator {
        Db *db;
        const MigrationSet *set;
        MigratorMode mode;
        usec_t lock_timeout_usec;
        size_t next;                    /* index of the migration being applied */
        unsigned n_applied;
        bool locked;
        bool in_transaction;

        MigrateOutcome failure;
        char *error;
        const char *error_code;         /* db_error_code() when the database failed */

        MigrateCallback cb;
        MigrateStatusCallback status_cb;
        void *userdata;
        bool done;
};

static void step_apply_next(Migrator *m);

Migrator *migrator_free(Migrator *m) {
        if (!m)
                return NULL;
        if (!m->done) {
                /* A query of ours may still be queued: forget its callback
                 * first (the reset would otherwise call back into us), then
                 * reset, so the server rolls back our transaction and drops
                 * our advisory lock. */
                db_cancel(m->db, m);
                db_reset(m->db, "migration abandoned");
        }
        free(m->error);
        return mfree(m);
}

static void finish(Migrator *m, MigrateOutcome outcome) {
        MigrateResult result = {
                .outcome = outcome,
                .error = outcome == MIGRATE_OK ? NULL : m->error,
                .error_code = outcome == MIGRATE_OK ? NULL : m->error_code,
                .n_applied = m->n_applied,
                .version = (unsigned) m->next,
        };
        m->done = true;
        if (m->mode != MIGRATOR_APPLY)
                m->status_cb(-EIO, strempty(result.error), NULL, 0, true, m->userdata);
        else
                m->cb(&result, m->userdata);
}

static void on_unlocked(Db *db, const DbResult *r, void *userdata) {
        Migrator *m = userdata;

        m->locked = false;
        /* Failing to unlock only matters if the connection survives, and a
         * failed query there resets it, which releases the lock too. */
        finish(m, m->error ? m->failure : MIGRATE_OK);
}

static void unlock_and_finish(Migrator *m) {
        if (m->locked && db_query(m->db, "SELECT pg_advisory_unlock(" MIGRATION_LOCK_KEY ")", 0, NULL,
                                  CONTROL_TIMEOUT_USEC, on_unlocked, m) >= 0)
                return;
        finish(m, m->error ? m->failure : MIGRATE_OK);
}

static void on_rolled_back(Db *db, const DbResult *r, void *userdata) {
        Migrator *m = userdata;
        m->in_transaction = false;
        unlock_and_finish(m);
}

/* Records the first failure, undoes what is open, and reports. */
static void fail(Migrator *m, MigrateOutcome outcome, const char *format, ...) _printf_(3, 4);
static void fail(Migrator *m, MigrateOutcome outcome, const char *format, ...) {
        va_list ap;

        if (!m->error) {
                va_start(ap, format);
                if (vasprintf(&m->error, format, ap) < 0)
                        m->error = NULL;
                va_end(ap);
                m->failure = outcome;
        }
        if (m->in_transaction && db_query(m->db, "ROLLBACK", 0, NULL, CONTROL_TIMEOUT_USEC,
                                          on_rolled_back, m) >= 0)
                return;
        m->in_transaction = false;
        if (db_connected(m->db))
                unlock_and_finish(m);
        else
                finish(m, m->failure);  /* connection gone: lock gone with it */
}

/* For a failure of the database: what it means, and the word for it. */
static MigrateOutcome outcome_of(Migrator *m, const DbResult *r) {
        if (!m->error)
                m->error_code = db_error_code(r->sqlstate);
        return r->transient ? MIGRATE_RETRY : MIGRATE_FATAL;
}

/* Issues a query or fails the run when it cannot even be queued. */
static void query(Migrator *m, const char *sql, int n_params, const char *const *params,
                  usec_t timeout_usec, DbQueryCallback cb) {
        int r = db_query(m->db, sql, n_params, params, timeout_usec, cb, m);
        if (r < 0)
                fail(m, MIGRATE_RETRY, "database unavailable: %s",
                     r == -ENOTCONN ? db_last_error(m->db) : strerror(-r));
}

static void on_committed(Db *db, const DbResult *r, void *userdata) {
        Migrator *m = userdata;
        const Migration *mig = &m->set->items[m->next];

        if (r->error) {
                fail(m, outcome_of(m, r), "migration %04u_%s failed at commit: %s",
                     mig->version, mig->name, r->error);
                return;
        }
        m->in_transaction = false;
        m->n_applied++;
        m->next++;
        log_info("Applied migration %04u_%s.", mig->version, mig->name);
        step_apply_next(m);
}

static void on_recorded(Db *db, const DbResult *r, void *userdata) {
        Migrator *m = userdata;
        const Migration *mig = &m->set->items[m->next];

        if (r->error) {
                fail(m, outcome_of(m, r), "cannot record migration %04u_%s: %s",
                     mig->version, mig->name, r->error);
                return;
        }
        query(m, "COMMIT", 0, NULL, CONTROL_TIMEOUT_USEC, on_committed);
}

static void on_migration_sql(Db *db, const DbResult *r, void *userdata) {
        Migrator *m = userdata;
        const Migration *mig = &m->set->items[m->next];
        char version[16];

        if (r->error) {
                /* A lock timeout means running instances hold the tables:
                 * retry later. Anything else is a broken migration. */
                fail(m, outcome_of(m, r), "migration %04u_%s failed: %s",
                     mig->version, mig->name, r->error);
                return;
        }
        snprintf(version, sizeof(version), "%u", mig->version);
        const char *params[] = { version, mig->name, mig->checksum, mig->additive ? "t" : "f" };
        query(m, "INSERT INTO schema_migrations (version, name, checksum, additive) VALUES ($1, $2, $3, $4)",
              4, params, CONTROL_TIMEOUT_USEC, on_recorded);
}

static void on_begun(Db *db, const DbResult *r, void *userdata) {
        Migrator *m = userdata;
        const Migration *mig = &m->set->items[m->next];

        if (r->error) {
                fail(m, outcome_of(m, r), "cannot start a transaction: %s", r->error);
                return;
        }
        m->in_transaction = true;
        log_info("Applying migration %04u_%s.", mig->version, mig->name);
        query(m, mig->sql, 0, NULL, MIGRATION_TIMEOUT_USEC, on_migration_sql);
}

static void step_apply_next(Migrator *m) {
        char sql[128];

        if (m->next >= m->set->n_items) {
                unlock_and_finish(m);
                return;
        }
        /* lock_timeout: a migration must not queue behind (and thereby block)
         * the running colour's queries for longer than this. */
        snprintf(sql, sizeof(sql), "BEGIN; SET LOCAL lock_timeout = '%" PRIu64 "ms'",
                 m->lock_timeout_usec / USEC_PER_MSEC);
        query(m, sql, 0, NULL, CONTROL_TIMEOUT_USEC, on_begun);
}

/* Reads schema_migrations into an array pointing into res. */
static int read_applied(PGresult *res, AppliedMigration **ret, size_t *ret_n) {
        int rows = PQntuples(res);
        AppliedMigration *a = calloc(rows > 0 ? (size_t) rows : 1, sizeof(AppliedMigration));

        if (!a)
                return -ENOMEM;
        for (int i = 0; i < rows; i++) {
                a[i].version = (unsigned) strtoul(PQgetvalue(res, i, 0), NULL, 10);
                a[i].name = PQgetvalue(res, i, 1);
                a[i].checksum = PQgetvalue(res, i, 2);
                a[i].applied_at = PQgetvalue(res, i, 3);
                a[i].additive = streq(PQgetvalue(res, i, 4), "t");
        }
        *ret = a;
        *ret_n = (size_t) rows;
        return 0;
}

static void report_status(Migrator *m, PGresult *res);
static void report_plan(Migrator *m, PGresult *res);

/* A newer schema than this binary's, which it may run on. */
static void log_unknown_additive(const AppliedMigration *applied, const MigrationPlan *plan) {
        if (plan->n_unknown == 0)
                return;
        for (size_t i = plan->first_unknown; i < plan->first_unknown + plan->n_unknown; i++)
                log_notice("The database has migration %04u_%s, which this batond does not know; it is "
                           "additive, so this batond runs on it.", applied[i].version, applied[i].name);
}

static void on_applied_read(Db *db, const DbResult *r, void *userdata) {
        Migrator *m = userdata;
        _cleanup_free_ AppliedMigration *applied = NULL;
        _cleanup_free_ char *error = NULL;
        size_t n_applied = 0;
        MigrationPlan plan;

        if (r->error) {
                fail(m, outcome_of(m, r), "cannot read schema_migrations: %s", r->error);
                return;
        }
        if (m->mode == MIGRATOR_STATUS) {
                report_status(m, r->result);
                return;
        }
        if (m->mode == MIGRATOR_PLAN) {
                report_plan(m, r->result);
                return;
        }
        if (read_applied(r->result, &applied, &n_applied) < 0) {
                fail(m, MIGRATE_RETRY, "out of memory");
                return;
        }
        if (migration_plan(m->set, applied, n_applied, &plan, &error) < 0) {
                fail(m, MIGRATE_FATAL, "%s", error ? error : "out of memory");
                return;
        }
        log_unknown_additive(applied, &plan);
        m->next = plan.first_pending;
        if (plan.first_pending == m->set->n_items)
                log_info("Database schema is at version %zu; no migration to apply.", n_applied);
        step_apply_next(m);
}

/* The additive column through to_jsonb(): a table an older batond created
 * lacks it until the next apply adds it, and status and plan never write. */
static const char select_applied[] =
        "SELECT version, name, checksum, to_char(applied_at, 'YYYY-MM-DD HH24:MI:SSOF'), "
        "coalesce((to_jsonb(m) ->> 'additive')::boolean, false) "
        "FROM schema_migrations m ORDER BY version";

static void on_table_ready(Db *db, const DbResult *r, void *userdata) {
        Migrator *m = userdata;

        if (r->error) {
                fail(m, outcome_of(m, r), "cannot create schema_migrations: %s", r->error);
                return;
        }
        query(m, select_applied, 0, NULL, CONTROL_TIMEOUT_USEC, on_applied_read);
}

static void on_locked(Db *db, const DbResult *r, void *userdata) {
        Migrator *m = userdata;

        if (r->error) {
                fail(m, outcome_of(m, r), "cannot take the migration lock: %s", r->error);
                return;
        }
        if (!streq(PQgetvalue(r->result, 0, 0), "t")) {
                fail(m, MIGRATE_RETRY, "another instance is applying migrations (advisory lock %s held)",
                     MIGRATION_LOCK_KEY);
                return;
        }
        m->locked = true;
        query(m,
              "CREATE TABLE IF NOT EXISTS schema_migrations ("
              " version integer PRIMARY KEY,"
              " name text NOT NULL,"
              " checksum text NOT NULL,"
              " applied_at timestamptz NOT NULL DEFAULT now(),"
              " additive boolean NOT NULL DEFAULT false);"
              /* Created by a batond from before the contract: what it
               * applied is recorded as breaking, which it is not known
               * not to be. */
              "ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS additive boolean NOT NULL DEFAULT false",
              0, NULL, CONTROL_TIMEOUT_USEC, on_table_ready);
}

/* The lock is tried, never waited for: waiting would block this connection
 * (and its health checks); the caller retries with backoff instead and says
 * so in STATUS=. */
static void step_lock(Migrator *m) {
        query(m, "SELECT pg_try_advisory_lock(" MIGRATION_LOCK_KEY ")", 0, NULL, CONTROL_TIMEOUT_USEC,
              on_locked);
}

int migrator_run(Db *db, const MigrationSet *set, usec_t lock_timeout_usec,
                 MigrateCallback cb, void *userdata, Migrator **ret) {
        Migrator *m = calloc(1, sizeof(Migrator));

        assert(db && set && ret);

        if (!m)
                return -ENOMEM;
        *m = (Migrator) {
                .db = db, .set = set, .mode = MIGRATOR_APPLY, .lock_timeout_usec = lock_timeout_usec,
                .cb = cb, .userdata = userdata,
        };
        *ret = m;
        step_lock(m);
        return 0;
}

/* --- status --- */

static int add_line(char ***lines, size_t *n, char *line) {
        char **l;

        if (!line)
                return -ENOMEM;
        l = reallocarray(*lines, *n + 1, sizeof(char *));
        if (!l) {
                free(line);
                return -ENOMEM;
        }
        l[(*n)++] = line;
        *lines = l;
        return 0;
}

static const char *kind(bool additive) {
        return additive ? "additive" : "breaking";
}

static char *status_line(const Migration *known, const AppliedMigration *applied) {
        char *s = NULL;
        int r;

        if (known && !applied)
                r = asprintf(&s, "%04u  %-40s  %s  pending", known->version, known->name,
                             kind(known->additive));
        else if (!known)
                r = asprintf(&s, "%04u  %-40s  %s  applied %s  NOT IN THIS BINARY (newer schema; %s)",
                             applied->version, applied->name, kind(applied->additive), applied->applied_at,
                             applied->additive ? "this batond runs on it" : "this batond refuses to start");
        else if (!streq(known->checksum, applied->checksum))
                r = asprintf(&s, "%04u  %-40s  %s  applied %s  CHANGED SINCE (checksum mismatch)",
                             known->version, known->name, kind(known->additive), applied->applied_at);
        else
                r = asprintf(&s, "%04u  %-40s  %s  applied %s", known->version, known->name,
                             kind(applied->additive), applied->applied_at);
        return r < 0 ? NULL : s;
}

static void report_status(Migrator *m, PGresult *res) {
        _cleanup_free_ AppliedMigration *applied = NULL;
        char **lines = NULL;
        size_t n_applied = 0, n_lines = 0, max;
        bool problems = false;
        int r;

        r = read_applied(res, &applied, &n_applied);
        max = m->set->n_items;
        for (size_t i = 0; r >= 0 && i < n_applied; i++)
                if (applied[i].version > max)
                        max = applied[i].version;
        for (unsigned v = 1; r >= 0 && v <= max; v++) {
                const Migration *k = v <= m->set->n_items ? &m->set->items[v - 1] : NULL;
                const AppliedMigration *a = NULL;
                for (size_t i = 0; i < n_applied; i++)
                        if (applied[i].version == v)
                                a = &applied[i];
                if (!k && !a)
                        continue;
                problems |= (!k && !a->additive) || (k && a && !streq(k->checksum, a->checksum));
                r = add_line(&lines, &n_lines, status_line(k, a));
        }
        m->done = true;
        m->status_cb(r, r < 0 ? "out of memory" : NULL, lines, n_lines, problems, m->userdata);
        for (size_t i = 0; i < n_lines; i++)
                free(lines[i]);
        free(lines);
}

static char *asprintf_or_null(const char *format, ...) _printf_(1, 2);
static char *asprintf_or_null(const char *format, ...) {
        char *s;
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(&s, format, ap);
        va_end(ap);
        return r < 0 ? NULL : s;
}

/* "name=value" with the value's migrations as "NNNN_name:kind", blank-separated. */
static char *plan_list(const char *key, const Migration *known, size_t from, size_t to,
                       const AppliedMigration *applied, size_t a_from, size_t a_to) {
        char *s = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&s, &size);

        if (!f)
                return NULL;
        fprintf(f, "%s=", key);
        for (size_t i = from; i < to; i++)
                fprintf(f, "%s%04u_%s:%s", i > from ? " " : "", known[i].version, known[i].name,
                        kind(known[i].additive));
        for (size_t i = a_from; i < a_to; i++)
                fprintf(f, "%s%04u_%s:%s", i > a_from ? " " : "", applied[i].version, applied[i].name,
                        kind(applied[i].additive));
        if (fclose(f) != 0) {
                free(s);
                return NULL;
        }
        return s;
}

/* What starting this binary would do to the database, as name=value lines
 * for baton-deploy (batond(8), "migrate --plan"). Nothing is written. */
static void report_plan(Migrator *m, PGresult *res) {
        _cleanup_free_ AppliedMigration *applied = NULL;
        _cleanup_free_ char *error = NULL;
        const MigrationSet *set = m->set;
        MigrationPlan plan = { .first_pending = set->n_items, .first_breaking = set->n_items };
        char **lines = NULL;
        size_t n_applied = 0, n_lines = 0;
        bool refused = false;
        int r;

        r = read_applied(res, &applied, &n_applied);
        if (r >= 0) {
                r = migration_plan(set, applied, n_applied, &plan, &error);
                refused = r == -EPROTO;
                if (refused)
                        r = 0;
        }
        if (r >= 0)
                r = add_line(&lines, &n_lines, asprintf_or_null("database_version=%zu", n_applied));
        if (r >= 0)
                r = add_line(&lines, &n_lines, asprintf_or_null("binary_version=%zu", set->n_items));
        if (r >= 0)
                r = add_line(&lines, &n_lines, plan_list("apply", set->items, refused ? 0 : plan.first_pending,
                                                         refused ? 0 : set->n_items, NULL, 0, 0));
        if (r >= 0)
                r = add_line(&lines, &n_lines, plan_list("unknown", NULL, 0, 0, applied, plan.first_unknown,
                                                         plan.first_unknown + plan.n_unknown));
        if (r >= 0)
                r = add_line(&lines, &n_lines, !refused && plan.first_breaking < set->n_items
                             ? asprintf_or_null("breaking=%04u_%s", set->items[plan.first_breaking].version,
                                                set->items[plan.first_breaking].name)
                             : strdup("breaking="));
        if (r >= 0)
                r = add_line(&lines, &n_lines, asprintf_or_null("refused=%s", refused ? strempty(error) : ""));
        m->done = true;
        m->status_cb(r, r < 0 ? "out of memory" : NULL, lines, n_lines, refused, m->userdata);
        for (size_t i = 0; i < n_lines; i++)
                free(lines[i]);
        free(lines);
}

static void on_status_table(Db *db, const DbResult *r, void *userdata) {
        Migrator *m = userdata;

        if (r->error) {
                m->done = true;
                m->status_cb(-EIO, r->error, NULL, 0, true, m->userdata);
                return;
        }
        if (streq(PQgetvalue(r->result, 0, 0), "f")) {
                /* Fresh database: everything is pending. */
                PGresult *empty = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
                if (!empty) {
                        m->done = true;
                        m->status_cb(-ENOMEM, "out of memory", NULL, 0, true, m->userdata);
                        return;
                }
                if (m->mode == MIGRATOR_PLAN)
                        report_plan(m, empty);
                else
                        report_status(m, empty);
                PQclear(empty);
                return;
        }
        if (db_query(m->db, select_applied, 0, NULL, CONTROL_TIMEOUT_USEC, on_applied_read, m) < 0) {
                m->done = true;
                m->status_cb(-ENOTCONN, db_last_error(m->db), NULL, 0, true, m->userdata);
        }
}

static int migrator_read_only(Db *db, const MigrationSet *set, MigratorMode mode, MigrateStatusCallback cb,
                              void *userdata, Migrator **ret) {
        Migrator *m = calloc(1, sizeof(Migrator));
        int r;

        assert(db && set && ret);

        if (!m)
                return -ENOMEM;
        *m = (Migrator) { .db = db, .set = set, .mode = mode, .status_cb = cb, .userdata = userdata };
        r = db_query(db, "SELECT to_regclass('schema_migrations') IS NOT NULL", 0, NULL,
                     CONTROL_TIMEOUT_USEC, on_status_table, m);
        if (r < 0) {
                free(m);
                return r;
        }
        *ret = m;
        return 0;
}

int migrator_status(Db *db, const MigrationSet *set, MigrateStatusCallback cb, void *userdata,
                    Migrator **ret) {
        return migrator_read_only(db, set, MIGRATOR_STATUS, cb, userdata, ret);
}

int migrator_plan(Db *db, const MigrationSet *set, MigrateStatusCallback cb, void *userdata,
                  Migrator **ret) {
        return migrator_read_only(db, set, MIGRATOR_PLAN, cb, userdata, ret);
}
