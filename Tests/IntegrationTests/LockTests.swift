import AuthorizerCore
import Foundation
import XCTest

/// L4: one transaction per account at a time, waits on keyevent notifications.
final class LockTests: IntegrationTestCase {
    // A long SLA: these tests check who gets the money, not how fast
    // (a debug build on a shared machine); speed is `make bench`'s job.
    override var serveArguments: [String] { ["--sla-ms", "5000"] }

    func testConcurrentRequestsOnOneAccountApproveExactlyWhatTheBalanceCovers() throws {
        let covered = 37
        try account("hot", ["FOOD": Int64(covered) * 250])
        let clients = try (0..<200).map { _ in try serve.connect() }
        try redis.command("CONFIG", "RESETSTAT")
        for (index, client) in clients.enumerated() {
            try client.sendLine(Request.line(id: "c\(index)", account: "hot", amount: "2.50", mcc: "5411"))
        }
        var codes: [String: Int] = [:]
        for client in clients {
            codes[try client.readResponse().code, default: 0] += 1
        }
        XCTAssertEqual(codes, ["00": covered, "51": 200 - covered])
        XCTAssertEqual(try redis.balances("hot"), ["FOOD": 0])
        let entries = try redis.statements()
        XCTAssertEqual(entries.count, 200)
        XCTAssertEqual(Set(entries.map { $0["id", default: ""] }).count, 200)
        XCTAssertEqual(entries.filter { $0["code"] == "00" }.count, covered)
        XCTAssertTrue(entries.compactMap { $0["balances"] }.filter { !$0.isEmpty }.allSatisfy { !$0.contains("-") })
        // Inside one process the requests queue up (FIFO) and only the head
        // talks to Redis: no lock retries.
        try redis.waitUntil { try self.redis.command("EXISTS", "lock:{hot}").int == 0 }
        let calls = try redis.commandCalls()
        // One authorize each; the lock passes from one request to the next
        // inside the process (no unlock between them), released by the last.
        let scriptCalls = try XCTUnwrap(calls["evalsha"])
        XCTAssertGreaterThanOrEqual(scriptCalls, 200, "\(calls)")
        XCTAssertLessThanOrEqual(scriptCalls, 220, "200 requests on one account cost about 200 script calls, not 200 + 200 unlocks or 200²: \(calls)")
        XCTAssertEqual(try redis.keyeventSubscribers(), 0, "queued requests never waited on a keyevent")
    }

    func testTwoServeProcessesShareTheLock() throws {
        let second = try ServeProcess(redis: redis, arguments: serveArguments)
        let accounts = ["x1", "x2", "x3"]
        for id in accounts { try account(id, ["FOOD": 20 * 100, "CASH": 5 * 100]) }
        // 40 connections to each server, each sending 3 requests over the three accounts.
        let clients = try (0..<80).map { index in try (index % 2 == 0 ? serve! : second).connect() }
        for (index, client) in clients.enumerated() {
            for (offset, id) in accounts.enumerated() {
                try client.sendLine(Request.line(id: "two-\(index)-\(offset)", account: id, amount: "1.00", mcc: "5411"))
            }
        }
        var codes: [String: Int] = [:]
        for client in clients {
            for _ in accounts { codes[try client.readResponse().code, default: 0] += 1 }
        }
        // Each account covers 20 from FOOD and 5 from CASH: 25 approvals of 80.
        XCTAssertEqual(codes, ["00": 75, "51": 165])
        for id in accounts {
            XCTAssertEqual(try redis.balances(id), ["FOOD": 0, "CASH": 0], id)
        }
        XCTAssertEqual(try redis.statements().count, 240)
    }

