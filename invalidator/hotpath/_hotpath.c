/* The delete hot path in C: wal2json format-version 2 records -> memcached requests.
 *
 * With pgoutput=True the same Decoder reads pgoutput protocol 1 messages instead
 * (feed_pgoutput below): B and C as wal2json's B and C, I/U/D of a known relation rendered
 * with the values the Python decoder (sources/pgoutput.py) gives; every R message is
 * cached here and declined, so that the Python decoder learns it too.
 *
 * A Decoder is built from the daemon's delete-only rules (fastpath.FastPlanner) and the
 * pools' placements. feed() takes one CopyData message from the replication stream:
 *
 *   - XLogData with a B record: nothing to do (transactions are tracked by commits);
 *   - XLogData with a C record: its position and commit time are recorded;
 *   - XLogData with an I/U/D record of a known table: the keys are rendered exactly as
 *     FastPlanner renders them, placed exactly as the pool's client places them
 *     (placement.c: pymemcache's rendezvous, broadcast, or a key hash looked up in the
 *     modula buckets or continuum the Python placement built), and "delete <key>\r\n" is
 *     appended to the request buffer of each (pool, node);
 *   - a primary keepalive: its WAL end (and whether a reply was asked for) is recorded.
 *
 * Anything else - another table, a NULL or non-ASCII key value, a float, an escape we do
 * not expect, a TRUNCATE, a logical message, a malformed record - is declined: feed()
 * returns 1 and leaves no trace, and the caller hands the message to the Python engine,
 * which gives the same answer and reports problems. Declining is always safe.
 *
 * harvest() hands over what was accumulated: per (pool, node) request blobs with their
 * request counts, and the commits seen (end position, commit time).
 *
 * scan_deletes() counts consecutive DELETED / NOT_FOUND reply lines, so that the replies
 * of a batch of N pipelined deletes are settled without a Python loop per line.
 */
#include "placement.h"

#include <string.h>
#include <time.h>

#define MAX_KEY_BYTES 250
#define MAX_COLS 64  /* columns a table's templates reference */
#define MAX_KEYS 64  /* keys one change may produce */
#define MAX_ROW_COLS 1664

enum { KIND_INSERT = 1, KIND_UPDATE = 2, KIND_DELETE = 4 };

/* ---------------------------------------------------------------------------------- */
/* Plain data built from the Python configuration.                                     */

typedef struct {
    char *data;
    Py_ssize_t len;
} Bytes;

typedef struct {
    int pool;
    int ncols;
    Bytes *literals; /* ncols + 1 */
    int *cols;       /* index into the table's column names */
} Template;

typedef struct {
    Bytes schema, table;
    int kinds;
    int ncols;
    Bytes cols[MAX_COLS];
    int ntemplates;
    Template *templates;
    long long counts[3]; /* insert, update, delete consumed here */
} Table;

typedef struct {
    Placer placer; /* which node: placement.c */
    int *slots;    /* per node: the index of its (pool, node) request buffer */
} Pool;

typedef struct {
    char *data;
    Py_ssize_t len, cap;
    Py_ssize_t count;
} Buffer;

/* The JSON scanner's tokens (defined here: a Row holds them). */
enum { T_STRING, T_NUMBER, T_TRUE, T_FALSE, T_NULL, T_OTHER,
       /* pgoutput text values, by the column's type (see render_value) */
       T_PG_ASIS, T_PG_INT, T_PG_BOOL, T_PG_NUMBER, T_PG_BYTEA };

typedef struct {
    int type;
    const char *start; /* strings: without quotes */
    Py_ssize_t len;
    int escaped;       /* a string containing a backslash */
} Token;

/* One row ("columns" or "identity"): the values of the table's referenced columns, and
 * every column name (for the UPDATE subset check). */
typedef struct {
    int present;
    Token values[MAX_COLS];
    int have[MAX_COLS];
    int nnames;
    Token names[MAX_ROW_COLS];
} Row;


/* A pgoutput Relation message, as far as the hot path needs it. */
typedef struct {
    uint32_t oid;
    int table;           /* index into tables, or -1: not ours */
    int ncols;
    int nident;          /* columns flagged as replica identity */
    short *map;          /* per relation column: the table's column index, or -1 */
    unsigned char *cls;  /* per relation column: T_PG_* by type oid */
    unsigned char *ident;
} PgRel;

typedef struct {
    PyObject_HEAD
    int pgoutput; /* messages are pgoutput protocol 1, not wal2json */
    int nrels, rels_cap;
    PgRel *rels;
    int ntables;
    Table *tables;
    int npools;
    Pool *pools;
    int nslots;
    Buffer *slots;
    /* commits since the last harvest: end position and commit time (NaN: unknown) */
    Py_ssize_t ncommits, commits_cap;
    unsigned long long *commit_lsns;
    double *commit_times;
    int open_work; /* keys appended since the last commit */
    int in_txn;    /* a B record seen and its C not yet */
    unsigned long long wal_end;
    unsigned long long position; /* data_start of the last XLogData */
    int reply_requested;
    Buffer scratch;
    Row *rows; /* [0] the new row ("columns"), [1] the old one ("identity"): ~56 KB each */
} Decoder;

static int buffer_reserve(Buffer *b, Py_ssize_t extra) {
    if (b->len + extra <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra)
        cap *= 2;
    char *data = PyMem_Realloc(b->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

/* ---------------------------------------------------------------------------------- */
/* A minimal JSON scanner: enough of RFC 8259 to find tokens and skip values.          */

static inline const char *ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static inline int is_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Length of the valid UTF-8 sequence at p (lead byte >= 0x80), or 0 (as Python's strict
 * decoder: no overlongs, no surrogates, nothing above U+10FFFF). */
static Py_ssize_t utf8_sequence(const unsigned char *p, const unsigned char *end) {
    unsigned char c = p[0];
    Py_ssize_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (end - p < n || p[1] < lo || p[1] > hi)
        return 0;
    for (Py_ssize_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

/* A JSON string, strictly (RFC 8259): no raw control characters, valid escapes, valid
 * UTF-8. Anything else is malformed, and a malformed record is always declined. */
static const char *scan_string(const char *p, const char *end, Token *tok) {
    /* p at the opening quote */
    const char *s = ++p;
    int escaped = 0;
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            tok->type = T_STRING;
            tok->start = s;
            tok->len = p - s;
            tok->escaped = escaped;
            return p + 1;
        }
        if (c == '\\') {
            escaped = 1;
            if (p + 1 >= end)
                return NULL;
            char e = p[1];
            if (e == 'u') {
                if (end - p < 6 || !is_hex(p[2]) || !is_hex(p[3]) || !is_hex(p[4]) || !is_hex(p[5]))
                    return NULL;
                p += 6;
                continue;
            }
            if (e != '"' && e != '\\' && e != '/' && e != 'b' && e != 'f' && e != 'n' &&
                e != 'r' && e != 't')
                return NULL;
            p += 2;
            continue;
        }
        if (c < 0x20)
            return NULL;
        if (c >= 0x80) {
            Py_ssize_t n = utf8_sequence((const unsigned char *)p, (const unsigned char *)end);
            if (n == 0)
                return NULL;
            p += n;
            continue;
        }
        p++;
    }
    return NULL;
}

/* A JSON number, strictly: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static const char *scan_number(const char *p, const char *end) {
    if (p < end && *p == '-')
        p++;
    if (p >= end)
        return NULL;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    } else {
        return NULL;
    }
    if (p < end && *p == '.') {
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return NULL;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (p >= end || *p < '0' || *p > '9')
            return NULL;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    /* the token must end here: a delimiter or the end */
    if (p < end && !(*p == ',' || *p == '}' || *p == ']' || *p == ' ' || *p == '\t' ||
                     *p == '\n' || *p == '\r'))
        return NULL;
    return p;
}

static const char *skip_value(const char *p, const char *end, int depth);

static const char *scan_value(const char *p, const char *end, Token *tok, int depth) {
    p = ws(p, end);
    if (p >= end)
        return NULL;
    char c = *p;
    if (c == '"')
        return scan_string(p, end, tok);
    if (c == '-' || (c >= '0' && c <= '9')) {
        const char *s = p;
        p = scan_number(p, end);
        if (p == NULL)
            return NULL;
        tok->type = T_NUMBER;
        tok->start = s;
        tok->len = p - s;
        tok->escaped = 0;
        return p;
    }
    tok->start = p;
    tok->escaped = 0;
    if (end - p >= 4 && memcmp(p, "true", 4) == 0) {
        tok->type = T_TRUE;
        tok->len = 4;
        return p + 4;
    }
    if (end - p >= 5 && memcmp(p, "false", 5) == 0) {
        tok->type = T_FALSE;
        tok->len = 5;
        return p + 5;
    }
    if (end - p >= 4 && memcmp(p, "null", 4) == 0) {
        tok->type = T_NULL;
        tok->len = 4;
        return p + 4;
    }
    if (c == '{' || c == '[') {
        const char *after = skip_value(p, end, depth);
        tok->type = T_OTHER;
        tok->len = after ? after - p : 0;
        return after;
    }
    return NULL;
}

/* An object member's name and its ':'; the position of its value, or NULL. */
static inline const char *member_name(const char *p, const char *end, Token *name) {
    p = ws(p, end);
    if (p >= end || *p != '"')
        return NULL;
    p = scan_string(p, end, name);
    if (p == NULL)
        return NULL;
    p = ws(p, end);
    if (p >= end || *p != ':')
        return NULL;
    return p + 1;
}

/* What follows a value inside brackets closed by `close`: SEP_MORE after a ',', SEP_END
 * after `close` (*pp moves past either), SEP_BAD for anything else. */
enum { SEP_BAD = -1, SEP_END = 0, SEP_MORE = 1 };

static inline int separator(const char **pp, const char *end, char close) {
    const char *p = ws(*pp, end);
    if (p >= end || (*p != ',' && *p != close))
        return SEP_BAD;
    *pp = p + 1;
    return *p == ',' ? SEP_MORE : SEP_END;
}

static const char *skip_value(const char *p, const char *end, int depth) {
    Token tok;
    p = ws(p, end);
    if (p >= end || depth > 32)
        return NULL;
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        int object = *p == '{';
        p = ws(p + 1, end);
        if (p < end && *p == close)
            return p + 1;
        for (;;) {
            if (object && (p = member_name(p, end, &tok)) == NULL)
                return NULL;
            p = skip_value(p, end, depth + 1);
            if (p == NULL)
                return NULL;
            int sep = separator(&p, end, close);
            if (sep != SEP_MORE)
                return sep == SEP_END ? p : NULL;
        }
    }
    return scan_value(p, end, &tok, depth);
}

