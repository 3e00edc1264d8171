// What the shim's C files share and Swift does not see.
#ifndef MMLAB_SHIM_H
#define MMLAB_SHIM_H

#include "LuaShim.h"

// Sets `funcs` in the loaded standard library `lib` (package.loaded[lib]),
// replacing its own: how the engine gives scripts its versions of them.
void mmlab_replacefuncs(lua_State *L, const char *lib, const luaL_Reg *funcs);

// Raises the limit that was passed (--max-memory deferred, or the sticky
// stop of --timeout/--max-instructions), if any; returns 0 otherwise.
int mmlab_checklimits(lua_State *L, mmlab_State *s);

// Marks the engine's yield of L (a wait or a preemption): a resumer that
// sees it passes it on to its own resumer, up to the driver.
static inline void mmlab_engineyield(lua_State *L) { mmlab_state(L)->engine_yield = L; }

// From a signal handler: gives T a count hook of 1 so that the engine's
// hook sees `interrupted` at T's next instruction.
void mmlab_sethookforinterrupt(lua_State *T);

// Pushes the thread T on L (T's own stack lends the slot).
static inline void mmlab_pushthread(lua_State *L, lua_State *T) {
    if (L == T) {
        lua_pushthread(L);
    } else {
        lua_checkstack(T, 1);
        lua_pushthread(T);
        lua_xmove(T, L, 1);
    }
}

#endif
