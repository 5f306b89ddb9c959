import Foundation
import RedisWire
import XCTest

/// Promises of the ledger pipeline (docs/ledger.md), each checked where it can break:
/// a stop request while a batch is in hand, the acknowledgement only after
/// the commit, malformed entries set aside, the notifications cap, the audit
/// under live traffic and `serve`'s replayer lag warning.
final class ReplayerPromiseTests: LedgerTestCase {
    // MARK: - Stopping with a batch in hand

    /// "SIGINT/SIGTERM finish the batch in hand (commit, XACK) and exit 0."
    /// The test holds SQLite's write lock, so the batch the replayer reads
    /// cannot be committed yet: SIGTERM lands, provably, while it is in hand.
    func testSigtermWhileABatchIsInHandCommitsAndAcknowledgesItThenExitsZero() throws {
        try adjust("set", (0..<10).map { ("s\($0)", [("CASH", 0)]) })
        try drain()
        let before = try sqliteInt("SELECT COUNT(*) FROM statements")
        XCTAssertEqual(before, 10)

        let replay = try startReplay(["--consumer", "r1", "--batch", "100", "--block-ms", "200", "--no-trim"])
        defer { stopChild(replay) }
        XCTAssertTrue(replay.waitForLine(containing: "consumer ready"), replay.output)

        let lock = try SQLiteWriteLock(database: database)
        defer { lock.release() }
        // In one MULTI/EXEC, so that the waiting read wakes up to a full batch.
        try creditsInOneTransaction((0..<1_000).map { "s\($0 % 10)" })
        // The replayer has read a batch (it is pending in Redis) and waits for the lock to commit it.
        guard try eventually(timeout: 20, { try pendingCount(group: "replayer") > 0 }) else {
            return XCTFail("the replayer never read a batch:\n\(replay.output)")
        }
        let inHand = try pendingIDs(group: "replayer")
        XCTAssertEqual(inHand.count, 100, "a whole batch is in hand")
        XCTAssertEqual(try sqliteInt("SELECT COUNT(*) FROM statements"), before, "nothing of the batch is committed yet")

        replay.terminate(signal: SIGTERM)
        XCTAssertTrue(replay.waitForLine(containing: "stopping: finishing the batch in hand"), replay.output)
        assertSameIDs(try pendingIDs(group: "replayer"), inHand, "the stop request did not let go of the batch")
        lock.release()
        guard let status = replay.waitForExit(timeout: 30) else {
            return XCTFail("replay did not exit after SIGTERM:\n\(replay.output)")
        }
        replay.waitForLine(containing: "replay stopped", timeout: 5)
        XCTAssertEqual(status, 0, replay.output)
        XCTAssertEqual(replay.process.terminationReason, .exit, replay.output)

        // The batch in hand was committed and acknowledged, and nothing after it was read.
        let rows = Set(try sqlite("SELECT entry_id FROM statements"))
        XCTAssertEqual(rows.count, before + inHand.count)
        XCTAssertTrue(inHand.isSubset(of: rows), "the batch in hand is in SQLite")
        XCTAssertEqual(try pendingCount(group: "replayer"), 0, "the batch in hand is acknowledged")
        assertSameIDs(try acknowledgedIDs(group: "replayer"), rows, "acknowledged entries are exactly the rows in SQLite")
        XCTAssertLessThan(rows.count, 1_010, "SIGTERM stopped the replayer before the end of the stream")

        // The rest comes with the next run, once.
        try drain(["--consumer", "r1"])
        try assertDatabaseMatchesStream()
        XCTAssertEqual(try sqliteInt("SELECT SUM(applied) FROM replay_progress"), 1_010)
        XCTAssertEqual(try sqliteInt("SELECT SUM(duplicates) FROM replay_progress"), 0)
        XCTAssertEqual(try pendingCount(group: "replayer"), 0)
    }

    // MARK: - Acknowledged only after the commit

