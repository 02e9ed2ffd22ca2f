/*
 * manifest.c — YAML manifests to JSON values and back.
 *
 * Why: `sluice apply -f` takes Knative manifests as YAML or JSON, and
 * listings print `-o yaml`. Manifests come from users and pipelines, so the
 * reader is strict and bounded: it walks libyaml's event stream (never its
 * document tree, which expands aliases) and builds jansson values directly.
 *
 * Reading:
 *  - scalars follow the YAML 1.2 core schema: plain null / Null / NULL / ~ /
 *    empty → null; true / True / TRUE / false / … → bool; decimal, 0o octal
 *    and 0x hex → integer (out of int64 range is an error); decimal floats →
 *    real; everything else, and every quoted scalar, is a string. `.inf` and
 *    `.nan` have no JSON form and are rejected (quote them for a string).
 *  - tags: !!str !!int !!float !!bool !!null !!map !!seq and the
 *    non-specific `!` are honoured; any other tag is an error.
 *  - rejected: anchors and aliases (billion laughs), duplicate keys, keys
 *    that are not strings, NUL characters, nesting deeper than 64 levels,
 *    more than max_docs non-empty documents (max_docs 0 = no limit).
 *  - documents whose value is null (empty documents) are skipped.
 *  - input starting with `{` or `[` is first read as strict JSON (jansson),
 *    which also accepts what libyaml cannot (UTF-16 surrogate escapes);
 *    anything jansson refuses goes through the YAML reader and its errors.
 *  Every error reads "line L, column C: problem" (1-based).
 *
 * Writing: libyaml's emitter, block style, 2-space indent, no line wrapping.
 * A string is written plain only when it would read back as the same string
 * here and in YAML 1.1 readers (yes/no/on/off, 1_000, 1:30, -0x1F and
 * timestamps like 2026-11-27T16:41:54Z are quoted);
 * otherwise it is double-quoted with escapes, which also covers multi-line
 * strings. Reals always carry a '.' or exponent so they read back as reals.
 */
#include "manifest.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <yaml.h>

#define MAX_DEPTH  64
#define TAG_PREFIX "tag:yaml.org,2002:"
#define SHOW_MAX   40 /* bytes of a scalar quoted in an error message */

typedef struct parser {
    yaml_parser_t yp;
    const char *buf;
    size_t len;
    sl_error_t *err;
} parser_t;

/* ---- errors -------------------------------------------------------------- */

static int at_error(sl_error_t *err, yaml_mark_t m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int at_error(sl_error_t *err, yaml_mark_t m, const char *fmt, ...)
{
    char msg[SL_ERRMSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return sl_error_set(err, EINVAL, "line %zu, column %zu: %s", m.line + 1, m.column + 1, msg);
}

/* Line and column (0-based, columns in characters) of a byte offset. */
static yaml_mark_t offset_mark(const char *buf, size_t len, size_t off)
{
    yaml_mark_t m = {off, 0, 0};
    for (size_t i = 0; i < off && i < len; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c == '\n') {
            m.line++;
            m.column = 0;
        } else if ((c & 0xc0) != 0x80) {
            m.column++;
        }
    }
    return m;
}

static int parser_error(parser_t *p)
{
    yaml_parser_t *y = &p->yp;
    if (y->error == YAML_MEMORY_ERROR)
        return sl_error_set(p->err, ENOMEM, "out of memory reading YAML");
    const char *problem = y->problem ? y->problem : "malformed YAML";
    if (y->error == YAML_READER_ERROR) {
        yaml_mark_t m = offset_mark(p->buf, p->len, y->problem_offset);
        if (y->problem_value >= 0)
            return at_error(p->err, m, "%s (byte 0x%02x)", problem, (unsigned)y->problem_value);
        return at_error(p->err, m, "%s", problem);
    }
    if (y->context)
        return at_error(p->err, y->problem_mark, "%s (%s at line %zu, column %zu)", problem,
                        y->context, y->context_mark.line + 1, y->context_mark.column + 1);
    return at_error(p->err, y->problem_mark, "%s", problem);
}

static int next_event(parser_t *p, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&p->yp, ev))
        return parser_error(p);
    return 0;
}

