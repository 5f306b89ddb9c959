import Foundation
import XCTest

/// The SLA as a guarantee: with Redis paused (SIGSTOP) under load, every
/// request is still answered in time, and no `07` leaves a debit behind once
/// Redis resumes: the service reverses what it could not confirm, from its
/// journal even across a crash of `serve`.
final class SLATests: LedgerTestCase {
    static let initial: Int64 = 100_000_000
    /// 100 ms SLA; the bound leaves room for a loaded 2-core CI machine.
    static let bound: TimeInterval = 0.25

    private func makeAccounts(_ count: Int) throws -> [String] {
        let accounts = (0..<count).map { "sla\($0)" }
        try adjust("set", accounts.map { ($0, [("FOOD", Self.initial), ("CASH", Self.initial)]) })
        return accounts
    }

    private var redisPID: pid_t { redis.child.process.processIdentifier }

    /// Balance of every account computed from what the terminals were told:
    /// the initial balance minus each amount answered `00` (all FOOD, mcc 5411).
    private func assertBalancesMatchAnswers(_ results: [LoadResult], accounts: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        var expected: [String: Int64] = Dictionary(uniqueKeysWithValues: accounts.map { ($0, Self.initial) })
        for result in results where result.code == "00" { expected[result.account]! -= result.cents }
        for account in accounts {
            XCTAssertEqual(try redis.balances(account), ["FOOD": expected[account]!, "CASH": Self.initial], account, file: file, line: line)
        }
    }

    private func assertBooksBalance(file: StaticString = #filePath, line: UInt = #line) throws {
        try drain()
        let result = try audit()
        XCTAssertEqual(result.status, 0, result.output, file: file, line: line)
    }

    func testRedisPausedUnderLoadEveryRequestIsAnsweredInTimeAndNoTimeoutLeavesADebit() throws {
        let metricsPort = try TestEnvironment.freePort()
        let serve = try ServeProcess(redis: redis, arguments: ["--metrics-port", String(metricsPort)])
        let accounts = try makeAccounts(6)
        let load = PausedLoad(port: serve.port, accounts: accounts, terminals: 8)
        load.start()
        XCTAssertTrue(load.waitForAnswers(200), "warm-up")
        kill(redisPID, SIGSTOP)
        let pausedAt = Date()
        Thread.sleep(forTimeInterval: 2)
        kill(redisPID, SIGCONT)
        let pauseLength = Date().timeIntervalSince(pausedAt)
        XCTAssertTrue(load.waitForAnswers(load.answeredCount + 200), "traffic after the pause")
        let results = try load.stop()

        // Every request answered, in time.
        let worst = results.map(\.seconds).max() ?? 0
        let during = results.filter { $0.sentAt >= pausedAt && $0.sentAt < pausedAt.addingTimeInterval(pauseLength) }
        let codes = Dictionary(grouping: results, by: { "\($0.code) \($0.reason ?? "")" }).mapValues(\.count)
        print("redis paused \(Int(pauseLength * 1000)) ms: \(results.count) requests (\(during.count) sent while paused), worst answer \(Int(worst * 1000)) ms, \(codes)")
        let slowest = results.sorted { $0.seconds > $1.seconds }.prefix(5).map { "\(Int($0.seconds * 1000)) ms \($0.code) \($0.reason ?? "")" }
        print("slowest answers: \(slowest)")
        XCTAssertLessThan(worst, Self.bound, "worst answer time with a 100 ms SLA")
        XCTAssertGreaterThan(results.filter { $0.reason == "timeout" }.count, 0, "some decisions were not back in time: \(codes)")
        for result in results {
            XCTAssertTrue(result.code == "00" || (result.code == "07" && [
                "timeout", "account busy", "authorizer storage unavailable",
            ].contains(result.reason ?? "")), "\(result.id): \(result.code) \(result.reason ?? "")")
        }

        // Every reversal the service owed is applied once Redis answers again:
        // wait for the gauge, then the books are exact.
        let applied = try waitForNoReversalsOwed(metricsPort: metricsPort)
        XCTAssertGreaterThan(applied, 0)
        let metrics = try metricSamples(metricsPort)
        let answered = metrics["authorizer_request_duration_seconds_count"] ?? 0
        let withinSLA = metrics["authorizer_request_duration_seconds_bucket{le=\"0.1\"}"] ?? 0
        print("server side: \(Int(withinSLA)) of \(Int(answered)) answered within 100 ms of their line being read")
        try assertBalancesMatchAnswers(results, accounts: accounts)
        try assertBooksBalance()
    }

