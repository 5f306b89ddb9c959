import Foundation
import XCTest

/// Employers' benefit orders: `authorizer order load` against a real Redis
/// with the project's ACL users; each line credited at most once, ever.
final class OrderTests: LedgerTestCase {
    private func write(_ name: String, _ text: String) throws -> String {
        let path = redis.directory.appendingPathComponent(name).path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @discardableResult
    private func load(_ file: String, order: String, _ extra: [String] = [], expectSuccess: Bool = true) throws -> (status: Int32, output: String) {
        try runAuthorizer(["order", "load", file, "--order", order, "--redis", redis.url] + extra, expectSuccess: expectSuccess)
    }

    /// The ledger's credits of an order, by line.
    private func credits(order: String) throws -> [String: [String: String]] {
        var byLine: [String: [String: String]] = [:]
        for entry in try redis.statements() where entry["type"] == "credit" && entry["order"] == order {
            XCTAssertNil(byLine[entry["line"] ?? ""], "line \(entry["line"] ?? "") credited twice")
            byLine[entry["line"] ?? ""] = entry
        }
        return byLine
    }

    func testAFileLoadedTwiceCreditsOnceAndReportsTheFirstResults() throws {
        try adjust("set", [("e1", [("MEAL", 0)]), ("e2", [("FOOD", 1_000)])])
        let file = try write("march.csv", """
            line_id,account,category,amount
            1,e1,MEAL,500.00
            2,e1,FOOD,300.10
            3,e2,FOOD,0.05

            """)
        let results = redis.directory.appendingPathComponent("results.csv").path
        let first = try load(file, order: "acme-2026-03", ["--employer", "acme", "--results", results]).output
        XCTAssertTrue(first.contains("order acme-2026-03: 3 credited, 0 already credited"), first)
        XCTAssertEqual(try redis.balances("e1"), ["MEAL": 50_000, "FOOD": 30_010])
        XCTAssertEqual(try redis.balances("e2"), ["FOOD": 1_005])
        let ledger = try credits(order: "acme-2026-03")
        XCTAssertEqual(ledger["1"]?["credits"], "MEAL:50000")
        XCTAssertEqual(ledger["1"]?["employer"], "acme")
        XCTAssertEqual(ledger["2"]?["amount"], "30010")
        let firstResults = try String(contentsOfFile: results, encoding: .utf8)
        XCTAssertEqual(firstResults.split(separator: "\n").filter { $0.contains(",credited,") }.count, 3, firstResults)

        // Sent again by mistake: nothing doubles, and each line reports its first credit.
        let again = try load(file, order: "acme-2026-03", ["--results", results]).output
        XCTAssertTrue(again.contains("0 credited, 3 already credited"), again)
        XCTAssertEqual(try redis.balances("e1"), ["MEAL": 50_000, "FOOD": 30_010])
        XCTAssertEqual(try credits(order: "acme-2026-03").count, 3)
        let againResults = try String(contentsOfFile: results, encoding: .utf8)
        XCTAssertTrue(againResults.contains("1,e1,already credited,\(ledger["1"]?["_id"] ?? "?")"), againResults)

        // Another order id credits again; the same order with a line changed is refused for that line.
        XCTAssertTrue(try load(file, order: "acme-2026-04").output.contains("3 credited"))
        let changed = try write("march-changed.csv", "1,e1,MEAL,600.00\n2,e1,FOOD,300.10\n")
        let refused = try load(changed, order: "acme-2026-03", expectSuccess: false)
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.output.contains("0 credited, 1 already credited, 1 refused (credited before with another body)"), refused.output)
        XCTAssertEqual(try redis.balances("e1"), ["MEAL": 100_000, "FOOD": 60_020])
        try drain()
        XCTAssertEqual(try audit().status, 0)
    }

    func testABadFileCreditsNothingUnlessSkippedAndNamesEveryBadLine() throws {
        try adjust("set", [("e3", [("MEAL", 0)])])
        let file = try write("bad.csv", """
            a1,e3,MEAL,10.00
            a2,e3,MEAL,5,00
            a3,e3,meal,1.00
            a4,e 3,MEAL,1.00
            a5,e3,MEAL,-1.00
            a6,e3,MEAL,0.00
            a1,e3,MEAL,2.00
            a7,e3,MEAL,100000.01
            a8,e3,MEAL,1.005
            a9,nobody,MEAL,1.00
            """)
        let refused = try load(file, order: "o-bad", expectSuccess: false)
        XCTAssertNotEqual(refused.status, 0)
        for expected in [
            "line 2: expected 4 fields", "line 3: category \"meal\"", "line 4: account \"e 3\"", "line 5:", "line 6:",
            "line 7: line id a1 already on line 1", "line 8:", "line 9:", "nothing credited",
        ] {
            XCTAssertTrue(refused.output.contains(expected), "\(expected) in:\n\(refused.output)")
        }
        XCTAssertEqual(try redis.balances("e3"), ["MEAL": 0], "nothing credited")
        let skipped = try load(file, order: "o-bad", ["--skip-invalid"], expectSuccess: false).output
        XCTAssertTrue(skipped.contains("1 credited, 0 already credited, 1 failed: unknown account, 8 invalid, skipped"), skipped)
        XCTAssertEqual(try redis.balances("e3"), ["MEAL": 1_000])

        let jsonl = try write("order.jsonl", """
            {"line_id": "j1", "account": "e3", "category": "MEAL", "amount": "2.50"}
            {"line_id": "j2", "account": "e3", "category": "MEAL", "amount": 2.5}
            """)
        let json = try load(jsonl, order: "o-json", expectSuccess: false).output
        XCTAssertTrue(json.contains("line 2: amount must be a string"), json)
        XCTAssertTrue(try load(jsonl, order: "o-json", ["--skip-invalid"]).output.contains("1 credited"))
        XCTAssertEqual(try redis.balances("e3"), ["MEAL": 1_250])
    }

