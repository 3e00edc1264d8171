#if canImport(Glibc)
import Glibc
#endif
import MMCore

/// An SVG document built element by element: what `kernel.plot` writes.
struct Svg {
    let width: Int
    let height: Int
    private var body: [String] = []

    init(width: Int, height: Int) {
        self.width = width
        self.height = height
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for c in text.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case _ where c.value < 0x20 && c != "\n" && c != "\t": break  // not allowed in XML
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    static func number(_ v: Double) -> String {
        guard v.isFinite else { return "0" }
        let rounded = (v * 100).rounded() / 100
        return rounded == rounded.rounded() ? String(Int(rounded)) : String(rounded)
    }

    mutating func rect(_ x: Double, _ y: Double, _ w: Double, _ h: Double, fill: String, opacity: Double = 1,
                       stroke: String? = nil, title: String? = nil) {
        var attrs = "x=\"\(Self.number(x))\" y=\"\(Self.number(y))\" width=\"\(Self.number(w))\" height=\"\(Self.number(h))\" fill=\"\(fill)\""
        if opacity < 1 { attrs += " fill-opacity=\"\(Self.number(opacity))\"" }
        if let stroke { attrs += " stroke=\"\(stroke)\" stroke-width=\"1\"" }
        if let title {
            body.append("<rect \(attrs)><title>\(Self.escape(title))</title></rect>")
        } else {
            body.append("<rect \(attrs)/>")
        }
    }

    mutating func text(_ x: Double, _ y: Double, _ content: String, size: Int = 12, anchor: String = "start",
                       weight: String = "normal", fill: String = "#222", vertical: Bool = false) {
        let turn = vertical ? " transform=\"rotate(-90 \(Self.number(x)) \(Self.number(y)))\"" : ""
        body.append("<text x=\"\(Self.number(x))\" y=\"\(Self.number(y))\" font-size=\"\(size)\" text-anchor=\"\(anchor)\" font-weight=\"\(weight)\" fill=\"\(fill)\"\(turn)>\(Self.escape(content))</text>")
    }

    mutating func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, stroke: String = "#999", width: Double = 1) {
        body.append("<line x1=\"\(Self.number(x1))\" y1=\"\(Self.number(y1))\" x2=\"\(Self.number(x2))\" y2=\"\(Self.number(y2))\" stroke=\"\(stroke)\" stroke-width=\"\(Self.number(width))\"/>")
    }

    mutating func polyline(_ points: [(Double, Double)], stroke: String, width: Double = 2) {
        let text = points.map { Self.number($0.0) + "," + Self.number($0.1) }.joined(separator: " ")
        body.append("<polyline points=\"\(text)\" fill=\"none\" stroke=\"\(stroke)\" stroke-width=\"\(Self.number(width))\" stroke-linejoin=\"round\"/>")
    }

    /// A legend: a swatch and a label per entry, left to right from `x`.
    mutating func legend(_ x: Double, _ y: Double, _ entries: [(color: String, label: String)]) {
        var at = x
        for entry in entries {
            rect(at, y - 10, 12, 12, fill: entry.color, stroke: "#666")
            text(at + 16, y, entry.label, size: 12)
            at += 24 + Double(entry.label.count) * 7
        }
    }

    var document: String {
        """
        <?xml version="1.0" encoding="UTF-8"?>
        <svg xmlns="http://www.w3.org/2000/svg" width="\(width)" height="\(height)" viewBox="0 0 \(width) \(height)" font-family="sans-serif">
        <rect x="0" y="0" width="\(width)" height="\(height)" fill="#ffffff"/>
        \(body.joined(separator: "\n"))
        </svg>

        """
    }
}

