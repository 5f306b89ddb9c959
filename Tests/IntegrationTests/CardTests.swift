import AuthorizerCore
import Foundation
import XCTest

/// Cards: issued and changed with the CLI, checked by authorize.lua in the
/// execution that debits, over real TCP (line-JSON and ISO 8583) to a real
/// `serve` on a real Redis, then replayed and audited.
final class CardTests: LedgerTestCase {
    var serve: ServeProcess!
    var keyFile: String!

    /// Valid Luhn PANs (never real cards).
    static let pan1 = "9990001234567890"
    static let pan2 = "9990009876543210"

    override func setUpWithError() throws {
        try super.setUpWithError()
        keyFile = redis.directory.appendingPathComponent("pan.key").path
        FileManager.default.createFile(atPath: keyFile, contents: Data("a-test-pan-index-key-0123456789".utf8), attributes: [.posixPermissions: 0o600])
        serve = try ServeProcess(redis: redis, arguments: ["--sla-ms", "5000", "--iso8583-port", "0", "--pan-key-file", keyFile])
        try adjust("set", [("h1", [("FOOD", 100_000), ("CASH", 10_000)]), ("h2", [("FOOD", 100_000)])])
    }

    override func tearDown() {
        serve = nil
        super.tearDown()
    }

    @discardableResult
    private func card(_ arguments: [String], expectSuccess: Bool = true) throws -> (status: Int32, output: String) {
        try runAuthorizer(["card"] + arguments + ["--redis", redis.url, "--pan-key-file", keyFile], expectSuccess: expectSuccess)
    }

    /// Issues a card and returns its id.
    private func issue(_ account: String, pan: String, _ extra: [String] = []) throws -> String {
        let output = try card(["issue", account, "--pan", pan] + extra).output
        let id = output.split(separator: " ").dropFirst().first.map(String.init) ?? ""
        XCTAssertTrue(CardID.isValid(id), output)
        return id
    }

    private func buy(_ client: TerminalClient, id: String, card: String, account: String? = nil, amount: String = "10.00", _ extra: [String: Any] = [:]) throws -> Response {
        var fields: [String: Any] = ["id": id, "card": card, "totalAmount": amount, "mcc": "5411", "merchant": "PADARIA DO ZE"]
        if let account { fields["account"] = account }
        for (name, value) in extra { fields[name] = value }
        return try client.request(fields)
    }

    private func assertBooksBalance(file: StaticString = #filePath, line: UInt = #line) throws {
        try drain(["--notify"])
        try assertDatabaseMatchesStream(file: file, line: line)
        let result = try audit()
        XCTAssertEqual(result.status, 0, result.output, file: file, line: line)
    }

    /// Every place a PAN could leak to: the ledger streams, the notifications,
    /// the SQLite statements, serve's log, Redis's keys.
    private func assertNoRawPAN(_ pans: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let sqlite = try String(contentsOf: URL(fileURLWithPath: database), encoding: .isoLatin1)
        let streams = try redis.statements().map { $0.values.joined(separator: " ") }.joined(separator: "\n")
        let keys = try redis.command("KEYS", "*").array?.compactMap(\.string).joined(separator: " ") ?? ""
        let notifications = try (redis.command("KEYS", "notifications:*").array?.compactMap(\.string) ?? []).map { key in
            RedisCluster.strings(in: try redis.command("XRANGE", key, "-", "+")).joined(separator: "\n")
        }.joined()
        for pan in pans {
            for (place, text) in [("sqlite", sqlite), ("streams", streams), ("keys", keys), ("notifications", notifications), ("serve's log", serve.child.output)] {
                XCTAssertFalse(text.contains(pan), "a raw PAN in \(place)", file: file, line: line)
            }
        }
    }

