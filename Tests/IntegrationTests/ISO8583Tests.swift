import Foundation
import XCTest

/// The ISO 8583 port: real `serve --iso8583-port 0` on a real Redis, real
/// TCP, messages built by the test from the field layout (not by the
/// server's codec), the ledger replayed and audited.
final class ISO8583Tests: LedgerTestCase {
    var serve: ServeProcess!

    override func setUpWithError() throws {
        try super.setUpWithError()
        // Decisions, not speed, are checked here: a debug build on a shared machine.
        serve = try ServeProcess(redis: redis, arguments: ["--sla-ms", "5000", "--iso8583-port", "0", "--iso-pan-as-account"])
    }

    override func tearDown() {
        serve = nil
        super.tearDown()
    }

    private func link() throws -> ISOLink {
        try ISOLink(port: try XCTUnwrap(serve.iso8583Port))
    }

    private func set(_ account: String, _ balances: [(String, Int64)]) throws {
        try adjust("set", [(account, balances)])
    }

    static let merchant40 = "PADARIA DO ZE            SAO PAULO    BR"

    /// A purchase (DE3 000000) as an acquirer sends it.
    static func purchase(pan: String, cents: Int64, stan: Int, rrn: String, mcc: String = "5411",
                         currency: String = "986", merchant: String = merchant40) -> [Int: String] {
        [
            2: pan,
            3: "000000",
            4: String(format: "%012lld", cents),
            7: "1126120000",
            11: String(format: "%06d", stan),
            12: "120000",
            13: "1126",
            18: mcc,
            37: rrn.padding(toLength: 12, withPad: " ", startingAt: 0),
            41: "TERM0001",
            42: "MERCHANT0000001",
            43: merchant,
            49: currency,
        ]
    }

    private func assertEchoes(_ answer: (mti: String, fields: [Int: String]), _ request: [Int: String], file: StaticString = #filePath, line: UInt = #line) {
        for number in [2, 3, 4, 7, 11, 37, 41, 42] where request[number] != nil {
            XCTAssertEqual(answer.fields[number], request[number], "DE\(number)", file: file, line: line)
        }
    }

    private func assertBooksBalance(file: StaticString = #filePath, line: UInt = #line) throws {
        try drain()
        let result = try audit()
        XCTAssertEqual(result.status, 0, result.output, file: file, line: line)
    }

    func testPurchaseApprovedDebitsAndEchoes() throws {
        try set("4000001", [("FOOD", 50_000), ("CASH", 10_000)])
        let link = try link()
        let request = Self.purchase(pan: "4000001", cents: 10_010, stan: 1, rrn: "000000000001")
        let answer = try link.exchange(mti: "0200", request)
        XCTAssertEqual(answer.mti, "0210")
        XCTAssertEqual(answer.fields[39], "00")
        XCTAssertEqual(answer.fields[38]?.count, 6)
        assertEchoes(answer, request)
        XCTAssertNil(answer.fields[43], "DE43 is not echoed")
        XCTAssertEqual(try redis.balances("4000001"), ["FOOD": 50_000 - 10_010, "CASH": 10_000])

        let entry = try XCTUnwrap(try redis.statements().last { $0["type"] == "authorization" })
        XCTAssertEqual(entry["id"], "000000000001")
        XCTAssertEqual(entry["code"], "00")
        XCTAssertEqual(entry["amount"], "10010")
        XCTAssertEqual(entry["debits"], "FOOD:10010")
        XCTAssertEqual(entry["channel"], "iso8583")
        XCTAssertEqual(entry["stan"], "000001")
        XCTAssertEqual(entry["rrn"], "000000000001")
        XCTAssertEqual(entry["terminal"], "TERM0001")
        XCTAssertEqual(entry["merchant_id"], "MERCHANT0000001")
        XCTAssertEqual(entry["merchant"], Self.merchant40)

        // 0100 answers 0110 the same way.
        let authorization = try link.exchange(mti: "0100", Self.purchase(pan: "4000001", cents: 100, stan: 2, rrn: "000000000002"))
        XCTAssertEqual(authorization.mti, "0110")
        XCTAssertEqual(authorization.fields[39], "00")
        try assertBooksBalance()
    }

