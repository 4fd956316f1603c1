/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>

#include "http-listen.h"
#include "log.h"

char *socket_local_address(int fd, uint16_t *ret_port) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        char host[INET6_ADDRSTRLEN], *s = NULL;
        uint16_t unused;

        if (!ret_port)
                ret_port = &unused;
        *ret_port = 0;
        if (getsockname(fd, (struct sockaddr *) &ss, &len) < 0)
                return NULL;
        switch (ss.ss_family) {
        case AF_INET: {
                const struct sockaddr_in *in = (const struct sockaddr_in *) &ss;
                *ret_port = ntohs(in->sin_port);
                if (!inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host)) ||
                    asprintf(&s, "%s:%u", host, ntohs(in->sin_port)) < 0)
                        return NULL;
                return s;
        }
        case AF_INET6: {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) &ss;
                *ret_port = ntohs(in6->sin6_port);
                if (!inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host)) ||
                    asprintf(&s, "[%s]:%u", host, ntohs(in6->sin6_port)) < 0)
                        return NULL;
                return s;
        }
        case AF_UNIX: {
                const struct sockaddr_un *un = (const struct sockaddr_un *) &ss;
                size_t n = len > offsetof(struct sockaddr_un, sun_path)
                        ? len - offsetof(struct sockaddr_un, sun_path) : 0;
                if (n == 0)
                        return strdup("(unnamed unix socket)");
                if (un->sun_path[0] == '\0')    /* abstract namespace */
                        return asprintf(&s, "@%.*s", (int) n - 1, un->sun_path + 1) < 0 ? NULL : s;
                return strndup(un->sun_path, n);
        }
        default:
                return strdup("(unknown address family)");
        }
}

static int make_nonblocking(int fd) {
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return -errno;
        return 0;
}

static int add_socket(ListenSet *set, int fd, const char *name) {
        ListenSocket *s = reallocarray(set->sockets, set->n_sockets + 1, sizeof(ListenSocket));
        if (!s)
                return -ENOMEM;
        set->sockets = s;
        s = &set->sockets[set->n_sockets];
        *s = (ListenSocket) {
                .fd = fd,
                .name = strdup(name),
                .metrics = streq(name, LISTEN_METRICS_NAME),
        };
        s->address = socket_local_address(fd, &s->port);
        if (!s->name || !s->address) {
                free(s->name);
                free(s->address);
                return -ENOMEM;
        }
        set->n_sockets++;
        return 0;
}

static int acquire_from_systemd(int n, char **names, ListenSet *set, char **ret_error) {
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                const char *name = names && names[i] ? names[i] : "unknown";
                int r = sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1);

                if (r <= 0) {
                        if (asprintf(ret_error, "socket '%s' (fd %d) passed by systemd is not a "
                                     "listening stream socket", name, fd) < 0)
                                return -ENOMEM;
                        return r < 0 ? r : -EINVAL;
                }
                r = make_nonblocking(fd);
                if (r < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
                        if (asprintf(ret_error, "cannot configure socket '%s' (fd %d): %s",
                                     name, fd, strerror(r < 0 ? -r : errno)) < 0)
                                return -ENOMEM;
                        return r < 0 ? r : -errno;
                }
                r = add_socket(set, fd, name);
                if (r < 0)
                        return r;
        }
        set->from_systemd = true;
        return 0;
}

static int bind_one(const struct addrinfo *ai) {
        _cleanup_close_ int fd = -1;
        int one = 1;

        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
                return -errno;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
                return -errno;
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0)
                return -errno;
        if (listen(fd, SOMAXCONN) < 0)
                return -errno;
        return take_fd(&fd);
}

/* key: the setting named in errors ("SERVER_HOST"); name: the socket's. */
static int acquire_by_binding(const char *key, const char *host, uint16_t port, const char *name,
                              ListenSet *set, char **ret_error) {
        struct addrinfo hints = {
                .ai_family = AF_UNSPEC,
                .ai_socktype = SOCK_STREAM,
                .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
        };
        struct addrinfo *result = NULL;
        char service[8], bare[256];
        int r, fd = -EADDRNOTAVAIL;

        /* Accept "[::1]" as well as "::1". */
        if (host[0] == '[' && host[strlen(host) - 1] == ']')
                snprintf(bare, sizeof(bare), "%.*s", (int) strlen(host) - 2, host + 1);
        else
                snprintf(bare, sizeof(bare), "%s", host);
        snprintf(service, sizeof(service), "%u", port);

        r = getaddrinfo(bare, service, &hints, &result);
        if (r != 0) {
                if (asprintf(ret_error, "%s: cannot resolve '%s': %s", key, host, gai_strerror(r)) < 0)
                        return -ENOMEM;
                return -EADDRNOTAVAIL;
        }
        for (const struct addrinfo *ai = result; ai; ai = ai->ai_next) {
                fd = bind_one(ai);
                if (fd >= 0)
                        break;
        }
        freeaddrinfo(result);
        if (fd < 0) {
                if (asprintf(ret_error, "cannot listen on %s port %u (%s): %s", host, port, key,
                             strerror(-fd)) < 0)
                        return -ENOMEM;
                return fd;
        }
        r = add_socket(set, fd, name);
        if (r < 0)
                close(fd);
        return r;
}

bool listen_set_has_metrics(const ListenSet *set) {
        assert(set);

        for (size_t i = 0; i < set->n_sockets; i++)
                if (set->sockets[i].metrics)
                        return true;
        return false;
}

static int check_public_socket(const ListenSet *set, char **ret_error) {
        for (size_t i = 0; i < set->n_sockets; i++)
                if (!set->sockets[i].metrics)
                        return 0;
        if (asprintf(ret_error, "systemd passed only sockets named '%s'; the service needs one "
                     "more for its API", LISTEN_METRICS_NAME) < 0)
                return -ENOMEM;
        return -EINVAL;
}

int listen_acquire(const ListenConfig *config, ListenSet *ret, char **ret_error) {
        ListenSet set = { 0 };
        char **names = NULL;
        int n, r;

        assert(config && ret && ret_error);

        /* unset_environment: children we might spawn must not think the
         * sockets are theirs. */
        n = sd_listen_fds_with_names(1, &names);
        if (n < 0) {
                if (asprintf(ret_error, "cannot read sockets passed by systemd: %s", strerror(-n)) < 0)
                        return -ENOMEM;
                return n;
        }
        if (n > 0) {
                r = acquire_from_systemd(n, names, &set, ret_error);
                if (r >= 0)
                        r = check_public_socket(&set, ret_error);
        } else
                r = acquire_by_binding("SERVER_HOST", config->host, config->port, "http", &set, ret_error);
        for (int i = 0; names && i < n; i++)
                free(names[i]);
        free(names);
        /* A metrics socket from systemd wins over METRICS_PORT. */
        if (r >= 0 && config->metrics_port != 0 && !listen_set_has_metrics(&set))
                r = acquire_by_binding("METRICS_HOST", config->metrics_host, config->metrics_port,
                                       LISTEN_METRICS_NAME, &set, ret_error);
        if (r < 0) {
                listen_set_done(&set);
                return r;
        }
        *ret = set;
        return 0;
}

void listen_set_done(ListenSet *set) {
        for (size_t i = 0; i < set->n_sockets; i++) {
                if (set->sockets[i].fd >= 0)
                        close(set->sockets[i].fd);
                free(set->sockets[i].name);
                free(set->sockets[i].address);
        }
        free(set->sockets);
        *set = (ListenSet) { 0 };
}