/* ---- scalars -------------------------------------------------------------- */

typedef enum { SC_STR, SC_NULL, SC_BOOL, SC_INT, SC_FLOAT, SC_INF_NAN } scalar_kind_t;

static bool is_one_of(const char *s, size_t n, const char *const *words)
{
    for (; *words; words++)
        if (strlen(*words) == n && memcmp(*words, s, n) == 0)
            return true;
    return false;
}

static size_t span(const char *s, size_t n, const char *set)
{
    size_t i = 0;
    while (i < n && s[i] && strchr(set, s[i]))
        i++;
    return i;
}

#define DIGITS "0123456789"

static bool is_core_int(const char *s, size_t n)
{
    if (n > 2 && s[0] == '0' && s[1] == 'o')
        return span(s + 2, n - 2, "01234567") == n - 2;
    if (n > 2 && s[0] == '0' && s[1] == 'x')
        return span(s + 2, n - 2, DIGITS "abcdefABCDEF") == n - 2;
    size_t i = (n > 0 && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
    return n > i && span(s + i, n - i, DIGITS) == n - i;
}

/* [-+]? ( \.[0-9]+ | [0-9]+ ( \.[0-9]* )? ) ( [eE] [-+]? [0-9]+ )? */
static bool is_core_float(const char *s, size_t n)
{
    size_t i = (n > 0 && (s[0] == '-' || s[0] == '+')) ? 1 : 0;
    size_t whole = span(s + i, n - i, DIGITS);
    i += whole;
    if (i < n && s[i] == '.') {
        size_t frac = span(s + i + 1, n - i - 1, DIGITS);
        if (whole == 0 && frac == 0)
            return false;
        i += 1 + frac;
    } else if (whole == 0) {
        return false;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '-' || s[i] == '+'))
            i++;
        size_t exp = span(s + i, n - i, DIGITS);
        if (exp == 0)
            return false;
        i += exp;
    }
    return i == n;
}

static scalar_kind_t classify_plain(const char *s, size_t n)
{
    static const char *const nulls[] = {"~", "null", "Null", "NULL", NULL};
    static const char *const bools[] = {"true", "True", "TRUE", "false", "False", "FALSE", NULL};
    static const char *const inf_nan[] = {".inf",  ".Inf",  ".INF",  "+.inf", "+.Inf",
                                          "+.INF", "-.inf", "-.Inf", "-.INF", ".nan",
                                          ".NaN",  ".NAN",  NULL};
    if (n == 0 || is_one_of(s, n, nulls))
        return SC_NULL;
    if (is_one_of(s, n, bools))
        return SC_BOOL;
    if (is_core_int(s, n))
        return SC_INT;
    if (is_core_float(s, n))
        return SC_FLOAT;
    if (is_one_of(s, n, inf_nan))
        return SC_INF_NAN;
    return SC_STR;
}

/* s is NUL-terminated (libyaml guarantees it) and classified SC_INT. */
static int make_int(const char *s, json_t **out)
{
    int base = 10;
    const char *digits = s;
    if (s[0] == '0' && (s[1] == 'o' || s[1] == 'x')) {
        base = s[1] == 'o' ? 8 : 16;
        digits = s + 2;
    }
    char *end = NULL;
    errno = 0;
    long long v = strtoll(digits, &end, base);
    if (errno == ERANGE || !end || *end)
        return -1;
    *out = json_integer((json_int_t)v);
    return 0;
}

static int make_real(const char *s, json_t **out)
{
    char *end = NULL;
    double d = strtod(s, &end);
    if (!end || *end || !isfinite(d))
        return -1;
    *out = json_real(d);
    return *out ? 0 : -1;
}

