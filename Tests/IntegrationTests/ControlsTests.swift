import AuthorizerCore
import Foundation
import XCTest

/// Spending controls: set with the CLI, checked by authorize.lua in the
/// execution that debits (one Redis here; the cluster in ClusterServeTests),
/// counted per civil window of the issuer's zone, given back by reversals.
final class ControlsTests: LedgerTestCase {
    var serve: ServeProcess!
    var keyFile: String!
    /// The issuer's zone of this run: one whose civil day is not UTC's right
    /// now, so that a window computed in UTC is caught.
    var zone: (name: String, offset: Int64)!

    static let pan = "9990001234567890"

    override func setUpWithError() throws {
        try super.setUpWithError()
        keyFile = redis.directory.appendingPathComponent("pan.key").path
        FileManager.default.createFile(atPath: keyFile, contents: Data("a-test-pan-index-key-0123456789".utf8), attributes: [.posixPermissions: 0o600])
        let secondOfDay = Int64(Date().timeIntervalSince1970) % 86_400
        zone = secondOfDay >= 36_000 ? ("Etc/GMT-14", 14 * 3_600) : ("Etc/GMT+12", -12 * 3_600)
        serve = try ServeProcess(redis: redis, arguments: [
            "--sla-ms", "5000", "--iso8583-port", "0", "--pan-key-file", keyFile, "--time-zone", zone.name,
        ])
        try adjust("set", [("k1", [("FOOD", 1_000_000), ("CASH", 10_000)]), ("k2", [("FOOD", 1_000_000)])])
    }

    override func tearDown() {
        serve = nil
        super.tearDown()
    }

    @discardableResult
    private func controls(_ arguments: [String], expectSuccess: Bool = true) throws -> String {
        try runAuthorizer(["controls"] + arguments + ["--redis", redis.url, "--pan-key-file", keyFile], expectSuccess: expectSuccess).output
    }

    private func issueCard(_ account: String) throws -> String {
        let output = try runAuthorizer(["card", "issue", account, "--pan", Self.pan, "--redis", redis.url, "--pan-key-file", keyFile]).output
        return output.split(separator: " ").dropFirst().first.map(String.init) ?? ""
    }

    private func buy(
        _ client: TerminalClient, _ id: String, card: String? = nil, account: String? = nil, amount: String, mcc: String = "5411",
        merchant: String = "PADARIA DO ZE"
    ) throws -> Response {
        var fields: [String: Any] = ["id": id, "totalAmount": amount, "mcc": mcc, "merchant": merchant]
        if let card { fields["card"] = card }
        if let account { fields["account"] = account }
        return try client.request(fields)
    }

    /// A window's counters: period, cents, approvals.
    private func spent(_ account: String, _ field: String) throws -> [String]? {
        try redis.command("HGET", Keys.spent(account: account), field).string.map { $0.split(separator: ":").map(String.init) }
    }

