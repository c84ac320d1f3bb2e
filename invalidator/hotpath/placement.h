/* Key placement in C: the key hashes of the apps' memcached clients and the lookups that
 * turn a hash into a node (placement.c). An accelerator, never a second meaning: every
 * table here (continuum points, buckets, node names) is computed by the Python placement
 * (invalidator/core/placement/, HotSpec) and handed over as is; C only hashes the key and
 * looks it up. */
#ifndef INVALIDATOR_PLACEMENT_H
#define INVALIDATOR_PLACEMENT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* How a key's hash becomes a node (HotSpec.mode). */
enum {
    PLACE_RENDEZVOUS = 0,      /* highest murmur3("<node>-<key>") wins; ties: greater name */
    PLACE_BROADCAST = 1,       /* every node */
    PLACE_MODULA = 2,          /* table[hash % ntable] */
    PLACE_CONTINUUM = 3,       /* table[first point >= hash], wrapping to the first point */
    PLACE_CONTINUUM_BELOW = 4, /* table[last point <= hash], wrapping to the last point */
    PLACE_MODES
};

/* The key hashes (HotSpec.key_hash; names in KEY_HASH_NAMES, same order). Inputs are the
 * key's UTF-8 bytes; the *_utf16 and java hashes read its UTF-16 code units. */
enum {
    KH_NONE = 0,        /* rendezvous and broadcast hash no key alone */
    KH_CRC32,           /* zlib.crc32 */
    KH_CRC32_HI15,      /* (crc32 >> 16) & 0x7fff */
    KH_JAVA,            /* String.hashCode, unsigned */
    KH_JAVA_ABS,        /* Math.abs((int) String.hashCode) */
    KH_FNV1_32_UTF16,   /* spymemcached's FNV over UTF-16 units, truncated to 32 bits */
    KH_FNV1A_32_UTF16,
    KH_FNV1_64_UTF16,
    KH_FNV1A_64_UTF16,
    KH_MD5_LE32,        /* first 4 bytes of MD5, little-endian */
    KH_SHA1_LE32,       /* first 4 bytes of SHA-1, little-endian */
    /* libhashkit (libmemcached 1.1.4), over bytes read through a signed char */
    KH_LM_ONE_AT_A_TIME,
    KH_LM_FNV1_64,
    KH_LM_FNV1A_64,
    KH_LM_FNV1_32,
    KH_LM_FNV1A_32,
    KH_LM_MURMUR,
    KH_LM_JENKINS,
    KH_COUNT
};

extern const char *const KEY_HASH_NAMES[KH_COUNT];

typedef struct {
    int mode;
    int hash;
    int nnodes;
    /* rendezvous: "<node>-" and "<node>" per node */
    char **prefixes;
    Py_ssize_t *prefix_lens;
    char **names;
    Py_ssize_t *name_lens;
    Py_ssize_t longest_prefix;
    /* continuum: sorted points; table: node per point (continuum) or per bucket (modula) */
    Py_ssize_t npoints;
    uint32_t *points;
    Py_ssize_t ntable;
    int *table;
} Placer;

void placement_init(void);
uint32_t key_hash(int hash, const unsigned char *key, Py_ssize_t len);
uint32_t murmur3_32(const unsigned char *data, Py_ssize_t len, uint32_t seed);

/* The node index of `key` (not for broadcast); -1 with an exception set on failure. */
int place_key(const Placer *placer, const unsigned char *key, Py_ssize_t len);

/* placer_build(placer, mode, hash, prefixes, names, points, table): checks and copies a
 * HotSpec; -1 with ValueError when inconsistent. names: list of bytes (node names);
 * prefixes: list of bytes (rendezvous's hashed "<node>-"), or NULL for name + "-". */
int placer_build(Placer *placer, int mode, int hash, PyObject *prefixes, PyObject *names,
                 PyObject *points, PyObject *table);
void placer_free(Placer *placer);

#endif