static int make_value(parser_t *p, const yaml_event_t *ev, scalar_kind_t kind, json_t **out)
{
    const char *s = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    int show = (int)(n < SHOW_MAX ? n : SHOW_MAX);
    switch (kind) {
    case SC_NULL:
        *out = json_null();
        return 0;
    case SC_BOOL:
        *out = json_boolean(s[0] == 't' || s[0] == 'T');
        return 0;
    case SC_INT:
        if (make_int(s, out) < 0)
            return at_error(p->err, ev->start_mark, "integer '%.*s' is out of range", show, s);
        return 0;
    case SC_FLOAT:
        if (make_real(s, out) < 0)
            return at_error(p->err, ev->start_mark, "number '%.*s' is out of range", show, s);
        return 0;
    case SC_INF_NAN:
        return at_error(p->err, ev->start_mark,
                        "'%.*s' has no JSON representation (quote it to make it a string)", show,
                        s);
    case SC_STR:
        break;
    }
    *out = json_stringn(s, n);
    if (!*out)
        return at_error(p->err, ev->start_mark, "invalid UTF-8 in string");
    return 0;
}

static bool tag_is(const char *tag, const char *core_name)
{
    size_t plen = sizeof(TAG_PREFIX) - 1;
    return strncmp(tag, TAG_PREFIX, plen) == 0 && strcmp(tag + plen, core_name) == 0;
}

/* The kind an explicitly tagged scalar must have; error for unknown tags
 * and for values that do not fit the tag. */
static int tagged_kind(parser_t *p, const yaml_event_t *ev, const char *tag, scalar_kind_t *kind)
{
    const char *s = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    int show = (int)(n < SHOW_MAX ? n : SHOW_MAX);
    scalar_kind_t plain = classify_plain(s, n);
    static const struct {
        const char *name;
        scalar_kind_t kind;
    } core[] = {{"null", SC_NULL}, {"bool", SC_BOOL}, {"int", SC_INT}, {"float", SC_FLOAT}};
    if (strcmp(tag, "!") == 0 || tag_is(tag, "str")) {
        *kind = SC_STR;
        return 0;
    }
    for (size_t i = 0; i < SL_ARRAY_LEN(core); i++) {
        if (!tag_is(tag, core[i].name))
            continue;
        bool ok = plain == core[i].kind;
        /* !!float also takes decimal integers and the (rejected) .inf/.nan. */
        if (core[i].kind == SC_FLOAT) {
            bool prefixed = n > 2 && s[0] == '0' && (s[1] == 'o' || s[1] == 'x');
            ok = ok || plain == SC_INF_NAN || (plain == SC_INT && !prefixed);
        }
        if (!ok)
            return at_error(p->err, ev->start_mark, "'%.*s' is not a valid !!%s", show, s,
                            core[i].name);
        *kind = core[i].kind == SC_FLOAT && plain == SC_INT ? SC_FLOAT : plain;
        return 0;
    }
    return at_error(p->err, ev->start_mark, "unsupported tag '%s'", tag);
}

static int build_scalar(parser_t *p, const yaml_event_t *ev, json_t **out)
{
    const char *s = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    const char *tag = (const char *)ev->data.scalar.tag;
    if (memchr(s, '\0', n))
        return at_error(p->err, ev->start_mark, "strings may not contain NUL characters");
    scalar_kind_t kind = SC_STR;
    if (tag) {
        int ret = tagged_kind(p, ev, tag, &kind);
        if (ret < 0)
            return ret;
    } else if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
        kind = classify_plain(s, n);
    }
    return make_value(p, ev, kind, out);
}

/* ---- collections ---------------------------------------------------------- */

static int build_node(parser_t *p, yaml_event_t *ev, int depth, json_t **out);

static const char *event_anchor(const yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        return (const char *)ev->data.scalar.anchor;
    case YAML_SEQUENCE_START_EVENT:
        return (const char *)ev->data.sequence_start.anchor;
    case YAML_MAPPING_START_EVENT:
        return (const char *)ev->data.mapping_start.anchor;
    default:
        return NULL;
    }
}

