/* SPDX-License-Identifier: MIT */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>

#include "config.h"
#include "log.h"
#include "manager.h"
#include "db-migrate-cli.h"
#include "version.h"

extern char **environ;

/* Exit status for a configuration error (systemd shows 78 as "CONFIG"). */
#define EXIT_CONFIG 78

typedef enum Command {
        COMMAND_RUN,
        COMMAND_CHECK_CONFIG,
        COMMAND_MIGRATE,
        COMMAND_MIGRATE_STATUS,
        COMMAND_MIGRATE_PLAN,
} Command;

typedef struct Args {
        Command command;
        const char *config_path;
        bool config_path_required;      /* given with --config: must exist */
} Args;

static void help(void) {
        printf("Usage: batond [--config FILE] [--check-config]\n"
               "       batond [--config FILE] migrate [--status | --plan]\n"
               "       batond --version | --help\n\n"
               "The Baton event service. Settings come from the environment and, under it,\n"
               "from FILE (default %s); see batond(8) and batond.conf(5).\n\n"
               "  -c, --config FILE   read settings from FILE (must exist)\n"
               "      --check-config  validate the configuration and exit\n"
               "      --version       print the version and exit\n"
               "  migrate             apply pending database migrations and exit\n"
               "  migrate --status    list migrations and whether each is applied\n"
               "  migrate --plan      what starting this batond would do to the database, as\n"
               "                      name=value lines; nothing is written\n",
               CONFIG_DEFAULT_PATH);
}

/* Returns 1 to go on, 0 when done (--help, --version), -ECONFIG for a
 * command-line mistake (said on stderr). */
static int parse_args(int argc, char **argv, Args *args) {
        enum { ARG_CHECK_CONFIG = 0x100, ARG_VERSION, ARG_STATUS, ARG_PLAN };
        static const struct option options[] = {
                { "config",       required_argument, NULL, 'c' },
                { "check-config", no_argument,       NULL, ARG_CHECK_CONFIG },
                { "version",      no_argument,       NULL, ARG_VERSION },
                { "status",       no_argument,       NULL, ARG_STATUS },
                { "plan",         no_argument,       NULL, ARG_PLAN },
                { "help",         no_argument,       NULL, 'h' },
                { NULL, 0, NULL, 0 }
        };
        bool status = false, plan = false;
        int c;

        *args = (Args) { .command = COMMAND_RUN, .config_path = CONFIG_DEFAULT_PATH };
        while ((c = getopt_long(argc, argv, "c:h", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        args->config_path = optarg;
                        args->config_path_required = true;
                        break;
                case ARG_CHECK_CONFIG:
                        args->command = COMMAND_CHECK_CONFIG;
                        break;
                case ARG_STATUS:
                        status = true;
                        break;
                case ARG_PLAN:
                        plan = true;
                        break;
                case ARG_VERSION:
                        printf("batond %s\n", BATON_VERSION);
                        return 0;
                case 'h':
                        help();
                        return 0;
                default:                /* getopt said what */
                        return -ECONFIG;
                }
        }
        if (optind < argc) {
                if (!streq(argv[optind], "migrate") || optind + 1 < argc) {
                        fprintf(stderr, "batond: unexpected argument '%s'; see batond --help\n",
                                argv[optind + (streq(argv[optind], "migrate") ? 1 : 0)]);
                        return -ECONFIG;
                }
                if (status && plan) {
                        fprintf(stderr, "batond: migrate takes --status or --plan, not both\n");
                        return -ECONFIG;
                }
                args->command = status ? COMMAND_MIGRATE_STATUS : plan ? COMMAND_MIGRATE_PLAN : COMMAND_MIGRATE;
        } else if (status || plan) {
                fprintf(stderr, "batond: --%s goes with 'migrate'\n", status ? "status" : "plan");
                return -ECONFIG;
        }
        return 1;
}

static int load_config(const Args *args, Config **ret) {
        _cleanup_free_ char *error = NULL;
        int r;

        r = config_load(args->config_path, args->config_path_required, environ, ret, &error);
        if (r == -ENOMEM && !error)
                return log_error_errno(r, "Failed to load the configuration: %m");
        if (r < 0) {
                /* One line that names the key: what an operator greps for. */
                if (error)
                        log_error("Invalid configuration: %s", error);
                else
                        log_error_errno(r, "Invalid configuration: %m");
                return -ECONFIG;
        }
        return 0;
}

/* Each step logs its own failure, where it knows the context. */
static int run_daemon(const Args *args, Config *config) {
        _cleanup_(manager_freep) Manager *m = NULL;
        int r;

        r = manager_new(config, args->config_path, args->config_path_required, &m);
        if (r < 0)
                return r;
        r = manager_start(m);
        if (r < 0)
                return r;
        return manager_run(m);
}

static int run(int argc, char **argv) {
        Config *config = NULL;
        Args args;
        int r;

        r = parse_args(argc, argv, &args);
        if (r <= 0)
                return r;
        r = load_config(&args, &config);
        if (r < 0)
                return r;
        log_set_max_level(config->log_level);
        log_set_color(config->deployment_color);

        switch (args.command) {
        case COMMAND_CHECK_CONFIG:
                config_dump(config, stdout);
                printf("configuration OK\n");
                config_free(config);
                return 0;
        case COMMAND_MIGRATE:
                r = migrate_cli(config, MIGRATE_CLI_APPLY);
                config_free(config);
                return r;
        case COMMAND_MIGRATE_STATUS:
                r = migrate_cli(config, MIGRATE_CLI_STATUS);
                config_free(config);
                return r;
        case COMMAND_MIGRATE_PLAN:
                r = migrate_cli(config, MIGRATE_CLI_PLAN);
                config_free(config);
                return r;
        default:
                return run_daemon(&args, config);
        }
}

/* -errno becomes an exit status here and nowhere else: 78 (systemd shows
 * it as "CONFIG") for a configuration that cannot work, 1 for any other
 * failure. A status run() returns (the event loop's) stays as it is. */
static int exit_status(int r) {
        if (r >= 0)
                return r;
        return r == -ECONFIG ? EXIT_CONFIG : EXIT_FAILURE;
}

int main(int argc, char **argv) {
        sigset_t mask;

        /* First of all: block the signals we handle in the event loop. Threads
         * that libraries start later (NATS) inherit this mask, so only the
         * loop's signalfd ever sees them. They must not be ignored, though:
         * an ignored signal is dropped before it can be pending, and a
         * shell starts its background jobs with SIGINT ignored (Ctrl-C
         * would never reach us). */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0 || signal(SIGTERM, SIG_DFL) == SIG_ERR ||
            signal(SIGINT, SIG_DFL) == SIG_ERR || signal(SIGHUP, SIG_DFL) == SIG_ERR)
                return EXIT_FAILURE;
        /* Writes to vanished peers must fail with EPIPE, not kill us. */
        signal(SIGPIPE, SIG_IGN);

        log_open();
        return exit_status(run(argc, argv));
}