    /// A trigger makes SQLite refuse one entry: the batch holding it cannot
    /// commit, so it must stay pending in Redis (not acknowledged), and the
    /// replayer must stop with a non-zero exit. Without the trigger the next
    /// run applies every entry exactly once.
    func testABatchThatFailsToCommitIsNotAcknowledged() throws {
        try adjust("set", (0..<10).map { ("p\($0)", [("CASH", 0)]) })
        try drain()
        try adjust("credit", (0..<1_000).map { ("p\($0 % 10)", [("CASH", 100)]) })
        let ids = try streamIDs()
        XCTAssertEqual(ids.count, 1_010)
        // Batches of 100 after the 10 replayed entries: the poison is in the fifth.
        let poison = ids[10 + 450]
        _ = try sqlite("""
            CREATE TRIGGER poison BEFORE INSERT ON statements WHEN NEW.entry_id = '\(poison)'
            BEGIN SELECT RAISE(ABORT, 'poison entry refused'); END;
            """)

        let failing = try startReplay(["--drain", "--consumer", "p1", "--batch", "100", "--no-trim"])
        defer { stopChild(failing) }
        guard let status = failing.waitForExit(timeout: 60) else {
            return XCTFail("replay did not stop on the database error:\n\(failing.output)")
        }
        XCTAssertTrue(failing.waitForLine(containing: "poison entry refused", timeout: 5), failing.output)
        XCTAssertNotEqual(status, 0, "a SQLite error stops the replayer with a non-zero exit")

        let rows = Set(try sqlite("SELECT entry_id FROM statements"))
        let pending = try pendingIDs(group: "replayer")
        XCTAssertFalse(rows.contains(poison))
        XCTAssertTrue(pending.contains(poison), "the batch that did not commit is still pending")
        assertSameIDs(pending, Set(ids[410..<510]), "exactly the failed batch is pending")
        XCTAssertTrue(pending.isDisjoint(with: rows), "none of the failed batch was committed")
        assertSameIDs(rows, Set(ids[0..<410]), "the batches before it were committed")
        assertSameIDs(try acknowledgedIDs(group: "replayer"), rows, "acknowledged entries are exactly the rows in SQLite")

        _ = try sqlite("DROP TRIGGER poison")
        try drain(["--consumer", "p1"])
        try assertDatabaseMatchesStream()
        XCTAssertEqual(try sqliteInt("SELECT SUM(applied) FROM replay_progress"), 1_010)
        XCTAssertEqual(try sqliteInt("SELECT SUM(duplicates) FROM replay_progress"), 0)
        XCTAssertEqual(try pendingCount(group: "replayer"), 0)
        XCTAssertEqual(try audit().status, 0)
    }

    // MARK: - Malformed entries

