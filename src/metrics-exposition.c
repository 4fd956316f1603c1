/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>

#include "metrics-exposition.h"

struct Exposition {
        ExpositionFormat format;
        bool failed;

        /* EXPOSITION_TEXT */
        FILE *out;
        char *text;
        size_t size;
        const char *family;             /* name of the family being written */

        /* EXPOSITION_JSON */
        json_t *root;
        json_t *samples;                /* borrowed: the current family's array */
};

static const char *const type_names[] = {
        [METRIC_COUNTER] = "counter",
        [METRIC_GAUGE] = "gauge",
        [METRIC_HISTOGRAM] = "histogram",
};

int exposition_new(ExpositionFormat format, Exposition **ret) {
        Exposition *e = calloc(1, sizeof(Exposition));

        assert(ret);

        if (!e)
                return -ENOMEM;
        e->format = format;
        if (format == EXPOSITION_TEXT)
                e->out = open_memstream(&e->text, &e->size);
        else
                e->root = json_object();
        if (!e->out && !e->root) {
                free(e);
                return -ENOMEM;
        }
        *ret = e;
        return 0;
}

Exposition *exposition_free(Exposition *e) {
        if (!e)
                return NULL;
        if (e->out)
                fclose(e->out);
        free(e->text);
        json_decref(e->root);
        return mfree(e);
}

const char *exposition_format_value(double value, char *buf, size_t size) {
        assert(buf);

        if (isnan(value))
                snprintf(buf, size, "NaN");
        else if (isinf(value))
                snprintf(buf, size, value > 0 ? "+Inf" : "-Inf");
        else if (value == floor(value) && fabs(value) < 1e15)
                snprintf(buf, size, "%.0f", value);
        else
                snprintf(buf, size, "%.15g", value);
        return buf;
}

/* Label values are escaped as the text format requires: \\, \" and \n. */
static void write_label_value(FILE *out, const char *value) {
        for (const char *p = value; *p; p++) {
                if (*p == '\\' || *p == '"')
                        fputc('\\', out);
                if (*p == '\n')
                        fputs("\\n", out);
                else
                        fputc(*p, out);
        }
}

static void write_labels(FILE *out, const char *const *labels, const char *le) {
        bool any = false;

        if ((!labels || !labels[0]) && !le)
                return;
        fputc('{', out);
        for (size_t i = 0; labels && labels[i] && labels[i + 1]; i += 2) {
                fprintf(out, "%s%s=\"", any ? "," : "", labels[i]);
                write_label_value(out, labels[i + 1]);
                fputc('"', out);
                any = true;
        }
        if (le)
                fprintf(out, "%sle=\"%s\"", any ? "," : "", le);
        fputc('}', out);
}

static void write_text_sample(Exposition *e, const char *suffix, const char *const *labels,
                              const char *le, double value) {
        char buf[64];

        fprintf(e->out, "%s%s", e->family, suffix);
        write_labels(e->out, labels, le);
        fprintf(e->out, " %s\n", exposition_format_value(value, buf, sizeof(buf)));
}

/* Help text is one line; backslashes and newlines are escaped. */
static void write_help(FILE *out, const char *help) {
        for (const char *p = help; *p; p++) {
                if (*p == '\\')
                        fputs("\\\\", out);
                else if (*p == '\n')
                        fputs("\\n", out);
                else
                        fputc(*p, out);
        }
}

void exposition_family(Exposition *e, const char *name, MetricType type, const char *help) {
        assert(e && name && help);

        if (e->format == EXPOSITION_TEXT) {
                e->family = name;
                fprintf(e->out, "# HELP %s ", name);
                write_help(e->out, help);
                fprintf(e->out, "\n# TYPE %s %s\n", name, type_names[type]);
                return;
        }
        json_t *family = json_pack("{s:s, s:s, s:[]}", "type", type_names[type], "help", help,
                                   "samples");
        e->samples = family ? json_object_get(family, "samples") : NULL;
        if (!family || json_object_set_new(e->root, name, family) < 0) {
                e->samples = NULL;
                e->failed = true;
        }
}

