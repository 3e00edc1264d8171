// The only C mmlab writes: trampolines that raise, yield and call Lua after
// the Swift binding has returned, so that Lua never longjmps across Swift.
#ifndef MMLAB_LUASHIM_H
#define MMLAB_LUASHIM_H

#include <stdint.h>
#include <lua.h>
#include <lauxlib.h>

// What a binding returns to its trampoline, besides a count of results (>= 0).
#define MMLAB_RAISE (-1)              // raise the value on top of the stack
#define MMLAB_WAIT (-2)               // the task waits: yield to the driver; when it
                                      // is woken, run the binding's continuation
                                      // (mmlab_State.resumed)
#define MMLAB_ARGERROR_BASE (-16)     // bad argument #(BASE - r); message on top
#define MMLAB_PCALL_BASE (-1048576)   // protected call of (BASE - r) arguments

// A binding: a Swift function with the lua_CFunction signature that never
// raises. It returns a result count or one of the sentinels above.
typedef int (*mmlab_Binding)(lua_State *L);

// The C function every binding is registered as: upvalue 1 is the binding,
// upvalue 2 its name for error messages, the binding's own upvalues follow.
int mmlab_trampoline(lua_State *L);
// Replaces debug.setupvalue with one that refuses the engine's bindings,
// whose upvalue 1 the trampoline trusts.
void mmlab_guardupvalues(lua_State *L);
#define MMLAB_FIRST_UPVALUE 3

// The value a waiting binding's thread yields: a coroutine wrapper that
// sees it passes the wait on to its own resumer, up to the driver.
extern const char mmlab_wait_token;

// Pushes a closure named `name` calling `fn` through the trampoline; the
// `nup` values on top of the stack become its upvalues 3...nup+2.
void mmlab_pushbinding(lua_State *L, mmlab_Binding fn, const char *name, int nup);

// Pushes a handle metatable's __gc calling `fn` through the trampoline,
// except for a handle whose drop already let go of its object.
void mmlab_pushgc(lua_State *L, mmlab_Binding fn);

// For MMLAB_PCALL: the binding pushes the function, then the arguments;
// mmlab_State.finished runs after the call.
// One userdata block per handle. Layout is shared with Swift.
typedef struct mmlab_Handle {
    uint64_t magic;      // MMLAB_HANDLE_MAGIC: the block is one of ours
    void *object;        // the retained Swift object (Unmanaged)
    uint32_t borrows;    // live borrowers of this handle
    uint32_t site;       // where it was dropped or moved (a Site id)
    uint16_t type;       // HandleType
    uint8_t state;       // HandleState
    uint8_t flags;
    uint32_t views;      // live views borrowing it (VmaRefs of a guard)
    uint64_t tombstone;  // after a drop that let go of `object`: what describes it
} mmlab_Handle;

#define MMLAB_HANDLE_MAGIC 0x6d6d6c6162686e64ULL

// The handle at `idx`, or NULL when the value there is not one of ours.
// The size check comes first so that a foreign userdata is never overread.
static inline mmlab_Handle *mmlab_tohandle(lua_State *L, int idx) {
    if (lua_type(L, idx) != LUA_TUSERDATA || lua_rawlen(L, idx) != sizeof(mmlab_Handle))
        return NULL;
    mmlab_Handle *h = (mmlab_Handle *)lua_touserdata(L, idx);
    return h->magic == MMLAB_HANDLE_MAGIC ? h : NULL;
}

// A script coroutine resumed inside a task, and who resumed it
// (coroutines.c): the chain a blocking binding yields through.
typedef struct mmlab_Link {
    lua_State *co, *from;
    int yieldable;              // `from` could yield when it resumed `co`
} mmlab_Link;
#define MMLAB_MAXCHAIN 256      // deeper than Lua's C-call limit (200)
#define MMLAB_HOOK_INTERVAL 200 // VM instructions between the engine's count hooks

