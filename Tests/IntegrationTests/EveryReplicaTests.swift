import AuthorizerCore
import Foundation
import RedisWire
import XCTest

/// A master with two replicas, `serve` with its default flags (which choose
/// `--replica-acks 1` on this cluster). A write held by one replica only is
/// lost when the other is promoted — it happens when the old master comes
/// back (resumed, partition healed) while a replica is still winning the
/// failover it started, and the replica left behind acknowledges what the
/// old master takes meanwhile. So an answer waits for every replica the
/// cluster lists for the master; one the cluster marks failed drops out of
/// the list, and approvals go on with the replica left.
final class EveryReplicaTests: XCTestCase {
    func testADecisionOneOfTwoListedReplicasHoldsIsNotAnsweredAsDone() throws {
        let cluster = try RedisCluster(name: "every-replica", nodeTimeoutMs: 1_000)
        try runAuthorizer(["rules", "init", "--redis", cluster.seeds])
        let account = "tw1"
        try runAuthorizer(["account", "set", "--redis", cluster.seeds, account, "FOOD=100.00"])
        let master = try XCTUnwrap(try cluster.master(ofSlot: HashSlot.of(key: Keys.account(account))))
        let second = try cluster.addReplica(of: master)
        let serve = try ServeProcess(url: cluster.seeds, stateParent: cluster.users, arguments: [
            "--metrics-port", "0", "--sla-ms", "1000", "--replica-ack-timeout-ms", "300",
        ])
        let client = try serve.connect()
        func purchase(_ id: String) throws -> Response {
            try client.sendLine(Request.line(id: id, account: account, amount: "1.00", mcc: "5411"))
            return try client.readResponse()
        }
        XCTAssertEqual(try purchase("E1").code, "00", "both replicas hold it")

        let secondID = try cluster.nodeID(second)
        // One replica stopped, still listed (the cluster has not marked it failed yet).
        kill(second.child.pid, SIGSTOP)
        var stopped = true
        defer { if stopped { kill(second.child.pid, SIGCONT) } }
        let held = try purchase("E2")
        XCTAssertEqual(held.code, "07", "one of two listed replicas holds E2: not answered as done")
        XCTAssertEqual(held.reason, RejectReason.timeout.text)

        // Once the cluster marks it failed, the map leaves it out and the
        // replica left is enough again.
        try master.waitUntil(timeout: 30) {
            let nodes = (try? master.command("CLUSTER", "NODES").string) ?? ""
            return nodes.split(separator: "\n").contains { line in
                let fields = line.split(separator: " ")
                return fields.count > 2 && fields[0] == secondID && fields[2].split(separator: ",").contains("fail")
            }
        }
        var approved: [String] = []
        var sequence = 3
        let deadline = Date().addingTimeInterval(20)
        while approved.isEmpty && Date() < deadline {
            let id = "E\(sequence)"
            let answer = try purchase(id)
            if answer.code == "00" {
                approved.append(id)
            } else {
                XCTAssertEqual(answer.reason, RejectReason.timeout.text, "\(id): \(answer)")
            }
            sequence += 1
        }
        XCTAssertFalse(approved.isEmpty, "no approval with one replica failed and one left within 20 s")

        // Back: the reversals owed for the 07s are applied; only E1 and the approvals stand.
        kill(second.child.pid, SIGCONT)
        stopped = false
        let expected: Int64 = 10_000 - 100 * Int64(1 + approved.count)
        try master.waitUntil(timeout: 30) {
            let owner = try? cluster.master(ofSlot: HashSlot.of(key: Keys.account(account)))
            return (try? owner?.balances(account)["FOOD"]) == expected
        }
    }

    /// Right after a failover the promoted replica has no replica of its
    /// own until the old master rejoins, and a cluster nobody wrote to yet
    /// lists no replica in `CLUSTER SLOTS` (offset 0). A serve or a replayer
    /// started then keeps its replica acks on: the default rests on the
    /// cluster having replicas, not on every master listing one at that instant.
    func testAProcessStartedWhileAMasterHasNoReplicaKeepsItsReplicaAcks() throws {
        let cluster = try RedisCluster(name: "acks-default", nodeTimeoutMs: 1_000)
        try runAuthorizer(["rules", "init", "--redis", cluster.seeds])
        let masters = try cluster.masters()
        let replica = try XCTUnwrap(cluster.nodes.first { node in !masters.contains { $0 === node } })
        let replicaID = try cluster.nodeID(replica)
        replica.kill()
        // Until every node leaves it out of CLUSTER SLOTS (marked failed).
        let others = cluster.nodes.filter { $0 !== replica }
        try masters[0].waitUntil(timeout: 30) {
            others.allSatisfy { !RedisCluster.strings(in: try? $0.command("CLUSTER", "SLOTS")).contains(replicaID) }
        }
        let serve = try ServeProcess(url: cluster.seeds, stateParent: cluster.users, arguments: ["--metrics-port", "0"])
        let chosen = try XCTUnwrap(serve.child.line(containing: "replica acks"), serve.child.output)
        XCTAssertTrue(chosen.contains("replica_acks=1"), chosen)

        let replay = ChildProcess(name: "replay", executable: TestEnvironment.authorizerBinary, arguments: [
            "replay", "--redis", cluster.nodes.map(\.replayerURL).joined(separator: ","),
            "--db", cluster.users.appendingPathComponent("acks.sqlite").path,
        ])
        try replay.start()
        defer { replay.terminate(signal: SIGKILL) }
        let ready = try XCTUnwrap(replay.line(containing: "consumer ready"), replay.output)
        XCTAssertTrue(ready.contains("replica_acks=1"), ready)
    }
}