    func testJSONStatementsCarryNoISOFields() throws {
        try set("123", [("FOOD", 50_000)])
        let client = try serve.connect()
        XCTAssertEqual(try client.request(["id": "j1", "account": "123", "totalAmount": "1.00", "mcc": "5411", "merchant": "PADARIA DO ZE"]).code, "00")
        let entry = try XCTUnwrap(try redis.statements().last)
        XCTAssertNil(entry["channel"])
        XCTAssertNil(entry["stan"])
    }

    func testDeclinedInsufficientFundsUnknownCardAndWrongCurrency() throws {
        try set("4000002", [("FOOD", 1_000), ("CASH", 0)])
        let link = try link()
        let poor = try link.exchange(mti: "0200", Self.purchase(pan: "4000002", cents: 5_000, stan: 10, rrn: "R10"))
        XCTAssertEqual(poor.fields[39], "51")
        XCTAssertNil(poor.fields[38], "no authorization id on a decline")

        let unknown = try link.exchange(mti: "0200", Self.purchase(pan: "4999999", cents: 100, stan: 11, rrn: "R11"))
        XCTAssertEqual(unknown.mti, "0210")
        XCTAssertEqual(unknown.fields[39], "14")
        XCTAssertEqual(unknown.fields[11], "000011")

        let dollars = try link.exchange(mti: "0200", Self.purchase(pan: "4000002", cents: 100, stan: 12, rrn: "R12", currency: "840"))
        XCTAssertEqual(dollars.fields[39], "12")
        let zero = try link.exchange(mti: "0200", Self.purchase(pan: "4000002", cents: 0, stan: 13, rrn: "R13"))
        XCTAssertEqual(zero.fields[39], "13")
        var transfer = Self.purchase(pan: "4000002", cents: 100, stan: 14, rrn: "R14")
        transfer[3] = "400000"
        XCTAssertEqual(try link.exchange(mti: "0200", transfer).fields[39], "12")
        XCTAssertEqual(try redis.balances("4000002"), ["FOOD": 1_000, "CASH": 0])
        try assertBooksBalance()
    }

    func testRepeatIsIdempotent() throws {
        try set("4000003", [("MEAL", 10_000)])
        let link = try link()
        let request = Self.purchase(pan: "4000003", cents: 2_500, stan: 20, rrn: "RPT1", mcc: "5811")
        let first = try link.exchange(mti: "0100", request)
        XCTAssertEqual(first.fields[39], "00")
        var repeated = request
        repeated[11] = "000021"
        let second = try link.exchange(mti: "0101", repeated)
        XCTAssertEqual(second.mti, "0110")
        XCTAssertEqual(second.fields[39], "00")
        XCTAssertEqual(second.fields[38], first.fields[38], "same authorization id")
        XCTAssertEqual(second.fields[11], "000021")
        XCTAssertEqual(try redis.balances("4000003"), ["MEAL": 7_500], "debited once")
        XCTAssertEqual(try redis.statements().filter { $0["type"] == "authorization" }.count, 1)
    }

    func testReversalRestoresBalanceAndItsRepeatIsIdempotent() throws {
        try set("4000004", [("FOOD", 10_000), ("CASH", 0)])
        let link = try link()
        let purchase = Self.purchase(pan: "4000004", cents: 3_000, stan: 30, rrn: "ORIG30")
        XCTAssertEqual(try link.exchange(mti: "0200", purchase).fields[39], "00")
        XCTAssertEqual(try redis.balances("4000004")["FOOD"], 7_000)

        var reversal = purchase
        reversal[11] = "000031"
        reversal[90] = "0200" + "000030" + "1126120000" + String(repeating: "0", count: 22)
        let answer = try link.exchange(mti: "0400", reversal)
        XCTAssertEqual(answer.mti, "0410")
        XCTAssertEqual(answer.fields[39], "00")
        XCTAssertNil(answer.fields[38])
        assertEchoes(answer, reversal)
        XCTAssertEqual(try redis.balances("4000004")["FOOD"], 10_000)
        let entry = try XCTUnwrap(try redis.statements().last { $0["type"] == "reversal" })
        XCTAssertEqual(entry["original"], "ORIG30")
        XCTAssertEqual(entry["credits"], "FOOD:3000")
        XCTAssertEqual(entry["channel"], "iso8583")
        XCTAssertEqual(entry["stan"], "000031")

        var repeated = reversal
        repeated[11] = "000032"
        let again = try link.exchange(mti: "0401", repeated)
        XCTAssertEqual(again.mti, "0410")
        XCTAssertEqual(again.fields[39], "00")
        XCTAssertEqual(try redis.balances("4000004")["FOOD"], 10_000, "credited once")

        // An amount that does not match the original's is refused.
        XCTAssertEqual(try link.exchange(mti: "0200", Self.purchase(pan: "4000004", cents: 1_000, stan: 33, rrn: "ORIG33")).fields[39], "00")
        var wrong = Self.purchase(pan: "4000004", cents: 999, stan: 34, rrn: "ORIG33")
        wrong[90] = nil
        XCTAssertEqual(try link.exchange(mti: "0400", wrong).fields[39], "13")
        // DE90 naming something other than an authorization is a format error.
        var badOriginal = Self.purchase(pan: "4000004", cents: 1_000, stan: 35, rrn: "ORIG33")
        badOriginal[90] = "0800" + String(repeating: "0", count: 38)
        XCTAssertEqual(try link.exchange(mti: "0400", badOriginal).fields[39], "30")
        XCTAssertEqual(try redis.balances("4000004")["FOOD"], 9_000)
        try assertBooksBalance()
    }

