import AuthorizerCore
import RedisWire
import XCTest

/// L1–L3, unknown accounts, idempotency, pipelining and the ledger, over
/// real TCP to a real `serve` on a real Redis.
final class AuthorizationTests: IntegrationTestCase {
    // Requests for one account are served one at a time; on a loaded machine a
    // deep pipeline can outlast the 100 ms budget and get `07 account busy`.
    // These tests check decisions, not speed (that is `make bench`'s job).
    override var serveArguments: [String] { ["--sla-ms", "5000"] }

    func testL1DebitsTheCategoryOfTheMCC() throws {
        try account("1", ["FOOD": 10_000, "MEAL": 10_000, "CASH": 10_000])
        let client = try serve.connect()
        let food = try client.request(["id": "t1", "account": "1", "totalAmount": 12.34, "mcc": "5411", "merchant": "MERCADO"])
        XCTAssertEqual(food.code, "00")
        XCTAssertEqual(food.id, "t1")
        let meal = try client.request(["id": "t2", "account": "1", "totalAmount": "1.01", "mcc": "5812", "merchant": "RESTAURANTE"])
        XCTAssertEqual(meal.code, "00")
        let other = try client.request(["id": "t3", "account": "1", "totalAmount": 2, "mcc": "7995", "merchant": "LOJA"])
        XCTAssertEqual(other.code, "00")
        XCTAssertEqual(try redis.balances("1"), ["FOOD": 8_766, "MEAL": 9_899, "CASH": 9_800])
    }

    func testL2WholeFallsBackToCashOrDeclines() throws {
        try account("2", ["FOOD": 500, "CASH": 1_000])
        let client = try serve.connect()
        XCTAssertEqual(try client.request(["account": "2", "totalAmount": "8.00", "mcc": "5411", "merchant": "M"]).code, "00")
        XCTAssertEqual(try redis.balances("2"), ["FOOD": 500, "CASH": 200], "the whole amount came from CASH")
        XCTAssertEqual(try client.request(["account": "2", "totalAmount": "6.00", "mcc": "5411", "merchant": "M"]).code, "51")
        XCTAssertEqual(try redis.balances("2"), ["FOOD": 500, "CASH": 200], "a 51 debits nothing")
        // A category the account does not have also falls back.
        XCTAssertEqual(try client.request(["account": "2", "totalAmount": "1.00", "mcc": "5811", "merchant": "M"]).code, "00")
        XCTAssertEqual(try redis.balances("2"), ["FOOD": 500, "CASH": 100])
    }

    func testL2SplitTakesWhatTheCategoryHasAndTheRestFromCash() throws {
        let file = redis.directory.appendingPathComponent("split.yaml")
        try """
        mcc: {"5411": FOOD, "5412": FOOD, "5811": MEAL, "5812": MEAL}
        merchants: {"UBER EATS": "5812"}
        fallback: CASH
        fallback_mode: split
        """.write(to: file, atomically: true, encoding: .utf8)
        try runAuthorizer(["rules", "load", file.path, "--redis", redis.url])
        // The announcement reaches serve asynchronously; it logs when the new rules are in use.
        XCTAssertTrue(serve.child.waitForLine(containing: "rules reloaded", timeout: 10), serve.child.output)
        try account("3", ["MEAL": 700, "CASH": 500])
        let client = try serve.connect()
        XCTAssertEqual(try client.request(["id": "s1", "account": "3", "totalAmount": 10, "mcc": "5811", "merchant": "M"]).code, "00")
        XCTAssertEqual(try redis.balances("3"), ["MEAL": 0, "CASH": 200])
        let entry = try XCTUnwrap(redis.statements().last)
        XCTAssertEqual(entry["debits"], "MEAL:700,CASH:300")
        XCTAssertEqual(try client.request(["account": "3", "totalAmount": "2.01", "mcc": "5811", "merchant": "M"]).code, "51")
        XCTAssertEqual(try redis.balances("3"), ["MEAL": 0, "CASH": 200])
    }

