import AuthorizerCore
import XCTest

final class IdentifiersAndDecisionTests: XCTestCase {
    func testIdentifier() {
        XCTAssertTrue(Identifier.isValid("a"))
        XCTAssertTrue(Identifier.isValid("AZaz09._:-"))
        XCTAssertTrue(Identifier.isValid(String(repeating: "x", count: 64)))
        for invalid in ["", String(repeating: "x", count: 65), "{a}", "a b", "a\tb", "é", "a/b", "a*b", "a\"b", "a\u{0}"] {
            XCTAssertFalse(Identifier.isValid(invalid), invalid)
        }
        XCTAssertTrue(Identifier.isValid("[abc]".dropFirst().dropLast()))
    }

    func testMCC() {
        XCTAssertTrue(MCC.isValid("5811"))
        XCTAssertTrue(MCC.isValid("0000"))
        for invalid in ["", "581", "58110", "58a1", " 581", "５８１１", "-581"] {
            XCTAssertFalse(MCC.isValid(invalid), invalid)
        }
    }

    func testCategoryName() {
        XCTAssertTrue(CategoryName.isValid("FOOD"))
        XCTAssertTrue(CategoryName.isValid("A_1"))
        XCTAssertFalse(CategoryName.isValid("Food"))
        XCTAssertFalse(CategoryName.isValid(String(repeating: "A", count: 33)))
    }

    func testResponseCodes() {
        XCTAssertEqual(ResponseCode.approved.rawValue, "00")
        XCTAssertEqual(ResponseCode.insufficientFunds.rawValue, "51")
        XCTAssertEqual(ResponseCode.rejected.rawValue, "07")
        XCTAssertEqual(ResponseCode(rawValue: "07"), .rejected)
        XCTAssertNil(ResponseCode(rawValue: "05"))
    }

    func testDecisions() {
        XCTAssertEqual(Decision.approved, Decision(code: .approved))
        XCTAssertNil(Decision.approved.reason)
        XCTAssertEqual(Decision.insufficientFunds.code, .insufficientFunds)
        let rejected = Decision.rejected(RejectReason.unknownAccount)
        XCTAssertEqual(rejected.code, .rejected)
        XCTAssertEqual(rejected.reason, "unknown account")
        XCTAssertNotEqual(Decision.rejected(.declined("a")), Decision.rejected(.declined("b")))
        XCTAssertEqual(Decision.rejected(.internalError("boom")).reason, "internal error: boom")
        XCTAssertEqual(Decision.rejected(.invalidRequest("mcc must be 4 digits")).reason, "mcc must be 4 digits")
    }

    func testLineTooLongReasonMatchesTheLimit() {
        XCTAssertTrue(RejectReason.lineTooLong.text.contains(String(TransactionRequestParser.maxLineLength)))
    }

    /// Words read back from Redis (a script's reply, a repeated id's first
    /// decision) map to the reason that wrote them.
    func testReasonsSurviveTheirWords() {
        let reasons: [RejectReason] = [.lineTooLong, .unknownAccount, .accountBusy, .storageUnavailable, .shuttingDown, .internalError(nil)]
        for reason in reasons {
            XCTAssertEqual(RejectReason(text: reason.text), reason)
        }
        XCTAssertEqual(RejectReason(text: "balance is not an integer amount of cents"), .declined("balance is not an integer amount of cents"))
        XCTAssertEqual(RejectReason(text: ""), .declined("declined"))
    }
}