    /// "An entry that is not a valid statement is not applied but kept in
    /// `rejected_entries` and acknowledged, so it cannot block the stream;
    /// `audit` reports it."
    func testMalformedEntriesAreSetAsideAcknowledgedAndTheOthersApplied() throws {
        try adjust("set", [("m1", [("CASH", 1_000)])])
        // Written by hand, as a broken or foreign writer would.
        let noAccount = try xadd(["type", "credit", "id", "bad-1", "code", "00", "amount", "0", "credits", "CASH:100", "balances", "CASH:1100"])
        let notCents = try xadd([
            "type", "authorization", "id", "bad-2", "account", "m1", "code", "00", "amount", "12.50",
            "mcc", "5411", "debits", "CASH:1250", "balances", "CASH:-250",
        ])
        let unknownType = try xadd(["type", "refund", "id", "bad-3", "account", "m1", "code", "00", "amount", "100"])
        let garbledDebits = try xadd([
            "type", "authorization", "id", "bad-4", "account", "m1", "code", "00", "amount", "100",
            "debits", "CASH=100", "balances", "CASH:900",
        ])
        try adjust("credit", [("m1", [("CASH", 250)])])
        let malformed = [noAccount, notCents, unknownType, garbledDebits]

        try drain(["--batch", "3"])

        let rejectedIDs = Set(try sqlite("SELECT entry_id FROM rejected_entries"))
        assertSameIDs(rejectedIDs, Set(malformed), "every malformed entry is kept aside")
        let errors = try sqlite("SELECT entry_id, error FROM rejected_entries").reduce(into: [String: String]()) { result, row in
            let parts = row.split(separator: "|", maxSplits: 1).map(String.init)
            if parts.count == 2 { result[parts[0]] = parts[1] }
        }
        XCTAssertTrue(errors[noAccount]?.contains("has no account") ?? false, "\(errors)")
        XCTAssertTrue(errors[notCents]?.contains("not whole cents") ?? false, "\(errors)")
        XCTAssertTrue(errors[unknownType]?.contains("unknown type refund") ?? false, "\(errors)")
        XCTAssertTrue(errors[garbledDebits]?.contains("is not CATEGORY:CENTS") ?? false, "\(errors)")
        let fields = try sqlite("SELECT fields_json FROM rejected_entries WHERE entry_id = '\(unknownType)'")
        XCTAssertEqual(fields.count, 1)
        XCTAssertTrue(fields.first?.contains(#""type":"refund""#) ?? false, "the entry's fields are kept: \(fields)")

        // The others are applied, and everything read is acknowledged.
        let all = try streamIDs()
        XCTAssertEqual(all.count, 6)
        assertSameIDs(Set(try sqlite("SELECT entry_id FROM statements")), Set(all).subtracting(malformed), "the valid entries are applied")
        XCTAssertEqual(try pendingCount(group: "replayer"), 0)
        assertSameIDs(try acknowledgedIDs(group: "replayer"), Set(all), "everything read is acknowledged")
        XCTAssertEqual(try sqlite("SELECT SUM(applied), SUM(rejected) FROM replay_progress"), ["2|4"])

        // The audit reports them and fails; the balances themselves agree.
        let audit = try audit()
        XCTAssertEqual(audit.status, 1, audit.output)
        for id in malformed {
            XCTAssertTrue(audit.output.contains("rejected entry \(id):"), audit.output)
        }
        XCTAssertFalse(audit.output.contains("mismatch:"), audit.output)
    }

    // MARK: - Notifications cap

    /// `--notify-maxlen N` runs `XADD notifications:{ID} MAXLEN ~ N`: Redis
    /// removes whole stream nodes only, so the length ends at least N and
    /// less than N plus one node (`stream-node-max-entries`), keeping the newest.
    func testNotifyMaxlenCapsEachNotificationsStream() throws {
        try adjust("set", [("loud", [("MEAL", 10_000_000)]), ("calm", [("MEAL", 10_000)])])
        // A long answer deadline: 1,000 requests queue on one account, and a slow machine must not turn them into 07s.
        let serve = try ServeProcess(redis: redis, arguments: ["--sla-ms", "5000"])
        let loud = (0..<1_000).map { SentRequest(id: "l\($0)", account: "loud", cents: 100, mcc: "5811") }
        let calm = (0..<3).map { SentRequest(id: "c\($0)", account: "calm", cents: 100, mcc: "5811") }
        let answered = try TerminalLoad.run(port: serve.port, connections: [loud, calm]).flatMap { $0 }
        XCTAssertEqual(answered.compactMap { $0.answer?.code }.filter { $0 == "00" }.count, 1_003)

        let cap = 300
        try drain(["--notify", "--notify-maxlen", String(cap)])

        // Every decision was notified; the stream of `loud` had many more than the cap.
        let decisions = try sqlite("SELECT txn_id FROM statements WHERE type = 'authorization' AND account = 'loud' ORDER BY entry_ms, entry_seq")
        let config = try redis.command("CONFIG", "GET", "stream-node-max-entries").array ?? []
        guard config.count == 2, let nodeEntries = config[1].string.flatMap({ Int($0) }) ?? config[1].int.map({ Int($0) }) else {
            return XCTFail("CONFIG GET stream-node-max-entries: \(config)")
        }
        XCTAssertGreaterThan(decisions.count, cap + nodeEntries, "enough notifications to be trimmed")
        let length = Int(try redis.command("XLEN", "notifications:{loud}").int ?? -1)
        XCTAssertGreaterThanOrEqual(length, cap, "never trimmed below the cap")
        XCTAssertLessThan(length, cap + nodeEntries, "trimmed to the cap, give or take one stream node")
        // What is kept is the newest, in order.
        let kept = try notifications("loud").compactMap { $0["id"] }
        XCTAssertEqual(kept, Array(decisions.suffix(kept.count)), "the newest notifications are kept")
        // A stream under the cap keeps everything.
        XCTAssertEqual(try notifications("calm").compactMap { $0["id"] }, ["c0", "c1", "c2"])
    }

    // MARK: - Audit under traffic

    /// "`authorizer audit` … may run while traffic flows": it passes while
    /// terminals and operators write, with the replayer running and then
    /// stopped (statements read from the stream), and still reports a balance
    /// changed outside the ledger in that same setup.
    /// A replayer that trims as soon as it acknowledges, under traffic: an
    /// entry trimmed between the audit's database read and its stream read
    /// must still be counted (the audit reads the database again for that
    /// range). Each audit is one chance for the race; several run.
    func testAuditNextToAReplayerThatTrimsAggressively() throws {
        let accounts = (0..<40).map { "tr\($0)" }
        try adjust("set", accounts.map { ($0, [("FOOD", 5_000_000), ("MEAL", 5_000_000), ("CASH", 5_000_000)]) })
        try drain()
        let serve = try ServeProcess(redis: redis, arguments: ["--sla-ms", "5000"])
        let replay = try startReplay(["--consumer", "trimmer", "--batch", "50", "--block-ms", "100", "--trim-maxlen", "0"])
        defer { replay.terminate(signal: SIGKILL); _ = replay.waitForExit(timeout: 5) }
        XCTAssertTrue(replay.waitForLine(containing: "consumer ready"), replay.output)
        let traffic = try BackgroundTraffic(port: serve.port, accounts: accounts, redis: redis)
        defer { traffic.stop() }
        let until = Date().addingTimeInterval(8)
        var audits = 0
        while Date() < until {
            let result = try audit()
            audits += 1
            XCTAssertEqual(result.status, 0, "audit \(audits) next to a trimming replayer:\n\(result.output.prefix(800))")
        }
        XCTAssertGreaterThan(audits, 1)
    }

    func testAuditPassesUnderTrafficAndStillCatchesABalanceChangedOutsideTheLedger() throws {
        let accounts = (0..<40).map { "u\($0)" }
        try adjust("set", accounts.map { ($0, [("FOOD", 5_000_000), ("MEAL", 5_000_000), ("CASH", 5_000_000)]) } + [("quiet", [("CASH", 10_000)])])
        try drain()
        let serve = try ServeProcess(redis: redis)
        let replay = try startReplay(["--consumer", "live", "--batch", "50", "--block-ms", "100"])
        defer { stopChild(replay) }
        XCTAssertTrue(replay.waitForLine(containing: "consumer ready"), replay.output)

        let traffic = try BackgroundTraffic(port: serve.port, accounts: accounts, redis: redis)
        defer { traffic.stop() }
        guard try eventually(timeout: 30, { try streamLength() > 41 + 200 || traffic.failure != nil }) else {
            return XCTFail("no traffic")
        }
        if let failure = traffic.failure { return XCTFail("traffic failed: \(failure)") }

        // With the replayer running next to the traffic.
        // (On a loaded machine one audit may finish between two decisions:
        // at least one of the rounds must have run next to new statements.)
        var roundsUnderTraffic = 0
        for round in 0..<5 {
            let lengthBefore = try streamLength()
            let result = try audit()
            let lengthAfter = try streamLength()
            XCTAssertEqual(result.status, 0, "round \(round): \(result.output)")
            XCTAssertTrue(result.output.contains("audit passed"), result.output)
            if lengthAfter > lengthBefore { roundsUnderTraffic += 1 }
        }
        XCTAssertGreaterThan(roundsUnderTraffic, 0, "statements were written during the audits")

        // With the replayer stopped: the audit reads what it has not applied from the stream.
        replay.terminate(signal: SIGTERM)
        XCTAssertEqual(replay.waitForExit(timeout: 30), 0, replay.output)
        let stoppedAt = try streamLength()
        XCTAssertTrue(try eventually(timeout: 30) { try streamLength() >= stoppedAt + 200 })
        let lagging = try audit()
        XCTAssertEqual(lagging.status, 0, lagging.output)
        XCTAssertGreaterThan(Self.fromStream(lagging.output) ?? 0, 0, lagging.output)

        // A balance changed by hand, while the traffic goes on.
        try redis.command("HSET", "account:{quiet}", "CASH", "12345")
        let lengthBefore = try streamLength()
        let tampered = try audit()
        XCTAssertGreaterThan(try streamLength(), lengthBefore, "statements were written during the audit")
        XCTAssertEqual(tampered.status, 1, tampered.output)
        XCTAssertTrue(tampered.output.contains("mismatch: account quiet CASH: ledger 100.00, redis 123.45"), tampered.output)
        let problems = tampered.output.split(separator: "\n").filter { $0.hasPrefix("mismatch:") || $0.hasPrefix("break in the books:") }
        XCTAssertEqual(problems.count, 1, "only the tampered balance is reported: \(problems)")

        traffic.stop()
        if let failure = traffic.failure { XCTFail("traffic failed: \(failure)") }
        XCTAssertGreaterThan(traffic.rounds, 0)
    }

    /// `audit: N accounts, X statements from FILE, Y not yet replayed read from the stream`: Y.
    private static func fromStream(_ output: String) -> Int? {
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("audit: ") }),
              let range = line.range(of: " not yet replayed read from the stream") else { return nil }
        return line[..<range.lowerBound].split(separator: " ").last.flatMap { Int($0) }
    }