    func testEachControlRefusesWithItsReasonAndTheTightestWins() throws {
        let card = try issueCard("k1")
        let client = try serve.connect()
        try controls(["set", "--card", card, "--per-transaction", "50.00", "--daily-count", "3", "--blocked-mcc", "7995,5933",
                      "--blocked-merchant", "CASINO ROYAL"])
        try controls(["set", "--account", "k1", "--daily-amount", "80.00"])
        XCTAssertTrue(try controls(["show", "--card", card]).contains("per_txn: 50.00"))

        let over = try buy(client, "c1", card: card, amount: "50.01")
        XCTAssertEqual([over.code, over.reason, over.reasonCode], ["07", "amount over the per-transaction limit", "control_per_transaction"])
        let mcc = try buy(client, "c2", card: card, amount: "1.00", mcc: "7995")
        XCTAssertEqual([mcc.reason, mcc.reasonCode], ["merchant category not allowed", "control_merchant_category"])
        let merchant = try buy(client, "c3", card: card, amount: "1.00", merchant: "casino  royal")
        XCTAssertEqual([merchant.reason, merchant.reasonCode], ["merchant not allowed", "control_merchant"], "normalized like L3")
        XCTAssertEqual(try buy(client, "c4", card: card, amount: "50.00").code, "00")
        XCTAssertEqual(try buy(client, "c5", card: card, amount: "30.00").code, "00", "80.00 today on the account: at its limit, not over")
        let account = try buy(client, "c6", card: card, amount: "0.01")
        XCTAssertEqual([account.reason, account.reasonCode], ["daily limit reached", "control_daily_amount"], "the account's limit binds the card")
        try controls(["clear", "--account", "k1"])
        XCTAssertEqual(try buy(client, "c7", card: card, amount: "1.00").code, "00")
        let count = try buy(client, "c8", card: card, amount: "1.00")
        XCTAssertEqual([count.reason, count.reasonCode], ["too many transactions today", "control_daily_count"], "three approvals today on the card")
        XCTAssertEqual(try buy(client, "c9", account: "k1", amount: "60.00").code, "00", "without the card: the card's controls do not apply")
        XCTAssertEqual(try buy(client, "c1", card: card, amount: "50.01").reason, "amount over the per-transaction limit", "a repeat gets its first answer")
        XCTAssertEqual(try redis.balances("k1")["FOOD"], 1_000_000 - 5_000 - 3_000 - 100 - 6_000)
        try drain(["--notify"])
        try assertDatabaseMatchesStream()
        XCTAssertEqual(try audit().status, 0)
        let texts = try (redis.command("KEYS", "notifications:*").array?.compactMap(\.string) ?? []).map { key in
            RedisCluster.strings(in: try redis.command("XRANGE", key, "-", "+")).joined(separator: " ")
        }
        XCTAssertTrue(texts.contains { $0.contains("limite diário atingido") }, "\(texts)")
    }

    /// Windows are civil in the issuer's zone; a counter of an earlier
    /// period counts nothing; a reversal gives back what its original counted.
    func testWindowsAreTheIssuersAndAReversalGivesBack() throws {
        let client = try serve.connect()
        try controls(["set", "--account", "k2", "--daily-amount", "20.00", "--monthly-count", "100"])
        XCTAssertEqual(try buy(client, "w1", account: "k2", amount: "15.00").code, "00")
        let now = try XCTUnwrap(redis.command("TIME").array?.first?.string.flatMap { Int64($0) })
        let localDay = (now + zone.offset) / 86_400
        XCTAssertEqual(try spent("k2", "account.d"), [String(localDay), "1500", "1"], "the day of \(zone.name), not UTC's (\(now / 86_400))")
        XCTAssertNil(try spent("k2", "account.w"), "no weekly limit: the week is not counted")
        // Only approvals count: a 51 that passed the controls (no MEAL, no CASH) leaves the windows as they were.
        XCTAssertEqual(try buy(client, "w1b", account: "k2", amount: "1.00", mcc: "5812").code, "51")
        XCTAssertEqual(try spent("k2", "account.d"), [String(localDay), "1500", "1"], "a 51 counts nothing")
        XCTAssertEqual(try spent("k2", "account.m")?.last, "1")
        XCTAssertEqual(try buy(client, "w2", account: "k2", amount: "10.00").reason, "daily limit reached")

        try client.sendLine(Request.reversal(id: "rw1", account: "k2", original: "w1"))
        XCTAssertEqual(try client.readResponse().code, "00")
        XCTAssertEqual(try spent("k2", "account.d"), [String(localDay), "0", "0"], "given back")
        XCTAssertEqual(try spent("k2", "account.m")?.last, "0")
        XCTAssertEqual(try buy(client, "w3", account: "k2", amount: "20.00").code, "00")

        // Yesterday's counters (as the day turns): they count nothing today,
        // and the reversal of an approval of yesterday gives nothing back today.
        try redis.command("HSET", Keys.spent(account: "k2"), "account.d", "\(localDay - 1):2000:1")
        XCTAssertEqual(try buy(client, "w4", account: "k2", amount: "20.00").code, "00", "a new day")
        XCTAssertEqual(try spent("k2", "account.d"), [String(localDay), "2000", "1"])
        try redis.command("HSET", Keys.spent(account: "k2"), "account.d", "\(localDay + 1):2000:1")
        try client.sendLine(Request.reversal(id: "rw4", account: "k2", original: "w4"))
        XCTAssertEqual(try client.readResponse().code, "00")
        XCTAssertEqual(try spent("k2", "account.d"), [String(localDay + 1), "2000", "1"], "w4's day is over: nothing given back to the next day's")
        try drain()
        XCTAssertEqual(try audit().status, 0)
    }