    func testL3MerchantOverridesTheMCC() throws {
        try account("4", ["FOOD": 10_000, "MEAL": 10_000, "CASH": 10_000])
        let client = try serve.connect()
        let cases: [(merchant: String, mccUsed: String, category: String)] = [
            (networkDescriptor(name: "UBER EATS", city: "SAO PAULO", country: "BR"), "5812", "MEAL"),
            ("uber   trip", "4121", "CASH"),
            ("PAG*JoseDaSilva          RIO DE JANEIRBR", "5812", "MEAL"),
            ("PICPAY*BILHETEUNICO", "4111", "CASH"),
        ]
        for (index, example) in cases.enumerated() {
            let answer = try client.request(["id": "m\(index)", "account": "4", "totalAmount": 1, "mcc": "5411", "merchant": example.merchant])
            XCTAssertEqual(answer.code, "00", example.merchant)
            let entry = try XCTUnwrap(redis.statements().last)
            XCTAssertEqual(entry["mcc"], "5411")
            XCTAssertEqual(entry["mcc_used"], example.mccUsed, example.merchant)
            XCTAssertEqual(entry["debits"], "\(example.category):100", example.merchant)
        }
        XCTAssertEqual(try redis.balances("4"), ["FOOD": 10_000, "MEAL": 9_800, "CASH": 9_800])
    }

    /// The card-network layout: name 1–25, city 26–38, country 39–40.
    private func networkDescriptor(name: String, city: String, country: String) -> String {
        let descriptor = name.padding(toLength: 25, withPad: " ", startingAt: 0)
            + city.padding(toLength: 13, withPad: " ", startingAt: 0) + country
        precondition(descriptor.count == 40)
        return descriptor
    }

    /// One script call per authorization (authorize.lua) and nothing else:
    /// an uncontended request does not keep the lock past its script, so
    /// there is no unlock to send. INFO commandstats per request.
    func testEachAuthorizationCostsOneScriptCall() throws {
        try account("cost", ["FOOD": 100_000])
        let client = try serve.connect()
        XCTAssertEqual(try client.request(["account": "cost", "totalAmount": 1, "mcc": "5411", "merchant": "M"]).code, "00")
        try waitUntil { try self.redis.command("EXISTS", "lock:{cost}").int == 0 }
        try redis.command("CONFIG", "RESETSTAT")
        for index in 0..<20 {
            XCTAssertEqual(try client.request(["id": "cost-\(index)", "account": "cost", "totalAmount": 1, "mcc": "5411", "merchant": "M"]).code, "00")
        }
        let stats = try XCTUnwrap(redis.command("INFO", "commandstats").string)
        func calls(_ command: String) -> Int? {
            guard let line = stats.split(separator: "\r\n").first(where: { $0.hasPrefix("cmdstat_\(command):") }),
                  let field = line.split(separator: ",").first?.split(separator: "=").last else { return nil }
            return Int(field)
        }
        XCTAssertEqual(calls("evalsha"), 20, stats)
        XCTAssertNil(calls("set"), "the lock is checked, not taken: \(stats)")
        XCTAssertNil(calls("del"), "and so never released: \(stats)")
        XCTAssertEqual(calls("get"), 20, "one look at the lock each")
        XCTAssertNil(calls("eval"), "scripts are called by SHA only")
        XCTAssertEqual(calls("xadd"), 20, "one statement each, written inside authorize.lua")
    }

    private func waitUntil(_ condition: () throws -> Bool) throws {
        try redis.waitUntil(condition)
    }

    func testUnknownAccountIsRejectedWithoutLedgerEntry() throws {
        let client = try serve.connect()
        let answer = try client.request(["id": "u1", "account": "nobody", "totalAmount": 1, "mcc": "5411", "merchant": "M"])
        XCTAssertEqual(answer.code, "07")
        XCTAssertEqual(answer.reason, "unknown account")
        XCTAssertEqual(try redis.statements().count, 0)
        XCTAssertEqual(try redis.command("EXISTS", "account:{nobody}", "lock:{nobody}", "txn:{nobody}:u1").int, 0)
        XCTAssertEqual(try redis.command("KEYS", "txns:{nobody}:*").array?.count, 0, "no day bucket either")
    }