static int check_collection(parser_t *p, const yaml_event_t *ev, int depth, const char *tag,
                            const char *core_name)
{
    if (depth + 1 > MAX_DEPTH)
        return at_error(p->err, ev->start_mark, "nesting deeper than %d levels", MAX_DEPTH);
    if (tag && strcmp(tag, "!") != 0 && !tag_is(tag, core_name))
        return at_error(p->err, ev->start_mark, "unsupported tag '%s' on a %s", tag,
                        strcmp(core_name, "map") == 0 ? "mapping" : "sequence");
    return 0;
}

static int build_seq(parser_t *p, int depth, json_t **out)
{
    json_t *arr = json_array();
    int ret;
    for (;;) {
        yaml_event_t ev;
        json_t *item = NULL;
        ret = next_event(p, &ev);
        if (ret < 0)
            break;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        ret = build_node(p, &ev, depth, &item);
        if (ret < 0)
            break;
        json_array_append_new(arr, item);
    }
    if (ret < 0) {
        json_decref(arr);
        return ret;
    }
    *out = arr;
    return 0;
}

static const char *node_name(yaml_event_type_t t)
{
    switch (t) {
    case YAML_SEQUENCE_START_EVENT:
        return "a sequence";
    case YAML_MAPPING_START_EVENT:
        return "a mapping";
    case YAML_ALIAS_EVENT:
        return "an alias";
    default:
        return "a non-scalar";
    }
}

/* Read one key: a scalar that resolves to a string not yet in obj. */
static int build_key(parser_t *p, yaml_event_t *ev, int depth, json_t *obj, json_t **key)
{
    yaml_mark_t mark = ev->start_mark;
    yaml_event_type_t type = ev->type;
    if (type != YAML_SCALAR_EVENT && type != YAML_ALIAS_EVENT) {
        yaml_event_delete(ev);
        return at_error(p->err, mark, "mapping keys must be strings, found %s", node_name(type));
    }
    int ret = build_node(p, ev, depth, key);
    if (ret < 0)
        return ret;
    if (!json_is_string(*key)) {
        sl_autofree char *text = json_dumps(*key, JSON_ENCODE_ANY);
        json_decref(*key);
        return at_error(p->err, mark, "mapping key %s is not a string (quote it)",
                        text ? text : "?");
    }
    const char *k = json_string_value(*key);
    size_t klen = json_string_length(*key);
    if (json_object_getn(obj, k, klen)) {
        int show = (int)(klen < SHOW_MAX ? klen : SHOW_MAX);
        ret = at_error(p->err, mark, "duplicate key '%.*s'", show, k);
        json_decref(*key);
        return ret;
    }
    return 0;
}