    func testRequestWaitsForAnExpiringLockThenSucceeds() throws {
        try account("w", ["FOOD": 1_000])
        try redis.command("SET", "lock:{w}", "held-by-hand", "PX", "300")
        let client = try serve.connect()
        let started = Date()
        let answer = try client.request(["id": "w1", "account": "w", "totalAmount": 1, "mcc": "5411", "merchant": "M"])
        let waited = Date().timeIntervalSince(started)
        XCTAssertEqual(answer.code, "00")
        XCTAssertGreaterThan(waited, 0.15, "the request must have waited for the lock")
        XCTAssertEqual(try redis.balances("w"), ["FOOD": 900])
        XCTAssertEqual(try redis.command("EXISTS", "lock:{w}").int, 0, "released after the answer")
    }

    func testRequestWaitingOnALockResumesWhenItIsDeleted() throws {
        try account("d", ["FOOD": 1_000])
        try redis.command("SET", "lock:{d}", "held-by-hand")  // no TTL: only a DEL frees it
        let client = try serve.connect()
        try client.sendLine(Request.line(id: "d1", account: "d", amount: "1.00", mcc: "5411"))
        try waitUntilSubscribed(count: 1)
        let released = Date()
        try redis.command("DEL", "lock:{d}")
        let answer = try client.readResponse()
        let resumedAfter = Date().timeIntervalSince(released)
        XCTAssertEqual(answer.code, "00")
        // The deadline is 5 s away: an answer this early came from the del event.
        XCTAssertLessThan(resumedAfter, 1.0, "resumed \(resumedAfter) s after the DEL")
        try waitUntilSubscribed(count: 0)
    }

    func testNoSubscriptionWhileNothingIsContended() throws {
        try account("n", ["FOOD": 1_000])
        XCTAssertEqual(try keyeventSubscribers(), 0)
        let client = try serve.connect()
        XCTAssertEqual(try client.request(["account": "n", "totalAmount": 1, "mcc": "5411", "merchant": "M"]).code, "00")
        XCTAssertEqual(try keyeventSubscribers(), 0, "an uncontended request does not subscribe")
    }

    func testStaleUnlockLeavesTheNewHoldersLock() throws {
        let unlock = try String(contentsOf: TestEnvironment.repositoryRoot.appendingPathComponent("Lua/unlock.lua"), encoding: .utf8)
        try redis.command("SET", "lock:{s}", "new-holder", "PX", "10000")
        XCTAssertEqual(try redis.command("EVAL", unlock, "1", "lock:{s}", "old-holder").int, 0)
        XCTAssertEqual(try redis.command("GET", "lock:{s}").string, "new-holder")
        XCTAssertEqual(try redis.command("EVAL", unlock, "1", "lock:{s}", "new-holder").int, 1)
        XCTAssertEqual(try redis.command("EXISTS", "lock:{s}").int, 0)
    }

    /// While one process works through a queue of requests for an account it
    /// holds the account lock (other processes wait on the keyevent), passing
    /// it from each request to the next; the last request releases it at
    /// once, not when its 30 s TTL runs out.
    func testAProcessHoldsTheLockThroughItsQueueAndTheLastRequestReleasesIt() throws {
        try account("q", ["FOOD": 1_000_000])
        let longLocks = try ServeProcess(redis: redis, arguments: ["--sla-ms", "5000", "--lock-ttl-ms", "30000"])
        let client = try longLocks.connect()
        let burst = (0..<300).map { Request.line(id: "q\($0)", account: "q", amount: "1.00", mcc: "5411") }.joined(separator: "\n") + "\n"
        try client.send(burst)
        var sawHeld = false
        for _ in 0..<300 {
            let pttl = try redis.command("PTTL", "lock:{q}").int ?? -2
            if pttl > 1_000 { sawHeld = true }
            XCTAssertEqual(try client.readResponse().code, "00")
        }
        XCTAssertTrue(sawHeld, "the lock was held (with its TTL) while the queue lasted")
        try redis.waitUntil(timeout: 2) { try self.redis.command("EXISTS", "lock:{q}").int == 0 }
        XCTAssertEqual(try redis.balances("q"), ["FOOD": 970_000])
    }

