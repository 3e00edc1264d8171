// Native rows of scripts/bench, run by Benchmarks/bench.lua: each prints
// "name ours base" in nanoseconds, both measured in this run.
//   mmbench pages [N]                   order-0 alloc+free: MMCore vs malloc(4096)+free
//   mmbench startup N CMD... -- CMD...  wall time of launching each command
//   mmbench drm_mm MODE N PAIRS ROUNDS  the oracle's drm_mm churn (Tests/Oracle/drm_mm/bench.c)
import Glibc
import MMCore

func now() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}

/// Best of `rounds` of `body(n)`, in ns per iteration.
func best(_ n: Int, rounds: Int = 7, _ body: (Int) -> Void) -> Double {
    var best = UInt64.max
    for _ in 0..<rounds {
        let t0 = now()
        body(n)
        best = min(best, now() - t0)
    }
    return Double(best) / Double(n)
}

/// Keeps the optimizer from removing a loop whose result is unused.
@inline(never) func consume(_ x: UInt) { if x == 1 { print("", terminator: "") } }

/// Order-0 alloc+free through MMCore's page allocator, n times.
/// With `write`, a byte is written into each page, as its user would:
/// a page nobody reached keeps its poison on free, and is not poisoned again.
func allocFree(_ machine: Machine, _ n: Int, write: Bool) throws {
    let allocator = machine.pageAllocator, memory = machine.memory
    var sum: UInt = 0
    for _ in 0..<n {
        let pfn = try allocator.allocPages(.kernel, order: 0)
        sum &+= UInt(pfn.rawValue)
        if write { memory.address(of: pfn)?.storeBytes(of: 1, toByteOffset: 100, as: UInt8.self) }
        try allocator.freePages(pfn, order: 0)
    }
    consume(sum)
}

/// The poison a free writes, through a variable: the compiler drops a
/// memset it can see of memory that is freed next.
nonisolated(unsafe) var fill: (UnsafeMutableRawPointer, Int32, Int) -> UnsafeMutableRawPointer? = memset

/// What page_poison's check compares a page with (`check_poison_mem`).
nonisolated(unsafe) let poisonPattern: UnsafeMutableRawPointer = {
    let p = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 64)
    p.initializeMemory(as: UInt8.self, repeating: 0xaa, count: 4096)
    return p
}()
nonisolated(unsafe) var compare: (UnsafeRawPointer, UnsafeRawPointer, Int) -> Int32 = memcmp

/// malloc(4096)+free, n times; with `poison`, what page_poison does: the
/// block poisoned before its free and the poison checked after its
/// malloc (but the first 16 bytes, where malloc keeps its free list),
/// with a byte written between, as `allocFree` writes one.
func mallocFree(_ n: Int, poison: Bool) {
    var sum: UInt = 0
    for _ in 0..<n {
        let p = malloc(4096)
        sum &+= UInt(bitPattern: p)
        if poison, let p {
            sum &+= UInt(bitPattern: Int(compare(p + 16, poisonPattern + 16, 4096 - 16)))
            p.storeBytes(of: 1, toByteOffset: 100, as: UInt8.self)
            _ = fill(p, 0xaa, 4096)
        }
        free(p)
    }
    consume(sum)
}

/// "pages OURS_POISON BASE_POISON OURS_PLAIN BASE_PLAIN", ns per
/// alloc+free: MMCore with page_poison on (the default) against
/// malloc+memset+free, and with it off against malloc+free. Rounds
/// interleave and the best of each counts: the machine is noisy.
func pages(_ n: Int) throws {
    // Both machines first, kept for the whole run: creating and freeing
    // one changes how glibc trims its heap, and so what malloc costs.
    let poisoned = try Machine(MachineConfig(memory: 256 << 20, cpus: 1))
    let plain = try Machine(MachineConfig(memory: 256 << 20, cpus: 1, pagePoison: false))
    var bestOf = [UInt64](repeating: .max, count: 4)
    var failure: (any Error)?
    let runs: [(Int) -> Void] = [
        { n in do { try allocFree(poisoned, n, write: true) } catch { failure = error } },
        { n in mallocFree(n, poison: true) },
        { n in do { try allocFree(plain, n, write: false) } catch { failure = error } },
        { n in mallocFree(n, poison: false) },
    ]
    for _ in 0..<7 {
        for (i, run) in runs.enumerated() {
            let t0 = now()
            run(n)
            bestOf[i] = min(bestOf[i], now() - t0)
        }
    }
    if let failure { throw failure }
    print("pages " + bestOf.map { String(Double($0) / Double(n)) }.joined(separator: " "))
}