    func testLostCardRefusedThenReplacedAndTheBooksShowOnlyMaskedPANs() throws {
        let first = try issue("h1", pan: Self.pan1)
        let client = try serve.connect()
        XCTAssertEqual(try buy(client, id: "b1", card: Self.pan1).code, "00")
        XCTAssertEqual(try redis.balances("h1")["FOOD"], 100_000 - 1_000)
        let approved = try XCTUnwrap(try redis.statements().last { $0["id"] == "b1" })
        XCTAssertEqual(approved["card"], first)
        XCTAssertEqual(approved["pan"], "999000******7890")

        XCTAssertTrue(try card(["lost", Self.pan1]).output.contains("active -> lost"))
        let refused = try buy(client, id: "b2", card: Self.pan1)
        XCTAssertEqual(refused.code, "07")
        XCTAssertEqual(refused.reason, "card lost")
        XCTAssertEqual(refused.reasonCode, "card_lost")
        XCTAssertEqual(try redis.balances("h1")["FOOD"], 100_000 - 1_000, "a refused card debits nothing")
        XCTAssertEqual(try redis.statements().last { $0["id"] == "b2" }?["reason"], "card lost", "a refusal is a decision in the ledger")
        XCTAssertEqual(try buy(client, id: "b2", card: Self.pan1).reason, "card lost", "and idempotent by id")

        let replaced = try card(["replace", first, "--pan", Self.pan2]).output
        XCTAssertTrue(replaced.contains("replaced by"), replaced)
        XCTAssertEqual(try buy(client, id: "b3", card: Self.pan2).code, "00")
        XCTAssertEqual(try buy(client, id: "b4", card: Self.pan1).reason, "card lost", "the old card stays lost")
        XCTAssertTrue(try card(["show", "--account", "h1"]).output.contains("replaced by"))

        try assertBooksBalance()
        let notifications = RedisCluster.strings(in: try redis.command("XRANGE", "notifications:{h1}", "-", "+")).joined(separator: "\n")
        XCTAssertTrue(notifications.contains("cartão bloqueado por perda"), notifications)
        let statement = try runAuthorizer(["statement", "h1", "--db", database]).output
        XCTAssertTrue(statement.contains("card 999000******7890 active -> lost"), statement)
        try assertNoRawPAN([Self.pan1, Self.pan2])
    }

    func testOnlyAnActiveCardAuthorizesAndFinalStatusesAreFinal() throws {
        let id = try issue("h1", pan: Self.pan1, ["--pending"])
        let client = try serve.connect()
        XCTAssertEqual(try buy(client, id: "s1", card: id).reason, "card not activated")
        try card(["activate", id])
        XCTAssertEqual(try buy(client, id: "s2", card: id).code, "00")
        try card(["block", id])
        XCTAssertEqual(try buy(client, id: "s3", card: id).reasonCode, "card_blocked")
        try card(["unblock", id])
        XCTAssertEqual(try buy(client, id: "s4", card: id).code, "00")
        try card(["stolen", id])
        XCTAssertEqual(try buy(client, id: "s5", card: id).reason, "card stolen")
        for move in ["unblock", "activate", "block", "lost", "cancel"] {
            let refused = try card([move, id], expectSuccess: false)
            XCTAssertNotEqual(refused.status, 0, move)
            XCTAssertTrue(refused.output.contains("final status"), refused.output)
        }
        let other = try issue("h2", pan: Self.pan2)
        try card(["cancel", other])
        XCTAssertEqual(try buy(client, id: "s6", card: other).reason, "card cancelled")
        XCTAssertEqual(try card(["unblock", other], expectSuccess: false).status, 1)
        let entries = try redis.statements().filter { $0["type"] == "card" }
        XCTAssertEqual(entries.map { "\($0["from"] ?? "")>\($0["to"] ?? "")" }, [
            ">pending", "pending>active", "active>blocked", "blocked>active", "active>stolen", ">active", "active>cancelled",
        ])
        try assertBooksBalance()
    }

    func testARedisCliStatusChangeTakesEffectAtTheNextAuthorization() throws {
        let id = try issue("h1", pan: Self.pan1)
        let client = try serve.connect()
        XCTAssertEqual(try buy(client, id: "r1", card: Self.pan1).code, "00", "serve has the card cached now")
        _ = try redis.command("HSET", "card:{h1}:\(id)", "status", "blocked")
        XCTAssertEqual(try buy(client, id: "r2", card: Self.pan1).reason, "card blocked")
        _ = try redis.command("HSET", "card:{h1}:\(id)", "status", "something-else")
        XCTAssertEqual(try buy(client, id: "r3", card: Self.pan1).reason, "card blocked", "a status the script does not know refuses")
        _ = try redis.command("HSET", "card:{h1}:\(id)", "status", "active")
        XCTAssertEqual(try buy(client, id: "r4", card: Self.pan1).code, "00")
    }