static inline int token_is(const Token *t, const char *s, Py_ssize_t n) {
    return t->len == n && memcmp(t->start, s, n) == 0;
}

static const char *scan_row(const char *p, const char *end, const Table *table, Row *row) {
    Token key, name, value;
    row->present = 1;
    row->nnames = 0;
    memset(row->have, 0, sizeof(int) * table->ncols);
    p = ws(p, end);
    if (p >= end || *p != '[')
        return NULL;
    p = ws(p + 1, end);
    if (p < end && *p == ']')
        return p + 1;
    for (;;) {
        p = ws(p, end);
        if (p >= end || *p != '{')
            return NULL;
        p = ws(p + 1, end);
        int got_name = 0, got_value = 0;
        if (p < end && *p == '}') {
            p++;
        } else {
            for (;;) {
                p = member_name(p, end, &key);
                if (p == NULL)
                    return NULL;
                if (token_is(&key, "name", 4)) {
                    if (got_name)
                        return NULL; /* a repeated member: decline, whoever would win */
                    p = scan_value(p, end, &name, 1);
                    if (p == NULL || name.type != T_STRING || name.escaped)
                        return NULL;
                    got_name = 1;
                } else if (token_is(&key, "value", 5)) {
                    if (got_value)
                        return NULL;
                    p = scan_value(p, end, &value, 1);
                    if (p == NULL)
                        return NULL;
                    got_value = 1;
                } else {
                    p = skip_value(p, end, 1);
                    if (p == NULL)
                        return NULL;
                }
                int sep = separator(&p, end, '}');
                if (sep == SEP_BAD)
                    return NULL;
                if (sep == SEP_END)
                    break;
            }
        }
        if (!got_name || row->nnames >= MAX_ROW_COLS)
            return NULL;
        row->names[row->nnames++] = name;
        for (int i = 0; i < table->ncols; i++) {
            if (table->cols[i].len == name.len &&
                memcmp(table->cols[i].data, name.start, name.len) == 0) {
                /* a duplicate name: the last one wins, as in a dict */
                row->have[i] = got_value;
                if (got_value)
                    row->values[i] = value;
            }
        }
        int sep = separator(&p, end, ']');
        if (sep != SEP_MORE)
            return sep == SEP_END ? p : NULL;
    }
}

/* Every name of `old` appears in `new` (both in attribute order, so a merge walk). */
static int names_subset(const Row *old, const Row *new) {
    int j = 0;
    for (int i = 0; i < old->nnames; i++) {
        const Token *a = &old->names[i];
        while (j < new->nnames &&
               !(new->names[j].len == a->len && memcmp(new->names[j].start, a->start, a->len) == 0))
            j++;
        if (j == new->nnames)
            return 0;
        j++;
    }
    return 1;
}

/* ---------------------------------------------------------------------------------- */
/* Rendering keys, as fastpath.compile_renderer does over orjson's values.             */

/* Append one value's text; 0 = declined (NULL, absent, float, big number, odd escape). */
static int render_value(Buffer *out, const Token *v) {
    switch (v->type) {
    case T_STRING:
        if (buffer_reserve(out, v->len) < 0)
            return -1;
        if (!v->escaped) {
            memcpy(out->data + out->len, v->start, v->len);
            out->len += v->len;
            return 1;
        }
        for (Py_ssize_t i = 0; i < v->len; i++) {
            char c = v->start[i];
            if (c == '\\') {
                if (++i >= v->len)
                    return 0;
                c = v->start[i];
                if (c != '"' && c != '\\' && c != '/')
                    return 0; /* \n \t \uXXXX ...: never a valid ASCII key byte here */
            }
            out->data[out->len++] = c;
        }
        return 1;
    case T_NUMBER: {
        /* orjson: an integer literal is a Python int whose str() is the literal itself
         * (JSON forbids leading zeros); anything else is (or may be) a float. */
        Py_ssize_t digits = v->len, i = 0;
        if (v->start[0] == '-') {
            i = 1;
            digits--;
        }
        if (digits < 1 || digits > 18)
            return 0;
        if (digits == 1 && i == 1 && v->start[1] == '0')
            return 0; /* -0 is 0 */
        for (; i < v->len; i++)
            if (v->start[i] < '0' || v->start[i] > '9')
                return 0;
        if (buffer_reserve(out, v->len) < 0)
            return -1;
        memcpy(out->data + out->len, v->start, v->len);
        out->len += v->len;
        return 1;
    }
    case T_PG_ASIS:
        /* every type Python keeps as its text */
        if (buffer_reserve(out, v->len) < 0)
            return -1;
        memcpy(out->data + out->len, v->start, v->len);
        out->len += v->len;
        return 1;
    case T_PG_INT:
    case T_PG_NUMBER: {
        /* int2/4/8, oid, float and numeric: an integer literal is an int in Python, whose
         * str() is the literal when it has no leading zero; anything else is a float or
         * Decimal (or None): the general path decides */
        Py_ssize_t i = v->len > 0 && v->start[0] == '-' ? 1 : 0;
        if (i >= v->len || (v->start[i] == '0' && (v->len - i > 1 || i == 1)))
            return 0; /* empty, leading zero, or -0 (which is 0) */
        for (Py_ssize_t j = i; j < v->len; j++)
            if (v->start[j] < '0' || v->start[j] > '9')
                return 0;
        if (buffer_reserve(out, v->len) < 0)
            return -1;
        memcpy(out->data + out->len, v->start, v->len);
        out->len += v->len;
        return 1;
    }
    case T_PG_BYTEA: {
        /* "\x..." without its "\x", as wal2json prints it */
        Py_ssize_t n = v->len > 2 ? v->len - 2 : 0;
        if (buffer_reserve(out, n) < 0)
            return -1;
        memcpy(out->data + out->len, v->start + (v->len - n), n);
        out->len += n;
        return 1;
    }
    case T_PG_BOOL:
    case T_TRUE:
    case T_FALSE: {
        int truth = v->type == T_TRUE || (v->type == T_PG_BOOL && v->len == 1 && v->start[0] == 't');
        const char *s = truth ? "True" : "False";
        Py_ssize_t n = truth ? 4 : 5;
        if (buffer_reserve(out, n) < 0)
            return -1;
        memcpy(out->data + out->len, s, n);
        out->len += n;
        return 1;
    }
    default:
        return 0;
    }
}

