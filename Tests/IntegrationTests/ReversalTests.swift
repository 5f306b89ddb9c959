import AuthorizerCore
import Foundation
import XCTest

/// Reversals and balance inquiries on the terminal protocol, over real TCP to
/// a real `serve` on a real Redis, with `replay` and `audit` after each.
final class ReversalTests: LedgerTestCase {
    var serve: ServeProcess!

    override func setUpWithError() throws {
        try super.setUpWithError()
        // Decisions, not speed, are checked here: a debug build on a shared machine.
        serve = try ServeProcess(redis: redis, arguments: ["--sla-ms", "5000"])
    }

    override func tearDown() {
        serve = nil
        super.tearDown()
    }

    private func set(_ account: String, _ balances: [(String, Int64)]) throws {
        try adjust("set", [(account, balances)])
    }

    private func purchase(_ client: TerminalClient, id: String, account: String, amount: String, mcc: String, merchant: String = "PADARIA DO ZE") throws -> Response {
        try client.sendLine(Request.line(id: id, account: account, amount: amount, mcc: mcc, merchant: merchant))
        return try client.readResponse()
    }

    private func reverse(_ client: TerminalClient, id: String, account: String, original: String, _ extra: [String: Any] = [:]) throws -> Response {
        try client.sendLine(Request.reversal(id: id, account: account, original: original, extra))
        return try client.readResponse()
    }

    /// The ledger replays into SQLite and the audit recomputes every balance.
    private func assertBooksBalance(file: StaticString = #filePath, line: UInt = #line) throws {
        try drain(["--notify"])
        try assertDatabaseMatchesStream(file: file, line: line)
        let result = try audit()
        XCTAssertEqual(result.status, 0, result.output, file: file, line: line)
        XCTAssertTrue(result.output.contains("audit passed"), result.output, file: file, line: line)
    }

    private func reversalEntries() throws -> [[String: String]] {
        try redis.statements().filter { $0["type"] == "reversal" }
    }

    func testReversalOfAnApprovedFoodPurchaseCreditsItBack() throws {
        try set("f", [("FOOD", 50_000), ("MEAL", 10_000), ("CASH", 10_000)])
        let client = try serve.connect()
        XCTAssertEqual(try purchase(client, id: "p1", account: "f", amount: "100.10", mcc: "5411").code, "00")
        XCTAssertEqual(try redis.balances("f"), ["FOOD": 50_000 - 10_010, "MEAL": 10_000, "CASH": 10_000])

        let answer = try reverse(client, id: "r1", account: "f", original: "p1")
        XCTAssertEqual(answer.code, "00")
        XCTAssertEqual(answer.id, "r1")
        XCTAssertEqual(try redis.balances("f"), ["FOOD": 50_000, "MEAL": 10_000, "CASH": 10_000])
        let entry = try XCTUnwrap(reversalEntries().last)
        XCTAssertEqual(entry["original"], "p1")
        XCTAssertEqual(entry["credits"], "FOOD:10010")
        XCTAssertEqual(entry["balances"], "FOOD:50000")
        XCTAssertEqual(entry["amount"], "10010")
        XCTAssertEqual(entry["code"], "00")

        try assertBooksBalance()
        let notes = try notifications("f")
        XCTAssertEqual(notes.map { $0["text"] ?? "" }, [
            "Compra aprovada de R$ 100,10 em PADARIA DO ZE (FOOD)",
            // The record keeps a digest of the merchant, not its name: a
            // reversal's statement names the merchant the reversal gave.
            "Estorno de R$ 100,10",
        ])
        let statement = try runAuthorizer(["statement", "f", "--db", database]).output
        XCTAssertTrue(statement.contains("reversal of p1"), statement)
        XCTAssertTrue(statement.contains("+100.10"), statement)
    }

