import Foundation
import XCTest

/// The ledger pipeline end to end: terminal -> Lua -> `statements` stream ->
/// `authorizer replay` -> SQLite, notifications and `authorizer audit`, with
/// real Redis, real `serve`/`replay`/`audit` processes and real SQLite files.
final class ReplayerTests: LedgerTestCase {
    func testTenThousandMixedDecisionsReplayIntoSQLiteAndTheAuditPasses() throws {
        let accounts = (0..<200).map { "a\($0)" }
        let start: [String: Int64] = ["FOOD": 30_000, "MEAL": 20_000, "CASH": 10_000]
        try adjust("set", accounts.map { ($0, start.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }) })
        // The ledger pipeline is checked here, not speed: with the 100 ms SLA a
        // loaded machine answers some of these deep pipelines `07 timeout`
        // (and reverses them), which SLATests and ReversalTests cover.
        let serve = try ServeProcess(redis: redis, arguments: ["--sla-ms", "5000"])

        // 8 terminals x 1,250 lines: mostly known accounts (running out of
        // money, so 00 and 51), some unknown accounts (07), some repeated ids.
        let mccs = ["5411", "5811", "7995", "5812"]
        let connections: [[SentRequest]] = (0..<8).map { connection in
            var lines: [SentRequest] = []
            for index in 0..<1_250 {
                if index >= 100 && index % 50 == 7 {
                    var repeated = lines[index - 100]
                    repeated.answer = nil
                    lines.append(repeated)
                    continue
                }
                let seed = connection * 1_250 + index
                let account = seed % 97 == 13 ? "ghost\(seed % 5)" : accounts[(seed * 7_919) % accounts.count]
                let cents = Int64(100 + (seed * 2_654_435_761 % 5_900))
                lines.append(SentRequest(id: "d\(connection)-\(index)", account: account, cents: cents, mcc: mccs[seed % 4]))
            }
            return lines
        }
        // Operators credit accounts while the terminals run.
        let credits = DispatchQueue(label: "credits")
        let creditsDone = DispatchSemaphore(value: 0)
        let creditAccounts = ["a1", "a2", "a3"]
        let redisURL = redis.url
        credits.async {
            for account in creditAccounts {
                _ = try? runAuthorizer(["account", "credit", "--redis", redisURL, account, "MEAL=12.34"])
            }
            creditsDone.signal()
        }
        let answered = try TerminalLoad.run(port: serve.port, connections: connections).flatMap { $0 }
        XCTAssertEqual(creditsDone.wait(timeout: .now() + 60), .success)
        XCTAssertEqual(answered.count, 10_000)

        // What the terminals saw: one debit per id answered 00; a statement
        // per id answered 00/51 and per 07 other than "unknown account".
        var approvedCents: [String: Int64] = [:]
        var decidedIDs: Set<String> = []
        var approvedIDs: Set<String> = []
        var busy = 0
        var codes: [String: Int] = [:]
        for request in answered {
            let answer = try XCTUnwrap(request.answer)
            codes[answer.code, default: 0] += 1
            switch answer.code {
            case "00":
                if approvedIDs.insert(request.id).inserted { approvedCents[request.account, default: 0] += request.cents }
                decidedIDs.insert(request.id)
            case "51":
                decidedIDs.insert(request.id)
            default:
                if answer.reason != "unknown account" { busy += 1 }
                XCTAssertTrue(answer.reason == "unknown account" || answer.reason == "account busy", answer.reason ?? "")
            }
        }
        XCTAssertGreaterThan(codes["00"] ?? 0, 1_000, "\(codes)")
        XCTAssertGreaterThan(codes["51"] ?? 0, 1_000, "\(codes)")
        XCTAssertGreaterThan(codes["07"] ?? 0, 50, "\(codes)")
        let decisions = decidedIDs.count + busy
        let expectedRows = accounts.count + creditAccounts.count + decisions

        let output = try drain(["--notify", "--notify-maxlen", "1000"])
        XCTAssertTrue(output.contains("replay stopped"), output)

        // Every entry once, nothing else.
        XCTAssertEqual(try streamLength(), expectedRows)
        XCTAssertEqual(try sqliteInt("SELECT COUNT(*) FROM statements"), expectedRows)
        XCTAssertEqual(try sqliteInt("SELECT COUNT(*) FROM statements WHERE type = 'authorization'"), decisions)
        try assertDatabaseMatchesStream()
        XCTAssertEqual(try sqliteInt("SELECT SUM(applied) FROM replay_progress"), expectedRows)
        XCTAssertEqual(try pendingCount(group: "replayer"), 0)