// What every thread of a state shares, through its extra space: the
// runtime, and what the scheduler needs at each preemption point.
typedef struct mmlab_State {
    void *runtime;              // the Swift Runtime
    lua_State *current;         // the thread of the running task
    int budget;                 // binding calls until the next preemption point
    int contended;              // another task is queued: preemption can matter
    // Asks the scheduler at a preemption point (`hook`: the instruction
    // count hook, else a binding call); 1 yields the task now. Resets
    // `budget`. Called only where the task may yield (mmlab_canwait).
    int (*preempt)(lua_State *L, int hook);
    // Runs the continuation a binding left when it returned MMLAB_WAIT, on
    // the thread that waited; returns like a binding.
    int (*resumed)(lua_State *L);
    // Runs after a MMLAB_PCALL: `status` is the pcall's (LUA_YIELD counts
    // as success), results or the error object are at `first`...top.
    // Returns like a binding.
    int (*finished)(lua_State *L, int status, int first);
    // Releases the retain a handle holds on its Swift object (a dead
    // handle's __gc, without a binding call).
    void (*release)(void *object);
    // The machine's clock: one tick per binding call and per count hook
    // (200 VM instructions). Deterministic: traces stamp events with it.
    uint64_t clock;

    // Limits (--max-memory, --max-instructions, --timeout); 0 is none.
    size_t heap, max_heap;      // bytes the Lua allocator holds, and its cap
    int vm_only;                // only the VM runs (no Swift frame to unwind): a
                                // refused allocation may raise right away
    int over_heap;              // the cap was passed where raising was not safe
    uint64_t hook_ticks, max_hook_ticks;  // count hooks run, and the limit
    uint64_t deadline_ns;       // CLOCK_MONOTONIC time to stop at
    const char *stopped;        // why the run was stopped: raised again at every hook

    // The engine's hook (hooks.c): installed only while it is needed.
    int tracing;                // the trace clock runs
    int hooks_dirty;            // what the engine needs changed: resync the running thread
    int script_hooks;           // some thread has a script hook (debug.sethook)
    lua_State *in_hook;         // the thread whose script hook runs now
    lua_State *preempt_due;     // a thread with a script line hook: preempt at its next line event

    // Coroutines inside tasks (coroutines.c).
    lua_State *engine_yield;    // the thread whose latest yield was the engine's
    int depth;                  // resumes in progress, innermost last in `chain`
    mmlab_Link chain[MMLAB_MAXCHAIN];
    int exiting;                // os.exit(code, true) asked the driver to close the state
    int exit_status;
    int contained;              // os.exit raises instead (a run of mmlab explore)
    int64_t live_handles;       // handles still holding their object (kernel.reboot waits for none)
    volatile int interrupted;   // SIGINT arrived: raise "interrupted!" at the next hook
    uint64_t site_epoch;        // collections seen (sites.c)
    struct mmlab_SiteSlot *site_cache;  // call site -> site id, valid for `site_cache_epoch`
    uint64_t site_cache_epoch;
    int hook_interval;          // VM instructions between the engine's count hooks
                                // (--quantum; MMLAB_HOOK_INTERVAL by default)
} mmlab_State;

// Writes where the running Lua code is, `file.lua:12` (the innermost Lua
// frame of the innermost running coroutine), into buf.
void mmlab_where(lua_State *L, char *buf, size_t size);

// The allocator that keeps the Lua heap under `max_heap` (ud: the mmlab_State).
void *mmlab_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

// Switches L to mmlab_alloc, counting from the bytes L holds already.
void mmlab_useallocator(lua_State *L, mmlab_State *s);

// Runs lua_resume with `vm_only` set: allocations refused then raise in the
// coroutine, which the resume catches.
int mmlab_resume(lua_State *L, lua_State *from, int narg, int *nres);

// Macros Swift cannot import.
static inline int mmlab_registryindex(void) { return LUA_REGISTRYINDEX; }
static inline int mmlab_upvalueindex(int i) { return lua_upvalueindex(i); }
// A thread's extra space holds the shared mmlab_State, its low bits what
// the thread is (the state is 8-aligned). New threads copy the main
// thread's, which never has flags.
#define MMLAB_TASK 1                // a task's own thread: the script's main thread
#define MMLAB_HOOKED 2              // it may have a script hook
#define MMLAB_PARKED 4              // a coroutine its task's engine yield passed through
static inline uintptr_t mmlab_extra(lua_State *L) { return *(uintptr_t *)lua_getextraspace(L); }
static inline mmlab_State *mmlab_state(lua_State *L) { return (mmlab_State *)(mmlab_extra(L) & ~(uintptr_t)7); }
static inline int mmlab_flags(lua_State *L) { return (int)(mmlab_extra(L) & 7); }
static inline void mmlab_setflags(lua_State *L, int set, int clear) {
    *(uintptr_t *)lua_getextraspace(L) = (mmlab_extra(L) | (uintptr_t)set) & ~(uintptr_t)clear;
}
static inline void *mmlab_getextra(lua_State *L) { return mmlab_state(L)->runtime; }
static inline void mmlab_setstate(lua_State *L, mmlab_State *s) { *(mmlab_State **)lua_getextraspace(L) = s; }
static inline void mmlab_marktask(lua_State *L) { mmlab_setflags(L, MMLAB_TASK, 0); }

