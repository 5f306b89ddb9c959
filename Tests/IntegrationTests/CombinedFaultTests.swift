@testable import AuthorizerServer
import AuthorizerCore
import Foundation
import RedisWire
import XCTest

/// Faults combined, each reduced to a deterministic case: a retry meeting the
/// lock of a process that died holding it, a script of that process still in
/// flight after the decline, a reversal too few replicas hold.
final class CombinedFaultTests: IntegrationTestCase {
    override var serveArguments: [String] { ["--metrics-port", "0"] }

    /// Requests that waited for their account (queued or LOCKED), every cause.
    private func lockWaits() throws -> Double {
        try metricSamples(XCTUnwrap(serve.metricsPort)).filter { $0.key.hasPrefix("authorizer_lock_waits_total") }.values.reduce(0, +)
    }
    private func purchase(_ client: TerminalClient, _ id: String, account: String, amount: String = "10.00") throws -> Response {
        try client.sendLine(Request.line(id: id, account: account, amount: amount, mcc: "5411"))
        return try client.readResponse()
    }

    private func reverse(_ client: TerminalClient, _ id: String, account: String, original: String) throws -> Response {
        try client.sendLine(Request.reversal(id: id, account: account, original: original))
        return try client.readResponse()
    }

    private func statements(of id: String) throws -> [[String: String]] {
        try redis.statements().filter { $0["id"] == id }
    }

    /// serve b SIGKILLed holding the account's lock, its last script (id X1)
    /// approved; the terminal retries X1 on serve a: the lock of the dead
    /// process must not turn that approval into `07 account busy`.
    func testARetryOfAnApprovedIdGetsItsApprovalWhileADeadProcessHoldsTheLock() throws {
        try account("z1", ["FOOD": 100_000])
        let client = try serve.connect()
        XCTAssertEqual(try purchase(client, "X1", account: "z1").code, "00")
        try redis.command("SET", "lock:{z1}", "dead-serve-token", "PX", "3000")

        let retry = try purchase(client, "X1", account: "z1")
        XCTAssertEqual(retry.code, "00", "the first decision, not \(retry.code) \(retry.reason ?? "")")
        XCTAssertEqual(try lockWaits(), 0, "answered at once: a decided id does not wait for the lock")
        XCTAssertEqual(try statements(of: "X1").map { $0["code"] }, ["00"], "one statement for X1, no 07 beside it")
        XCTAssertEqual(try redis.balances("z1"), ["FOOD": 99_000], "debited once")
    }

    /// Same for a terminal's reversal: decided once, its retry is answered
    /// its first decision whatever the lock.
    func testARetryOfADecidedReversalGetsItsDecisionWhileADeadProcessHoldsTheLock() throws {
        try account("z2", ["FOOD": 100_000])
        let client = try serve.connect()
        XCTAssertEqual(try purchase(client, "X2", account: "z2").code, "00")
        XCTAssertEqual(try reverse(client, "R2", account: "z2", original: "X2").code, "00")
        try redis.command("SET", "lock:{z2}", "dead-serve-token", "PX", "3000")

        let retry = try reverse(client, "R2", account: "z2", original: "X2")
        XCTAssertEqual(retry.code, "00", "the first decision, not \(retry.code) \(retry.reason ?? "")")
        XCTAssertEqual(try lockWaits(), 0, "answered at once: a decided reversal does not wait for the lock")
        XCTAssertEqual(try statements(of: "R2").map { $0["code"] }, ["00"])
        XCTAssertEqual(try redis.balances("z2"), ["FOOD": 100_000])
    }

