import Ledger
import RedisWire
import XCTest

/// The one definition of replayer lag, from decoded XINFO replies (no Redis).
final class ReplayerLagTests: XCTestCase {
    private func id(_ text: String) -> StreamID { StreamID(text)! }

    private func stream(length: Int, last: String, added: Int? = nil, first: String? = nil) -> StreamInfo {
        StreamInfo(length: length, lastGeneratedID: id(last), entriesAdded: added, firstEntryID: first.map(id))
    }

    func testAMissingStreamHasNoLag() {
        let lag = ReplayerLag(stream: nil, group: nil)
        XCTAssertEqual(lag.streams, 0)
        XCTAssertEqual(lag.undelivered, 0)
        XCTAssertEqual(lag.unapplied, 0)
        XCTAssertFalse(lag.groupExists)
    }

    func testWithoutTheGroupEveryEntryIsUndelivered() {
        let lag = ReplayerLag(stream: stream(length: 7, last: "900-0", first: "100-0"), group: nil)
        XCTAssertEqual(lag.undelivered, 7)
        XCTAssertEqual(lag.oldestUndelivered, id("100-0"))
        XCTAssertFalse(lag.groupExists)
    }

    func testRedisLagAndPendingMakeTheUnapplied() {
        let group = GroupInfo(name: "replayer", consumers: 2, pending: 3, lastDeliveredID: id("500-0"), lag: 4)
        let lag = ReplayerLag(stream: stream(length: 10, last: "900-0"), group: group)
        XCTAssertEqual(lag.undelivered, 4)
        XCTAssertEqual(lag.pending, 3)
        XCTAssertEqual(lag.unapplied, 7)
        XCTAssertTrue(lag.groupExists)
    }

    func testAnUnknownRedisLagFallsBackToEntriesAddedMinusRead() {
        let group = GroupInfo(name: "replayer", consumers: 1, pending: 0, lastDeliveredID: id("500-0"), entriesRead: 6, lag: nil)
        XCTAssertEqual(ReplayerLag(stream: stream(length: 10, last: "900-0", added: 10), group: group).undelivered, 4)
        XCTAssertNil(ReplayerLag(stream: stream(length: 10, last: "900-0"), group: group).undelivered)
    }

    func testDeliveredUpToTheLastIDIsNoLagWhateverRedisSays() {
        let group = GroupInfo(name: "replayer", consumers: 1, pending: 0, lastDeliveredID: id("900-0"), lag: nil)
        XCTAssertEqual(ReplayerLag(stream: stream(length: 10, last: "900-0"), group: group).undelivered, 0)
    }

    func testTheSumAddsCountsAndKeepsTheOldestIDs() {
        var a = ReplayerLag(stream: stream(length: 5, last: "900-0", first: "300-0"), group: nil)
        a.nowMillis = 10_000
        var b = ReplayerLag(
            stream: stream(length: 4, last: "800-0"),
            group: GroupInfo(name: "replayer", consumers: 1, pending: 2, lastDeliveredID: id("700-0"), lag: 1)
        )
        b.oldestPending = id("200-0")
        b.oldestUndelivered = id("800-0")
        b.nowMillis = 10_500
        let sum = a + b
        XCTAssertEqual(sum.streams, 2)
        XCTAssertEqual(sum.length, 9)
        XCTAssertEqual(sum.undelivered, 6)
        XCTAssertEqual(sum.pending, 2)
        XCTAssertEqual(sum.unapplied, 8)
        XCTAssertFalse(sum.groupExists, "one stream has no group yet")
        XCTAssertEqual(sum.lagSeconds, 10.2)
        XCTAssertEqual(sum.oldestUnappliedSeconds, 10.3)
        var unknown = b
        unknown.undelivered = nil
        XCTAssertNil((a + unknown).undelivered, "an unknown stream makes the sum unknown")
    }

    func testTheThresholdCountsPendingAndAge() {
        var lag = ReplayerLag()
        lag.undelivered = 60
        lag.pending = 60
        lag.nowMillis = 100_000
        XCTAssertTrue(ReplayerLagMonitor.Threshold(maxUnappliedEntries: 100).isLagging(lag))
        XCTAssertFalse(ReplayerLagMonitor.Threshold(maxUnappliedEntries: 120).isLagging(lag))
        lag.oldestPending = id("30000-0")
        XCTAssertTrue(ReplayerLagMonitor.Threshold(maxUnappliedEntries: 120, maxAge: .seconds(60)).isLagging(lag))
        lag.pendingAgeKnown = false
        XCTAssertFalse(ReplayerLagMonitor.Threshold(maxUnappliedEntries: 120, maxAge: .seconds(60)).isLagging(lag))
    }

    func testDecodesXInfoReplies() throws {
        let groups = RESPValue.array([.array([
            .simpleString("name"), .simpleString("replayer"), .simpleString("consumers"), .integer(1),
            .simpleString("pending"), .integer(2), .simpleString("last-delivered-id"), .simpleString("5-1"),
            .simpleString("entries-read"), .integer(9), .simpleString("lag"), .null,
        ])])
        XCTAssertEqual(try GroupInfo.parseAll(groups), [GroupInfo(name: "replayer", consumers: 1, pending: 2, lastDeliveredID: id("5-1"), entriesRead: 9, lag: nil)])
        let info = RESPValue.array([
            .simpleString("length"), .integer(3), .simpleString("last-generated-id"), .simpleString("7-0"),
            .simpleString("entries-added"), .integer(12), .simpleString("first-entry"), .array([.simpleString("4-0"), .array([])]),
        ])
        XCTAssertEqual(try StreamInfo.parse(info), stream(length: 3, last: "7-0", added: 12, first: "4-0"))
    }
}
