import AuthorizerCore
import RedisWire
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