/// The pictures `kernel.plot` draws.
enum Pictures {
    static let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                          "#bcbd22", "#17becf"]

    static func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

    static func bytes(_ v: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        var value = Double(v), unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(v) B" : Svg.number(value) + " " + units[unit]
    }

    // MARK: Line plot

    struct Series {
        let name: String
        let values: [Double]
    }

    /// Ticks at 1, 2 or 5 times a power of ten covering `[low, high]`.
    static func ticks(_ low: Double, _ high: Double, count: Int = 6) -> [Double] {
        guard high > low, low.isFinite, high.isFinite else { return [low] }
        let raw = (high - low) / Double(count)
        let power = pow10(floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * power }.first { $0 >= raw } ?? raw
        var out: [Double] = []
        var t = (low / step).rounded(.up) * step
        while t <= high + step * 1e-9, out.count < 50 {
            out.append(t)
            t += step
        }
        return out
    }

    private static func pow10(_ e: Double) -> Double {
        var r = 1.0
        if e >= 0 { for _ in 0..<Int(e) { r *= 10 } } else { for _ in 0..<Int(-e) { r /= 10 } }
        return r
    }

    /// A tick label: `1500`, `25k`, `1.5M`, `0.25`, `2e-05`.
    static func label(_ v: Double) -> String {
        for (scale, suffix) in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e4, "k")] where v.magnitude >= scale {
            let unit = suffix == "k" ? 1e3 : scale
            return Svg.number(v / unit) + suffix
        }
        if v != 0, v.magnitude < 1e-3 {
            var s = String(v)
            if let e = s.firstIndex(of: "e") { s = String(s[..<e].prefix(4)) + String(s[e...]) }
            return s
        }
        return Svg.number(v)
    }

    /// A line plot of `series` against `x`. NaN values leave gaps; long
    /// series are reduced to the minimum and maximum of each of 1000
    /// buckets, which keeps their shape.
    static func line(title: String, xLabel: String, yLabel: String, x: [Double], series: [Series]) -> String {
        var svg = Svg(width: 960, height: 540)
        let left = 80.0, right = 20.0, top = 50.0, bottom = 90.0
        let w = Double(svg.width) - left - right, h = Double(svg.height) - top - bottom
        svg.text(Double(svg.width) / 2, 28, title, size: 18, anchor: "middle", weight: "bold")
        let xs = x.filter(\.isFinite)
        let ys = series.flatMap(\.values).filter(\.isFinite)
        guard let x0 = xs.min(), let x1 = xs.max(), let y0 = ys.min(), let y1 = ys.max() else {
            svg.text(Double(svg.width) / 2, Double(svg.height) / 2, "no data", size: 16, anchor: "middle", fill: "#888")
            return svg.document
        }
        let xHigh = x1 > x0 ? x1 : x0 + 1
        // The y range from 0 (or below), out to whole ticks.
        var yLow = min(0, y0), yHigh = y1 > yLow ? y1 : yLow + 1
        let yTicks = ticks(yLow, yHigh)
        if yTicks.count > 1 {
            let step = yTicks[1] - yTicks[0]
            yLow = (yLow / step).rounded(.down) * step
            yHigh = (yHigh / step).rounded(.up) * step
        }
        func px(_ v: Double) -> Double { left + (v - x0) / (xHigh - x0) * w }
        func py(_ v: Double) -> Double { top + h - (v - yLow) / (yHigh - yLow) * h }
        for t in ticks(yLow, yHigh) {
            svg.line(left, py(t), left + w, py(t), stroke: "#e6e6e6")
            svg.text(left - 8, py(t) + 4, label(t), size: 11, anchor: "end", fill: "#555")
        }
        for t in ticks(x0, xHigh) {
            svg.line(px(t), top + h, px(t), top + h + 5, stroke: "#999")
            svg.text(px(t), top + h + 20, label(t), size: 11, anchor: "middle", fill: "#555")
        }
        svg.line(left, top, left, top + h, stroke: "#444")
        svg.line(left, top + h, left + w, top + h, stroke: "#444")
        svg.text(left + w / 2, top + h + 42, xLabel, size: 13, anchor: "middle")
        svg.text(22, top + h / 2, yLabel, size: 13, anchor: "middle", vertical: true)
        for (i, s) in series.enumerated() {
            let color = palette[i % palette.count]
            for segment in segments(x, s.values) {
                svg.polyline(reduce(segment).map { (px($0.0), py($0.1)) }, stroke: color)
            }
        }
        svg.legend(left, Double(svg.height) - 18, series.enumerated().map { (palette[$0.offset % palette.count], $0.element.name) })
        return svg.document
    }

    /// Runs of finite points.
    private static func segments(_ x: [Double], _ y: [Double]) -> [[(Double, Double)]] {
        var out: [[(Double, Double)]] = [], current: [(Double, Double)] = []
        for (a, b) in zip(x, y) {
            if a.isFinite, b.isFinite {
                current.append((a, b))
            } else if !current.isEmpty {
                out.append(current)
                current = []
            }
        }
        if !current.isEmpty { out.append(current) }
        return out
    }

    /// At most 2000 points: the lowest and highest of each of 1000 buckets, in order.
    private static func reduce(_ points: [(Double, Double)]) -> [(Double, Double)] {
        guard points.count > 2000 else { return points }
        var out: [(Double, Double)] = []
        let bucket = (points.count + 999) / 1000
        var i = 0
        while i < points.count {
            let slice = points[i..<min(points.count, i + bucket)]
            guard let low = slice.min(by: { $0.1 < $1.1 }), let high = slice.max(by: { $0.1 < $1.1 }) else { break }
            if low.0 <= high.0 { out.append(low); out.append(high) } else { out.append(high); out.append(low) }
            i += bucket
        }
        return out
    }

    // MARK: drm_mm

    /// The address space of a drm_mm as rows of cells, each coloured by
    /// the node color that covers most of it, shaded by how full it is;
    /// holes show through. Any number of nodes fits: cells aggregate them.
    static func drmMm(_ mm: DrmMm, title: String) -> String {
        let columns = 512, maxRows = 64
        let cells = UInt64(columns * maxRows)
        // Rounded up without `size + cells - 1`, which wraps near 2^64.
        func divideRoundingUp(_ a: UInt64, _ b: UInt64) -> UInt64 { a / b + (a % b == 0 ? 0 : 1) }
        let perCell = max(1, divideRoundingUp(mm.size, cells))
        let count = Int(divideRoundingUp(mm.size, perCell))
        let rows = (count + columns - 1) / columns
        var used = [UInt64](repeating: 0, count: count)
        var bestColor = [UInt64](repeating: 0, count: count), bestBytes = [UInt64](repeating: 0, count: count)
        var colorBytes: [UInt64: UInt64] = [:]
        for node in mm.nodes() {
            let color = node.color
            colorBytes[color, default: 0] &+= node.size
            var at = node.start - mm.start, left = node.size
            while left > 0 {
                let cell = Int(at / perCell)
                guard cell < count else { break }
                let n = min(left, perCell - at % perCell)
                used[cell] += n
                if n > bestBytes[cell] { bestBytes[cell] = n; bestColor[cell] = color }
                at += n
                left -= n
            }
        }
        let shown = colorBytes.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.prefix(palette.count - 1).map(\.key)
        func color(_ c: UInt64) -> String {
            shown.firstIndex(of: c).map { palette[$0] } ?? palette[palette.count - 1]
        }
        let cellW = 2.0, cellH = 8.0, left = 150.0, top = 60.0
        var svg = Svg(width: Int(left + Double(columns) * cellW + 30), height: Int(top + Double(rows) * (cellH + 2) + 80))
        svg.text(Double(svg.width) / 2, 26, title, size: 18, anchor: "middle", weight: "bold")
        let free = mm.freeSpace, largest = mm.largestHole?.size ?? 0
        svg.text(left, 46, "\(mm.nodeCount) nodes, \(mm.holeCount) holes, \(bytes(mm.size - free)) used of \(bytes(mm.size)), largest hole \(bytes(largest)); one cell = \(bytes(perCell))", size: 12)
        for row in 0..<rows {
            let y = top + Double(row) * (cellH + 2)
            let rowStart = UInt64(row * columns)
            if row % max(2, rows / 16) == 0 {
                svg.text(left - 8, y + cellH, hex(mm.start &+ rowStart * perCell), size: 10, anchor: "end", fill: "#555")
            }
            let cellsInRow = min(columns, count - row * columns)
            svg.rect(left, y, Double(cellsInRow) * cellW, cellH, fill: "#eeeeee")
            var c = 0
            while c < cellsInRow {
                let i = row * columns + c
                let size = min(perCell, mm.size - UInt64(i) * perCell)
                guard used[i] > 0 else { c += 1; continue }
                let fill = color(bestColor[i]), shade = shadeLevel(used[i], size)
                var run = 1
                while c + run < cellsInRow {
                    let j = i + run
                    let sizeJ = min(perCell, mm.size - UInt64(j) * perCell)
                    guard used[j] > 0, color(bestColor[j]) == fill, shadeLevel(used[j], sizeJ) == shade else { break }
                    run += 1
                }
                svg.rect(left + Double(c) * cellW, y, Double(run) * cellW, cellH, fill: fill, opacity: shade)
                c += run
            }
        }
        var entries: [(String, String)] = shown.map { (color($0), "color \($0)") }
        if colorBytes.count > shown.count { entries.append((palette[palette.count - 1], "other colors")) }
        entries.append(("#eeeeee", "hole"))
        svg.legend(left, Double(svg.height) - 20, entries)
        return svg.document
    }

    /// Opacity for a cell `used` of `size` bytes full: four steps.
    private static func shadeLevel(_ used: UInt64, _ size: UInt64) -> Double {
        let f = Double(used) / Double(max(size, 1))
        return f > 0.75 ? 1 : f > 0.5 ? 0.75 : f > 0.25 ? 0.5 : 0.3
    }

    // MARK: Physical memory

    /// Physical memory as rows of cells: free, allocated (darker for larger
    /// orders), reserved, and MMIO or holes.
    static func memory(_ map: FrameMap, title: String, stats: String) -> String {
        // A few cells (a zoomed range) are drawn large and apart; many, small and merged.
        let few = map.cells.count <= 512
        let columns = few ? min(64, max(1, map.cells.count)) : 256
        let rows = (map.cells.count + columns - 1) / columns
        let cellW = 896.0 / Double(columns), cellH = few ? 16.0 : 9.0, left = 160.0, top = 60.0
        let typeColors = ["#d32f2f", "#2e7d32", "#f9a825", "#6a1b9a"]  // under each cell: its pageblocks' migratetype
        let orderColors = ["#90caf9", "#64b5f6", "#42a5f5", "#1e88e5", "#1565c0", "#5e35b1", "#7b1fa2", "#ad1457", "#c62828", "#d84315", "#bf360c"]
        func fill(_ cell: FrameMap.Cell) -> (String, Double) {
            let total = cell.free + cell.allocated + cell.reserved + cell.absent
            if cell.absent * 2 > total { return ("#ffe082", 1) }
            if cell.reserved * 2 > total { return ("#8d8d8d", 1) }
            if cell.allocated == 0 { return ("#e8f5e9", 1) }
            let f = Double(cell.allocated) / Double(max(1, total))
            return (orderColors[min(max(cell.maxOrder, 0), orderColors.count - 1)], f > 0.75 ? 1 : f > 0.5 ? 0.75 : f > 0.25 ? 0.5 : 0.3)
        }
        var svg = Svg(width: Int(left + Double(columns) * cellW + 30), height: Int(top + Double(rows) * (cellH + 1) + 100))
        svg.text(Double(svg.width) / 2, 26, title, size: 18, anchor: "middle", weight: "bold")
        svg.text(left, 46, stats + "; one cell = \(map.framesPerCell) page\(map.framesPerCell == 1 ? "" : "s")", size: 12)
        for row in 0..<rows {
            let y = top + Double(row) * (cellH + 1)
            if row % max(2, rows / 20) == 0 {
                let pfn = map.firstPfn + UInt64(row * columns) * map.framesPerCell
                svg.text(left - 8, y + cellH, hex(pfn << UInt64(MMCore.PAGE_SHIFT)), size: 10, anchor: "end", fill: "#555")
            }
            var c = 0
            let inRow = min(columns, map.cells.count - row * columns)
            while c < inRow {
                let (color, opacity) = fill(map.cells[row * columns + c])
                var run = 1
                while !few, c + run < inRow, fill(map.cells[row * columns + c + run]) == (color, opacity) { run += 1 }
                let width = Double(run) * cellW - (few ? 2 : 0)
                if opacity < 1 { svg.rect(left + Double(c) * cellW, y, width, cellH, fill: "#e8f5e9") }
                svg.rect(left + Double(c) * cellW, y, width, cellH, fill: color, opacity: opacity)
                c += run
            }
            // Under each cell, its pageblocks' migratetype.
            c = 0
            while c < inRow {
                let type = map.cells[row * columns + c].pageblockType
                var run = 1
                while c + run < inRow, map.cells[row * columns + c + run].pageblockType == type { run += 1 }
                if let type { svg.rect(left + Double(c) * cellW, y + cellH - 2, Double(run) * cellW - (few ? 2 : 0), 2, fill: typeColors[type.rawValue]) }
                c += run
            }
        }
        svg.legend(left, Double(svg.height) - 44, [("#e8f5e9", "free"), (orderColors[0], "allocated, order 0"),
                                                   (orderColors[3], "order 3"), (orderColors[6], "order 6"),
                                                   (orderColors[10], "order 10")])
        svg.legend(left, Double(svg.height) - 20, [("#8d8d8d", "reserved"), ("#ffe082", "MMIO or hole"),
                                                   (typeColors[0], "pageblock Unmovable"), (typeColors[1], "Movable"),
                                                   (typeColors[2], "Reclaimable"), (typeColors[3], "HighAtomic")])
        return svg.document
    }

    // MARK: Binder

    /// A binder Alloc's pages in order: active (under a buffer), on the
    /// LRU, or not allocated.
    static func binder(_ alloc: BinderAlloc, title: String) throws(KernelError) -> String {
        let count = alloc.bufferSize / MMCore.PAGE_SIZE
        let columns = min(128, max(1, count))
        let rows = (count + columns - 1) / columns
        let cellW = 7.0, cellH = 14.0, left = 120.0, top = 64.0
        let colors = ["active": "#1565c0", "lru": "#ffb300", "free": "#eeeeee"]
        var svg = Svg(width: Int(left + Double(columns) * cellW + 30), height: Int(top + Double(rows) * (cellH + 3) + 60))
        svg.text(Double(svg.width) / 2, 26, title, size: 18, anchor: "middle", weight: "bold")
        let c = alloc.pageCounts
        svg.text(left, 48, "\(count) pages: \(c.active) active, \(c.lru) on the LRU, \(c.free) not allocated; \(alloc.bufferCount) buffers, \(bytes(UInt64(alloc.freeAsyncSpace))) of async space free", size: 12)
        for row in 0..<rows {
            let y = top + Double(row) * (cellH + 3)
            svg.text(left - 8, y + cellH - 3, hex(alloc.userAddress + UInt64(row * columns * MMCore.PAGE_SIZE)), size: 10, anchor: "end", fill: "#555")
            var col = 0
            let inRow = min(columns, count - row * columns)
            while col < inRow {
                let state = try alloc.pageState(row * columns + col)
                var run = 1
                while col + run < inRow, try alloc.pageState(row * columns + col + run) == state { run += 1 }
                svg.rect(left + Double(col) * cellW, y, Double(run) * cellW - 1, cellH, fill: colors[state] ?? "#000",
                         title: "pages \(row * columns + col)...\(row * columns + col + run - 1): \(state)")
                col += run
            }
        }
        svg.legend(left, Double(svg.height) - 20, [("#1565c0", "active"), ("#ffb300", "on the LRU"), ("#eeeeee", "free")])
        return svg.document
    }
}
