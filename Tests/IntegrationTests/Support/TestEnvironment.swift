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

    /// SHA1 of a file (what SCRIPT LOAD names a script by), from sha1sum.
    static func sha1(ofFile url: URL) throws -> String {
        let child = ChildProcess(name: "sha1sum", executable: "/usr/bin/sha1sum", arguments: [url.path])
        try child.start()
        guard child.waitForExit() == 0, let digest = child.output.split(separator: " ").first, digest.count == 40 else {
            throw TestFailure("sha1sum \(url.path): \(child.output)")
        }
        return String(digest)
    }

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

/// Every process group a test started and has not reaped yet. A test run
/// that dies (a trap, a signal) kills them all, so no redis-server or serve
/// outlives the run.
enum ProcessGroups {
    private static let lock = NSLock()
    /// Fixed-size table readable from a signal handler (no allocation there).
    nonisolated(unsafe) private static var table = [pid_t](repeating: 0, count: 1_024)
    nonisolated(unsafe) private static var installed = false

    static func add(_ group: pid_t) {
        lock.lock()
        defer { lock.unlock() }
        installHandlersOnce()
        if let slot = table.firstIndex(of: 0) { table[slot] = group }
    }

    static func remove(_ group: pid_t) {
        lock.lock()
        defer { lock.unlock() }
        if let slot = table.firstIndex(of: group) { table[slot] = 0 }
    }

    /// Async-signal-safe: reads the table and sends SIGKILL, nothing else.
    static func killAll() {
        table.withUnsafeBufferPointer { groups in
            for group in groups where group > 0 { _ = Glibc.kill(-group, SIGKILL) }
        }
    }

    private static func installHandlersOnce() {
        guard !installed else { return }
        installed = true
        atexit { ProcessGroups.killAll() }
        for signal in [SIGTRAP, SIGILL, SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGTERM, SIGINT, SIGHUP] {
            var action = sigaction()
            action.__sigaction_handler.sa_handler = { signal in
                ProcessGroups.killAll()
                // Die of the same signal, as without this handler.
                Glibc.signal(signal, SIG_DFL)
                Glibc.raise(signal)
            }
            sigemptyset(&action.sa_mask)
            action.sa_flags = Int32(bitPattern: UInt32(SA_RESETHAND))
            sigaction(signal, &action, nil)
        }
    }
}

/// A child process whose output is watched line by line, so tests wait for
/// what the process says ("Ready to accept connections") instead of sleeping.
///
/// Each child runs in its own process group, is killed with its
/// group when the test process dies (`setpriv --pdeathsig KILL`, plus the
/// crash handlers of `ProcessGroups`), and is killed and reaped in deinit.
final class ChildProcess: @unchecked Sendable {
    let process = Process()
    private let lock = NSLock()
    private var lines: [String] = []
    private var waiters: [(predicate: (String) -> Bool, semaphore: DispatchSemaphore)] = []
    /// Conditions over every line so far, checked after each chunk of output.
    private var outputWaiters: [(condition: ([String]) -> Bool, semaphore: DispatchSemaphore)] = []
    private var partial = Data()
    private let input = Pipe()
    /// Signalled once standard output and error reached end-of-file.
    private let outputClosed = DispatchSemaphore(value: 0)
    private var outputIsClosed = false
    private var group: pid_t = 0
    /// Signalled by the termination handler. No thread ever blocks in
    /// Process.waitUntilExit: off the main thread it spins a run loop, and two
    /// spinning threads fill the 2-core machine's global dispatch pool.
    private let exited = DispatchSemaphore(value: 0)
    /// The read end of the program's standard output and error.
    private let outputPipe: Pipe
    let name: String

    init(name: String, executable: String, arguments: [String], environment: [String: String]? = nil) {
        self.name = name
        // Foundation starts every child in a process group of its own; setpriv
        // adds the parent-death signal and execs the program in place (same
        // pid). PR_SET_PDEATHSIG fires when the spawning *thread* ends, so it
        // is only asked for from the main thread, which lives as long as the run.
        if Thread.isMainThread {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            process.arguments = ["--pdeathsig", "KILL", "--", executable] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
        }
        if let environment {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.standardInput = input
        process.terminationHandler = { [exited] _ in exited.signal() }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        outputPipe = pipe
    }

    /// A thread of its own reads the output with blocking reads until end
    /// of file, holding the pipe open until then: no dispatch source can
    /// fire on a handle released under it, and no end-of-file goes missing.
    private func startReading() {
        let pipe = outputPipe
        let fd = pipe.fileHandleForReading.fileDescriptor
        let thread = Thread { [weak self] in
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if count > 0 {
                    self?.consume(Data(buffer[0..<count]))
                } else if count < 0 && errno == EINTR {
                    continue
                } else {
                    break
                }
            }
            withExtendedLifetime(pipe) {}
            self?.closed()
        }
        thread.name = "output of \(name)"
        thread.start()
    }