    func testReversalBeforeOriginalRefusesTheOriginal() throws {
        try set("4000005", [("FOOD", 10_000)])
        let link = try link()
        let purchase = Self.purchase(pan: "4000005", cents: 2_000, stan: 40, rrn: "LATE40")
        var reversal = purchase
        reversal[11] = "000041"
        XCTAssertEqual(try link.exchange(mti: "0400", reversal).fields[39], "00")
        let late = try link.exchange(mti: "0200", purchase)
        XCTAssertEqual(late.fields[39], "05", "the reversed id is not honoured")
        XCTAssertEqual(try redis.balances("4000005")["FOOD"], 10_000)
        try assertBooksBalance()
    }

    func testBalanceInquiryAnswersDE54() throws {
        // Straight into the hash: a negative balance (D) is not something `set` writes.
        try redis.setBalances("4000006", ["FOOD": 12_345, "MEAL": 0, "CASH": 100_000, "GIFT": -500])
        let link = try link()
        let request: [Int: String] = [2: "4000006", 3: "310000", 7: "1126120000", 11: "000050", 37: "BAL50       ", 41: "TERM0001", 49: "986"]
        let answer = try link.exchange(mti: "0100", request)
        XCTAssertEqual(answer.mti, "0110")
        XCTAssertEqual(answer.fields[39], "00")
        assertEchoes(answer, request)
        let blocks = try XCTUnwrap(answer.fields[54])
        XCTAssertEqual(blocks.count, 80)
        // Categories in name order: CASH, FOOD, GIFT, MEAL.
        XCTAssertEqual(blocks, "0002986C000000100000" + "0102986C000000012345" + "9902986D000000000500" + "0202986C000000000000")
        XCTAssertEqual(try redis.balances("4000006")["FOOD"], 12_345)

        let unknown = try link.exchange(mti: "0200", [2: "4999998", 3: "310000", 11: "000051", 37: "BAL51       "])
        XCTAssertEqual(unknown.mti, "0210")
        XCTAssertEqual(unknown.fields[39], "14")
        XCTAssertNil(unknown.fields[54])
    }

    func testEcho() throws {
        let link = try link()
        let answer = try link.exchange(mti: "0800", [7: "1126120000", 11: "000060", 70: "301"])
        XCTAssertEqual(answer.mti, "0810")
        XCTAssertEqual(answer.fields[39], "00")
        XCTAssertEqual(answer.fields[11], "000060")
        XCTAssertEqual(answer.fields[70], "301")
        XCTAssertEqual(answer.fields[7], "1126120000")
        let signOn = try link.exchange(mti: "0800", [11: "000061", 70: "001"])
        XCTAssertEqual(signOn.fields[39], "12")
    }

