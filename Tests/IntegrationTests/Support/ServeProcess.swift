import Foundation

/// A real `authorizer serve` process on a free port.
final class ServeProcess: @unchecked Sendable {
    let child: ChildProcess
    let port: Int

    init(redis: RedisServer, arguments: [String] = [], environment: [String: String]? = nil) throws {
        port = try TestEnvironment.freePort()
        child = ChildProcess(
            name: "serve-\(port)",
            executable: TestEnvironment.authorizerBinary,
            // Each serve its own journal of owed reversals (a later --state-dir wins).
            arguments: ["serve", "--redis", redis.url, "--port", String(port), "--log-level", "info",
                        "--state-dir", redis.directory.appendingPathComponent("serve-\(port)").path] + arguments,
            environment: environment
        )
        try child.start()
        guard child.waitForLine(containing: "authorizer listening") else {
            child.terminate(signal: SIGKILL)
            throw TestFailure("serve did not start:\n\(child.output)")
        }
    }

    func connect() throws -> TerminalClient {
        try TerminalClient(port: port)
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
    // The reader may lag the exit slightly; the pipe closes at exit.
    _ = child.waitForLine(containing: "", timeout: 1)
    if expectSuccess && status != 0 {
        throw TestFailure("authorizer \(arguments.joined(separator: " ")) exited \(status):\n\(child.output)")
    }
    return (status, child.output)
}
