import AuthorizerCore
import XCTest

final class TransactionRequestParserTests: XCTestCase {
    private let exampleMerchant = "PADARIA DO ZE               SAO PAULO BR"

    // MARK: Accepted requests

    func testProtocolExample() {
        let line = #"{"id":"9f2c","account":"123","totalAmount":100.10,"mcc":"5811","merchant":"PADARIA DO ZE               SAO PAULO BR"}"#
        var generated = 0
        let result = parseRequest(line, makeID: { generated += 1; return "unused" })
        XCTAssertEqual(
            assertAccepted(result),
            TransactionRequest(id: "9f2c", account: "123", amount: Cents(10010), mcc: "5811", merchant: exampleMerchant)
        )
        XCTAssertEqual(generated, 0, "makeID must not be called when the request has an id")
    }

    func testAmountAsString() {
        XCTAssertEqual(assertAccepted(parseRequest(requestLine(totalAmount: #""100.10""#)))?.amount, Cents(10010))
        XCTAssertEqual(assertAccepted(parseRequest(requestLine(totalAmount: #""7""#)))?.amount, Cents(700))
    }

    func testAmountSpellings() {
        XCTAssertEqual(assertAccepted(parseRequest(requestLine(totalAmount: "100")))?.amount, Cents(10000))
        XCTAssertEqual(assertAccepted(parseRequest(requestLine(totalAmount: "100.1")))?.amount, Cents(10010))
        XCTAssertEqual(assertAccepted(parseRequest(requestLine(totalAmount: "100.100")))?.amount, Cents(10010))
        XCTAssertEqual(assertAccepted(parseRequest(requestLine(totalAmount: "0.01")))?.amount, Cents(1))
        XCTAssertEqual(assertAccepted(parseRequest(requestLine(totalAmount: "10000000000.00")))?.amount, Cents.maxTransaction)
    }

    func testMissingIDUsesMakeID() {
        var generated = 0
        let result = parseRequest(requestLine(id: nil), makeID: { generated += 1; return "gen-1" })
        XCTAssertEqual(assertAccepted(result)?.id, "gen-1")
        XCTAssertEqual(generated, 1)
    }

    func testNullIDUsesMakeID() {
        XCTAssertEqual(assertAccepted(parseRequest(requestLine(id: "null"), makeID: { "gen-2" }))?.id, "gen-2")
    }

    func testNumericIDIsEchoedAsWritten() {
        XCTAssertEqual(assertAccepted(parseRequest(requestLine(id: "42")))?.id, "42")
        XCTAssertEqual(assertAccepted(parseRequest(requestLine(id: "-1.50")))?.id, "-1.50")
    }

    func testMakeIDIsNotCalledForRejectedLines() {
        var generated = 0
        _ = parseRequest(requestLine(id: nil, account: nil), makeID: { generated += 1; return "x" })
        _ = parseRequest("{", makeID: { generated += 1; return "x" })
        XCTAssertEqual(generated, 0)
    }

    func testMemberOrderDoesNotMatter() {
        let line = #"{"merchant":"M","mcc":"5411","totalAmount":"1.00","account":"acc-1","id":"t:1"}"#
        XCTAssertEqual(
            assertAccepted(parseRequest(line)),
            TransactionRequest(id: "t:1", account: "acc-1", amount: Cents(100), mcc: "5411", merchant: "M")
        )
    }

    func testWhitespaceAroundTokensAndTrailingCarriageReturn() {
        let line = " { \"id\" : \"a\" ,\n\"account\":\t\"b\" , \"totalAmount\" : 1 , \"mcc\" : \"5411\" , \"merchant\" : \"M\" } \r"
        XCTAssertEqual(assertAccepted(parseRequest(line))?.account, "b")
    }

    func testMerchantIsKeptVerbatim() {
        let merchant = "  uber   eats\u{7E} "
        XCTAssertEqual(assertAccepted(parseRequest(requestLine(merchant: "\"\(merchant)\"")))?.merchant, merchant)
    }

    // MARK: Missing or wrongly typed fields

    func testMissingFieldsAreNamedAndIDIsEchoed() {
        assertRejected(parseRequest(requestLine(account: nil)), id: "9f2c", reasonContains: "account is missing")
        assertRejected(parseRequest(requestLine(totalAmount: nil)), id: "9f2c", reasonContains: "totalAmount is missing")
        assertRejected(parseRequest(requestLine(mcc: nil)), id: "9f2c", reasonContains: "mcc is missing")
        assertRejected(parseRequest(requestLine(merchant: nil)), id: "9f2c", reasonContains: "merchant is missing")
    }

    func testMissingFieldsWithoutIDHaveNoID() {
        assertRejected(parseRequest(requestLine(id: nil, account: nil)), id: nil, reasonContains: "account is missing")
        assertRejected(parseRequest("{}"), id: nil, reasonContains: "account is missing")
    }

    func testWronglyTypedFieldsAreNamed() {
        for value in ["123", "true", "null", "{}", "[\"123\"]"] {
            assertRejected(parseRequest(requestLine(account: value)), id: "9f2c", reasonContains: "account must be a string")
            assertRejected(parseRequest(requestLine(mcc: value)), id: "9f2c", reasonContains: "mcc must be a string")
            assertRejected(parseRequest(requestLine(merchant: value)), id: "9f2c", reasonContains: "merchant must be a string")
        }
        for value in ["true", "false", "null", "{}", "[100.10]"] {
            assertRejected(parseRequest(requestLine(totalAmount: value)), id: "9f2c", reasonContains: "totalAmount must be a number")
        }
    }

    func testWronglyTypedIDIsRefusedWithoutEcho() {
        for value in ["true", "{}", "[\"9f2c\"]"] {
            assertRejected(parseRequest(requestLine(id: value)), id: nil, reasonContains: "id must be a string")
        }
    }

    func testInvalidIDIsRefusedWithoutEcho() {
        let tooLong = String(repeating: "a", count: 65)
        for value in [#""""#, #""a b""#, #""{9f2c}""#, "\"\(tooLong)\"", #""é""#, "1e+5", #""a\nb""#] {
            assertRejected(parseRequest(requestLine(id: value)), id: nil, reasonContains: "id must be")
        }
        XCTAssertEqual(assertAccepted(parseRequest(requestLine(id: "\"\(String(repeating: "a", count: 64))\"")))?.id.count, 64)
    }

    func testFirstInvalidFieldIsReportedInFieldOrder() {
        assertRejected(parseRequest(requestLine(account: "1", mcc: "1")), id: "9f2c", reasonContains: "account")
        assertRejected(parseRequest(requestLine(totalAmount: "0", mcc: "1")), id: "9f2c", reasonContains: "totalAmount")
        assertRejected(parseRequest(requestLine(mcc: "1", merchant: "1")), id: "9f2c", reasonContains: "mcc")
    }

    // MARK: Account

    func testAccountValidation() {
        for account in ["{123}", "12 3", " 123", "a{b", "a}b", "ação", String(repeating: "1", count: 65), "", "a/b", "a*b"] {
            assertRejected(parseRequest(requestLine(account: "\"\(account)\"")), id: "9f2c", reasonContains: "account must be 1-64 characters")
        }
        for account in ["a", "A-z_0.9:x", String(repeating: "1", count: 64)] {
            XCTAssertEqual(assertAccepted(parseRequest(requestLine(account: "\"\(account)\"")))?.account, account)
        }
    }

    // MARK: Amount

    func testAmountRefusalsNameTheField() {
        let cases: [(String, String)] = [
            ("1e309", "plain decimal"),
            ("1E2", "plain decimal"),
            ("-0", "greater than zero"),
            ("0", "greater than zero"),
            ("0.00", "greater than zero"),
            ("-5", "greater than zero"),
            ("0.001", "more than 2 decimal places"),
            ("10000000000.01", "exceeds the maximum"),
            (String(repeating: "9", count: 400), "exceeds the maximum"),
            ("1" + String(repeating: "0", count: 4000), "exceeds the maximum"),
            (#""NaN""#, "plain decimal"),
            (#""Infinity""#, "plain decimal"),
            (#""""#, "amount is empty"),
            (#"" 100.10""#, "plain decimal"),
            (#""100,10""#, "plain decimal"),
            (#""+100""#, "plain decimal"),
            (#"".5""#, "plain decimal"),
            (#""5.""#, "plain decimal"),
        ]
        for (amount, fragment) in cases {
            assertRejected(parseRequest(requestLine(totalAmount: amount)), id: "9f2c", reasonContains: "totalAmount: ")
            assertRejected(parseRequest(requestLine(totalAmount: amount)), id: "9f2c", reasonContains: fragment)
        }
    }

    // MARK: MCC

    func testMCCValidation() {
        for mcc in [#""581""#, #""58110""#, #""""#, #""58a1""#, #"" 5811""#, #""５８１１""#, #""-581""#] {
            assertRejected(parseRequest(requestLine(mcc: mcc)), id: "9f2c", reasonContains: "mcc must be exactly 4 digits")
        }
        assertRejected(parseRequest(requestLine(mcc: "5811")), id: "9f2c", reasonContains: "mcc must be a string")
        XCTAssertEqual(assertAccepted(parseRequest(requestLine(mcc: #""0000""#)))?.mcc, "0000")
    }

    // MARK: Merchant

    func testMerchantLength() {
        let two100 = String(repeating: "M", count: 200)
        XCTAssertEqual(assertAccepted(parseRequest(requestLine(merchant: "\"\(two100)\"")))?.merchant, two100)
        assertRejected(parseRequest(requestLine(merchant: "\"\(two100)M\"")), id: "9f2c", reasonContains: "merchant must be 1-200 characters")
        assertRejected(parseRequest(requestLine(merchant: #""""#)), id: "9f2c", reasonContains: "merchant must be 1-200 characters")
        XCTAssertNotNil(assertAccepted(parseRequest(requestLine(merchant: #""M""#))))
    }

    func testMerchantLengthCountsCharactersNotBytes() {
        let accented = String(repeating: "É", count: 200)
        XCTAssertEqual(assertAccepted(parseRequest(requestLine(merchant: "\"\(accented)\"")))?.merchant, accented)
        assertRejected(parseRequest(requestLine(merchant: "\"\(accented)É\"")), id: "9f2c", reasonContains: "1-200 characters")
    }

    func testMerchantControlCharactersAreRefused() {
        for escape in [#"\n"#, #"\t"#, #"\r"#, #"\u0000"#, #"\u001f"#, #"\u007f"#, #"\b"#] {
            assertRejected(
                parseRequest(requestLine(merchant: "\"PADARIA\(escape)ZE\"")),
                id: "9f2c", reasonContains: "merchant must not contain control characters"
            )
        }
        assertRejected(
            parseRequest(bytes: Array(requestLine(merchant: "\"A\u{7F}B\"").utf8)),
            id: "9f2c", reasonContains: "control characters"
        )
        assertRejected(parseRequest(requestLine(merchant: #""A\u0085B""#)), id: "9f2c", reasonContains: "control characters")
    }

    func testBlankMerchantIsRefused() {
        assertRejected(parseRequest(requestLine(merchant: #""   ""#)), id: "9f2c", reasonContains: "merchant must not be blank")
    }

    func testEscapedControlCharactersInOtherFieldsAreRefusedByTheirOwnRules() {
        assertRejected(parseRequest(requestLine(account: #""12\u00003""#)), id: "9f2c", reasonContains: "account must be 1-64")
        assertRejected(parseRequest(requestLine(mcc: #""581\n""#)), id: "9f2c", reasonContains: "mcc must be exactly 4 digits")
    }

    func testMaximumLineLengthIsAccepted() {
        var line = requestLine(extra: [#""pad":"""#])
        line.removeLast(2)
        line += String(repeating: "x", count: TransactionRequestParser.maxLineLength - line.utf8.count - 2) + "\"}"
        XCTAssertEqual(line.utf8.count, TransactionRequestParser.maxLineLength)
        XCTAssertNotNil(assertAccepted(parseRequest(line)))
    }
}
