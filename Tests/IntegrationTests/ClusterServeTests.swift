import AuthorizerCore
import Foundation
import Ledger
import NIOCore
import NIOPosix
import RedisWire
import XCTest

/// `serve` on a real Redis Cluster of three masters (with replicas): the
/// same decisions as on one Redis, each in the ledger stream of its
/// account's slot on the master of that slot, lock waits woken by the
/// keyevents of the master that owns the lock, rules versioned, and a live
/// slot migration under load that terminals never notice.
///
/// One cluster and one serve for the whole class (six redis-servers cost
/// seconds to start); each test uses accounts of its own.
final class ClusterServeTests: XCTestCase {
    nonisolated(unsafe) static var cluster: RedisCluster?
    nonisolated(unsafe) static var serve: ServeProcess?
    nonisolated(unsafe) static var setUpError: String?
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    override class func setUp() {
        super.setUp()
        do {
            let cluster = try RedisCluster(name: "serve")
            try runAuthorizer(["rules", "init", "--redis", cluster.seeds])
            // A long SLA: these tests check who gets the money and where it is recorded.
            let keyFile = cluster.users.appendingPathComponent("pan.key").path
            FileManager.default.createFile(atPath: keyFile, contents: Data("a-test-pan-index-key-0123456789".utf8), attributes: [.posixPermissions: 0o600])
            let serve = try ServeProcess(url: cluster.seeds, stateParent: cluster.users, arguments: ["--sla-ms", "5000", "--pan-key-file", keyFile])
            try waitForApprovals(serve, cluster)
            self.serve = serve
            self.cluster = cluster
        } catch {
            setUpError = "\(error)"
        }
    }

    /// serve waits for a replica's acknowledgement before it approves (its
    /// default --replica-acks on a cluster with replicas), and a replica just
    /// synced acknowledges on its own only once a second: the tests start
    /// once every master approves.
    static func waitForApprovals(_ serve: ServeProcess, _ cluster: RedisCluster) throws {
        let accounts = (0..<30).map { "warm\($0)" }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        try cluster.setBalances(Dictionary(uniqueKeysWithValues: accounts.map { ($0, ["FOOD": Int64(1_000_000)]) }), on: group.next())
        let client = try serve.connect()
        var waiting = Set(accounts)
        let deadline = Date().addingTimeInterval(30)
        var attempt = 0
        while !waiting.isEmpty {
            guard Date() < deadline else { throw TestFailure("no approval on accounts \(waiting.sorted()) within 30 s") }
            for account in waiting.sorted() {
                attempt += 1
                let answer = try client.request(["id": "warm-\(attempt)", "account": account, "totalAmount": "0.01", "mcc": "5411", "merchant": "M"])
                if answer.code == "00" { waiting.remove(account) }
            }
        }
    }

    override class func tearDown() {
        serve = nil
        cluster = nil
        super.tearDown()
    }

    override func tearDown() {
        try? group.syncShutdownGracefully()
    }

    private func context() throws -> (RedisCluster, ServeProcess) {
        guard let cluster = Self.cluster, let serve = Self.serve else {
            throw TestFailure("the cluster or serve did not start: \(Self.setUpError ?? "?")")
        }
        return (cluster, serve)
    }

    private func setBalances(_ accounts: [String: [String: Int64]], on cluster: RedisCluster) throws {
        try cluster.setBalances(accounts, on: group.next())
    }

    static func streamKey(_ account: String) -> String { RedisCluster.streamKey(account) }

    /// The entries of an account's slot stream, read from the master of its slot.
    private func entries(of account: String, in cluster: RedisCluster) throws -> [[String: String]] {
        let key = Self.streamKey(account)
        guard let node = try cluster.master(ofSlot: HashSlot.of(key: key)) else { throw TestFailure("no master for \(key)") }
        let reply = try node.command("XRANGE", key, "-", "+")
        return (reply.array ?? []).compactMap { entry -> [String: String]? in
            guard let parts = entry.array, parts.count == 2, let fields = parts[1].array else { return nil }
            var result: [String: String] = ["_id": parts[0].string ?? ""]
            var index = 0
            while index + 1 < fields.count {
                result[fields[index].string ?? ""] = fields[index + 1].string ?? ""
                index += 2
            }
            return result
        }.filter { $0["account"] == account }
    }

