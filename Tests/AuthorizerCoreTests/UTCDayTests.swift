import AuthorizerCore
import XCTest

final class UTCDayTests: XCTestCase {
    func testCivilDatesOfKnownDays() {
        XCTAssertEqual(UTCDay(number: 0).compact, "19700101")
        XCTAssertEqual(UTCDay(number: -1).compact, "19691231")
        XCTAssertEqual(UTCDay(number: 10_957).compact, "20000101")
        XCTAssertEqual(UTCDay(number: 11_016).compact, "20000229", "a leap day of a year divisible by 400")
        XCTAssertEqual(UTCDay(number: 20_783).compact, "20261126")
        XCTAssertEqual(UTCDay(number: 47_540).compact, "21000228")
        XCTAssertEqual(UTCDay(number: 47_541).compact, "21000301", "2100 is not a leap year")
    }

    func testMidnightUTCStartsTheNextDay() {
        let midnight: Int64 = 1_795_737_600  // 2026-11-27T00:00:00Z
        XCTAssertEqual(UTCDay(unixSeconds: midnight - 1).compact, "20261126")
        XCTAssertEqual(UTCDay(unixSeconds: midnight).compact, "20261127")
        XCTAssertEqual(UTCDay(unixSeconds: -1).number, -1, "floor, not truncation")
    }

    /// Every day of four centuries maps to the next calendar day.
    func testConsecutiveDaysAreConsecutiveDates() {
        var previous = UTCDay(number: -1).civil
        for number in Int64(0)..<146_097 {
            let date = UTCDay(number: number).civil
            if date.day == 1 {
                XCTAssertTrue(previous.day >= 28 && (date.month == previous.month % 12 + 1), "\(previous) -> \(date)")
            } else {
                XCTAssertEqual(date.day, previous.day + 1)
                XCTAssertEqual(date.month, previous.month)
            }
            previous = date
        }
    }

    func testMerchantDigestIsFNV1aOfTheNormalizedDescriptor() {
        // FNV-1a 32 of "" is the offset basis; "a" is normalized to "A" (0xc40bf6cc).
        XCTAssertEqual(MerchantDescriptor("").digest, "811c9dc5")
        XCTAssertEqual(MerchantDescriptor("a").digest, "c40bf6cc")
        XCTAssertEqual(MerchantDescriptor("A").digest, MerchantDescriptor("  a ").digest, "normalized first")
        XCTAssertEqual(MerchantDescriptor("PADARIA  do ze").digest, MerchantDescriptor("PADARIA DO ZE").digest)
        XCTAssertNotEqual(MerchantDescriptor("PADARIA DO ZE").digest, MerchantDescriptor("PADARIA DO ZA").digest)
        XCTAssertEqual(MerchantDescriptor("PADARIA DO ZE").digest.utf8.count, 8)
    }
}
