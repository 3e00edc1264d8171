#include <string.h>
#include "LuaShim.h"

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
    mmlab_Finisher fin = (mmlab_Finisher)lua_touserdata(L, base + 1);
    int r = fin(L, status == LUA_YIELD ? LUA_OK : status, base + 2);
    return r >= 0 ? r : finish(L, r);
}

static int continue_yield(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    mmlab_Binding fn = (mmlab_Binding)ctx;
    int r = fn(L);
    return r >= 0 ? r : finish(L, r);
}

// The cold path: every sentinel. Swift has returned; raising is safe here.
static int finish(lua_State *L, int r) {
    if (r == MMLAB_RAISE)
        return lua_error(L);
    if (r == MMLAB_YIELD) {
        mmlab_Binding fn = (mmlab_Binding)lua_touserdata(L, lua_upvalueindex(1));
        return lua_yieldk(L, 0, (lua_KContext)fn, continue_yield);
    }
    if (r <= MMLAB_PCALL_BASE) {
        int nargs = MMLAB_PCALL_BASE - r;
        int base = lua_gettop(L) - nargs - 2;  // finisher at base+1, function at base+2
        int status = lua_pcallk(L, nargs, LUA_MULTRET, 0, base, continue_pcall);
        return continue_pcall(L, status, base);
    }
    if (r <= MMLAB_ARGERROR_BASE)
        return argerror(L, MMLAB_ARGERROR_BASE - r, lua_tostring(L, -1));
    return luaL_error(L, "mmlab: binding returned unknown status %d", r);
}

int mmlab_trampoline(lua_State *L) {
    mmlab_Binding fn = (mmlab_Binding)lua_touserdata(L, lua_upvalueindex(1));
    int r = fn(L);
    return r >= 0 ? r : finish(L, r);
}

void mmlab_pushbinding(lua_State *L, mmlab_Binding fn, const char *name, int nup) {
    lua_pushlightuserdata(L, (void *)fn);
    lua_pushstring(L, name);
    if (nup > 0)
        lua_rotate(L, -nup - 2, 2);
    lua_pushcclosure(L, mmlab_trampoline, nup + 2);
}

void mmlab_pushfinisher(lua_State *L, mmlab_Finisher fin) {
    lua_pushlightuserdata(L, (void *)fin);
}

int mmlab_msghandler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            msg = lua_tostring(L, -1);
        else
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
        if (lua_type(L, 1) == LUA_TTABLE) {  // a kernel.Error says where it was raised
            lua_pushliteral(L, "where");
            if (lua_rawget(L, 1) == LUA_TSTRING)
                msg = lua_pushfstring(L, "%s %s", lua_tostring(L, -1), msg);
        }
    }
    lua_createtable(L, 0, 3);
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "message");
    luaL_traceback(L, L, NULL, 1);
    lua_setfield(L, -2, "traceback");
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "error");
    return 1;
}