    // MARK: - serve's replayer lag warning

    /// `serve --replayer-lag-warn-entries N` logs `replayer is lagging` while
    /// the replayer group has more than N statements to apply (undelivered
    /// plus pending), exports the lag, and logs `replayer caught up` once it
    /// has N or fewer.
    func testServeWarnsWhenTheReplayerLagsPastTheThresholdAndExportsTheLag() throws {
        try writeCredits(20, accounts: 5)
        try drain()
        try adjust("credit", (0..<120).map { ("c\($0 % 5)", [("CASH", 100)]) })
        // Half of them delivered to a replayer and not acknowledged yet: pending counts too.
        try redis.command("XREADGROUP", "GROUP", "replayer", "stuck", "COUNT", "60", "STREAMS", "statements", ">")

        let metricsPort = try TestEnvironment.freePort()
        let serve = try ServeProcess(redis: redis, arguments: [
            "--replayer-lag-warn-entries", "100", "--metrics-port", String(metricsPort), "--log-format", "json",
        ])
        XCTAssertTrue(serve.child.waitForLine(containing: "replayer is lagging", timeout: 30), serve.child.output)
        let warning = serve.child.output.split(separator: "\n").first { $0.contains("replayer is lagging") }
        let fields = warning.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] } ?? [:]
        XCTAssertEqual(fields["level"] as? String, "warning", "\(fields)")
        XCTAssertEqual(fields["undelivered"] as? String, "60", "\(fields)")
        XCTAssertEqual(fields["pending"] as? String, "60", "\(fields)")

        // The gauges (sampled every second; no event to wait for but the value).
        var last: [String: Double] = [:]
        let exported = try eventually(timeout: 20) {
            last = try scrapeMetrics(port: metricsPort)
            return last["authorizer_replayer_lag_entries"] == 60 && last["authorizer_replayer_pending_entries"] == 60
        }
        XCTAssertTrue(exported, "\(last.filter { $0.key.hasPrefix("authorizer_replayer") })")

        // Back under the threshold (60 undelivered, none pending): the next
        // check, up to 10 s later, says so.
        let stuck = try pendingIDs(group: "replayer")
        XCTAssertEqual(stuck.count, 60)
        try redis.command(["XACK", "statements", "replayer"] + stuck.sorted())
        XCTAssertTrue(serve.child.waitForLine(containing: "replayer caught up", timeout: 30), serve.child.output)
        let recovery = serve.child.output.split(separator: "\n").first { $0.contains("replayer caught up") }
        let recovered = recovery.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] } ?? [:]
        XCTAssertEqual(recovered["undelivered"] as? String, "60", "\(recovered)")
        XCTAssertEqual(recovered["pending"] as? String, "0", "\(recovered)")
    }

    // MARK: - Helpers

    /// Two sets of entry ids are equal; on failure, how they differ (not the whole sets).
    private func assertSameIDs(
        _ actual: Set<String>, _ expected: Set<String>, _ message: String, file: StaticString = #filePath, line: UInt = #line
    ) {
        guard actual != expected else { return }
        let missing = expected.subtracting(actual).sorted()
        let extra = actual.subtracting(expected).sorted()
        XCTFail(
            "\(message): \(actual.count) ids where \(expected.count) were expected; \(missing.count) missing, e.g. \(missing.prefix(3)); "
                + "\(extra.count) unexpected, e.g. \(extra.prefix(3))",
            file: file, line: line
        )
    }

    /// One credit of 1.00 CASH per account listed, through Lua/adjust.lua, all in one MULTI/EXEC.
    private func creditsInOneTransaction(_ accounts: [String]) throws {
        let source = try String(contentsOf: TestEnvironment.repositoryRoot.appendingPathComponent("Lua/adjust.lua"), encoding: .utf8)
        guard let sha = try redis.command("SCRIPT", "LOAD", source).string else { throw TestFailure("SCRIPT LOAD failed") }
        try redis.command("MULTI")
        let queued = accounts.enumerated().map { index, account in
            redis.client.send(RedisCommand(["EVALSHA", sha, "2", "account:{\(account)}", "statements", "credit", "tx-\(index)", account, "CASH", "100"]))
        }
        for reply in queued { _ = try reply.wait() }
        let results = try redis.command("EXEC").array ?? []
        guard results.count == accounts.count else { throw TestFailure("EXEC returned \(results.count) results for \(accounts.count) credits") }
    }

    /// XADD to the statements stream as the admin user; the new entry's id.
    private func xadd(_ fields: [String]) throws -> String {
        guard let id = try redis.command(["XADD", "statements", "*"] + fields).string else { throw TestFailure("XADD returned no id") }
        return id
    }

    /// Ids delivered to the group's consumers and not acknowledged.
    private func pendingIDs(group: String) throws -> Set<String> {
        let reply = try redis.command("XPENDING", "statements", group, "-", "+", "100000").array ?? []
        return Set(try reply.map { item in
            guard let id = item.array?.first?.string else { throw TestFailure("XPENDING entry \(item)") }
            return id
        })
    }

    /// Ids the group has acknowledged: every stream entry up to its
    /// last-delivered-id that is not pending.
    private func acknowledgedIDs(group: String) throws -> Set<String> {
        let delivered = try lastDeliveredID(group: group)
        let pending = try pendingIDs(group: group)
        return Set(try streamIDs().filter { try EntryID($0) <= delivered }).subtracting(pending)
    }

    private func lastDeliveredID(group: String) throws -> EntryID {
        for item in try redis.command("XINFO", "GROUPS", "statements").array ?? [] {
            let values = item.array ?? []
            var info: [String: String] = [:]
            var index = 0
            while index + 1 < values.count {
                if let key = values[index].string { info[key] = values[index + 1].string ?? values[index + 1].int.map(String.init) }
                index += 2
            }
            if info["name"] == group, let id = info["last-delivered-id"] { return try EntryID(id) }
        }
        throw TestFailure("no consumer group \(group) on statements")
    }

    private func stopChild(_ child: ChildProcess) {
        child.terminate(signal: SIGKILL)
        _ = child.waitForExit(timeout: 10)
    }

    /// GET /metrics: series (as written, with labels) -> value.
    private func scrapeMetrics(port: Int) throws -> [String: Double] {
        let connection = try TerminalClient(port: port, receiveTimeout: 5)
        try connection.send("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        var samples: [String: Double] = [:]
        var lines = 0
        while let line = try connection.readLine() {
            lines += 1
            if lines == 1 && !line.contains(" 200 ") { throw TestFailure("GET /metrics: \(line)") }
            guard !line.hasPrefix("#"), let space = line.lastIndex(of: " ") else { continue }
            if let value = Double(line[line.index(after: space)...].trimmingCharacters(in: .whitespaces)) {
                samples[String(line[..<space])] = value
            }
        }
        return samples
    }
}