    private func balances(_ account: String, in cluster: RedisCluster) throws -> [String: Int64] {
        let key = Keys.account(account)
        guard let node = try cluster.master(ofSlot: HashSlot.of(key: key)) else { throw TestFailure("no master for \(key)") }
        let items = try node.command("HGETALL", key).array ?? []
        var result: [String: Int64] = [:]
        var index = 0
        while index + 1 < items.count {
            guard let category = items[index].string, let cents = items[index + 1].int else { throw TestFailure("\(key): \(items)") }
            result[category] = cents
            index += 2
        }
        return result
    }

    /// Checks every account's decisions (in its stream's order) and final
    /// balances against the oracle; returns the number of approvals.
    @discardableResult
    private func assertMatchesOracle(
        _ requests: [String: SentRequest], start: [String: [String: Int64]], cluster: RedisCluster,
        file: StaticString = #filePath, line: UInt = #line
    ) throws -> Int {
        var oracle = DecisionOracle(balances: start)
        var approved = 0
        for account in start.keys.sorted() {
            for entry in try entries(of: account, in: cluster) where entry["type"] == "authorization" {
                let id = entry["id", default: ""]
                guard let request = requests[id] else { XCTFail("statement for a request never sent: \(entry)", file: file, line: line); continue }
                let outcome = oracle.decide(id: id, account: request.account, cents: request.cents, mcc: request.mcc, merchant: "PADARIA DO ZE")
                XCTAssertEqual(entry["code"], outcome.code, "\(id): \(entry) vs \(outcome)", file: file, line: line)
                XCTAssertEqual(entry["debits"], outcome.debitsField, id, file: file, line: line)
                XCTAssertEqual(request.answer?.code, outcome.code, "\(id) answered \(request.answer?.code ?? "-")", file: file, line: line)
                if outcome.code == "00" { approved += 1 }
            }
        }
        for (account, expected) in oracle.balances {
            XCTAssertEqual(try balances(account, in: cluster), expected, account, file: file, line: line)
        }
        return approved
    }

    func testAuthorizationsOnThreeMastersMatchTheOracleAndLandInTheirSlotStreams() throws {
        let (cluster, serve) = try context()
        let accounts = (0..<300).map { "cl\($0)" }
        let start = Dictionary(uniqueKeysWithValues: accounts.map { ($0, ["FOOD": Int64(1_500), "MEAL": 800, "CASH": 1_000]) })
        try setBalances(start, on: cluster)
        let mccs = ["5411", "5811", "7995", "5812"]
        var connections = [[SentRequest]](repeating: [], count: 6)
        var byID: [String: SentRequest] = [:]
        for round in 0..<4 {
            for (index, account) in accounts.enumerated() {
                let request = SentRequest(
                    id: "cl-\(round)-\(index)", account: account,
                    cents: Int64(300 + (round * 7 + index) % 9 * 100), mcc: mccs[(round + index) % 4]
                )
                connections[index % 6].append(request)
            }
        }
        for connection in try TerminalLoad.run(port: serve.port, connections: connections) {
            for request in connection { byID[request.id] = request }
        }
        XCTAssertEqual(byID.count, 1_200)
        let approved = try assertMatchesOracle(byID, start: start, cluster: cluster)
        XCTAssertGreaterThan(approved, 0)
        XCTAssertLessThan(approved, 1_200, "the balances run out: both 00 and 51")
        // The accounts, their streams and so the work spread over every master.
        let masters = Set(try accounts.compactMap { try cluster.master(ofSlot: HashSlot.of(key: Keys.account($0)))?.port })
        XCTAssertEqual(masters.count, 3)
        // `account show` names the slot, its master and the ledger stream.
        let shown = try runAuthorizer(["account", "show", "--redis", cluster.seeds, "cl7"]).output
        XCTAssertTrue(shown.contains("slot \(HashSlot.of(key: "cl7"))"), shown)
        XCTAssertTrue(shown.contains(Self.streamKey("cl7")), shown)
    }

