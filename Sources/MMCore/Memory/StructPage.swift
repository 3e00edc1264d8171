/// The model's `struct page`: what the allocator knows about one frame.
/// Allocated per memory section on first touch, so untouched memory costs
/// nothing; a zeroed entry is a frame that was never used.
struct StructPage {
    /// `page_ref_count`: references to an allocated head page.
    var refcount: Int32 = 0
    /// Which allocation owns the frame now (or owned it last).
    var generation: UInt32 = 0
    /// Free-list links (pfns), valid while the frame heads a free block.
    var next: UInt32 = StructPage.none
    var prev: UInt32 = StructPage.none
    /// Where the frame was freed, once it was.
    var freedAt: UInt32 = 0
    /// The block's order: of a free buddy block, or of an allocation (head).
    var order: UInt8 = 0
    var flags: UInt8 = 0
    /// `poisoned` and `intact`, in the byte that keeps the struct at 23
    /// bytes (a 24th made the order-0 path measurably slower).
    private var poison: UInt8 = 0

    /// Filled with `PAGE_POISON` when freed, and not checked since: the
    /// next allocation checks it (`check_poison_mem`). Apart from `flags`,
    /// which merges and splits rewrite.
    var poisoned: Bool {
        get { poison & 1 != 0 }
        set { poison = newValue ? poison | 1 : poison & ~1 }
    }
    /// Holds nothing but `PAGE_POISON`, and nobody has been given its
    /// memory since (`PhysicalMemory.address(of:)`, a `Page`'s first
    /// access): freeing it again need not rewrite the poison. The check
    /// on allocation runs all the same.
    var intact: Bool {
        get { poison & 2 != 0 }
        set { poison = newValue ? poison | 2 : poison & ~2 }
    }

    static let none = UInt32.max

    enum Flag {
        /// Heads a free block in the buddy allocator (`PageBuddy`).
        static let buddy: UInt8 = 1 << 0
        /// On a per-CPU list.
        static let pcp: UInt8 = 1 << 1
        /// Part of an allocated block.
        static let allocated: UInt8 = 1 << 2
        /// Heads an allocated block.
        static let head: UInt8 = 1 << 3
        /// The allocation is a compound page (`__GFP_COMP`).
        static let compound: UInt8 = 1 << 4
        /// Its owner gave it away with `into_phys`.
        static let intoPhys: UInt8 = 1 << 5
        /// Anonymous memory a page fault mapped (`folio_test_anon`).
        static let anonymous: UInt8 = 1 << 6
        /// A page table's page (`PageTable`, `__folio_set_pgtable`).
        static let pgtable: UInt8 = 1 << 7
    }

    func has(_ flag: UInt8) -> Bool { flags & flag != 0 }
}

/// Sections of `struct page`, as SPARSEMEM: 128 MiB of frames each.
let sectionShift = 15

/// The physical address space the model covers: 1 TiB, so pfns fit in 32 bits.
public let maxPhysAddr: UInt64 = 1 << 40
