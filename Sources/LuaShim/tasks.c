// A task's body and how its uncaught error is described.
#include <string.h>
#include "shim.h"

// The registry table of failures the message handler described: thread ->
// {message, traceback}.
static const char *const FAILURES = "mmlab.failures";

// The message of the error object at `idx`: a string, or its __tostring
// after its `where` and task (a kernel.Error), or its type. May call
// __tostring, which may raise (lua.c's message handler does the same).
static const char *error_message(lua_State *L, int idx) {
    const char *msg = lua_tostring(L, idx);
    if (msg != NULL)
        return msg;
    if (luaL_callmeta(L, idx, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
        msg = lua_tostring(L, -1);
    else
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
    if (lua_type(L, idx) == LUA_TTABLE) {  // a kernel.Error says where, and in which task
        lua_pushliteral(L, "where");
        if (lua_rawget(L, idx) == LUA_TSTRING)
            msg = lua_pushfstring(L, "%s %s", lua_tostring(L, -1), msg);
        lua_pushliteral(L, "task");
        if (lua_rawget(L, idx) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "main") != 0)
            msg = lua_pushfstring(L, "task '%s': %s", lua_tostring(L, -1), msg);
    }
    return msg;
}

// lua.c's msghandler, at the point of the error: the message and the
// traceback are kept for the driver; the error object goes on unchanged
// (join raises it in another task).
static int msghandler(lua_State *L) {
    // As lua.c, an object whose __tostring made the message has no
    // traceback; a kernel.Error (also such an object) keeps its own.
    int traced = lua_tostring(L, 1) != NULL || !luaL_getmetafield(L, 1, "__tostring");
    if (!traced) {
        lua_pop(L, 1);
        traced = luaL_getmetafield(L, 1, "__name") == LUA_TSTRING && strcmp(lua_tostring(L, -1), "kernel.Error") == 0;
        lua_settop(L, 1);
    }
    const char *msg = error_message(L, 1);
    traced = traced || strncmp(msg, "(error object is a ", 19) == 0;
    luaL_getsubtable(L, LUA_REGISTRYINDEX, FAILURES);
    lua_pushthread(L);
    lua_createtable(L, 2, 0);
    lua_pushstring(L, msg);
    lua_rawseti(L, -2, 1);
    if (traced)
        luaL_traceback(L, L, NULL, 1);
    else
        lua_pushliteral(L, "");
    lua_rawseti(L, -2, 2);
    lua_rawset(L, -3);
    lua_settop(L, 1);
    return 1;
}

static int body_done(lua_State *L, int status, lua_KContext ctx) {
    (void)ctx;
    if (status != LUA_OK && status != LUA_YIELD)
        return lua_error(L);
    return lua_gettop(L) - 1;
}

int mmlab_taskbody(lua_State *L) {
    int nargs = lua_gettop(L) - 1;
    lua_pushcfunction(L, msghandler);
    lua_insert(L, 1);
    return body_done(L, lua_pcallk(L, nargs, LUA_MULTRET, 1, 0, body_done), 0);
}

int mmlab_taskerror(lua_State *L) {
    lua_State *co = lua_tothread(L, 1);
    if (co == NULL || lua_gettop(co) < 1)
        return luaL_error(L, "the engine: no task error to report");
    lua_xmove(co, L, 1);  // the error object, now at 2
    lua_pushvalue(L, 2);
    lua_xmove(L, co, 1);  // and back where the task keeps it
    lua_createtable(L, 0, 3);  // 3
    luaL_getsubtable(L, LUA_REGISTRYINDEX, FAILURES);  // 4
    lua_pushvalue(L, 1);
    if (lua_rawget(L, 4) == LUA_TTABLE) {
        lua_rawgeti(L, -1, 1);
        lua_setfield(L, 3, "message");
        lua_rawgeti(L, -1, 2);
        lua_setfield(L, 3, "traceback");
        lua_pushvalue(L, 1);
        lua_pushnil(L);
        lua_rawset(L, 4);
    } else {  // raised where no handler ran (the body itself)
        lua_pushstring(L, error_message(L, 2));
        lua_setfield(L, 3, "message");
        luaL_traceback(L, co, NULL, 0);
        lua_setfield(L, 3, "traceback");
    }
    lua_settop(L, 3);
    lua_pushvalue(L, 2);
    lua_setfield(L, 3, "error");
    return 1;
}
