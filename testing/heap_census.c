// Heap census for the 32-bit unix build (testing/mp32.py): what the live heap holds, by
// type. Included into py/gc.c by the build (it needs gc.c's block macros), it replaces
// what `micropython.mem_info(1)` prints after the summary: instead of the block map,
// one line per kind of object,
//
//     CENSUS <what> <count> <bytes>
//
// <what> is the object's type name (`list`, `Task`, `App`: an instance of a class is its
// class); `gen:<function>` for a running coroutine or generator (the function it runs);
// `<type><<owner>` for a dict, list, tuple, str, bytes or bytearray that an object of
// type <owner> points to (`dict<App`, `list<Detector`); `<owner>[]` for a block with no
// type of its own (a list's items, a dict's table, a bytearray's bytes) reached from an
// object of type <owner>; `?unknown` for blocks reached from none of those (the qstr
// pools, the interpreter's own). Block sizes are whole 16-byte blocks.
//
// Diagnostics only: no ESP32 counterpart, nothing in the agent depends on it; it only
// reads the heap (one calloc'd scratch table of a few bytes per block).

#include <stdlib.h>
#include "py/obj.h"
#include "py/bc.h"
#include "py/objfun.h"

extern char __executable_start, _end;  // the binary's own image (ROM types live there)
qstr mp_obj_fun_bc_get_name(const mp_obj_fun_bc_t *fun);

// True if t points at a type object: in the heap (a class) or in the binary.
static int census_is_type(mp_state_mem_area_t *area, void *t) {
    uintptr_t u = (uintptr_t)t;
    if (u & (sizeof(void *) - 1)) {
        return 0;
    }
    if (u >= (uintptr_t)area->gc_pool_start && u < (uintptr_t)area->gc_pool_end) {
        return ATB_GET_KIND(area, BLOCK_FROM_PTR(area, t)) == AT_HEAD
               && *(void **)t == &mp_type_type;
    }
    if (u >= (uintptr_t)&__executable_start && u + sizeof(void *) <= (uintptr_t)&_end) {
        return *(void **)t == &mp_type_type;
    }
    return 0;
}

// A label: bits 0-15 the name's qstr, 16-31 the owner's qstr, bit 32 "typeless block
// reached from the name", bit 33 "coroutine, the name is its function's".
#define CENSUS_RAW (1ULL << 32)
#define CENSUS_GEN (1ULL << 33)
#define CENSUS_OWNED(q) ((q) == MP_QSTR_dict || (q) == MP_QSTR_list || (q) == MP_QSTR_tuple \
    || (q) == MP_QSTR_str || (q) == MP_QSTR_bytes || (q) == MP_QSTR_bytearray)

typedef struct {
    struct _mp_obj_base_t base;
    mp_obj_t pend_exc;
    mp_code_state_t code_state;
} census_gen_t;  // objgenerator.c's mp_obj_gen_instance_t (not in a header)

static void census_print(const mp_print_t *print) {
    mp_state_mem_area_t *area = &MP_STATE_MEM(area);
    size_t nbl = area->gc_alloc_table_byte_len * BLOCKS_PER_ATB;
    uint64_t *lab = calloc(nbl, sizeof(uint64_t));
    uint32_t *len = calloc(nbl, sizeof(uint32_t));
    uint8_t *typed = calloc(nbl, 1);
    if (lab == NULL || len == NULL || typed == NULL) {
        mp_printf(print, "CENSUS failed: no memory for its table\n");
        free(lab);
        free(len);
        free(typed);
        return;
    }
    // every object's length; a typed one's name
    for (size_t bl = 0; bl < nbl; bl++) {
        if (ATB_GET_KIND(area, bl) != AT_HEAD) {
            continue;
        }
        size_t n = 1;
        while (bl + n < nbl && ATB_GET_KIND(area, bl + n) == AT_TAIL) {
            n++;
        }
        len[bl] = n;
        void **o = (void **)PTR_FROM_BLOCK(area, bl);
        if (census_is_type(area, *o)) {
            typed[bl] = 1;
            if (*o == &mp_type_gen_instance) {
                census_gen_t *g = (census_gen_t *)o;
                lab[bl] = mp_obj_fun_bc_get_name(g->code_state.fun_bc) | CENSUS_GEN;
            } else {
                lab[bl] = ((mp_obj_type_t *)*o)->name;
            }
        }
    }
    // owners: each labelled object passes its name to what it points at (a container
    // passes on its own owner's), breadth first, a few levels deep
    for (int pass = 0; pass < 5; pass++) {
        for (size_t bl = 0; bl < nbl; bl++) {
            if (!len[bl] || !lab[bl] || (pass == 0 && !typed[bl])) {
                continue;
            }
            uint32_t me = lab[bl] & 0xffff;
            uint32_t own = (lab[bl] >> 16) & 0xffff;
            if (own && CENSUS_OWNED(me)) {
                me = own;
            }
            uintptr_t *w = (uintptr_t *)PTR_FROM_BLOCK(area, bl);
            size_t nw = len[bl] * BYTES_PER_BLOCK / sizeof(uintptr_t);
            for (size_t i = 0; i < nw; i++) {
                uintptr_t p = w[i];
                if (p < (uintptr_t)area->gc_pool_start || p >= (uintptr_t)area->gc_pool_end
                    || (p - (uintptr_t)area->gc_pool_start) % BYTES_PER_BLOCK) {
                    continue;
                }
                size_t c = BLOCK_FROM_PTR(area, p);
                if (!len[c] || c == bl) {
                    continue;
                }
                if (!typed[c]) {
                    if (!lab[c]) {
                        lab[c] = me | ((uint64_t)me << 16) | CENSUS_RAW;
                    }
                } else if (!(lab[c] & CENSUS_GEN) && !((lab[c] >> 16) & 0xffff)
                           && CENSUS_OWNED(lab[c] & 0xffff)) {
                    lab[c] |= (uint64_t)me << 16;
                }
            }
        }
    }
    // tally by label
    enum { CENSUS_KINDS = 1024 };
    static uint64_t key[CENSUS_KINDS];
    static uint32_t cnt[CENSUS_KINDS], byt[CENSUS_KINDS];
    int nk = 0;
    for (size_t bl = 0; bl < nbl; bl++) {
        if (!len[bl]) {
            continue;
        }
        uint64_t k = lab[bl];
        int j = 0;
        while (j < nk && key[j] != k) {
            j++;
        }
        if (j == nk) {
            if (nk == CENSUS_KINDS) {
                continue;
            }
            key[nk] = k;
            cnt[nk] = byt[nk] = 0;
            nk++;
        }
        cnt[j]++;
        byt[j] += len[bl] * BYTES_PER_BLOCK;
    }
    for (int j = 0; j < nk; j++) {
        uint64_t k = key[j];
        uint32_t own = (k >> 16) & 0xffff;
        if (!k) {
            mp_printf(print, "CENSUS ?unknown");
        } else if (k & CENSUS_GEN) {
            mp_printf(print, "CENSUS gen:%q", (qstr)(k & 0xffff));
        } else if (k & CENSUS_RAW) {
            mp_printf(print, "CENSUS %q[]", (qstr)(k & 0xffff));
        } else if (own) {
            mp_printf(print, "CENSUS %q<%q", (qstr)(k & 0xffff), (qstr)own);
        } else {
            mp_printf(print, "CENSUS %q", (qstr)(k & 0xffff));
        }
        mp_printf(print, " %u %u\n", (uint)cnt[j], (uint)byt[j]);
    }
    free(lab);
    free(len);
    free(typed);
}