void exposition_scalar(Exposition *e, const char *name, MetricType type, const char *help, double value) {
        assert(e && name && help);

        exposition_family(e, name, type, help);
        exposition_sample(e, NULL, value);
}

static json_t *labels_to_json(const char *const *labels) {
        json_t *o = json_object();

        for (size_t i = 0; o && labels && labels[i] && labels[i + 1]; i += 2)
                if (json_object_set_new(o, labels[i], json_string(labels[i + 1])) < 0) {
                        json_decref(o);
                        return NULL;
                }
        return o;
}

static void append_sample(Exposition *e, json_t *sample) {
        if (!sample || !e->samples || json_array_append_new(e->samples, sample) < 0)
                e->failed = true;
}

/* JSON numbers: integers stay integers (counters can exceed 2^53 only in
 * theory; jansson's integers are 64-bit). */
static json_t *json_number(double value) {
        if (value == floor(value) && fabs(value) < 9e15)
                return json_integer((json_int_t) value);
        return json_real(value);
}

void exposition_sample(Exposition *e, const char *const *labels, double value) {
        assert(e);

        if (e->format == EXPOSITION_TEXT) {
                write_text_sample(e, "", labels, NULL, value);
                return;
        }
        append_sample(e, json_pack("{s:o?, s:o?}", "labels", labels_to_json(labels), "value",
                                   json_number(value)));
}

static void bound_label(size_t i, char *buf, size_t size) {
        if (i >= HISTOGRAM_N_BOUNDS)
                snprintf(buf, size, "+Inf");
        else
                exposition_format_value((double) histogram_bounds_usec[i] / USEC_PER_SEC, buf, size);
}

static json_t *histogram_buckets_json(const Histogram *h) {
        json_t *buckets = json_array();
        char le[32];

        for (size_t i = 0; buckets && i <= HISTOGRAM_N_BOUNDS; i++) {
                bound_label(i, le, sizeof(le));
                if (json_array_append_new(buckets, json_pack("{s:s, s:I}", "le", le, "count",
                                                             (json_int_t) histogram_cumulative(h, i))) < 0) {
                        json_decref(buckets);
                        return NULL;
                }
        }
        return buckets;
}

void exposition_histogram(Exposition *e, const char *const *labels, const Histogram *h) {
        assert(e && h);

        double sum = (double) h->sum_usec / USEC_PER_SEC;
        char le[32];

        if (e->format == EXPOSITION_JSON) {
                append_sample(e, json_pack("{s:o?, s:o?, s:f, s:I}", "labels", labels_to_json(labels),
                                           "buckets", histogram_buckets_json(h), "sum", sum,
                                           "count", (json_int_t) h->count));
                return;
        }
        for (size_t i = 0; i <= HISTOGRAM_N_BOUNDS; i++) {
                bound_label(i, le, sizeof(le));
                write_text_sample(e, "_bucket", labels, le, (double) histogram_cumulative(h, i));
        }
        write_text_sample(e, "_sum", labels, NULL, sum);
        write_text_sample(e, "_count", labels, NULL, (double) h->count);
}

int exposition_finish(Exposition *e, char **ret_text, size_t *ret_size) {
        assert(e && ret_text && ret_size);

        if (e->format == EXPOSITION_TEXT) {
                /* fclose() settles text and size. */
                bool write_failed = ferror(e->out);
                int r = fclose(e->out);
                e->out = NULL;
                if (r != 0 || write_failed || !e->text)
                        return -ENOMEM;
                *ret_text = TAKE_PTR(e->text);
                *ret_size = e->size;
                return 0;
        }
        if (e->failed)
                return -ENOMEM;
        char *text = json_dumps(e->root, JSON_COMPACT | JSON_REAL_PRECISION(15));
        if (!text)
                return -ENOMEM;
        *ret_text = text;
        *ret_size = strlen(text);
        return 0;
}
