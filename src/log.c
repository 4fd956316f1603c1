/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/uio.h>

#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "log.h"

#define LOG_LINE_MAX 4096
#define LOG_FIELDS_MAX 16

static _Atomic int max_level = LOG_INFO;
static bool use_journal;
static char color_field[64];

static const char *const level_names[] = {
        [LOG_EMERG] = "emerg",   [LOG_ALERT] = "alert", [LOG_CRIT] = "crit",
        [LOG_ERR] = "error",     [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
        [LOG_INFO] = "info",     [LOG_DEBUG] = "debug",
};

/* JOURNAL_STREAM="dev:inode" names the stream systemd connected to our stderr;
 * only when stderr is still that stream does native journal logging reach the
 * same place the user looks (sd_journal_send drops records silently when no
 * journal socket exists). */
static bool stderr_is_journal(void) {
        const char *e = getenv("JOURNAL_STREAM");
        uintmax_t dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%ju:%ju", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return (uintmax_t) st.st_dev == dev && (uintmax_t) st.st_ino == ino;
}

void log_open(void) {
        use_journal = stderr_is_journal();
}

void log_set_max_level(int level) {
        atomic_store(&max_level, level);
}

int log_get_max_level(void) {
        return atomic_load(&max_level);
}

void log_set_color(const char *color) {
        if (isempty(color))
                color_field[0] = '\0';
        else
                snprintf(color_field, sizeof(color_field), "BATON_COLOR=%s", color);
}

int log_level_from_string(const char *s) {
        assert(s);

        if (strcasecmp(s, "warn") == 0)
                return LOG_WARNING;
        if (strcasecmp(s, "err") == 0)
                return LOG_ERR;
        for (int level = LOG_ERR; level <= LOG_DEBUG; level++)
                if (strcasecmp(s, level_names[level]) == 0)
                        return level;
        return -EINVAL;
}

const char *log_level_to_string(int level) {
        if (level < 0 || (size_t) level >= ELEMENTSOF(level_names))
                return "unknown";
        return level_names[level];
}

static void write_journal(int level, int error, const char *file, int line, const char *func,
                          const char *const *fields, const char *message) {
        char priority[16], code_line[32], errno_field[32];
        _cleanup_free_ char *message_field = NULL, *code_file = NULL, *code_func = NULL;
        struct iovec iov[8 + LOG_FIELDS_MAX];
        size_t n = 0;

        if (asprintf(&message_field, "MESSAGE=%s", message) < 0 ||
            asprintf(&code_file, "CODE_FILE=%s", file) < 0 ||
            asprintf(&code_func, "CODE_FUNC=%s", func) < 0)
                return;
        snprintf(priority, sizeof(priority), "PRIORITY=%d", level);
        snprintf(code_line, sizeof(code_line), "CODE_LINE=%d", line);

#define IOV_STR(s) (struct iovec) { .iov_base = (void *) (s), .iov_len = strlen(s) }
        iov[n++] = IOV_STR(message_field);
        iov[n++] = IOV_STR(priority);
        iov[n++] = IOV_STR(code_file);
        iov[n++] = IOV_STR(code_line);
        iov[n++] = IOV_STR(code_func);
        iov[n++] = IOV_STR("SYSLOG_IDENTIFIER=batond");
        if (color_field[0])
                iov[n++] = IOV_STR(color_field);
        if (error != 0) {
                snprintf(errno_field, sizeof(errno_field), "ERRNO=%d", abs(error));
                iov[n++] = IOV_STR(errno_field);
        }
        for (size_t i = 0; fields && fields[i] && i < LOG_FIELDS_MAX; i++)
                iov[n++] = IOV_STR(fields[i]);
#undef IOV_STR

        if (sd_journal_sendv(iov, (int) n) < 0)
                /* The journal went away under us: do not lose the record. */
                dprintf(STDERR_FILENO, "<%d>%s\n", level, message);
}

/* Fields are journal metadata: the plain line carries only the message,
 * which says the same for people. */
static void write_stderr(int level, const char *message) {
        char line[LOG_LINE_MAX + 32];
        size_t len;
        int n;

        n = snprintf(line, sizeof(line), "%s: %s", log_level_to_string(level), message);
        len = n < 0 ? 0 : (size_t) n >= sizeof(line) ? sizeof(line) - 1 : (size_t) n;
        line[len++] = '\n';
        /* One write() per record keeps lines from different threads whole. */
        (void) !write(STDERR_FILENO, line, len);
}

int log_internal(int level, int error, const char *file, int line, const char *func,
                 const char *const *fields, const char *format, ...) {
        char message[LOG_LINE_MAX];
        int saved_errno = errno;
        va_list ap;

        assert(file && func);

        /* glibc's %m prints strerror(errno). */
        if (error != 0)
                errno = abs(error);
        va_start(ap, format);
        (void) vsnprintf(message, sizeof(message), format, ap);
        va_end(ap);

        if (use_journal)
                write_journal(level, error, file, line, func, fields, message);
        else
                write_stderr(level, message);

        errno = saved_errno;
        return -abs(error);
}
