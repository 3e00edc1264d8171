// Where a binding was called from, cheaply: every handle records the
// script line that created and dropped it, and lua_getinfo("Sl") costs
// more than the rest of creating a handle (the line comes from walking the
// function's line info). The instruction the calling Lua function runs
// next names the call site for as long as the function lives, and Lua
// keeps it in the CallInfo, which the API does not expose: read there,
// for Lua 5.4's layout, checked against the running library first.
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "shim.h"

// Lua 5.4 (lstate.h, lobject.h): CallInfo {StkId func; StkId top;
// CallInfo *previous, *next; union {struct {const Instruction *savedpc;
// ...} l; ...} u; ...}; a stack value is a TValue {Value value_; lu_byte
// tt_}; a Lua closure's tag is LUA_VLCL marked collectable (ctb).
#define CI_FUNC 0
#define CI_SAVEDPC (4 * sizeof(void *))
#define TV_TAG sizeof(void *)
#define TAG_LUA_CLOSURE (LUA_TFUNCTION | (0 << 4) | (1 << 6))

static int layout = -1;  // 1: checked, 0: unknown (every call site goes through lua_getinfo)

// SAFETY: reads the func slot and savedpc of a live CallInfo that
// lua_getstack just returned, at the offsets above (checked by
// mmlab_checkcallsite before any use).
static const void *frame_pc(lua_Debug *ar, int *is_lua) {
    const char *ci = (const char *)ar->i_ci;
    const unsigned char *func = *(const unsigned char *const *)(ci + CI_FUNC);
    *is_lua = func[TV_TAG] == TAG_LUA_CLOSURE;
    return *is_lua ? *(const void *const *)(ci + CI_SAVEDPC) : NULL;
}

const void *mmlab_callsite(lua_State *L, int *level) {
    if (layout != 1)
        return NULL;
    lua_Debug ar;
    for (int i = 1; lua_getstack(L, i, &ar); i++) {
        int is_lua;
        const void *pc = frame_pc(&ar, &is_lua);
        if (is_lua) {
            *level = i;
            return pc;
        }
    }
    return NULL;
}

// A direct-mapped cache: one slot per hashed call site.
#define SITE_CACHE_SIZE 1024
struct mmlab_SiteSlot {
    const void *pc;
    uint32_t site;
};

static size_t site_slot(const void *pc) {
    uint64_t h = ((uint64_t)(uintptr_t)pc >> 2) * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h >> 40) & (SITE_CACHE_SIZE - 1);
}

uint32_t mmlab_cachedsite(lua_State *L, const void **pc, int *level) {
    *pc = mmlab_callsite(L, level);
    mmlab_State *s = mmlab_state(L);
    if (*pc == NULL || s->site_cache == NULL)
        return 0;
    if (s->site_cache_epoch != s->site_epoch) {
        // A collection may have freed a function and reused its code's address.
        memset(s->site_cache, 0, SITE_CACHE_SIZE * sizeof *s->site_cache);
        s->site_cache_epoch = s->site_epoch;
        return 0;
    }
    const struct mmlab_SiteSlot *slot = &s->site_cache[site_slot(*pc)];
    return slot->pc == *pc ? slot->site : 0;
}

void mmlab_cachesite(mmlab_State *s, const void *pc, uint32_t site) {
    if (s->site_cache != NULL && s->site_cache_epoch == s->site_epoch)
        s->site_cache[site_slot(pc)] = (struct mmlab_SiteSlot){pc, site};
}

int mmlab_opensitecache(mmlab_State *s) {
    s->site_cache = calloc(SITE_CACHE_SIZE, sizeof *s->site_cache);
    s->site_cache_epoch = s->site_epoch;
    return s->site_cache != NULL;
}

void mmlab_closesitecache(mmlab_State *s) {
    free(s->site_cache);
    s->site_cache = NULL;
}

static const void *seen[3];
static int probe(lua_State *L) {
    lua_Debug ar;
    int i = (int)lua_tointeger(L, 1), is_lua = 0;
    seen[i] = lua_getstack(L, 1, &ar) ? frame_pc(&ar, &is_lua) : NULL;
    // The caller's closure is where the CallInfo says: getinfo("f") agrees.
    if (is_lua && lua_getinfo(L, "f", &ar)) {
        const void *fn = lua_topointer(L, -1);
        const void *slot = *(const void *const *)*(const char *const *)((const char *)ar.i_ci + CI_FUNC);
        if (fn != slot)
            seen[i] = NULL;
    }
    return 0;
}