    func testAuthorizeRefusesToDebitWhileAnotherHolderHasTheLock() throws {
        try account("f", ["FOOD": 1_000])
        try redis.command("SET", "lock:{f}", "someone-else", "PX", "10000")
        let authorize = try String(contentsOf: TestEnvironment.repositoryRoot.appendingPathComponent("Lua/authorize.lua"), encoding: .utf8)
        let now = try XCTUnwrap(redis.command("TIME").array?.first?.string.flatMap { Int64($0) })
        let today = UTCDay(unixSeconds: now)
        let reply = try redis.command([
            "EVAL", authorize, "9", "account:{f}", "lock:{f}", "statements", "txn:{f}:t",
            Keys.transactions(account: "f", day: today.adding(days: 1)), Keys.transactions(account: "f", day: today),
            Keys.transactions(account: "f", day: today.adding(days: -1)), Keys.controls(account: "f"), Keys.spent(account: "f"),
            "my-token", "200", "t", "f", "100", "5411", "5411", "M", "FOOD", "CASH", "whole",
            String(today.number + 1), MerchantDescriptor("M").digest, "172800", "0", "3", "", "", "0", "1796678672093851",
        ])
        XCTAssertEqual(reply.array?.first?.string, "LOCKED")
        XCTAssertGreaterThan(reply.array?[1].int ?? 0, 9_000)
        XCTAssertEqual(try redis.balances("f"), ["FOOD": 1_000])
        XCTAssertEqual(try redis.statements().count, 0)
    }

    private func keyeventSubscribers() throws -> Int64 { try redis.keyeventSubscribers() }

    private func waitUntilSubscribed(count: Int64, timeout: TimeInterval = 5) throws {
        try redis.waitUntilKeyeventSubscribers(count, timeout: timeout)
    }
}

/// L4 with the default 100 ms SLA: a lock that outlives the budget gives
/// `07 account busy` instead of a late answer.
final class LockDeadlineTests: IntegrationTestCase {
    func testLockHeldPastTheBudgetYieldsAccountBusy() throws {
        try account("b", ["FOOD": 1_000])
        try redis.command("SET", "lock:{b}", "held-by-hand", "PX", "10000")
        let client = try serve.connect()
        let started = Date()
        let answer = try client.request(["id": "b1", "account": "b", "totalAmount": 1, "mcc": "5411", "merchant": "M"])
        let elapsed = Date().timeIntervalSince(started)
        XCTAssertEqual(answer.code, "07")
        XCTAssertEqual(answer.reason, "account busy")
        // Answered at the deadline, long before the 10 s lock would expire.
        XCTAssertLessThan(elapsed, 2.5)
        XCTAssertEqual(try redis.balances("b"), ["FOOD": 1_000])
        let entry = try XCTUnwrap(redis.statements().last)
        XCTAssertEqual(entry["code"], "07")
        XCTAssertEqual(entry["reason"], "account busy")
        XCTAssertEqual(entry["id"], "b1")
        // The decline is the id's decision (a script of the holder still in
        // flight for b1 must not debit it later): a retry gets it again, a new
        // id is processed normally once the lock is gone.
        try redis.command("DEL", "lock:{b}")
        let retry = try client.request(["id": "b1", "account": "b", "totalAmount": 1, "mcc": "5411", "merchant": "M"])
        XCTAssertEqual(retry.code, "07")
        XCTAssertEqual(retry.reason, "account busy")
        XCTAssertEqual(try client.request(["id": "b2", "account": "b", "totalAmount": 1, "mcc": "5411", "merchant": "M"]).code, "00")
    }

    func testServeRefusesToStartWithoutKeyeventNotifications() throws {
        let quiet = try RedisServer(name: "quiet", extraArguments: ["--notify-keyspace-events", ""])
        let result = try runAuthorizer(["serve", "--redis", quiet.url, "--port", "0"], expectSuccess: false)
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.output.contains("notify-keyspace-events"), result.output)
    }
}