    /// Cards on a cluster: the PAN index in its own slot, the card in the
    /// account's, checked by authorize.lua on the account's master; the card's
    /// entries in the account's slot stream.
    func testACardIsIssuedUsedAndBlockedOnTheCluster() throws {
        let (cluster, serve) = try context()
        try setBalances(["cc1": ["FOOD": 10_000]], on: cluster)
        let keyFile = cluster.users.appendingPathComponent("pan.key").path
        let card = ["--redis", cluster.seeds, "--pan-key-file", keyFile]
        let issued = try runAuthorizer(["card", "issue", "cc1", "--pan", "9990003333333331"] + card).output
        let id = try XCTUnwrap(issued.split(separator: " ").dropFirst().first.map(String.init))
        XCTAssertNotEqual(HashSlot.of(key: Keys.panIndex(digest: "x")), HashSlot.of(key: Keys.account("cc1")))
        let client = try serve.connect()
        let line: (String) -> [String: Any] = { ["id": $0, "card": "9990003333333331", "totalAmount": "10.00", "mcc": "5411", "merchant": "PADARIA DO ZE"] }
        XCTAssertEqual(try client.request(line("cc-1")).code, "00")
        // A control of the card, in the account's slot: checked with the debit.
        try runAuthorizer(["controls", "set", "--card", id, "--daily-count", "1"] + card)
        XCTAssertEqual(try client.request(line("cc-c")).code, "00", "the first approval counted: cc-1 came before any limit")
        XCTAssertEqual(try client.request(line("cc-d")).reason, "too many transactions today")
        try runAuthorizer(["controls", "clear", "--card", id] + card)
        try runAuthorizer(["card", "block", id] + card)
        let refused = try client.request(line("cc-2"))
        XCTAssertEqual(refused.reason, "card blocked")
        let entries = try entries(of: "cc1", in: cluster)
        XCTAssertEqual(entries.filter { $0["type"] == "card" }.map { $0["to"] ?? "" }, ["active", "blocked"])
        XCTAssertEqual(entries.last { $0["id"] == "cc-2" }?["card"], id)
        XCTAssertEqual(try balances("cc1", in: cluster)["FOOD"], 10_000 - 2 * 1_000)
    }

    /// Benefit orders on the cluster: lines of accounts on every master
    /// credited once (the second load credits nothing), a revert, a freeze.
    func testAnOrderIsLoadedRevertedAndAnAccountFrozenOnTheCluster() throws {
        let (cluster, serve) = try context()
        let accounts = (0..<6).map { "oc\($0)" }
        try setBalances(Dictionary(uniqueKeysWithValues: accounts.map { ($0, ["MEAL": 0]) }), on: cluster)
        let file = cluster.users.appendingPathComponent("order.csv").path
        try accounts.enumerated().map { "\($0.offset),\($0.element),MEAL,10.00" }.joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
        let redis = ["--redis", cluster.seeds]
        XCTAssertTrue(try runAuthorizer(["order", "load", file, "--order", "oc-1"] + redis).output.contains("6 credited"))
        XCTAssertTrue(try runAuthorizer(["order", "load", file, "--order", "oc-1"] + redis).output.contains("0 credited, 6 already credited"))
        try runAuthorizer(["order", "revert", "--order", "oc-1", "--line", "1", "--account", "oc1", "--reason", "wrong-beneficiary"] + redis)
        try runAuthorizer(["account", "freeze", "oc2", "--reason", "court order"] + redis)
        let client = try serve.connect()
        let buy: (String, String) -> [String: Any] = { ["id": $0, "account": $1, "totalAmount": "1.00", "mcc": "5811", "merchant": "M"] }
        XCTAssertEqual(try client.request(buy("oc-b2", "oc2")).reason, "account frozen")
        XCTAssertEqual(try client.request(buy("oc-b3", "oc3")).code, "00")
        XCTAssertEqual(try balances("oc1", in: cluster)["MEAL"], 0)
        XCTAssertEqual(try balances("oc2", in: cluster)["MEAL"], 1_000)
        XCTAssertEqual(try balances("oc3", in: cluster)["MEAL"], 900)
        XCTAssertEqual(try entries(of: "oc1", in: cluster).compactMap { ["credit", "revert"].contains($0["type"] ?? "") ? $0["type"] : nil }, ["credit", "revert"])
        XCTAssertEqual(try entries(of: "oc2", in: cluster).filter { $0["type"] == "freeze" }.map { $0["to"] ?? "" }, ["frozen"])
    }

