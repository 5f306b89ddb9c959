import Foundation
import RedisWire
import XCTest

/// The holder is notified: `authorizer webhooks deliver` against a real
/// Redis (ACL users: it runs as `replayer`), a real `serve`, and real HTTP
/// receivers (scripts/webhook-receiver.py, which checks every signature
/// with Python's hmac).
final class WebhookTests: LedgerTestCase {
    private let secret = "whsec-0123456789abcdef"
    private var store: String { redis.directory.appendingPathComponent("webhooks-\(UUID().uuidString.prefix(6)).sqlite").path }

    private func config(_ endpoints: String, retry: String = "", storeCap: Int = 1_000_000) throws -> String {
        try writeWebhookConfig("""
            endpoints:
            \(endpoints)
            retry:
              first_ms: 100
              max_ms: 800
            \(retry)
            store:
              max_events: \(storeCap)
            """, in: redis.directory)
    }

    private func endpoint(_ name: String, url: String, extra: String = "") -> String {
        """
          - name: \(name)
            url: \(url)
            secret_env: HOOK_SECRET
            timeout_ms: 500
        \(extra)
        """
    }

    private func deliverer(config: String, database: String, extra: [String] = []) throws -> WebhookDeliverer {
        try WebhookDeliverer(redisURL: redis.webhooksURL, config: config, database: database, environment: ["HOOK_SECRET": secret], extra: extra)
    }

    /// The ledger's holder-facing entries, as event ids, in ledger order.
    private func expectedEvents() throws -> [(id: String, account: String, type: String)] {
        try redis.statements().compactMap { entry in
            let type: String
            switch (entry["type"], entry["code"]) {
            case ("authorization", "00"): type = "authorization.approved"
            case ("authorization", _): type = "authorization.declined"
            case ("reversal", "00") where !(entry["credits"] ?? "").isEmpty: type = "reversal"
            case ("credit", _): type = "credit"
            default: return nil
            }
            return ("statements/\(entry["_id"] ?? "")", entry["account"] ?? "", type)
        }
    }

    private func authorize(_ client: TerminalClient, id: String, account: String, cents: Int64, mcc: String = "5411") throws -> Response {
        try client.sendLine(Request.line(id: id, account: account, amount: TerminalLoad.amount(cents), mcc: mcc))
        return try client.readResponse()
    }

    func testEveryEventTypeIsDeliveredOnceSignedAndFiltersAreRespected() throws {
        let serve = try ServeProcess(redis: redis)
        try runAuthorizer(["account", "set", "--redis", redis.url, "wa", "FOOD=200.00", "MEAL=50.00"])
        try runAuthorizer(["account", "set", "--redis", redis.url, "wb", "FOOD=10.00"])
        try runAuthorizer(["account", "set", "--redis", redis.url, "wc", "FOOD=10.00"])
        _ = try redis.command("HSET", "account:{wc}", "FOOD", "10.5")  // a 07 the ledger records
        let everything = try WebhookReceiver(secret: secret)
        let filtered = try WebhookReceiver(secret: secret)
        let path = try config(
            endpoint("everything", url: everything.url) + "\n"
                + endpoint("approvals-of-wa", url: filtered.url, extra: "    events: [authorization.approved]\n    accounts: [wa]")
        )
        let deliverer = try deliverer(config: path, database: store)
        let client = try serve.connect()
        XCTAssertEqual(try authorize(client, id: "w1", account: "wa", cents: 10_010).code, "00")
        XCTAssertEqual(try authorize(client, id: "w2", account: "wb", cents: 99_900).code, "51")
        XCTAssertEqual(try authorize(client, id: "w3", account: "wc", cents: 100).code, "07")
        XCTAssertEqual(try client.request(["type": "reversal", "id": "w4", "account": "wa", "original": "w1"]).code, "00")
        XCTAssertEqual(try authorize(client, id: "w5", account: "wb", cents: 500).code, "00")
        try runAuthorizer(["account", "credit", "--redis", redis.url, "wa", "MEAL=25.00"])

        let expected = try expectedEvents()
        XCTAssertEqual(expected.map(\.type), ["authorization.approved", "authorization.declined", "authorization.declined", "reversal", "authorization.approved", "credit"])
        XCTAssertTrue(everything.waitForRecords { Set($0.map(\.eventID)).count >= expected.count }, everything.child.output)
        XCTAssertTrue(filtered.waitForRecords { !$0.isEmpty }, filtered.child.output)
        _ = deliverer.stop()  // nothing more may come
        let received = everything.records
        XCTAssertEqual(received.map(\.eventID).sorted(), expected.map(\.id).sorted(), "each event once")
        for record in received {
            XCTAssertTrue(record.verified, "an independent HMAC verifies the signature: \(record)")
            XCTAssertEqual(record.status, 200)
            XCTAssertEqual(record.type, expected.first { $0.id == record.eventID }?.type)
        }
        let approval = try XCTUnwrap(received.first { $0.type == "authorization.approved" && $0.account == "wa" }?.body)
        XCTAssertEqual(approval["amount_cents"] as? Int, 10_010)
        XCTAssertEqual(approval["text"] as? String, "Compra aprovada de R$ 100,10 em PADARIA DO ZE (FOOD)")
        XCTAssertEqual(approval["balances_after"] as? [String: Int], ["FOOD": 9_990])
        XCTAssertEqual(filtered.records.map(\.eventID), [expected[0].id], "only wa's approval")
        XCTAssertTrue(filtered.records.allSatisfy(\.verified))
    }