typedef struct {
    int pool;
    Py_ssize_t start, len; /* in the decoder's scratch buffer */
} Key;

/* Render every key of one change into scratch; 1 = ok, 0 = declined, -1 = error. */
static int render_keys(Decoder *self, const Table *table, const Row *rows[2], int nrows, Key *keys,
                       int *nkeys) {
    Buffer *out = &self->scratch;
    out->len = 0;
    *nkeys = 0;
    for (int t = 0; t < table->ntemplates; t++) {
        const Template *tpl = &table->templates[t];
        for (int r = 0; r < nrows; r++) {
            const Row *row = rows[r];
            Py_ssize_t start = out->len;
            for (int c = 0; c <= tpl->ncols; c++) {
                const Bytes *lit = &tpl->literals[c];
                if (lit->len) {
                    if (buffer_reserve(out, lit->len) < 0)
                        return -1;
                    memcpy(out->data + out->len, lit->data, lit->len);
                    out->len += lit->len;
                }
                if (c < tpl->ncols) {
                    int col = tpl->cols[c];
                    if (!row->have[col])
                        return 0;
                    int ok = render_value(out, &row->values[col]);
                    if (ok <= 0)
                        return ok;
                }
            }
            Py_ssize_t len = out->len - start;
            /* (pool, key) already produced by this change: one delete serves */
            int dup = 0;
            for (int k = 0; k < *nkeys; k++) {
                if (keys[k].pool == tpl->pool && keys[k].len == len &&
                    memcmp(out->data + keys[k].start, out->data + start, len) == 0) {
                    dup = 1;
                    break;
                }
            }
            if (dup) {
                out->len = start;
                continue;
            }
            if (len > MAX_KEY_BYTES || len == 0)
                return 0;
            for (Py_ssize_t i = start; i < out->len; i++) {
                unsigned char b = (unsigned char)out->data[i];
                if (b < 0x21 || b > 0x7e)
                    return 0; /* space, control or non-ASCII: the general path decides */
            }
            if (*nkeys >= MAX_KEYS)
                return 0;
            keys[*nkeys].pool = tpl->pool;
            keys[*nkeys].start = start;
            keys[*nkeys].len = len;
            (*nkeys)++;
        }
    }
    return 1;
}

static int append_delete(Buffer *b, const char *key, Py_ssize_t len) {
    if (buffer_reserve(b, len + 9) < 0)
        return -1;
    char *p = b->data + b->len;
    memcpy(p, "delete ", 7);
    memcpy(p + 7, key, len);
    p[7 + len] = '\r';
    p[8 + len] = '\n';
    b->len += len + 9;
    b->count++;
    return 0;
}

static int place_keys(Decoder *self, const Key *keys, int nkeys) {
    for (int k = 0; k < nkeys; k++) {
        const Pool *pool = &self->pools[keys[k].pool];
        const char *key = self->scratch.data + keys[k].start;
        Py_ssize_t len = keys[k].len;
        if (pool->placer.mode == PLACE_BROADCAST) {
            for (int n = 0; n < pool->placer.nnodes; n++)
                if (append_delete(&self->slots[pool->slots[n]], key, len) < 0)
                    return -1;
            continue;
        }
        int node = place_key(&pool->placer, (const unsigned char *)key, len);
        if (node < 0 || append_delete(&self->slots[pool->slots[node]], key, len) < 0)
            return -1;
    }
    return 0;
}

/* One row change of either plugin, its rows chosen: render its keys and queue them on
   their nodes. 0 = consumed, 1 = declined (a key C cannot build: Python plans the
   record), -1 = error (exception set). */
static int emit_row(Decoder *self, Table *table, const Row *rows[2], int nrows, int kind,
                    unsigned long long end) {
    Key keys[MAX_KEYS];
    int nkeys = 0;
    int ok = render_keys(self, table, rows, nrows, keys, &nkeys);
    if (ok < 0)
        return -1;
    if (ok == 0)
        return 1;
    if (place_keys(self, keys, nkeys) < 0)
        return -1;
    table->counts[kind == KIND_INSERT ? 0 : kind == KIND_UPDATE ? 1 : 2]++;
    if (nkeys)
        self->open_work = 1;
    if (end > self->wal_end)
        self->wal_end = end;
    return 0;
}


/* ---------------------------------------------------------------------------------- */
/* Commit timestamps: "2026-11-24 05:05:01.307451+00" (the session runs in UTC).       */

static long long days_from_civil(long long y, unsigned m, unsigned d) {
    y -= m <= 2;
    const long long era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

static int digits_at(const char *p, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return 0;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 1;
}

static double parse_timestamp(const char *s, Py_ssize_t n) {
    int y, mo, d, h, mi, sec;
    if (n < 19 || s[4] != '-' || s[7] != '-' || (s[10] != ' ' && s[10] != 'T') || s[13] != ':' ||
        s[16] != ':')
        return NAN;
    if (!digits_at(s, 4, &y) || !digits_at(s + 5, 2, &mo) || !digits_at(s + 8, 2, &d) ||
        !digits_at(s + 11, 2, &h) || !digits_at(s + 14, 2, &mi) || !digits_at(s + 17, 2, &sec))
        return NAN;
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && leap) || h > 23 ||
        mi > 59 || sec > 59)
        return NAN;
    Py_ssize_t i = 19;
    double frac = 0.0, scale = 0.1;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            frac += (s[i] - '0') * scale;
            scale /= 10;
            i++;
        }
    }
    long offset = 0;
    if (i < n && (s[i] == '+' || s[i] == '-')) {
        int sign = s[i] == '-' ? -1 : 1, oh = 0, om = 0;
        i++;
        if (i + 2 > n || !digits_at(s + i, 2, &oh))
            return NAN;
        i += 2;
        if (i < n && s[i] == ':')
            i++;
        if (i + 2 <= n && digits_at(s + i, 2, &om))
            i += 2;
        if (oh > 23 || om > 59)
            return NAN;
        offset = sign * (oh * 3600L + om * 60L);
    } else {
        return NAN; /* no zone: unknown */
    }
    if (i != n)
        return NAN;
    long long days = days_from_civil(y, (unsigned)mo, (unsigned)d);
    return (double)(days * 86400LL + h * 3600LL + mi * 60LL + sec - offset) + frac;
}

/* ---------------------------------------------------------------------------------- */
/* feed(): one CopyData message.                                                       */

