#include <stdlib.h>
#include <string.h>
#include <lualib.h>
#include "shim.h"

// luaL_argerror, naming the binding from its upvalue when the call site
// cannot (a method called through pcall).
static int argerror(lua_State *L, int arg, const char *extramsg) {
    lua_Debug ar;
    const char *name = NULL;
    if (lua_getstack(L, 0, &ar)) {
        lua_getinfo(L, "n", &ar);
        if (ar.namewhat != NULL && strcmp(ar.namewhat, "method") == 0) {
            arg--;
            if (arg == 0)
                return luaL_error(L, "calling '%s' on bad self (%s)", ar.name, extramsg);
        }
        name = ar.name;
    }
    if (name == NULL)
        name = lua_tostring(L, lua_upvalueindex(2));
    return luaL_error(L, "bad argument #%d to '%s' (%s)", arg, name ? name : "?", extramsg);
}

static int finish(lua_State *L, int r);

static int continue_pcall(lua_State *L, int status, lua_KContext ctx) {
    int base = (int)ctx;
    int r = mmlab_state(L)->finished(L, status == LUA_YIELD ? LUA_OK : status, base + 1);
    return r >= 0 ? r : finish(L, r);
}

const char mmlab_wait_token = 0;


// The task was woken: the binding's continuation runs where it left off.
static int continue_wait(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    (void)ctx;
    mmlab_State *s = mmlab_state(L);
    int vm_only = s->vm_only;
    s->vm_only = 0;
    int r = s->resumed(L);
    s->vm_only = vm_only;
    if (s->over_heap || s->stopped != NULL)
        mmlab_checklimits(L, s);
    return r >= 0 ? r : finish(L, r);
}

// The cold path: every sentinel. Swift has returned; raising is safe here.
static int finish(lua_State *L, int r) {
    if (r == MMLAB_RAISE)
        return lua_error(L);
    if (r == MMLAB_WAIT) {
        mmlab_engineyield(L);
        lua_pushlightuserdata(L, (void *)&mmlab_wait_token);
        return lua_yieldk(L, 1, 0, continue_wait);
    }
    if (r <= MMLAB_PCALL_BASE) {
        int nargs = MMLAB_PCALL_BASE - r;
        int base = lua_gettop(L) - nargs - 1;  // the function at base+1
        int status = lua_pcallk(L, nargs, LUA_MULTRET, 0, base, continue_pcall);
        return continue_pcall(L, status, base);
    }
    if (r <= MMLAB_ARGERROR_BASE)
        return argerror(L, MMLAB_ARGERROR_BASE - r, lua_tostring(L, -1));
    return luaL_error(L, "the engine: a binding returned unknown status %d", r);
}

static int continue_results(lua_State *L, int status, lua_KContext ctx) {
    (void)L;
    (void)status;
    return (int)ctx;  // the results are still on top
}

// After a binding returned `r` results, at the end of its budget: the
// scheduler may preempt the task here.
static int preemption_point(lua_State *L, mmlab_State *s, int r) {
    if (mmlab_canwait(L) && s->preempt(L, 0)) {
        mmlab_engineyield(L);
        return lua_yieldk(L, 0, (lua_KContext)r, continue_results);
    }
    if (s->budget <= 0)
        s->budget = 1;
    return r;
}

// A limit was passed: raise here, where only Lua and C frames are below.
int mmlab_checklimits(lua_State *L, mmlab_State *s) {
    if (s->stopped != NULL) {  // the same words wherever it is raised
        lua_pushstring(L, s->stopped);
        return lua_error(L);
    }
    if (s->over_heap && s->heap > s->max_heap) {
        s->over_heap = 0;
        return luaL_error(L, "not enough memory: the Lua heap reached its --max-memory cap (%zu bytes)", s->max_heap);
    }
    s->over_heap = 0;
    return 0;
}

// What upvalue 1 of every binding holds. Scripts cannot change a
// binding's upvalues (mmlab_guardupvalues), so the trampoline trusts it.
typedef struct BindingCell {
    mmlab_Binding fn;
} BindingCell;

static int handle_gc(lua_State *L);