    /// A trailing window counts the approvals of the last rolling_seconds
    /// (Redis's clock), whatever the calendar; a reversal takes its
    /// original's approval out; approvals older than the window count nothing.
    func testATrailingWindowCountsTheLastSecondsAndAReversalTakesItsApprovalOut() throws {
        let refusedWithoutSeconds = try controls(["set", "--account", "k1", "--rolling-count", "2"], expectSuccess: false)
        XCTAssertTrue(refusedWithoutSeconds.contains("need --rolling-seconds"), refusedWithoutSeconds)
        try controls(["set", "--account", "k2", "--rolling-seconds", "600", "--rolling-amount", "40.00", "--rolling-count", "3"])
        let client = try serve.connect()
        XCTAssertEqual(try buy(client, "r1", account: "k2", amount: "10.00").code, "00")
        XCTAssertEqual(try buy(client, "r2", account: "k2", amount: "15.00").code, "00")
        let overAmount = try buy(client, "r3", account: "k2", amount: "15.01")
        XCTAssertEqual([overAmount.reason, overAmount.reasonCode], ["recent spending limit reached", "control_rolling_amount"])
        XCTAssertEqual(try buy(client, "r4", account: "k2", amount: "5.00").code, "00")
        let overCount = try buy(client, "r5", account: "k2", amount: "1.00")
        XCTAssertEqual([overCount.reason, overCount.reasonCode], ["too many transactions in a short time", "control_rolling_count"])
        func items() throws -> [String] {
            try redis.command("HGET", Keys.spent(account: "k2"), "account.r").string?.split(separator: ",").map(String.init) ?? []
        }
        XCTAssertEqual(try items().map { $0.split(separator: ":").last.map(String.init) }, ["1000", "1500", "500"], "the three approvals, refusals not")

        try client.sendLine(Request.reversal(id: "rr1", account: "k2", original: "r1"))
        XCTAssertEqual(try client.readResponse().code, "00")
        XCTAssertEqual(try items().count, 2, "r1 left the window")
        XCTAssertEqual(try buy(client, "r6", account: "k2", amount: "10.00").code, "00", "room again after the reversal")

        // Approvals older than the window count nothing and are dropped at the next approval.
        let now = try XCTUnwrap(redis.command("TIME").array?.first?.string.flatMap { Int64($0) })
        try redis.command("HSET", Keys.spent(account: "k2"), "account.r", "\(now - 601):3000,\(now - 601):3000")
        XCTAssertEqual(try buy(client, "r7", account: "k2", amount: "40.00").code, "00", "at the limit, not over")
        XCTAssertEqual(try items().count, 1, "only r7 is left in the window")
        try drain()
        XCTAssertEqual(try audit().status, 0)
    }