        // Sums per account match what the terminals were told.
        var replayedCents: [String: Int64] = [:]
        for row in try sqlite("SELECT account, SUM(amount_cents) FROM statements WHERE type = 'authorization' AND code = '00' GROUP BY account") {
            let parts = row.split(separator: "|")
            replayedCents[String(parts[0])] = Int64(parts[1])
        }
        XCTAssertEqual(replayedCents, approvedCents)
        // ... and so do the live balances.
        for account in accounts {
            let total = try redis.balances(account).values.reduce(0, +)
            let credited: Int64 = creditAccounts.contains(account) ? 1_234 : 0
            XCTAssertEqual(total, start.values.reduce(0, +) + credited - approvedCents[account, default: 0], account)
        }

        let audit = try audit()
        XCTAssertEqual(audit.status, 0, audit.output)
        XCTAssertTrue(audit.output.contains("audit passed"), audit.output)
        XCTAssertTrue(audit.output.contains("\(expectedRows) statements from"), audit.output)

        // One notification per decision, carrying its statement id.
        var notified = 0
        for account in accounts {
            let statementIDs = Set(try sqlite("SELECT entry_id FROM statements WHERE type = 'authorization' AND account = '\(account)'"))
            let notes = try notifications(account)
            XCTAssertEqual(Set(notes.compactMap { $0["statement"] }), statementIDs, account)
            XCTAssertEqual(notes.count, statementIDs.count, "\(account): exactly one per decision after a clean run")
            notified += notes.count
        }
        XCTAssertEqual(notified, decisions)
    }

    func testKilledMidDrainAndRestartedLeavesEveryEntryExactlyOnce() throws {
        let total = 60_000
        try writeCredits(total, accounts: 50)
        let expected = total + 50
        XCTAssertEqual(try streamLength(), expected)

        let first = try startReplay(["--drain", "--batch", "200", "--consumer", "r1", "--log-level", "debug"])
        XCTAssertTrue(first.waitForLine(containing: "batch committed and acknowledged"), first.output)
        let midway = try eventually { try sqliteInt("SELECT COUNT(*) FROM statements") >= expected / 4 }
        first.terminate(signal: SIGKILL)
        _ = first.waitForExit()
        XCTAssertTrue(midway)
        XCTAssertEqual(first.process.terminationReason, .uncaughtSignal, "replay was still running when killed")
        let before = try sqliteInt("SELECT COUNT(*) FROM statements")
        XCTAssertGreaterThan(before, 0)
        XCTAssertLessThan(before, expected, "the kill must land in the middle of the drain")

        try drain(["--consumer", "r1"])

        XCTAssertEqual(try sqliteInt("SELECT COUNT(*) FROM statements"), expected)
        XCTAssertEqual(try sqliteInt("SELECT COUNT(DISTINCT txn_id) FROM statements"), expected, "no operation twice")
        try assertDatabaseMatchesStream()
        // The progress row is committed with the rows it counts.
        XCTAssertEqual(try sqliteInt("SELECT SUM(applied) FROM replay_progress"), expected)
        XCTAssertEqual(try pendingCount(group: "replayer"), 0)
        let audit = try audit()
        XCTAssertEqual(audit.status, 0, audit.output)
    }

    func testCrashBetweenCommitAndAckIsClaimedByAnotherConsumerAndAppliedOnce() throws {
        try writeCredits(3_000, accounts: 10)
        let expected = 3_010

        // Dies by SIGKILL right after its third commit, before that XACK.
        let doomed = try startReplay(["--drain", "--batch", "100", "--consumer", "doomed", "--kill-after-commits", "3"])
        _ = doomed.waitForExit()
        XCTAssertEqual(doomed.process.terminationReason, .uncaughtSignal, doomed.output)
        XCTAssertEqual(try sqliteInt("SELECT COUNT(*) FROM statements"), 300)
        XCTAssertEqual(try pendingCount(group: "replayer"), 100, "the committed, unacknowledged batch")

        try drain(["--consumer", "heir", "--claim-idle-ms", "200"])

        XCTAssertEqual(try sqliteInt("SELECT COUNT(*) FROM statements"), expected)
        try assertDatabaseMatchesStream()
        XCTAssertEqual(try sqlite("SELECT consumer, applied, duplicates FROM replay_progress ORDER BY consumer"), [
            "doomed|300|0",
            "heir|\(expected - 300)|100",
        ])
        XCTAssertEqual(try pendingCount(group: "replayer"), 0)
        XCTAssertEqual(try audit().status, 0)
    }

    func testTwoConsumersInOneGroupApplyEveryEntryOnceAndStopCleanly() throws {
        try adjust("set", (0..<20).map { ("c\($0)", [("CASH", 0)]) })
        let consumers = try ["c1", "c2"].map { name in
            try startReplay(["--consumer", name, "--batch", "50", "--block-ms", "200"])
        }
        for consumer in consumers {
            XCTAssertTrue(consumer.waitForLine(containing: "consumer ready"), consumer.output)
        }
        try adjust("credit", (0..<20_000).map { ("c\($0 % 20)", [("CASH", 100)]) })
        let expected = 20_020
        XCTAssertTrue(try eventually { try sqliteInt("SELECT COUNT(*) FROM statements") == expected })

        for consumer in consumers { consumer.terminate(signal: SIGTERM) }
        for consumer in consumers {
            XCTAssertEqual(consumer.waitForExit(), 0, consumer.output)
        }

        XCTAssertEqual(try sqliteInt("SELECT COUNT(*) FROM statements"), expected)
        try assertDatabaseMatchesStream()
        let perConsumer = try sqlite("SELECT consumer, COUNT(*) FROM statements GROUP BY consumer ORDER BY consumer")
        XCTAssertEqual(perConsumer.count, 2, "both consumers applied entries: \(perConsumer)")
        XCTAssertEqual(try sqlite("SELECT consumer, applied FROM replay_progress ORDER BY consumer"), perConsumer)
        XCTAssertEqual(try pendingCount(group: "replayer"), 0, "SIGTERM finishes and acknowledges the batch in hand")
        XCTAssertEqual(try audit().status, 0)
    }

    func testANotificationForEachDecisionAndTheStatementCommand() throws {
        try runAuthorizer(["account", "set", "--redis", redis.url, "n1", "MEAL=150.00", "CASH=0"])
        let serve = try ServeProcess(redis: redis)
        let terminal = try serve.connect()
        let padaria = "PADARIA DO ZE               SAO PAULO BR"
        XCTAssertEqual(try terminal.request(["id": "ok", "account": "n1", "totalAmount": "100.10", "mcc": "5811", "merchant": padaria]).code, "00")
        XCTAssertEqual(try terminal.request(["id": "poor", "account": "n1", "totalAmount": "1500.00", "mcc": "5811", "merchant": padaria]).code, "51")
        // Someone else holds the account past the answer deadline: 07, recorded.
        try redis.command("SET", "lock:{n1}", "someone-else", "PX", "5000")
        let busy = try terminal.request(["id": "busy", "account": "n1", "totalAmount": "1.00", "mcc": "5811", "merchant": "UBER EATS"])
        XCTAssertEqual(busy.code, "07")
        XCTAssertEqual(busy.reason, "account busy")
        try redis.command("DEL", "lock:{n1}")
        XCTAssertEqual(try terminal.request(["id": "ghost", "account": "nobody", "totalAmount": "1.00", "mcc": "5811", "merchant": "X"]).code, "07")

        try drain(["--notify"])

        let decisions = try redis.statements().filter { $0["type"] == "authorization" }
        XCTAssertEqual(decisions.map { $0["id", default: ""] }, ["ok", "poor", "busy"])
        let notes = try notifications("n1")
        XCTAssertEqual(notes.map { $0["statement", default: ""] }, decisions.map { $0["_id", default: ""] })
        XCTAssertEqual(notes.map { $0["id", default: ""] }, ["ok", "poor", "busy"])
        XCTAssertEqual(notes.map { $0["text", default: ""] }, [
            "Compra aprovada de R$ 100,10 em PADARIA DO ZE (MEAL)",
            "Compra recusada de R$ 1.500,00 em PADARIA DO ZE: saldo insuficiente",
            "Compra recusada de R$ 1,00 em UBER EATS: transação não autorizada (account busy)",
        ])
        XCTAssertEqual(try redis.command("EXISTS", "notifications:{nobody}").int, 0)

        // At least once: delivered again, a client dedupes by statement id.
        try redis.command("XGROUP", "SETID", "statements", "notifier", "0")
        try drain(["--notify"])
        let again = try notifications("n1")
        XCTAssertEqual(again.count, 6)
        XCTAssertEqual(Set(again.map { $0["statement", default: ""] }), Set(decisions.map { $0["_id", default: ""] }))
        XCTAssertEqual(try sqliteInt("SELECT COUNT(*) FROM statements"), 4, "the replayer group was not rewound")

        let statement = try runAuthorizer(["statement", "n1", "--db", database, "--limit", "3"]).output
        let lines = statement.split(separator: "\n").map(String.init)
        let rows = lines.filter { $0.hasPrefix("20") }
        XCTAssertEqual(rows.count, 3, statement)
        XCTAssertTrue(rows[0].contains("UBER EATS: rejected, account busy"), statement)
        XCTAssertTrue(rows[1].contains("declined, insufficient funds") && rows[1].contains("1500.00"), statement)
        XCTAssertTrue(rows[2].contains("PADARIA DO ZE (MEAL)") && rows[2].contains("-100.10") && rows[2].contains("MEAL 49.90"), statement)
        XCTAssertTrue(statement.contains("3 most recent of 4"), statement)
    }

    func testTrimmingNeverDropsWhatAGroupHasNotAcknowledged() throws {
        try writeCredits(3_000, accounts: 10)
        let all = try streamIDs()
        XCTAssertEqual(all.count, 3_010)
        // A slow consumer group: it has read 1,000 entries and acknowledged the first 600.
        try redis.command("XGROUP", "CREATE", "statements", "laggard", "0")
        try redis.command("XREADGROUP", "GROUP", "laggard", "slow", "COUNT", "1000", "STREAMS", "statements", ">")
        try redis.command(["XACK", "statements", "laggard"] + all.prefix(600))

        try drain(["--trim-maxlen", "0"])

        let kept = try streamIDs()
        XCTAssertLessThan(kept.count, all.count, "acknowledged entries were trimmed")
        XCTAssertEqual(Array(all.suffix(kept.count)), kept, "only the oldest go")
        XCTAssertTrue(kept.contains(all[600]), "the laggard's oldest unacknowledged entry stays")
        XCTAssertGreaterThanOrEqual(kept.count, all.count - 600)
        XCTAssertEqual(try sqliteInt("SELECT COUNT(*) FROM statements"), all.count, "the database keeps everything")

        // Without the laggard, everything acknowledged beyond the cap goes.
        try redis.command("XGROUP", "DESTROY", "statements", "laggard")
        try drain(["--trim-maxlen", "1000"])
        let capped = try streamLength()
        XCTAssertGreaterThanOrEqual(capped, 1_000)
        XCTAssertLessThanOrEqual(capped, 1_100, "whole stream nodes of at most 100 entries")
        XCTAssertEqual(try audit().status, 0, "the audit reads what was trimmed from SQLite")
    }

    func testAuditFailsWhenABalanceChangesOutsideTheLedger() throws {
        try adjust("set", [("t1", [("FOOD", 10_000)]), ("t2", [("MEAL", 5_000)])])
        try adjust("credit", [("t1", [("FOOD", 250)])])
        try drain()
        XCTAssertEqual(try audit().status, 0)

        try redis.command("HINCRBY", "account:{t2}", "MEAL", "1")
        try redis.command("HSET", "account:{t3}", "CASH", "700")
        let tampered = try audit()
        XCTAssertNotEqual(tampered.status, 0)
        XCTAssertTrue(tampered.output.contains("account t2 MEAL: ledger 50.00, redis 50.01"), tampered.output)
        XCTAssertTrue(tampered.output.contains("account t3 CASH: ledger absent, redis 7.00"), tampered.output)
        XCTAssertFalse(tampered.output.contains("account t1"), tampered.output)

        // The next statement records the tampered balance: a break in the books.
        try runAuthorizer(["account", "credit", "--redis", redis.url, "t2", "MEAL=1.00"])
        let broken = try audit()
        XCTAssertNotEqual(broken.status, 0)
        XCTAssertTrue(broken.output.contains("break in the books") && broken.output.contains("account t2 MEAL: recorded balance 51.01, recomputed 51.00"), broken.output)
    }
}