// The engine's hook (hooks.c). Gives `T` the hook its state needs now:
// the count hook while the engine needs it (another task is queued, a
// limit or the trace clock runs), and the events of T's script hook.
// `L` is a thread whose stack may be used (T itself, or the caller).
void mmlab_synchook(lua_State *L, lua_State *T);

// Replaces debug.sethook/gethook with the script's view of hooks, and
// coroutine.* with versions that see tasks (coroutines.c).
void mmlab_openhooks(lua_State *L);

// A thread NL that L created inherits L's script hook mask and count, as
// lua_newthread copies them, but no function (ldblib's are per thread).
void mmlab_inherithook(lua_State *L, lua_State *NL);
void mmlab_opencoroutines(lua_State *L);

// Replaces next and pairs with versions in an order that does not depend
// on the hash seed, which agree with each other (next.c).
void mmlab_opennext(lua_State *L);

// Whether L may yield to the driver: it is the running task's thread, or a
// coroutine every resumer of which, down to the task's thread, can yield.
int mmlab_canwait(lua_State *L);

// Call sites (sites.c): the next instruction of the first Lua function
// above the running C function, and its stack level; NULL when there is
// none, or before mmlab_checkcallsite found Lua's layout (1) or did not
// (0). Such an address names a site only while its function lives:
// mmlab_watchcollections counts, in site_epoch, each collection that may
// have freed one.
const void *mmlab_callsite(lua_State *L, int *level);
int mmlab_checkcallsite(lua_State *L);

// The site id the engine named the calling Lua frame's call site with,
// cached by its address since the last collection that may have freed a
// function; 0 when not cached, with `*pc` (NULL: no such frame, or the
// layout is unknown) and `*level` for the engine to name it and
// mmlab_cachesite. The cache is the state's own (mmlab_opensitecache,
// mmlab_closesitecache): site ids are the engine's, per state.
uint32_t mmlab_cachedsite(lua_State *L, const void **pc, int *level);
void mmlab_cachesite(mmlab_State *s, const void *pc, uint32_t site);
int mmlab_opensitecache(mmlab_State *s);
void mmlab_closesitecache(mmlab_State *s);

// Whether the running __index was reached from a method call `v:name()`
// rather than a field read `v.name` (1 when unknown); the opcode read is
// checked against the running library once, by mmlab_checkmethodcalls.
int mmlab_calledasmethod(lua_State *L);
int mmlab_checkmethodcalls(lua_State *L);
void mmlab_watchcollections(lua_State *L);

// For a task that ends while it waits: pushes on L the coroutines its
// engine yield passed through (T's, innermost last) and forgets them.
int mmlab_parked(lua_State *L, lua_State *T);

// Every task's body (tasks.c): calls the function below its arguments
// (stack: function, args...) under a protected call whose message handler
// describes an uncaught error where it was raised, as lua.c's does, and
// raises the same error object again.
int mmlab_taskbody(lua_State *L);

// For a task that failed: a table {message=, traceback=, error=} for the
// error on top of its thread `co` (argument 1), pushed on L: what the
// message handler found, else the message (or the error object's
// __tostring, after its `where` and task) and co's traceback now. Run it
// under a protected call.
int mmlab_taskerror(lua_State *L);

// What lua.c does around the script (standalone.c): os.exit(code, true)
// closes the main chunk's to-be-closed variables first (the driver does,
// when it sees `exiting`), a SIGINT raises "interrupted!" in the running
// code (a second one kills), and the script's `...` come from `arg`.
void mmlab_openos(lua_State *L);
void mmlab_catchinterrupt(lua_State *L, int on);
int mmlab_argvalues(lua_State *L);

static inline int mmlab_gc(lua_State *L, int what, int data) { return lua_gc(L, what, data); }  // variadic in C
static inline void mmlab_gcgenerational(lua_State *L) { lua_gc(L, LUA_GCGEN, 0, 0); }
static inline const char *mmlab_lua_release(void) { return LUA_RELEASE; }
// What lua.c's print_version prints: the release and its copyright.
static inline const char *mmlab_lua_copyright(void) { return LUA_COPYRIGHT; }

#endif
