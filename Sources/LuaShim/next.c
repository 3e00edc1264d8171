// `next` and `pairs` in an order that does not depend on the string hash
// seed, which Lua draws from the clock and ASLR: numbers ascending, then
// strings in byte order, false before true, then other keys by type and
// address. `pairs` returns this `next`, so the two always agree, and
// `next(t, k)` gives the key after k in that order whether or not k was
// deleted meanwhile.
//
// A traversal keeps a snapshot of t's keys in order (weak values: a
// deleted key may still be collected), started by next(t, k) and dropped
// by next(t, nil), which finds the first key by one scan. A table whose
// own order is already ascending integers (a sequence) is walked with
// lua_next.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "shim.h"

// The registry table of snapshots: table -> snapshot (weak keys), where a
// snapshot is `true` (walk with lua_next) or {keys..., [0] = n, [-1] = the
// position last returned} with weak values.
static const char *const SNAPSHOTS = "mmlab.next";
static const char *const WEAKVALUES = "mmlab.weakvalues";

typedef struct Key {
    int rank;           // 0 number, 1 string, 2 boolean, 3 anything else
    int type;
    int isint;
    lua_Integer i;
    lua_Number n;
    const char *s;      // a string's bytes: the string is alive while the key is compared
    size_t len;
    const void *p;
    int slot;           // where the key waits while keys are sorted
} Key;

static Key describe(lua_State *L, int idx) {
    Key k;
    memset(&k, 0, sizeof k);
    k.type = lua_type(L, idx);
    switch (k.type) {
    case LUA_TNUMBER:
        k.rank = 0;
        k.isint = lua_isinteger(L, idx);
        if (k.isint)
            k.i = lua_tointeger(L, idx);
        else
            k.n = lua_tonumber(L, idx);
        break;
    case LUA_TSTRING:
        k.rank = 1;
        k.s = lua_tolstring(L, idx, &k.len);
        break;
    case LUA_TBOOLEAN:
        k.rank = 2;
        k.i = lua_toboolean(L, idx);
        break;
    default:
        k.rank = 3;
        k.p = lua_topointer(L, idx);
        break;
    }
    return k;
}

// An integer against a float, exactly (no key is both).
static int cmp_int_float(lua_Integer i, lua_Number f) {
    if (f >= 0x1p63)
        return -1;
    if (f < -0x1p63)
        return 1;
    lua_Number fl = floor(f);
    lua_Integer fi = (lua_Integer)fl;
    if (i != fi)
        return i < fi ? -1 : 1;
    return fl < f ? -1 : 0;
}

static int compare(const Key *a, const Key *b) {
    if (a->rank != b->rank)
        return a->rank < b->rank ? -1 : 1;
    switch (a->rank) {
    case 0:
        if (a->isint && b->isint)
            return a->i < b->i ? -1 : a->i > b->i;
        if (a->isint)
            return cmp_int_float(a->i, b->n);
        if (b->isint)
            return -cmp_int_float(b->i, a->n);
        return a->n < b->n ? -1 : a->n > b->n;
    case 1: {
        int c = memcmp(a->s, b->s, a->len < b->len ? a->len : b->len);
        if (c != 0)
            return c < 0 ? -1 : 1;
        return a->len < b->len ? -1 : a->len > b->len;
    }
    case 2:
        return a->i < b->i ? -1 : a->i > b->i;
    default:
        if (a->type != b->type)
            return a->type < b->type ? -1 : 1;
        return (uintptr_t)a->p < (uintptr_t)b->p ? -1 : (uintptr_t)a->p > (uintptr_t)b->p;
    }
}

static int compare_keys(const void *a, const void *b) { return compare((const Key *)a, (const Key *)b); }

static int snapshots(lua_State *L) {
    if (!luaL_getsubtable(L, LUA_REGISTRYINDEX, SNAPSHOTS)) {
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "k");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
    }
    return lua_gettop(L);
}

// Pushes t's snapshot, built from its keys now.
static void build(lua_State *L, int t) {
    int n = 0, ascending = 1;
    lua_Integer last = 0;
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        lua_pop(L, 1);
        if (ascending && (!lua_isinteger(L, -1) || (n > 0 && lua_tointeger(L, -1) <= last)))
            ascending = 0;
        if (ascending)
            last = lua_tointeger(L, -1);
        n++;
    }
    if (ascending) {
        lua_pushboolean(L, 1);
        return;
    }
    lua_createtable(L, n, 0);  // the keys as lua_next finds them
    int found = lua_gettop(L);
    Key *keys = (Key *)lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof(Key), 0);
    int m = 0;
    lua_pushnil(L);
    while (m < n && lua_next(L, t) != 0) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_rawseti(L, found, ++m);
        keys[m - 1] = describe(L, -1);  // its string lives in `found`
        keys[m - 1].slot = m;
    }
    lua_settop(L, found + 1);  // lua_next's last key, when the count ended the loop
    qsort(keys, (size_t)m, sizeof(Key), compare_keys);
    lua_createtable(L, m, 2);
    for (int j = 0; j < m; j++) {
        lua_rawgeti(L, found, keys[j].slot);
        lua_rawseti(L, -2, j + 1);
    }
    lua_pushinteger(L, m);
    lua_rawseti(L, -2, 0);
    lua_pushinteger(L, 0);
    lua_rawseti(L, -2, -1);
    if (luaL_getsubtable(L, LUA_REGISTRYINDEX, WEAKVALUES) == 0) {
        lua_pushliteral(L, "v");
        lua_setfield(L, -2, "__mode");
    }
    lua_setmetatable(L, -2);
    lua_replace(L, found);
    lua_settop(L, found);
}

