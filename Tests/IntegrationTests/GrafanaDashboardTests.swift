import Foundation
import XCTest

/// `ops/grafana/authorizer.json` against a real `serve`'s /metrics: every
/// metric its PromQL uses is exported, and it covers what an operator watches.
final class GrafanaDashboardTests: IntegrationTestCase {
    override var serveArguments: [String] { ["--metrics-port", "0"] }

    private static let functions: Set<String> = [
        "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
    ]

    /// The metric names of one PromQL expression: identifiers that are not
    /// functions (followed by `(`), labels (inside `{}` or `by (…)`), ranges,
    /// strings, numbers or keywords.
    static func metricNames(in expression: String) -> Set<String> {
        var text = expression
        for pattern in [#""(?:[^"\\]|\\.)*""#, #"\{[^}]*\}"#, #"\[[^\]]*\]"#, #"\b(?:by|without|on|ignoring)\s*\([^)]*\)"#] {
            text = text.replacingOccurrences(of: pattern, with: " ", options: .regularExpression)
        }
        var names: Set<String> = []
        let identifier = try! NSRegularExpression(pattern: #"[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?"#)
        let range = NSRange(text.startIndex..., in: text)
        for match in identifier.matches(in: text, range: range) {
            guard match.range(at: 1).location == NSNotFound, let whole = Range(match.range, in: text) else { continue }  // a function
            let name = String(text[whole])
            if functions.contains(name) { continue }
            // Part of a number such as 1e3? Identifiers start with a letter here, numbers were not matched.
            if let start = Range(match.range, in: text)?.lowerBound, start > text.startIndex,
               text[text.index(before: start)].isNumber || text[text.index(before: start)] == "." { continue }
            names.insert(name)
        }
        return names
    }

    func testTheExtractorFindsMetricNamesOnly() {
        XCTAssertEqual(
            Self.metricNames(in: #"histogram_quantile(0.99, sum by (le, script) (rate(a_b_bucket{job=~"$job",le="0.1"}[$__rate_interval]))) / c_total"#),
            ["a_b_bucket", "c_total"]
        )
        XCTAssertEqual(Self.metricNames(in: "time() - max by (instance) (process_start_time_seconds)"), ["process_start_time_seconds"])
    }

    func testEveryMetricTheDashboardQueriesIsExported() throws {
        let url = TestEnvironment.repositoryRoot.appendingPathComponent("ops/grafana/authorizer.json")
        let dashboard = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let panels = try XCTUnwrap(dashboard["panels"] as? [[String: Any]])
        var expressions: [String] = []
        for panel in panels {
            for target in panel["targets"] as? [[String: Any]] ?? [] {
                expressions.append(try XCTUnwrap(target["expr"] as? String, "\(panel["title"] ?? "?"): a target without expr"))
            }
        }
        let templating = (dashboard["templating"] as? [String: Any])?["list"] as? [[String: Any]] ?? []
        for variable in templating {
            if let definition = variable["definition"] as? String,
               let match = definition.range(of: #"(?<=label_values\()[A-Za-z_:][A-Za-z0-9_:]*"#, options: .regularExpression) {
                expressions.append(String(definition[match]))
            }
        }
        XCTAssertGreaterThanOrEqual(expressions.count, 15, "the dashboard has its queries")
        let used = expressions.reduce(into: Set<String>()) { $0.formUnion(Self.metricNames(in: $1)) }

        // What the issue asks the dashboard to show.
        for required in [
            "authorizer_requests_total", "authorizer_request_duration_seconds_bucket", "authorizer_lock_waits_total",
            "authorizer_replayer_lag_entries", "authorizer_redis_round_trip_seconds_bucket", "authorizer_redis_reconnects_total",
        ] {
            XCTAssertTrue(used.contains(required), "\(required) on the dashboard: \(used.sorted())")
        }
        let latency = try XCTUnwrap(panels.first { ($0["title"] as? String)?.hasPrefix("Latency percentiles") == true })
        let steps = ((((latency["fieldConfig"] as? [String: Any])?["defaults"] as? [String: Any])?["thresholds"] as? [String: Any])?["steps"] as? [[String: Any]]) ?? []
        XCTAssertTrue(steps.contains { ($0["value"] as? Double) == 0.1 }, "the 100 ms SLA drawn on the latency panel")

        // One request so that every kind of series has moved at least once.
        try account("g", ["FOOD": 1_000])
        XCTAssertEqual(try serve.connect().request(["id": "g1", "account": "g", "totalAmount": 1, "mcc": "5411", "merchant": "M"]).code, "00")
        let exported = try exportedNames(port: try XCTUnwrap(serve.metricsPort))
        XCTAssertTrue(exported.contains("authorizer_requests_total"), "a real exposition of serve")
        // The webhook panels' metrics come from the deliverer's /metrics.
        let webhooks = used.filter { $0.hasPrefix("authorizer_webhook_") }
        XCTAssertTrue(webhooks.contains("authorizer_webhook_delivery_latency_seconds_bucket"), "the webhooks panels: \(used.sorted())")
        let missing = used.subtracting(webhooks).subtracting(exported)
        XCTAssertTrue(missing.isEmpty, "queried by the dashboard but not exported by serve: \(missing.sorted())")
        let config = try writeWebhookConfig("""
            endpoints:
              - name: app
                url: http://127.0.0.1:9/hooks
                secret_env: HOOK_SECRET
            """, in: redis.directory)
        let deliverer = try WebhookDeliverer(
            redisURL: redis.webhooksURL, config: config, database: redis.directory.appendingPathComponent("webhooks.sqlite").path,
            environment: ["HOOK_SECRET": "0123456789abcdef"], extra: ["--metrics-port", "0"]
        )
        let line = try XCTUnwrap(deliverer.child.line(containing: "metrics listening"))
        let fromDeliverer = try exportedNames(port: try XCTUnwrap(ServeProcess.port(in: line)))
        let missingWebhooks = webhooks.subtracting(fromDeliverer)
        XCTAssertTrue(missingWebhooks.isEmpty, "queried by the dashboard but not exported by the deliverer: \(missingWebhooks.sorted())")
        _ = deliverer.stop()
    }

    /// Sample names in a /metrics (`name{…} value` or `name value`).
    private func exportedNames(port: Int) throws -> Set<String> {
        let connection = try TerminalClient(port: port)
        try connection.send("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        var lines: [String] = []
        while let line = try connection.readLine() { lines.append(line) }
        XCTAssertTrue(lines.first?.contains(" 200 ") == true, "\(lines.first ?? "no answer")")
        var names: Set<String> = []
        for line in lines where !line.hasPrefix("#") {
            let name = line.prefix { $0.isLetter || $0.isNumber || $0 == "_" || $0 == ":" }
            if !name.isEmpty, line.dropFirst(name.count).first == "{" || line.dropFirst(name.count).first == " " {
                names.insert(String(name))
            }
        }
        XCTAssertFalse(names.isEmpty, "a real exposition: \(lines.prefix(5))")
        return names
    }
}
