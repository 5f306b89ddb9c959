@testable import AuthorizerCore
import XCTest

final class CardsTests: XCTestCase {
    func testAPANIsShownMaskedFirstSixLastFour() throws {
        XCTAssertEqual(PAN("9990001234567890")?.masked, "999000******7890")
        XCTAssertEqual(PAN("123456789012")?.masked, "123456**9012")
        XCTAssertNil(PAN("12345678901"), "shorter than 12")
        XCTAssertNil(PAN("99900012345678901234"), "longer than 19")
        XCTAssertNil(PAN("9990 0012 3456 7890"))
    }

    func testLuhnAndGeneratedPANs() {
        XCTAssertTrue(PAN("9990001234567890")!.passesLuhn)
        XCTAssertFalse(PAN("9990001234567891")!.passesLuhn)
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<100 {
            let pan = PAN.generate(bin: "999000", using: &generator)
            XCTAssertTrue(pan.passesLuhn)
            XCTAssertTrue(pan.digits.hasPrefix("999000"))
            XCTAssertEqual(pan.digits.count, 16)
        }
    }

    func testACardIsNamedByPANOrById() {
        XCTAssertEqual(CardReference("9990001234567890"), .pan(PAN("9990001234567890")!))
        XCTAssertEqual(CardReference("crd_abc123"), .id("crd_abc123"))
        XCTAssertNil(CardReference("abc"), "neither a PAN nor a card id")
        XCTAssertNil(CardReference("crd_"))
        XCTAssertEqual(CardReference("9990001234567890")?.shown, "999000******7890")
    }

    func testExpiryIsYYMM() {
        XCTAssertEqual(CardExpiry("2712")?.description, "2712")
        XCTAssertEqual(CardExpiry("0301")?.year, 3)
        XCTAssertNil(CardExpiry("2713"))
        XCTAssertNil(CardExpiry("2700"))
        XCTAssertNil(CardExpiry("271"))
        XCTAssertEqual(CardExpiry("2712")?.adding(years: 5).description, "3212")
    }

    func testTheTerminalMayNameACardInsteadOfAnAccount() throws {
        func parse(_ line: String) -> Result<TerminalRequest, RequestRejection> {
            Array(line.utf8).withUnsafeBytes { TerminalRequestParser.parse(line: $0, makeID: { "generated" }) }
        }
        guard case .success(.authorization(let byCard)) = parse(#"{"id":"1","card":"9990001234567890","totalAmount":"1.00","mcc":"5411","merchant":"M","expiry":"2712"}"#) else {
            return XCTFail("a card-only authorization")
        }
        XCTAssertEqual(byCard.account, "")
        XCTAssertEqual(byCard.cardExpiry, "2712")
        guard case .success(.authorization(let both)) = parse(#"{"id":"2","account":"a1","card":"crd_x1","totalAmount":"1.00","mcc":"5411","merchant":"M"}"#) else {
            return XCTFail("account and card")
        }
        XCTAssertEqual(both.account, "a1")
        XCTAssertEqual(both.card, .id("crd_x1"))
        guard case .failure(let bad) = parse(#"{"id":"3","card":"12","totalAmount":"1.00","mcc":"5411","merchant":"M"}"#) else { return XCTFail() }
        XCTAssertEqual(bad.reason, CardReference.rule)
        guard case .failure(let noCard) = parse(#"{"id":"4","account":"a1","expiry":"2712","totalAmount":"1.00","mcc":"5411","merchant":"M"}"#) else { return XCTFail() }
        XCTAssertEqual(noCard.reason, "expiry needs a card")
        guard case .failure(let neither) = parse(#"{"id":"5","totalAmount":"1.00","mcc":"5411","merchant":"M"}"#) else { return XCTFail() }
        XCTAssertEqual(neither.reason, "account is missing")
        guard case .success(.balance(let balance)) = parse(#"{"type":"balance","id":"6","card":"crd_x1"}"#) else { return XCTFail() }
        XCTAssertEqual(balance.card, .id("crd_x1"))
    }

    func testACardRefusalReadBackIsACardReasonWithItsCode() {
        for refusal in CardRefusal.allCases {
            XCTAssertEqual(RejectReason(text: refusal.rawValue), .card(refusal))
            XCTAssertTrue(RejectReason.card(refusal).code.hasPrefix("card_"))
        }
        XCTAssertEqual(ISO8583Translator.responseCode(for: .rejected(.card(.lost))), "41")
        XCTAssertEqual(ISO8583Translator.responseCode(for: .rejected(.card(.stolen))), "43")
        XCTAssertEqual(ISO8583Translator.responseCode(for: .rejected(.card(.cancelled))), "46")
        XCTAssertEqual(ISO8583Translator.responseCode(for: .rejected(.card(.expired))), "54")
        XCTAssertEqual(ISO8583Translator.responseCode(for: .rejected(.card(.blocked))), "62")
        XCTAssertEqual(ISO8583Translator.responseCode(for: .rejected(.card(.unknown))), "14")
    }
}
