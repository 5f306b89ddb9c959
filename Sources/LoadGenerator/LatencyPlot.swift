import Foundation

/// Latency by percentile as an SVG chart, from HdrHistogram percentile
/// distributions (`.hgrm`, what `authorizer bench --hgrm` writes): the x axis
/// is 1/(1-p) on a log scale from 50 % to 99.99 %, the y axis the latency in
/// milliseconds on a log scale, one curve per file, the SLA as a line.
public enum LatencyPlot {
    public struct Curve: Sendable {
        public var label: String
        /// (percentile as a fraction 0...1, latency in milliseconds), in file order.
        public var points: [(percentile: Double, milliseconds: Double)]

        public init(label: String, points: [(percentile: Double, milliseconds: Double)]) {
            self.label = label
            self.points = points
        }
    }

    public struct ParseError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Reads the plain-text percentile distribution HdrHistogram writes:
    /// `Value Percentile TotalCount 1/(1-Percentile)` rows, a header, and
    /// `#[...]` summary lines. Values are taken as milliseconds.
    public static func parseHgrm(_ text: String, label: String) throws -> Curve {
        var points: [(percentile: Double, milliseconds: Double)] = []
        for line in text.split(whereSeparator: \.isNewline) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") || trimmed.hasPrefix("Value") { continue }
            let columns = trimmed.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard columns.count >= 3, let value = Double(columns[0]), let percentile = Double(columns[1]),
                  value.isFinite, value >= 0, (0...1).contains(percentile) else {
                throw ParseError(description: "\(label): not an HdrHistogram percentile distribution line: \(trimmed)")
            }
            points.append((percentile, value))
        }
        guard !points.isEmpty else { throw ParseError(description: "\(label): no percentile lines") }
        return Curve(label: label, points: points)
    }

    // MARK: - Geometry

    static let lowestPercentile = 0.5
    static let highestPercentile = 0.9999
    static let width = 960.0, height = 560.0
    static let plotLeft = 80.0, plotRight = 700.0, plotTop = 56.0, plotBottom = 480.0

    /// log10(1/(1-p)): 50 % -> 0.301, 99.99 % -> 4.
    static func xValue(_ percentile: Double) -> Double {
        percentile >= highestPercentile ? -log10(1 - highestPercentile) : -log10(1 - percentile)
    }

    static let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]
    static let dashes = ["", "8 4", "2 3", "10 3 2 3"]

    /// The points of a curve inside 50 %...99.99 %: the first at or past
    /// 50 % starts it at 50 %, the first at or past 99.99 % ends it there.
    static func visiblePoints(_ curve: Curve) -> [(x: Double, milliseconds: Double)] {
        let sorted = curve.points.sorted { $0.percentile < $1.percentile }
        var result: [(x: Double, milliseconds: Double)] = []
        for point in sorted where point.percentile >= lowestPercentile {
            if result.isEmpty {
                result.append((xValue(lowestPercentile), point.milliseconds))
                if point.percentile == lowestPercentile { continue }
            }
            result.append((xValue(point.percentile), point.milliseconds))
            if point.percentile >= highestPercentile { break }
        }
        return result
    }

    public static func svg(curves: [Curve], slaMilliseconds: Double?, title: String = "Latency by percentile") -> String {
        let visible = curves.map { visiblePoints($0) }
        let values = visible.flatMap { $0.map(\.milliseconds) }.filter { $0 > 0 } + [slaMilliseconds].compactMap { $0 }
        // y: whole decades around every value and the SLA, at least 0.1 ms to 100 ms.
        let lowDecade = min(floor(log10(values.min() ?? 0.1)), -1)
        let highDecade = max(ceil(log10((values.max() ?? 100) * 1.05)), 2)
        let xLow = xValue(lowestPercentile), xHigh = xValue(highestPercentile)
        func px(_ x: Double) -> Double { plotLeft + (x - xLow) / (xHigh - xLow) * (plotRight - plotLeft) }
        func py(_ milliseconds: Double) -> Double {
            let clamped = max(milliseconds, pow(10, lowDecade))
            return plotBottom - (log10(clamped) - lowDecade) / (highDecade - lowDecade) * (plotBottom - plotTop)
        }
        func f(_ value: Double) -> String { String(format: "%.1f", value) }

        var out = """
        <?xml version="1.0" encoding="UTF-8"?>
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="13">
        <rect x="0" y="0" width="\(Int(width))" height="\(Int(height))" fill="white"/>
        <text x="\(f((plotLeft + plotRight) / 2))" y="30" text-anchor="middle" font-size="17" font-weight="bold">\(escape(title))</text>

        """
        // Grid and ticks: y at 1, 2, 5 x each decade; x at 50, 90, 99, 99.9, 99.99 %.
        out += "<g class=\"grid\" stroke=\"#dddddd\" stroke-width=\"1\">\n"
        var yTicks: [Double] = []
        for decade in Int(lowDecade)..<Int(highDecade) {
            for step in [1.0, 2, 5] { yTicks.append(step * pow(10, Double(decade))) }
        }
        yTicks.append(pow(10, highDecade))
        for tick in yTicks { out += "<line x1=\"\(f(plotLeft))\" y1=\"\(f(py(tick)))\" x2=\"\(f(plotRight))\" y2=\"\(f(py(tick)))\"/>\n" }
        let xTicks: [(Double, String)] = [(0.5, "50%"), (0.75, "75%"), (0.9, "90%"), (0.99, "99%"), (0.999, "99.9%"), (0.9999, "99.99%")]
        for (percentile, _) in xTicks { out += "<line x1=\"\(f(px(xValue(percentile))))\" y1=\"\(f(plotTop))\" x2=\"\(f(px(xValue(percentile))))\" y2=\"\(f(plotBottom))\"/>\n" }
        out += "</g>\n"
        out += "<rect x=\"\(f(plotLeft))\" y=\"\(f(plotTop))\" width=\"\(f(plotRight - plotLeft))\" height=\"\(f(plotBottom - plotTop))\" fill=\"none\" stroke=\"#333333\"/>\n"
        out += "<g class=\"y-ticks\" text-anchor=\"end\">\n"
        for tick in yTicks { out += "<text x=\"\(f(plotLeft - 6))\" y=\"\(f(py(tick) + 4))\">\(tickLabel(tick))</text>\n" }
        out += "</g>\n<g class=\"x-ticks\" text-anchor=\"middle\">\n"
        for (percentile, label) in xTicks { out += "<text x=\"\(f(px(xValue(percentile))))\" y=\"\(f(plotBottom + 18))\">\(label)</text>\n" }
        out += "</g>\n"
        out += "<text class=\"x-label\" x=\"\(f((plotLeft + plotRight) / 2))\" y=\"\(f(plotBottom + 44))\" text-anchor=\"middle\">percentile (log scale of 1/(1-p))</text>\n"
        out += "<text class=\"y-label\" x=\"22\" y=\"\(f((plotTop + plotBottom) / 2))\" text-anchor=\"middle\" transform=\"rotate(-90 22 \(f((plotTop + plotBottom) / 2)))\">latency (ms, log scale)</text>\n"

        // The SLA, then the curves, clipped to the plot area.
        out += "<clipPath id=\"plot\"><rect x=\"\(f(plotLeft))\" y=\"\(f(plotTop))\" width=\"\(f(plotRight - plotLeft))\" height=\"\(f(plotBottom - plotTop))\"/></clipPath>\n"
        if let sla = slaMilliseconds {
            out += "<line class=\"sla\" x1=\"\(f(plotLeft))\" y1=\"\(f(py(sla)))\" x2=\"\(f(plotRight))\" y2=\"\(f(py(sla)))\" stroke=\"#d62728\" stroke-width=\"2\" stroke-dasharray=\"6 4\"/>\n"
            out += "<text x=\"\(f(plotLeft + 6))\" y=\"\(f(py(sla) - 6))\" fill=\"#d62728\">SLA \(tickLabel(sla)) ms</text>\n"
        }
        out += "<g clip-path=\"url(#plot)\" fill=\"none\" stroke-width=\"2.2\" stroke-linejoin=\"round\">\n"
        for (index, (curve, points)) in zip(curves, visible).enumerated() {
            let coordinates = points.map { "\(f(px($0.x))),\(f(py($0.milliseconds)))" }.joined(separator: " ")
            let dash = dashes[index / palette.count % dashes.count]
            out += "<polyline class=\"curve\" data-label=\"\(escape(curve.label))\" stroke=\"\(palette[index % palette.count])\"\(dash.isEmpty ? "" : " stroke-dasharray=\"\(dash)\"") points=\"\(coordinates)\"/>\n"
        }
        out += "</g>\n"

        // Legend, right of the plot.
        let legendX = plotRight + 20
        out += "<g class=\"legend\">\n<text x=\"\(f(legendX))\" y=\"\(f(plotTop + 4))\" font-weight=\"bold\">phase</text>\n"
        var legendY = plotTop + 26
        for (index, curve) in curves.enumerated() {
            let dash = dashes[index / palette.count % dashes.count]
            out += "<line x1=\"\(f(legendX))\" y1=\"\(f(legendY - 4))\" x2=\"\(f(legendX + 28))\" y2=\"\(f(legendY - 4))\" stroke=\"\(palette[index % palette.count])\" stroke-width=\"3\"\(dash.isEmpty ? "" : " stroke-dasharray=\"\(dash)\"")/>\n"
            out += "<text x=\"\(f(legendX + 36))\" y=\"\(f(legendY))\">\(escape(curve.label))</text>\n"
            legendY += 22
        }
        if let sla = slaMilliseconds {
            out += "<line x1=\"\(f(legendX))\" y1=\"\(f(legendY - 4))\" x2=\"\(f(legendX + 28))\" y2=\"\(f(legendY - 4))\" stroke=\"#d62728\" stroke-width=\"2\" stroke-dasharray=\"6 4\"/>\n"
            out += "<text x=\"\(f(legendX + 36))\" y=\"\(f(legendY))\">SLA (\(tickLabel(sla)) ms)</text>\n"
        }
        out += "</g>\n</svg>\n"
        return out
    }

    static func tickLabel(_ milliseconds: Double) -> String {
        if milliseconds >= 1 { return String(format: "%.0f", milliseconds) }
        var text = String(format: "%.3f", milliseconds)
        while text.hasSuffix("0") { text.removeLast() }
        return text
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default:
                if let ascii = character.asciiValue, ascii < 0x20 { continue }  // not allowed in XML 1.0
                out.append(character)
            }
        }
        return out
    }
}
