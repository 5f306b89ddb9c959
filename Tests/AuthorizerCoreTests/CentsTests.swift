import AuthorizerCore
import XCTest

final class CentsTests: XCTestCase {
    private func assertParses(_ text: String, _ cents: Int64, allowZero: Bool = false, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(Cents.parse(text, allowZero: allowZero), .success(Cents(cents)), "parsing \"\(text)\"", file: file, line: line)
    }

    private func assertRefuses(_ text: String, _ error: AmountError, allowZero: Bool = false, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(Cents.parse(text, allowZero: allowZero), .failure(error), "parsing \"\(text)\"", file: file, line: line)
    }

    func testPlainDecimals() {
        assertParses("100.10", 10010)
        assertParses("100", 10000)
        assertParses("100.1", 10010)
        assertParses("0.01", 1)
        assertParses("0.10", 10)
        assertParses("1205.11", 120511)
        assertParses("1", 100)
    }

    func testTrailingZerosBeyondTwoDecimalsAreAllowed() {
        assertParses("100.100", 10010)
        assertParses("100.1000000", 10010)
        assertParses("0.010", 1)
    }

    func testLeadingZerosAreAccepted() {
        assertParses("007.50", 750)
        assertParses("00.01", 1)
    }

    func testSignificantThirdDecimalIsRefused() {
        assertRefuses("0.001", .tooManyDecimals)
        assertRefuses("100.101", .tooManyDecimals)
        assertRefuses("1.0000001", .tooManyDecimals)
    }

    func testZero() {
        assertRefuses("0", .zero)
        assertRefuses("0.00", .zero)
        assertRefuses("000.000", .zero)
        assertParses("0", 0, allowZero: true)
        assertParses("0.00", 0, allowZero: true)
    }

    func testNegativeZeroIsRefusedAsZeroOrNegative() {
        switch Cents.parse("-0") {
        case .success(let cents): XCTFail("-0 was accepted as \(cents)")
        case .failure(let error): XCTAssertTrue([.zero, .negative].contains(error), "got \(error)")
        }
        switch Cents.parse("-0.00") {
        case .success(let cents): XCTFail("-0.00 was accepted as \(cents)")
        case .failure(let error): XCTAssertTrue([.zero, .negative].contains(error), "got \(error)")
        }
    }

    func testNegativeAmounts() {
        assertRefuses("-5", .negative)
        assertRefuses("-0.01", .negative)
        assertRefuses("-5", .negative, allowZero: true)
        assertRefuses("-" + String(repeating: "9", count: 400), .negative)
    }

    func testNonDecimalSpellingsAreRefused() {
        for text in ["1e2", "1E2", "NaN", "nan", "Infinity", ".", "5.", ".5", "+5", " 5", "5 ", "-", "--5", "1.2.3",
                     "1,00", "0x10", "5-", "1_000", "١٢", "５"] {
            assertRefuses(text, .notADecimal)
        }
    }

    func testEmpty() {
        assertRefuses("", .empty)
    }

    func testUpperBound() {
        assertParses("10000000000.00", 1_000_000_000_000)
        assertParses("10000000000", 1_000_000_000_000)
        assertParses("9999999999.99", 999_999_999_999)
        assertRefuses("10000000000.01", .tooLarge)
        assertRefuses("10000000001", .tooLarge)
        XCTAssertEqual(Cents.maxTransaction, Cents(1_000_000_000_000))
    }

    func testHugeNumbersAreTooLargeWithoutOverflow() {
        assertRefuses(String(repeating: "9", count: 400), .tooLarge)
        assertRefuses("1" + String(repeating: "0", count: 399), .tooLarge)
        assertRefuses(String(repeating: "9", count: 400) + ".99", .tooLarge)
        assertRefuses("9223372036854775807", .tooLarge)
        assertRefuses("9223372036854775808", .tooLarge)
        assertRefuses("92233720368547758.08", .tooLarge)
    }

    func testFormatErrorsWinOverSize() {
        assertRefuses(String(repeating: "9", count: 400) + "x", .notADecimal)
        assertRefuses(String(repeating: "9", count: 400) + ".001", .tooManyDecimals)
    }

    func testCustomLimit() {
        XCTAssertEqual(Cents.parse("5.00", limit: Cents(500)), .success(Cents(500)))
        XCTAssertEqual(Cents.parse("5.01", limit: Cents(500)), .failure(.tooLarge))
        XCTAssertEqual(Cents.parse("90071992547409.91", limit: .maxBalance), .success(Cents.maxBalance))
        XCTAssertEqual(Cents.parse("90071992547409.92", limit: .maxBalance), .failure(.tooLarge))
    }

    func testParsesFromByteCollections() {
        XCTAssertEqual(Cents.parse(digits: Array("12.34".utf8)), .success(Cents(1234)))
        XCTAssertEqual(Cents.parse(digits: "x12.34y".utf8.dropFirst().dropLast()), .success(Cents(1234)))
        XCTAssertEqual(Cents.parse(digits: [UInt8]()), .failure(.empty))
    }

    func testMaxBalanceIsBelowTwoToThe53() {
        XCTAssertEqual(Cents.maxBalance.value, 9_007_199_254_740_991)
    }

    func testDescription() {
        XCTAssertEqual(Cents(120511).description, "1205.11")
        XCTAssertEqual(Cents(5).description, "0.05")
        XCTAssertEqual(Cents(-307).description, "-3.07")
        XCTAssertEqual(Cents(0).description, "0.00")
        XCTAssertEqual(Cents(10).description, "0.10")
        XCTAssertEqual(Cents(-1).description, "-0.01")
        XCTAssertEqual(Cents(1_000_000_000_000).description, "10000000000.00")
        XCTAssertEqual(Cents(.min).description, "-92233720368547758.08")
        XCTAssertEqual(Cents(.max).description, "92233720368547758.07")
    }

    func testDescriptionRoundTripsThroughParse() {
        for value: Int64 in [1, 9, 10, 99, 100, 101, 12345, 999_999_999_999, 1_000_000_000_000] {
            XCTAssertEqual(Cents.parse(Cents(value).description), .success(Cents(value)))
        }
    }

    func testOrdering() {
        XCTAssertLessThan(Cents(-1), Cents(0))
        XCTAssertLessThan(Cents(99), Cents(100))
        XCTAssertEqual([Cents(3), Cents(1), Cents(2)].sorted(), [Cents(1), Cents(2), Cents(3)])
    }

    func testErrorDescriptionsAreHumanReadable() {
        XCTAssertEqual(AmountError.tooLarge.description, "amount exceeds the maximum of 10000000000.00")
        XCTAssertEqual(AmountError.tooManyDecimals.description, "amount has more than 2 decimal places")
        XCTAssertTrue(AmountError.notADecimal.description.contains("100.10"))
    }
}
