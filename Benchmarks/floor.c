// The floor mmlab's bindings are measured against (scripts/bench): a
// hand-written C Lua binding of the same operations on a userdata over a
// malloc'd 4 KiB block, written the way C bindings usually are.
#include <stdint.h>
#include <stdlib.h>
#include <lua.h>
#include <lauxlib.h>

#define BLOCK "floor.Block"

typedef struct {
    unsigned char *data;
    size_t size;
} Block;

static Block *check(lua_State *L) {
    Block *b = luaL_checkudata(L, 1, BLOCK);
    if (b->data == NULL)
        luaL_error(L, "use after free");
    return b;
}

// b:read_u8(off), with the bounds rule of Page (off + 1 <= size).
static int block_read_u8(lua_State *L) {
    Block *b = check(L);
    lua_Integer off = luaL_checkinteger(L, 2);
    if ((lua_Unsigned)off >= b->size)
        return luaL_error(L, "EINVAL: offset out of bounds");
    lua_pushinteger(L, b->data[off]);
    return 1;
}

// floor.new(): a userdata over a fresh 4 KiB block.
static int block_new(lua_State *L) {
    Block *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->data = NULL;
    luaL_setmetatable(L, BLOCK);
    b->data = malloc(4096);
    b->size = 4096;
    return 1;
}

// floor.free(b) and __gc: free the block once.
static int block_free(lua_State *L) {
    Block *b = luaL_checkudata(L, 1, BLOCK);
    free(b->data);
    b->data = NULL;
    return 0;
}

int luaopen_floor(lua_State *L) {
    static const luaL_Reg methods[] = {{"read_u8", block_read_u8}, {NULL, NULL}};
    static const luaL_Reg meta[] = {{"__gc", block_free}, {NULL, NULL}};
    static const luaL_Reg module[] = {{"new", block_new}, {"free", block_free}, {NULL, NULL}};
    luaL_newmetatable(L, BLOCK);
    luaL_setfuncs(L, meta, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newlib(L, module);
    return 1;
}
