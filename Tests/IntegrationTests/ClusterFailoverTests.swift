import AuthorizerCore
import Foundation
import MetricsScrape
import NIOCore
import NIOPosix
import RedisWire
import XCTest

/// A master SIGKILLed under load, `serve --replica-acks 1`: its replica is
/// promoted, requests for its slots are refused fast during the gap and
/// approved again afterwards without restarting serve, and the books are
/// exact: every `00` answered is in its account's balance and its slot
/// stream, and every other answer left no debit. A replayer running through
/// the failover (no restart) takes every entry of every slot stream exactly
/// once, every `00` among them, and the audit passes.
final class ClusterFailoverTests: XCTestCase {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    override func tearDown() {
        try? group.syncShutdownGracefully()
    }

    private final class Terminal: @unchecked Sendable {
        let lock = NSLock()
        var answers: [(id: String, account: String, cents: Int64, code: String, reason: String?, at: Date)] = []
        var failure: String?
    }

    func testMasterKilledUnderLoadWithReplicaAcks() throws {
        let cluster = try RedisCluster(name: "failover", nodeTimeoutMs: 1_000)
        try runAuthorizer(["rules", "init", "--redis", cluster.seeds])
        let serve = try ServeProcess(url: cluster.seeds, stateParent: cluster.users, arguments: ["--replica-acks", "1", "--metrics-port", "0", "--sla-ms", "2000"])
        let masters = try cluster.masters()
        let victim = masters[0]
        let victimSlots = try cluster.ownedSlots(victim)
        func onVictim(_ id: String) -> Bool { victimSlots.contains { $0.contains(HashSlot.of(key: Keys.account(id))) } }
        let accounts = (0..<60).map { "fo\($0)" }
        XCTAssertTrue(accounts.contains(where: onVictim) && accounts.contains { !onVictim($0) })
        let start: Int64 = 1_000_000
        for id in accounts {
            try runAuthorizer(["account", "set", "--redis", cluster.seeds, id, "FOOD=10000.00"])
        }

        // Six terminals, each one request at a time, until told to stop.
        let stop = NIOLockedBox(false)
        let terminals = (0..<6).map { _ in Terminal() }
        var threads: [Thread] = []
        for (index, terminal) in terminals.enumerated() {
            let port = serve.port
            let thread = Thread {
                do {
                    let client = try TerminalClient(port: port, receiveTimeout: 5)
                    var sequence = 0
                    while !stop.value {
                        let account = accounts[(index * 7 + sequence) % accounts.count]
                        let id = "fo-\(index)-\(sequence)"
                        let cents = Int64(100 + sequence % 5)
                        let answer = try client.request(["id": id, "account": account, "totalAmount": "\(cents / 100).0\(cents % 100)", "mcc": "5411", "merchant": "M"])
                        terminal.lock.lock()
                        terminal.answers.append((id, account, cents, answer.code, answer.reason, Date()))
                        terminal.lock.unlock()
                        sequence += 1
                    }
                } catch {
                    terminal.lock.lock()
                    terminal.failure = "\(error)"
                    terminal.lock.unlock()
                }
            }
            threads.append(thread)
            thread.start()
        }
        func answers() -> [(id: String, account: String, cents: Int64, code: String, reason: String?, at: Date)] {
            terminals.flatMap { terminal in
                terminal.lock.lock()
                defer { terminal.lock.unlock() }
                return terminal.answers
            }
        }
        try victim.waitUntil(timeout: 20) { answers().filter { $0.code == "00" && onVictim($0.account) }.count > 50 }

        // A replayer runs through the failover (its own group and database),
        // draining the slot streams while their master dies.
        let liveDatabase = cluster.users.appendingPathComponent("live.sqlite").path
        let liveReplay = ChildProcess(name: "replay", executable: TestEnvironment.authorizerBinary, arguments: [
            "replay", "--redis", cluster.nodes.map(\.replayerURL).joined(separator: ","), "--db", liveDatabase,
            "--group", "live", "--batch", "50", "--sweep-ms", "1000",
        ])
        try liveReplay.start()
        defer { if liveReplay.process.isRunning { liveReplay.terminate(signal: SIGKILL) } }
        XCTAssertTrue(liveReplay.waitForLine(containing: "consumer ready", timeout: 30), liveReplay.output)
        try victim.waitUntil(timeout: 30) { (try? SQLiteShell.int(liveDatabase, "SELECT COUNT(*) FROM statements")) ?? 0 > 0 }

        // The kill.
        let killedAt = Date()
        victim.kill()
        // The replica is promoted (cluster-node-timeout 1 s) ...
        try victim.waitUntil(timeout: 30) {
            let owner = try? cluster.master(ofSlot: victimSlots[0].lowerBound)
            return owner != nil && owner !== victim
        }
        let promotedAt = Date()
        print("replica promoted \(Int(promotedAt.timeIntervalSince(killedAt) * 1000)) ms after the SIGKILL")
        // ... but with --replica-acks 1 it cannot answer 00 while it has no
        // replica of its own: the killed node comes back (as a supervisor
        // would restart it) and rejoins as that replica.
        try victim.restart()
        try cluster.waitUntilHealthy()
        var recoveredAt: Date?
        let deadline = Date().addingTimeInterval(30)
        while recoveredAt == nil && Date() < deadline {
            recoveredAt = answers().filter { $0.at > killedAt.addingTimeInterval(0.05) && $0.code == "00" && onVictim($0.account) }.map(\.at).min()
            if recoveredAt == nil { Thread.sleep(forTimeInterval: 0.05) }
        }
        let recovered = try XCTUnwrap(recoveredAt, "no approval for the dead master's accounts within 30 s")
        let gap = recovered.timeIntervalSince(killedAt)
        print("failover gap: \(Int(gap * 1000)) ms from SIGKILL to the first approval for that master's accounts (promotion, then the old master back as its replica)")
        // A little more traffic on the new master, then stop.
        let countAfter = answers().count
        try victim.waitUntil(timeout: 20) { answers().count > countAfter + 200 }
        stop.value = true
        for terminal in terminals {
            terminal.lock.lock()
            XCTAssertNil(terminal.failure, "a terminal failed: \(terminal.failure ?? "")")
            terminal.lock.unlock()
        }
        while threads.contains(where: { !$0.isFinished }) { Thread.sleep(forTimeInterval: 0.01) }

        let all = answers()
        let duringGap = all.filter { $0.at > killedAt.addingTimeInterval(0.05) && $0.at < recovered && onVictim($0.account) }
        XCTAssertTrue(duringGap.allSatisfy { $0.code == "07" }, "during the gap: \(Set(duringGap.map(\.code)))")
        let others = all.filter { !onVictim($0.account) && $0.code != "00" }
        XCTAssertTrue(others.isEmpty, "the other masters' accounts were disturbed: \(Dictionary(grouping: others, by: { "\($0.reason ?? "") \($0.at > killedAt)" }).mapValues(\.count))")

        // The reversals owed for answers whose script may have run are applied.
        let metricsPort = try XCTUnwrap(serve.metricsPort)
        try victim.waitUntil(timeout: 30) {
            guard let url = try? MetricsURL("http://127.0.0.1:\(metricsPort)/metrics"),
                  let text = try? MetricsScraper.get(url, on: self.group.next()).wait() else { return false }
            return PrometheusSample(text: text).sum("authorizer_pending_reversals") == 0
        }
        try cluster.waitUntilHealthy()

        // The books, account by account: balance = start - the amounts answered 00.
        let router = Redis(target: .cluster(seeds: try cluster.nodes.filter(\.isRunning).map { try RedisEndpoint(url: $0.adminURL) }), eventLoop: group.next())
        try router.connect().wait()
        defer { router.close() }
        for id in accounts {
            let approved = all.filter { $0.account == id && $0.code == "00" }
            let spent = approved.map(\.cents).reduce(0, +)
            let reply = try router.send(RedisCommand("HGET", Keys.account(id), "FOOD"), slot: HashSlot.of(key: Keys.account(id))).wait()
            XCTAssertEqual(reply.int, start - spent, "account \(id)\(onVictim(id) ? " (on the killed master)" : "")")
            let stream = RedisCluster.streamKey(id)
            let entries = try router.send(RedisCommand("XRANGE", stream, "-", "+"), slot: HashSlot.of(key: stream)).wait().array ?? []
            let recorded = Set(entries.compactMap { entry -> String? in
                guard let fields = entry.array?.last?.array else { return nil }
                var map: [String: String] = [:]
                var index = 0
                while index + 1 < fields.count { map[fields[index].string ?? ""] = fields[index + 1].string ?? ""; index += 2 }
                return map["code"] == "00" && map["type"] == "authorization" && map["account"] == id ? map["id"] : nil
            })
            for answer in approved {
                XCTAssertTrue(recorded.contains(answer.id), "\(answer.id) answered 00 has no statement")
            }
        }

        // The replayer that ran through the failover, without a restart,
        // takes every entry of every slot stream exactly once, every 00 among them.
        let live = cluster.nodes.filter(\.isRunning)
        var inRedis: Set<String> = []
        for master in try cluster.masters() {
            for stream in try cluster.streams(on: master) {
                let ids = (try master.command("XRANGE", stream, "-", "+").array ?? []).compactMap { $0.array?.first?.string }
                inRedis.formUnion(ids.map { "\(stream) \($0)" })
            }
        }
        try victim.waitUntil(timeout: 60) {
            (try? SQLiteShell.int(liveDatabase, "SELECT COUNT(*) FROM statements")) ?? 0 >= inRedis.count
        }
        liveReplay.terminate(signal: SIGTERM)
        XCTAssertEqual(liveReplay.waitForExit(timeout: 30), 0, liveReplay.output)
        let liveRows = try SQLiteShell.rows(liveDatabase, "SELECT stream || ' ' || entry_id FROM statements")
        XCTAssertEqual(liveRows.count, Set(liveRows).count, "no entry twice")
        XCTAssertEqual(Set(liveRows), inRedis, "every entry of every slot stream, and nothing else")
        let replayedApprovals = try SQLiteShell.rows(liveDatabase, "SELECT txn_id FROM statements WHERE type = 'authorization' AND code = '00'")
        XCTAssertEqual(replayedApprovals.count, Set(replayedApprovals).count, "no approval twice")
        let approvedIDs = Set(all.filter { $0.code == "00" }.map(\.id))
        XCTAssertTrue(approvedIDs.isSubset(of: Set(replayedApprovals)), "approvals missing from SQLite: \(approvedIDs.subtracting(replayedApprovals).sorted().prefix(10))")
        let liveAudit = ChildProcess(name: "audit", executable: TestEnvironment.authorizerBinary, arguments: [
            "audit", "--redis", live.map(\.operatorURL).joined(separator: ","), "--db", liveDatabase, "--group", "live",
        ])
        try liveAudit.start()
        XCTAssertEqual(liveAudit.waitForExit(timeout: 120), 0, liveAudit.output)

        // The ledger of every slot stream replays into SQLite and the audit passes.
        let database = cluster.users.appendingPathComponent("failover.sqlite").path
        let replay = ChildProcess(name: "replay", executable: TestEnvironment.authorizerBinary, arguments: [
            "replay", "--drain", "--redis", live.map(\.replayerURL).joined(separator: ","), "--db", database,
        ])
        try replay.start()
        XCTAssertEqual(replay.waitForExit(timeout: 120), 0, replay.output)
        let audit = ChildProcess(name: "audit", executable: TestEnvironment.authorizerBinary, arguments: [
            "audit", "--redis", live.map(\.operatorURL).joined(separator: ","), "--db", database,
        ])
        try audit.start()
        XCTAssertEqual(audit.waitForExit(timeout: 120), 0, audit.output)
    }
}