    func testTwoHundredInFlightOnOneLinkAnsweredWithMatchingSTANAndRRN() throws {
        let accounts = 20
        try adjust("set", (0..<accounts).map { ("500000\($0)", [("FOOD", 1_000_000)]) })
        let link = try link()
        var expected: [String: String] = [:]  // STAN -> RRN
        var batch: [UInt8] = []
        for index in 0..<200 {
            let stan = String(format: "%06d", index + 1)
            let rrn = String(format: "MANY%08d", index)
            expected[stan] = rrn
            var request = Self.purchase(pan: "500000\(index % accounts)", cents: 100, stan: index + 1, rrn: rrn)
            if index % 10 == 9 { request[3] = "310000"; request[4] = nil; request[18] = nil; request[43] = nil }
            batch += ISOTestCodec.frame(ISOTestCodec.encode(mti: "0200", request))
        }
        try link.sendRaw(batch)
        var seen: Set<String> = []
        for _ in 0..<200 {
            let answer = try link.read()
            let stan = try XCTUnwrap(answer.fields[11])
            XCTAssertEqual(answer.fields[37], expected[stan], "RRN matches STAN \(stan)")
            XCTAssertEqual(answer.fields[39], "00", "STAN \(stan)")
            XCTAssertTrue(seen.insert(stan).inserted, "one answer per STAN")
        }
        XCTAssertEqual(seen.count, 200)
        let debited = try (0..<accounts).map { 1_000_000 - (try redis.balances("500000\($0)")["FOOD"] ?? 0) }.reduce(0, +)
        XCTAssertEqual(debited, 180 * 100)
        try assertBooksBalance()
    }

    /// SIGTERM with messages in flight on several links: every message read
    /// is decided and answered, then the link is closed cleanly (FIN, the
    /// acquirer's later input drained rather than reset), and serve exits 0.
    /// A message sent after the shutdown began is never read: closing with it
    /// unread would reset the link and drop answers not yet read.
    func testSigtermAnswersEveryMessageReadThenClosesTheLinks() throws {
        let accounts = 20
        try adjust("set", (0..<accounts).map { ("700000\($0)", [("FOOD", 10_000_000)]) })
        let links = try (0..<4).map { _ in try link() }
        for (number, link) in links.enumerated() {
            var batch: [UInt8] = []
            for index in 0..<300 {
                let request = Self.purchase(pan: "700000\((number + index) % accounts)", cents: 100, stan: index + 1, rrn: String(format: "SD%02d%08d", number, index))
                batch += ISOTestCodec.frame(ISOTestCodec.encode(mti: "0200", request))
            }
            try link.sendRaw(batch)
        }
        var answered: [String: String] = [:]  // RRN -> DE39
        let first = try links[0].read()
        answered[first.fields[37] ?? ""] = first.fields[39]
        serve.child.terminate(signal: SIGTERM)
        XCTAssertTrue(serve.child.waitForLine(containing: "shutting down"), serve.child.output)
        for (number, link) in links.enumerated() {
            try? link.sendRaw(ISOTestCodec.frame(ISOTestCodec.encode(mti: "0200", Self.purchase(
                pan: "7000000", cents: 100, stan: 999_999, rrn: String(format: "LATE%08d", number)))))
        }
        for link in links {
            while let frame = try link.readFrame() {
                let answer = try ISOTestCodec.decode(frame)
                answered[answer.fields[37] ?? ""] = answer.fields[39]
            }
        }
        XCTAssertEqual(serve.child.waitForExit(), 0, serve.child.output)
        XCTAssertGreaterThan(answered.count, 1)
        let entries = try redis.statements().filter { $0["type"] == "authorization" }
        var decided: [String: String] = [:]
        for entry in entries { decided[entry["id", default: ""]] = entry["code"] }
        XCTAssertEqual(Set(decided.keys), Set(answered.keys), "every message decided was answered, and only those")
        for (rrn, code) in answered {
            XCTAssertEqual(decided[rrn], code, rrn)
        }
        try assertBooksBalance()
    }