/// A stream entry id, ordered as Redis orders them.
struct EntryID: Comparable, Hashable, CustomStringConvertible {
    let milliseconds: UInt64
    let sequence: UInt64

    init(_ text: String) throws {
        let parts = text.split(separator: "-")
        guard parts.count == 2, let milliseconds = UInt64(parts[0]), let sequence = UInt64(parts[1]) else {
            throw TestFailure("not a stream entry id: \(text)")
        }
        self.milliseconds = milliseconds
        self.sequence = sequence
    }

    static func < (lhs: EntryID, rhs: EntryID) -> Bool {
        (lhs.milliseconds, lhs.sequence) < (rhs.milliseconds, rhs.sequence)
    }

    var description: String { "\(milliseconds)-\(sequence)" }
}

/// Holds SQLite's write lock (`BEGIN IMMEDIATE` in a sqlite3 shell) until released.
final class SQLiteWriteLock {
    private let shell: ChildProcess
    private var released = false

    init(database: String) throws {
        shell = ChildProcess(name: "sqlite3-lock", executable: "/usr/bin/sqlite3", arguments: ["-batch", "-cmd", ".timeout 5000", database])
        try shell.start()
        shell.write("BEGIN IMMEDIATE;\nSELECT 'write lock held';\n")
        guard shell.waitForLine(containing: "write lock held", timeout: 10) else {
            shell.terminate(signal: SIGKILL)
            _ = shell.waitForExit(timeout: 5)
            throw TestFailure("could not lock \(database):\n\(shell.output)")
        }
    }

