/* SPDX-License-Identifier: MIT */
#pragma once

/* Masking of secrets in connection strings before they reach a log line,
 * an error message or a health body. */

/* Returns a newly allocated copy of a PostgreSQL connection string (URI or
 * "key=value" form) with its password replaced by "***", or NULL when out
 * of memory. A string that cannot be parsed is replaced as a whole, since we
 * cannot tell where its password is. */
char *mask_database_url(const char *s);

/* The same for a comma-separated NATS server list: passwords and tokens
 * ("nats://TOKEN@host") replaced by "***". */
char *mask_nats_urls(const char *s);
