/* SPDX-License-Identifier: MIT */
#pragma once

/* Listening sockets: taken from systemd (socket activation) when it passed
 * any, else bound from SERVER_HOST:SERVER_PORT. A socket named "metrics"
 * (FileDescriptorName=metrics), or one bound from METRICS_HOST:METRICS_PORT
 * when systemd passed none by that name, serves health and metrics only. */

#include "util.h"

typedef struct ListenSocket {
        int fd;
        char *name;             /* LISTEN_FDNAMES entry, or "http" when we bound it */
        char *address;          /* "127.0.0.1:8080", "[::1]:8080", "/run/x.sock" */
        uint16_t port;          /* 0 for unix sockets */
        bool metrics;           /* health and metrics only */
} ListenSocket;

typedef struct ListenSet {
        ListenSocket *sockets;
        size_t n_sockets;
        bool from_systemd;
} ListenSet;

typedef struct ListenConfig {
        const char *host;
        uint16_t port;
        const char *metrics_host;
        uint16_t metrics_port;          /* 0: none */
} ListenConfig;

#define LISTEN_METRICS_NAME "metrics"

/* On failure returns a negative errno and a one-line reason in *ret_error. */
int listen_acquire(const ListenConfig *config, ListenSet *ret, char **ret_error);

bool listen_set_has_metrics(const ListenSet *set);

/* Closes every socket still owned by the set and frees it. */
void listen_set_done(ListenSet *set);

/* Formats the local address of a socket ("[::1]:8080"); NULL on failure.
 * ret_port: its port, 0 for unix sockets (may be NULL). */
char *socket_local_address(int fd, uint16_t *ret_port);