    /// On each master: a request waiting on a lock held there wakes on that
    /// master's `del` keyevent, long before its 5 s deadline.
    func testLockWaitsWakeOnTheKeyeventsOfEachMaster() throws {
        let (cluster, serve) = try context()
        for (index, master) in try cluster.masters().enumerated() {
            let ranges = try cluster.ownedSlots(master)
            guard let account = (0..<10_000).lazy.map({ "lw\(index)-\($0)" }).first(where: { id in
                ranges.contains { $0.contains(HashSlot.of(key: id)) }
            }) else { return XCTFail("no account on \(master.port)") }
            try setBalances([account: ["FOOD": 1_000]], on: cluster)
            try master.command("SET", Keys.lock(account), "held-by-hand")  // no TTL: only a DEL frees it
            let client = try serve.connect()
            try client.sendLine(Request.line(id: "\(account)-1", account: account, amount: "1.00", mcc: "5411"))
            try master.waitUntilKeyeventSubscribers(1)
            let released = Date()
            try master.command("DEL", Keys.lock(account))
            XCTAssertEqual(try client.readResponse().code, "00", account)
            XCTAssertLessThan(Date().timeIntervalSince(released), 1.0, "\(account) on \(master.port): woken by the deadline, not the del event")
            XCTAssertEqual(try balances(account, in: cluster), ["FOOD": 900])
        }
    }

    /// Two serve processes, 200 terminals, one hot account on each master:
    /// exactly what each balance covers is approved, balances end at 0, one
    /// statement per request in each account's slot stream.
    func testTwoServesHammeringHotAccountsOnEveryMasterKeepTheInvariants() throws {
        let (cluster, serve) = try context()
        let second = try ServeProcess(url: cluster.seeds, stateParent: cluster.users, arguments: ["--sla-ms", "5000"])
        var hot: [String] = []
        for (index, master) in try cluster.masters().enumerated() {
            let ranges = try cluster.ownedSlots(master)
            guard let account = (0..<10_000).lazy.map({ "hot\(index)-\($0)" }).first(where: { id in
                ranges.contains { $0.contains(HashSlot.of(key: id)) }
            }) else { return XCTFail("no account on \(master.port)") }
            hot.append(account)
        }
        let covered = 37
        try setBalances(Dictionary(uniqueKeysWithValues: hot.map { ($0, ["FOOD": Int64(covered) * 250]) }), on: cluster)
        let clients = try (0..<200).map { index in try (index % 2 == 0 ? serve : second).connect(receiveTimeout: 30) }
        for (index, client) in clients.enumerated() {
            try client.send(hot.map { Request.line(id: "h\(index)-\($0)", account: $0, amount: "2.50", mcc: "5411") + "\n" }.joined())
        }
        var codes: [String: [String: Int]] = [:]
        for client in clients {
            for _ in hot {
                let answer = try client.readResponse()
                let account = hot.first { (answer.id ?? "").hasSuffix("-\($0)") } ?? "?"
                codes[account, default: [:]][answer.code, default: 0] += 1
            }
        }
        for account in hot {
            XCTAssertEqual(codes[account], ["00": covered, "51": 200 - covered], account)
            XCTAssertEqual(try balances(account, in: cluster), ["FOOD": 0], account)
            let decisions = try entries(of: account, in: cluster).filter { $0["type"] == "authorization" }
            XCTAssertEqual(decisions.count, 200, account)
            XCTAssertEqual(Set(decisions.map { $0["id", default: ""] }).count, 200, account)
        }
    }

