@testable import AuthorizerCore
import XCTest

/// The codec and the translation, with messages written out by hand.
final class ISO8583CodecTests: XCTestCase {
    private func decode(_ text: String) -> Result<ISO8583.Message, ISO8583.DecodeError> {
        Array(text.utf8).withUnsafeBytes { ISO8583.decode($0) }
    }

    // An 0800 echo: DE7, DE11, DE70 -> primary 8220000000000000 (DE1, DE7, DE11), secondary 0400000000000000 (DE70).
    static let echo = "0800" + "8220000000000000" + "0400000000000000" + "1126120000" + "000001" + "301"

    // An 0200: DE2 (LLVAR), DE3, DE4, DE11, DE49 -> bits 2, 3, 4, 11, 49.
    static let purchase = "0200" + "7020000000008000" + "07" + "4000001" + "000000" + "000000010010" + "000042" + "986"

    func testDecodesAHandBuiltEcho() throws {
        let message = try decode(Self.echo).get()
        XCTAssertEqual(message.mti, "0800")
        XCTAssertEqual(message.fields, [7: "1126120000", 11: "000001", 70: "301"])
    }

    func testDecodesLLVARAndEncodesTheSameBytes() throws {
        let message = try decode(Self.purchase).get()
        XCTAssertEqual(message.fields, [2: "4000001", 3: "000000", 4: "000000010010", 11: "000042", 49: "986"])
        XCTAssertEqual(String(decoding: try ISO8583.encode(message), as: UTF8.self), Self.purchase)
        let echo = try decode(Self.echo).get()
        XCTAssertEqual(String(decoding: try ISO8583.encode(echo), as: UTF8.self), Self.echo)
    }

    func testLowercaseBitmapIsRead() throws {
        // a = bits 1 (secondary bitmap) and 3 (processing code).
        let message = try decode("0800" + "a220000000000000" + "0400000000000000" + "000000" + "1126120000" + "000001" + "301").get()
        XCTAssertEqual(message.fields, [3: "000000", 7: "1126120000", 11: "000001", 70: "301"])
    }

    func testErrorsKeepWhatWasRead() {
        guard case .failure(let short) = decode("08") else { return XCTFail() }
        XCTAssertNil(short.mti)
        guard case .failure(let mti) = decode("08A0" + "0020000000000000" + "000001") else { return XCTFail() }
        XCTAssertNil(mti.mti)
        guard case .failure(let bitmap) = decode("0800" + "00200000000000G0" + "000001") else { return XCTFail() }
        XCTAssertEqual(bitmap.mti, "0800")
        XCTAssertEqual(bitmap.reason, "primary bitmap must be 16 hex characters")
        guard case .failure(let secondary) = decode("0800" + "8020000000000000" + "04000000") else { return XCTFail() }
        XCTAssertEqual(secondary.reason, "secondary bitmap must be 16 hex characters")
        guard case .failure(let truncated) = decode(String(Self.purchase.dropLast(2))) else { return XCTFail() }
        XCTAssertEqual(truncated.mti, "0200")
        XCTAssertEqual(truncated.fields[11], "000042")
        XCTAssertEqual(truncated.reason, "field 49: truncated (3 bytes expected, 1 left)")
        guard case .failure(let trailing) = decode(Self.purchase + "X") else { return XCTFail() }
        XCTAssertEqual(trailing.reason, "1 bytes after the last field")
        guard case .failure(let over) = decode("0200" + "4000000000000000" + "20" + "12345678901234567890") else { return XCTFail() }
        XCTAssertEqual(over.reason, "field 2: length 20 over its maximum 19")
        guard case .failure(let letters) = decode("0200" + "4000000000000000" + "1A" + "1") else { return XCTFail() }
        XCTAssertEqual(letters.reason, "field 2: length prefix must be 2 digits")
        guard case .failure(let control) = decode("0800" + "0020000000000000" + "00\u{01}001") else { return XCTFail() }
        XCTAssertEqual(control.reason, "field 11: not printable ASCII")
    }

    func testEncodeRefusesWrongLengths() {
        XCTAssertThrowsError(try ISO8583.encode(ISO8583.Message(mti: "0810", fields: [11: "1"])))
        XCTAssertThrowsError(try ISO8583.encode(ISO8583.Message(mti: "081", fields: [:])))
        XCTAssertThrowsError(try ISO8583.encode(ISO8583.Message(mti: "0810", fields: [2: String(repeating: "1", count: 20)])))
        XCTAssertThrowsError(try ISO8583.encode(ISO8583.Message(mti: "0810", fields: [65: String(repeating: "0", count: 16)])))
    }

    func testSpecsMatchTheASCIILayout() {
        XCTAssertEqual(ISO8583.specs[2], .init(lengthDigits: 2, maxLength: 19))
        XCTAssertEqual(ISO8583.specs[43], .init(lengthDigits: 0, maxLength: 40))
        XCTAssertEqual(ISO8583.specs[54], .init(lengthDigits: 3, maxLength: 240))
        XCTAssertEqual(ISO8583.specs[90], .init(lengthDigits: 0, maxLength: 42))
        XCTAssertEqual(ISO8583.specs[128], .init(lengthDigits: 0, maxLength: 16))
        XCTAssertTrue((1...128).allSatisfy { ISO8583.specs[$0].maxLength > 0 })
    }

