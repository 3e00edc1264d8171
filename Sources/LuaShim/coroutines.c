// coroutine.* as lcorolib.c has them, for scripts whose main chunk and
// tasks run as coroutines of the driver.
//
// A task's own thread is the script's main thread: coroutine.running()
// says so, it cannot yield, resume or close. A blocking binding inside a
// script's coroutine inside a task yields that coroutine with the engine's
// mark (engine_yield); the resume that sees the mark parks the coroutine
// and yields its own thread the same way, up to the task's thread and the
// driver. When the task is woken, each resume's continuation resumes its
// coroutine again, innermost last, and the binding goes on where it waited
// (the pattern of OpenResty's and cqueues' coroutine wrappers).
#include <lualib.h>
#include <string.h>
#include "shim.h"

// The registry table of parked resumers: thread -> the coroutine its
// resume waits in, while an engine yield passes through it. Scripts reach
// it through debug.getregistry(): an entry counts only if its coroutine
// has the PARKED flag, which only we set.
static const char *const PARKED = "mmlab.parked";

static int parked_table(lua_State *L) {
    luaL_getsubtable(L, LUA_REGISTRYINDEX, PARKED);
    return lua_gettop(L);
}

int mmlab_canwait(lua_State *L) {
    mmlab_State *s = mmlab_state(L);
    if (s->current == NULL || !lua_isyieldable(L))
        return 0;
    if (s->depth == 0)
        return L == s->current;
    if (s->depth > MMLAB_MAXCHAIN || s->chain[s->depth - 1].co != L || s->chain[0].from != s->current)
        return 0;
    for (int i = 0; i < s->depth; i++)
        if (!s->chain[i].yieldable)
            return 0;
    return 1;
}

static void set_parked(lua_State *L, lua_State *co) {
    parked_table(L);
    lua_pushthread(L);
    if (co != NULL)
        mmlab_pushthread(L, co);
    else
        lua_pushnil(L);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

int mmlab_parked(lua_State *L, lua_State *T) {
    int n = 0;
    int table = parked_table(L);
    for (lua_State *from = T;; n++) {
        mmlab_pushthread(L, from);
        if (lua_rawget(L, table) != LUA_TTHREAD || !(mmlab_flags(lua_tothread(L, -1)) & MMLAB_PARKED)) {
            lua_pop(L, 1);
            break;
        }
        lua_State *co = lua_tothread(L, -1);  // a result
        mmlab_pushthread(L, from);
        lua_pushnil(L);
        lua_rawset(L, table);
        mmlab_setflags(co, 0, MMLAB_PARKED);
        from = co;
    }
    lua_remove(L, table);
    return n;
}

#define COS_RUN 0
#define COS_DEAD 1
#define COS_YIELD 2
#define COS_NORM 3
static const char *const statname[] = {"running", "dead", "suspended", "normal"};

// lcorolib's auxstatus; a task's thread and a parked coroutine are active
// (normal), as a main thread or a resuming coroutine would be.
static int auxstatus(lua_State *L, lua_State *co) {
    if (L == co)
        return COS_RUN;
    int flags = mmlab_flags(co);
    lua_Debug ar;
    switch (lua_status(co)) {
    case LUA_YIELD:
        return (flags & (MMLAB_TASK | MMLAB_PARKED)) ? COS_NORM : COS_YIELD;
    case LUA_OK:
        if (lua_getstack(co, 0, &ar))
            return COS_NORM;
        if (lua_gettop(co) == 0)
            return COS_DEAD;
        return (flags & MMLAB_TASK) ? COS_NORM : COS_YIELD;  // a task not yet started is the driver's
    default:
        return COS_DEAD;
    }
}

static lua_State *getco(lua_State *L) {
    lua_State *co = lua_tothread(L, 1);
    luaL_argexpected(L, co, 1, "thread");
    return co;
}

enum { RESUME, WRAP };

static int resume_cont(lua_State *L, int status, lua_KContext ctx);

// Resumes co with the narg values on its stack; lcorolib's auxresume from
// there on: the count of results moved to L, or -1 with the error on L.
static int resume_in(lua_State *L, lua_State *co, int narg, int kind) {
    mmlab_State *s = mmlab_state(L);
    if (s->depth < MMLAB_MAXCHAIN)
        s->chain[s->depth] = (mmlab_Link){co, L, lua_isyieldable(L)};
    s->depth++;
    mmlab_synchook(L, co);
    int nres;
    int status = lua_resume(co, L, narg, &nres);
    s->depth--;
    if (status == LUA_YIELD && s->engine_yield == co) {
        // The engine's yield (a wait, a preemption): it goes on to our resumer.
        lua_pop(co, nres);
        mmlab_setflags(co, MMLAB_PARKED, 0);
        set_parked(L, co);
        mmlab_engineyield(L);
        return lua_yieldk(L, 0, (lua_KContext)kind, resume_cont);
    }
    mmlab_synchook(L, L);
    if (status == LUA_OK || status == LUA_YIELD) {
        if (!lua_checkstack(L, nres + 1)) {
            lua_pop(co, nres);
            lua_pushliteral(L, "too many results to resume");
            return -1;
        }
        lua_xmove(co, L, nres);
        return nres;
    }
    lua_xmove(co, L, 1);
    return -1;
}

static int auxresume(lua_State *L, lua_State *co, int narg) {
    if (mmlab_flags(co) & (MMLAB_TASK | MMLAB_PARKED)) {
        // The driver's: Lua's own refusal, without touching it.
        lua_pushstring(L, auxstatus(L, co) == COS_DEAD ? "cannot resume dead coroutine" : "cannot resume non-suspended coroutine");
        return -1;
    }
    if (!lua_checkstack(co, narg)) {
        lua_pushliteral(L, "too many arguments to resume");
        return -1;
    }
    lua_xmove(L, co, narg);
    return resume_in(L, co, narg, RESUME);
}

static int finish_resume(lua_State *L, int r) {
    if (r < 0) {
        lua_pushboolean(L, 0);
        lua_insert(L, -2);
        return 2;
    }
    lua_pushboolean(L, 1);
    lua_insert(L, -(r + 1));
    return r + 1;
}

static int finish_wrap(lua_State *L, lua_State *co, int r) {
    if (r >= 0)
        return r;
    int stat = lua_status(co);
    if (stat != LUA_OK && stat != LUA_YIELD) {  // an error in the coroutine
        stat = lua_resetthread(co);             // closes its tbc variables
        lua_xmove(co, L, 1);
    }
    // The engine's stop is not the coroutine's error: no position for it.
    const char *stopped = mmlab_state(L)->stopped;
    int stop = stopped != NULL && lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), stopped) == 0;
    if (stat != LUA_ERRMEM && !stop && lua_type(L, -1) == LUA_TSTRING) {
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
    }
    return lua_error(L);
}