    func testRepeatedIdReturnsTheFirstDecisionAndDebitsOnce() throws {
        try account("5", ["FOOD": 1_000])
        let client = try serve.connect()
        let request: [String: Any] = ["id": "dup-1", "account": "5", "totalAmount": "6.00", "mcc": "5411", "merchant": "M"]
        XCTAssertEqual(try client.request(request).code, "00")
        let now = try XCTUnwrap(redis.command("TIME").array?.first?.string.flatMap { Int64($0) })
        let bucket = Keys.transactions(account: "5", day: UTCDay(unixSeconds: now))
        let heardFirst = try XCTUnwrap(redis.command("HGET", bucket, "dup-1").string?.split(separator: "|").last.flatMap { Int64($0) })
        XCTAssertEqual(try client.request(request).code, "00")
        XCTAssertEqual(try redis.balances("5"), ["FOOD": 400])
        XCTAssertEqual(try client.request(request).code, "00")
        let heardLast = try XCTUnwrap(redis.command("HGET", bucket, "dup-1").string?.split(separator: "|").last.flatMap { Int64($0) })
        XCTAssertGreaterThan(heardLast, heardFirst, "HEARD: the latest attempt answered the approval")
        XCTAssertEqual(Double(heardFirst / 1_000_000), Double(now), accuracy: 5, "µs of the serve's wall clock")
        // A different id with the same content is a new transaction: now 51.
        var second = request
        second["id"] = "dup-2"
        XCTAssertEqual(try client.request(second).code, "51")
        XCTAssertEqual(try client.request(second).code, "51", "a retry sees the first decision")
        try redis.setBalances("5", ["FOOD": 1_000])
        XCTAssertEqual(try client.request(second).code, "51", "even once the balance would cover it")
        XCTAssertEqual(try redis.statements().count, 2)
        // Remembered in today's bucket (Redis's clock), which outlives its day
        // by the 24 h reversal window plus a day.
        XCTAssertEqual(try redis.command("HLEN", bucket).int, 2, "dup-1 and dup-2, one field each")
        XCTAssertTrue(try redis.command("HGET", bucket, "dup-1").string?.hasPrefix("00|FOOD:600|600|5411|") ?? false)
        XCTAssertEqual(try redis.command("EXISTS", "txn:{5}:dup-1").int, 0, "no one-key record any more")
        let ttl = try XCTUnwrap(redis.command("TTL", bucket).int)
        let endOfDay = (now / 86_400 + 1) * 86_400
        XCTAssertEqual(Double(ttl), Double(endOfDay - now + 2 * 86_400), accuracy: 2)
    }

    func testThousandPipelinedRequestsAreAnsweredInOrder() throws {
        // Spread over 100 accounts: requests for one account are serialized by
        // its lock, so pipelining shows across accounts.
        for index in 0..<100 { try account("p\(index)", ["FOOD": 100_000]) }
        let client = try serve.connect()
        var batch = ""
        for index in 0..<1_000 {
            let account = index % 10 == 9 ? "missing" : "p\(index % 100)"
            batch += Request.line(id: "p\(index)", account: account, amount: "1.00", mcc: "5411") + "\n"
        }
        try client.send(batch)
        var approved = 0
        for index in 0..<1_000 {
            let answer = try client.readResponse()
            XCTAssertEqual(answer.id, "p\(index)")
            XCTAssertEqual(answer.code, index % 10 == 9 ? "07" : "00", answer.reason ?? "")
            if answer.code == "00" { approved += 1 }
        }
        XCTAssertEqual(approved, 900)
        for index in 0..<100 where index % 10 != 9 {
            XCTAssertEqual(try redis.balances("p\(index)")["FOOD"], 100_000 - 10 * 100)
        }
    }