    /// 500s, then timeouts, then a receiver that is gone (connections
    /// refused), then back: everything delivered, in ledger order per
    /// account, none lost; the retries of one event back off.
    func testAFailingReceiverGetsEverythingInOrderOnceItRecovers() throws {
        var receiver = try WebhookReceiver(secret: secret, mode: ["--mode", "fail", "--fail-status", "500"])
        let port = receiver.port
        let path = try config(endpoint("app", url: receiver.url, extra: "    max_in_flight: 4"))
        let deliverer = try deliverer(config: path, database: store, extra: ["--log-level", "debug"])
        let accounts = ["oa", "ob", "oc"]
        try adjust("set", accounts.map { ($0, [("CASH", 0)]) })
        try adjust("credit", (0..<30).map { (accounts[$0 % 3], [("CASH", Int64(100 + $0))]) })
        let expected = try expectedEvents()
        XCTAssertEqual(expected.count, 30)

        // The first event of each account is retried with a growing back-off.
        XCTAssertTrue(receiver.waitForRecords { records in
            accounts.allSatisfy { account in records.filter { $0.account == account && $0.status == 500 }.count >= 5 }
        }, receiver.child.output)
        let attempts = receiver.records.filter { $0.eventID == expected[0].id }.map(\.receivedMilliseconds)
        XCTAssertTrue(receiver.records.allSatisfy { $0.status == 500 && $0.verified })
        XCTAssertEqual(Set(receiver.records.map(\.eventID)).count, 3, "one event per account in flight, the rest wait behind it")
        let gaps: [Int64] = zip(attempts.dropFirst(), attempts).map { later, earlier in later - earlier }
        for (index, gap) in gaps.prefix(4).enumerated() {
            let full: Int64 = min(Int64(100) << Int64(index), 800)
            XCTAssertGreaterThanOrEqual(gap, full / 2 - 5, "attempt \(index + 2) waited at least half of \(full) ms: \(gaps)")
            XCTAssertLessThanOrEqual(gap, full + 400, "and not much more than \(full) ms: \(gaps)")
        }
        // Timeouts: the receiver holds every request past timeout_ms.
        try receiver.control(["mode": "hang", "seconds": 2])
        XCTAssertTrue(receiver.waitForRecords { $0.contains { $0.status == 200 && !$0.duplicate } }, "a request held past the timeout")
        // Gone: connections refused.
        let failuresBefore = deliverer.child.outputLines.filter { $0.contains("delivery failed") }.count
        receiver.stop()
        XCTAssertTrue(deliverer.child.waitForOutput { $0.filter { $0.contains("delivery failed") }.count >= failuresBefore + 3 }, "refused while it is gone")
        receiver = try WebhookReceiver(secret: secret, port: port)
        XCTAssertTrue(receiver.waitForRecords(timeout: 60) { Set($0.filter { $0.status == 200 }.map(\.eventID)).count == 30 }, receiver.child.output)
        let delivered = receiver.records
        for account in accounts {
            let ledgerOrder = expected.filter { $0.account == account }.map(\.id)
            let arrivals = delivered.filter { $0.account == account }.map(\.eventID)
            var firsts: [String] = []
            for id in arrivals where !firsts.contains(id) { firsts.append(id) }
            XCTAssertEqual(firsts, ledgerOrder, "account \(account): delivered in ledger order")
            // Re-sent only what was in flight: never an earlier event after a later one.
            for (earlier, later) in zip(arrivals, arrivals.dropFirst()) {
                XCTAssertLessThanOrEqual(ledgerOrder.firstIndex(of: earlier) ?? -1, ledgerOrder.firstIndex(of: later) ?? -1, "\(account): \(arrivals)")
            }
        }
        XCTAssertTrue(delivered.allSatisfy(\.verified))
        _ = deliverer.stop()
    }