    /// A revert (an operational error) debits back at most what is still
    /// unspent of the line's category, once; the line stays credited.
    func testARevertDebitsBackAtMostTheUnspentOnce() throws {
        try adjust("set", [("e5", [("MEAL", 0)])])
        let file = try write("r.csv", "1,e5,MEAL,100.00\n2,e5,MEAL,50.00\n")
        try load(file, order: "o-r")
        let serve = try ServeProcess(redis: redis)
        let client = try serve.connect()
        XCTAssertEqual(try client.request(["id": "spend", "account": "e5", "totalAmount": "120.00", "mcc": "5811", "merchant": "M"]).code, "00")
        func revert(_ line: String, _ reason: String = "duplicate", expectSuccess: Bool = true) throws -> String {
            try runAuthorizer(["order", "revert", "--order", "o-r", "--line", line, "--account", "e5", "--reason", reason, "--by", "ops",
                               "--redis", redis.url], expectSuccess: expectSuccess).output
        }
        XCTAssertTrue(try revert("1").contains("30.00 debited back (balance 0.00)"), "only the 30.00 left of the 150.00")
        XCTAssertTrue(try revert("1", "over-credit").contains("already reverted (30.00 debited back then)"))
        XCTAssertTrue(try revert("2", "wrong-beneficiary").contains("0.00 debited back"), "nothing left to take")
        XCTAssertEqual(try redis.balances("e5"), ["MEAL": 0])
        XCTAssertTrue(try revert("9", expectSuccess: false).contains("not credited on account e5"))
        XCTAssertTrue(try revert("1", "changed-my-mind", expectSuccess: false).contains("changed-my-mind"))
        XCTAssertTrue(try load(file, order: "o-r").output.contains("0 credited, 2 already credited"), "a reverted line stays credited")
        let reverts = try redis.statements().filter { $0["type"] == "revert" }
        XCTAssertEqual(reverts.map { "\($0["line"] ?? "") \($0["debits"] ?? "") \($0["reason"] ?? "") \($0["by"] ?? "")" },
                       ["1 MEAL:3000 duplicate ops", "2  wrong-beneficiary ops"])
        try drain()
        let audited = try audit()
        XCTAssertEqual(audited.status, 0, audited.output)
    }

    /// The loader SIGKILLed half-way through 20,000 lines, then run again:
    /// every line credited exactly once.
    func testALoaderKilledHalfWayAndRunAgainCreditsEveryLineOnce() throws {
        let accounts = 2_000, count = 20_000
        try adjust("set", (0..<accounts).map { ("k\($0)", [("MEAL", 0)]) })
        var text = ""
        for line in 0..<count { text += "\(line),k\(line % accounts),MEAL,\(1 + line % 7).00\n" }
        let file = try write("big.csv", text)
        let loader = ChildProcess(name: "order", executable: TestEnvironment.authorizerBinary,
                                  arguments: ["order", "load", file, "--order", "big", "--redis", redis.url])
        try loader.start()
        try redis.waitUntil(timeout: 60) { (try self.redis.command("XLEN", "statements").int ?? 0) > Int64(accounts + count / 4) }
        loader.terminate(signal: SIGKILL)
        _ = loader.waitForExit(timeout: 10)
        let creditedBefore = try credits(order: "big").count
        XCTAssertGreaterThan(creditedBefore, 0)
        XCTAssertLessThan(creditedBefore, count, "killed before the end")

        let output = try load(file, order: "big").output
        XCTAssertTrue(output.contains("order big: \(count - creditedBefore) credited, \(creditedBefore) already credited"), output)
        XCTAssertEqual(try credits(order: "big").count, count)
        var expected = [Int64](repeating: 0, count: accounts)
        for line in 0..<count { expected[line % accounts] += Int64(1 + line % 7) * 100 }
        for account in [0, 1, 777, accounts - 1] {
            XCTAssertEqual(try redis.balances("k\(account)")["MEAL"], expected[account], "k\(account)")
        }
        try drain()
        XCTAssertEqual(try audit().status, 0)
    }
}