    /// Four connections, four accounts (one unknown), mccs and merchants that
    /// exercise L1, L2 and L3: every code, every debit and every final balance
    /// must be what the independent `DecisionOracle` says, replayed in the
    /// order the ledger shows the decisions were taken.
    func testMixedRunMatchesTheOracle() throws {
        let start: [String: [String: Int64]] = [
            "a": ["FOOD": 5_000, "MEAL": 3_000, "CASH": 2_000],
            "b": ["FOOD": 100, "CASH": 10_000],
            "c": ["MEAL": 99_999],
        ]
        for (id, balances) in start { try account(id, balances) }
        let merchants = ["PADARIA DO ZE", "uber   eats", "UBER TRIP                SAO PAULO    BR", "LOJA"]
        let clients = try (0..<4).map { _ in try serve.connect() }
        var requests: [String: (account: String, cents: Int64, mcc: String, merchant: String)] = [:]
        for round in 0..<60 {
            for (index, client) in clients.enumerated() {
                let account = ["a", "b", "c", "ghost"][(round + index) % 4]
                let mcc = ["5411", "5811", "7995", "5812"][(round * 7 + index) % 4]
                let merchant = merchants[(round * 3 + index) % 4]
                let cents = Int64(100 + (round * 13 + index * 5) % 40 * 100 + (round * 31) % 100)
                // Every seventh request repeats an earlier id: idempotency is part of the model.
                let id = round % 7 == 6 ? "mix-\(round - 1)-\(index)" : "mix-\(round)-\(index)"
                if requests[id] == nil { requests[id] = (account, cents, mcc, merchant) }
                let sent = requests[id] ?? (account, cents, mcc, merchant)
                try client.sendLine(Request.line(id: id, account: sent.account, amount: DecisionOracle.amount(sent.cents), mcc: sent.mcc, merchant: sent.merchant))
            }
        }
        var answers: [String: [String]] = [:]
        for client in clients {
            for _ in 0..<60 {
                let answer = try client.readResponse()
                answers[answer.id ?? "", default: []].append(answer.code)
            }
        }
        XCTAssertEqual(answers.values.map(\.count).reduce(0, +), 240)

        var oracle = DecisionOracle(balances: start)
        var expected: [String: String] = [:]
        let statements = try redis.statements().filter { $0["type"] == "authorization" }
        for entry in statements {
            let id = entry["id", default: ""]
            guard let request = requests[id] else { XCTFail("statement for a request never sent: \(entry)"); continue }
            XCTAssertEqual(entry["account"], request.account, id)
            XCTAssertEqual(entry["amount"], String(request.cents), id)
            let outcome = oracle.decide(id: id, account: request.account, cents: request.cents, mcc: request.mcc, merchant: request.merchant)
            XCTAssertEqual(entry["code"], outcome.code, "\(id): server \(entry) vs oracle \(outcome)")
            XCTAssertEqual(entry["debits"], outcome.debitsField, id)
            expected[id] = outcome.code
        }
        XCTAssertEqual(statements.count, requests.filter { $0.value.account != "ghost" }.count, "one statement per transaction, none for unknown accounts")
        for (id, request) in requests {
            let code = request.account == "ghost" ? "07" : expected[id]
            XCTAssertNotNil(code, "\(id) has no statement")
            for answer in answers[id] ?? [] { XCTAssertEqual(answer, code, id) }
        }
        XCTAssertEqual(Set(answers.keys), Set(requests.keys))
        for (id, balances) in oracle.balances {
            XCTAssertEqual(try redis.balances(id), balances, "account \(id)")
        }
        let codes = Set(expected.values)
        XCTAssertTrue(codes.isSuperset(of: ["00", "51"]), "the run exercises approvals and declines: \(codes)")
    }

    func testNoScriptAfterScriptFlushIsRecoveredInvisibly() throws {
        try account("8", ["FOOD": 1_000])
        let client = try serve.connect()
        XCTAssertEqual(try client.request(["account": "8", "totalAmount": 1, "mcc": "5411", "merchant": "M"]).code, "00")
        let sha = try TestEnvironment.sha1(ofFile: TestEnvironment.repositoryRoot.appendingPathComponent("Lua/authorize.lua"))
        XCTAssertEqual(try redis.command("SCRIPT", "EXISTS", sha).array?.first?.int, 1, "serve loaded authorize.lua")
        try redis.command("SCRIPT", "FLUSH")
        XCTAssertEqual(try redis.command("SCRIPT", "EXISTS", sha).array?.first?.int, 0, "the flush removed it")
        for _ in 0..<3 {
            XCTAssertEqual(try client.request(["account": "8", "totalAmount": 1, "mcc": "5411", "merchant": "M"]).code, "00")
        }
        XCTAssertEqual(try redis.command("SCRIPT", "EXISTS", sha).array?.first?.int, 1, "reloaded after NOSCRIPT")
        XCTAssertEqual(try redis.balances("8"), ["FOOD": 600])
        XCTAssertEqual(try redis.statements().count, 4)
    }