static int build_map(parser_t *p, int depth, json_t **out)
{
    json_t *obj = json_object();
    int ret;
    for (;;) {
        yaml_event_t ev;
        json_t *key = NULL, *val = NULL;
        ret = next_event(p, &ev);
        if (ret < 0)
            break;
        if (ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        ret = build_key(p, &ev, depth, obj, &key);
        if (ret < 0)
            break;
        ret = next_event(p, &ev);
        if (ret == 0)
            ret = build_node(p, &ev, depth, &val);
        if (ret == 0)
            json_object_setn_new(obj, json_string_value(key), json_string_length(key), val);
        json_decref(key);
        if (ret < 0)
            break;
    }
    if (ret < 0) {
        json_decref(obj);
        return ret;
    }
    *out = obj;
    return 0;
}

/* Build the node that starts with ev (consumed) inside a collection at depth. */
static int build_node(parser_t *p, yaml_event_t *ev, int depth, json_t **out)
{
    int ret;
    const char *anchor = event_anchor(ev);
    if (anchor) {
        ret = at_error(p->err, ev->start_mark, "anchors are not supported (&%s)", anchor);
    } else if (ev->type == YAML_ALIAS_EVENT) {
        ret = at_error(p->err, ev->start_mark, "aliases are not supported (*%s)",
                       (const char *)ev->data.alias.anchor);
    } else if (ev->type == YAML_SCALAR_EVENT) {
        ret = build_scalar(p, ev, out);
    } else if (ev->type == YAML_SEQUENCE_START_EVENT) {
        ret = check_collection(p, ev, depth, (const char *)ev->data.sequence_start.tag, "seq");
        if (ret == 0)
            ret = build_seq(p, depth + 1, out);
    } else if (ev->type == YAML_MAPPING_START_EVENT) {
        ret = check_collection(p, ev, depth, (const char *)ev->data.mapping_start.tag, "map");
        if (ret == 0)
            ret = build_map(p, depth + 1, out);
    } else {
        ret = at_error(p->err, ev->start_mark, "unexpected YAML event %d", (int)ev->type);
    }
    yaml_event_delete(ev);
    return ret;
}

/* ---- documents ------------------------------------------------------------ */

static int expect_event(parser_t *p, yaml_event_type_t type)
{
    yaml_event_t ev;
    int ret = next_event(p, &ev);
    if (ret < 0)
        return ret;
    if (ev.type != type)
        ret = at_error(p->err, ev.start_mark, "unexpected YAML event %d", (int)ev.type);
    yaml_event_delete(&ev);
    return ret;
}

/* One document after its DOCUMENT-START: the root node, then DOCUMENT-END. */
static int parse_document(parser_t *p, json_t **root)
{
    yaml_event_t ev;
    int ret = next_event(p, &ev);
    if (ret < 0)
        return ret;
    ret = build_node(p, &ev, 0, root);
    if (ret < 0)
        return ret;
    ret = expect_event(p, YAML_DOCUMENT_END_EVENT);
    if (ret < 0)
        json_decref(*root);
    return ret;
}

static int add_doc(json_t *docs, json_t *root, size_t max_docs, yaml_mark_t mark, sl_error_t *err)
{
    if (json_is_null(root)) {
        json_decref(root);
        return 0;
    }
    if (max_docs && json_array_size(docs) >= max_docs) {
        json_decref(root);
        return at_error(err, mark, "more than %zu documents", max_docs);
    }
    json_array_append_new(docs, root);
    return 0;
}

static int parse_yaml(parser_t *p, size_t max_docs, json_t *docs)
{
    int ret = expect_event(p, YAML_STREAM_START_EVENT);
    while (ret == 0) {
        yaml_event_t ev;
        ret = next_event(p, &ev);
        if (ret < 0)
            break;
        yaml_event_type_t type = ev.type;
        yaml_mark_t mark = ev.start_mark;
        yaml_event_delete(&ev);
        if (type == YAML_STREAM_END_EVENT)
            break;
        if (type != YAML_DOCUMENT_START_EVENT) {
            ret = at_error(p->err, mark, "unexpected YAML event %d", (int)type);
            break;
        }
        json_t *root = NULL;
        ret = parse_document(p, &root);
        if (ret == 0)
            ret = add_doc(docs, root, max_docs, mark, p->err);
    }
    return ret;
}

/* ---- JSON fast path ------------------------------------------------------- */

static bool looks_like_json(const char *buf, size_t len)
{
    size_t i = 0;
    if (len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0)
        i = 3;
    while (i < len && strchr(" \t\r\n", buf[i]) && buf[i])
        i++;
    return i < len && (buf[i] == '{' || buf[i] == '[');
}

/* jansson has no position for "too deep", so find it in the text. */
static int json_depth_check(const char *buf, size_t len, sl_error_t *err)
{
    int depth = 0;
    bool in_str = false, esc = false;
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (in_str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            if (++depth > MAX_DEPTH)
                return at_error(err, offset_mark(buf, len, i), "nesting deeper than %d levels",
                                MAX_DEPTH);
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return 0;
}

/* 1 and *root when buf is one strict JSON value within the depth limit,
 * 0 to fall back to the YAML reader (which also explains JSON mistakes). */
static int try_json(const char *buf, size_t len, json_t **root, sl_error_t *err)
{
    if (!looks_like_json(buf, len))
        return 0;
    json_error_t jerr;
    *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!*root)
        return 0;
    /* Valid JSON, so the bracket scan is exact. */
    int ret = json_depth_check(buf, len, err);
    if (ret < 0) {
        json_decref(*root);
        *root = NULL;
        return ret;
    }
    return 1;
}

int sl_manifest_parse(const char *buf, size_t len, size_t max_docs, json_t **out, sl_error_t *err)
{
    if (!buf)
        len = 0;
    json_t *docs = json_array();
    json_t *root = NULL;
    int ret = try_json(buf, len, &root, err);
    if (ret > 0) {
        yaml_mark_t start = {0, 0, 0};
        ret = add_doc(docs, root, max_docs, start, err);
    } else if (ret == 0) {
        parser_t p = {.buf = buf, .len = len, .err = err};
        if (!yaml_parser_initialize(&p.yp)) {
            json_decref(docs);
            return sl_error_set(err, ENOMEM, "out of memory reading YAML");
        }
        yaml_parser_set_encoding(&p.yp, YAML_UTF8_ENCODING);
        yaml_parser_set_input_string(&p.yp, (const unsigned char *)(buf ? buf : ""), len);
        ret = parse_yaml(&p, max_docs, docs);
        yaml_parser_delete(&p.yp);
    }
    if (ret < 0) {
        json_decref(docs);
        return ret;
    }
    *out = docs;
    return 0;
}

/* ---- writing -------------------------------------------------------------- */

typedef struct outbuf {
    char *p;
    size_t len, cap;
} outbuf_t;

static int out_write(void *data, unsigned char *buf, size_t size)
{
    outbuf_t *o = data;
    if (o->len + size + 1 > o->cap) {
        o->cap = (o->len + size + 1) * 2;
        o->p = xrealloc(o->p, o->cap);
    }
    memcpy(o->p + o->len, buf, size);
    o->len += size;
    o->p[o->len] = '\0';
    return 1;
}

/* Characters that make a string unsafe as a plain scalar at its start. */
#define LEADING_INDICATORS "-?:,[]{}#&*!|>'\"%@`"

/* Whether bytes at s start a character YAML treats as a break, BOM or
 * non-printable: C1 controls, U+2028/2029, U+FEFF, U+FFFE/FFFF. */
static bool special_utf8(const unsigned char *s, size_t left)
{
    if (left >= 2 && s[0] == 0xc2 && s[1] < 0xa0)
        return true;
    if (left >= 3 && s[0] == 0xe2 && s[1] == 0x80 && (s[2] == 0xa8 || s[2] == 0xa9))
        return true;
    if (left >= 3 && s[0] == 0xef && s[1] == 0xbb && s[2] == 0xbf)
        return true;
    return left >= 3 && s[0] == 0xef && s[1] == 0xbf && (s[2] == 0xbe || s[2] == 0xbf);
}

/* Skip a run of lo..hi digits at s[*i]; false when the run is shorter or
 * longer. */
static bool take_digits(const char *s, size_t n, size_t *i, size_t lo, size_t hi)
{
    size_t k = span(s + *i, n - *i, DIGITS);
    if (k < lo || k > hi)
        return false;
    *i += k;
    return true;
}

static bool take_char(const char *s, size_t n, size_t *i, char c)
{
    if (*i >= n || s[*i] != c)
        return false;
    (*i)++;
    return true;
}

/* YAML 1.1's implicit timestamp (yaml.org/type/timestamp.html):
 * 2001-12-14, and 2001-12-14T21:59:43.10Z / 2001-12-14 21:59:43.10 -5 with
 * one- or two-digit month, day and hour. */
static bool yaml11_timestamp(const char *s, size_t n)
{
    size_t i = 0;
    if (!take_digits(s, n, &i, 4, 4) || !take_char(s, n, &i, '-'))
        return false;
    size_t month = i;
    if (!take_digits(s, n, &i, 1, 2) || !take_char(s, n, &i, '-'))
        return false;
    size_t day = i;
    if (!take_digits(s, n, &i, 1, 2))
        return false;
    if (i == n)
        return day - month == 3 && i - day == 2;
    if (!take_char(s, n, &i, 'T') && !take_char(s, n, &i, 't')) {
        size_t blanks = span(s + i, n - i, " \t");
        if (blanks == 0)
            return false;
        i += blanks;
    }
    if (!take_digits(s, n, &i, 1, 2) || !take_char(s, n, &i, ':') || !take_digits(s, n, &i, 2, 2) ||
        !take_char(s, n, &i, ':') || !take_digits(s, n, &i, 2, 2))
        return false;
    if (take_char(s, n, &i, '.'))
        i += span(s + i, n - i, DIGITS);
    if (i == n)
        return true;
    i += span(s + i, n - i, " \t");
    if (take_char(s, n, &i, 'Z'))
        return i == n;
    if (!take_char(s, n, &i, '-') && !take_char(s, n, &i, '+'))
        return false;
    if (!take_digits(s, n, &i, 1, 2))
        return false;
    if (take_char(s, n, &i, ':') && !take_digits(s, n, &i, 2, 2))
        return false;
    return i == n;
}

/* YAML 1.1's implicit int and float, signed or not: 0b1010, 0x1F, 0755,
 * 1_000, 1:30 (base 60), 1.5e+3. Loose on purpose: what merely looks like
 * a number is quoted too. */
static bool yaml11_number(const char *s, size_t n)
{
    size_t i = n > 0 && (s[0] == '-' || s[0] == '+') ? 1 : 0;
    const char *d = s + i;
    size_t m = n - i;
    if (m > 2 && d[0] == '0' && d[1] == 'b')
        return span(d + 2, m - 2, "01_") == m - 2;
    if (m > 2 && d[0] == '0' && d[1] == 'x')
        return span(d + 2, m - 2, DIGITS "abcdefABCDEF_") == m - 2;
    return m > 0 && d[0] && strchr(DIGITS ".", d[0]) && span(d, m, DIGITS "+-._:eE") == m;
}

/* YAML 1.1 readers (kubectl, PyYAML) give these another type; quote them
 * so a manifest means the same thing everywhere. */
static bool yaml11_special(const char *s, size_t n)
{
    static const char *const words[] = {"y",   "Y",   "yes", "Yes", "YES", "n",  "N",
                                        "no",  "No",  "NO",  "on",  "On",  "ON", "off",
                                        "Off", "OFF", "<<",  "=",   NULL};
    return is_one_of(s, n, words) || yaml11_number(s, n) || yaml11_timestamp(s, n);
}

static bool needs_quotes(const char *s, size_t n)
{
    if (n == 0 || classify_plain(s, n) != SC_STR || yaml11_special(s, n))
        return true;
    if (strchr(LEADING_INDICATORS " \t", s[0]))
        return true;
    if (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == ':')
        return true;
    if (n >= 3 && (memcmp(s, "---", 3) == 0 || memcmp(s, "...", 3) == 0))
        return true;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return true;
        if (c == ':' && i + 1 < n && (s[i + 1] == ' ' || s[i + 1] == '\t'))
            return true;
        if (c == '#' && i > 0 && (s[i - 1] == ' ' || s[i - 1] == '\t'))
            return true;
        if (c >= 0x80 && special_utf8((const unsigned char *)s + i, n - i))
            return true;
    }
    return false;
}