    /// One account whose events the receiver keeps refusing holds back only
    /// its own later events: the other accounts' are delivered meanwhile.
    func testAFailingAccountHoldsBackOnlyItsOwnEvents() throws {
        let receiver = try WebhookReceiver(secret: secret)
        try receiver.control(["mode": "fail-accounts", "accounts": ["hb-bad"], "status": 503])
        let deliverer = try deliverer(config: try config(endpoint("app", url: receiver.url, extra: "    max_in_flight: 2")), database: store)
        try adjust("set", [("hb-bad", [("CASH", 0)]), ("hb-good", [("CASH", 0)])])
        try adjust("credit", (0..<20).map { ($0 % 2 == 0 ? "hb-bad" : "hb-good", [("CASH", Int64(100 + $0))]) })
        let expected = try expectedEvents()
        let good = expected.filter { $0.account == "hb-good" }.map(\.id)
        let bad = expected.filter { $0.account == "hb-bad" }.map(\.id)
        XCTAssertTrue(receiver.waitForRecords { records in
            good.allSatisfy { id in records.contains { $0.eventID == id && $0.status == 200 } }
                && records.filter { $0.account == "hb-bad" }.count >= 3
        }, receiver.child.output)
        let held = receiver.records.filter { $0.account == "hb-bad" }
        XCTAssertEqual(Set(held.map(\.eventID)), [bad[0]], "only its first event is tried, again and again")
        XCTAssertTrue(held.allSatisfy { $0.status == 503 })
        XCTAssertEqual(receiver.records.filter { $0.account == "hb-good" && $0.status == 200 }.map(\.eventID), good, "the other account in ledger order")
        try receiver.control(["mode": "ok"])
        XCTAssertTrue(receiver.waitForRecords { records in bad.allSatisfy { id in records.contains { $0.eventID == id && $0.status == 200 } } })
        XCTAssertEqual(receiver.records.filter { $0.account == "hb-bad" && $0.status == 200 }.map(\.eventID), bad)
        _ = deliverer.stop()
    }

    /// A receiver down past the age limit: the events become dead letters;
    /// `webhooks resend` delivers them once it is back.
    func testEventsPastTheAgeLimitAreDeadLettersThatResendDelivers() throws {
        let receiver = try WebhookReceiver(secret: secret, mode: ["--mode", "fail", "--fail-status", "503"])
        let database = store
        let path = try config(endpoint("app", url: receiver.url), retry: "  max_age_seconds: 1")
        let deliverer = try deliverer(config: path, database: database)
        try adjust("set", [("da", [("CASH", 0)])])
        try adjust("credit", (0..<5).map { _ in ("da", [("CASH", 100)]) })
        XCTAssertTrue(deliverer.child.waitForOutput { $0.filter { $0.contains("event given up on") }.count == 5 }, deliverer.child.output)
        let status = try runAuthorizer(["webhooks", "status", "--db", database]).output
        XCTAssertTrue(status.contains("app"), status)
        let row = try XCTUnwrap(status.split(separator: "\n").first { $0.hasPrefix("app") }).split(separator: " ")
        XCTAssertEqual(row[1], "0", "backlog: \(status)")
        XCTAssertEqual(row[3], "5", "dead letters: \(status)")

        try receiver.control(["mode": "ok"])
        let resent = try runAuthorizer(["webhooks", "resend", "--db", database, "--account", "da"]).output
        XCTAssertTrue(resent.contains("5 dead letters back in the outbox"), resent)
        XCTAssertTrue(receiver.waitForRecords { Set($0.filter { $0.status == 200 }.map(\.eventID)).count == 5 }, receiver.child.output)
        let expected = try expectedEvents().map(\.id)
        XCTAssertEqual(receiver.records.filter { $0.status == 200 }.map(\.eventID), expected, "in ledger order")
        // Outcomes are recorded every 100 ms.
        XCTAssertTrue(try eventually(timeout: 10) { try runAuthorizer(["webhooks", "status", "--db", database]).output.contains("nothing stored") })
        _ = deliverer.stop()
    }