    /// The program's controls (in the rules, cached by serve and passed to
    /// the script) bind every account, with a card or without; they are
    /// counted per account ("program.W"); `controls set|clear --program`
    /// writes a new rule set.
    func testProgramControlsInTheRulesBindEveryAccount() throws {
        let file = redis.directory.appendingPathComponent("program.yaml")
        try """
        mcc: {"5411": FOOD, "5811": MEAL}
        fallback: CASH
        controls:
          per_txn: "40.00"
          day_count: 2
          blocked_mcc: ["7995"]
          blocked_merchant: ["Cassino Online"]
        """.write(to: file, atomically: true, encoding: .utf8)
        try runAuthorizer(["rules", "load", file.path, "--redis", redis.url])
        func reloads(_ count: Int) -> Bool {
            serve.child.waitForOutput(timeout: 10) { lines in lines.filter { $0.contains("rules reloaded") }.count >= count }
        }
        XCTAssertTrue(reloads(1), serve.child.output)
        let client = try serve.connect()
        XCTAssertEqual(try buy(client, "p1", account: "k1", amount: "40.01").reason, "amount over the per-transaction limit")
        XCTAssertEqual(try buy(client, "p2", account: "k1", amount: "1.00", mcc: "7995").reason, "merchant category not allowed")
        XCTAssertEqual(try buy(client, "p3", account: "k1", amount: "1.00", merchant: "cassino  online").reason, "merchant not allowed")
        XCTAssertEqual(try buy(client, "p4", account: "k1", amount: "40.00").code, "00", "at the per-transaction limit, not over")
        XCTAssertEqual(try buy(client, "p5", account: "k2", amount: "1.00").code, "00", "each account counts its own")
        let card = try issueCard("k1")
        XCTAssertEqual(try buy(client, "p6", card: card, amount: "1.00").code, "00", "a card of the account counts in the account's windows")
        let refused = try buy(client, "p7", account: "k1", amount: "1.00")
        XCTAssertEqual([refused.reason, refused.reasonCode], ["too many transactions today", "control_daily_count"])
        XCTAssertEqual(try spent("k1", "program.d")?.last, "2", "two approvals of k1 counted for the program")

        try controls(["set", "--program", "--daily-count", "3"])
        XCTAssertTrue(reloads(2), serve.child.output)
        XCTAssertEqual(try buy(client, "p8", account: "k1", amount: "1.00").code, "00", "the program's new count")
        let shown = try runAuthorizer(["rules", "show", "--redis", redis.url]).output
        XCTAssertTrue(shown.contains("day_count: 3") && shown.contains("per_txn: \"40.00\"") && shown.contains("blocked_mcc: [\"7995\"]"), shown)
        XCTAssertTrue(try controls(["show", "--program"]).contains("per_txn: 40.00"))
        try controls(["clear", "--program"])
        XCTAssertTrue(reloads(3), serve.child.output)
        XCTAssertEqual(try buy(client, "p9", account: "k1", amount: "50.00").code, "00", "no program controls any more")
        XCTAssertFalse(try runAuthorizer(["rules", "show", "--redis", redis.url]).output.contains("controls:"))
        try drain()
        XCTAssertEqual(try audit().status, 0)
    }

    /// 200 terminals at once on one card's daily amount: never over by a cent.
    func testTwoHundredTerminalsOnOneCardNeverPassTheLimit() throws {
        let card = try issueCard("k1")
        try controls(["set", "--card", card, "--daily-amount", "100.00"])
        let clients = try (0..<200).map { _ in try serve.connect() }
        for (index, client) in clients.enumerated() {
            try client.sendLine(Request.json(["id": "t\(index)", "card": card, "totalAmount": "1.50", "mcc": "5411", "merchant": "M"]))
        }
        let answers = try clients.map { try $0.readResponse() }
        let approved = answers.filter { $0.code == "00" }.count
        XCTAssertEqual(approved, 66, "66 × 1.50 = 99.00; a 67th would pass 100.00")
        XCTAssertTrue(answers.allSatisfy { $0.code == "00" || $0.reason == "daily limit reached" }, "\(Set(answers.map { $0.reason ?? "" }))")
        XCTAssertEqual(try spent("k1", "\(card).d")?.dropFirst(), ["9900", "66"])
        XCTAssertEqual(try redis.balances("k1")["FOOD"], 1_000_000 - 9_900)
    }

    func testISO8583AnswersControlsWithTheirDE39() throws {
        let card = try issueCard("k1")
        try controls(["set", "--card", Self.pan, "--per-transaction", "20.00", "--daily-count", "1", "--blocked-mcc", "7995"])
        let link = try ISOLink(port: try XCTUnwrap(serve.iso8583Port))
        var stan = 0
        func purchase(_ cents: Int64, mcc: String = "5411") throws -> String? {
            stan += 1
            let request = ISO8583Tests.purchase(pan: Self.pan, cents: cents, stan: stan, rrn: String(format: "%012d", stan), mcc: mcc)
            return try link.exchange(mti: "0200", request).fields[39]
        }
        XCTAssertEqual(try purchase(1_000, mcc: "7995"), "57")
        XCTAssertEqual(try purchase(2_001), "61")
        XCTAssertEqual(try purchase(1_000), "00")
        XCTAssertEqual(try purchase(1_000), "65")
        XCTAssertTrue(try controls(["show", "--card", card]).contains("1 approvals"))
    }
}