    func testReversalOfASplitPurchaseCreditsBothCategories() throws {
        let file = redis.directory.appendingPathComponent("split.yaml")
        try """
        mcc: {"5411": FOOD, "5412": FOOD, "5811": MEAL, "5812": MEAL}
        fallback: CASH
        fallback_mode: split
        """.write(to: file, atomically: true, encoding: .utf8)
        try runAuthorizer(["rules", "load", file.path, "--redis", redis.url])
        try set("s", [("MEAL", 700), ("CASH", 500)])
        let client = try serve.connect()
        XCTAssertEqual(try purchase(client, id: "sp", account: "s", amount: "10.00", mcc: "5811").code, "00")
        XCTAssertEqual(try redis.balances("s"), ["MEAL": 0, "CASH": 200])

        XCTAssertEqual(try reverse(client, id: "sr", account: "s", original: "sp", ["totalAmount": "10.00"]).code, "00")
        XCTAssertEqual(try redis.balances("s"), ["MEAL": 700, "CASH": 500])
        let entry = try XCTUnwrap(reversalEntries().last)
        XCTAssertEqual(entry["credits"], "MEAL:700,CASH:300")
        XCTAssertEqual(entry["balances"], "MEAL:700,CASH:500")
        try assertBooksBalance()
    }

    func testReversalOfADeclinedPurchaseIsAcknowledgedAndCreditsNothing() throws {
        try set("d", [("FOOD", 1_000), ("CASH", 0)])
        let client = try serve.connect()
        XCTAssertEqual(try purchase(client, id: "big", account: "d", amount: "20.00", mcc: "5411").code, "51")
        XCTAssertEqual(try reverse(client, id: "rbig", account: "d", original: "big").code, "00")
        XCTAssertEqual(try redis.balances("d"), ["FOOD": 1_000, "CASH": 0])
        let entry = try XCTUnwrap(reversalEntries().last)
        XCTAssertEqual(entry["credits"], "")
        XCTAssertEqual(entry["reason"], "original declined")
        try assertBooksBalance()
        XCTAssertEqual(try notifications("d").count, 1, "only the declined purchase is notified")
    }

    func testReversalRepeatedByItsIdOrByItsOriginalCreditsOnce() throws {
        try set("t", [("MEAL", 10_000)])
        let client = try serve.connect()
        XCTAssertEqual(try purchase(client, id: "o", account: "t", amount: "12.34", mcc: "5811").code, "00")
        XCTAssertEqual(try reverse(client, id: "r-a", account: "t", original: "o").code, "00")
        XCTAssertEqual(try reverse(client, id: "r-a", account: "t", original: "o").code, "00", "same reversal id: the first answer")
        XCTAssertEqual(try reverse(client, id: "r-b", account: "t", original: "o").code, "00", "another reversal of the same original")
        XCTAssertEqual(try redis.balances("t"), ["MEAL": 10_000], "credited once")
        let entries = try reversalEntries()
        XCTAssertEqual(entries.count, 2, "a repeat of r-a writes nothing; r-b is recorded as already reversed")
        XCTAssertEqual(entries.map { $0["credits"] ?? "?" }, ["MEAL:1234", ""])
        XCTAssertEqual(entries.last?["reason"], "already reversed")
        // The original's id stays spent: a repeat of the purchase debits nothing and
        // says it is reversed (a 00 would tell the terminal an approval stands).
        let repeated = try purchase(client, id: "o", account: "t", amount: "12.34", mcc: "5811")
        XCTAssertEqual(repeated.code, "07")
        XCTAssertEqual(repeated.reason, "reversed")
        XCTAssertEqual(try redis.balances("t"), ["MEAL": 10_000])
        try assertBooksBalance()
    }

    func testReversalWithMismatchingFieldsIsRefusedAndCreditsNothing() throws {
        try set("m", [("FOOD", 10_000)])
        let client = try serve.connect()
        XCTAssertEqual(try purchase(client, id: "mo", account: "m", amount: "5.00", mcc: "5411").code, "00")
        let wrongAmount = try reverse(client, id: "mr1", account: "m", original: "mo", ["totalAmount": "5.01"])
        XCTAssertEqual(wrongAmount.code, "07")
        XCTAssertEqual(wrongAmount.reason, "amount does not match the original")
        let wrongMCC = try reverse(client, id: "mr2", account: "m", original: "mo", ["mcc": "5811"])
        XCTAssertEqual(wrongMCC.reason, "mcc does not match the original")
        let wrongMerchant = try reverse(client, id: "mr3", account: "m", original: "mo", ["merchant": "OUTRA LOJA"])
        XCTAssertEqual(wrongMerchant.reason, "merchant does not match the original")
        XCTAssertEqual(try redis.balances("m"), ["FOOD": 9_500], "nothing credited")
        // Matching fields (the merchant compared normalized) are accepted; a refused id may be retried.
        XCTAssertEqual(try reverse(client, id: "mr1", account: "m", original: "mo", ["totalAmount": 5, "mcc": "5411", "merchant": "padaria  do ze"]).code, "00")
        XCTAssertEqual(try redis.balances("m"), ["FOOD": 10_000])
        try assertBooksBalance()
    }