    /// The lock is held by a dead process whose script for Y1 is still in
    /// flight. Y1 retried here waits, is declined `07 account busy`, and the
    /// decline is recorded: when the orphaned script runs afterwards it finds
    /// that 07 and debits nothing, so a 07 never stands beside a debit.
    func testABusyDeclineIsRecordedSoAnOrphanedScriptDebitsNothing() throws {
        try account("z3", ["FOOD": 100_000])
        try redis.command("SET", "lock:{z3}", "dead-serve-token", "PX", "3000")
        let client = try serve.connect()
        let declined = try purchase(client, "Y1", account: "z3")
        XCTAssertEqual(declined.code, "07")
        XCTAssertEqual(declined.reason, RejectReason.accountBusy.text)

        // The dead holder's script for Y1 reaches Redis now.
        let request = TransactionRequest(id: "Y1", account: "z3", amount: Cents(1_000), mcc: "5411", merchant: "PADARIA DO ZE")
        let resolution = Rules.defaults.resolve(mcc: "5411", merchant: MerchantDescriptor("PADARIA DO ZE"))
        let now = try XCTUnwrap(redis.command("TIME").array?.first?.string.flatMap { Int64($0) })
        let scope = IdempotencyScope(today: UTCDay(unixSeconds: now), reversalWindowSeconds: 86_400, retentionSeconds: 172_800, readOlderKeys: false)
        let orphan = ScriptCall.authorize(request, resolution, token: "dead-serve-token", lockTTLms: 200, idempotency: scope, statements: "statements",
            receivedMicros: now * 1_000_000
        )
        let source = try String(contentsOf: TestEnvironment.repositoryRoot.appendingPathComponent("Lua/authorize.lua"), encoding: .utf8)
        let reply = try redis.command(["EVAL", source, String(orphan.keys.count)] + orphan.keys + orphan.arguments)
        XCTAssertEqual(reply.array?.prefix(2).compactMap(\.string), ["DONE", "07"], "\(reply)")

        XCTAssertEqual(try redis.balances("z3"), ["FOOD": 100_000], "nothing debited for an id answered 07")
        XCTAssertEqual(try statements(of: "Y1").map { $0["code"] }, ["07"], "one statement: the decline")
        try redis.command("DEL", "lock:{z3}")
        let retry = try purchase(client, "Y1", account: "z3")
        XCTAssertEqual(retry.code, "07", "a retry gets the first decision")
        XCTAssertEqual(try statements(of: "Y1").count, 1)
    }

    /// A repeat of an approved id that times out (Redis paused) is reversed
    /// like any timed-out authorization: the terminal's last answer for the id
    /// is `07`, so nothing may stay debited; later repeats are told it is reversed.
    /// Serve b answered X5 `07 timeout` (its reversal journaled) and was
    /// killed before the terminal heard it; the terminal retried X5 on serve
    /// a and heard `00`. b, restarted, must not undo that approval. Its
    /// reversal of a `07` given *after* every attempt that heard the
    /// approval (X6: approved, repeated, then b's 07) still credits.
    func testAnOwedReversalLetsStandAnApprovalALaterAttemptWasAnswered() throws {
        try account("z5", ["FOOD": 100_000])
        try account("z6", ["FOOD": 100_000])
        let client = try serve.connect()
        let stateDirectory = redis.directory.appendingPathComponent("serve-b-state").path
        try FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true)
        let owedBeforeX5 = WallClock.micros()
        XCTAssertEqual(try purchase(client, "X5", account: "z5").code, "00", "the retry, received after b's 07")
        XCTAssertEqual(try purchase(client, "X6", account: "z6").code, "00")
        XCTAssertEqual(try purchase(client, "X6", account: "z6").code, "00", "a repeat, heard before b's 07")
        let owedAfterX6 = WallClock.micros()
        try "A z5 X5 \(owedBeforeX5)\nA z6 X6 \(owedAfterX6)\n".write(
            toFile: stateDirectory + "/pending-reversals.log", atomically: true, encoding: .utf8)

