import AuthorizerCore
import RedisWire
import XCTest

/// The cluster the cluster tests run on, and the slot function the
/// authorizer routes with, checked against Redis itself.
final class ClusterHarnessTests: XCTestCase {
    nonisolated(unsafe) static var shared: RedisCluster?

    /// One cluster for the whole class: starting six nodes costs seconds.
    override class func setUp() {
        super.setUp()
        shared = try? RedisCluster(name: "harness")
    }

    override class func tearDown() {
        shared = nil
        super.tearDown()
    }

    private func cluster() throws -> RedisCluster {
        try XCTUnwrap(Self.shared, "the cluster did not start")
    }

    func testThreeMastersEachWithAnUpToDateReplicaCoverEverySlot() throws {
        let cluster = try cluster()
        let masters = try cluster.masters()
        XCTAssertEqual(masters.count, 3)
        let owned = try masters.flatMap { try cluster.ownedSlots($0) }.map(\.count).reduce(0, +)
        XCTAssertEqual(owned, HashSlot.count)
        for node in cluster.nodes where !masters.contains(where: { $0 === node }) {
            let replication = try XCTUnwrap(node.command("INFO", "replication").string)
            XCTAssertTrue(replication.contains("master_link_status:up"), replication)
        }
    }

    /// The slot map parsed from CLUSTER SLOTS sends every key to the node
    /// that serves it: no MOVED for any of 300 accounts.
    func testTopologyRoutesEveryKeyToItsMaster() throws {
        let cluster = try cluster()
        let node = try XCTUnwrap(cluster.nodes.first)
        let topology = try ClusterTopology(clusterSlots: node.command("CLUSTER", "SLOTS"))
        XCTAssertTrue(topology.coversEverySlot)
        XCTAssertEqual(Set(topology.masters.map(\.port)), Set(try cluster.masters().map(\.port)))
        var used = Set<Int>()
        for index in 0..<300 {
            let key = Keys.account("route-\(index)")
            let owner = try XCTUnwrap(topology.master(ofSlot: HashSlot.of(key: key)))
            let server = try XCTUnwrap(cluster.nodes.first { $0.port == owner.port })
            XCTAssertEqual(try server.command("SET", key, "1").string, "OK", key)
            used.insert(owner.port)
        }
        XCTAssertEqual(used.count, 3, "300 accounts spread over every master")
    }

    func testHashSlotAgreesWithClusterKeyslot() throws {
        let node = try XCTUnwrap(cluster().nodes.first)
        var keys = ["foo", "bar", "{}", "{", "}", "a{}b", "{user1000}.following", "foo{{bar}}zap", "ação", "conta:{ñ}"]
        keys += (0..<200).map { Keys.account("acct-\($0)") }
        keys += (0..<50).map { Keys.transaction(account: "\($0)", id: "t-\($0 * 7)") }
        for key in keys {
            XCTAssertEqual(try node.command("CLUSTER", "KEYSLOT", key).int.map(Int.init), HashSlot.of(key: key), key)
        }
    }
}