static inline unsigned long long be64(const unsigned char *p) {
    unsigned long long v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static int record_commit(Decoder *self, unsigned long long lsn, double when) {
    if (self->ncommits == self->commits_cap) {
        Py_ssize_t cap = self->commits_cap ? self->commits_cap * 2 : 64;
        unsigned long long *lsns = PyMem_Realloc(self->commit_lsns, cap * sizeof(*lsns));
        if (lsns == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->commit_lsns = lsns;
        double *times = PyMem_Realloc(self->commit_times, cap * sizeof(*times));
        if (times == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->commit_times = times;
        self->commits_cap = cap;
    }
    self->commit_lsns[self->ncommits] = lsn;
    self->commit_times[self->ncommits] = when;
    self->ncommits++;
    self->open_work = 0;
    return 0;
}

/* ---------------------------------------------------------------------------------- */
/* pgoutput protocol 1 (the "Logical Replication Message Formats" of the PostgreSQL     */
/* docs): the same answers as sources/pgoutput.py + plan(), or declined.               */

static inline uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void pgrel_free(PgRel *rel) {
    PyMem_Free(rel->map);
    PyMem_Free(rel->cls);
    PyMem_Free(rel->ident);
    rel->map = NULL;
    rel->cls = NULL;
    rel->ident = NULL;
}

static PgRel *pgrel_find(Decoder *self, uint32_t oid) {
    for (int i = 0; i < self->nrels; i++)
        if (self->rels[i].oid == oid)
            return &self->rels[i];
    return NULL;
}

/* A C string at *pp (before end): its start and length; *pp moves past the NUL. */
static int pg_cstring(const unsigned char **pp, const unsigned char *end, const char **s,
                      Py_ssize_t *n) {
    const unsigned char *nul = memchr(*pp, 0, end - *pp);
    if (nul == NULL)
        return 0;
    *s = (const char *)*pp;
    *n = nul - *pp;
    *pp = nul + 1;
    return 1;
}

static unsigned char pg_class_of(uint32_t type_oid) {
    switch (type_oid) {
    case 16:
        return T_PG_BOOL;
    case 17:
        return T_PG_BYTEA;
    case 700:
    case 701:
    case 1700:
        return T_PG_NUMBER;
    case 20:
    case 21:
    case 23:
    case 26:
        return T_PG_INT;
    default: /* every type kept as text */
        return T_PG_ASIS;
    }
}

/* An R message (p after the 'R'): cache it, replacing any earlier one of the relation.
 * 0 = done (cached, or a malformed message that leaves the relation unknown), -1 = error. */
static int pg_relation(Decoder *self, const unsigned char *p, const unsigned char *end) {
    if (end - p < 4)
        return 0;
    uint32_t oid = be32(p);
    p += 4;
    PgRel *rel = pgrel_find(self, oid);
    if (rel == NULL) {
        if (self->nrels == self->rels_cap) {
            int cap = self->rels_cap ? self->rels_cap * 2 : 16;
            PgRel *rels = PyMem_Realloc(self->rels, cap * sizeof(PgRel));
            if (rels == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            self->rels = rels;
            self->rels_cap = cap;
        }
        rel = &self->rels[self->nrels++];
        memset(rel, 0, sizeof(*rel));
        rel->oid = oid;
    }
    pgrel_free(rel);
    rel->table = -1; /* unknown until the whole message has been read */
    rel->ncols = 0;
    rel->nident = 0;
    const char *ns, *name;
    Py_ssize_t nslen, namelen;
    if (!pg_cstring(&p, end, &ns, &nslen) || !pg_cstring(&p, end, &name, &namelen))
        return 0;
    if (nslen == 0) {
        ns = "pg_catalog";
        nslen = 10;
    }
    if (end - p < 3)
        return 0;
    p++; /* replica identity setting: the column flags say which columns */
    int ncols = (p[0] << 8) | p[1];
    p += 2;
    if (ncols > MAX_ROW_COLS)
        return 0;
    int table = -1;
    for (int t = 0; t < self->ntables; t++) {
        const Table *tb = &self->tables[t];
        if (tb->schema.len == nslen && tb->table.len == namelen &&
            memcmp(tb->schema.data, ns, nslen) == 0 && memcmp(tb->table.data, name, namelen) == 0) {
            table = t;
            break;
        }
    }
    rel->map = PyMem_Calloc(ncols ? ncols : 1, sizeof(short));
    rel->cls = PyMem_Calloc(ncols ? ncols : 1, 1);
    rel->ident = PyMem_Calloc(ncols ? ncols : 1, 1);
    if (rel->map == NULL || rel->cls == NULL || rel->ident == NULL) {
        pgrel_free(rel);
        PyErr_NoMemory();
        return -1;
    }
    for (int i = 0; i < ncols; i++) {
        if (p >= end)
            return 0;
        unsigned char flags = *p++;
        const char *col;
        Py_ssize_t collen;
        if (!pg_cstring(&p, end, &col, &collen) || end - p < 8)
            return 0;
        rel->cls[i] = pg_class_of(be32(p));
        p += 8; /* type oid, typmod */
        rel->ident[i] = flags & 1;
        rel->nident += flags & 1;
        rel->map[i] = -1;
        if (table >= 0) {
            const Table *tb = &self->tables[table];
            for (int c = 0; c < tb->ncols; c++)
                if (tb->cols[c].len == collen && memcmp(tb->cols[c].data, col, collen) == 0)
                    rel->map[i] = (short)c;
        }
    }
    if (p != end)
        return 0;
    rel->ncols = ncols;
    rel->table = table;
    return 0;
}

/* Whether Python's decoder reads this text (else it raises, and C must decline): valid
 * UTF-8, and for numeric types a literal both int()/float()/Decimal() accept (stricter
 * than Python is safe: C declines more). */
static int pg_readable(unsigned char cls, const unsigned char *s, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n;) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        Py_ssize_t k = utf8_sequence(s + i, s + n);
        if (k == 0)
            return 0;
        i += k;
    }
    if (cls != T_PG_INT && cls != T_PG_NUMBER)
        return 1;
    if (cls == T_PG_NUMBER) {
        static const char *special[] = {"nan", "infinity", "-infinity"};
        for (int w = 0; w < 3; w++) {
            Py_ssize_t len = (Py_ssize_t)strlen(special[w]);
            if (n >= len) {
                Py_ssize_t j = 0;
                while (j < len && (s[j] | 0x20) == (unsigned char)special[w][j])
                    j++;
                if (j == len)
                    return 1; /* NaN, ±Infinity: None in Python */
            }
        }
    }
    Py_ssize_t i = n > 0 && s[0] == '-' ? 1 : 0, digits = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++, digits++;
    if (digits == 0)
        return 0;
    if (cls == T_PG_INT)
        return i == n;
    if (i < n && s[i] == '.') {
        i++;
        digits = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++, digits++;
        if (digits == 0)
            return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        digits = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++, digits++;
        if (digits == 0)
            return 0;
    }
    return i == n;
}

/* TupleData at *pp into row (identity_only: a K tuple, whose other columns are NULL
 * placeholders). 1 = read, 0 = declined ('u' unchanged TOAST: Python merges; 'b'). */
static int pg_tuple(const unsigned char **pp, const unsigned char *end, const PgRel *rel,
                    const Table *table, Row *row, int identity_only) {
    const unsigned char *p = *pp;
    if (end - p < 2)
        return 0;
    int n = (p[0] << 8) | p[1];
    p += 2;
    if (n != rel->ncols)
        return 0;
    row->present = 1;
    row->nnames = 0;
    memset(row->have, 0, sizeof(int) * table->ncols);
    for (int i = 0; i < n; i++) {
        if (p >= end)
            return 0;
        unsigned char kind = *p++;
        int col = rel->map[i];
        int keep = col >= 0 && (!identity_only || rel->ident[i]);
        if (kind == 't') {
            if (end - p < 4)
                return 0;
            uint32_t len = be32(p);
            p += 4;
            if ((size_t)(end - p) < len || !pg_readable(rel->cls[i], p, len))
                return 0;
            if (keep) {
                Token *v = &row->values[col];
                v->type = rel->cls[i];
                v->start = (const char *)p;
                v->len = len;
                v->escaped = 0;
                row->have[col] = 1;
            }
            p += len;
        } else if (kind == 'n') {
            if (keep) {
                row->values[col].type = T_NULL;
                row->have[col] = 1;
            }
        } else {
            return 0;
        }
    }
    *pp = p;
    return 1;
}

/* One pgoutput XLogData payload (p: its first byte). 0 = consumed, 1 = declined, -1 = error. */
static int feed_pgoutput(Decoder *self, const unsigned char *p, const unsigned char *stop,
                         unsigned long long end) {
    if (p >= stop)
        return 1;
    unsigned char kind = *p++;
    if (kind == 'B') {
        if (stop - p != 20)
            return 1;
        self->in_txn = 1;
        if (end > self->wal_end)
            self->wal_end = end;
        return 0;
    }
    if (kind == 'C') {
        if (stop - p != 25)
            return 1;
        unsigned long long end_lsn = be64(p + 9);
        double when = (double)(long long)be64(p + 17) / 1e6 + 946684800.0;
        if (end > self->wal_end)
            self->wal_end = end;
        self->in_txn = 0;
        return record_commit(self, end_lsn, when) < 0 ? -1 : 0;
    }
    if (kind == 'R')
        return pg_relation(self, p, stop) < 0 ? -1 : 1;
    if (kind != 'I' && kind != 'U' && kind != 'D')
        return 1;
    if (stop - p < 5)
        return 1;
    const PgRel *rel = pgrel_find(self, be32(p));
    p += 4;
    if (rel == NULL || rel->table < 0)
        return 1;
    Table *table = &self->tables[rel->table];
    int k = kind == 'I' ? KIND_INSERT : kind == 'U' ? KIND_UPDATE : KIND_DELETE;
    if (!(table->kinds & k))
        return 1;
    Row *new_row = &self->rows[0], *old_row = &self->rows[1];
    new_row->present = 0;
    old_row->present = 0;
    unsigned char marker = *p++;
    if (kind != 'I' && (marker == 'K' || marker == 'O')) {
        if (!pg_tuple(&p, stop, rel, table, old_row, marker == 'K'))
            return 1;
        if (kind == 'U') {
            if (p >= stop)
                return 1;
            marker = *p++;
        }
    }
    if (kind == 'D') {
        if (!old_row->present)
            return 1;
    } else if (marker != 'N' || !pg_tuple(&p, stop, rel, table, new_row, 0)) {
        return 1;
    }
    if (p != stop)
        return 1;
    if (kind == 'U' && !old_row->present && rel->nident) {
        /* the identity did not change: the old row is its columns of the new one */
        old_row->present = 1;
        memset(old_row->have, 0, sizeof(int) * table->ncols);
        for (int i = 0; i < rel->ncols; i++) {
            int col = rel->map[i];
            if (col >= 0 && rel->ident[i] && new_row->have[col]) {
                old_row->have[col] = 1;
                old_row->values[col] = new_row->values[col];
            }
        }
    }
    const Row *rows[2];
    int nrows = 0;
    if (kind != 'I' && old_row->present)
        rows[nrows++] = old_row;
    if (kind != 'D')
        rows[nrows++] = new_row;
    return emit_row(self, table, rows, nrows, k, end);
}

/* 0 = consumed, 1 = declined, -1 = error (exception set). */
static int feed_message(Decoder *self, const unsigned char *msg, Py_ssize_t n) {
    if (n >= 18 && msg[0] == 'k') {
        unsigned long long end = be64(msg + 1);
        if (end > self->wal_end)
            self->wal_end = end;
        if (msg[17])
            self->reply_requested = 1;
        return 0;
    }
    if (n < 25 || msg[0] != 'w')
        return 1;
    unsigned long long data_start = be64(msg + 1), end = be64(msg + 9);
    self->position = data_start;
    if (self->pgoutput)
        return feed_pgoutput(self, msg + 25, msg + n, end);
    const char *p = (const char *)msg + 25, *stop = (const char *)msg + n;
    Token key, tok;
    int seen_xid = 0;
    Token action = {0}, schema = {0}, tname = {0}, stamp = {0};
    const Table *table = NULL;
    Row *new_row = &self->rows[0], *old_row = &self->rows[1];
    new_row->present = 0;
    old_row->present = 0;

    p = ws(p, stop);
    if (p >= stop || *p != '{')
        return 1;
    p = ws(p + 1, stop);
    for (;;) {
        p = member_name(p, stop, &key);
        if (p == NULL)
            return 1;
        /* A repeated member is declined: JSON parsers disagree on which one wins. */
        if (token_is(&key, "action", 6)) {
            if (action.start != NULL)
                return 1;
            p = scan_value(p, stop, &action, 0);
            if (p == NULL || action.type != T_STRING || action.len != 1)
                return 1;
            char a = action.start[0];
            if (a != 'B' && a != 'C' && a != 'I' && a != 'U' && a != 'D')
                return 1;
        } else if (token_is(&key, "timestamp", 9)) {
            if (stamp.start != NULL)
                return 1;
            p = scan_value(p, stop, &stamp, 0);
            if (p == NULL || stamp.type != T_STRING)
                return 1;
        } else if (token_is(&key, "xid", 3)) {
            if (seen_xid++)
                return 1;
            p = scan_value(p, stop, &tok, 0);
            if (p == NULL || tok.type != T_NUMBER)
                return 1;
            for (Py_ssize_t i = 0; i < tok.len; i++)
                if (tok.start[i] < '0' || tok.start[i] > '9')
                    return 1;
        } else if (token_is(&key, "schema", 6)) {
            if (schema.start != NULL)
                return 1;
            p = scan_value(p, stop, &schema, 0);
            if (p == NULL || schema.type != T_STRING || schema.escaped)
                return 1;
        } else if (token_is(&key, "table", 5)) {
            if (tname.start != NULL)
                return 1;
            p = scan_value(p, stop, &tname, 0);
            if (p == NULL || tname.type != T_STRING || tname.escaped)
                return 1;
        } else if (token_is(&key, "columns", 7) || token_is(&key, "identity", 8)) {
            if (table == NULL) {
                if (action.start == NULL || schema.start == NULL || tname.start == NULL)
                    return 1; /* wal2json names the table first; otherwise decline */
                for (int i = 0; i < self->ntables; i++) {
                    const Table *t = &self->tables[i];
                    if (t->schema.len == schema.len && t->table.len == tname.len &&
                        memcmp(t->schema.data, schema.start, schema.len) == 0 &&
                        memcmp(t->table.data, tname.start, tname.len) == 0) {
                        table = t;
                        break;
                    }
                }
                if (table == NULL)
                    return 1;
            }
            Row *row = key.len == 7 ? new_row : old_row;
            if (row->present)
                return 1;
            p = scan_row(p, stop, table, row);
            if (p == NULL)
                return 1;
        } else {
            p = skip_value(p, stop, 0);
            if (p == NULL)
                return 1;
        }
        int sep = separator(&p, stop, '}');
        if (sep == SEP_BAD)
            return 1;
        if (sep == SEP_END)
            break;
    }
    if (ws(p, stop) != stop || action.start == NULL)
        return 1;
    char a = action.start[0];
    if (a == 'B') {
        self->in_txn = 1;
        if (end > self->wal_end)
            self->wal_end = end;
        return 0;
    }
    if (a == 'C') {
        double when = NAN;
        if (stamp.start != NULL && stamp.type == T_STRING)
            when = parse_timestamp(stamp.start, stamp.len);
        if (end > self->wal_end)
            self->wal_end = end;
        self->in_txn = 0;
        return record_commit(self, data_start, when) < 0 ? -1 : 0;
    }
    if (table == NULL) {
        /* no row at all: find the table for the kinds check below anyway */
        return 1;
    }
    int kind = a == 'I' ? KIND_INSERT : a == 'U' ? KIND_UPDATE : KIND_DELETE;
    if (!(table->kinds & kind))
        return 1;
    const Row *rows[2];
    int nrows;
    if (kind == KIND_INSERT) {
        if (!new_row->present)
            return 1;
        rows[0] = new_row;
        nrows = 1;
    } else if (kind == KIND_DELETE) {
        if (!old_row->present)
            return 1;
        rows[0] = old_row;
        nrows = 1;
    } else {
        if (!new_row->present || !old_row->present)
            return 1;
        if (!names_subset(old_row, new_row))
            return 1; /* unchanged TOAST columns: the general path merges rows */
        rows[0] = old_row;
        rows[1] = new_row;
        nrows = 2;
    }
    return emit_row(self, (Table *)table, rows, nrows, kind, end);
}

static int check_ready(Decoder *self) {
    if (self->rows == NULL) {
        PyErr_SetString(PyExc_ValueError, "Decoder not initialised");
        return -1;
    }
    return 0;
}

static PyObject *Decoder_feed(Decoder *self, PyObject *arg) {
    Py_buffer view;
    if (check_ready(self) < 0)
        return NULL;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int r = feed_message(self, view.buf, view.len);
    PyBuffer_Release(&view);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

/* feed_many(messages) -> index of the first declined message, or len(messages). */
static PyObject *Decoder_feed_many(Decoder *self, PyObject *args) {
    PyObject *seq;
    Py_ssize_t start = 0;
    if (!PyArg_ParseTuple(args, "O!|n", &PyList_Type, &seq, &start) || check_ready(self) < 0)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(seq);
    for (Py_ssize_t i = start; i < n; i++) {
        Py_buffer view;
        if (PyObject_GetBuffer(PyList_GET_ITEM(seq, i), &view, PyBUF_SIMPLE) < 0)
            return NULL;
        int r = feed_message(self, view.buf, view.len);
        PyBuffer_Release(&view);
        if (r < 0)
            return NULL;
        if (r)
            return PyLong_FromSsize_t(i);
    }
    return PyLong_FromSsize_t(n);
}

/* harvest() -> (requests, commits, open)
 *   requests: [(slot, bytes, count)] for every (pool, node) with requests
 *   commits:  [(end_lsn, commit_time or None)] in order
 *   open:     keys were appended after the last commit (a transaction still streaming) */
static PyObject *Decoder_harvest(Decoder *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *requests = PyList_New(0), *commits = NULL, *result = NULL;
    if (requests == NULL)
        return NULL;
    for (int s = 0; s < self->nslots; s++) {
        Buffer *b = &self->slots[s];
        if (!b->count)
            continue;
        PyObject *item = Py_BuildValue("(iy#n)", s, b->data, b->len, b->count);
        if (item == NULL || PyList_Append(requests, item) < 0) {
            Py_XDECREF(item);
            goto fail;
        }
        Py_DECREF(item);
        b->len = 0;
        b->count = 0;
    }
    commits = PyList_New(self->ncommits);
    if (commits == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < self->ncommits; i++) {
        PyObject *when;
        if (isnan(self->commit_times[i])) {
            when = Py_NewRef(Py_None);
        } else {
            when = PyFloat_FromDouble(self->commit_times[i]);
            if (when == NULL)
                goto fail;
        }
        PyObject *item = Py_BuildValue("(KN)", self->commit_lsns[i], when);
        if (item == NULL)
            goto fail;
        PyList_SET_ITEM(commits, i, item);
    }
    self->ncommits = 0;
    result = Py_BuildValue("(NNO)", requests, commits, self->open_work ? Py_True : Py_False);
    self->open_work = 0;
    return result;
fail:
    Py_XDECREF(requests);
    Py_XDECREF(commits);
    return NULL;
}

/* counts() -> [(table index, "insert"|"update"|"delete", n)] since the last call */
static PyObject *Decoder_counts(Decoder *self, PyObject *Py_UNUSED(ignored)) {
    static const char *names[3] = {"insert", "update", "delete"};
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (int t = 0; t < self->ntables; t++) {
        for (int k = 0; k < 3; k++) {
            long long n = self->tables[t].counts[k];
            if (!n)
                continue;
            PyObject *item = Py_BuildValue("(isL)", t, names[k], n);
            if (item == NULL || PyList_Append(out, item) < 0) {
                Py_XDECREF(item);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(item);
            self->tables[t].counts[k] = 0;
        }
    }
    return out;
}

/* take_reply_requested() -> bool, and clears it */
static PyObject *Decoder_take_reply_requested(Decoder *self, PyObject *Py_UNUSED(ignored)) {
    int r = self->reply_requested;
    self->reply_requested = 0;
    return PyBool_FromLong(r);
}

static PyObject *Decoder_get_wal_end(Decoder *self, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(self->wal_end);
}

/* ---------------------------------------------------------------------------------- */
/* Construction: Decoder(tables, pools, nslots)                                        */
/*   tables: [(schema: bytes, table: bytes, kinds: int, columns: [bytes],             */
/*             templates: [(pool: int, literals: [bytes], columns: [int])])]          */
/*   pools:  [(mode: int, [(prefix: bytes, name: bytes, slot: int)],                  */
/*             key_hash: int = 0, points: [int] = [], table: [int] = [])]              */

static int copy_bytes(PyObject *obj, Bytes *out) {
    char *data;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(obj, &data, &len) < 0)
        return -1;
    out->data = PyMem_Malloc(len ? len : 1);
    if (out->data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(out->data, data, len);
    out->len = len;
    return 0;
}

static void Decoder_free_data(Decoder *self) {
    for (int t = 0; t < self->ntables; t++) {
        Table *table = &self->tables[t];
        PyMem_Free(table->schema.data);
        PyMem_Free(table->table.data);
        for (int c = 0; c < table->ncols; c++)
            PyMem_Free(table->cols[c].data);
        for (int i = 0; i < table->ntemplates; i++) {
            Template *tpl = &table->templates[i];
            if (tpl->literals)
                for (int c = 0; c <= tpl->ncols; c++)
                    PyMem_Free(tpl->literals[c].data);
            PyMem_Free(tpl->literals);
            PyMem_Free(tpl->cols);
        }
        PyMem_Free(table->templates);
    }
    PyMem_Free(self->tables);
    self->tables = NULL;
    self->ntables = 0;
    for (int p = 0; p < self->npools; p++) {
        placer_free(&self->pools[p].placer);
        PyMem_Free(self->pools[p].slots);
    }
    PyMem_Free(self->pools);
    self->pools = NULL;
    self->npools = 0;
    for (int s = 0; s < self->nslots; s++)
        PyMem_Free(self->slots[s].data);
    PyMem_Free(self->slots);
    self->slots = NULL;
    self->nslots = 0;
    PyMem_Free(self->commit_lsns);
    PyMem_Free(self->commit_times);
    self->commit_lsns = NULL;
    self->commit_times = NULL;
    PyMem_Free(self->scratch.data);
    self->scratch.data = NULL;
    PyMem_Free(self->rows);
    self->rows = NULL;
    for (int i = 0; i < self->nrels; i++)
        pgrel_free(&self->rels[i]);
    PyMem_Free(self->rels);
    self->rels = NULL;
    self->nrels = 0;
    self->rels_cap = 0;
}

static int build_template(PyObject *spec, Template *tpl, int ntablecols, int npools) {
    PyObject *literals, *cols;
    if (!PyArg_ParseTuple(spec, "iO!O!", &tpl->pool, &PyList_Type, &literals, &PyList_Type, &cols))
        return -1;
    Py_ssize_t ncols = PyList_GET_SIZE(cols);
    if (PyList_GET_SIZE(literals) != ncols + 1 || tpl->pool < 0 || tpl->pool >= npools) {
        PyErr_SetString(PyExc_ValueError, "template: literals must be one more than columns");
        return -1;
    }
    tpl->literals = PyMem_Calloc(ncols + 1, sizeof(Bytes));
    tpl->cols = PyMem_Calloc(ncols ? ncols : 1, sizeof(int));
    if (tpl->literals == NULL || tpl->cols == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    tpl->ncols = -1; /* until every literal is copied, for Decoder_free_data */
    for (Py_ssize_t c = 0; c <= ncols; c++) {
        if (copy_bytes(PyList_GET_ITEM(literals, c), &tpl->literals[c]) < 0) {
            tpl->ncols = (int)c - 1;
            return -1;
        }
    }
    tpl->ncols = (int)ncols;
    for (Py_ssize_t c = 0; c < ncols; c++) {
        long col = PyLong_AsLong(PyList_GET_ITEM(cols, c));
        if (col == -1 && PyErr_Occurred())
            return -1;
        if (col < 0 || col >= ntablecols) {
            PyErr_SetString(PyExc_ValueError, "template: column index out of range");
            return -1;
        }
        tpl->cols[c] = (int)col;
    }
    return 0;
}

/* (mode, [(prefix, name, slot)], key_hash=0, points=[], table=[]) -> a Pool */
static int build_pool(PyObject *spec, Pool *pool, int nslots) {
    int mode, hash = KH_NONE;
    PyObject *nodes, *points = NULL, *table = NULL;
    if (!PyArg_ParseTuple(spec, "iO!|iO!O!", &mode, &PyList_Type, &nodes, &hash, &PyList_Type,
                          &points, &PyList_Type, &table))
        return -1;
    Py_ssize_t nnodes = PyList_GET_SIZE(nodes);
    PyObject *prefixes = PyList_New(nnodes), *names = PyList_New(nnodes);
    PyObject *empty = PyList_New(0);
    int rc = -1;
    if (prefixes == NULL || names == NULL || empty == NULL)
        goto done;
    pool->slots = PyMem_Calloc(nnodes ? nnodes : 1, sizeof(int));
    if (pool->slots == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t n = 0; n < nnodes; n++) {
        PyObject *prefix, *name;
        int slot;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(nodes, n), "SSi", &prefix, &name, &slot))
            goto done;
        if (slot < 0 || slot >= nslots) {
            PyErr_SetString(PyExc_ValueError, "node: slot out of range");
            goto done;
        }
        pool->slots[n] = slot;
        PyList_SET_ITEM(prefixes, n, Py_NewRef(prefix));
        PyList_SET_ITEM(names, n, Py_NewRef(name));
    }
    rc = placer_build(&pool->placer, mode, hash, prefixes, names, points ? points : empty,
                      table ? table : empty);
done:
    Py_XDECREF(prefixes);
    Py_XDECREF(names);
    Py_XDECREF(empty);
    return rc;
}

static int Decoder_init(Decoder *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"tables", "pools", "slots", "pgoutput", NULL};
    PyObject *tables, *pools;
    int nslots, pgoutput = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!i|p", kwlist, &PyList_Type, &tables,
                                     &PyList_Type, &pools, &nslots, &pgoutput))
        return -1;
    Decoder_free_data(self);
    self->pgoutput = pgoutput;
    self->rows = PyMem_Calloc(2, sizeof(Row));
    if (self->rows == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->slots = PyMem_Calloc(nslots ? nslots : 1, sizeof(Buffer));
    if (self->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->nslots = nslots;
    Py_ssize_t npools = PyList_GET_SIZE(pools);
    self->pools = PyMem_Calloc(npools ? npools : 1, sizeof(Pool));
    if (self->pools == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t p = 0; p < npools; p++) {
        self->npools = (int)p + 1;
        if (build_pool(PyList_GET_ITEM(pools, p), &self->pools[p], nslots) < 0)
            return -1;
    }
    Py_ssize_t ntables = PyList_GET_SIZE(tables);
    self->tables = PyMem_Calloc(ntables ? ntables : 1, sizeof(Table));
    if (self->tables == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t t = 0; t < ntables; t++) {
        Table *table = &self->tables[t];
        PyObject *schema, *name, *cols, *templates;
        self->ntables = (int)t + 1;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(tables, t), "SSiO!O!", &schema, &name, &table->kinds,
                              &PyList_Type, &cols, &PyList_Type, &templates))
            return -1;
        if (copy_bytes(schema, &table->schema) < 0 || copy_bytes(name, &table->table) < 0)
            return -1;
        Py_ssize_t ncols = PyList_GET_SIZE(cols);
        if (ncols > MAX_COLS) {
            PyErr_SetString(PyExc_ValueError, "too many columns in one table's templates");
            return -1;
        }
        for (Py_ssize_t c = 0; c < ncols; c++) {
            if (copy_bytes(PyList_GET_ITEM(cols, c), &table->cols[c]) < 0)
                return -1;
            table->ncols = (int)c + 1;
        }
        Py_ssize_t ntemplates = PyList_GET_SIZE(templates);
        table->templates = PyMem_Calloc(ntemplates ? ntemplates : 1, sizeof(Template));
        if (table->templates == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < ntemplates; i++) {
            table->ntemplates = (int)i + 1;
            if (build_template(PyList_GET_ITEM(templates, i), &table->templates[i], table->ncols,
                               self->npools) < 0)
                return -1;
        }
    }
    return 0;
}

