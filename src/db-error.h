/* SPDX-License-Identifier: MIT */
#pragma once

/* What a PostgreSQL error means, for retrying and for clients. Pure.
 *
 * libpq's messages name hosts, ports, users and databases ("connection to
 * server at \"db1.internal\" (10.0.0.5), port 5432 failed: FATAL: role
 * \"baton\" does not exist"): they go to the journal only. Clients and
 * health bodies get db_error_code(): a fixed word per kind of failure. */

#include <stdbool.h>
#include <stddef.h>

/* True for SQLSTATEs worth retrying: connection exceptions, shutdown,
 * lock and serialization failures, resource shortages. */
bool db_sqlstate_transient(const char *sqlstate);

/* One of a fixed set of words for an error's SQLSTATE (NULL or empty: the
 * error is not from the server, the connection failed or timed out):
 * database_unreachable, query_timeout, database_overloaded,
 * database_shutting_down, database_conflict, database_busy,
 * database_auth_failed, database_missing, database_read_only,
 * database_error. Safe to show to anyone. */
const char *db_error_code(const char *sqlstate);

/* Copies a libpq message to buf as one line (newlines and tabs folded). */
const char *db_one_line(const char *message, char *buf, size_t size);