// The table at 1's snapshot goes from the weak table at `snaps`.
static void forget_snapshot(lua_State *L, int snaps) {
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    lua_rawset(L, snaps);
}

static int raw_next(lua_State *L) {
    return lua_next(L, 1) ? 2 : 0;
}

// Raises "invalid key to 'next'" as Lua's next would, if t (1) has no
// such key k (2), live or dead.
static void check_key(lua_State *L) {
    lua_pushcfunction(L, raw_next);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK)
        lua_error(L);
}

// The first position j in snapshot S (at s, n keys) whose key is after k
// (at 2); collected keys (nil) are passed over.
static lua_Integer search(lua_State *L, int s, lua_Integer n) {
    Key k = describe(L, 2);
    lua_Integer lo = 1, hi = n, result = n + 1;
    while (lo <= hi) {
        lua_Integer mid = lo + (hi - lo) / 2, m = mid;
        while (m <= hi && lua_rawgeti(L, s, m) == LUA_TNIL) {
            lua_pop(L, 1);
            m++;
        }
        if (m > hi) {
            hi = mid - 1;
            continue;
        }
        Key km = describe(L, -1);
        int c = compare(&km, &k);
        lua_pop(L, 1);
        if (c > 0) {
            result = m;
            hi = mid - 1;
        } else {
            lo = m + 1;
        }
    }
    return result;
}

static int mm_next(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);
    int snaps = snapshots(L);  // 3
    if (lua_isnil(L, 2)) {
        // A traversal starts: the table may have changed since the last.
        forget_snapshot(L, snaps);
        lua_pushnil(L);  // 4: the first key so far
        Key best;
        int have = 0;
        lua_pushnil(L);
        while (lua_next(L, 1) != 0) {
            lua_pop(L, 1);
            Key k = describe(L, -1);
            if (!have || compare(&k, &best) < 0) {
                lua_copy(L, -1, 4);
                best = describe(L, 4);
                have = 1;
            }
        }
        if (!have)
            return 1;  // nil
        lua_pushvalue(L, 4);
        lua_rawget(L, 1);
        return 2;
    }
    lua_pushvalue(L, 1);
    if (lua_rawget(L, snaps) == LUA_TNIL) {  // 4
        lua_pop(L, 1);
        check_key(L);
        build(L, 1);
        lua_pushvalue(L, 1);
        lua_pushvalue(L, -2);
        lua_rawset(L, snaps);
    }
    if (lua_type(L, 4) != LUA_TTABLE) {  // a sequence: Lua's own order
        lua_settop(L, 2);
        if (lua_next(L, 1))
            return 2;
        forget_snapshot(L, snaps);
        lua_pushnil(L);
        return 1;
    }
    int s = 4;
    lua_rawgeti(L, s, 0);
    lua_Integer n = lua_tointeger(L, -1);
    lua_rawgeti(L, s, -1);
    lua_Integer c = lua_tointeger(L, -1);
    lua_pop(L, 2);
    lua_Integer j;
    if (c >= 1 && c <= n && (lua_rawgeti(L, s, c), lua_rawequal(L, -1, 2))) {
        j = c + 1;
    } else {
        if (c >= 1 && c <= n)
            lua_pop(L, 1);
        check_key(L);
        j = search(L, s, n);
    }
    lua_settop(L, 4);
    for (; j <= n; j++) {
        if (lua_rawgeti(L, s, j) == LUA_TNIL) {
            lua_pop(L, 1);
            continue;
        }
        lua_pushvalue(L, -1);
        if (lua_rawget(L, 1) == LUA_TNIL) {  // deleted
            lua_pop(L, 2);
            continue;
        }
        lua_pushinteger(L, j);
        lua_rawseti(L, s, -1);
        return 2;
    }
    // The traversal ended: its snapshot goes (it may hold long strings).
    forget_snapshot(L, snaps);
    lua_pushnil(L);
    return 1;
}

static int pairs_cont(lua_State *L, int status, lua_KContext k) {
    (void)L;
    (void)status;
    (void)k;
    return 3;
}

// lbaselib's pairs, returning our next.
static int mm_pairs(lua_State *L) {
    luaL_checkany(L, 1);
    if (luaL_getmetafield(L, 1, "__pairs") == LUA_TNIL) {
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_pushvalue(L, 1);
        lua_pushnil(L);
    } else {
        lua_pushvalue(L, 1);
        lua_callk(L, 1, 3, 0, pairs_cont);
    }
    return 3;
}

void mmlab_opennext(lua_State *L) {
    lua_pushcfunction(L, mm_next);
    lua_pushvalue(L, -1);
    lua_setglobal(L, "next");
    lua_pushcclosure(L, mm_pairs, 1);
    lua_setglobal(L, "pairs");
}
