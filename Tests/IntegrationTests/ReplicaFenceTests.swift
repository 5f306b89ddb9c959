import Ledger
import RedisWire
@testable import Replayer
import XCTest

/// The replayer's fence applies only what the stream's master holds. After a
/// failover, a batch read from the old master can name entries the new one
/// never received, or whose delivery it never received: its XCLAIM returns
/// neither (and, claiming nothing, writes nothing, so the WAIT after it
/// passes at once). Reduced here to one real Redis standing for the new
/// master, the batch's entries missing from it out of band.
final class ReplicaFenceTests: XCTestCase {
    func testOnlyTheEntriesTheMasterHoldsPassTheFence() throws {
        let redis = try RedisServer(name: "fence")
        for index in 0..<4 { try redis.command("XADD", "statements", "*", "n", String(index)) }
        try redis.command("XGROUP", "CREATE", "statements", "replay", "0")
        let reply = try redis.command("XREADGROUP", "GROUP", "replay", "c1", "COUNT", "10", "STREAMS", "statements", ">")
        let batch = try StreamReply.entries(XCTUnwrap(reply.array?.first?.array?.last))
        XCTAssertEqual(batch.count, 4)
        // The second's delivery and the third entry itself never reached this
        // master (removed here: acknowledged, and deleted too).
        try redis.command("XACK", "statements", "replay", batch[1].id.description, batch[2].id.description)
        try redis.command("XDEL", "statements", batch[2].id.description)
        // The fourth was delivered to another consumer (a replayer before a restart).
        try redis.command("XCLAIM", "statements", "replay", "c0", "0", batch[3].id.description, "JUSTID")

        let fence = ReplicaFence(replicas: 1, timeoutMilliseconds: 50)
        let commands = fence.commands(stream: "statements", group: "replay", consumer: "c1", ids: batch.map(\.id))
        let claim = try redis.command(commands[0])
        XCTAssertEqual(try fence.held(batch, claimReply: claim).map(\.id), [batch[0].id, batch[3].id])
        XCTAssertEqual(try redis.command(commands[1]).int, 0, "no replica here: the WAIT counts none")
        XCTAssertThrowsError(try fence.check(waitReply: redis.command(commands[1]), stream: "statements"))
    }
}
