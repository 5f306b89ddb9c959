import AuthorizerCore
import Foundation
import XCTest

/// The idempotency records: one HASH per account and UTC day
/// (`txns:{ID}:YYYYMMDD`), the day chosen by Redis's clock, yesterday's
/// bucket read too; the older one-key records (`txn:{ID}:TXNID`) honoured
/// until they expire on a Redis that held them.
final class IdempotencyTests: LedgerTestCase {
    private func redisDay() throws -> UTCDay {
        let now = try XCTUnwrap(redis.command("TIME").array?.first?.string.flatMap { Int64($0) })
        return UTCDay(unixSeconds: now)
    }

    private func purchase(_ client: TerminalClient, id: String, account: String, amount: String) throws -> Response {
        try client.sendLine(Request.line(id: id, account: account, amount: amount, mcc: "5411"))
        return try client.readResponse()
    }

    private func reverse(_ client: TerminalClient, id: String, account: String, original: String) throws -> Response {
        try client.sendLine(Request.reversal(id: id, account: account, original: original))
        return try client.readResponse()
    }

    /// Decided a second before midnight (yesterday's bucket), retried after
    /// it: the first decision is answered, nothing is debited twice; the
    /// reversal finds it there too.
    func testADecisionOfYesterdayIsRecognisedAfterMidnight() throws {
        try adjust("set", [("m", [("FOOD", 10_000)])])
        let serve = try ServeProcess(redis: redis, arguments: ["--sla-ms", "5000"])
        let yesterday = try redisDay().adding(days: -1)
        let digest = MerchantDescriptor("PADARIA DO ZE").digest
        try redis.command("HSET", Keys.transactions(account: "m", day: yesterday), "before-midnight", "00|FOOD:500|500|5411|86399||\(digest)")
        let client = try serve.connect()
        let retry = try purchase(client, id: "before-midnight", account: "m", amount: "5.00")
        XCTAssertEqual(retry.code, "00")
        XCTAssertEqual(try redis.balances("m"), ["FOOD": 10_000], "the retry debits nothing")
        XCTAssertEqual(try streamLength(), 1, "and writes no statement (the 1 is the seed)")

        let reversal = try reverse(client, id: "rev-1", account: "m", original: "before-midnight")
        XCTAssertEqual(reversal.code, "00")
        XCTAssertEqual(try redis.balances("m"), ["FOOD": 10_500], "credited back what yesterday's record says")
        let marked = try XCTUnwrap(redis.command("HGET", Keys.transactions(account: "m", day: yesterday), "before-midnight").string)
        XCTAssertEqual(marked, "00|FOOD:500|500|5411|86399|rev-1|\(digest)", "marked reversed where it is")
        XCTAssertNotNil(try redis.command("HGET", Keys.transactions(account: "m", day: yesterday.adding(days: 1)), "rev-1").string,
                        "the reversal is remembered in today's bucket")
    }

    /// A Redis that held the one-key records before the buckets: `serve`
    /// records when it started writing buckets and still reads the older
    /// keys (retries, reversals, tombstones) until they have expired.
    func testOlderOneKeyRecordsAreHonouredOnAnUpgradedRedis() throws {
        try adjust("set", [("o", [("FOOD", 10_000)])])
        try redis.command("DEL", Keys.bucketsSince)  // as before the upgrade
        try redis.command("SET", "txn:{o}:older", "00|FOOD:300|300|5411|\(Int64(Date().timeIntervalSince1970 * 1000))||PADARIA DO ZE", "EX", "172800")
        try redis.command("SET", "txn:{o}:tomb", "07|reversed||5411|\(Int64(Date().timeIntervalSince1970 * 1000))|rv|", "EX", "172800")
        let serve = try ServeProcess(redis: redis, arguments: ["--sla-ms", "5000"])
        let since = try XCTUnwrap(redis.command("GET", Keys.bucketsSince).string.flatMap { Int64($0) })
        XCTAssertGreaterThan(since, 0, "the upgrade time is recorded")

        let client = try serve.connect()
        XCTAssertEqual(try purchase(client, id: "older", account: "o", amount: "3.00").code, "00")
        let tombstoned = try purchase(client, id: "tomb", account: "o", amount: "1.00")
        XCTAssertEqual(tombstoned.code, "07")
        XCTAssertEqual(tombstoned.reason, "reversed")
        XCTAssertEqual(try redis.balances("o"), ["FOOD": 10_000], "neither debited")

        XCTAssertEqual(try reverse(client, id: "rev-o", account: "o", original: "older").code, "00")
        XCTAssertEqual(try redis.balances("o"), ["FOOD": 10_300])
        let record = try XCTUnwrap(redis.command("GET", "txn:{o}:older").string)
        XCTAssertTrue(record.contains("|rev-o|PADARIA DO ZE"), record)
        let statement = try XCTUnwrap(redis.statements().last)
        XCTAssertEqual(statement["merchant"], "PADARIA DO ZE", "an older record still names its merchant")
    }

    /// A Redis that no service wrote to before: nothing older to read.
    func testAFreshRedisNeverReadsTheOlderKeys() throws {
        let fresh = try RedisServer(name: "IdempotencyFresh", acl: true)
        let serve = try ServeProcess(redis: fresh, arguments: ["--sla-ms", "5000"])
        XCTAssertEqual(try fresh.command("GET", Keys.bucketsSince).string, "0", "serve installed the rules: a fresh Redis")
        try fresh.setBalances("n", ["FOOD": 1_000])
        try fresh.command("SET", "txn:{n}:x", "00|FOOD:100|100|5411|1||", "EX", "600")
        let client = try serve.connect()
        XCTAssertEqual(try purchase(client, id: "x", account: "n", amount: "2.00").code, "00")
        XCTAssertEqual(try fresh.balances("n"), ["FOOD": 800], "a one-key record is not looked at here")
    }

    /// Redis's clock picks the day among the buckets the caller named: a
    /// caller a day behind still works; one further off is refused before
    /// anything is written.
    func testRedisClockPicksTheBucket() throws {
        try adjust("set", [("c", [("FOOD", 1_000)])])
        let authorize = try String(contentsOf: TestEnvironment.repositoryRoot.appendingPathComponent("Lua/authorize.lua"), encoding: .utf8)
        let today = try redisDay()
        func call(id: String, callerToday: UTCDay) throws -> String? {
            let buckets = (-1...1).map { Keys.transactions(account: "c", day: callerToday.adding(days: Int64(-$0))) }
            let reply = try redis.command(["EVAL", authorize, "9", "account:{c}", "lock:{c}", "statements", "txn:{c}:\(id)"] + buckets + [
                "controls:{c}", "spent:{c}",
                "token-\(id)", "200", id, "c", "100", "5411", "5411", "M", "FOOD", "CASH", "whole",
                String(callerToday.number + 1), MerchantDescriptor("M").digest, "172800", "0", "3", "", "", "0", "1796678672093851",
            ])
            try redis.command("DEL", "lock:{c}")
            return reply.array?[1].string
        }
        XCTAssertEqual(try call(id: "behind", callerToday: today.adding(days: -1)), "00")
        XCTAssertNotNil(try redis.command("HGET", Keys.transactions(account: "c", day: today), "behind").string,
                        "written in Redis's today, the caller's tomorrow")
        XCTAssertThrowsError(try call(id: "ahead", callerToday: today.adding(days: 2))) { error in
            XCTAssertTrue("\(error)".contains("clock"), "\(error)")
        }
        XCTAssertEqual(try redis.balances("c"), ["FOOD": 900], "only the first debited")
    }
}