    func testExpiryIsTheLastDayOfItsMonthAndMustMatchWhatTheTerminalRead() throws {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "America/Sao_Paulo")!
        let now = calendar.dateComponents([.year, .month], from: Date())
        let thisMonth = CardExpiry(year: now.year! % 100, month: now.month!)
        let lastMonth = now.month! == 1 ? CardExpiry(year: (now.year! - 1) % 100, month: 12) : CardExpiry(year: now.year! % 100, month: now.month! - 1)
        let valid = try issue("h1", pan: Self.pan1, ["--expiry", thisMonth.description])
        let expired = try issue("h2", pan: Self.pan2, ["--expiry", lastMonth.description])
        let client = try serve.connect()
        XCTAssertEqual(try buy(client, id: "e1", card: valid).code, "00", "valid through its month")
        XCTAssertEqual(try buy(client, id: "e2", card: valid, ["expiry": thisMonth.description]).code, "00")
        let expiredAnswer = try buy(client, id: "e3", card: expired)
        XCTAssertEqual(expiredAnswer.reason, "card expired")
        XCTAssertEqual(expiredAnswer.reasonCode, "card_expired")
        XCTAssertEqual(try buy(client, id: "e4", card: valid, ["expiry": "9912"]).reason, "card expiry does not match")
    }

    func testACardOfAnotherAccountOrNoCardAtAllIsRefusedWithoutTouchingRedis() throws {
        _ = try issue("h1", pan: Self.pan1)
        let client = try serve.connect()
        let before = try redis.statements().count
        XCTAssertEqual(try buy(client, id: "o1", card: Self.pan1, account: "h2").reason, "card does not belong to the account")
        XCTAssertEqual(try buy(client, id: "o2", card: Self.pan2).reason, "unknown card")
        XCTAssertEqual(try buy(client, id: "o3", card: "crd_doesnotexist").reasonCode, "card_unknown")
        XCTAssertEqual(try buy(client, id: "o4", card: Self.pan1, account: "h1").code, "00", "both, matching")
        XCTAssertEqual(try redis.statements().count, before + 1)
        XCTAssertEqual(try card(["issue", "h2", "--pan", Self.pan1], expectSuccess: false).status, 1, "a PAN is issued once")
        XCTAssertEqual(try card(["issue", "nobody", "--pan", Self.pan2], expectSuccess: false).status, 1, "on an existing account")
    }

    func testISO8583ResolvesDE2ThroughTheIndexAndAnswersEachCardStatusWithItsDE39() throws {
        let id = try issue("h1", pan: Self.pan1, ["--expiry", "3012"])
        let link = try ISOLink(port: try XCTUnwrap(serve.iso8583Port))
        var stan = 0
        func purchase(_ pan: String, _ extra: [Int: String] = [:]) throws -> String? {
            stan += 1
            var request = ISO8583Tests.purchase(pan: pan, cents: 1_000, stan: stan, rrn: String(format: "%012d", stan))
            for (field, value) in extra { request[field] = value }
            return try link.exchange(mti: "0200", request).fields[39]
        }
        XCTAssertEqual(try purchase(Self.pan1), "00")
        XCTAssertEqual(try redis.balances("h1")["FOOD"], 100_000 - 1_000, "the card's account, not the PAN, was debited")
        XCTAssertEqual(try purchase(Self.pan1, [14: "3012"]), "00")
        XCTAssertEqual(try purchase(Self.pan1, [14: "2901"]), "54", "DE14 must match the card's expiry")
        XCTAssertEqual(try purchase(Self.pan2), "14", "a PAN with no card, without --iso-pan-as-account")
        for (command, code) in [("block", "62"), ("unblock", "00"), ("lost", "41")] {
            try card([command, id])
            XCTAssertEqual(try purchase(Self.pan1), code, command)
        }
        let stolen = try issue("h1", pan: Self.pan2)
        try card(["stolen", stolen])
        XCTAssertEqual(try purchase(Self.pan2), "43")
        let cancelled = try issue("h2", pan: "9990001111111119")
        try card(["cancel", cancelled])
        XCTAssertEqual(try purchase("9990001111111119"), "46")
        let expired = try issue("h2", pan: "9990002222222225", ["--expiry", "2001"])
        XCTAssertEqual(try purchase("9990002222222225"), "54")
        _ = expired
        try assertBooksBalance()
        try assertNoRawPAN([Self.pan1, Self.pan2, "9990001111111119", "9990002222222225"])
    }
}