static void Decoder_dealloc(Decoder *self) {
    Decoder_free_data(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Decoder_methods[] = {
    {"feed", (PyCFunction)Decoder_feed, METH_O,
     "feed(message) -> True if declined (the caller must process it), else False."},
    {"feed_many", (PyCFunction)Decoder_feed_many, METH_VARARGS,
     "feed_many(messages, start=0) -> index of the first declined message, or len(messages)."},
    {"harvest", (PyCFunction)Decoder_harvest, METH_NOARGS,
     "harvest() -> ([(slot, requests, count)], [(end_lsn, commit_time)], open)."},
    {"counts", (PyCFunction)Decoder_counts, METH_NOARGS,
     "counts() -> [(table index, kind, changes)] consumed since the last call."},
    {"take_reply_requested", (PyCFunction)Decoder_take_reply_requested, METH_NOARGS,
     "Whether a keepalive asked for a reply since the last call."},
    {NULL, NULL, 0, NULL},
};

static PyObject *Decoder_get_position(Decoder *self, void *Py_UNUSED(closure)) {
    return PyLong_FromUnsignedLongLong(self->position);
}

static PyObject *Decoder_get_in_transaction(Decoder *self, void *Py_UNUSED(closure)) {
    return PyBool_FromLong(self->in_txn);
}

static int Decoder_set_in_transaction(Decoder *self, PyObject *value, void *Py_UNUSED(closure)) {
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete in_transaction");
        return -1;
    }
    int truth = PyObject_IsTrue(value);
    if (truth < 0)
        return -1;
    self->in_txn = truth;
    return 0;
}

static PyGetSetDef Decoder_getset[] = {
    {"wal_end", (getter)Decoder_get_wal_end, NULL, "Highest WAL end seen.", NULL},
    {"position", (getter)Decoder_get_position, NULL,
     "Start position of the last XLogData message fed.", NULL},
    {"in_transaction", (getter)Decoder_get_in_transaction, (setter)Decoder_set_in_transaction,
     "A transaction's B record was consumed and its C record not yet (carried over when "
     "the decoder is rebuilt mid-transaction).",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject DecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "invalidator._hotpath.Decoder",
    .tp_basicsize = sizeof(Decoder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "wal2json v2 CopyData messages -> pipelined memcached deletes per (pool, node).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Decoder_init,
    .tp_dealloc = (destructor)Decoder_dealloc,
    .tp_methods = Decoder_methods,
    .tp_getset = Decoder_getset,
};

/* ---------------------------------------------------------------------------------- */
/* scan_deletes(buffer, pos, limit) -> (lines, deleted, pos)                           */

static PyObject *scan_deletes(PyObject *module, PyObject *args) {
    Py_buffer view;
    Py_ssize_t pos, limit;
    if (!PyArg_ParseTuple(args, "y*nn", &view, &pos, &limit))
        return NULL;
    const char *buf = view.buf;
    Py_ssize_t n = view.len, lines = 0, deleted = 0;
    while (lines < limit && pos < n) {
        if (n - pos >= 9 && memcmp(buf + pos, "DELETED\r\n", 9) == 0) {
            pos += 9;
            deleted++;
        } else if (n - pos >= 11 && memcmp(buf + pos, "NOT_FOUND\r\n", 11) == 0) {
            pos += 11;
        } else {
            break; /* another reply, or an incomplete line */
        }
        lines++;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(nnn)", lines, deleted, pos);
}

static PyObject *hash_murmur3(PyObject *module, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    uint32_t h = murmur3_32(view.buf, view.len, 0);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(h);
}

/* key_hash(hash, data) -> the key hash numbered `hash` (KEY_HASHES) of the bytes */
static PyObject *py_key_hash(PyObject *module, PyObject *args) {
    int hash;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "iy*", &hash, &view))
        return NULL;
    if (hash <= KH_NONE || hash >= KH_COUNT) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "unknown key hash");
        return NULL;
    }
    uint32_t h = key_hash(hash, view.buf, view.len);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(h);
}