        let restarted = try ServeProcess(redis: redis, arguments: ["--state-dir", stateDirectory])
        XCTAssertTrue(restarted.child.waitForLine(containing: "no reversals owed", timeout: 30), restarted.child.output)
        XCTAssertEqual(try redis.balances("z5"), ["FOOD": 99_000], "the approval the terminal heard last stands")
        XCTAssertEqual(try purchase(client, "X5", account: "z5").code, "00")
        XCTAssertEqual(try redis.balances("z6"), ["FOOD": 100_000], "the 07 heard last is not charged")
        XCTAssertEqual(try purchase(client, "X6", account: "z6").reason, "reversed")
        XCTAssertEqual(try statements(of: "timeout/X5").count, 0, "nothing recorded: a later 07 of X5 could still be reversed")
        XCTAssertEqual(try statements(of: "timeout/X6").map { $0["credits"] }, ["FOOD:1000"])
    }

    func testATimedOutRepeatOfAnApprovalReversesItAndLaterRepeatsSaySo() throws {
        try account("z4", ["FOOD": 100_000])
        let client = try serve.connect()
        XCTAssertEqual(try purchase(client, "X4", account: "z4").code, "00")
        kill(redis.child.pid, SIGSTOP)
        let repeated = try purchase(client, "X4", account: "z4")
        XCTAssertEqual(repeated.code, "07")
        XCTAssertEqual(repeated.reason, RejectReason.timeout.text)
        // While its reversal is owed, a repeat must not hear the approval again.
        let meanwhile = try purchase(client, "X4", account: "z4")
        kill(redis.child.pid, SIGCONT)
        XCTAssertEqual(meanwhile.code, "07")
        XCTAssertEqual(meanwhile.reason, "reversed", "answered by the serve that owes the reversal")
        let port = try XCTUnwrap(serve.metricsPort)
        let deadline = Date().addingTimeInterval(20)
        while try metricSamples(port)["authorizer_pending_reversals"] != 0 {
            guard Date() < deadline else { return XCTFail("the owed reversal was never applied") }
            Thread.sleep(forTimeInterval: 0.05)
        }
        XCTAssertEqual(try redis.balances("z4"), ["FOOD": 100_000], "the approval is reversed")
        let later = try purchase(client, "X4", account: "z4")
        XCTAssertEqual(later.code, "07", "not 00: the approval no longer stands")
        XCTAssertEqual(later.reason, "reversed")
        XCTAssertEqual(try redis.balances("z4"), ["FOOD": 100_000])
    }
}

/// `--replica-acks 1` on a Redis with one replica, the replica paused: what
/// it does not hold is not done. A terminal's reversal is answered `07
/// timeout`; the reversal the service owes for an approval it could not
/// confirm stays owed (journaled) and is retried until the replica holds it;
/// the replayer commits nothing the replica does not hold.
final class ReplicaAckTests: XCTestCase {
    private var primary: RedisServer!
    private var replica: RedisServer!

    override func setUpWithError() throws {
        primary = try RedisServer(name: "acks-primary", acl: true)
        replica = try RedisServer(name: "acks-replica", users: primary.directory, extraArguments: [
            "--replicaof", "127.0.0.1", String(primary.port),
            "--masteruser", "replication", "--masterauth", primary.credentials["REPLICATION_PASSWORD"] ?? "",
        ])
        let deadline = Date().addingTimeInterval(20)
        while !((try? primary.command("INFO", "replication").string) ?? "").contains("state=online") {
            guard Date() < deadline else { throw TestFailure("the replica never came online") }
            Thread.sleep(forTimeInterval: 0.05)
        }
        try runAuthorizer(["rules", "init", "--redis", primary.url])
        // The replica acknowledges writes (not only "online"): the tests' first
        // WAIT must not be its first ack. Right after a diskless sync the master
        // streams to the replica only once it has acknowledged, which it does
        // on its own once a second; a WAIT asks only about the writes of its
        // own connection, so this connection writes first.
        try primary.command("SET", "replica-acknowledged", "1")
        guard (try primary.command("WAIT", "1", "10000").int ?? 0) >= 1 else { throw TestFailure("the replica never acknowledged") }
    }

