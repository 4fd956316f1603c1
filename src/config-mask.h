/* SPDX-License-Identifier: MIT */
#pragma once

/* Masking of secrets in connection strings before they reach a log line,
 * an error message or a health body. */

/* Returns a newly allocated, masked form of a PostgreSQL connection string
 * (URI or "key=value" form, several hosts included), or NULL when out of
 * memory. The string is parsed by libpq (PQconninfoParse()) and rebuilt as
 * "key=value" pairs, in libpq's order of keywords, of every keyword it sets,
 * values quoted as that syntax needs; every password ("password",
 * "sslpassword", any keyword named "...password") shows as "***". So
 * "postgres://u:pw@h1,h2/db" becomes "user=u password=*** dbname=db
 * host=h1,h2". This is for people to read, not the text as written.
 *
 * A string that libpq cannot parse, or a URI whose user info libpq does not
 * read as written (an unencoded '@' or '/' in the password puts part of it
 * in the host or database name), is replaced as a whole by a fixed
 * placeholder in parentheses, since we cannot tell where its password is. */
char *mask_database_url(const char *s);

/* A copy of a comma-separated NATS server list with passwords and tokens
 * ("nats://TOKEN@host") replaced by "***", or NULL when out of memory. */
char *mask_nats_urls(const char *s);