/* ---------------------------------------------------------------------------------- */
/* Placer(mode, key_hash, names, points, table): one pool's placement as a callable    */
/* owner(key) -> node name, for tests and bench/placement.py.                          */

typedef struct {
    PyObject_HEAD
    Placer placer;
    PyObject *names; /* tuple of str, returned by owner() */
} PlacerObject;

static int PlacerObject_init(PlacerObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"mode", "key_hash", "names", "points", "table", NULL};
    int mode, hash;
    PyObject *names, *points, *table;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iiO!O!O!", kwlist, &mode, &hash, &PyList_Type,
                                     &names, &PyList_Type, &points, &PyList_Type, &table))
        return -1;
    placer_free(&self->placer);
    Py_CLEAR(self->names);
    if (mode == PLACE_BROADCAST) {
        PyErr_SetString(PyExc_ValueError, "broadcast has no single owner");
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(names);
    PyObject *encoded = PyList_New(n);
    if (encoded == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyList_GET_ITEM(names, i);
        PyObject *bytes = PyUnicode_Check(name) ? PyUnicode_AsUTF8String(name) : NULL;
        if (bytes == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "node names are str");
            Py_DECREF(encoded);
            return -1;
        }
        PyList_SET_ITEM(encoded, i, bytes);
    }
    int rc = placer_build(&self->placer, mode, hash, NULL, encoded, points, table);
    Py_DECREF(encoded);
    if (rc < 0)
        return -1;
    self->names = PyList_AsTuple(names);
    return self->names == NULL ? -1 : 0;
}

