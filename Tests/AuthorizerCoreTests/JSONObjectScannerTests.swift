import AuthorizerCore
import XCTest

final class JSONObjectScannerTests: XCTestCase {
    private let validLine = requestLine()

    private func assertMalformed(
        _ bytes: [UInt8],
        file: StaticString = #filePath,
        line: UInt = #line
    ) {
        assertRejected(parseRequest(bytes: bytes), id: nil, reasonContains: "malformed JSON", file: file, line: line)
    }

    private func assertMalformed(_ text: String, file: StaticString = #filePath, line: UInt = #line) {
        assertMalformed(Array(text.utf8), file: file, line: line)
    }

    /// A valid request with one extra member appended, written as raw bytes.
    private func withExtraMember(_ rawMember: [UInt8]) -> [UInt8] {
        var bytes = Array(validLine.utf8)
        bytes.removeLast()
        return bytes + Array(",".utf8) + rawMember + Array("}".utf8)
    }

    private func nested(_ depth: Int) -> String {
        String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
    }

    // MARK: Values as scanned

    func testKeepsWantedMembersWithTheirKinds() throws {
        let result = scanObject(
            #"{"s":"text","n":-12.50e+3,"t":true,"f":false,"z":null,"o":{"a":[1,2]},"a":[],"skip":1}"#,
            wanted: ["s", "n", "t", "f", "z", "o", "a", "absent"]
        )
        XCTAssertEqual(try result.get(), [
            "s": .string("text"), "n": .number("-12.50e+3"), "t": .bool(true), "f": .bool(false),
            "z": .null, "o": .composite, "a": .composite,
        ])
    }

