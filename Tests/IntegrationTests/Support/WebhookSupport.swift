import Foundation
import XCTest

/// `scripts/webhook-receiver.py`: a real HTTP receiver on loopback that
/// verifies each signature with Python's own `hmac` (an implementation
/// independent of the deliverer's) and prints one JSON line per request.
final class WebhookReceiver {
    struct Record {
        let eventID: String
        let type: String
        let account: String
        let verified: Bool
        let status: Int
        let duplicate: Bool
        let receivedMilliseconds: Int64
        let body: [String: Any]?
    }

    let child: ChildProcess
    let port: Int
    let secret: String

    /// `port` 0: any free port (a restart passes the first one's).
    init(secret: String, port: Int = 0, mode: [String] = []) throws {
        self.secret = secret
        child = ChildProcess(
            name: "webhook-receiver", executable: "/usr/bin/python3",
            arguments: ["-u", TestEnvironment.repositoryRoot.appendingPathComponent("scripts/webhook-receiver.py").path, "--port", String(port)] + mode,
            environment: ["WEBHOOK_SECRET": secret]
        )
        try child.start()
        guard let line = child.line(containing: "listening on"), let bound = line.split(separator: ":").last.flatMap({ Int($0) }) else {
            child.terminate(signal: SIGKILL)
            throw TestFailure("the receiver did not start:\n\(child.output)")
        }
        self.port = bound
    }

    var url: String { "http://127.0.0.1:\(port)/hooks" }

    static func records(in lines: [String]) -> [Record] {
        lines.compactMap { line in
            guard line.hasPrefix("{"), let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let id = object["event_id"] as? String else { return nil }
            return Record(
                eventID: id, type: object["type"] as? String ?? "", account: object["account"] as? String ?? "",
                verified: object["verified"] as? Bool ?? false, status: object["status"] as? Int ?? 0,
                duplicate: object["duplicate"] as? Bool ?? false, receivedMilliseconds: (object["received_ms"] as? NSNumber)?.int64Value ?? 0,
                body: object["body"] as? [String: Any]
            )
        }
    }

    var records: [Record] { Self.records(in: child.outputLines) }

    /// Waits until `condition` holds over the records so far.
    @discardableResult
    func waitForRecords(timeout: TimeInterval = 30, _ condition: @escaping ([Record]) -> Bool) -> Bool {
        child.waitForOutput(timeout: timeout) { condition(Self.records(in: $0)) }
    }

    /// `POST /_control`: ok, fail (status), hang (seconds), fail-accounts.
    func control(_ fields: [String: Any]) throws {
        let body = try JSONSerialization.data(withJSONObject: fields)
        let client = try TerminalClient(port: port)
        try client.send("POST /_control HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n")
        try client.send(bytes: Array(body))
        guard let status = try client.readLine(), status.contains(" 200 ") else { throw TestFailure("control \(fields) refused") }
    }

    func stop() {
        child.terminate(signal: SIGKILL)
        _ = child.waitForExit(timeout: 10)
    }
}

/// `authorizer webhooks deliver` as a child process, with its own config and store.
final class WebhookDeliverer {
    let child: ChildProcess

    init(redisURL: String, config: String, database: String, environment: [String: String], extra: [String] = []) throws {
        child = ChildProcess(
            name: "webhooks", executable: TestEnvironment.authorizerBinary,
            arguments: ["webhooks", "deliver", "--redis", redisURL, "--config", config, "--db", database, "--sweep-ms", "500"] + extra,
            environment: environment
        )
        try child.start()
        guard child.waitForLine(containing: "consumer ready") else {
            child.terminate(signal: SIGKILL)
            throw TestFailure("the deliverer did not start:\n\(child.output)")
        }
    }

    func stop(signal: Int32 = SIGTERM) -> Int32? {
        child.terminate(signal: signal)
        return child.waitForExit(timeout: 20)
    }
}

/// A webhooks.yaml, written next to the test's Redis.
func writeWebhookConfig(_ yaml: String, in directory: URL) throws -> String {
    let path = directory.appendingPathComponent("webhooks-\(UUID().uuidString.prefix(8)).yaml").path
    try yaml.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}
