import AuthorizerCore
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
