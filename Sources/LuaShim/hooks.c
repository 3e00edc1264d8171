// The debug hook belongs to the engine; scripts get their own view of it.
//
// Lua has one hook per thread. The engine's (`engine_hook`) is the only
// one ever installed: it counts instructions for preemption, the limits
// and the trace clock while the engine needs that, and it calls the
// script's hook, set with our debug.sethook, for the events and count the
// script asked for. Nothing a script does to hooks can remove the
// engine's: debug.sethook only edits the script's record.
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <lualib.h>
#include "shim.h"

// The registry table of script hooks, ldblib's: thread -> ScriptHook (weak
// keys), the hook function its user value. Scripts reach it through
// debug.getregistry(): a record is trusted only by its size and magic.
static const char *const HOOKS = "_HOOKKEY";
#define HOOK_MAGIC 0x6d6d6c6162686f6bULL

typedef struct ScriptHook {
    uint64_t magic;
    int mask;         // the script's events: LUA_MASKCALL | RET | LINE | COUNT
    int count;        // its count, as given
    int left;         // instructions to its next count event
    int engine_left;  // and to the engine's, while both count
} ScriptHook;

static void engine_hook(lua_State *L, lua_Debug *ar);

// T's script hook, or NULL; with `push`, its record stays on L's stack
// (nothing pushed when there is none). The record lives while T does: the
// table holds it, and T is alive.
static ScriptHook *find_hook(lua_State *L, lua_State *T, int push) {
    if (!(mmlab_flags(T) & MMLAB_HOOKED))
        return NULL;
    ScriptHook *h = NULL;
    if (lua_getfield(L, LUA_REGISTRYINDEX, HOOKS) == LUA_TTABLE) {
        mmlab_pushthread(L, T);
        lua_rawget(L, -2);
        // SAFETY: a full userdata of our size carrying our magic is a record we made.
        if (lua_type(L, -1) == LUA_TUSERDATA && lua_rawlen(L, -1) == sizeof(ScriptHook) &&
            ((ScriptHook *)lua_touserdata(L, -1))->magic == HOOK_MAGIC)
            h = (ScriptHook *)lua_touserdata(L, -1);
        lua_remove(L, -2);
    }
    if (h == NULL || !push)
        lua_pop(L, 1);
    if (h == NULL)
        mmlab_setflags(T, 0, MMLAB_HOOKED);  // a flag copied from the main thread
    return h;
}

static int engine_counts(mmlab_State *s) {
    return s->contended || s->max_hook_ticks != 0 || s->deadline_ns != 0 || s->tracing || s->stopped != NULL;
}

void mmlab_synchook(lua_State *L, lua_State *T) {
    mmlab_State *s = mmlab_state(T);
    ScriptHook *h = s->script_hooks ? find_hook(L, T, 0) : NULL;
    int mask = 0, count = 0;
    if (s->stopped != NULL) {
        // Sticky: every instruction raises the stop again, so that no
        // pcall keeps the script going.
        mask = LUA_MASKCOUNT;
        count = 1;
    } else {
        int engine = engine_counts(s);
        int script = h != NULL && (h->mask & LUA_MASKCOUNT);
        if (h != NULL)
            mask = h->mask & ~LUA_MASKCOUNT;
        if (engine && script)
            count = h->left < h->engine_left ? h->left : h->engine_left;
        else if (engine)
            count = s->hook_interval;
        else if (script)
            count = h->left;
        if (count > 0)
            mask |= LUA_MASKCOUNT;
    }
    if (mask == 0) {
        if (lua_gethook(T) != NULL)
            lua_sethook(T, NULL, 0, 0);
        return;
    }
    // Setting the hook restarts its count: only when something changed.
    if (lua_gethook(T) != engine_hook || lua_gethookmask(T) != mask ||
        ((mask & LUA_MASKCOUNT) && lua_gethookcount(T) != count))
        lua_sethook(T, engine_hook, mask, count);
}

// The byte of `allowhook` in Lua 5.4's lua_State (lstate.h: CommonHeader
// {next, tt, marked}, status, allowhook), which lua_sethook's API cannot
// reach: Lua turns hooks off while a hook runs, so a script's hook that
// loops would escape the limits. Verified against the running library
// before use (`layout_known`); without it, hooks stay off in hooks.
#define ALLOWHOOK_OFFSET (sizeof(void *) + 3)
#define STATUS_OFFSET (sizeof(void *) + 2)
#define TT_OFFSET (sizeof(void *))
static int layout_known = -1;

// SAFETY: reads three bytes inside the lua_State block (far smaller than
// the struct), compared with what the API reports of the same thread.
static int check_layout(lua_State *L, int in_hook) {
    const unsigned char *b = (const unsigned char *)L;
    return b[TT_OFFSET] == LUA_TTHREAD && b[STATUS_OFFSET] == (unsigned char)lua_status(L) &&
           b[ALLOWHOOK_OFFSET] == (in_hook ? 0 : 1);
}

