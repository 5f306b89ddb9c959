import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import XCTest

/// `authorizer bench plot` from two small .hgrm files: well-formed SVG with
/// one curve per file, the SLA line, labelled axes and a legend.
final class LatencyPlotTests: XCTestCase {
    /// HdrHistogram's plain-text percentile distribution (values in ms).
    private static let fast = """
           Value     Percentile TotalCount 1/(1-Percentile)

           0.200 0.000000000000          1           1.00
           0.500 0.500000000000         50           2.00
           0.800 0.900000000000         90          10.00
           1.500 0.990000000000         99         100.00
           3.000 0.999000000000        999        1000.00
           4.000 1.000000000000       1000
        #[Mean    =        0.600, StdDeviation   =        0.300]
        #[Max     =        4.000, Total count    =         1000]
        #[Buckets =           22, SubBuckets     =         2048]

        """
    private static let slow = """
           Value     Percentile TotalCount 1/(1-Percentile)

           1.000 0.000000000000          1           1.00
           2.000 0.250000000000         25           1.33
           9.000 0.750000000000         75           4.00
          40.000 0.990000000000         99         100.00
         250.000 1.000000000000        100
        #[Mean    =        9.000, StdDeviation   =        3.000]
        #[Max     =      250.000, Total count    =          100]
        #[Buckets =           22, SubBuckets     =         2048]

        """

    /// Collects the elements of an SVG document.
    private final class Elements: NSObject, XMLParserDelegate {
        var elements: [(name: String, attributes: [String: String])] = []
        var texts: [String] = []
        private var text = ""
        func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String] = [:]) {
            elements.append((name, attributes))
            text = ""
        }
        /// Character data arrives in pieces (entities apart); one text per element.
        func parser(_ parser: XMLParser, foundCharacters string: String) {
            text += string
        }
        func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
            let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if !trimmed.isEmpty { texts.append(trimmed) }
            text = ""
        }
    }

    func testTwoDistributionsMakeTwoCurvesAgainstTheSLA() throws {
        let directory = try TestEnvironment.makeTemporaryDirectory("plot")
        defer { try? FileManager.default.removeItem(at: directory) }
        let fast = directory.appendingPathComponent("fast.hgrm"), slow = directory.appendingPathComponent("slow.hgrm")
        try Self.fast.write(to: fast, atomically: true, encoding: .utf8)
        try Self.slow.write(to: slow, atomically: true, encoding: .utf8)
        let svg = directory.appendingPathComponent("latency.svg")
        try runAuthorizer(["bench", "plot", "--sla-ms", "100", "--out", svg.path, fast.path, "slow & <steady>=\(slow.path)"])

        let parser = try XCTUnwrap(XMLParser(contentsOf: svg))
        let elements = Elements()
        parser.delegate = elements
        XCTAssertTrue(parser.parse(), "well-formed XML: \(String(describing: parser.parserError))")
        XCTAssertEqual(elements.elements.first?.name, "svg")

        let curves = elements.elements.filter { $0.name == "polyline" && $0.attributes["class"] == "curve" }
        XCTAssertEqual(curves.map { $0.attributes["data-label"] }, ["fast", "slow & <steady>"])
        XCTAssertNotEqual(curves[0].attributes["stroke"], curves[1].attributes["stroke"], "distinguishable")
        for curve in curves {
            let points = try XCTUnwrap(curve.attributes["points"]).split(separator: " ").map { pair -> (Double, Double) in
                let xy = pair.split(separator: ",").compactMap { Double($0) }
                return (xy[0], xy[1])
            }
            // From 50 % (the left edge) to at most 99.99 % (the right edge), left to right.
            XCTAssertEqual(points.first?.0, 80, "starts at 50 %: \(points)")
            XCTAssertLessThanOrEqual(points.last?.0 ?? .infinity, 700)
            XCTAssertEqual(points.map(\.0), points.map(\.0).sorted())
            XCTAssertEqual(points.map(\.1), points.map(\.1).sorted(by: >), "latency never falls as the percentile rises (y grows downwards)")
        }
        // The fast curve is below the slow one (higher y) at 50 %.
        let firstY = curves.map { $0.attributes["points"]!.split(separator: " ").first!.split(separator: ",")[1] }.compactMap { Double($0) }
        XCTAssertGreaterThan(firstY[0], firstY[1])

        let sla = try XCTUnwrap(elements.elements.first { $0.attributes["class"] == "sla" }, "the SLA line")
        XCTAssertEqual(sla.attributes["y1"], sla.attributes["y2"], "horizontal")
        XCTAssertTrue(elements.texts.contains("latency (ms, log scale)"), "y axis labelled")
        XCTAssertTrue(elements.texts.contains { $0.hasPrefix("percentile") }, "x axis labelled")
        for tick in ["50%", "90%", "99%", "99.9%", "99.99%"] { XCTAssertTrue(elements.texts.contains(tick), tick) }
        XCTAssertTrue(elements.texts.contains("slow & <steady>"), "legend: \(elements.texts)")
        XCTAssertTrue(elements.texts.contains("SLA (100 ms)"), "legend: \(elements.texts)")
    }

    func testAFileThatIsNotADistributionIsRefused() throws {
        let directory = try TestEnvironment.makeTemporaryDirectory("plot-bad")
        defer { try? FileManager.default.removeItem(at: directory) }
        let bad = directory.appendingPathComponent("bad.hgrm")
        try "p50 1.2 ms\n".write(to: bad, atomically: true, encoding: .utf8)
        let result = try runAuthorizer(["bench", "plot", "--out", directory.appendingPathComponent("x.svg").path, bad.path], expectSuccess: false)
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.output.contains("not an HdrHistogram"), result.output)
    }
}