int mmlab_trampoline(lua_State *L) {
    // SAFETY: upvalue 1 is the cell mmlab_pushbinding made: only
    // lua_setupvalue changes a C closure's upvalues, and debug.setupvalue
    // refuses bindings (mmlab_guardupvalues).
    const BindingCell *cell = (const BindingCell *)lua_touserdata(L, lua_upvalueindex(1));
    mmlab_Binding fn = cell->fn;
    mmlab_State *s = mmlab_state(L);
    int vm_only = s->vm_only;
    s->vm_only = 0;  // Swift runs: an allocation must not raise under it
    int r = fn(L);
    s->vm_only = vm_only;
    if (s->over_heap || s->stopped != NULL)
        mmlab_checklimits(L, s);
    if (s->hooks_dirty) {  // contention began or ended: the hook follows
        s->hooks_dirty = 0;
        mmlab_synchook(L, L);
    }
    if (r < 0)
        return finish(L, r);
    s->clock++;
    if (--s->budget > 0)
        return r;
    if (!s->contended) {  // alone: nothing to switch to, no need to ask
        s->budget = 64;
        return r;
    }
    return preemption_point(L, s, r);
}

// debug.setupvalue (ldblib.c's db_setupvalue), refusing the engine's
// bindings: their upvalues are the engine's state, and a changed one would
// call anything.
static int db_setupvalue(lua_State *L) {
    luaL_checkany(L, 3);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_CFunction f = lua_tocfunction(L, 1);
    if (f == mmlab_trampoline || f == handle_gc)
        return luaL_error(L, "cannot change the upvalues of a kernel binding");
    const char *name = lua_setupvalue(L, 1, (int)n);
    if (name == NULL)
        return 0;
    lua_pushstring(L, name);
    return 1;
}

void mmlab_guardupvalues(lua_State *L) {
    static const luaL_Reg funcs[] = {{"setupvalue", db_setupvalue}, {NULL, NULL}};
    mmlab_replacefuncs(L, LUA_DBLIBNAME, funcs);
}

void mmlab_replacefuncs(lua_State *L, const char *lib, const luaL_Reg *funcs) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, lib) == LUA_TTABLE)
        luaL_setfuncs(L, funcs, 0);
    lua_pop(L, 2);
}

// A handle's __gc: one whose drop already let go of its object has
// nothing left to do, and the collector calls this for every handle.
static int handle_gc(lua_State *L) {
    mmlab_Handle *h = mmlab_tohandle(L, 1);
    if (h == NULL)
        return 0;
    if (h->state >= 2) {  // dropped or moved (HandleState): only the object's retain is left
        void *object = h->object;
        h->object = NULL;
        if (object != NULL) {
            mmlab_state(L)->live_handles--;
            mmlab_state(L)->release(object);
        }
        return 0;
    }
    return mmlab_trampoline(L);  // the same upvalues as the binding's own closure
}

void mmlab_pushgc(lua_State *L, mmlab_Binding fn) {
    mmlab_pushbinding(L, fn, "__gc", 0);
    lua_getupvalue(L, -1, 1);
    lua_getupvalue(L, -2, 2);
    lua_pushcclosure(L, handle_gc, 2);
    lua_remove(L, -2);
}

void mmlab_pushbinding(lua_State *L, mmlab_Binding fn, const char *name, int nup) {
    BindingCell *cell = (BindingCell *)lua_newuserdatauv(L, sizeof(BindingCell), 0);
    cell->fn = fn;
    lua_pushstring(L, name);
    if (nup > 0)
        lua_rotate(L, -nup - 2, 2);
    lua_pushcclosure(L, mmlab_trampoline, nup + 2);
}

void *mmlab_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    mmlab_State *s = (mmlab_State *)ud;
    size_t old = ptr != NULL ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        s->heap -= old;
        return NULL;
    }
    if (s->max_heap != 0 && nsize > old && s->heap - old + nsize > s->max_heap) {
        // Refused where Lua raises in the VM; elsewhere granted, and raised
        // at the next hook or binding return.
        if (s->vm_only)
            return NULL;
        s->over_heap = 1;
    }
    void *p = realloc(ptr, nsize);
    if (p != NULL)
        s->heap = s->heap - old + nsize;
    return p;
}

void mmlab_useallocator(lua_State *L, mmlab_State *s) {
    s->heap = (size_t)lua_gc(L, LUA_GCCOUNT) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB);
    lua_setallocf(L, mmlab_alloc, s);
}

int mmlab_resume(lua_State *L, lua_State *from, int narg, int *nres) {
    mmlab_State *s = mmlab_state(L);
    int vm_only = s->vm_only;
    s->vm_only = 1;
    s->depth = 0;
    mmlab_synchook(L, L);
    int status = lua_resume(L, from, narg, nres);
    s->engine_yield = NULL;
    s->vm_only = vm_only;
    return status;
}