    func testReversalOfAnUnseenIdLeavesATombstoneAndTheLateOriginalIsRefused() throws {
        try set("u", [("FOOD", 10_000)])
        let client = try serve.connect()
        XCTAssertEqual(try reverse(client, id: "early", account: "u", original: "late").code, "00")
        let late = try purchase(client, id: "late", account: "u", amount: "10.00", mcc: "5411")
        XCTAssertEqual(late.code, "07")
        XCTAssertEqual(late.reason, "reversed")
        XCTAssertEqual(try redis.balances("u"), ["FOOD": 10_000], "nothing debited")
        XCTAssertEqual(try redis.statements().filter { $0["type"] == "authorization" }.count, 0)
        XCTAssertEqual(try reversalEntries().first?["credits"], "")
        try assertBooksBalance()
    }

    func testReversalAfterTheWindowIsOriginalNotFound() throws {
        try set("w", [("FOOD", 10_000)])
        let client = try serve.connect()
        XCTAssertEqual(try purchase(client, id: "old", account: "w", amount: "3.00", mcc: "5411").code, "00")
        // Age the record past the 24 h window: move it to the bucket of two
        // days ago (a bucket keeps the second of its day, field 5).
        let now = try XCTUnwrap(redis.command("TIME").array?.first?.string.flatMap { Int64($0) })
        let today = UTCDay(unixSeconds: now)
        let record = try XCTUnwrap(redis.command("HGET", Keys.transactions(account: "w", day: today), "old").string)
        let fields = record.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
        XCTAssertEqual(fields.count, 8, record)
        XCTAssertEqual(Array(fields[0...3]), ["00", "FOOD:300", "300", "5411"])
        XCTAssertEqual(fields[6], MerchantDescriptor("PADARIA DO ZE").digest, "the merchant's digest")
        XCTAssertNotNil(Int64(fields[7]), "HEARD: when the attempt answered was received (µs)")
        try redis.command("HDEL", Keys.transactions(account: "w", day: today), "old")
        try redis.command("HSET", Keys.transactions(account: "w", day: today.adding(days: -2)), "old", record)
        let answer = try reverse(client, id: "late-rev", account: "w", original: "old")
        XCTAssertEqual(answer.code, "07")
        XCTAssertEqual(answer.reason, "original not found")
        XCTAssertEqual(try redis.balances("w"), ["FOOD": 9_700])
        try assertBooksBalance()
    }

    func testReversalOfAnUnknownAccountIsRefused() throws {
        let client = try serve.connect()
        let answer = try reverse(client, id: "x", account: "nobody", original: "y")
        XCTAssertEqual(answer.code, "07")
        XCTAssertEqual(answer.reason, "unknown account")
        XCTAssertEqual(try streamLength(), 0)
    }

    /// The reversal and its original race from two connections, in either
    /// order: the balance ends where it started, and either the purchase was
    /// debited and credited back, or neither happened.
    func testConcurrentReversalAndAuthorizationOfTheSameId() throws {
        let rounds = 30
        let initial: Int64 = 1_000_000
        try set("race", [("FOOD", initial)])
        let buyer = try serve.connect()
        let canceller = try serve.connect()
        var debitedAndCredited = 0
        var tombstoned = 0
        for round in 0..<rounds {
            let cents = Int64(100 + round * 7)
            let lines = [
                Request.line(id: "race-\(round)", account: "race", amount: TerminalLoad.amount(cents), mcc: "5411"),
                Request.reversal(id: "cancel-\(round)", account: "race", original: "race-\(round)"),
            ]
            let answers = RaceAnswers(clients: [buyer, canceller])
            DispatchQueue.concurrentPerform(iterations: 2) { index in
                try? answers.clients[index].sendLine(lines[index])
                answers.set(index, try? answers.clients[index].readResponse())
            }
            let purchaseAnswer = answers.get(0)
            let reversalAnswer = answers.get(1)
            XCTAssertEqual(reversalAnswer?.code, "00")
            let entries = try redis.statements()
            let reversal = try XCTUnwrap(entries.first { $0["id"] == "cancel-\(round)" })
            let authorization = entries.first { $0["id"] == "race-\(round)" }
            switch purchaseAnswer?.code {
            case "00":
                XCTAssertEqual(authorization?["debits"], "FOOD:\(cents)")
                XCTAssertEqual(reversal["credits"], "FOOD:\(cents)")
                debitedAndCredited += 1
            case "07":
                XCTAssertEqual(purchaseAnswer?.reason, "reversed")
                XCTAssertNil(authorization, "a refused late original writes nothing")
                XCTAssertEqual(reversal["credits"], "")
                tombstoned += 1
            default:
                XCTFail("purchase answered \(String(describing: purchaseAnswer))")
            }
            XCTAssertEqual(try redis.balances("race"), ["FOOD": initial], "round \(round)")
        }
        XCTAssertEqual(debitedAndCredited + tombstoned, rounds)
        print("concurrent reversal and authorization: \(debitedAndCredited) debited then credited, \(tombstoned) refused by the tombstone")
        try assertBooksBalance()
    }

