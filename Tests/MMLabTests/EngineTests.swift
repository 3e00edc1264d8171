import Foundation
import MMCore
import Testing
@testable import MMLab

@Suite("Embedding")
struct EngineTests {
    @Test("run a file, evaluate, and see the same machine from Swift")
    func embed() throws {
        let engine = try Engine(configuration: .init(memory: 256 << 20, cpus: 4, seed: 1))
        let path = try temporaryFile("""
            local n = ...
            PAGES = {}
            for i = 1, n do PAGES[i] = kernel.page.Page.alloc_page() end
            """)
        try engine.run(file: path, arguments: ["3"])
        #expect(try engine.machine.accounting.liveCounts() == ["Page": 3])
        let allocator = try engine.machine.pageAllocator
        #expect(allocator.freePages + UInt64(allocator.pcpPages) == 65536 - 3)
        #expect(try engine.evaluate("#PAGES") == .integer(3))
        #expect(try engine.evaluate("return kernel.machine().seed, 2") == .integer(1))
        #expect(try engine.evaluate("kernel.machine()")["cpus"] == .integer(4))
        #expect(try engine.evaluate("x = 1") == .nil)
        #expect(try engine.evaluate("tostring(PAGES[1])") == .string("Page{pfn=0x400, order=0}"))
        try engine.run(string: "for i = 1, #PAGES do kernel.drop(PAGES[i]) end")
        #expect(try engine.machine.accounting.count == 0)
    }

    @Test("a failing script throws the message, the traceback and the kernel.Error")
    func errors() throws {
        let engine = try Engine()
        do {
            try engine.run(string: "local p = kernel.page.Page.alloc_page()\np:read_u8(5000)", name: "=exp.lua")
            Issue.record("the script should have failed")
        } catch {
            #expect(error.message == "exp.lua:2: EINVAL: offset 5000 + length 1 exceeds the page (4096)")
            #expect(error.traceback.hasPrefix("stack traceback:"))
            #expect(error.traceback.contains("in method 'read_u8'"))
            #expect(error.kernelError == KernelError(.EINVAL, "offset 5000 + length 1 exceeds the page (4096)"))
        }
        #expect(throws: EngineError.self) { try engine.run(string: "this is not lua") }
        #expect(throws: EngineError.self) { try engine.run(file: "/nonexistent.lua") }
        #expect(try engine.evaluate("1 + 1") == .integer(2), "the engine goes on after errors")
    }

    @Test("bug errors come through as bugs")
    func bugs() throws {
        let engine = try Engine()
        do {
            try engine.run(string: "local p = kernel.page.Page.alloc_page()\nkernel.drop(p)\nkernel.drop(p)", name: "=x")
        } catch {
            #expect(error.kernelError?.isBug == true)
            #expect(error.message.hasPrefix("x:3: BUG: double drop: Page{pfn=0x400, order=0} dropped at x:2"))
        }
    }

    @Test("configuration reaches the machine; leaks are reported")
    func configuration() throws {
        let engine = try Engine(configuration: .init(memory: 64 << 20, cpus: 2, seed: 9))
        #expect(try engine.machine.config == MachineConfig(memory: 64 << 20, cpus: 2, seed: 9))
        #expect(engine.leakReport() == nil)
        try engine.run(string: "KEEP = kernel.page.Page.alloc_page()\nkernel.page.Page.alloc_page()", name: "=leak.lua")
        #expect(engine.leaks().count == 1, "the unreferenced page is collected, the global one leaks")
        #expect(engine.leakReport() == """
            mmlab: 1 native object leaked (still alive at exit):
              Page{pfn=0x400, order=0} created at leak.lua:1
            """)
        engine.close()
        #expect(try engine.machine.accounting.count == 0, "closing drops every handle")
    }

    @Test("an engine frees its machine, whatever the script left", arguments: [
        "kernel.percpu.define('x', 'value', {}) local v = kernel.percpu.alloc('u64')",
        """
        local m = kernel.sync.Mutex('M')
        local joiner, taker
        joiner = kernel.sched.spawn(function() local g <close> = m:lock() kernel.sched.yield() taker:join() end)
        taker = kernel.sched.spawn(function() kernel.sched.yield() local g <close> = m:lock() end)
        pcall(kernel.sched.run)  -- EDEADLK: both stay blocked, holding and waiting
        """,
        "local u = kernel.mm.mm_alloc() u:mmap{len = 8192} kernel.sched.spawn(function() end, {mm = u})",
        "local mm = kernel.mm.mm_alloc() local a = kernel.binder.Alloc(mm, 1 << 16) local b = a:new_buf{data_size = 64}",
        // The collector's drop of this guard fails (preemption is on already):
        // the handle still lets go of it.
        "local g = kernel.percpu.CpuGuard() kernel.sched.preempt_enable() g = nil collectgarbage()",
    ])
    func machineFreed(script: String) throws {
        final class Weak { weak var object: AnyObject?; init(_ o: AnyObject) { object = o } }
        var left: [Weak] = []
        do {
            let engine = try Engine()
            try? engine.run(string: script)
            let machine = try engine.machine
            left = [Weak(machine)] + machine.scheduler.tasks.map { Weak($0) }
            engine.close()
        }
        #expect(left.allSatisfy { $0.object == nil }, "no cycle keeps the machine or a task alive")
    }

    @Test("Configuration.limits stop a runaway script whatever it does to hooks", arguments: CommandLineTests.runaways)
    func limits(script: String) throws {
        var configuration = Engine.Configuration()
        configuration.limits = .init(maxInstructions: 100_000)
        let engine = try Engine(configuration: configuration)
        engine.quiet = true
        #expect(throws: EngineError.self) { try engine.run(string: script, name: "=runaway") }
        do { try engine.run(string: script, name: "=runaway") } catch {
            #expect(error.message == "the script ran past its --max-instructions limit", "\(script)")
        }
        var timed = Engine.Configuration()
        timed.limits = .init(timeout: 0.05)
        let slow = try Engine(configuration: timed)
        slow.quiet = true
        do {
            try slow.run(string: script, name: "=runaway")
            Issue.record("\(script) ran to its end")
        } catch {
            #expect(error.message == "the script ran past its --timeout", "\(script)")
        }
    }

    @Test("a bad configuration fails when the machine boots")
    func badConfiguration() throws {
        let engine = try Engine(configuration: .init(memory: 0))
        #expect(throws: EngineError.self) { try engine.machine }
        #expect(throws: EngineError.self) { try engine.run(string: "kernel.page.Page.alloc_page()") }
    }
}