static int emit(yaml_emitter_t *e, yaml_event_t *ev)
{
    return yaml_emitter_emit(e, ev) ? 0 : -1;
}

static int emit_scalar(yaml_emitter_t *e, const char *s, size_t n, yaml_scalar_style_t style)
{
    yaml_event_t ev;
    if (n > INT_MAX)
        return -1;
    if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)n, 1, 1, style))
        return -1;
    return emit(e, &ev);
}

static int emit_string(yaml_emitter_t *e, const char *s, size_t n)
{
    return emit_scalar(
        e, s, n, needs_quotes(s, n) ? YAML_DOUBLE_QUOTED_SCALAR_STYLE : YAML_PLAIN_SCALAR_STYLE);
}

/* Shortest text that reads back as the same double, always with '.' or 'e'. */
static int emit_real(yaml_emitter_t *e, double d)
{
    char buf[64];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof(buf), "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    if (!strpbrk(buf, ".eE"))
        snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), ".0");
    return emit_scalar(e, buf, strlen(buf), YAML_PLAIN_SCALAR_STYLE);
}

static int emit_value(yaml_emitter_t *e, const json_t *v);

static int emit_object(yaml_emitter_t *e, const json_t *v)
{
    yaml_event_t ev;
    if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE) ||
        emit(e, &ev) < 0)
        return -1;
    const char *key;
    size_t klen;
    json_t *val;
    json_object_keylen_foreach((json_t *)v, key, klen, val)
    {
        if (emit_string(e, key, klen) < 0 || emit_value(e, val) < 0)
            return -1;
    }
    if (!yaml_mapping_end_event_initialize(&ev))
        return -1;
    return emit(e, &ev);
}