    // MARK: - Balance inquiry

    func testBalanceInquiryAfterPurchasesSplitsAndReversalsEqualsAccountShow() throws {
        let file = redis.directory.appendingPathComponent("split.yaml")
        try """
        mcc: {"5411": FOOD, "5811": MEAL}
        fallback: CASH
        fallback_mode: split
        """.write(to: file, atomically: true, encoding: .utf8)
        try runAuthorizer(["rules", "load", file.path, "--redis", redis.url])
        try set("b", [("FOOD", 100_000), ("MEAL", 5_000), ("CASH", 100_000)])
        var expected: [String: Int64] = ["FOOD": 100_000, "MEAL": 5_000, "CASH": 100_000]
        let client = try serve.connect()
        XCTAssertEqual(try purchase(client, id: "b1", account: "b", amount: "130.00", mcc: "5411").code, "00")
        expected["FOOD"]! -= 13_000
        XCTAssertEqual(try purchase(client, id: "b2", account: "b", amount: "80.00", mcc: "5811").code, "00")  // split: 50 MEAL + 30 CASH
        expected["MEAL"]! -= 5_000
        expected["CASH"]! -= 3_000
        XCTAssertEqual(try purchase(client, id: "b3", account: "b", amount: "0.10", mcc: "7995").code, "00")
        expected["CASH"]! -= 10
        XCTAssertEqual(try reverse(client, id: "b2r", account: "b", original: "b2").code, "00")
        expected["MEAL"]! += 5_000
        expected["CASH"]! += 3_000
        XCTAssertEqual(try purchase(client, id: "b4", account: "b", amount: "2000.00", mcc: "5411").code, "51")

        try client.sendLine(Request.balance(id: "q1", account: "b"))
        let answer = try client.readResponse()
        XCTAssertEqual(answer.code, "00")
        XCTAssertEqual(answer.id, "q1")
        let formatted = expected.mapValues { TerminalLoad.amount($0) }
        XCTAssertEqual(answer.balances, formatted)
        XCTAssertEqual(answer.balances, ["CASH": "999.90", "FOOD": "870.00", "MEAL": "50.00"])

        let show = try runAuthorizer(["account", "show", "b", "--redis", redis.url]).output
        for (category, amount) in formatted {
            XCTAssertTrue(show.contains(category) && show.contains(amount), "\(category) \(amount) in\n\(show)")
        }
        XCTAssertEqual(try streamLength(), 6, "the inquiry wrote nothing: set, four purchases, one reversal")
        try assertBooksBalance()
    }

    func testBalanceInquiryOfAnUnknownAccountIs07() throws {
        let client = try serve.connect()
        try client.sendLine(Request.balance(id: "q", account: "ghost"))
        let answer = try client.readResponse()
        XCTAssertEqual(answer.code, "07")
        XCTAssertEqual(answer.reason, "unknown account")
        XCTAssertNil(answer.balances)
    }

    // MARK: - Bad input