    /// Past 1024 requests being decided a link is not read until answers
    /// leave: a message queued behind them is not even seen by Redis.
    func testPastTheInFlightLimitTheLinkIsNotRead() throws {
        try set("6000001", [("FOOD", 1_000_000)])
        try set("6000002", [("FOOD", 1_000_000)])
        try set("6000009", [("FOOD", 1_000)])
        try redis.command("SET", "lock:{6000001}", "held-by-hand")
        try redis.command("SET", "lock:{6000002}", "held-by-hand")
        let link = try ISOLink(port: try XCTUnwrap(serve.iso8583Port), receiveTimeout: 30)
        let held = 2_024
        var batch: [UInt8] = []
        for index in 0..<held {
            let pan = index % 2 == 0 ? "6000001" : "6000002"
            batch += ISOTestCodec.frame(ISOTestCodec.encode(mti: "0200", Self.purchase(pan: pan, cents: 100, stan: index, rrn: "BP\(index)")))
        }
        batch += ISOTestCodec.frame(ISOTestCodec.encode(mti: "0200", Self.purchase(pan: "6000009", cents: 100, stan: 999_999, rrn: "BPFREE")))
        let sent = DispatchSemaphore(value: 0)
        let payload = batch
        DispatchQueue.global().async {
            try? link.sendRaw(payload)
            sent.signal()
        }
        try redis.waitUntilKeyeventSubscribers(1)
        let watchUntil = Date().addingTimeInterval(0.5)
        while Date() < watchUntil {
            XCTAssertEqual(try redis.balances("6000009"), ["FOOD": 1_000], "the message past the limit was read")
            Thread.sleep(forTimeInterval: 0.02)
        }
        try redis.command("DEL", "lock:{6000001}", "lock:{6000002}")
        var codes: [String: Int] = [:]
        for _ in 0...held {
            let answer = try link.read()
            codes[answer.fields[39] ?? "-", default: 0] += 1
        }
        XCTAssertEqual(codes, ["00": held + 1])
        XCTAssertEqual(sent.wait(timeout: .now() + 10), .success)
        XCTAssertEqual(try redis.balances("6000009"), ["FOOD": 900])
    }

    func testMalformedMessagesAreAnswered30OrCloseTheLinkCleanly() throws {
        try set("4000007", [("FOOD", 10_000)])
        let port = try XCTUnwrap(serve.iso8583Port)

        // Truncated field: MTI and STAN readable -> 30, and the link keeps working.
        let link = try link()
        var truncated = ISOTestCodec.encode(mti: "0200", Self.purchase(pan: "4000007", cents: 100, stan: 70, rrn: "T70"))
        truncated.removeLast(10)  // DE49 and part of DE43 missing
        try link.sendRaw(ISOTestCodec.frame(truncated))
        let formatError = try link.read()
        XCTAssertEqual(formatError.mti, "0210")
        XCTAssertEqual(formatError.fields[39], "30")
        XCTAssertEqual(formatError.fields[11], "000070")
        XCTAssertNil(formatError.fields[38])
        // A field that is present but malformed (letters in the amount): 30.
        var letters = Self.purchase(pan: "4000007", cents: 100, stan: 71, rrn: "T71")
        letters[4] = "00000000010A"
        XCTAssertEqual(try link.exchange(mti: "0200", letters).fields[39], "30")
        // A missing mandatory field: 30.
        var noMCC = Self.purchase(pan: "4000007", cents: 100, stan: 72, rrn: "T72")
        noMCC[18] = nil
        XCTAssertEqual(try link.exchange(mti: "0200", noMCC).fields[39], "30")
        // Trailing bytes after the last field: 30.
        try link.sendRaw(ISOTestCodec.frame(ISOTestCodec.encode(mti: "0800", [11: "000073", 70: "301"]) + Array("XYZ".utf8)))
        XCTAssertEqual(try link.read().fields[39], "30")
        XCTAssertEqual(try link.exchange(mti: "0200", Self.purchase(pan: "4000007", cents: 100, stan: 74, rrn: "T74")).fields[39], "00")

        // Bad bitmap: the STAN cannot be found -> the link is closed, nothing crashes.
        let badBitmap = try ISOLink(port: port)
        try badBitmap.sendRaw(ISOTestCodec.frame(Array("0200ZZZZ000000000000".utf8)))
        XCTAssertNil(try badBitmap.readFrame(), "closed")

        // Garbage bytes.
        let garbage = try ISOLink(port: port)
        try garbage.sendRaw([0x00, 0x05, 0xFF, 0x00, 0x13, 0x37, 0x42])
        XCTAssertNil(try garbage.readFrame(), "closed")

        // A length header over the limit (16 KiB): closed without reading on.
        let tooLong = try ISOLink(port: port)
        try tooLong.sendRaw([0xFF, 0xFF] + Array(repeating: 0x30, count: 100))
        XCTAssertNil(try tooLong.readFrame(), "closed")

        // An answer MTI sent as a request: nothing to answer with -> closed.
        let answerMTI = try ISOLink(port: port)
        try answerMTI.send(mti: "0210", [11: "000075", 39: "00"])
        XCTAssertNil(try answerMTI.readFrame(), "closed")

        // The server is still there: a new link works, and so does the first one.
        let next = try ISOLink(port: port)
        XCTAssertEqual(try next.exchange(mti: "0200", Self.purchase(pan: "4000007", cents: 100, stan: 76, rrn: "T76")).fields[39], "00")
        XCTAssertEqual(try link.exchange(mti: "0800", [11: "000077", 70: "301"]).fields[39], "00")
        XCTAssertEqual(try redis.balances("4000007")["FOOD"], 10_000 - 200)
    }

