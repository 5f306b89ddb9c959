import Foundation
import XCTest

/// `/metrics`, `top` and the JSON log format, against a real `serve`.
final class MetricsTests: IntegrationTestCase {
    /// serve picks the port (--metrics-port 0) and reports it.
    private var metricsPort: Int { serve.metricsPort ?? -1 }

    override var serveArguments: [String] { ["--metrics-port", "0"] }

    func testCountersMoveByTheRequestsAnswered() throws {
        try account("m1", ["MEAL": 1_000, "CASH": 0])
        let before = try scrape()
        XCTAssertEqual(before.value(requests("00")), 0, "every series exists from the start")
        XCTAssertEqual(before.sum("authorizer_requests_total"), 0)
        XCTAssertEqual(before.value("authorizer_request_duration_seconds_count"), 0)

        let client = try serve.connect()
        for index in 0..<3 {
            XCTAssertEqual(try client.request(["id": "ok\(index)", "account": "m1", "totalAmount": "1.00", "mcc": "5811", "merchant": "M"]).code, "00")
        }
        for index in 0..<2 {
            XCTAssertEqual(try client.request(["id": "no\(index)", "account": "m1", "totalAmount": "100.00", "mcc": "5811", "merchant": "M"]).code, "51")
        }
        try client.sendLine("{not json")
        XCTAssertEqual(try client.readResponse().code, "07")
        XCTAssertEqual(try client.request(["id": "u1", "account": "nobody", "totalAmount": 1, "mcc": "5811", "merchant": "M"]).reason, "unknown account")

        let after = try scrape()
        XCTAssertEqual(after.value(requests("00")), 3)
        XCTAssertEqual(after.value(requests("51")), 2)
        XCTAssertEqual(after.value(requests("07", reason: "invalid_request")), 1)
        XCTAssertEqual(after.value(requests("07", reason: "unknown_account")), 1)
        XCTAssertEqual(after.sum("authorizer_requests_total"), 7, "no other series moved")
        // Every answer written is one latency observation.
        XCTAssertEqual(after.value("authorizer_request_duration_seconds_count"), 7)
        XCTAssertEqual(after.value(#"authorizer_request_duration_seconds_bucket{le="+Inf"}"#), 7)
        XCTAssertGreaterThan(after.value("authorizer_request_duration_seconds_sum") ?? 0, 0)
        // Only the six valid requests reached Redis; nobody waited for an account.
        XCTAssertEqual(after.value(#"authorizer_redis_round_trip_seconds_count{script="authorize"}"#), 6)
        XCTAssertEqual(after.value(#"authorizer_redis_round_trip_seconds_count{script="decline"}"#), 0)
        XCTAssertEqual(after.sum("authorizer_lock_waits_total"), 0)
        XCTAssertEqual(after.value("authorizer_lock_wait_seconds_count"), 0)
        XCTAssertEqual(after.value("authorizer_terminal_connections"), 1)
        XCTAssertEqual(after.sum("authorizer_redis_reconnects_total"), 0)
        XCTAssertEqual(after.value("authorizer_redis_script_reloads_total"), 0)

        // Prometheus conventions: HELP and TYPE for each family.
        XCTAssertTrue(after.text.contains("# TYPE authorizer_requests_total counter"))
        XCTAssertTrue(after.text.contains("# TYPE authorizer_request_duration_seconds histogram"))
        XCTAssertTrue(after.text.contains("# HELP authorizer_request_duration_seconds "))

        let second = try serve.connect()
        try eventually("two open connections") { try self.scrape().value("authorizer_terminal_connections") == 2 }
        _ = second
    }

    func testTooLongLineIsCountedAndTimed() throws {
        let client = try serve.connect()
        try client.sendLine(String(repeating: "x", count: 17 * 1024))
        XCTAssertEqual(try client.readResponse().code, "07")
        XCTAssertNil(try client.readLine(), "the server closes after a line that is too long")
        let metrics = try scrape()
        XCTAssertEqual(metrics.value(requests("07", reason: "line_too_long")), 1)
        XCTAssertEqual(metrics.sum("authorizer_requests_total"), 1)
        XCTAssertEqual(metrics.value("authorizer_request_duration_seconds_count"), 1)
    }

    func testConnectionsGaugeFallsWhenTerminalsLeave() throws {
        var clients = try (0..<3).map { _ in try serve.connect() }
        try eventually("three open connections") { try self.scrape().value("authorizer_terminal_connections") == 3 }
        clients.removeLast(2)
        try eventually("one open connection") { try self.scrape().value("authorizer_terminal_connections") == 1 }
        XCTAssertEqual(clients.count, 1)
    }

    func testNoscriptReloadIsCounted() throws {
        try account("n", ["FOOD": 1_000])
        let client = try serve.connect()
        XCTAssertEqual(try client.request(["account": "n", "totalAmount": 1, "mcc": "5411", "merchant": "M"]).code, "00")
        try redis.command("SCRIPT", "FLUSH")
        XCTAssertEqual(try client.request(["account": "n", "totalAmount": 1, "mcc": "5411", "merchant": "M"]).code, "00")
        XCTAssertEqual(try scrape().value("authorizer_redis_script_reloads_total"), 1)
    }

    func testLockWaitTimeoutIsCounted() throws {
        try account("busy", ["FOOD": 1_000])
        try redis.command("SET", "lock:{busy}", "held-by-hand", "PX", "5000")
        let client = try serve.connect()
        XCTAssertEqual(try client.request(["id": "b1", "account": "busy", "totalAmount": 1, "mcc": "5411", "merchant": "M"]).reason, "account busy")
        let metrics = try scrape()
        XCTAssertEqual(metrics.value(#"authorizer_lock_waits_total{cause="locked"}"#), 1)
        XCTAssertEqual(metrics.value(#"authorizer_lock_waits_total{cause="queued"}"#), 0)
        XCTAssertEqual(metrics.value("authorizer_lock_wait_timeouts_total"), 1)
        XCTAssertEqual(metrics.value("authorizer_lock_wait_seconds_count"), 1)
        XCTAssertEqual(metrics.value(requests("07", reason: "account_busy")), 1)
        XCTAssertEqual(metrics.value(#"authorizer_redis_round_trip_seconds_count{script="decline"}"#), 1)
    }

    func testContentionGaugesWhileARequestWaitsThenTheWaitEnds() throws {
        let patient = try ServeProcess(redis: redis, arguments: ["--metrics-port", "0", "--sla-ms", "5000"])
        let port = try XCTUnwrap(patient.metricsPort)
        try account("w", ["FOOD": 1_000])
        try redis.command("SET", "lock:{w}", "held-by-hand", "PX", "10000")
        let client = try patient.connect()
        try client.sendLine(Request.line(id: "w1", account: "w", amount: "1.00", mcc: "5411"))
        try eventually("the request waits for the lock") {
            let metrics = try self.scrape(port: port)
            return metrics.value(#"authorizer_lock_waits_total{cause="locked"}"#) == 1
                && metrics.value("authorizer_contended_accounts") == 1
                && metrics.value("authorizer_lock_waiters") == 1
        }
        try redis.command("DEL", "lock:{w}")
        XCTAssertEqual(try client.readResponse().code, "00")
        let metrics = try scrape(port: port)
        XCTAssertEqual(metrics.value("authorizer_lock_wait_seconds_count"), 1)
        XCTAssertEqual(metrics.value("authorizer_lock_wait_timeouts_total"), 0)
        try eventually("nobody waits any more") {
            let metrics = try self.scrape(port: port)
            return metrics.value("authorizer_contended_accounts") == 0 && metrics.value("authorizer_lock_waiters") == 0
        }
    }

    func testStreamGaugesFollowTheReplayerGroup() throws {
        try account("s", ["FOOD": 1_000])
        let client = try serve.connect()
        for index in 0..<3 {
            XCTAssertEqual(try client.request(["id": "s\(index)", "account": "s", "totalAmount": 1, "mcc": "5411", "merchant": "M"]).code, "00")
        }
        try eventually("three statements, none replayed (no group)") {
            let metrics = try self.scrape()
            return metrics.value("authorizer_statements_stream_length") == 3 && metrics.value("authorizer_replayer_lag_entries") == 3
        }
        try redis.command("XGROUP", "CREATE", "statements", "replayer", "0")
        try redis.command("XREADGROUP", "GROUP", "replayer", "c1", "COUNT", "2", "STREAMS", "statements", ">")
        try eventually("one statement left to deliver, two pending") {
            let metrics = try self.scrape()
            return metrics.value("authorizer_replayer_lag_entries") == 1 && metrics.value("authorizer_replayer_pending_entries") == 2
                && (metrics.value("authorizer_replayer_lag_seconds") ?? -1) >= 0
        }
        try redis.command("XREADGROUP", "GROUP", "replayer", "c1", "COUNT", "10", "STREAMS", "statements", ">")
        try eventually("replayer caught up") {
            let metrics = try self.scrape()
            return metrics.value("authorizer_replayer_lag_entries") == 0 && metrics.value("authorizer_replayer_lag_seconds") == 0
                && metrics.value("authorizer_replayer_pending_entries") == 3
        }
    }

    /// With the project's ACL users: `serve` samples as the `authorizer`
    /// user, `top` reads as the read-only `operator`.
    func testSamplingAndTopWorkAsTheRestrictedRedisUsers() throws {
        let secured = try RedisServer(name: "metrics-acl", acl: true)
        try runAuthorizer(["rules", "init", "--redis", secured.url])
        try runAuthorizer(["account", "set", "--redis", secured.url, "acl", "FOOD=10.00"])
        let guarded = try ServeProcess(redis: secured, arguments: ["--metrics-port", "0"])
        let port = try XCTUnwrap(guarded.metricsPort)
        let client = try guarded.connect()
        for index in 0..<2 {
            XCTAssertEqual(try client.request(["id": "acl\(index)", "account": "acl", "totalAmount": 1, "mcc": "5411", "merchant": "M"]).code, "00")
        }
        try secured.command("XGROUP", "CREATE", "statements", "replayer", "0")
        let length = try XCTUnwrap(secured.command("XLEN", "statements").int)
        try eventually("stream gauges sampled as the authorizer user") {
            let metrics = try self.scrape(port: port)
            return metrics.value("authorizer_statements_stream_length") == Double(length)
                && metrics.value("authorizer_replayer_lag_entries") == Double(length)
        }
        XCTAssertFalse(guarded.child.output.contains("metrics sampling failed"), guarded.child.output)

        let (status, output) = try runAuthorizer(["top", "--once", "--redis", secured.operatorURL, "--metrics", "http://127.0.0.1:\(port)"])
        XCTAssertEqual(status, 0)
        XCTAssertTrue(output.contains("stream length \(length)"), output)
        XCTAssertTrue(output.contains("replayer lag \(length) entries"), output)
    }

    func testOtherPathsAre404() throws {
        let response = try httpGet(port: metricsPort, path: "/")
        XCTAssertEqual(response.status, 404)
        XCTAssertEqual(try httpGet(port: metricsPort, path: "/metrics?x=1").status, 200)
    }

    func testTopRendersOnce() throws {
        try account("t", ["FOOD": 1_000])
        let client = try serve.connect()
        XCTAssertEqual(try client.request(["id": "t1", "account": "t", "totalAmount": 1, "mcc": "5411", "merchant": "M"]).code, "00")
        try redis.command("SET", "lock:{held}", "someone", "PX", "60000")

        let (status, output) = try runAuthorizer(["top", "--once", "--redis", redis.url, "--metrics", "http://127.0.0.1:\(metricsPort)"])
        XCTAssertEqual(status, 0)
        for heading in ["REQUESTS", "LATENCY", "p50", "p99", "CONTENTION", "contended accounts", "LOCKS HELD NOW", "STATEMENTS", "replayer lag"] {
            XCTAssertTrue(output.contains(heading), "missing \(heading) in:\n\(output)")
        }
        let approvedRow = output.split(separator: "\n").first { $0.hasPrefix("  00") }
        XCTAssertEqual(approvedRow?.split(separator: " ").last, "1", output)
        XCTAssertTrue(output.contains("1 lock"), output)
        XCTAssertTrue(output.contains("lock:{held}"), output)
        XCTAssertTrue(output.contains("stream length 1"), output)

        let unreachable = try TestEnvironment.freePort()
        let failed = try runAuthorizer(["top", "--once", "--redis", redis.url, "--metrics", "http://127.0.0.1:\(unreachable)"], expectSuccess: false)
        XCTAssertNotEqual(failed.status, 0)
        XCTAssertTrue(failed.output.contains("metrics unreachable"), failed.output)
        XCTAssertTrue(failed.output.contains("STATEMENTS"), "the Redis part still renders")
    }

    func testJSONLogsOneObjectPerLineAndEach07IsAWarning() throws {
        let logging = try ServeProcess(redis: redis, arguments: ["--log-format", "json"])
        try account("j", ["FOOD": 1_000])
        let client = try logging.connect()
        XCTAssertEqual(try client.request(["id": "quiet1", "account": "j", "totalAmount": 1, "mcc": "5411", "merchant": "M"]).code, "00")
        XCTAssertEqual(try client.request(["id": "loud1", "account": "ghost", "totalAmount": 1, "mcc": "5411", "merchant": "M"]).code, "07")
        XCTAssertTrue(logging.child.waitForLine(containing: "loud1", timeout: 5), logging.child.output)

        let lines = logging.child.output.split(separator: "\n")
        var declined: [[String: Any]] = []
        for line in lines {
            let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not JSON: \(line)")
            XCTAssertNotNil(object["ts"])
            XCTAssertNotNil(object["level"])
            XCTAssertNotNil(object["msg"])
            if object["msg"] as? String == "declined" { declined.append(object) }
        }
        XCTAssertEqual(declined.count, 1, logging.child.output)
        XCTAssertEqual(declined.first?["level"] as? String, "warning")
        XCTAssertEqual(declined.first?["id"] as? String, "loud1")
        XCTAssertEqual(declined.first?["account"] as? String, "ghost")
        XCTAssertEqual(declined.first?["reason"] as? String, "unknown account")
        XCTAssertFalse(logging.child.output.contains("quiet1"), "an approved request logs nothing at info")
    }

    // MARK: - Helpers

    private func requests(_ code: String, reason: String = "none") -> String {
        #"authorizer_requests_total{code="\#(code)",reason="\#(reason)"}"#
    }

    private func scrape(port: Int? = nil) throws -> Exposition {
        let response = try httpGet(port: port ?? metricsPort, path: "/metrics")
        guard response.status == 200 else { throw TestFailure("GET /metrics answered \(response.status)") }
        XCTAssertTrue(response.headers.contains { $0.lowercased().hasPrefix("content-type: text/plain; version=0.0.4") })
        return Exposition(response.body)
    }

    /// A plain HTTP/1.1 GET; the server closes after answering (Connection: close).
    private func httpGet(port: Int, path: String) throws -> (status: Int, headers: [String], body: String) {
        let connection = try TerminalClient(port: port)
        try connection.send("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        var lines: [String] = []
        while let line = try connection.readLine() { lines.append(line) }
        guard let statusLine = lines.first, let status = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) }),
              let blank = lines.firstIndex(of: "\r") else {
            throw TestFailure("not an HTTP response: \(lines)")
        }
        let headers = lines[1..<blank].map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        return (status, headers, lines[(blank + 1)...].joined(separator: "\n"))
    }

    private func eventually(_ what: String, timeout: TimeInterval = 5, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        XCTFail("timed out waiting for: \(what)")
    }
}

/// The samples of a Prometheus text exposition, by series (`name{labels}` as written).
private struct Exposition {
    let text: String
    private(set) var samples: [String: Double] = [:]

    init(_ text: String) {
        self.text = text
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " ") else { continue }
            samples[String(line[..<space])] = Double(line[line.index(after: space)...])
        }
    }

    func value(_ series: String) -> Double? { samples[series] }

    /// The sum over every series of the metric `name`.
    func sum(_ name: String) -> Double {
        samples.filter { $0.key == name || $0.key.hasPrefix(name + "{") }.values.reduce(0, +)
    }
}