    func testRuleChangedWithTheCLIIsUsedByTheNextRequest() throws {
        // No periodic refresh: only the rules-changed announcement can pass this.
        let serve = try ServeProcess(redis: redis, arguments: serveArguments + ["--rules-refresh-ms", "0"])
        try account("9", ["FOOD": 1_000, "MEAL": 1_000, "CASH": 1_000])
        let client = try serve.connect()
        XCTAssertEqual(try client.request(["account": "9", "totalAmount": 1, "mcc": "5411", "merchant": "M"]).code, "00")
        XCTAssertEqual(try redis.balances("9"), ["FOOD": 900, "MEAL": 1_000, "CASH": 1_000])
        let file = redis.directory.appendingPathComponent("rules.json")
        try #"{"mcc": {"5411": "MEAL"}, "merchants": {}, "fallback": "CASH", "fallback_mode": "whole"}"#
            .write(to: file, atomically: true, encoding: .utf8)
        try runAuthorizer(["rules", "load", file.path, "--redis", redis.url])
        // The announcement is asynchronous: serve logs when it has the new rules.
        XCTAssertTrue(serve.child.waitForLine(containing: "rules reloaded", timeout: 10), serve.child.output)
        XCTAssertEqual(try client.request(["account": "9", "totalAmount": 1, "mcc": "5411", "merchant": "M"]).code, "00")
        XCTAssertEqual(try redis.balances("9"), ["FOOD": 900, "MEAL": 900, "CASH": 1_000])
        let shown = try runAuthorizer(["rules", "show", "--redis", redis.url]).output
        XCTAssertTrue(shown.contains("\"5411\": MEAL"), shown)
    }

    func testTheExampleRulesFileIsTheDefaultRules() throws {
        let defaults = try ["rules:mcc", "rules:merchant", "rules:config"].map { try redis.command("HGETALL", $0) }
        try redis.command("DEL", "rules:mcc", "rules:merchant", "rules:config")
        let example = TestEnvironment.repositoryRoot.appendingPathComponent("rules.example.yaml").path
        try runAuthorizer(["rules", "load", example, "--redis", redis.url])
        let loaded = try ["rules:mcc", "rules:merchant", "rules:config"].map { try redis.command("HGETALL", $0) }
        func pairs(_ reply: RESPValue) -> [String: String] {
            let items = reply.array ?? []
            return Dictionary(uniqueKeysWithValues: stride(from: 0, to: items.count, by: 2).map { (items[$0].string ?? "", items[$0 + 1].string ?? "") })
        }
        XCTAssertEqual(loaded.map(pairs), defaults.map(pairs))
        XCTAssertEqual(pairs(loaded[0]).count, 4)
    }

    func testRuleChangedWithRedisCLIIsUsedWithinTwoSeconds() throws {
        try account("10", ["FOOD": 100_000, "CASH": 100_000])
        try redis.command("HSET", "rules:mcc", "7995", "FOOD")
        let client = try serve.connect()
        let deadline = Date().addingTimeInterval(2.5)
        var usedFood = false
        var attempt = 0
        while Date() < deadline && !usedFood {
            attempt += 1
            XCTAssertEqual(try client.request(["id": "r\(attempt)", "account": "10", "totalAmount": 1, "mcc": "7995", "merchant": "M"]).code, "00")
            usedFood = try redis.statements().last?["category"] == "FOOD"
            if !usedFood { Thread.sleep(forTimeInterval: 0.05) }  // polling: a plain HSET publishes nothing
        }
        XCTAssertTrue(usedFood, "the new mcc rule was not used within 2.5 s")
    }

    func testAccountCommandsWriteStatements() throws {
        try runAuthorizer(["account", "set", "--redis", redis.url, "acme", "FOOD=1205.11", "cash=3"])
        XCTAssertEqual(try redis.balances("acme"), ["FOOD": 120_511, "CASH": 300])
        try runAuthorizer(["account", "credit", "--redis", redis.url, "acme", "FOOD=0.89"])
        XCTAssertEqual(try redis.balances("acme")["FOOD"], 120_600)
        let shown = try runAuthorizer(["account", "show", "--redis", redis.url, "acme"]).output
        XCTAssertTrue(shown.contains("1206.00"), shown)
        let bad = try runAuthorizer(["account", "set", "--redis", redis.url, "acme", "FOOD=1.001"], expectSuccess: false)
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertEqual(try redis.balances("acme")["FOOD"], 120_600)
        let kinds = try redis.statements().map { $0["type", default: ""] }
        XCTAssertEqual(kinds, ["set", "credit"])
        XCTAssertEqual(try redis.statements().last?["balances"], "FOOD:120600")
    }
}
