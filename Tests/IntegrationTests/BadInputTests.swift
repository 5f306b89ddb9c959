import XCTest

/// Bad input gets a clear 07 with a reason, the connection stays usable,
/// and nothing is debited.
final class BadInputTests: IntegrationTestCase {
    func testEveryBadRequestGetsA07WithAReasonAndTheConnectionStaysOpen() throws {
        try account("g", ["FOOD": 10_000])
        let client = try serve.connect()
        let cases: [(line: String, reason: String)] = [
            ("not json", "malformed JSON"),
            ("{\"account\":\"g\"", "malformed JSON"),
            ("[1,2,3]", "malformed JSON"),
            ("{\"account\":\"g\",\"totalAmount\":1,\"mcc\":\"5411\",\"merchant\":\"M\"} trailing", "malformed JSON"),
            ("{\"totalAmount\":1,\"mcc\":\"5411\",\"merchant\":\"M\"}", "account is missing"),
            ("{\"account\":123,\"totalAmount\":1,\"mcc\":\"5411\",\"merchant\":\"M\"}", "account must be a string"),
            ("{\"account\":\"a b\",\"totalAmount\":1,\"mcc\":\"5411\",\"merchant\":\"M\"}", "account must be"),
            ("{\"account\":\"g\",\"mcc\":\"5411\",\"merchant\":\"M\"}", "totalAmount is missing"),
            ("{\"account\":\"g\",\"totalAmount\":true,\"mcc\":\"5411\",\"merchant\":\"M\"}", "totalAmount must be a number"),
            ("{\"account\":\"g\",\"totalAmount\":0,\"mcc\":\"5411\",\"merchant\":\"M\"}", "greater than zero"),
            ("{\"account\":\"g\",\"totalAmount\":-0,\"mcc\":\"5411\",\"merchant\":\"M\"}", "greater than zero"),
            ("{\"account\":\"g\",\"totalAmount\":-5,\"mcc\":\"5411\",\"merchant\":\"M\"}", "greater than zero"),
            ("{\"account\":\"g\",\"totalAmount\":0.001,\"mcc\":\"5411\",\"merchant\":\"M\"}", "more than 2 decimal places"),
            ("{\"account\":\"g\",\"totalAmount\":1e309,\"mcc\":\"5411\",\"merchant\":\"M\"}", "plain decimal"),
            ("{\"account\":\"g\",\"totalAmount\":\"NaN\",\"mcc\":\"5411\",\"merchant\":\"M\"}", "plain decimal"),
            ("{\"account\":\"g\",\"totalAmount\":123456789012345678901234567890,\"mcc\":\"5411\",\"merchant\":\"M\"}", "exceeds the maximum"),
            ("{\"account\":\"g\",\"totalAmount\":1,\"mcc\":5411,\"merchant\":\"M\"}", "mcc must be a string"),
            ("{\"account\":\"g\",\"totalAmount\":1,\"mcc\":\"541\",\"merchant\":\"M\"}", "mcc must be exactly 4 digits"),
            ("{\"account\":\"g\",\"totalAmount\":1,\"mcc\":\"5411\"}", "merchant is missing"),
            ("{\"account\":\"g\",\"totalAmount\":1,\"mcc\":\"5411\",\"merchant\":\"\"}", "merchant must be 1-200"),
            ("{\"account\":\"g\",\"totalAmount\":1,\"mcc\":\"5411\",\"merchant\":\"\(String(repeating: "M", count: 201))\"}", "merchant must be 1-200"),
            ("{\"account\":\"g\",\"account\":\"h\",\"totalAmount\":1,\"mcc\":\"5411\",\"merchant\":\"M\"}", "duplicate key"),
            ("{\"id\":\"x y\",\"account\":\"g\",\"totalAmount\":1,\"mcc\":\"5411\",\"merchant\":\"M\"}", "id must be"),
            (String(repeating: "[", count: 100), "malformed JSON"),
        ]
        for (index, example) in cases.enumerated() {
            try client.sendLine(example.line)
            let answer = try client.readResponse()
            XCTAssertEqual(answer.code, "07", "case \(index): \(example.line)")
            XCTAssertTrue(answer.reason?.contains(example.reason) == true, "case \(index): got \(answer.reason ?? "nil")")
            XCTAssertNotNil(answer.id)
        }
        // Non-UTF-8 and NUL bytes.
        try client.send(bytes: Array("{\"account\":\"g\",\"totalAmount\":1,\"mcc\":\"5411\",\"merchant\":\"".utf8) + [0xFF, 0xFE] + Array("\"}\n".utf8))
        XCTAssertEqual(try client.readResponse().code, "07")
        try client.send(bytes: [0x00, 0x00, 0x0A])
        XCTAssertEqual(try client.readResponse().code, "07")
        // The id is echoed when it could be read.
        try client.sendLine("{\"id\":\"keep-me\",\"account\":\"g\",\"totalAmount\":\"abc\",\"mcc\":\"5411\",\"merchant\":\"M\"}")
        XCTAssertEqual(try client.readResponse().id, "keep-me")
        // Blank lines get no answer; the next real request does.
        try client.send("\n   \n\r\n")
        let good = try client.request(["id": "ok", "account": "g", "totalAmount": "1.00", "mcc": "5411", "merchant": "M", "extra": ["nested": [1, 2]]])
        XCTAssertEqual(good.id, "ok")
        XCTAssertEqual(good.code, "00")
        XCTAssertEqual(try redis.balances("g"), ["FOOD": 9_900])
        XCTAssertEqual(try redis.statements().count, 1)
    }

    func testALineOver16KiBGetsA07AndTheConnectionIsClosed() throws {
        try account("big", ["FOOD": 10_000])
        let client = try serve.connect()
        try client.sendLine(Request.line(id: "before", account: "big", amount: "1.00", mcc: "5411"))
        try client.send(String(repeating: "x", count: 17 * 1024) + "\n")
        XCTAssertEqual(try client.readResponse().code, "00", "the request before the long line is answered first")
        let answer = try client.readResponse()
        XCTAssertEqual(answer.code, "07")
        XCTAssertEqual(answer.reason, "line longer than 16384 bytes")
        XCTAssertNil(try client.readLine(), "the server closed the connection")
        // Other terminals are unaffected.
        let other = try serve.connect()
        XCTAssertEqual(try other.request(["account": "big", "totalAmount": 1, "mcc": "5411", "merchant": "M"]).code, "00")
    }

    func testALineOfExactly16KiBIsParsed() throws {
        try account("edge", ["FOOD": 10_000])
        let client = try serve.connect()
        let base = Request.line(id: "edge", account: "edge", amount: "1.00", mcc: "5411")
        let padded = String(base.dropLast()) + ",\"pad\":\"" + String(repeating: "p", count: 16 * 1024 - base.count - 9) + "\"}"
        XCTAssertEqual(padded.utf8.count, 16 * 1024)
        try client.sendLine(padded)
        XCTAssertEqual(try client.readResponse().code, "00")
    }
}
