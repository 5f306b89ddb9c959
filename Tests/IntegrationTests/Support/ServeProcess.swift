import Foundation

/// A real `authorizer serve` process on a free port.
final class ServeProcess: @unchecked Sendable {
    let child: ChildProcess
    let port: Int
    /// The metrics endpoint's port, when serve was started with --metrics-port (0 included).
    let metricsPort: Int?
    /// The ISO 8583 port, when serve was started with --iso8583-port (0 included).
    let iso8583Port: Int?

    /// `serve --port 0`: the kernel picks the port and serve reports it, so
    /// two tests can never race for the same free port.
    convenience init(redis: RedisServer, arguments: [String] = [], environment: [String: String]? = nil) throws {
        try self.init(url: redis.url, stateParent: redis.directory, arguments: arguments, environment: environment)
    }

    /// `url`: one Redis, or comma-separated cluster seeds.
    init(url: String, stateParent: URL, arguments: [String] = [], environment: [String: String]? = nil) throws {
        child = ChildProcess(
            name: "serve",
            executable: TestEnvironment.authorizerBinary,
            // Each serve its own journal of owed reversals (a later --state-dir wins).
            arguments: ["serve", "--redis", url, "--port", "0", "--log-level", "info",
                        "--state-dir", stateParent.appendingPathComponent("serve-\(UUID().uuidString.prefix(8))").path] + arguments,
            environment: environment
        )
        try child.start()
        guard let line = child.line(containing: "authorizer listening"), let port = ServeProcess.port(in: line) else {
            child.terminate(signal: SIGKILL)
            throw TestFailure("serve did not start:\n\(child.output)")
        }
        self.port = port
        if arguments.contains("--metrics-port") {
            guard let line = child.line(containing: "metrics listening"), let metricsPort = ServeProcess.port(in: line) else {
                child.terminate(signal: SIGKILL)
                throw TestFailure("serve did not report its metrics port:\n\(child.output)")
            }
            self.metricsPort = metricsPort
        } else {
            metricsPort = nil
        }
        if arguments.contains("--iso8583-port") {
            guard let line = child.line(containing: "iso8583 listening"), let isoPort = ServeProcess.port(in: line) else {
                child.terminate(signal: SIGKILL)
                throw TestFailure("serve did not report its ISO 8583 port:\n\(child.output)")
            }
            self.iso8583Port = isoPort
        } else {
            iso8583Port = nil
        }
    }

    /// The port of a `... listening ... port=N` log line (text or JSON logs).
    static func port(in line: String, key: String = "port") -> Int? {
        for marker in ["\(key)=", "\"\(key)\":\"", "\"\(key)\":"] {
            guard let range = line.range(of: marker) else { continue }
            let digits = line[range.upperBound...].prefix { $0.isNumber }
            if let port = Int(digits), port > 0 { return port }
        }
        return nil
    }

    func connect(receiveTimeout: TimeInterval = 10) throws -> TerminalClient {
        try TerminalClient(port: port, receiveTimeout: receiveTimeout)
    }

    deinit {
        child.terminate(signal: SIGKILL)
        _ = child.waitForExit(timeout: 5)
    }
}

/// Runs `authorizer` once (rules, account, …) and returns its output.
@discardableResult
func runAuthorizer(_ arguments: [String], expectSuccess: Bool = true) throws -> (status: Int32, output: String) {
    let child = ChildProcess(name: "cli", executable: TestEnvironment.authorizerBinary, arguments: arguments)
    try child.start()
    guard let status = child.waitForExit(timeout: 60) else {
        child.terminate(signal: SIGKILL)
        throw TestFailure("authorizer \(arguments.joined(separator: " ")) did not exit")
    }
    if expectSuccess && status != 0 {
        throw TestFailure("authorizer \(arguments.joined(separator: " ")) exited \(status):\n\(child.output)")
    }
    return (status, child.output)
}

/// Every sample of serve's /metrics, by name with labels.
func metricSamples(_ port: Int) throws -> [String: Double] {
    let client = try TerminalClient(port: port)
    try client.send("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    var samples: [String: Double] = [:]
    while let line = try client.readLine() {
        let parts = line.split(separator: " ")
        if parts.count == 2, !line.hasPrefix("#"), let value = Double(parts[1].trimmingCharacters(in: .whitespacesAndNewlines)) {
            samples[String(parts[0])] = value
        }
    }
    return samples
}