    /// The ACL users' refusals hold on every master's slot streams.
    func testTheLedgerRefusesEachUserWhatItMustNotDoOnTheCluster() throws {
        let (cluster, _) = try context()
        let router = Redis(target: .cluster(seeds: [try RedisEndpoint(url: cluster.nodes[0].url)]), eventLoop: group.next())
        try router.connect().wait()
        var replayerSeed = try RedisEndpoint(url: cluster.nodes[0].url)
        replayerSeed.username = "replayer"
        replayerSeed.password = cluster.credentials["REPLAYER_PASSWORD"]
        let replayerRouter = Redis(target: .cluster(seeds: [replayerSeed]), eventLoop: group.next())
        try replayerRouter.connect().wait()
        defer { router.close(); replayerRouter.close() }
        func via(_ router: Redis) -> ([String]) throws -> RESPValue {
            { command in try router.send(RedisCommand(command), slot: HashSlot.of(key: command[1])).wait() }
        }
        // A stream on each master.
        var streams: [String] = []
        for master in try cluster.masters() {
            let ranges = try cluster.ownedSlots(master)
            if let slot = ranges.first?.lowerBound { streams.append(LedgerLayout.stream(ofSlot: slot)) }
        }
        XCTAssertEqual(streams.count, 3)
        try assertLedgerRefusals(authorizer: via(router), replayer: via(replayerRouter), streams: streams)
    }

    /// Rules on a cluster are versioned: `rules load` switches them whole.
    func testRulesLoadedOnTheClusterAreUsedWhole() throws {
        let (cluster, serve) = try context()
        let account = "rules-acct"
        try setBalances([account: ["FOOD": 1_000, "MEAL": 1_000, "CASH": 1_000]], on: cluster)
        let file = cluster.users.appendingPathComponent("rules.json")
        try #"{"mcc": {"5411": "MEAL"}, "merchants": {}, "fallback": "CASH", "fallback_mode": "whole"}"#
            .write(to: file, atomically: true, encoding: .utf8)
        try runAuthorizer(["rules", "load", file.path, "--redis", cluster.seeds])
        XCTAssertTrue(serve.child.waitForLine(containing: "rules reloaded", timeout: 10), serve.child.output)
        let client = try serve.connect()
        XCTAssertEqual(try client.request(["account": account, "totalAmount": 1, "mcc": "5411", "merchant": "M"]).code, "00")
        XCTAssertEqual(try balances(account, in: cluster), ["FOOD": 1_000, "MEAL": 900, "CASH": 1_000])
        let shown = try runAuthorizer(["rules", "show", "--redis", cluster.seeds]).output
        XCTAssertTrue(shown.contains("\"5411\": MEAL"), shown)
        // Back to the defaults for the other tests.
        let defaults = TestEnvironment.repositoryRoot.appendingPathComponent("rules.example.yaml").path
        try runAuthorizer(["rules", "load", defaults, "--redis", cluster.seeds])
        XCTAssertTrue(serve.child.waitForLine(containing: "rules reloaded", timeout: 10))
    }

