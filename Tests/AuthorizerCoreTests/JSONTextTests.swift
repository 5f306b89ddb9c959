import AuthorizerCore
import Foundation
import XCTest

final class JSONTextTests: XCTestCase {
    func testQuotesBackslashesAndControlCharactersAreEscaped() {
        XCTAssertEqual(JSONText.quoted("a\"b\\c\nd\re\tf\u{01}g\u{7F}h"), #""a\"b\\c\nd\re\tf\u0001g\u007fh""#)
    }

    func testEveryOtherCharacterStandsAsIs() {
        XCTAssertEqual(JSONText.quoted("PADARIA SÃO JOÃO ✓ \u{2028}"), "\"PADARIA SÃO JOÃO ✓ \u{2028}\"")
    }

    func testAJSONParserReadsBackWhatWasQuoted() throws {
        let text = (0..<128).map { String(UnicodeScalar(UInt8($0))) }.joined() + "ção"
        let parsed = try JSONSerialization.jsonObject(with: Data(JSONText.quoted(text).utf8), options: [.fragmentsAllowed])
        XCTAssertEqual(parsed as? String, text)
    }
}