// SAFETY: writes allowhook only where check_layout found it, inside a hook.
static void allow_hooks(lua_State *L, int on) {
    if (layout_known == 1)
        ((unsigned char *)L)[ALLOWHOOK_OFFSET] = (unsigned char)on;
}

static const char *const hooknames[] = {"call", "return", "line", "count", "tail call"};

// Calls T's script hook as ldblib's hookf does: (event name, line or nil).
static void call_script(lua_State *L, lua_Debug *ar) {
    if (find_hook(L, L, 1) == NULL)  // the record stays on the stack: the hook may unset itself
        return;
    if (lua_getiuservalue(L, -1, 1) != LUA_TFUNCTION) {
        lua_pop(L, 2);
        return;
    }
    lua_pushstring(L, hooknames[ar->event]);
    if (ar->currentline >= 0)
        lua_pushinteger(L, ar->currentline);
    else
        lua_pushnil(L);
    if (layout_known < 0)
        layout_known = check_layout(L, 1);
    mmlab_State *s = mmlab_state(L);
    lua_State *outer = s->in_hook;
    s->in_hook = L;     // the hook's own code raises no script events
    allow_hooks(L, 1);  // but the engine's count goes on inside it
    int status = lua_pcall(L, 2, 0, 0);
    allow_hooks(L, 0);
    s->in_hook = outer;
    if (status != LUA_OK)
        lua_error(L);  // the hook's error, as Lua would raise it
    lua_pop(L, 1);
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

// The engine's tick: the clock, the limits. May raise.
static void engine_tick(lua_State *L, mmlab_State *s) {
    s->clock++;
    s->hook_ticks++;
    if (s->stopped == NULL && s->max_hook_ticks != 0 && s->hook_ticks > s->max_hook_ticks)
        s->stopped = "the script ran past its --max-instructions limit";
    // The wall clock stops a run; it never reaches the model.
    if (s->stopped == NULL && s->deadline_ns != 0 && now_ns() > s->deadline_ns)
        s->stopped = "the script ran past its --timeout";
    if (s->stopped != NULL) {
        mmlab_synchook(L, L);
        mmlab_checklimits(L, s);
    }
    if (s->over_heap)
        mmlab_checklimits(L, s);
}

void mmlab_sethookforinterrupt(lua_State *T) {
    lua_sethook(T, engine_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

static int event_mask(int event) {
    return event == LUA_HOOKRET ? LUA_MASKRET : event == LUA_HOOKLINE ? LUA_MASKLINE : LUA_MASKCALL;
}

// The scheduler's preemption point of the count hook: a yield from a hook
// returns to the VM, which yields once the hook is done.
static void preempt(lua_State *L, mmlab_State *s) {
    if (s->contended && mmlab_canwait(L) && s->preempt(L, 1)) {
        mmlab_engineyield(L);
        lua_yield(L, 0);
    }
}

static void engine_hook(lua_State *L, lua_Debug *ar) {
    // A yield from a hook returns to the VM, which then calls the line
    // hook of the same instruction: nothing may run until the resume.
    if (lua_status(L) == LUA_YIELD)
        return;
    mmlab_State *s = mmlab_state(L);
    if (s->interrupted) {  // lua.c's lstop: once, and catchable
        s->interrupted = 0;
        mmlab_synchook(L, L);
        luaL_error(L, "interrupted!");
    }
    ScriptHook *h = s->script_hooks ? find_hook(L, L, 0) : NULL;
    if (ar->event != LUA_HOOKCOUNT) {
        if (h != NULL && s->in_hook != L && (h->mask & event_mask(ar->event)))
            call_script(L, ar);
        if (ar->event == LUA_HOOKLINE && s->preempt_due == L) {
            s->preempt_due = NULL;
            preempt(L, s);
        }
        return;
    }
    int engine = 1, script = 0;
    if (h != NULL && (h->mask & LUA_MASKCOUNT) && s->stopped == NULL) {
        int k = lua_gethookcount(L);
        h->left -= k;
        h->engine_left -= k;
        if (h->left <= 0) {
            script = s->in_hook != L;
            h->left = h->count;
        }
        engine = h->engine_left <= 0;
        if (engine)
            h->engine_left = s->hook_interval;
    }
    engine = engine && engine_counts(s);
    if (engine)
        engine_tick(L, s);
    if (script)
        call_script(L, ar);
    if (h != NULL || s->hooks_dirty) {
        s->hooks_dirty = 0;
        mmlab_synchook(L, L);  // the next count, and what the script's hook changed
    }
    if (!engine)
        return;
    if (h != NULL && (h->mask & LUA_MASKLINE) && s->in_hook != L)
        s->preempt_due = L;  // a yield here would swallow this instruction's line event
    else
        preempt(L, s);
}

// ldblib's getthread: an optional thread argument first.
static lua_State *getthread(lua_State *L, int *arg) {
    if (lua_isthread(L, 1)) {
        *arg = 1;
        return lua_tothread(L, 1);
    }
    *arg = 0;
    return L;
}

static int makemask(const char *smask, int count) {
    int mask = 0;
    if (strchr(smask, 'c')) mask |= LUA_MASKCALL;
    if (strchr(smask, 'r')) mask |= LUA_MASKRET;
    if (strchr(smask, 'l')) mask |= LUA_MASKLINE;
    if (count > 0) mask |= LUA_MASKCOUNT;
    return mask;
}

static char *unmakemask(int mask, char *smask) {
    int i = 0;
    if (mask & LUA_MASKCALL) smask[i++] = 'c';
    if (mask & LUA_MASKRET) smask[i++] = 'r';
    if (mask & LUA_MASKLINE) smask[i++] = 'l';
    smask[i] = '\0';
    return smask;
}

// debug.sethook([thread,] hook, mask [, count]): ldblib's, into the
// script's record.
static int db_sethook(lua_State *L) {
    int arg, mask = 0, count = 0;
    lua_State *L1 = getthread(L, &arg);
    if (lua_isnoneornil(L, arg + 1)) {
        lua_settop(L, arg + 1);
    } else {
        const char *smask = luaL_checkstring(L, arg + 2);
        luaL_checktype(L, arg + 1, LUA_TFUNCTION);
        count = (int)luaL_optinteger(L, arg + 3, 0);
        mask = makemask(smask, count);
    }
    if (!luaL_getsubtable(L, LUA_REGISTRYINDEX, HOOKS)) {
        lua_pushliteral(L, "k");
        lua_setfield(L, -2, "__mode");
        lua_pushvalue(L, -1);
        lua_setmetatable(L, -2);
    }
    if (L1 != L && !lua_checkstack(L1, 1))
        return luaL_error(L, "stack overflow");
    mmlab_pushthread(L, L1);
    if (mask == 0) {
        lua_pushnil(L);  // no events: no hook, as lua_sethook
    } else {
        ScriptHook *h = (ScriptHook *)lua_newuserdatauv(L, sizeof(ScriptHook), 1);
        h->magic = HOOK_MAGIC;
        h->mask = mask;
        h->count = count;
        h->left = count;
        h->engine_left = mmlab_state(L)->hook_interval;
        lua_pushvalue(L, arg + 1);
        lua_setiuservalue(L, -2, 1);
    }
    lua_rawset(L, -3);
    if (mask != 0) {
        mmlab_state(L)->script_hooks = 1;
        mmlab_setflags(L1, MMLAB_HOOKED, 0);
    }
    mmlab_synchook(L, L1);
    return 0;
}

void mmlab_inherithook(lua_State *L, lua_State *NL) {
    ScriptHook *h = mmlab_state(L)->script_hooks ? find_hook(L, L, 0) : NULL;
    if (h == NULL)
        return;
    // lua_newthread copies the creator's mask and count; ldblib's hook
    // function is per thread, so the new one has none to call.
    luaL_getsubtable(L, LUA_REGISTRYINDEX, HOOKS);
    mmlab_pushthread(L, NL);
    ScriptHook *copy = (ScriptHook *)lua_newuserdatauv(L, sizeof(ScriptHook), 1);
    *copy = *h;
    copy->left = copy->count;
    copy->engine_left = mmlab_state(L)->hook_interval;
    lua_rawset(L, -3);
    lua_pop(L, 1);
    mmlab_setflags(NL, MMLAB_HOOKED, 0);
}

// debug.gethook([thread]): the script's hook, mask and count, or nil.
static int db_gethook(lua_State *L) {
    int arg;
    lua_State *L1 = getthread(L, &arg);
    if (L1 != L && !lua_checkstack(L1, 1))
        return luaL_error(L, "stack overflow");
    ScriptHook *h = find_hook(L, L1, 1);
    if (h == NULL) {
        lua_pushnil(L);
        return 1;
    }
    char buff[5];
    lua_getiuservalue(L, -1, 1);
    lua_pushstring(L, unmakemask(h->mask, buff));
    lua_pushinteger(L, h->count);
    return 3;
}

void mmlab_openhooks(lua_State *L) {
    if (layout_known < 0 && !check_layout(L, 0))
        layout_known = 0;
    static const luaL_Reg funcs[] = {{"sethook", db_sethook}, {"gethook", db_gethook}, {NULL, NULL}};
    mmlab_replacefuncs(L, LUA_DBLIBNAME, funcs);
}
