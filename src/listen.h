/* SPDX-License-Identifier: MIT */
#pragma once

/* Listening sockets: taken from systemd (socket activation) when it passed
 * any, else bound from SERVER_HOST:SERVER_PORT. */

#include "util.h"

typedef struct ListenSocket {
        int fd;
        char *name;             /* LISTEN_FDNAMES entry, or "http" when we bound it */
        char *address;          /* "127.0.0.1:8080", "[::1]:8080", "/run/x.sock" */
} ListenSocket;

typedef struct ListenSet {
        ListenSocket *sockets;
        size_t n_sockets;
        bool from_systemd;
} ListenSet;

/* On failure returns a negative errno and a one-line reason in *ret_error. */
int listen_acquire(const char *host, uint16_t port, ListenSet *ret, char **ret_error);

/* Closes every socket still owned by the set and frees it. */
void listen_set_done(ListenSet *set);

/* Formats the local address of a socket ("[::1]:8080"); NULL on failure. */
char *socket_local_address(int fd);