/// Launches `argv` and waits; the time includes exec and exit.
func launch(_ argv: [String]) -> Bool {
    var pid = pid_t()
    var cargs = argv.map { strdup($0) } + [nil]
    defer { for p in cargs { free(p) } }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    defer { posix_spawn_file_actions_destroy(&actions) }
    guard posix_spawnp(&pid, argv[0], &actions, nil, &cargs, environ) == 0 else { return false }
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    return status == 0
}

func startup(_ n: Int, _ ours: [String], _ base: [String]) -> Bool {
    var ok = true
    // Interleaved, best of n each: start-up is noisy (page cache, scheduler).
    var bestOurs = UInt64.max, bestBase = UInt64.max
    for _ in 0..<n {
        var t0 = now()
        ok = launch(ours) && ok
        bestOurs = min(bestOurs, now() - t0)
        t0 = now()
        ok = launch(base) && ok
        bestBase = min(bestBase, now() - t0)
    }
    print("startup \(bestOurs) \(bestBase)")
    return ok
}

/// The xorshift64 of Tests/Oracle/drm_mm/bench.c.
struct XorShift {
    var x: UInt64 = 0x9E37_79B9_7F4A_7C15
    mutating func next() -> UInt64 {
        x ^= x << 13
        x ^= x >> 7
        x ^= x << 17
        return x
    }
}

/// bench.c's workload through MMCore's DrmMm, the same operations in the
/// same order: fill with `n` nodes of 1-64 pages in [0, 2^40), then
/// `rounds` rounds of `pairs` remove-a-random-node, insert-a-new-one.
/// Prints "drm_mm MODE N NS fill_sum=F sum=S fails=K", as bench.c does.
func drmMm(_ mode: DrmMm.Mode, _ n: Int, _ pairs: Int, _ rounds: Int) throws {
    let mm = try DrmMm(start: 0, size: 1 << 40, site: .unknown)
    var rng = XorShift()
    var nodes = [DrmMmNode?](repeating: nil, count: n)
    var live = [Int](repeating: 0, count: n)
    var liveCount = 0, fails = 0
    var fillSum: UInt64 = 0, sum: UInt64 = 0
    func insert(_ slot: Int) throws -> Bool {
        let size = (1 + rng.next() % 64) * 4096
        do {
            let node = try mm.insert(size: size, mode: mode, site: .unknown)
            nodes[slot] = node
            return true
        } catch let error as KernelError where error.errno == .ENOSPC {
            fails += 1
            return false
        }
    }
    for i in 0..<n where try insert(i) {
        fillSum &+= nodes[i]?.start ?? 0
        live[liveCount] = i
        liveCount += 1
    }
    var best = Double.infinity
    for _ in 0..<rounds {
        let t0 = now()
        for _ in 0..<pairs where liveCount > 0 {
            let k = Int(rng.next() % UInt64(liveCount))
            let s = live[k]
            if let node = nodes[s] { try mm.remove(node) }
            nodes[s] = nil
            liveCount -= 1
            live[k] = live[liveCount]
            if try insert(s) {
                sum &+= nodes[s]?.start ?? 0
                live[liveCount] = s
                liveCount += 1
            }
        }
        best = min(best, Double(now() - t0) / Double(pairs))
    }
    print("drm_mm \(mode.rawValue) \(n) \(best) fill_sum=\(fillSum) sum=\(sum) fails=\(fails)")
}

let args = Array(CommandLine.arguments.dropFirst())
switch args.first {
case "pages":
    do {
        try pages(args.count > 1 ? Int(args[1]) ?? 1_000_000 : 1_000_000)
    } catch {
        print("mmbench: \(error)")
        exit(1)
    }
case "startup":
    guard args.count > 2, let n = Int(args[1]), let split = args.firstIndex(of: "--") else {
        print("usage: mmbench startup N CMD... -- CMD...")
        exit(2)
    }
    let ours = Array(args[2..<split]), base = Array(args[(split + 1)...])
    guard !ours.isEmpty, !base.isEmpty else { exit(2) }
    if !startup(n, ours, base) { print("mmbench: a command failed"); exit(1) }
case "drm_mm":
    guard args.count == 5, let mode = DrmMm.Mode(rawValue: args[1]), let n = Int(args[2]), let pairs = Int(args[3]),
          let rounds = Int(args[4]) else {
        print("usage: mmbench drm_mm best|low|high N PAIRS ROUNDS")
        exit(2)
    }
    do { try drmMm(mode, n, pairs, rounds) } catch {
        print("mmbench: \(error)")
        exit(1)
    }
default:
    print("usage: mmbench pages [N] | mmbench startup N CMD... -- CMD... | mmbench drm_mm MODE N PAIRS ROUNDS")
    exit(2)
}