    func testServeKilledWhileRedisIsPausedAppliesItsJournalOnRestart() throws {
        let stateDirectory = redis.directory.appendingPathComponent("serve-state").path
        var serve: ServeProcess? = try ServeProcess(redis: redis, arguments: ["--state-dir", stateDirectory])
        let accounts = try makeAccounts(4)
        let load = PausedLoad(port: serve!.port, accounts: accounts, terminals: 6)
        load.start()
        XCTAssertTrue(load.waitForAnswers(100), "warm-up")
        kill(redisPID, SIGSTOP)
        let pausedAt = Date()
        // The crash comes after some 07 timeouts were answered (each one journaled first).
        XCTAssertTrue(load.waitForTimeouts(5), "timeouts while redis is paused")
        serve!.child.terminate(signal: SIGKILL)
        _ = serve!.child.waitForExit()
        serve = nil
        let results = try load.stop(expectingCrash: true)
        let timedOut = results.filter { $0.reason == "timeout" }
        let journal = try String(contentsOfFile: stateDirectory + "/pending-reversals.log", encoding: .utf8)
        let journaled = Set(journal.split(separator: "\n").filter { $0.hasPrefix("A ") }.map { String($0.split(separator: " ")[2]) })
        for result in timedOut where result.sentAt >= pausedAt {
            XCTAssertTrue(journaled.contains(result.id), "\(result.id) was answered 07 timeout before its reversal was on disk")
        }
        kill(redisPID, SIGCONT)

        let restarted = try ServeProcess(redis: redis, arguments: ["--state-dir", stateDirectory])
        XCTAssertTrue(restarted.child.waitForLine(containing: "applying reversals owed from a previous run"), restarted.child.output)
        XCTAssertTrue(restarted.child.waitForLine(containing: "no reversals owed", timeout: 30), restarted.child.output)

        // A request the crash left unanswered is reversed by its terminal, as the protocol says.
        let unanswered = load.unanswered
        let terminal = try restarted.connect()
        for request in unanswered {
            try terminal.sendLine(Request.reversal(id: "term-rev-\(request.id)", account: request.account, original: request.id))
            XCTAssertEqual(try terminal.readResponse().code, "00")
        }
        print("serve killed with redis paused: \(results.count) answered (\(timedOut.count) 07 timeout, journaled), \(unanswered.count) unanswered, reversed by their terminal")
        XCTAssertTrue(try eventually(timeout: 5) { (try? String(contentsOfFile: stateDirectory + "/pending-reversals.log", encoding: .utf8))?.isEmpty ?? false },
                      "the journal is compacted once nothing is owed")
        try assertBalancesMatchAnswers(results, accounts: accounts)
        try assertBooksBalance()
    }

    /// A script sent to Redis whose connection then failed (the reply
    /// overdue) may still run: it is answered 07 and reversed all the same.
    func testAScriptLostInFlightIsReversedOnceRedisResumes() throws {
        let serve = try ServeProcess(redis: redis, arguments: ["--sla-ms", "2000", "--redis-timeout-ms", "150"])
        let accounts = try makeAccounts(1)
        let client = try serve.connect()
        kill(redisPID, SIGSTOP)
        let answer = try client.request(["id": "lost", "account": accounts[0], "totalAmount": "7.00", "mcc": "5411", "merchant": "M"])
        XCTAssertEqual(answer.code, "07")
        XCTAssertEqual(answer.reason, "authorizer storage unavailable")
        XCTAssertTrue(serve.child.waitForLine(containing: "reversal owed"), serve.child.output)
        kill(redisPID, SIGCONT)
        XCTAssertTrue(serve.child.waitForLine(containing: "no reversals owed", timeout: 30), serve.child.output)
        try assertBalancesMatchAnswers([], accounts: accounts)
        try assertBooksBalance()
    }

    /// The journal is bounded: once it holds `--max-pending-reversals`,
    /// authorizations are refused until Redis acknowledges what is owed.
    func testAFullJournalRefusesAuthorizationsUntilTheReversalsAreApplied() throws {
        let serve = try ServeProcess(redis: redis, arguments: ["--max-pending-reversals", "1"])
        let accounts = try makeAccounts(2)
        let client = try serve.connect()
        XCTAssertEqual(try client.request(["id": "warm", "account": accounts[0], "totalAmount": "1.00", "mcc": "5411", "merchant": "M"]).code, "00")
        kill(redisPID, SIGSTOP)
        let stuck = try client.request(["id": "stuck", "account": accounts[0], "totalAmount": "2.00", "mcc": "5411", "merchant": "M"])
        XCTAssertEqual(stuck.reason, "timeout")
        let started = Date()
        let refused = try client.request(["id": "refused", "account": accounts[1], "totalAmount": "3.00", "mcc": "5411", "merchant": "M"])
        XCTAssertEqual(refused.code, "07")
        XCTAssertEqual(refused.reason, "authorizer storage unavailable")
        XCTAssertLessThan(Date().timeIntervalSince(started), Self.bound, "refused at once")
        XCTAssertTrue(serve.child.waitForLine(containing: "reversal journal full"), serve.child.output)
        kill(redisPID, SIGCONT)
        XCTAssertTrue(serve.child.waitForLine(containing: "no reversals owed", timeout: 30), serve.child.output)
        XCTAssertEqual(try client.request(["id": "after", "account": accounts[1], "totalAmount": "4.00", "mcc": "5411", "merchant": "M"]).code, "00")
        let results = [
            LoadResult(id: "warm", account: accounts[0], cents: 100, code: "00", reason: nil, sentAt: started, seconds: 0),
            LoadResult(id: "after", account: accounts[1], cents: 400, code: "00", reason: nil, sentAt: started, seconds: 0),
        ]
        try assertBalancesMatchAnswers(results, accounts: accounts)
        try assertBooksBalance()
    }

