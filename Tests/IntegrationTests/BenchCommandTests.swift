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

    // MARK: - Cost per authorization

    /// utime + stime of a process in clock ticks, read here independently of the bench's reader.
    private func cpuTicks(_ pid: Int32) throws -> Int {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        let fields = try XCTUnwrap(stat.split(separator: ")").last).split(separator: " ")
        return try XCTUnwrap(Int(fields[11])) + XCTUnwrap(Int(fields[12]))
    }

    private func redisPid() throws -> Int32 {
        let info = try XCTUnwrap(redis.command("INFO", "server").string)
        let line = try XCTUnwrap(info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("process_id:") })
        return try XCTUnwrap(Int32(line.dropFirst("process_id:".count)))
    }

    /// Each per-request figure is the group's CPU seconds over the answered requests, and total is their sum.
    private func assertCPUAddsUp(_ report: [String: Any], groups: [String], file: StaticString = #filePath, line: UInt = #line) throws -> [String: Double] {
        let perAuth = try XCTUnwrap(report["cpu_us_per_auth"] as? [String: Double], "cpu_us_per_auth in \(report)", file: file, line: line)
        let seconds = try XCTUnwrap(report["cpu_seconds"] as? [String: Double], file: file, line: line)
        let resolution = try XCTUnwrap(report["cpu_resolution_us"] as? [String: Double], file: file, line: line)
        let answered = Double(try XCTUnwrap(report["answered"] as? Int, file: file, line: line))
        XCTAssertEqual(Set(perAuth.keys), Set(groups + ["total"]), file: file, line: line)
        for group in groups {
            let value = try XCTUnwrap(perAuth[group], file: file, line: line)
            XCTAssertGreaterThan(value, 0, "\(group) used CPU: \(report)", file: file, line: line)
            XCTAssertEqual(value, (seconds[group] ?? -1) * 1e6 / answered, accuracy: 0.01, "\(group): seconds / answered", file: file, line: line)
            XCTAssertGreaterThan(resolution[group] ?? 0, 0, file: file, line: line)
        }
        let sum = groups.compactMap { perAuth[$0] }.reduce(0, +)
        XCTAssertEqual(perAuth["total"] ?? -1, sum, accuracy: 0.01 * Double(groups.count), "total = sum of the parts", file: file, line: line)
        return perAuth
    }

    func testCPUPerAnsweredRequestOfRedisServeAndTheGenerator() throws {
        let redisPid = try redisPid(), servePid = serve.child.process.processIdentifier
        let serveBefore = try cpuTicks(servePid), redisBefore = try cpuTicks(redisPid)
        let report = try bench([
            "--seed", "--rate", "0", "--duration", "2s", "--connections", "4", "--pipeline", "4", "--accounts", "100",
            "--cpu-of", "redis=\(redisPid)", "--cpu-of", "serve=\(servePid)",
        ])
        let serveOutside = try cpuTicks(servePid) - serveBefore, redisOutside = try cpuTicks(redisPid) - redisBefore
        _ = try assertContract(report)
        _ = try assertCPUAddsUp(report, groups: ["redis", "serve", "generator"])
        // The bench's reading covers the load only, a part of what the test saw around the whole command.
        let hz = Double(try XCTUnwrap(report["cpu_ticks_per_s"] as? Int))
        let seconds = try XCTUnwrap(report["cpu_seconds"] as? [String: Double])
        XCTAssertLessThanOrEqual(seconds["serve"] ?? .infinity, (Double(serveOutside) + 2) / hz, "\(report)")
        XCTAssertLessThanOrEqual(seconds["redis"] ?? .infinity, (Double(redisOutside) + 2) / hz, "\(report)")
        XCTAssertGreaterThanOrEqual(seconds["serve"] ?? 0, Double(serveOutside) / hz / 2 - 0.02, "most of serve's CPU is the load: \(report)")
    }

    func testCPUOfSeveralProcessesAsOneGroupAndBadSpecs() throws {
        let redisPid = try redisPid(), servePid = serve.child.process.processIdentifier
        let report = try bench([
            "--rate", "0", "--duration", "1s", "--connections", "2", "--pipeline", "4", "--seed", "--accounts", "20",
            "--cpu-of", "both=\(redisPid)+\(servePid)",
        ])
        let resolution = try XCTUnwrap(report["cpu_resolution_us"] as? [String: Double])
        XCTAssertEqual(resolution["both"] ?? 0, 2 * (resolution["generator"] ?? 0), accuracy: 0.002, "one tick per process")
        for spec in ["redis", "redis=", "redis=12x", "generator=1", "total=1", "=1"] {
            let result = try runAuthorizer(["bench", "--cpu-of", spec], expectSuccess: false)
            XCTAssertNotEqual(result.status, 0, spec)
            XCTAssertTrue(result.output.contains("--cpu-of"), result.output)
        }
    }

    func testMemoryPerAuthorizationSplitsTheStreamFromTheRest() throws {
        // 1,000 authorizations on 200 fresh accounts, through a user that may trim the stream.
        let output = try runAuthorizer([
            "bench", "--target", "127.0.0.1:\(serve.port)", "--redis", redis.adminURL, "--json", "--memory", "--seed",
            "--first-account", "5000", "--accounts", "200", "--contended", "0", "--rate", "500", "--duration", "2s", "--connections", "4",
        ]).output
        let line = try XCTUnwrap(output.split(separator: "\n").last { $0.hasPrefix("{") }, output)
        let report = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        let (requests, _) = try assertContract(report)
        let bytes = try XCTUnwrap(report["memory_bytes_per_auth"] as? [String: Double], "\(report)")
        let memory = try XCTUnwrap((report["memory"] as? [String: Any])?.compactMapValues { $0 as? Int })
        XCTAssertEqual((report["memory"] as? [String: Any])?["steady_before"] as? Bool, true, "\(report)")
        let idempotency = try XCTUnwrap(bytes["idempotency"]), stream = try XCTUnwrap(bytes["stream"]), total = try XCTUnwrap(bytes["total"])
        XCTAssertEqual(total, idempotency + stream, accuracy: 0.2, "the parts add up: \(report)")
        let before = try XCTUnwrap(memory["used_memory_before"]), after = try XCTUnwrap(memory["used_memory_after"])
        let trimmed = try XCTUnwrap(memory["used_memory_after_trim"]), deleted = try XCTUnwrap(memory["used_memory_after_delete"])
        XCTAssertEqual(total, Double(after - before) / Double(requests), accuracy: 0.1)
        XCTAssertEqual(stream, Double(after - deleted) / Double(requests), accuracy: 0.1)
        // A fresh Redis: the phase created `statements`, and its key is a small part of the stream's bytes.
        XCTAssertEqual(memory["streams_created"], 1)
        let newKeys = try XCTUnwrap(bytes["stream_new_keys"])
        XCTAssertEqual(newKeys, Double(trimmed - deleted) / Double(requests), accuracy: 0.1)
        XCTAssertTrue(newKeys > 0 && newKeys < stream / 2, "\(report)")
        // A transaction record is a key with its id and a short value, a statement a stream
        // entry of a dozen fields: each tens to hundreds of bytes, never zero, never kilobytes.
        XCTAssertTrue((40...2_000).contains(idempotency), "idempotency bytes per auth: \(report)")
        XCTAssertTrue((20...2_000).contains(stream), "stream bytes per auth: \(report)")
        // The stream was trimmed after the phase; the accounts were fresh (seeded, then debited).
        XCTAssertEqual(try redis.command("XLEN", "statements").int, 0)
        XCTAssertNotNil(try redis.balances("bench-5199")["FOOD"])
        XCTAssertNil(try redis.balances("bench-5200")["FOOD"])
    }

    /// `make bench` end to end, briefly: the script's bench.json has every phase
    /// with the cost fields, on one Redis and on the cluster.
    func testBenchScriptWritesEveryPhaseWithItsCost() throws {
        let results = try TestEnvironment.makeTemporaryDirectory("bench-results")
        defer { try? FileManager.default.removeItem(at: results) }
        let script = TestEnvironment.repositoryRoot.appendingPathComponent("scripts/bench.sh").path
        var environment = ProcessInfo.processInfo.environment
        environment.merge([
            "AUTHORIZER_BIN": TestEnvironment.authorizerBinary, "BENCH_RESULTS": results.path, "BENCH_DURATION": "1s",
            "BENCH_RATE": "1000", "BENCH_IDLE": "20", "BENCH_PROBES": "3", "CEILING_REQUESTS": "2000",
            "BENCH_ACCOUNTS": "200", "BENCH_MEMORY_AUTHS": "1000", "BENCH_CONNECTIONS": "8", "BENCH_PIPELINE": "4",
        ]) { $1 }
        let child = ChildProcess(name: "bench.sh", executable: "/bin/bash", arguments: [script], environment: environment)
        try child.start()
        guard let status = child.waitForExit(timeout: 300) else {
            child.terminate(signal: SIGKILL)
            throw TestFailure("bench.sh did not finish:\n\(child.output)")
        }
        XCTAssertEqual(status, 0, child.output)
        XCTAssertTrue(child.output.contains("CPU per answered authorization"), child.output)
        let data = try Data(contentsOf: results.appendingPathComponent("bench.json"))
        let summary = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
        let phases = try XCTUnwrap(summary["phases"] as? [String: [String: Any]])
        XCTAssertGreaterThan(summary["ceiling_redis_cpu_us_per_call"] as? Double ?? 0, 0, "\(summary)")
        XCTAssertGreaterThan(summary["ceiling_card_redis_cpu_us_per_call"] as? Double ?? 0, 0, "a card's cost is measured: \(summary)")
        XCTAssertGreaterThan(summary["ceiling_controls_redis_cpu_us_per_call"] as? Double ?? 0, 0, "two controls' cost is measured: \(summary)")
        XCTAssertFalse(child.output.contains("the card calls did not approve"), child.output)
        let single = ["redis", "serve", "generator"], cluster = ["redis", "replicas", "serve", "generator"]
        for (phase, groups) in [("closed", single), ("open", single), ("open_half", single), ("iso8583", single),
                                ("cluster_closed", cluster), ("cluster_open", cluster), ("cluster_open_half", cluster)] {
            let report = try XCTUnwrap(phases[phase], "\(phase) in \(phases.keys.sorted())")
            let perAuth = try XCTUnwrap(report["cpu_us_per_auth"] as? [String: Double], "\(phase): \(report)")
            XCTAssertEqual(Set(perAuth.keys), Set(groups + ["total"]), phase)
            // Phases of 1 s are a few ticks each: only the closed loops are sure to register every process.
            for group in groups where phase.hasSuffix("closed") && group != "replicas" {
                XCTAssertGreaterThan(perAuth[group] ?? 0, 0, "\(phase) \(group)")
            }
            XCTAssertEqual(perAuth["total"] ?? -1, groups.compactMap { perAuth[$0] }.reduce(0, +), accuracy: 0.01 * Double(groups.count), phase)
        }
        for phase in ["memory", "cluster_memory"] {
            let bytes = try XCTUnwrap(phases[phase]?["memory_bytes_per_auth"] as? [String: Double], phase)
            XCTAssertGreaterThan(bytes["idempotency"] ?? 0, 0, "\(phase): \(bytes)")
            XCTAssertGreaterThan(bytes["stream"] ?? 0, 0, "\(phase): \(bytes)")
            XCTAssertEqual(bytes["total"] ?? -1, (bytes["idempotency"] ?? 0) + (bytes["stream"] ?? 0), accuracy: 0.2, phase)
        }
        XCTAssertEqual((phases["cluster_memory"]?["memory"] as? [String: Any])?["nodes"] as? Int, 3, "summed over the 3 masters")
    }

    func testRejectsABadDuration() throws {
        let result = try runAuthorizer(["bench", "--duration", "10x"], expectSuccess: false)
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.output.contains("duration"), result.output)
    }
}