    func testResponseMTI() {
        XCTAssertEqual(ISO8583.responseMTI(for: "0100"), "0110")
        XCTAssertEqual(ISO8583.responseMTI(for: "0101"), "0110")
        XCTAssertEqual(ISO8583.responseMTI(for: "0401"), "0410")
        XCTAssertEqual(ISO8583.responseMTI(for: "0800"), "0810")
        XCTAssertNil(ISO8583.responseMTI(for: "0110"))
    }

    // MARK: - Translation

    static let merchant = "PADARIA DO ZE            SAO PAULO    BR"

    func purchaseMessage() -> ISO8583.Message {
        ISO8583.Message(mti: "0200", fields: [
            2: "4000001", 3: "000000", 4: "000000010010", 11: "000042", 18: "5411", 37: "RRN1        ",
            41: "TERM0001", 42: "MERCHANT0000001", 43: Self.merchant, 49: "986",
        ])
    }

    func testPurchaseBecomesAnAuthorizationWithStatementFields() throws {
        guard case .success(.request(.authorization(let request))) = ISO8583Translator.interpret(purchaseMessage()) else { return XCTFail() }
        XCTAssertEqual(request.id, "RRN1")
        XCTAssertEqual(request.account, "", "resolved by serve: through the PAN index, or as the account with --iso-pan-as-account")
        XCTAssertEqual(request.accountIfNoCard, "4000001")
        XCTAssertNil(request.card, "seven digits are not a PAN")
        XCTAssertEqual(request.amount, Cents(10_010))
        XCTAssertEqual(request.mcc, "5411")
        XCTAssertEqual(request.merchant, Self.merchant)
        XCTAssertEqual(request.statementFields, ["channel", "iso8583", "stan", "000042", "rrn", "RRN1", "terminal", "TERM0001", "merchant_id", "MERCHANT0000001"])
    }

    func testRefusalCodes() {
        func code(_ change: (inout ISO8583.Message) -> Void) -> String? {
            var message = purchaseMessage()
            change(&message)
            if case .failure(let refusal) = ISO8583Translator.interpret(message) { return refusal.code }
            return nil
        }
        XCTAssertEqual(code { $0[49] = "840" }, "12")
        XCTAssertEqual(code { $0[3] = "200000" }, "12")
        XCTAssertEqual(code { $0[4] = "000000000000" }, "13")
        XCTAssertEqual(code { $0[4] = nil }, "30")
        XCTAssertEqual(code { $0[2] = "40000A1" }, "30")
        XCTAssertEqual(code { $0[37] = "RRN 1       " }, "30")
        XCTAssertEqual(code { $0[43] = nil }, "30")
        XCTAssertEqual(code { $0[11] = nil }, "30")
        XCTAssertEqual(code { $0.mti = "0300" }, "12")
        XCTAssertNil(code { _ in })
    }

    func testDecisionCodes() {
        XCTAssertEqual(ISO8583Translator.responseCode(for: .approved), "00")
        XCTAssertEqual(ISO8583Translator.responseCode(for: .insufficientFunds), "51")
        XCTAssertEqual(ISO8583Translator.responseCode(for: .rejected(RejectReason.unknownAccount)), "14")
        XCTAssertEqual(ISO8583Translator.responseCode(for: .rejected(RejectReason.timeout)), "91")
        XCTAssertEqual(ISO8583Translator.responseCode(for: .rejected(RejectReason.storageUnavailable)), "91")
        XCTAssertEqual(ISO8583Translator.responseCode(for: .rejected(RejectReason.accountBusy)), "05")
        XCTAssertEqual(ISO8583Translator.responseCode(for: .rejected(RejectReason.reversed)), "05")
    }

    func testAnswerEchoesAndAddsAuthorizationID() throws {
        let answer = try XCTUnwrap(ISO8583Translator.answer(to: purchaseMessage(), code: "00"))
        XCTAssertEqual(answer.mti, "0210")
        XCTAssertEqual(Set(answer.fields.keys), [2, 3, 4, 11, 37, 38, 39, 41, 42])
        XCTAssertEqual(answer[38], ISO8583Translator.authorizationID(account: "4000001", rrn: "RRN1"))
        let declined = try XCTUnwrap(ISO8583Translator.answer(to: purchaseMessage(), code: "51"))
        XCTAssertNil(declined[38])
    }

    func testBalanceBlocks() {
        let blocks = ISO8583Translator.balanceBlocks([
            CategoryBalance(category: "CASH", balance: Cents(100_000)),
            CategoryBalance(category: "FOOD", balance: Cents(-5)),
            CategoryBalance(category: "TOYS", balance: Cents(1)),
        ])
        XCTAssertEqual(blocks, "0002986C000000100000" + "0102986D000000000005" + "9902986C000000000001")
    }
}