    /// SIGKILL with deliveries in flight: after a restart every event is
    /// delivered, and the only duplicates are events that were in flight.
    func testADelivererKilledMidBatchRedeliversOnlyWhatWasInFlight() throws {
        let receiver = try WebhookReceiver(secret: secret, mode: ["--mode", "hang", "--hang-seconds", "2"])
        let database = store
        let path = try config(endpoint("app", url: receiver.url, extra: "    max_in_flight: 4").replacingOccurrences(of: "timeout_ms: 500", with: "timeout_ms: 10000"))
        var deliverer = try deliverer(config: path, database: database)
        let accounts = (0..<8).map { "k\($0)" }
        try adjust("set", accounts.map { ($0, [("CASH", 0)]) })
        try adjust("credit", (0..<40).map { (accounts[$0 % 8], [("CASH", 100)]) })
        // The first four answered after 2 s; the next four are then in flight.
        XCTAssertTrue(receiver.waitForRecords { $0.count >= 4 }, receiver.child.output)
        _ = deliverer.stop(signal: SIGKILL)
        let seenBeforeRestart = Set(receiver.records.map(\.eventID))
        try receiver.control(["mode": "ok"])
        deliverer = try self.deliverer(config: path, database: database)
        XCTAssertTrue(receiver.waitForRecords(timeout: 60) { Set($0.filter { $0.status == 200 }.map(\.eventID)).count == 40 }, receiver.child.output)
        let duplicates = receiver.records.filter(\.duplicate).map(\.eventID)
        XCTAssertLessThanOrEqual(duplicates.count, 8, "at most the deliveries in flight at the kill: \(duplicates)")
        for id in duplicates {
            XCTAssertTrue(seenBeforeRestart.contains(id) || receiver.records.filter { $0.eventID == id }.count >= 2, id)
        }
        XCTAssertEqual(Set(receiver.records.map(\.eventID)), Set(try expectedEvents().map(\.id)), "every event, same event ids")
        _ = deliverer.stop()
    }

    /// An endpoint that refuses every connection: the ledger entries are
    /// acknowledged as soon as their events are stored, so the replayer
    /// trims the stream; past the store's cap, events become dead letters.
    func testADeadEndpointNeitherPinsTheLedgerNorGrowsTheStorePastItsCap() throws {
        let closedPort = try TestEnvironment.freePort()
        let database = store
        let path = try config(endpoint("gone", url: "http://127.0.0.1:\(closedPort)/hooks"), storeCap: 300)
        let deliverer = try deliverer(config: path, database: database)
        try writeCredits(1_000, accounts: 50)
        XCTAssertTrue(deliverer.child.waitForOutput(timeout: 60) { $0.contains { $0.contains("retry store full") } }, deliverer.child.output)
        XCTAssertTrue(try eventually { try self.pendingCount(group: "webhooks") == 0 && self.groupLag("webhooks") == 0 })
        XCTAssertEqual(try streamLength(), 1_050)
        try drain(["--trim-maxlen", "0"])
        XCTAssertLessThanOrEqual(try streamLength(), 200, "trimmed although the endpoint never answered")
        let status = try runAuthorizer(["webhooks", "status", "--db", database]).output
        let row = try XCTUnwrap(status.split(separator: "\n").first { $0.hasPrefix("gone") }).split(separator: " ")
        XCTAssertEqual(row[1], "300", "the store holds its cap: \(status)")
        XCTAssertEqual(row[3], "700", "the rest are dead letters, not lost: \(status)")
        _ = deliverer.stop()
    }

    private func groupLag(_ group: String) throws -> Int {
        let groups = try redis.command("XINFO", "GROUPS", "statements").array ?? []
        for item in groups {
            let fields = item.array ?? []
            var info: [String: RESPValueText] = [:]
            var index = 0
            while index + 1 < fields.count {
                info[fields[index].string ?? ""] = RESPValueText(fields[index + 1])
                index += 2
            }
            if info["name"]?.text == group { return Int(info["lag"]?.text ?? "") ?? -1 }
        }
        return -1
    }
}

/// A reply field as text (XINFO mixes strings and integers).
struct RESPValueText {
    let text: String?
    init(_ value: RESPValue) {
        text = value.string ?? value.int.map { String($0) }
    }
}
