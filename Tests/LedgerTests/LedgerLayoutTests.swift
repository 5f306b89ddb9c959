@testable import Ledger
import RedisWire
import XCTest

final class LedgerLayoutTests: XCTestCase {
    func testEverySlotHasTheSmallestIntegerTagOfThatSlot() {
        let tags = LedgerLayout.tags
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
        XCTAssertEqual(LedgerLayout.makeTags(), reference.map { $0 ?? "" })
    }
}
