/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <string.h>

#include "db-error.h"
#include "util.h"

const char *db_one_line(const char *message, char *buf, size_t size) {
        size_t n = 0;
        bool space = false;

        assert(buf);

        for (const char *p = strempty(message); *p && n + 1 < size; p++) {
                if (*p == '\n' || *p == '\r' || *p == '\t' || *p == ' ') {
                        space = n > 0;
                        continue;
                }
                if (space && n + 2 < size)
                        buf[n++] = ' ';
                space = false;
                buf[n++] = *p;
        }
        buf[n] = '\0';
        return buf;
}

bool db_sqlstate_transient(const char *sqlstate) {
        static const char *const transient[] = {
                "40001",        /* serialization_failure */
                "40P01",        /* deadlock_detected */
                "55P03",        /* lock_not_available (lock_timeout) */
                "57P01",        /* admin_shutdown */
                "57P02",        /* crash_shutdown */
                "57P03",        /* cannot_connect_now (starting up) */
                "57014",        /* query_canceled (statement_timeout) */
        };

        if (isempty(sqlstate))
                return true;    /* not from the server: the connection failed */
        if (strncmp(sqlstate, "08", 2) == 0 || strncmp(sqlstate, "53", 2) == 0)
                return true;    /* connection exception, insufficient resources */
        for (size_t i = 0; i < ELEMENTSOF(transient); i++)
                if (streq(sqlstate, transient[i]))
                        return true;
        return false;
}

const char *db_error_code(const char *sqlstate) {
        static const struct {
                const char *prefix;     /* a whole SQLSTATE, or its class */
                const char *code;
        } table[] = {
                { "57014", "query_timeout" },           /* query_canceled: statement_timeout */
                { "55P03", "database_busy" },           /* lock_not_available: lock_timeout */
                { "40001", "database_conflict" },       /* serialization_failure */
                { "40P01", "database_conflict" },       /* deadlock_detected */
                { "25006", "database_read_only" },      /* read_only_sql_transaction: a standby */
                { "3D000", "database_missing" },        /* invalid_catalog_name */
                { "08", "database_unreachable" },       /* connection exception */
                { "53", "database_overloaded" },        /* insufficient resources: too many connections */
                { "57", "database_shutting_down" },     /* operator intervention: shutdown, starting */
                { "28", "database_auth_failed" },       /* invalid authorization */
        };

        if (isempty(sqlstate))
                return "database_unreachable";
        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (strncmp(sqlstate, table[i].prefix, strlen(table[i].prefix)) == 0)
                        return table[i].code;
        return "database_error";
}