    override func tearDown() {
        if let replica { kill(replica.child.pid, SIGCONT) }
        replica = nil
        primary = nil
    }

    func testAReversalTooFewReplicasHoldIsNotDoneUntilTheyDo() throws {
        try primary.setBalances("k1", ["FOOD": 100_000])
        let serve = try ServeProcess(redis: primary, arguments: ["--replica-acks", "1", "--replica-ack-timeout-ms", "500", "--metrics-port", "0", "--sla-ms", "1000"])
        let metricsPort = try XCTUnwrap(serve.metricsPort)
        let client = try serve.connect()
        try client.sendLine(Request.line(id: "A1", account: "k1", amount: "10.00", mcc: "5411"))
        XCTAssertEqual(try client.readResponse().code, "00")

        kill(replica.child.pid, SIGSTOP)
        try client.sendLine(Request.reversal(id: "RA1", account: "k1", original: "A1"))
        let reversal = try client.readResponse()
        XCTAssertEqual(reversal.code, "07", "a reversal no replica holds is not answered done")
        XCTAssertEqual(reversal.reason, RejectReason.timeout.text)

        try client.sendLine(Request.line(id: "A2", account: "k1", amount: "20.00", mcc: "5411"))
        let approval = try client.readResponse()
        XCTAssertEqual(approval.code, "07")
        XCTAssertEqual(approval.reason, RejectReason.timeout.text)
        // The service's reversal of A2 ran at least once and was not confirmed
        // (unreplicated: A1's reversal, A2, then A2's reversal): still owed.
        try waitFor(metricsPort, timeout: 20) { ($0["authorizer_unreplicated_decisions_total"] ?? 0) >= 3 }
        XCTAssertEqual(try metricSamples(metricsPort)["authorizer_pending_reversals"], 1, "kept in the journal until a replica holds it")

        kill(replica.child.pid, SIGCONT)
        try waitFor(metricsPort, timeout: 30) { $0["authorizer_pending_reversals"] == 0 }
        try client.sendLine(Request.reversal(id: "RA1", account: "k1", original: "A1"))
        XCTAssertEqual(try client.readResponse().code, "00", "the repeat gets the reversal's decision, held by the replica now")
        XCTAssertEqual(try primary.balances("k1"), ["FOOD": 100_000])
        XCTAssertEqual(try replica.balances("k1"), ["FOOD": 100_000], "and the replica holds both credits")
    }

    /// A 51 is its id's record too: lost in a failover, a repeat of the id
    /// would be decided again and could be approved. Unacknowledged, it is
    /// answered 07 timeout with the id's reversal owed (a tombstone where
    /// the record was lost), like an approval.
    func testADeclineTooFewReplicasHoldIsAnsweredAsATimeoutAndReversed() throws {
        try primary.setBalances("k4", ["FOOD": 1_000])
        let serve = try ServeProcess(redis: primary, arguments: ["--replica-acks", "1", "--replica-ack-timeout-ms", "500", "--metrics-port", "0", "--sla-ms", "1000"])
        let metricsPort = try XCTUnwrap(serve.metricsPort)
        let client = try serve.connect()
        kill(replica.child.pid, SIGSTOP)
        try client.sendLine(Request.line(id: "D1", account: "k4", amount: "50.00", mcc: "5411"))
        let answer = try client.readResponse()
        XCTAssertEqual(answer.code, "07", "not a 51 that a failover could turn into a 00 on a repeat")
        XCTAssertEqual(answer.reason, RejectReason.timeout.text)
        kill(replica.child.pid, SIGCONT)
        try waitFor(metricsPort, timeout: 30) { $0["authorizer_pending_reversals"] == 0 && ($0["authorizer_reversals_applied_total"] ?? 0) >= 1 }
        XCTAssertEqual(try primary.balances("k4"), ["FOOD": 1_000])
    }