static int emit_array(yaml_emitter_t *e, const json_t *v)
{
    yaml_event_t ev;
    if (!yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE) ||
        emit(e, &ev) < 0)
        return -1;
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item)
    {
        if (emit_value(e, item) < 0)
            return -1;
    }
    if (!yaml_sequence_end_event_initialize(&ev))
        return -1;
    return emit(e, &ev);
}

static int emit_value(yaml_emitter_t *e, const json_t *v)
{
    char buf[32];
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return emit_object(e, v);
    case JSON_ARRAY:
        return emit_array(e, v);
    case JSON_STRING:
        return emit_string(e, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return emit_scalar(e, buf, strlen(buf), YAML_PLAIN_SCALAR_STYLE);
    case JSON_REAL:
        return emit_real(e, json_real_value(v));
    case JSON_TRUE:
        return emit_scalar(e, "true", 4, YAML_PLAIN_SCALAR_STYLE);
    case JSON_FALSE:
        return emit_scalar(e, "false", 5, YAML_PLAIN_SCALAR_STYLE);
    case JSON_NULL:
        break;
    }
    return emit_scalar(e, "null", 4, YAML_PLAIN_SCALAR_STYLE);
}

static int emit_document(yaml_emitter_t *e, const json_t *v)
{
    yaml_event_t ev;
    if (!yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) || emit(e, &ev) < 0)
        return -1;
    if (!yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) || emit(e, &ev) < 0)
        return -1;
    if (emit_value(e, v) < 0)
        return -1;
    if (!yaml_document_end_event_initialize(&ev, 1) || emit(e, &ev) < 0)
        return -1;
    if (!yaml_stream_end_event_initialize(&ev) || emit(e, &ev) < 0)
        return -1;
    return 0;
}

char *sl_manifest_to_yaml(const json_t *v)
{
    if (!v)
        v = json_null();
    outbuf_t o = {0};
    yaml_emitter_t e;
    if (!yaml_emitter_initialize(&e)) {
        fprintf(stderr, "FATAL: out of memory initialising the YAML emitter\n");
        abort();
    }
    yaml_emitter_set_output(&e, out_write, &o);
    yaml_emitter_set_indent(&e, 2);
    yaml_emitter_set_width(&e, -1);
    yaml_emitter_set_unicode(&e, 1);
    yaml_emitter_set_break(&e, YAML_LN_BREAK);
    int ret = emit_document(&e, v);
    yaml_emitter_delete(&e);
    if (ret == 0 && o.p)
        return o.p;
    /* Not expected: jansson strings are valid UTF-8. JSON is YAML, though. */
    free(o.p);
    char *json = json_dumps(v, JSON_ENCODE_ANY | JSON_INDENT(2));
    char *text = xasprintf("%s\n", json ? json : "null");
    free(json);
    return text;
}
