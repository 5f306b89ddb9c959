import Foundation
import NIOCore
import RedisWire
import XCTest

/// A test of the ledger pipeline: its own Redis started with the project's
/// ACL users (so `replay` runs as `replayer` and `audit` as `operator`, as
/// deployed), a statements database in that Redis's temp dir, and helpers to
/// write ledger entries through the real Lua scripts and to look into SQLite
/// with the sqlite3 shell.
class LedgerTestCase: XCTestCase {
    var redis: RedisServer!

    var database: String { redis.directory.appendingPathComponent("statements.sqlite").path }

    override func setUpWithError() throws {
        redis = try RedisServer(name: String(describing: type(of: self)), acl: true)
        try runAuthorizer(["rules", "init", "--redis", redis.url])
    }

    override func tearDown() {
        redis = nil
    }

    // MARK: - Writing the ledger

    /// Runs Lua/adjust.lua (what `authorizer account set|credit` runs) once
    /// per change, pipelined: every change is a statement.
    func adjust(_ kind: String, _ changes: [(account: String, balances: [(String, Int64)])]) throws {
        let source = try String(contentsOf: TestEnvironment.repositoryRoot.appendingPathComponent("Lua/adjust.lua"), encoding: .utf8)
        guard let sha = try redis.command("SCRIPT", "LOAD", source).string else { throw TestFailure("SCRIPT LOAD failed") }
        var index = 0
        while index < changes.count {
            let chunk = changes[index..<min(index + 5_000, changes.count)]
            let futures = chunk.enumerated().map { offset, change in
                redis.client.send(RedisCommand(
                    ["EVALSHA", sha, "2", "account:{\(change.account)}", "statements", kind, "\(kind)-\(index + offset)", change.account]
                        + change.balances.flatMap { [$0.0, String($0.1)] }
                ))
            }
            for future in futures { _ = try future.wait() }
            index += chunk.count
        }
    }

    /// `count` credits of 1.00 spread over `accounts` accounts that start at 0 CASH.
    func writeCredits(_ count: Int, accounts: Int) throws {
        try adjust("set", (0..<accounts).map { ("c\($0)", [("CASH", 0)]) })
        try adjust("credit", (0..<count).map { ("c\($0 % accounts)", [("CASH", 100)]) })
    }

    // MARK: - Processes

    func replayArguments(_ extra: [String]) -> [String] {
        ["replay", "--redis", redis.replayerURL, "--db", database] + extra
    }

    func startReplay(_ extra: [String]) throws -> ChildProcess {
        let child = ChildProcess(name: "replay", executable: TestEnvironment.authorizerBinary, arguments: replayArguments(extra))
        try child.start()
        return child
    }

    /// `replay --drain …`, which must exit 0.
    @discardableResult
    func drain(_ extra: [String] = []) throws -> String {
        let child = try startReplay(["--drain"] + extra)
        guard let status = child.waitForExit(timeout: 120) else {
            child.terminate(signal: SIGKILL)
            throw TestFailure("replay --drain did not finish:\n\(child.output)")
        }
        child.waitForLine(containing: "replay stopped", timeout: 5)
        guard status == 0 else { throw TestFailure("replay exited \(status):\n\(child.output)") }
        return child.output
    }

    /// `authorizer audit` as the read-only operator; its whole output.
    func audit() throws -> (status: Int32, output: String) {
        let child = ChildProcess(
            name: "audit", executable: TestEnvironment.authorizerBinary,
            arguments: ["audit", "--redis", redis.operatorURL, "--db", database]
        )
        try child.start()
        guard let status = child.waitForExit(timeout: 60) else {
            child.terminate(signal: SIGKILL)
            throw TestFailure("audit did not finish")
        }
        // The verdict is the last line; once it is in, everything before it is too.
        child.waitForLine(containing: status == 0 ? "audit passed" : "audit FAILED", timeout: 5)
        return (status, child.output)
    }

    // MARK: - Looking

    /// Rows of a query in the sqlite3 shell, columns separated by `|`.
    func sqlite(_ sql: String) throws -> [String] {
        try SQLiteShell.rows(database, sql)
    }

    func sqliteInt(_ sql: String) throws -> Int {
        try SQLiteShell.int(database, sql)
    }

    func streamLength() throws -> Int {
        Int(try redis.command("XLEN", "statements").int ?? -1)
    }

    /// Every entry id in the statements stream, oldest first.
    func streamIDs() throws -> [String] {
        var ids: [String] = []
        var start = "-"
        while true {
            let page = try redis.command("XRANGE", "statements", start, "+", "COUNT", "10000").array ?? []
            ids += page.compactMap { $0.array?.first?.string }
            guard page.count == 10_000, let last = ids.last else { return ids }
            start = "(\(last)"
        }
    }