    func start() throws {
        try process.run()
        startReading()
        let pid = process.processIdentifier
        // Only a group of its own may be killed as a group.
        group = getpgid(pid) == pid ? pid : 0
        if group > 0 { ProcessGroups.add(group) }
    }

    /// Writes to the process's standard input.
    func write(_ text: String) {
        input.fileHandleForWriting.write(Data(text.utf8))
    }

    /// Closes the process's standard input (it reads end-of-file).
    func closeInput() {
        try? input.fileHandleForWriting.close()
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
        if !newLines.isEmpty {
            outputWaiters.removeAll { waiter in
                guard waiter.condition(lines) else { return false }
                waiter.semaphore.signal()
                return true
            }
        }
        lock.unlock()
    }

    private func closed() {
        lock.lock()
        guard !outputIsClosed else {
            lock.unlock()
            return
        }
        if !partial.isEmpty {
            lines.append(String(decoding: partial, as: UTF8.self))
            partial.removeAll()
        }
        outputIsClosed = true
        lock.unlock()
        outputClosed.signal()
    }

    /// Waits until the process prints a line containing `text` (or had printed one).
    /// Returns false at once when the output ended without such a line.
    @discardableResult
    func waitForLine(containing text: String, timeout: TimeInterval = 20) -> Bool {
        let semaphore = DispatchSemaphore(value: 0)
        lock.lock()
        if lines.contains(where: { $0.contains(text) }) {
            lock.unlock()
            return true
        }
        if outputIsClosed {
            lock.unlock()
            return false
        }
        waiters.append(({ $0.contains(text) }, semaphore))
        lock.unlock()
        return semaphore.wait(timeout: .now() + timeout) == .success
    }

    /// Waits until `condition` holds over every line printed so far (checked
    /// now and after each new chunk of output); false after `timeout`.
    @discardableResult
    func waitForOutput(timeout: TimeInterval = 20, _ condition: @escaping ([String]) -> Bool) -> Bool {
        let semaphore = DispatchSemaphore(value: 0)
        lock.lock()
        if condition(lines) {
            lock.unlock()
            return true
        }
        outputWaiters.append((condition, semaphore))
        lock.unlock()
        return semaphore.wait(timeout: .now() + timeout) == .success
    }

    /// Every line printed so far.
    var outputLines: [String] {
        lock.lock()
        defer { lock.unlock() }
        return lines
    }

    /// The first line containing `text`, once printed.
    func line(containing text: String, timeout: TimeInterval = 20) -> String? {
        guard waitForLine(containing: text, timeout: timeout) else { return nil }
        lock.lock()
        defer { lock.unlock() }
        return lines.first { $0.contains(text) }
    }

    var output: String {
        lock.lock()
        defer { lock.unlock() }
        return lines.joined(separator: "\n")
    }

    var pid: pid_t { process.processIdentifier }

    func terminate(signal: Int32 = SIGTERM) {
        guard process.isRunning else { return }
        kill(process.processIdentifier, signal)
    }

    /// Sends `signal` to the whole process group (the program and its children).
    func signalGroup(_ signal: Int32) {
        if group > 0 {
            kill(-group, signal)
        } else if process.isRunning {
            kill(process.processIdentifier, signal)
        }
    }

    /// Waits for exit and for the end of its output; returns the status, or
    /// nil if it is still running after `timeout`.
    func waitForExit(timeout: TimeInterval = 20) -> Int32? {
        let deadline = DispatchTime.now() + timeout
        guard exited.wait(timeout: deadline) == .success else { return nil }
        exited.signal()  // later callers see it too
        // Children of the program may hold the pipe; the group goes with it.
        signalGroup(SIGKILL)
        if outputClosed.wait(timeout: .now() + 0.5) == .success {
            outputClosed.signal()
        }
        if group > 0 {
            ProcessGroups.remove(group)
            group = 0
        }
        return process.terminationStatus
    }

    deinit {
        guard process.processIdentifier > 0 else { return }  // never started
        signalGroup(SIGKILL)
        _ = exited.wait(timeout: .now() + 10)
        if group > 0 { ProcessGroups.remove(group) }
    }
}
