import AuthorizerCore
import XCTest

final class TerminalRequestParserTests: XCTestCase {
    private func parse(_ line: String) -> Result<TerminalRequest, RequestRejection> {
        Array(line.utf8).withUnsafeBytes { TerminalRequestParser.parse(line: $0, makeID: { "generated-id" }) }
    }

    private func reason(_ line: String) -> String? {
        if case .failure(let rejection) = parse(line) { return rejection.reason }
        return nil
    }

    func testTypeAbsentNullOrAuthorizationIsAnAuthorization() throws {
        for type in ["", #""type":null,"#, #""type":"authorization","#] {
            let line = "{\(type)\"id\":\"a\",\"account\":\"1\",\"totalAmount\":1.5,\"mcc\":\"5411\",\"merchant\":\"M\"}"
            guard case .success(.authorization(let request)) = parse(line) else { return XCTFail(line) }
            XCTAssertEqual(request.amount, Cents(150))
        }
    }

    func testReversalWithAndWithoutOptionalFields() throws {
        XCTAssertEqual(
            try parse(#"{"type":"reversal","id":"r","account":"1","original":"o"}"#).get(),
            .reversal(ReversalRequest(id: "r", account: "1", original: "o"))
        )
        XCTAssertEqual(
            try parse(#"{"type":"reversal","id":"r","account":"1","original":"o","totalAmount":"100.10","mcc":"5811","merchant":"PADARIA"}"#).get(),
            .reversal(ReversalRequest(id: "r", account: "1", original: "o", amount: Cents(10_010), mcc: "5811", merchant: "PADARIA"))
        )
        XCTAssertEqual(try parse(#"{"type":"reversal","account":"1","original":"o"}"#).get().id, "generated-id")
    }

    func testBalanceInquiry() throws {
        XCTAssertEqual(try parse(#"{"type":"balance","id":"b","account":"1"}"#).get(), .balance(BalanceInquiry(id: "b", account: "1")))
    }

    func testBadTypesAndFieldsGiveAReasonAndKeepTheId() {
        XCTAssertEqual(reason(#"{"type":"refund","id":"x","account":"1"}"#), "type must be authorization, reversal or balance")
        XCTAssertEqual(reason(#"{"type":1,"account":"1"}"#), "type must be a string")
        XCTAssertEqual(reason(#"{"type":"reversal","account":"1"}"#), "original is missing")
        XCTAssertEqual(reason(#"{"type":"reversal","account":"1","original":{}}"#), "original must be a string")
        XCTAssertEqual(reason(#"{"type":"reversal","id":"o","account":"1","original":"o"}"#), "a reversal needs an id of its own, not the original's")
        XCTAssertEqual(reason(#"{"type":"reversal","account":"1","original":"o","totalAmount":0}"#), "totalAmount: amount must be greater than zero")
        XCTAssertEqual(reason(#"{"type":"reversal","account":"1","original":"o","mcc":"58"}"#), "mcc must be exactly 4 digits")
        XCTAssertEqual(reason(#"{"type":"balance"}"#), "account is missing")
        guard case .failure(let rejection) = parse(#"{"type":"balance","id":"keep","account":5}"#) else { return XCTFail() }
        XCTAssertEqual(rejection.id, "keep")
    }
}