    func testNumbersKeepTheirExactLexeme() throws {
        let members = try scanObject(#"{"a":100.10,"b":0,"c":-0,"d":1E309,"e":0.001}"#, wanted: ["a", "b", "c", "d", "e"]).get()
        XCTAssertEqual(members["a"], .number("100.10"))
        XCTAssertEqual(members["b"], .number("0"))
        XCTAssertEqual(members["c"], .number("-0"))
        XCTAssertEqual(members["d"], .number("1E309"))
        XCTAssertEqual(members["e"], .number("0.001"))
    }

    func testEmptyObjectAndSurroundingWhitespace() throws {
        XCTAssertEqual(try scanObject("{}", wanted: ["a"]).get(), [:])
        XCTAssertEqual(try scanObject(" \t{ \"a\" : 1 }\r\n ", wanted: ["a"]).get(), ["a": .number("1")])
    }

    func testMemberLimit() {
        let members = (0..<JSONObjectScanner.maxMembers).map { "\"k\($0)\":\($0)" }
        XCTAssertNoThrow(try scanObject("{" + members.joined(separator: ",") + "}", wanted: []).get())
        let tooMany = members + ["\"extra\":1"]
        XCTAssertThrowsError(try scanObject("{" + tooMany.joined(separator: ",") + "}", wanted: []).get())
    }

    private func assertScanError(
        _ text: String, message: String, offset: Int, file: StaticString = #filePath, line: UInt = #line
    ) {
        switch scanObject(text, wanted: []) {
        case .success(let members):
            XCTFail("expected a scan error, got \(members)", file: file, line: line)
        case .failure(let error):
            XCTAssertEqual(error.message, message, file: file, line: line)
            XCTAssertEqual(error.offset, offset, file: file, line: line)
            XCTAssertEqual(error.description, "malformed JSON: \(message) at byte \(offset)", file: file, line: line)
        }
    }

    func testErrorCarriesMessageAndOffset() {
        assertScanError(#"{"a":1}x"#, message: "trailing characters after the object", offset: 7)
        assertScanError("", message: "empty line", offset: 0)
        assertScanError("  [] ", message: "expected an object", offset: 2)
        assertScanError(#"{"a":1,"a":2}"#, message: #"duplicate key "a""#, offset: 10)
        assertScanError(#"{"a":[1;]}"#, message: "expected ',' or closing bracket", offset: 7)
    }

    // MARK: Malformed lines through the request parser

    func testStructuralErrors() {
        for text in [
            "",
            "   ",
            String(validLine.dropLast()),
            validLine + "x",
            validLine + validLine,
            validLine + "}",
            "[" + validLine + "]",
            "[]",
            "\"text\"",
            "42",
            "null",
            "{",
            "}",
            #"{"id""#,
            #"{"id":}"#,
            #"{"id" "9f2c"}"#,
            #"{"id":"9f2c",}"#,
            #"{,"id":"9f2c"}"#,
            #"{"id":"9f2c""account":"123"}"#,
            #"{id:"9f2c"}"#,
            #"{'id':'9f2c'}"#,
            #"{"id":"9f2c"]"#,
            #"{"x":[1,2}"#,
            #"{"x":[1,]}"#,
            #"{"x":{"a"}}"#,
            #"{"x":{"a":1,}}"#,
            #"{"x":{1:2}}"#,
            #"{"x":tru}"#,
            #"{"x":True}"#,
            #"{"x":nul}"#,
            #"{"x":undefined}"#,
            #"{"x":"unterminated}"#,
            "{\"x\":1}\u{0}",
            "\u{0C}{\"x\":1}",
            "{\"x\":\u{0B}1}",
            "\u{FEFF}{\"x\":1}",
        ] {
            assertMalformed(text)
        }
    }

    func testInvalidNumbersAreMalformed() {
        for number in ["01", "-", "1.", ".5", "+1", "1e", "1e+", "--1", "0x10", "NaN", "Infinity", "-Infinity", "1.2.3"] {
            assertMalformed(requestLine(totalAmount: number))
        }
    }

    func testNonUTF8BytesAreRefused() {
        assertMalformed(withExtraMember(Array(#""x":""#.utf8) + [0xFF] + Array(#"""#.utf8)))
        assertMalformed(withExtraMember(Array(#""x":"a"#.utf8) + [0xC3] + Array(#"""#.utf8)))
        assertMalformed(withExtraMember(Array(#""x":""#.utf8) + [0xC0, 0xAF] + Array(#"""#.utf8)))
        assertMalformed(withExtraMember(Array(#""x":""#.utf8) + [0xED, 0xA0, 0x80] + Array(#"""#.utf8)))
        assertMalformed(withExtraMember(Array(#""x":"\n"#.utf8) + [0xFF] + Array(#"""#.utf8)))
        assertMalformed(withExtraMember(Array(#"""#.utf8) + [0xFF] + Array(#"":1"#.utf8)))
        assertMalformed(withExtraMember(Array(#""x":"#.utf8) + [0xFF]))
    }

    func testValidMultibyteUTF8IsAccepted() {
        let result = parseRequest(requestLine(merchant: #""PADARIA SÃO JOÃO 😀""#))
        XCTAssertEqual(assertAccepted(result)?.merchant, "PADARIA SÃO JOÃO 😀")
    }

    func testRawControlCharactersInStringsAreRefused() {
        for byte: UInt8 in [0x00, 0x01, 0x09, 0x0A, 0x0D, 0x1F] {
            assertMalformed(withExtraMember(Array(#""x":"a"#.utf8) + [byte] + Array(#"b""#.utf8)))
            assertMalformed(withExtraMember(Array(#""x":"\t"#.utf8) + [byte] + Array(#"""#.utf8)))
        }
    }

    func testNulByteOutsideStringsIsRefused() {
        assertMalformed(Array(validLine.utf8) + [0x00])
        assertMalformed([0x00] + Array(validLine.utf8))
    }

    func testInvalidEscapesAreRefused() {
        for escape in [#"\x41"#, #"\'"#, #"\a"#, #"\u12"#, #"\u12G4"#, #"\U0041"#, #"\"#, #"\ "#, "\\\u{0}"] {
            assertMalformed(requestLine(extra: ["\"x\":\"a\(escape)\""]))
        }
    }

    func testUnpairedSurrogatesAreRefused() {
        for escape in [#"\ud83d"#, #"\ud83dx"#, #"\ude00"#, #"\ud83d\u0041"#, #"\ud83d\ud83d"#, #"\ude00\ud83d"#, #"\ud83d\n"#] {
            assertMalformed(requestLine(extra: ["\"x\":\"\(escape)\""]))
        }
    }

    func testEscapesAreDecoded() throws {
        let members = try scanObject(
            #"{"a":"caf\u00e9","b":"\ud83d\ude00","c":"\"\\\/\b\f\n\r\t","d":"\u0041\u00E9\uFFFD"}"#,
            wanted: ["a", "b", "c", "d"]
        ).get()
        XCTAssertEqual(members["a"], .string("café"))
        XCTAssertEqual(members["b"], .string("😀"))
        XCTAssertEqual(members["c"], .string("\"\\/\u{8}\u{C}\n\r\t"))
        XCTAssertEqual(members["d"], .string("Aé\u{FFFD}"))
    }

    func testEscapedMerchantIsDecoded() {
        let request = assertAccepted(parseRequest(requestLine(merchant: #""CAF\u00c9 \ud83d\ude00 \"BAR\"""#)))
        XCTAssertEqual(request?.merchant, "CAFÉ 😀 \"BAR\"")
    }

    func testEscapedKeysAreDecoded() throws {
        let members = try scanObject(#"{"\u0069d":"x"}"#, wanted: ["id"]).get()
        XCTAssertEqual(members["id"], .string("x"))
    }

    func testDuplicateKeysAreRefused() {
        assertMalformed(requestLine(extra: [#""id":"other""#]))
        assertMalformed(requestLine(extra: [#""x":1"#, #""x":2"#]))
        assertMalformed(requestLine(extra: [#""\u0069d":"other""#]))
        assertRejected(parseRequest(requestLine(extra: [#""x":1"#, #""x":2"#])), id: nil, reasonContains: "duplicate key")
    }

    func testDuplicateKeysInsideNestedUnknownObjectsAreTolerated() {
        XCTAssertNotNil(assertAccepted(parseRequest(requestLine(extra: [#""x":{"a":1,"a":2}"#]))))
    }

    func testKeysDifferingOnlyInCaseAreDistinct() {
        XCTAssertNotNil(assertAccepted(parseRequest(requestLine(extra: [#""ID":"other""#, #""Account":"x""#]))))
    }

    func testModerateNestingInUnknownMemberIsAccepted() {
        XCTAssertNotNil(assertAccepted(parseRequest(requestLine(extra: ["\"x\":" + nested(10)]))))
        let objects = String(repeating: #"{"k":"#, count: 10) + "1" + String(repeating: "}", count: 10)
        XCTAssertNotNil(assertAccepted(parseRequest(requestLine(extra: ["\"x\":" + objects]))))
    }

    func testDeepNestingIsRefused() {
        assertMalformed(requestLine(extra: ["\"x\":" + nested(40)]))
        let objects = String(repeating: #"{"k":"#, count: 40) + "1" + String(repeating: "}", count: 40)
        assertMalformed(requestLine(extra: ["\"x\":" + objects]))
        assertMalformed(requestLine(extra: ["\"x\":" + nested(5000)]))
    }

    func testNestingLimitCountsTheTopLevelObject() {
        let limit = JSONObjectScanner.maxDepth
        XCTAssertNotNil(assertAccepted(parseRequest(requestLine(extra: ["\"x\":" + nested(limit - 1)]))))
        assertMalformed(requestLine(extra: ["\"x\":" + nested(limit)]))
    }

    func testUnknownMembersOfEveryKindAreIgnored() {
        let request = assertAccepted(parseRequest(requestLine(extra: [
            #""note":"hello \u00e9""#,
            #""count":-1.5e-3"#,
            #""flag":true"#,
            #""off":false"#,
            #""nothing":null"#,
            #""obj":{"account":"999","mcc":"5411","list":[1,"two",{"three":[]}]}"#,
            #""arr":[{"id":"nested"},[[]],null]"#,
            #""empty":{}"#,
        ])))
        XCTAssertEqual(request, TransactionRequest(
            id: "9f2c", account: "123", amount: Cents(10010), mcc: "5811",
            merchant: "PADARIA DO ZE               SAO PAULO BR"
        ))
    }

    func testNestedWantedKeysDoNotCountAsTopLevelMembers() {
        assertRejected(
            parseRequest(requestLine(account: nil, extra: [#""obj":{"account":"999"}"#])),
            id: "9f2c", reasonContains: "account is missing"
        )
    }
}