// The task was woken: resume the coroutine the engine's yield came from.
static int resume_cont(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    int kind = (int)ctx;
    lua_State *co = lua_tothread(L, kind == RESUME ? 1 : lua_upvalueindex(1));
    mmlab_setflags(co, 0, MMLAB_PARKED);
    set_parked(L, NULL);
    int r = resume_in(L, co, 0, kind);
    return kind == RESUME ? finish_resume(L, r) : finish_wrap(L, co, r);
}

static int co_resume(lua_State *L) {
    lua_State *co = getco(L);
    return finish_resume(L, auxresume(L, co, lua_gettop(L) - 1));
}

static int auxwrap(lua_State *L) {
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    if (mmlab_flags(co) & MMLAB_PARKED)
        return luaL_error(L, "cannot resume non-suspended coroutine");
    if (!lua_checkstack(co, lua_gettop(L)))
        return luaL_error(L, "too many arguments to resume");
    int narg = lua_gettop(L);
    lua_xmove(L, co, narg);
    return finish_wrap(L, co, resume_in(L, co, narg, WRAP));
}

static int co_create(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_State *NL = lua_newthread(L);
    mmlab_inherithook(L, NL);
    lua_pushvalue(L, 1);
    lua_xmove(L, NL, 1);
    return 1;
}

static int co_wrap(lua_State *L) {
    co_create(L);
    lua_pushcclosure(L, auxwrap, 1);
    return 1;
}

static int co_yield(lua_State *L) {
    if (mmlab_flags(L) & MMLAB_TASK)
        return luaL_error(L, "attempt to yield from outside a coroutine");
    return lua_yield(L, lua_gettop(L));
}

static int co_status(lua_State *L) {
    lua_State *co = getco(L);
    lua_pushstring(L, statname[auxstatus(L, co)]);
    return 1;
}

static int co_isyieldable(lua_State *L) {
    lua_State *co = lua_isnone(L, 1) ? L : getco(L);
    lua_pushboolean(L, !(mmlab_flags(co) & MMLAB_TASK) && lua_isyieldable(co));
    return 1;
}

static int co_running(lua_State *L) {
    int ismain = lua_pushthread(L) || (mmlab_flags(L) & MMLAB_TASK);
    lua_pushboolean(L, ismain);
    return 2;
}

// The binding a suspended coroutine is inside (it yielded from the
// callback of a protected call a binding made, such as with_page_mapped's):
// its name is pushed, or nothing when there is none.
static int binding_inside(lua_State *L, lua_State *co) {
    lua_Debug ar;
    for (int level = 0; lua_getstack(co, level, &ar); level++) {
        lua_getinfo(co, "f", &ar);
        int ours = lua_tocfunction(co, -1) == mmlab_trampoline;
        if (ours) {
            int got = lua_getupvalue(co, -1, 2) != NULL;
            const char *name = got ? lua_tostring(co, -1) : NULL;
            lua_pushstring(L, name != NULL ? name : "?");
            lua_pop(co, got ? 2 : 1);
            return 1;
        }
        lua_pop(co, 1);
    }
    return 0;
}

static int co_close(lua_State *L) {
    lua_State *co = getco(L);
    int status = auxstatus(L, co);
    if (status != COS_DEAD && status != COS_YIELD)
        return luaL_error(L, "cannot close a %s coroutine", statname[status]);
    // Closing would end the callback without its binding's finish: what
    // the binding lent it (a Mapping, a VmaNew) would stay borrowed.
    if (status == COS_YIELD && binding_inside(L, co))
        return luaL_error(L, "cannot close a coroutine suspended inside the callback of '%s': resume it past the callback first",
                          lua_tostring(L, -1));
    if (lua_resetthread(co) == LUA_OK) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushboolean(L, 0);
    lua_xmove(co, L, 1);
    return 2;
}

void mmlab_opencoroutines(lua_State *L) {
    static const luaL_Reg funcs[] = {
        {"create", co_create}, {"resume", co_resume}, {"wrap", co_wrap}, {"yield", co_yield}, {"status", co_status},
        {"isyieldable", co_isyieldable}, {"running", co_running}, {"close", co_close}, {NULL, NULL},
    };
    mmlab_replacefuncs(L, LUA_COLIBNAME, funcs);
}