    func testMalformedReversalsAndInquiriesGet07WithAReasonAndWriteNothing() throws {
        try set("z", [("FOOD", 10_000)])
        let client = try serve.connect()
        XCTAssertEqual(try purchase(client, id: "zo", account: "z", amount: "1.00", mcc: "5411").code, "00")
        XCTAssertTrue(try eventually(timeout: 5) { try self.redis.command("EXISTS", "lock:{z}").int == 0 })
        let keysBefore = try redis.command("DBSIZE").int
        let streamBefore = try streamLength()
        let cases: [(line: String, reason: String)] = [
            (#"{"type":"refund","id":"a1","account":"z","original":"zo"}"#, "type must be authorization, reversal or balance"),
            (#"{"type":7,"id":"a2","account":"z","original":"zo"}"#, "type must be a string"),
            (#"{"type":null,"id":"a3","account":"z","original":"zo"}"#, "totalAmount is missing"),
            (#"{"type":"reversal","id":"a4","account":"z"}"#, "original is missing"),
            (#"{"type":"reversal","id":"a5","account":"z","original":true}"#, "original must be a string"),
            (#"{"type":"reversal","id":"a6","account":"z","original":["zo"]}"#, "original must be a string"),
            (#"{"type":"reversal","id":"a7","account":"z","original":"z{o}"}"#, "original must be 1-64 characters of A-Z a-z 0-9 . _ : -"),
            (#"{"type":"reversal","id":"zo","account":"z","original":"zo"}"#, "a reversal needs an id of its own, not the original's"),
            (#"{"type":"reversal","id":"a9","account":7,"original":"zo"}"#, "account must be a string"),
            (#"{"type":"reversal","id":"a10","original":"zo"}"#, "account is missing"),
            (#"{"type":"reversal","id":"a11","account":"z","original":"zo","totalAmount":-1}"#, "totalAmount: amount must be greater than zero"),
            (#"{"type":"reversal","id":"a12","account":"z","original":"zo","totalAmount":1e3}"#, "totalAmount: amount must be a plain decimal number like 100.10"),
            (#"{"type":"reversal","id":"a13","account":"z","original":"zo","mcc":5411}"#, "mcc must be a string"),
            (#"{"type":"reversal","id":"a14","account":"z","original":"zo","merchant":"  "}"#, "merchant must not be blank"),
            (#"{"type":"reversal","id":"a15","account":"z","original":"zo","original":"zo"}"#, "malformed JSON: duplicate key \"original\""),
            (#"{"type":"balance","id":"a16"}"#, "account is missing"),
            (#"{"type":"balance","id":"a17","account":""}"#, "account must be 1-64 characters of A-Z a-z 0-9 . _ : -"),
            (#"{"type":"balance","id":{"x":1},"account":"z"}"#, "id must be a string"),
            (#"{"type":"Balance","id":"a19","account":"z"}"#, "type must be authorization, reversal or balance"),
            (#"["type","reversal"]"#, "malformed JSON: expected an object"),
        ]
        for (line, reason) in cases {
            try client.sendLine(line)
            let answer = try client.readResponse()
            XCTAssertEqual(answer.code, "07", line)
            XCTAssertTrue(answer.reason?.hasPrefix(reason) ?? false, "\(line): \(answer.reason ?? "no reason")")
        }
        // A small fuzz: every truncation of a valid reversal and inquiry.
        for valid in [Request.reversal(id: "fz", account: "z", original: "zo", ["totalAmount": "1.00"]), Request.balance(id: "fq", account: "z")] {
            for length in 0..<(valid.utf8.count - 1) {
                let line = String(decoding: Array(valid.utf8)[..<length], as: UTF8.self)
                guard !line.trimmingCharacters(in: .whitespaces).isEmpty else { continue }
                try client.sendLine(line)
                let answer = try client.readResponse()
                XCTAssertEqual(answer.code, "07", line)
                XCTAssertNotNil(answer.reason, line)
            }
        }
        XCTAssertEqual(try redis.command("DBSIZE").int, keysBefore, "no key written")
        XCTAssertEqual(try streamLength(), streamBefore, "no statement written")
        XCTAssertEqual(try redis.balances("z"), ["FOOD": 9_900])
        // The connection still works.
        XCTAssertEqual(try reverse(client, id: "zr", account: "z", original: "zo").code, "00")
        XCTAssertEqual(try redis.balances("z"), ["FOOD": 10_000])
    }
}

private final class RaceAnswers: @unchecked Sendable {
    /// Each used by one thread only.
    let clients: [TerminalClient]
    init(clients: [TerminalClient]) { self.clients = clients }
    private let lock = NSLock()
    private var answers: [Int: Response] = [:]

    func set(_ index: Int, _ answer: Response?) {
        lock.lock()
        answers[index] = answer
        lock.unlock()
    }

    func get(_ index: Int) -> Response? {
        lock.lock()
        defer { lock.unlock() }
        return answers[index]
    }
}