/* The bytes a key is hashed as: rendezvous hashes each character & 0xFF (pymemcache's
 * murmur3), the others the UTF-8 bytes (lone surrogates as surrogatepass writes them). */
static PyObject *key_bytes(const Placer *placer, PyObject *key) {
    if (!PyUnicode_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "a key is a str");
        return NULL;
    }
    if (placer->mode == PLACE_RENDEZVOUS) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(key);
        PyObject *out = PyBytes_FromStringAndSize(NULL, n);
        if (out == NULL)
            return NULL;
        int kind = PyUnicode_KIND(key);
        const void *data = PyUnicode_DATA(key);
        char *dst = PyBytes_AS_STRING(out);
        for (Py_ssize_t i = 0; i < n; i++)
            dst[i] = (char)(PyUnicode_READ(kind, data, i) & 0xFF);
        return out;
    }
    return PyUnicode_AsEncodedString(key, "utf-8", "surrogatepass");
}

static PyObject *PlacerObject_owner(PlacerObject *self, PyObject *key) {
    if (self->names == NULL) {
        PyErr_SetString(PyExc_ValueError, "Placer not initialised");
        return NULL;
    }
    int node;
    if (PyUnicode_Check(key) && PyUnicode_IS_ASCII(key)) {
        /* ASCII: its characters are its UTF-8 bytes, for every hash */
        node = place_key(&self->placer, PyUnicode_DATA(key), PyUnicode_GET_LENGTH(key));
    } else {
        PyObject *bytes = key_bytes(&self->placer, key);
        if (bytes == NULL)
            return NULL;
        node = place_key(&self->placer, (const unsigned char *)PyBytes_AS_STRING(bytes),
                         PyBytes_GET_SIZE(bytes));
        Py_DECREF(bytes);
    }
    if (node < 0)
        return NULL;
    return Py_NewRef(PyTuple_GET_ITEM(self->names, node));
}