    /// The SLA guarantee through the ISO front: Redis paused, the purchase is
    /// answered 91 within the SLA, and the service's own reversal (journaled
    /// before the answer) makes the books whole once Redis resumes.
    func testRedisPausedPurchaseIsAnswered91InTimeAndReversedByTheService() throws {
        try set("4000009", [("FOOD", 10_000)])
        let fast = try ServeProcess(redis: redis, arguments: ["--sla-ms", "100", "--iso8583-port", "0", "--iso-pan-as-account"])
        let link = try ISOLink(port: try XCTUnwrap(fast.iso8583Port))
        XCTAssertEqual(try link.exchange(mti: "0200", Self.purchase(pan: "4000009", cents: 100, stan: 90, rrn: "WARM90")).fields[39], "00")

        let redisPID = redis.child.process.processIdentifier
        kill(redisPID, SIGSTOP)
        let sentAt = Date()
        let answer: (mti: String, fields: [Int: String])
        do {
            answer = try link.exchange(mti: "0200", Self.purchase(pan: "4000009", cents: 2_000, stan: 91, rrn: "PAUSED91"))
        } catch {
            kill(redisPID, SIGCONT)
            throw error
        }
        let elapsed = Date().timeIntervalSince(sentAt)
        Thread.sleep(forTimeInterval: 0.3)
        kill(redisPID, SIGCONT)
        XCTAssertEqual(answer.mti, "0210")
        XCTAssertEqual(answer.fields[39], "91")
        XCTAssertEqual(answer.fields[11], "000091")
        XCTAssertNil(answer.fields[38])
        XCTAssertLessThan(elapsed, 0.25, "answered within the SLA (100 ms, with slack for a busy machine)")

        // The owed reversal reaches Redis: whatever the paused script did, 20.00 is not kept.
        let deadline = Date().addingTimeInterval(10)
        var reversal: [String: String]?
        while Date() < deadline {
            reversal = try redis.statements().first { $0["type"] == "reversal" && $0["original"] == "PAUSED91" }
            if reversal != nil { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        XCTAssertEqual(reversal?["id"], "timeout/PAUSED91")
        XCTAssertEqual(try redis.balances("4000009")["FOOD"], 10_000 - 100)
        try assertBooksBalance()
    }

    /// An external implementation: pyiso8583's default_ascii spec encodes a
    /// 0200 and decodes the answer (scripts/iso8583_interop.py).
    func testInteroperabilityWithPyiso8583() throws {
        let check = Process()
        check.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        check.arguments = ["python3", "-c", "import iso8583"]
        check.standardOutput = FileHandle.nullDevice
        check.standardError = FileHandle.nullDevice
        do { try check.run() } catch { throw XCTSkip("python3 is not installed") }
        check.waitUntilExit()
        guard check.terminationStatus == 0 else { throw XCTSkip("pyiso8583 is not installed (pip install pyiso8583)") }

        try set("4000008", [("FOOD", 10_000)])
        let script = TestEnvironment.repositoryRoot.appendingPathComponent("scripts/iso8583_interop.py").path
        let child = ChildProcess(name: "python", executable: "/usr/bin/env",
                                 arguments: ["python3", script, "--port", "\(try XCTUnwrap(serve.iso8583Port))", "--pan", "4000008", "--amount", "1234"])
        try child.start()
        guard let status = child.waitForExit(timeout: 30) else {
            child.terminate(signal: SIGKILL)
            throw TestFailure("the interop script did not finish")
        }
        child.waitForLine(containing: "interop ok", timeout: 2)
        XCTAssertEqual(status, 0, child.output)
        XCTAssertTrue(child.output.contains("interop ok"), child.output)
        XCTAssertEqual(try redis.balances("4000008")["FOOD"], 10_000 - 1_234)
    }
}
