/* Key placement in C (see placement.h): key hashes and the lookups over tables that the
 * Python placements computed. tests/unit/test_hotpath_placement.py proves every hash and
 * every client's placement equal to the Python specification and to the libraries'
 * recorded vectors. */
#include "placement.h"

#include <math.h>
#include <string.h>

const char *const KEY_HASH_NAMES[KH_COUNT] = {
    "", "crc32", "crc32_hi15", "java_hashcode", "java_hashcode_abs", "fnv1_32_utf16",
    "fnv1a_32_utf16", "fnv1_64_utf16", "fnv1a_64_utf16", "md5_le32", "sha1_le32",
    "libmemcached_one_at_a_time", "libmemcached_fnv1_64", "libmemcached_fnv1a_64",
    "libmemcached_fnv1_32", "libmemcached_fnv1a_32", "libmemcached_murmur",
    "libmemcached_jenkins",
};

static inline uint32_t rotl32(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

static inline uint32_t load_le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint32_t load_be32(const unsigned char *p) {
    return (uint32_t)p[3] | (uint32_t)p[2] << 8 | (uint32_t)p[1] << 16 | (uint32_t)p[0] << 24;
}

/* ---------------------------------------------------------------------------------- */
/* MurmurHash3 x86_32 (public domain, Austin Appleby), as mmh3.hash(..., 0, False).    */

uint32_t murmur3_32(const unsigned char *data, Py_ssize_t len, uint32_t seed) {
    const Py_ssize_t nblocks = len / 4;
    uint32_t h1 = seed;
    const uint32_t c1 = 0xcc9e2d51, c2 = 0x1b873593;
    for (Py_ssize_t i = 0; i < nblocks; i++) {
        uint32_t k1 = load_le32(data + i * 4);
        k1 *= c1;
        k1 = rotl32(k1, 15);
        k1 *= c2;
        h1 ^= k1;
        h1 = rotl32(h1, 13);
        h1 = h1 * 5 + 0xe6546b64;
    }
    const unsigned char *tail = data + nblocks * 4;
    uint32_t k1 = 0;
    switch (len & 3) {
    case 3: k1 ^= (uint32_t)tail[2] << 16; /* fall through */
    case 2: k1 ^= (uint32_t)tail[1] << 8;  /* fall through */
    case 1:
        k1 ^= tail[0];
        k1 *= c1;
        k1 = rotl32(k1, 15);
        k1 *= c2;
        h1 ^= k1;
    }
    h1 ^= (uint32_t)len;
    h1 ^= h1 >> 16;
    h1 *= 0x85ebca6b;
    h1 ^= h1 >> 13;
    h1 *= 0xc2b2ae35;
    h1 ^= h1 >> 16;
    return h1;
}

/* ---------------------------------------------------------------------------------- */
/* CRC-32 (IEEE 802.3, reflected), as zlib.crc32.                                      */

static uint32_t crc_table[256];

static uint32_t crc32_ieee(const unsigned char *data, Py_ssize_t len) {
    uint32_t c = 0xFFFFFFFFu;
    for (Py_ssize_t i = 0; i < len; i++)
        c = crc_table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* ---------------------------------------------------------------------------------- */
/* MD5 (RFC 1321) and SHA-1 (FIPS 180-4): only the first digest word is needed.        */

static uint32_t md5_k[64];
static const int md5_s[64] = {7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
                              5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20,
                              4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
                              6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21};

static void md5_block(uint32_t st[4], const unsigned char *block) {
    uint32_t w[16];
    for (int i = 0; i < 16; i++)
        w[i] = load_le32(block + 4 * i);
    uint32_t a = st[0], b = st[1], c = st[2], d = st[3];
    for (int i = 0; i < 64; i++) {
        uint32_t f;
        int g;
        if (i < 16) {
            f = (b & c) | (~b & d);
            g = i;
        } else if (i < 32) {
            f = (d & b) | (~d & c);
            g = (5 * i + 1) & 15;
        } else if (i < 48) {
            f = b ^ c ^ d;
            g = (3 * i + 5) & 15;
        } else {
            f = c ^ (b | ~d);
            g = (7 * i) & 15;
        }
        uint32_t t = d;
        d = c;
        c = b;
        b = b + rotl32(a + f + md5_k[i] + w[g], md5_s[i]);
        a = t;
    }
    st[0] += a;
    st[1] += b;
    st[2] += c;
    st[3] += d;
}

static void sha1_block(uint32_t h[5], const unsigned char *block) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = load_be32(block + 4 * i);
    for (int i = 16; i < 80; i++)
        w[i] = rotl32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDC;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6;
        }
        uint32_t t = rotl32(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rotl32(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

/* Both digests: 64-byte blocks, then 0x80, zeros and the bit length (little-endian for
 * MD5, big-endian for SHA-1). */
static void digest(int sha1, uint32_t *state, const unsigned char *data, Py_ssize_t len) {
    Py_ssize_t full = len & ~(Py_ssize_t)63;
    for (Py_ssize_t i = 0; i < full; i += 64)
        sha1 ? sha1_block(state, data + i) : md5_block(state, data + i);
    unsigned char tail[128] = {0};
    Py_ssize_t rest = len - full;
    memcpy(tail, data + full, rest);
    tail[rest] = 0x80;
    Py_ssize_t size = rest < 56 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        tail[sha1 ? size - 1 - i : size - 8 + i] = (unsigned char)(bits >> (8 * i));
    for (Py_ssize_t i = 0; i < size; i += 64)
        sha1 ? sha1_block(state, tail + i) : md5_block(state, tail + i);
}

static uint32_t md5_le32(const unsigned char *data, Py_ssize_t len) {
    uint32_t st[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
    digest(0, st, data, len);
    return st[0]; /* the digest's first 4 bytes are st[0] little-endian */
}

static uint32_t sha1_le32(const unsigned char *data, Py_ssize_t len) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    digest(1, h, data, len);
    uint32_t x = h[0]; /* big-endian in the digest: read little-endian, the bytes swap */
    return (x >> 24) | ((x >> 8) & 0xFF00) | ((x << 8) & 0xFF0000) | (x << 24);
}

/* ---------------------------------------------------------------------------------- */
/* Hashes over UTF-16 code units (Java's charAt, JavaScript's charCodeAt).             */

/* The next code point of UTF-8 text that Python produced (valid, or surrogatepass). */
static inline uint32_t next_code_point(const unsigned char **pp, const unsigned char *end) {
    const unsigned char *p = *pp;
    uint32_t c = p[0];
    int n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (end - p < n)
        n = 1; /* never from Python's encoder; read the byte alone rather than overrun */
    if (n == 2)
        c = (c & 0x1F) << 6 | (p[1] & 0x3F);
    else if (n == 3)
        c = (c & 0x0F) << 12 | (uint32_t)(p[1] & 0x3F) << 6 | (p[2] & 0x3F);
    else if (n == 4)
        c = (c & 0x07) << 18 | (uint32_t)(p[1] & 0x3F) << 12 | (uint32_t)(p[2] & 0x3F) << 6 |
            (p[3] & 0x3F);
    *pp = p + n;
    return c;
}

/* Calls STEP(unit) for each UTF-16 code unit of the key. */
#define FOR_EACH_UTF16_UNIT(data, len, STEP)                                                 \
    do {                                                                                     \
        const unsigned char *p_ = (data), *end_ = (data) + (len);                            \
        while (p_ < end_) {                                                                  \
            uint32_t cp_ = *p_ < 0x80 ? *p_++ : next_code_point(&p_, end_);                  \
            if (cp_ >= 0x10000) {                                                            \
                cp_ -= 0x10000;                                                              \
                STEP(0xD800 + (cp_ >> 10));                                                  \
                STEP(0xDC00 + (cp_ & 0x3FF));                                                \
            } else {                                                                         \
                STEP(cp_);                                                                   \
            }                                                                                \
        }                                                                                    \
    } while (0)

static uint32_t java_hashcode(const unsigned char *data, Py_ssize_t len) {
    uint32_t h = 0;
#define JAVA_STEP(u) h = 31 * h + (u)
    FOR_EACH_UTF16_UNIT(data, len, JAVA_STEP);
#undef JAVA_STEP
    return h;
}

static uint32_t fnv_utf16(int wide, int xor_first, const unsigned char *data, Py_ssize_t len) {
    if (wide) {
        uint64_t h = 0xCBF29CE484222325ull;
        const uint64_t prime = 0x100000001B3ull;
#define FNV64_STEP(u) h = xor_first ? (h ^ (u)) * prime : (h * prime) ^ (u)
        FOR_EACH_UTF16_UNIT(data, len, FNV64_STEP);
#undef FNV64_STEP
        return (uint32_t)h;
    }
    uint32_t h = 2166136261u;
    const uint32_t prime = 16777619u;
#define FNV32_STEP(u) h = xor_first ? (h ^ (u)) * prime : (h * prime) ^ (u)
    FOR_EACH_UTF16_UNIT(data, len, FNV32_STEP);
#undef FNV32_STEP
    return h;
}

/* ---------------------------------------------------------------------------------- */
/* libhashkit's functions, as libmemcached 1.1.4 computes them on x86-64: where the C   */
/* code widens a (signed) char, bytes >= 0x80 are sign-extended (hashkit.py).          */

#define SIGNED32(b) ((uint32_t)(int32_t)(signed char)(b))
#define SIGNED64(b) ((uint64_t)(int64_t)(signed char)(b))

static uint32_t lm_one_at_a_time(const unsigned char *data, Py_ssize_t len) {
    uint32_t v = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        v += SIGNED32(data[i]);
        v += v << 10;
        v ^= v >> 6;
    }
    v += v << 3;
    v ^= v >> 11;
    return v + (v << 15);
}

static uint32_t lm_fnv(int which, const unsigned char *data, Py_ssize_t len) {
    if (which == KH_LM_FNV1_64) {
        uint64_t v = 0xCBF29CE484222325ull;
        for (Py_ssize_t i = 0; i < len; i++)
            v = (v * 0x100000001B3ull) ^ SIGNED64(data[i]);
        return (uint32_t)v;
    }
    /* fnv1a_64 is computed in 32 bits with the 64-bit constants truncated */
    uint32_t v = which == KH_LM_FNV1A_64 ? 0x84222325u : 0x811C9DC5u;
    uint32_t prime = which == KH_LM_FNV1A_64 ? 0x1B3u : 0x01000193u;
    for (Py_ssize_t i = 0; i < len; i++) {
        if (which == KH_LM_FNV1_32)
            v = (v * prime) ^ SIGNED32(data[i]);
        else
            v = (v ^ SIGNED32(data[i])) * prime;
    }
    return v;
}

/* MurmurHash2 with libmemcached's seed 0xdeadbeef * length. */
static uint32_t lm_murmur(const unsigned char *data, Py_ssize_t len) {
    const uint32_t m = 0x5BD1E995;
    uint32_t h = (0xDEADBEEFu * (uint32_t)len) ^ (uint32_t)len;
    Py_ssize_t i = 0;
    for (; len - i >= 4; i += 4) {
        uint32_t k = load_le32(data + i) * m;
        k ^= k >> 24;
        k *= m;
        h = (h * m) ^ k;
    }
    if (i < len) {
        uint32_t rest = 0;
        for (Py_ssize_t j = len - 1; j >= i; j--)
            rest = (rest << 8) | data[j];
        h ^= rest;
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    return h ^ (h >> 15);
}

/* Bob Jenkins' lookup3 hashlittle, initval 13. */
static uint32_t lm_jenkins(const unsigned char *data, Py_ssize_t len) {
    uint32_t a, b, c;
    a = b = c = 0xDEADBEEFu + (uint32_t)len + 13;
    if (len == 0)
        return c;
    Py_ssize_t i = 0;
    for (; len - i > 12; i += 12) {
        a += load_le32(data + i);
        b += load_le32(data + i + 4);
        c += load_le32(data + i + 8);
        a -= c; a ^= rotl32(c, 4);  c += b;
        b -= a; b ^= rotl32(a, 6);  a += c;
        c -= b; c ^= rotl32(b, 8);  b += a;
        a -= c; a ^= rotl32(c, 16); c += b;
        b -= a; b ^= rotl32(a, 19); a += c;
        c -= b; c ^= rotl32(b, 4);  b += a;
    }
    unsigned char tail[12] = {0};
    memcpy(tail, data + i, len - i);
    a += load_le32(tail);
    b += load_le32(tail + 4);
    c += load_le32(tail + 8);
    c ^= b; c -= rotl32(b, 14);
    a ^= c; a -= rotl32(c, 11);
    b ^= a; b -= rotl32(a, 25);
    c ^= b; c -= rotl32(b, 16);
    a ^= c; a -= rotl32(c, 4);
    b ^= a; b -= rotl32(a, 14);
    c ^= b; c -= rotl32(b, 24);
    return c;
}

uint32_t key_hash(int hash, const unsigned char *key, Py_ssize_t len) {
    switch (hash) {
    case KH_CRC32:
        return crc32_ieee(key, len);
    case KH_CRC32_HI15:
        return (crc32_ieee(key, len) >> 16) & 0x7FFF;
    case KH_JAVA:
        return java_hashcode(key, len);
    case KH_JAVA_ABS: {
        int64_t h = (int32_t)java_hashcode(key, len);
        return (uint32_t)(h < 0 ? -h : h);
    }
    case KH_FNV1_32_UTF16:
        return fnv_utf16(0, 0, key, len);
    case KH_FNV1A_32_UTF16:
        return fnv_utf16(0, 1, key, len);
    case KH_FNV1_64_UTF16:
        return fnv_utf16(1, 0, key, len);
    case KH_FNV1A_64_UTF16:
        return fnv_utf16(1, 1, key, len);
    case KH_MD5_LE32:
        return md5_le32(key, len);
    case KH_SHA1_LE32:
        return sha1_le32(key, len);
    case KH_LM_ONE_AT_A_TIME:
        return lm_one_at_a_time(key, len);
    case KH_LM_FNV1_64:
    case KH_LM_FNV1A_64:
    case KH_LM_FNV1_32:
    case KH_LM_FNV1A_32:
        return lm_fnv(hash, key, len);
    case KH_LM_MURMUR:
        return lm_murmur(key, len);
    case KH_LM_JENKINS:
        return lm_jenkins(key, len);
    default:
        return 0;
    }
}

void placement_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
    for (int i = 0; i < 64; i++)
        md5_k[i] = (uint32_t)(uint64_t)floor(fabs(sin((double)i + 1.0)) * 4294967296.0);
}

/* ---------------------------------------------------------------------------------- */
/* Lookups.                                                                            */

static int name_less(const Placer *p, int a, int b) {
    Py_ssize_t n = p->name_lens[a] < p->name_lens[b] ? p->name_lens[a] : p->name_lens[b];
    int c = memcmp(p->names[a], p->names[b], n);
    return c < 0 || (c == 0 && p->name_lens[a] < p->name_lens[b]);
}

/* pymemcache RendezvousHash: the highest murmur3("<node>-<key>") wins; a tie goes to the
 * greater node name. The key's bytes are its characters & 0xFF (pymemcache's murmur3). */
static int rendezvous(const Placer *p, const unsigned char *key, Py_ssize_t len) {
    unsigned char stack[512];
    unsigned char *buf = stack;
    if (p->longest_prefix + len > (Py_ssize_t)sizeof(stack)) {
        buf = PyMem_Malloc(p->longest_prefix + len);
        if (buf == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    long long best = -1;
    int winner = 0;
    for (int n = 0; n < p->nnodes; n++) {
        memcpy(buf, p->prefixes[n], p->prefix_lens[n]);
        memcpy(buf + p->prefix_lens[n], key, len);
        long long score = murmur3_32(buf, p->prefix_lens[n] + len, 0);
        if (score > best || (score == best && name_less(p, winner, n))) {
            best = score;
            winner = n;
        }
    }
    if (buf != stack)
        PyMem_Free(buf);
    return winner;
}

int place_key(const Placer *p, const unsigned char *key, Py_ssize_t len) {
    if (p->mode == PLACE_RENDEZVOUS)
        return rendezvous(p, key, len);
    if (p->nnodes == 1)
        return 0; /* every client: one server takes every key (some never hash it) */
    uint32_t h = key_hash(p->hash, key, len);
    if (p->mode == PLACE_MODULA)
        return p->table[h % (uint32_t)p->ntable];
    /* continuum: lo = the number of points below h (first point >= h) */
    Py_ssize_t lo = 0, hi = p->npoints;
    if (p->mode == PLACE_CONTINUUM) {
        while (lo < hi) {
            Py_ssize_t mid = lo + (hi - lo) / 2;
            if (p->points[mid] < h)
                lo = mid + 1;
            else
                hi = mid;
        }
        return p->table[lo < p->npoints ? lo : 0];
    }
    /* PLACE_CONTINUUM_BELOW: lo = the number of points <= h; the last of them */
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (p->points[mid] <= h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return p->table[lo > 0 ? lo - 1 : p->npoints - 1];
}

/* ---------------------------------------------------------------------------------- */
/* Building a Placer from a HotSpec's plain values.                                    */

void placer_free(Placer *p) {
    for (int n = 0; n < p->nnodes; n++) {
        if (p->prefixes)
            PyMem_Free(p->prefixes[n]);
        if (p->names)
            PyMem_Free(p->names[n]);
    }
    PyMem_Free(p->prefixes);
    PyMem_Free(p->prefix_lens);
    PyMem_Free(p->names);
    PyMem_Free(p->name_lens);
    PyMem_Free(p->points);
    PyMem_Free(p->table);
    memset(p, 0, sizeof(*p));
}

static int fail(const char *message) {
    PyErr_SetString(PyExc_ValueError, message);
    return -1;
}

int placer_build(Placer *p, int mode, int hash, PyObject *prefixes, PyObject *names,
                 PyObject *points, PyObject *table) {
    memset(p, 0, sizeof(*p));
    if (!PyList_Check(names) || !PyList_Check(points) || !PyList_Check(table))
        return fail("placement: names, points and table must be lists");
    if (mode < 0 || mode >= PLACE_MODES || hash < 0 || hash >= KH_COUNT)
        return fail("placement: unknown mode or key hash");
    Py_ssize_t nnodes = PyList_GET_SIZE(names), npoints = PyList_GET_SIZE(points),
               ntable = PyList_GET_SIZE(table);
    if (nnodes < 1 || nnodes > 65536)
        return fail("placement: a pool needs at least one node");
    if (prefixes != NULL && (!PyList_Check(prefixes) || PyList_GET_SIZE(prefixes) != nnodes))
        return fail("placement: one prefix per node");
    int hashed = mode == PLACE_MODULA || mode == PLACE_CONTINUUM || mode == PLACE_CONTINUUM_BELOW;
    if (hashed != (hash != KH_NONE))
        return fail("placement: modula and continuum take a key hash, the others none");
    int continuum = mode == PLACE_CONTINUUM || mode == PLACE_CONTINUUM_BELOW;
    if (continuum ? ((npoints < 1 && nnodes > 1) || ntable != npoints)
                  : (npoints != 0 || (mode == PLACE_MODULA ? ntable < 1 : ntable != 0)))
        return fail("placement: points and table do not fit the mode");
    p->mode = mode;
    p->hash = hash;
    p->prefixes = PyMem_Calloc(nnodes, sizeof(char *));
    p->prefix_lens = PyMem_Calloc(nnodes, sizeof(Py_ssize_t));
    p->names = PyMem_Calloc(nnodes, sizeof(char *));
    p->name_lens = PyMem_Calloc(nnodes, sizeof(Py_ssize_t));
    p->points = PyMem_Calloc(npoints ? npoints : 1, sizeof(uint32_t));
    p->table = PyMem_Calloc(ntable ? ntable : 1, sizeof(int));
    if (!p->prefixes || !p->prefix_lens || !p->names || !p->name_lens || !p->points ||
        !p->table) {
        placer_free(p);
        PyErr_NoMemory();
        return -1;
    }
    p->nnodes = (int)nnodes;
    for (Py_ssize_t n = 0; n < nnodes; n++) {
        char *data;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(PyList_GET_ITEM(names, n), &data, &len) < 0)
            goto error;
        if (len > 199) {
            fail("placement: node name too long");
            goto error;
        }
        p->names[n] = PyMem_Malloc(len ? len : 1);
        if (!p->names[n]) {
            PyErr_NoMemory();
            goto error;
        }
        memcpy(p->names[n], data, len);
        p->name_lens[n] = len;
        if (prefixes != NULL) {
            if (PyBytes_AsStringAndSize(PyList_GET_ITEM(prefixes, n), &data, &len) < 0)
                goto error;
            if (len > 200) {
                fail("placement: node name too long");
                goto error;
            }
        }
        p->prefixes[n] = PyMem_Malloc(len + 1);
        if (!p->prefixes[n]) {
            PyErr_NoMemory();
            goto error;
        }
        memcpy(p->prefixes[n], data, len);
        if (prefixes == NULL)
            p->prefixes[n][len++] = '-';
        p->prefix_lens[n] = len;
        if (len > p->longest_prefix)
            p->longest_prefix = len;
    }
    for (Py_ssize_t i = 0; i < npoints; i++) {
        unsigned long v = PyLong_AsUnsignedLong(PyList_GET_ITEM(points, i));
        if (PyErr_Occurred())
            goto error;
        if (v > 0xFFFFFFFFul || (i && v < p->points[i - 1])) {
            fail("placement: continuum points must be sorted 32-bit numbers");
            goto error;
        }
        p->points[i] = (uint32_t)v;
    }
    p->npoints = npoints;
    for (Py_ssize_t i = 0; i < ntable; i++) {
        long v = PyLong_AsLong(PyList_GET_ITEM(table, i));
        if (v == -1 && PyErr_Occurred())
            goto error;
        if (v < 0 || v >= nnodes) {
            fail("placement: table names a node out of range");
            goto error;
        }
        p->table[i] = (int)v;
    }
    p->ntable = ntable;
    return 0;
error:
    placer_free(p);
    return -1;
}
