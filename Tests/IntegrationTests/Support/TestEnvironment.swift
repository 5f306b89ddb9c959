import Foundation

/// Paths the integration tests need: the built `authorizer` binary and the
/// project's redis.conf. `make test` passes both; they are also found from
/// the test bundle's location.
enum TestEnvironment {
    static let repositoryRoot: URL = {
        // Tests/IntegrationTests/Support/TestEnvironment.swift -> repository root
        URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
    }()

    static let authorizerBinary: String = {
        if let path = ProcessInfo.processInfo.environment["AUTHORIZER_BIN"] { return path }
        let besideTests = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("authorizer").path
        if FileManager.default.isExecutableFile(atPath: besideTests) { return besideTests }
        return repositoryRoot.appendingPathComponent(".build/debug/authorizer").path
    }()

    static let redisConf: String = {
        ProcessInfo.processInfo.environment["AUTHORIZER_REDIS_CONF"]
            ?? repositoryRoot.appendingPathComponent("redis.conf").path
    }()

    static func makeTemporaryDirectory(_ name: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("authorizer-tests-\(name)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// A port nobody listens on right now (bound then released by the kernel).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        precondition(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        precondition(bound == 0, "bind failed")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// A child process whose output is watched line by line, so tests wait for
/// what the process says ("Ready to accept connections") instead of sleeping.
final class ChildProcess: @unchecked Sendable {
    let process = Process()
    private let lock = NSLock()
    private var lines: [String] = []
    private var waiters: [(predicate: (String) -> Bool, semaphore: DispatchSemaphore)] = []
    private var partial = Data()
    private let input = Pipe()
    let name: String

    init(name: String, executable: String, arguments: [String], environment: [String: String]? = nil) {
        self.name = name
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.standardInput = input
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            if data.isEmpty {
                handle.readabilityHandler = nil
                return
            }
            self?.consume(data)
        }
    }

    func start() throws {
        try process.run()
    }

    /// Writes to the process's standard input.
    func write(_ text: String) {
        input.fileHandleForWriting.write(Data(text.utf8))
    }

    private func consume(_ data: Data) {
        lock.lock()
        partial.append(data)
        var newLines: [String] = []
        while let newline = partial.firstIndex(of: 0x0A) {
            newLines.append(String(decoding: partial[partial.startIndex..<newline], as: UTF8.self))
            partial.removeSubrange(partial.startIndex...newline)
        }
        lines.append(contentsOf: newLines)
        for line in newLines {
            for waiter in waiters where waiter.predicate(line) { waiter.semaphore.signal() }
        }
        lock.unlock()
    }

    /// Waits until the process prints a line containing `text` (or had printed one).
    @discardableResult
    func waitForLine(containing text: String, timeout: TimeInterval = 20) -> Bool {
        let semaphore = DispatchSemaphore(value: 0)
        lock.lock()
        if lines.contains(where: { $0.contains(text) }) {
            lock.unlock()
            return true
        }
        waiters.append(({ $0.contains(text) }, semaphore))
        lock.unlock()
        return semaphore.wait(timeout: .now() + timeout) == .success
    }

    var output: String {
        lock.lock()
        defer { lock.unlock() }
        return lines.joined(separator: "\n")
    }

    func terminate(signal: Int32 = SIGTERM) {
        guard process.isRunning else { return }
        kill(process.processIdentifier, signal)
    }

    /// Waits for exit; returns the status, or nil if it is still running after `timeout`.
    func waitForExit(timeout: TimeInterval = 20) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        let exited = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            self.process.waitUntilExit()
            exited.signal()
        }
        guard exited.wait(timeout: .now() + max(0, deadline.timeIntervalSinceNow)) == .success else { return nil }
        return process.terminationStatus
    }
}