    func release() {
        guard !released else { return }
        released = true
        shell.write("ROLLBACK;\n.quit\n")
        if shell.waitForExit(timeout: 10) == nil {
            shell.terminate(signal: SIGKILL)
            _ = shell.waitForExit(timeout: 5)
        }
    }

    deinit { release() }
}

/// Terminals and an operator writing continuously on a background thread
/// (rounds of pipelined authorizations plus one credit through
/// Lua/adjust.lua, as `authorizer account credit` runs it), until stopped.
final class BackgroundTraffic: @unchecked Sendable {
    private let lock = NSLock()
    private var stopping = false
    private var error: Error?
    private var completedRounds = 0
    private let finished = DispatchSemaphore(value: 0)

    init(port: Int, accounts: [String], redis: RedisServer) throws {
        let source = try String(contentsOf: TestEnvironment.repositoryRoot.appendingPathComponent("Lua/adjust.lua"), encoding: .utf8)
        guard let sha = try redis.command("SCRIPT", "LOAD", source).string else { throw TestFailure("SCRIPT LOAD failed") }
        let thread = Thread { [self] in
            defer { finished.signal() }
            var round = 0
            while !isStopping {
                do {
                    let connections: [[SentRequest]] = (0..<2).map { connection in
                        (0..<100).map { index in
                            let seed = round * 200 + connection * 100 + index
                            return SentRequest(
                                id: "t\(round)-\(connection)-\(index)", account: accounts[(seed * 7) % accounts.count],
                                cents: Int64(100 + seed % 1_900), mcc: ["5411", "5811", "7995"][seed % 3]
                            )
                        }
                    }
                    _ = try TerminalLoad.run(port: port, connections: connections)
                    let account = accounts[round % accounts.count]
                    try redis.command("EVALSHA", sha, "2", "account:{\(account)}", "statements", "credit", "tc\(round)", account, "MEAL", "100")
                } catch {
                    record(error)
                    return
                }
                round += 1
                lock.lock()
                completedRounds = round
                lock.unlock()
            }
        }
        thread.start()
    }

    private var isStopping: Bool {
        lock.lock()
        defer { lock.unlock() }
        return stopping
    }

    private func record(_ error: Error) {
        lock.lock()
        self.error = error
        lock.unlock()
    }

    var failure: Error? {
        lock.lock()
        defer { lock.unlock() }
        return error
    }

    var rounds: Int {
        lock.lock()
        defer { lock.unlock() }
        return completedRounds
    }

    /// Stops after the round in flight (bounded by the terminals' receive timeouts).
    func stop() {
        lock.lock()
        let first = !stopping
        stopping = true
        lock.unlock()
        if first, finished.wait(timeout: .now() + 60) == .timedOut {
            record(TestFailure("traffic did not stop"))
        }
    }
}