    /// A statement the replica does not hold could vanish in a failover: the
    /// replayer leaves it pending until the replica has it.
    func testTheReplayerCommitsOnlyWhatTheReplicaHolds() throws {
        try primary.setBalances("k2", ["FOOD": 100_000])
        let database = primary.directory.appendingPathComponent("fenced.sqlite").path
        let replay = ChildProcess(name: "replay", executable: TestEnvironment.authorizerBinary, arguments: [
            "replay", "--redis", primary.replayerURL, "--db", database, "--replica-acks", "1", "--replica-ack-timeout-ms", "100",
        ])
        try replay.start()
        defer { replay.terminate(signal: SIGKILL) }
        XCTAssertTrue(replay.waitForLine(containing: "consumer ready", timeout: 30), replay.output)
        let seeded = try SQLiteShell.int(database, "SELECT COUNT(*) FROM statements")
        let serve = try ServeProcess(redis: primary, arguments: ["--sla-ms", "1000"])
        let client = try serve.connect()

        kill(replica.child.pid, SIGSTOP)
        try client.sendLine(Request.line(id: "B1", account: "k2", amount: "10.00", mcc: "5411"))
        XCTAssertEqual(try client.readResponse().code, "00")
        XCTAssertTrue(replay.waitForLine(containing: "not applied yet", timeout: 30), replay.output)
        XCTAssertEqual(try SQLiteShell.int(database, "SELECT COUNT(*) FROM statements WHERE txn_id = 'B1'"), 0,
                       "not committed while only the master holds it")
        XCTAssertEqual(try SQLiteShell.int(database, "SELECT COUNT(*) FROM statements"), seeded)

        kill(replica.child.pid, SIGCONT)
        let deadline = Date().addingTimeInterval(30)
        while try SQLiteShell.int(database, "SELECT COUNT(*) FROM statements WHERE txn_id = 'B1'") == 0 {
            guard Date() < deadline else { return XCTFail("B1 never committed:\n\(replay.output)") }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    /// Redis at maxmemory refuses a script's first write: the script wrote
    /// nothing, so no reversal is owed; every request is answered 07 in time
    /// and approvals are back as soon as memory is freed.
    func testRedisAtMaxmemoryOwesNoReversal() throws {
        try primary.setBalances("k3", ["FOOD": 100_000])
        let serve = try ServeProcess(redis: primary, arguments: ["--metrics-port", "0", "--sla-ms", "1000"])
        let metricsPort = try XCTUnwrap(serve.metricsPort)
        let client = try serve.connect()
        try primary.command("CONFIG", "SET", "maxmemory", "1")
        for index in 0..<5 {
            try client.sendLine(Request.line(id: "M\(index)", account: "k3", amount: "1.00", mcc: "5411"))
            let answer = try client.readResponse()
            XCTAssertEqual(answer.code, "07")
            XCTAssertEqual(answer.reason, RejectReason.storageUnavailable.text)
        }
        let samples = try metricSamples(metricsPort)
        XCTAssertEqual(samples["authorizer_pending_reversals"], 0, "an OOM reply means the script did not run: nothing owed")
        XCTAssertEqual(try primary.balances("k3"), ["FOOD": 100_000])
        try primary.command("CONFIG", "SET", "maxmemory", "0")
        try client.sendLine(Request.line(id: "M9", account: "k3", amount: "1.00", mcc: "5411"))
        XCTAssertEqual(try client.readResponse().code, "00")
    }
    private func waitFor(_ port: Int, timeout: TimeInterval, _ condition: ([String: Double]) -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        var last: [String: Double] = [:]
        while Date() < deadline {
            last = try metricSamples(port)
            if condition(last) { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw TestFailure("metrics never met the condition: \(last.filter { $0.key.contains("reversal") || $0.key.contains("unreplicated") })")
    }

}