    /// The statements table holds exactly the entries of the stream: none
    /// missing, none extra, none twice, in stream order.
    func assertDatabaseMatchesStream(file: StaticString = #filePath, line: UInt = #line) throws {
        let rows = try sqlite("SELECT entry_id FROM statements ORDER BY entry_ms, entry_seq")
        let stream = try streamIDs()
        let missing = Set(stream).subtracting(rows)
        let extra = Set(rows).subtracting(stream)
        XCTAssertTrue(missing.isEmpty, "\(missing.count) entries missing from SQLite, e.g. \(missing.sorted().prefix(3))", file: file, line: line)
        XCTAssertTrue(extra.isEmpty, "\(extra.count) rows not in the stream, e.g. \(extra.sorted().prefix(3))", file: file, line: line)
        XCTAssertEqual(rows.count, stream.count, "rows vs stream entries", file: file, line: line)
        XCTAssertTrue(rows == stream, "rows in stream order", file: file, line: line)
    }

    /// Entries of a notifications stream as field -> value.
    func notifications(_ account: String) throws -> [[String: String]] {
        let entries = try redis.command("XRANGE", "notifications:{\(account)}", "-", "+").array ?? []
        return entries.map { entry in
            let fields = entry.array?[1].array ?? []
            var result: [String: String] = [:]
            var index = 0
            while index + 1 < fields.count {
                result[fields[index].string ?? ""] = fields[index + 1].string ?? ""
                index += 2
            }
            return result
        }
    }

    func pendingCount(group: String) throws -> Int {
        Int(try redis.command("XPENDING", "statements", group).array?.first?.int ?? -1)
    }

    /// Polls `condition` (cheap reads only) until it holds or `timeout` passes.
    func eventually(timeout: TimeInterval = 60, _ condition: () throws -> Bool) throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return true }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return try condition()
    }
}

/// One request sent by the terminal load, and what came back.
struct SentRequest {
    let id: String
    let account: String
    let cents: Int64
    let mcc: String
    var answer: Response?
}

/// Terminals sending pipelined request lines over several connections at
/// once, each keeping at most `window` requests unanswered.
enum TerminalLoad {
    static func run(port: Int, connections: [[SentRequest]], window: Int = 200) throws -> [[SentRequest]] {
        let results = LockedResults(count: connections.count)
        DispatchQueue.concurrentPerform(iterations: connections.count) { index in
            do {
                var requests = connections[index]
                let client = try TerminalClient(port: port, receiveTimeout: 30)
                var sent = 0
                var answered = 0
                while answered < requests.count {
                    var batch = ""
                    while sent < requests.count && sent - answered < window {
                        let request = requests[sent]
                        batch += Request.line(id: request.id, account: request.account, amount: Self.amount(request.cents), mcc: request.mcc) + "\n"
                        sent += 1
                    }
                    if !batch.isEmpty { try client.send(batch) }
                    let answer = try client.readResponse()
                    guard answer.id == requests[answered].id else {
                        throw TestFailure("answer for \(answer.id ?? "?") where \(requests[answered].id) was due")
                    }
                    requests[answered].answer = answer
                    answered += 1
                }
                results.set(index, .success(requests))
            } catch {
                results.set(index, .failure(error))
            }
        }
        return try results.all()
    }

    static func amount(_ cents: Int64) -> String {
        "\(cents / 100).\(cents % 100 < 10 ? "0" : "")\(cents % 100)"
    }

    private final class LockedResults: @unchecked Sendable {
        private let lock = NSLock()
        private var values: [Result<[SentRequest], Error>?]

        init(count: Int) { values = Array(repeating: nil, count: count) }

        func set(_ index: Int, _ value: Result<[SentRequest], Error>) {
            lock.lock()
            values[index] = value
            lock.unlock()
        }

        func all() throws -> [[SentRequest]] {
            lock.lock()
            defer { lock.unlock() }
            return try values.map { try XCTUnwrap($0).get() }
        }
    }
}

/// The sqlite3 shell, for looking into a statements database from a test
/// (another program than the replayer's GRDB).
enum SQLiteShell {
    /// Rows of a query, columns separated by `|`; waits up to 5 s for a lock.
    static func rows(_ database: String, _ sql: String) throws -> [String] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
        process.arguments = ["-batch", "-cmd", ".timeout 5000", database, sql]
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        let errorText = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TestFailure("sqlite3 \(sql): \(errorText)") }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").map(String.init)
    }

    static func int(_ database: String, _ sql: String) throws -> Int {
        let rows = try rows(database, sql)
        guard rows.count == 1, let value = Int(rows[0]) else { throw TestFailure("\(sql) returned \(rows)") }
        return value
    }
}

/// utime + stime of a process in seconds (/proc/PID/stat fields 14 and 15,
/// counted after the ')' that ends the command name).
func processCPUSeconds(_ pid: Int32) throws -> Double {
    let text = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
    guard let close = text.lastIndex(of: ")") else { throw TestFailure("stat: \(text)") }
    let fields = text[text.index(after: close)...].split(separator: " ")
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { throw TestFailure("stat: \(text)") }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}
