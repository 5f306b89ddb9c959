import AuthorizerCore
@testable import RedisWire
import XCTest

final class HashSlotTests: XCTestCase {
    /// The reference vector of the cluster specification.
    func testCRC16ReferenceVector() {
        XCTAssertEqual(HashSlot.crc16(Array("123456789".utf8)), 0x31C3)
        XCTAssertEqual(HashSlot.crc16([UInt8]()), 0)
    }

    /// Slots Redis reports with CLUSTER KEYSLOT (Redis 7.0).
    func testSlotsAsRedisComputesThem() {
        XCTAssertEqual(HashSlot.of(key: "foo"), 12_182)
        XCTAssertEqual(HashSlot.of(key: "bar"), 5_061)
        XCTAssertEqual(HashSlot.of(key: "123456789"), 0x31C3 % 16_384)
    }

    func testHashTags() {
        XCTAssertEqual(HashSlot.of(key: "{user1000}.following"), HashSlot.of(key: "{user1000}.followers"))
        XCTAssertEqual(HashSlot.of(key: "{user1000}.following"), HashSlot.of(key: "user1000"))
        // Only the first `{` and the next `}` count; an empty tag hashes the whole key.
        XCTAssertEqual(HashSlot.of(key: "foo{}{bar}"), HashSlot.of(key: "foo{}{bar}"))
        XCTAssertNotEqual(HashSlot.of(key: "foo{}{bar}"), HashSlot.of(key: "bar"))
        XCTAssertEqual(HashSlot.of(key: "foo{{bar}}zap"), HashSlot.of(key: "{bar"))
        XCTAssertEqual(HashSlot.of(key: "foo{bar}{zap}"), HashSlot.of(key: "bar"))
        XCTAssertEqual(HashSlot.of(key: "{unclosed"), HashSlot.of(key: Array("{unclosed".utf8)))
    }

    func testEveryKeyOfAnAccountIsOnOneSlot() {
        for account in ["123", "hot", "a-b.c:d_e"] {
            let slot = HashSlot.of(key: Keys.account(account))
            XCTAssertEqual(HashSlot.of(key: Keys.lock(account)), slot)
            XCTAssertEqual(HashSlot.of(key: Keys.transaction(account: account, id: "9f2c")), slot)
            XCTAssertEqual(HashSlot.of(key: Keys.notifications(account)), slot)
            XCTAssertEqual(slot, HashSlot.of(key: account))
            XCTAssertTrue((0..<HashSlot.count).contains(slot))
        }
    }
}

final class StreamTagTests: XCTestCase {
    func testEverySlotHasTheSmallestIntegerTagOfThatSlot() {
        let tags = HashSlot.streamTags
        XCTAssertEqual(tags.count, HashSlot.count)
        for (slot, tag) in tags.enumerated() {
            XCTAssertEqual(HashSlot.of(key: "statements:{\(tag)}"), slot)
            guard let value = Int(tag) else { return XCTFail("tag \(tag)") }
            // No smaller integer has this slot.
            if slot % 1_024 == 0 {
                XCTAssertFalse((0..<value).contains { HashSlot.of(key: String($0)) == slot }, "slot \(slot)")
            }
        }
    }

    /// The digit-by-digit computation gives the table of its definition.
    func testTheTableIsItsDefinition() {
        var reference = [String?](repeating: nil, count: HashSlot.count)
        var missing = HashSlot.count
        var candidate = 0
        while missing > 0 {
            let slot = HashSlot.of(key: String(candidate))
            if reference[slot] == nil {
                reference[slot] = String(candidate)
                missing -= 1
            }
            candidate += 1
        }
        XCTAssertEqual(HashSlot.makeStreamTags(), reference.map { $0 ?? "" })
    }
}
