// What lua.c does around the script that the engine must do its own way.
#include <signal.h>
#include <stdlib.h>
#include <lualib.h>
#include "shim.h"

// os.exit, as loslib's; with `close`, the driver closes the state after
// the task's to-be-closed variables (lua_close would reach only the state's
// own main thread, which never runs the script).
static int os_exit(lua_State *L) {
    int status;
    if (lua_isboolean(L, 1))
        status = lua_toboolean(L, 1) ? EXIT_SUCCESS : EXIT_FAILURE;
    else
        status = (int)luaL_optinteger(L, 1, EXIT_SUCCESS);
    if (mmlab_state(L)->contained)  // one run of many (explore): the process goes on
        return luaL_error(L, "os.exit(%d) ends the process, which an explored run may not", status);
    if (lua_toboolean(L, 2)) {
        mmlab_State *s = mmlab_state(L);
        if (mmlab_canwait(L)) {
            s->exiting = 1;
            s->exit_status = status;
            mmlab_engineyield(L);
            return lua_yield(L, 0);
        }
        lua_close(L);
    }
    exit(status);
}

void mmlab_openos(lua_State *L) {
    static const luaL_Reg funcs[] = {{"exit", os_exit}, {NULL, NULL}};
    mmlab_replacefuncs(L, LUA_OSLIBNAME, funcs);
}

// lua.c's laction/lstop, on the engine's hook: the running thread gets a
// count hook of 1, and the hook raises "interrupted!" (catchable, once).
static mmlab_State *interruptible;

static void laction(int sig) {
    signal(sig, SIG_DFL);  // another SIGINT ends the process
    mmlab_State *s = interruptible;
    if (s == NULL)
        return;
    s->interrupted = 1;
    lua_State *running = s->depth > 0 && s->depth <= MMLAB_MAXCHAIN ? s->chain[s->depth - 1].co : s->current;
    if (running != NULL)
        mmlab_sethookforinterrupt(running);
}

void mmlab_catchinterrupt(lua_State *L, int on) {
    interruptible = on ? mmlab_state(L) : NULL;
    struct sigaction sa;
    sa.sa_handler = on ? laction : SIG_DFL;
    sa.sa_flags = 0;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    if (on) {  // a parent may have left it blocked (Foundation's Process does)
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigprocmask(SIG_UNBLOCK, &set, NULL);
    }
}

// lua.c's pushargs: the script's arguments are arg[1..#arg], read after
// the -e options ran.
int mmlab_argvalues(lua_State *L) {
    if (lua_getglobal(L, "arg") != LUA_TTABLE)
        return luaL_error(L, "'arg' is not a table");
    int n = (int)luaL_len(L, -1);
    luaL_checkstack(L, n + 3, "too many arguments to script");
    for (int i = 1; i <= n; i++)
        lua_rawgeti(L, -i, i);
    lua_remove(L, -n - 1);
    return n;
}
