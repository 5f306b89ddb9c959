import Foundation
import XCTest

/// `authorizer bench` against a real `serve`: the output is checked for
/// correctness only (valid JSON, every request accounted for, no errors),
/// never for speed.
final class BenchCommandTests: IntegrationTestCase {
    // Correctness, not speed: on a loaded machine a 100 ms SLA could turn the
    // unlock probe's 20 ms wait into an `07 account busy` before the release.
    override var serveArguments: [String] { ["--sla-ms", "2000"] }

    private func bench(_ arguments: [String]) throws -> [String: Any] {
        let output = try runAuthorizer(
            ["bench", "--target", "127.0.0.1:\(serve.port)", "--redis", redis.url, "--json"] + arguments
        ).output
        // Progress and notes go to stderr (merged here); the report is the JSON line.
        let line = try XCTUnwrap(output.split(separator: "\n").last { $0.hasPrefix("{") }, "no JSON in:\n\(output)")
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], String(line))
    }

    private func assertContract(_ report: [String: Any], file: StaticString = #filePath, line: UInt = #line) throws -> (requests: Int, codes: [String: Int]) {
        for key in ["throughput", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"] {
            XCTAssertNotNil(report[key] as? Double, "\(key) in \(report)", file: file, line: line)
        }
        let p50 = try XCTUnwrap(report["p50_ms"] as? Double), p99 = try XCTUnwrap(report["p99_ms"] as? Double)
        let max = try XCTUnwrap(report["max_ms"] as? Double)
        XCTAssertTrue(p50 <= p99 && p99 <= max, "percentiles in order: \(report)", file: file, line: line)
        let codes = try XCTUnwrap(report["codes"] as? [String: Int], "codes in \(report)", file: file, line: line)
        let requests = try XCTUnwrap(report["requests"] as? Int, file: file, line: line)
        XCTAssertEqual(report["errors"] as? Int, 0, "errors: \(report)", file: file, line: line)
        XCTAssertEqual(codes.values.reduce(0, +), requests, "every request has exactly one answer: \(report)", file: file, line: line)
        XCTAssertEqual(report["answered"] as? Int, requests, file: file, line: line)
        XCTAssertGreaterThan(requests, 0, file: file, line: line)
        XCTAssertGreaterThanOrEqual(codes["00", default: 0], requests * 9 / 10, "mostly approved: \(report)", file: file, line: line)
        return (requests, codes)
    }

    func testOpenLoopSendsTheWholeTimetableAndAccountsForEveryRequest() throws {
        let directory = try TestEnvironment.makeTemporaryDirectory("hgrm")
        defer { try? FileManager.default.removeItem(at: directory) }
        let hgrm = directory.appendingPathComponent("open.hgrm")
        let report = try bench([
            "--seed", "--rate", "200", "--duration", "2s", "--connections", "4",
            "--accounts", "50", "--hot-accounts", "2", "--contended", "0.1", "--hgrm", hgrm.path,
        ])
        // HdrHistogram's percentile text format, in milliseconds, ending at 100 % with every request counted.
        let distribution = try String(contentsOf: hgrm, encoding: .utf8).split(separator: "\n").map(String.init)
        XCTAssertTrue(distribution.first?.contains("Value") == true && distribution.first?.contains("Percentile") == true, "\(distribution.prefix(3))")
        let rows = distribution.filter { !$0.hasPrefix("#") && !$0.contains("Value") }.map { $0.split(separator: " ").compactMap { Double($0) } }
        let last = try XCTUnwrap(rows.last)
        XCTAssertEqual(last[1], 1.0, "the last row is the 100th percentile")
        XCTAssertEqual(last[2], 400, "every request in the histogram")
        let maxMs = try XCTUnwrap(report["max_ms"] as? Double)
        XCTAssertEqual(last[0], maxMs, accuracy: max(0.01, maxMs * 0.002), "values in milliseconds, the maximum last")
        XCTAssertTrue(distribution.contains { $0.hasPrefix("#[Max") && $0.contains("Total count") }, "summary lines")
        XCTAssertEqual(report["mode"] as? String, "open")
        let (requests, _) = try assertContract(report)
        XCTAssertEqual(requests, 400, "200/s for 2 s")
        // Unique ids: every request was decided (one statement each), none
        // replayed; except that a 07 timeout (a loaded machine) is reversed,
        // and its authorization may never have run.
        let timeouts = (report["reasons"] as? [String: Int])?["timeout"] ?? 0
        let authorizations = try redis.statements().filter { $0["type"] == "authorization" }.count
        XCTAssertLessThanOrEqual(authorizations, 400)
        XCTAssertGreaterThanOrEqual(authorizations, 400 - timeouts, "\(report)")
        XCTAssertEqual(try redis.statements().filter { $0["type"] == "reversal" }.count, timeouts)
        let food = try XCTUnwrap(redis.balances("bench-0")["FOOD"])
        XCTAssertGreaterThan(food, 1_000_000_000_000 - 400 * 10_000, "seeded with an ample balance")
    }

    func testClosedLoopKeepsThePipelineFullAndDrains() throws {
        let report = try bench(["--seed", "--rate", "0", "--duration", "1s", "--connections", "4", "--pipeline", "4", "--accounts", "100"])
        XCTAssertEqual(report["mode"] as? String, "closed")
        let (requests, _) = try assertContract(report)
        XCTAssertEqual(try redis.command("XLEN", "statements").int, Int64(requests))
    }

    func testUnlockProbeTimesAWaiterFromTheRelease() throws {
        let report = try bench(["--unlock-probes", "5"])
        XCTAssertEqual(report["mode"] as? String, "unlock-probe")
        let (_, codes) = try assertContract(report)
        XCTAssertEqual(codes, ["00": 5])
    }

    func testRejectsABadDuration() throws {
        let result = try runAuthorizer(["bench", "--duration", "10x"], expectSuccess: false)
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.output.contains("duration"), result.output)
    }
}