    /// A slot holding active accounts moves to another master while
    /// terminals send requests for them: every request is answered 00 or 51
    /// (never 07), and decisions and balances are exact.
    func testLiveSlotMigrationUnderLoadIsInvisibleToTerminals() throws {
        let (cluster, serve) = try context()
        // Twenty accounts in one slot (same hash tag is impossible across
        // accounts; pick ids whose slot is the first one's).
        let first = "mig-0"
        let slot = HashSlot.of(key: first)
        var accounts = [first]
        var candidate = 1
        while accounts.count < 20 {
            let id = "mig-\(candidate)"
            if HashSlot.of(key: id) == slot { accounts.append(id) }
            candidate += 1
        }
        let start = Dictionary(uniqueKeysWithValues: accounts.map { ($0, ["FOOD": Int64(20_000), "CASH": 2_000]) })
        try setBalances(start, on: cluster)
        let source = try XCTUnwrap(cluster.master(ofSlot: slot))
        let target = try XCTUnwrap(cluster.masters().first { $0 !== source })

        var connections = [[SentRequest]](repeating: [], count: 4)
        for round in 0..<150 {
            for (index, account) in accounts.enumerated() {
                connections[(round + index) % 4].append(SentRequest(id: "mig-\(round)-\(index)", account: account, cents: 100 + Int64(round % 3) * 50, mcc: "5411"))
            }
        }
        // The load runs on its own thread; the migration starts once it is under way.
        let results = NIOLockedBox<Result<[[SentRequest]], Error>?>(nil)
        let finished = DispatchSemaphore(value: 0)
        let planned = connections
        let port = serve.port
        Thread.detachNewThread {
            results.value = Result { try TerminalLoad.run(port: port, connections: planned, window: 20) }
            finished.signal()
        }
        try source.waitUntil(timeout: 10) { (try source.command("XLEN", Self.streamKey(first)).int ?? 0) > 60 }
        func mapUpdates() -> Int { serve.child.output.components(separatedBy: "cluster slot map updated").count - 1 }
        let updatesBefore = mapUpdates()
        try cluster.migrate(slot: slot, to: target, batch: 50)
        let overlapped = finished.wait(timeout: .now()) == .timedOut
        XCTAssertTrue(overlapped, "the load had ended before the migration did: it proved nothing")
        if overlapped {
            XCTAssertEqual(finished.wait(timeout: .now() + 120), .success, "the load did not finish")
        }
        // serve's routers met the move (MOVED, ASK or TRYAGAIN) and re-read the slot map.
        try source.waitUntil(timeout: 10) { mapUpdates() > updatesBefore }
        let sent = try XCTUnwrap(results.value).get()
        var byID: [String: SentRequest] = [:]
        for connection in sent { for request in connection { byID[request.id] = request } }
        XCTAssertEqual(byID.count, 3_000)
        let codes = Set(byID.values.compactMap { $0.answer?.code })
        XCTAssertTrue(codes.isSubset(of: ["00", "51"]), "answers during the migration: \(codes) \(byID.values.filter { $0.answer?.code == "07" }.prefix(3).map { $0.answer?.reason ?? "" })")
        XCTAssertTrue(try cluster.master(ofSlot: slot) === target, "the slot moved")
        try assertMatchesOracle(byID, start: start, cluster: cluster)

        // A wait for a moved account listens on its new master's keyevents.
        try setBalances([first: ["FOOD": 1_000]], on: cluster)
        try target.command("SET", Keys.lock(first), "held-by-hand")
        let client = try serve.connect()
        try client.sendLine(Request.line(id: "after-move", account: first, amount: "1.00", mcc: "5411"))
        try target.waitUntilKeyeventSubscribers(1)
        let released = Date()
        try target.command("DEL", Keys.lock(first))
        XCTAssertEqual(try client.readResponse().code, "00")
        XCTAssertLessThan(Date().timeIntervalSince(released), 1.0, "woken by the new owner's del event, not the deadline")
    }
}

/// A value shared with a detached thread, behind a lock.
final class NIOLockedBox<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value
    init(_ value: Value) { stored = value }
    var value: Value {
        get { lock.lock(); defer { lock.unlock() }; return stored }
        set { lock.lock(); stored = newValue; lock.unlock() }
    }
}
