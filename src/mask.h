/* SPDX-License-Identifier: MIT */
#pragma once

/* Masking of secrets in connection strings before they reach a log line,
 * an error message or a health body. */

/* Returns a newly allocated copy of a PostgreSQL connection string (URI or
 * "key=value" form) or a NATS URL list with every password replaced by
 * "***", or NULL when out of memory. A string that cannot be parsed is
 * replaced as a whole, since we cannot tell where its password is. */
char *mask_connection_string(const char *s);