    /// Polls `/metrics` until `authorizer_pending_reversals` is 0; returns
    /// `authorizer_reversals_applied_total`.
    private func waitForNoReversalsOwed(metricsPort: Int) throws -> Double {
        let deadline = Date().addingTimeInterval(30)
        var last: [String: Double] = [:]
        while Date() < deadline {
            last = try metricSamples(metricsPort)
            if last["authorizer_pending_reversals"] == 0 { return last["authorizer_reversals_applied_total"] ?? 0 }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw TestFailure("reversals still owed: \(last)")
    }
}

/// One request of the load and its answer.
struct LoadResult {
    let id: String
    let account: String
    let cents: Int64
    let code: String
    let reason: String?
    let sentAt: Date
    let seconds: TimeInterval
}

/// Terminals each sending one authorization at a time, as fast as answers
/// come, until stopped; every answer is timed from its send.
final class PausedLoad: @unchecked Sendable {
    let port: Int
    let accounts: [String]
    let terminals: Int
    private let lock = NSLock()
    private var results: [LoadResult] = []
    private var inFlight: [Int: (id: String, account: String)] = [:]
    private var errors: [String] = []
    private var stopping = false
    private let finished = DispatchGroup()

    init(port: Int, accounts: [String], terminals: Int) {
        self.port = port
        self.accounts = accounts
        self.terminals = terminals
    }

    var answeredCount: Int { lock.withLock { results.count } }

    /// Requests sent and never answered (the server died first).
    var unanswered: [(id: String, account: String)] { lock.withLock { Array(inFlight.values) } }

    func start() {
        for terminal in 0..<terminals {
            finished.enter()
            Thread.detachNewThread { [self] in
                defer { finished.leave() }
                run(terminal)
            }
        }
    }

    private func run(_ terminal: Int) {
        let client: TerminalClient
        do {
            client = try TerminalClient(port: port)
        } catch {
            lock.withLock { errors.append("terminal \(terminal): \(error)") }
            return
        }
        var index = 0
        while !lock.withLock({ stopping }) {
            let id = "t\(terminal)-\(index)"
            let account = accounts[(terminal + index) % accounts.count]
            let cents = Int64(100 + (terminal * 131 + index * 37) % 900)
            index += 1
            lock.withLock { inFlight[terminal] = (id, account) }
            let sentAt = Date()
            do {
                try client.sendLine(Request.line(id: id, account: account, amount: TerminalLoad.amount(cents), mcc: "5411"))
                let answer = try client.readResponse()
                let seconds = Date().timeIntervalSince(sentAt)
                guard answer.id == id else { throw TestFailure("answer for \(answer.id ?? "?") where \(id) was due") }
                lock.withLock {
                    inFlight[terminal] = nil
                    results.append(LoadResult(id: id, account: account, cents: cents, code: answer.code, reason: answer.reason, sentAt: sentAt, seconds: seconds))
                }
            } catch {
                lock.withLock { errors.append("terminal \(terminal): \(error)") }
                return
            }
        }
    }

    func waitForAnswers(_ count: Int, timeout: TimeInterval = 30) -> Bool {
        waitFor(timeout: timeout) { $0.count >= count }
    }

    func waitForTimeouts(_ count: Int, timeout: TimeInterval = 30) -> Bool {
        waitFor(timeout: timeout) { $0.filter { $0.reason == "timeout" }.count >= count }
    }

    private func waitFor(timeout: TimeInterval, _ condition: ([LoadResult]) -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if lock.withLock({ condition(results) }) { return true }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return false
    }

    /// Stops the terminals; with `expectingCrash`, connection errors are the server's death, not failures.
    func stop(expectingCrash: Bool = false) throws -> [LoadResult] {
        lock.withLock { stopping = true }
        guard finished.wait(timeout: .now() + 30) == .success else { throw TestFailure("terminals did not stop") }
        return try lock.withLock {
            if !expectingCrash && !errors.isEmpty { throw TestFailure(errors.joined(separator: "\n")) }
            return results
        }
    }
}