static void PlacerObject_dealloc(PlacerObject *self) {
    placer_free(&self->placer);
    Py_CLEAR(self->names);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef PlacerObject_methods[] = {
    {"owner", (PyCFunction)PlacerObject_owner, METH_O,
     "owner(key) -> the name of the node that owns key."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PlacerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "invalidator._hotpath.Placer",
    .tp_basicsize = sizeof(PlacerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One pool's placement (a HotSpec's values): owner(key) -> node name.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)PlacerObject_init,
    .tp_dealloc = (destructor)PlacerObject_dealloc,
    .tp_methods = PlacerObject_methods,
};

static PyObject *py_parse_timestamp(PyObject *module, PyObject *arg) {
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(arg, &n);
    if (s == NULL)
        return NULL;
    double when = parse_timestamp(s, n);
    if (isnan(when))
        Py_RETURN_NONE;
    return PyFloat_FromDouble(when);
}

static PyMethodDef module_methods[] = {
    {"scan_deletes", scan_deletes, METH_VARARGS,
     "scan_deletes(buffer, pos, limit) -> (lines, deleted, pos): consecutive DELETED / "
     "NOT_FOUND reply lines from pos, at most limit."},
    {"murmur3", hash_murmur3, METH_O, "MurmurHash3 x86_32, seed 0, unsigned."},
    {"key_hash", py_key_hash, METH_VARARGS,
     "key_hash(hash, data) -> the key hash numbered hash (an index of KEY_HASHES) of data."},
    {"parse_timestamp", py_parse_timestamp, METH_O,
     "A wal2json commit timestamp as Unix seconds, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    .m_base = PyModuleDef_HEAD_INIT,
    .m_name = "invalidator._hotpath",
    .m_doc = "The delete hot path in C (see _hotpath.c).",
    .m_size = -1,
    .m_methods = module_methods,
};

static PyObject *key_hash_names(void) {
    PyObject *names = PyTuple_New(KH_COUNT);
    if (names == NULL)
        return NULL;
    for (int i = 0; i < KH_COUNT; i++) {
        PyObject *name = PyUnicode_FromString(KEY_HASH_NAMES[i]);
        if (name == NULL) {
            Py_DECREF(names);
            return NULL;
        }
        PyTuple_SET_ITEM(names, i, name);
    }
    return names;
}

PyMODINIT_FUNC PyInit__hotpath(void) {
    placement_init();
    if (PyType_Ready(&DecoderType) < 0 || PyType_Ready(&PlacerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    PyObject *hashes = key_hash_names();
    int added = hashes != NULL && PyModule_AddObjectRef(m, "KEY_HASHES", hashes) == 0;
    Py_XDECREF(hashes);
    if (!added || PyModule_AddObjectRef(m, "Decoder", (PyObject *)&DecoderType) < 0 ||
        PyModule_AddObjectRef(m, "Placer", (PyObject *)&PlacerType) < 0 ||
        PyModule_AddIntConstant(m, "MODULA", PLACE_MODULA) < 0 ||
        PyModule_AddIntConstant(m, "CONTINUUM", PLACE_CONTINUUM) < 0 ||
        PyModule_AddIntConstant(m, "CONTINUUM_BELOW", PLACE_CONTINUUM_BELOW) < 0 ||
        PyModule_AddIntConstant(m, "INSERT", KIND_INSERT) < 0 ||
        PyModule_AddIntConstant(m, "UPDATE", KIND_UPDATE) < 0 ||
        PyModule_AddIntConstant(m, "DELETE", KIND_DELETE) < 0 ||
        PyModule_AddIntConstant(m, "RENDEZVOUS", PLACE_RENDEZVOUS) < 0 ||
        PyModule_AddIntConstant(m, "BROADCAST", PLACE_BROADCAST) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