int mmlab_checkcallsite(lua_State *L) {
    int top = lua_gettop(L);
    layout = 0;
    if (luaL_loadstring(L, "local probe = ...\nprobe(0)\nprobe(1) probe(2)") == LUA_OK) {
        lua_pushcfunction(L, probe);
        memset(seen, 0, sizeof seen);
        if (lua_pcall(L, 1, 0, 0) == LUA_OK && seen[0] != NULL && seen[1] != NULL && seen[2] != NULL &&
            seen[0] != seen[1] && seen[1] != seen[2] && (uintptr_t)seen[0] % 4 == 0 &&
            (uintptr_t)seen[0] < (uintptr_t)seen[1] && (uintptr_t)seen[1] < (uintptr_t)seen[2])
            layout = 1;
    }
    lua_settop(L, top);
    return layout;
}

// The canary: a userdata whose __gc counts a collection that may have
// freed functions, and leaves a new canary for the next one.
static int canary_gc(lua_State *L);

static void new_canary(lua_State *L) {
    lua_newuserdatauv(L, 0, 0);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, canary_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_pop(L, 1);
}

static int canary_gc(lua_State *L) {
    mmlab_state(L)->site_epoch++;
    new_canary(L);
    return 0;
}

void mmlab_watchcollections(lua_State *L) { new_canary(L); }

// Whether the running C function (an __index) was reached from a method
// call `v:name()` (OP_SELF, the instruction before the caller's savedpc)
// rather than a field read `v.name`. Lua 5.4's opcode numbering, checked
// with the call-site layout.
#define OP_MASK 0x7f
#define OP_SELF_54 20
static int self_layout = -1;

static int self_opcode(lua_State *L) {
    lua_Debug ar;
    int is_lua;
    if (!lua_getstack(L, 1, &ar))
        return -1;
    const uint32_t *pc = frame_pc(&ar, &is_lua);
    return is_lua && pc != NULL ? (int)(pc[-1] & OP_MASK) : -1;
}

int mmlab_calledasmethod(lua_State *L) {
    if (layout != 1 || self_layout != 1)
        return 1;  // unknown: say so as for a call
    return self_opcode(L) == OP_SELF_54;
}

static int self_seen[2];
static int self_probe(lua_State *L) {
    if (lua_type(L, 2) == LUA_TSTRING)  // as __index (t, key); called as the method, (t, true)
        self_seen[strcmp(lua_tostring(L, 2), "method") == 0 ? 0 : 1] = self_opcode(L);
    lua_pushcfunction(L, self_probe);
    return 1;
}

int mmlab_checkmethodcalls(lua_State *L) {
    int top = lua_gettop(L);
    self_layout = 0;
    if (layout == 1 && luaL_loadstring(L, "local t = ...\nlocal _ = t.field\nt:method(true)") == LUA_OK) {
        lua_createtable(L, 0, 0);
        lua_createtable(L, 0, 1);
        lua_pushcfunction(L, self_probe);
        lua_setfield(L, -2, "__index");
        lua_setmetatable(L, -2);
        self_seen[0] = self_seen[1] = -2;
        if (lua_pcall(L, 1, 0, 0) == LUA_OK && self_seen[0] == OP_SELF_54 && self_seen[1] != OP_SELF_54 && self_seen[1] >= 0)
            self_layout = 1;
    }
    lua_settop(L, top);
    return self_layout;
}

void mmlab_where(lua_State *L, char *buf, size_t size) {
    mmlab_State *s = mmlab_state(L);
    lua_State *T = s->depth > 0 ? s->chain[s->depth - 1].co : s->current;
    if (T == NULL)
        T = L;
    lua_Debug ar;
    for (int level = 0; lua_getstack(T, level, &ar); level++) {
        if (lua_getinfo(T, "Sl", &ar) && ar.currentline > 0) {
            const char *name = strrchr(ar.short_src, '/');  // the file's name: schedules survive a move
            snprintf(buf, size, "%s:%d", name != NULL ? name + 1 : ar.short_src, ar.currentline);
            return;
        }
    }
    snprintf(buf, size, "?");
}
