import RedisWire
import XCTest

final class RedisErrorKindTests: XCTestCase {
    func testRedirectionsCarrySlotAndNode() {
        XCTAssertEqual(RedisErrorKind(message: "MOVED 3999 127.0.0.1:6381"), .moved(slot: 3_999, host: "127.0.0.1", port: 6_381))
        XCTAssertEqual(RedisErrorKind(message: "ASK 12 ::1:7002"), .ask(slot: 12, host: "::1", port: 7_002))
        XCTAssertEqual(RedisErrorKind(message: "MOVED nonsense"), .other)
        XCTAssertEqual(RedisErrorKind(message: "MOVED 1 host:notaport"), .other)
    }

    func testKindsByLeadingWord() {
        XCTAssertEqual(RedisErrorKind(message: "NOSCRIPT No matching script. Please use EVAL."), .noScript)
        XCTAssertEqual(RedisErrorKind(message: "TRYAGAIN Multiple keys request during rehashing of slot"), .tryAgain)
        XCTAssertEqual(RedisErrorKind(message: "CLUSTERDOWN The cluster is down"), .clusterDown)
        XCTAssertEqual(RedisErrorKind(message: "BUSYGROUP Consumer Group name already exists"), .busyGroup)
        XCTAssertEqual(RedisErrorKind(message: "NOGROUP No such key 'statements:{0}' or consumer group 'replayer' in XREADGROUP with GROUP option"), .noGroup)
        XCTAssertEqual(RedisErrorKind(message: "NOPERM this user has no permissions to run the 'del' command"), .noPermission)
        XCTAssertEqual(RedisErrorKind(message: "CROSSSLOT Keys in request don't hash to the same slot"), .crossSlot)
        XCTAssertEqual(RedisErrorKind(message: "ERR unknown command"), .other)
        XCTAssertEqual(RedisErrorKind(message: "NOSCRIPTX"), .other)
        XCTAssertEqual(RedisError.server("NOSCRIPT x").kind, .noScript)
        XCTAssertNil(RedisError.connectionClosed.kind)
    }
}

final class ClusterTopologyTests: XCTestCase {
    private func node(_ port: Int64, _ id: String) -> RESPValue {
        .array([.bulkString(Array("127.0.0.1".utf8)), .integer(port), .bulkString(Array(id.utf8))])
    }

    private func reply() -> RESPValue {
        .array([
            .array([.integer(0), .integer(5_460), node(7001, "a"), node(7004, "d")]),
            .array([.integer(5_461), .integer(10_922), node(7002, "b"), node(7005, "e")]),
            .array([.integer(10_923), .integer(16_383), node(7003, "c"), node(7006, "f")]),
        ])
    }

    func testEverySlotHasItsMaster() throws {
        let topology = try ClusterTopology(clusterSlots: reply())
        XCTAssertTrue(topology.coversEverySlot)
        XCTAssertEqual(topology.masters.map(\.port), [7001, 7002, 7003])
        XCTAssertEqual(topology.replicas.map { $0.map(\.port) }, [[7004], [7005], [7006]])
        XCTAssertEqual(topology.master(ofSlot: 0)?.port, 7001)
        XCTAssertEqual(topology.master(ofSlot: 5_460)?.port, 7001)
        XCTAssertEqual(topology.master(ofSlot: 5_461)?.port, 7002)
        XCTAssertEqual(topology.master(ofSlot: 16_383)?.port, 7003)
        XCTAssertEqual(topology.slots(of: .init(host: "127.0.0.1", port: 7002)), [5_461...10_922])
    }

    func testMovedReassignsOneSlot() throws {
        var topology = try ClusterTopology(clusterSlots: reply())
        topology.moved(slot: 100, to: .init(host: "127.0.0.1", port: 7003))
        XCTAssertEqual(topology.master(ofSlot: 100)?.port, 7003)
        XCTAssertEqual(topology.slots(of: .init(host: "127.0.0.1", port: 7001)), [0...99, 101...5_460])
        topology.moved(slot: 7, to: .init(host: "127.0.0.1", port: 7010))
        XCTAssertEqual(topology.masters.count, 4, "a node first seen in a MOVED becomes a master")
    }

    func testGapsAndMalformedReplies() throws {
        let partial = try ClusterTopology(clusterSlots: .array([.array([.integer(0), .integer(99), node(7001, "a")])]))
        XCTAssertFalse(partial.coversEverySlot)
        XCTAssertNil(partial.master(ofSlot: 100))
        XCTAssertThrowsError(try ClusterTopology(clusterSlots: .integer(1)))
        XCTAssertThrowsError(try ClusterTopology(clusterSlots: .array([.array([.integer(10), .integer(5), node(7001, "a")])])))
        XCTAssertThrowsError(try ClusterTopology(clusterSlots: .array([.array([.integer(0), .integer(16_384), node(7001, "a")])])))
    }
}
