import AuthorizerCore
import XCTest

func parseRequest(
    bytes: [UInt8],
    makeID: () -> String = { "generated-id" }
) -> Result<TransactionRequest, RequestRejection> {
    bytes.withUnsafeBytes { TransactionRequestParser.parse(line: $0, makeID: makeID) }
}

func parseRequest(
    _ line: String,
    makeID: () -> String = { "generated-id" }
) -> Result<TransactionRequest, RequestRejection> {
    parseRequest(bytes: Array(line.utf8), makeID: makeID)
}

func scanObject(_ line: String, wanted: Set<String>) -> Result<[String: JSONObjectScanner.Value], JSONObjectScanner.ScanError> {
    scanObject(bytes: Array(line.utf8), wanted: wanted)
}

func scanObject(bytes: [UInt8], wanted: Set<String>) -> Result<[String: JSONObjectScanner.Value], JSONObjectScanner.ScanError> {
    bytes.withUnsafeBytes { JSONObjectScanner.scan($0, wanted: wanted) }
}

/// Builds a request line from raw JSON member texts; `nil` leaves a member out.
func requestLine(
    id: String? = #""9f2c""#,
    account: String? = #""123""#,
    totalAmount: String? = "100.10",
    mcc: String? = #""5811""#,
    merchant: String? = #""PADARIA DO ZE               SAO PAULO BR""#,
    extra: [String] = []
) -> String {
    let members: [(String, String?)] = [
        ("id", id), ("account", account), ("totalAmount", totalAmount), ("mcc", mcc), ("merchant", merchant),
    ]
    let parts = members.compactMap { key, value in value.map { "\"\(key)\":\($0)" } } + extra
    return "{" + parts.joined(separator: ",") + "}"
}

func assertAccepted(
    _ result: Result<TransactionRequest, RequestRejection>,
    file: StaticString = #filePath,
    line: UInt = #line
) -> TransactionRequest? {
    switch result {
    case .success(let request):
        return request
    case .failure(let rejection):
        XCTFail("expected acceptance, got rejection: \(rejection.reason)", file: file, line: line)
        return nil
    }
}

func assertRejected(
    _ result: Result<TransactionRequest, RequestRejection>,
    id expectedID: String?,
    reasonContains fragment: String,
    file: StaticString = #filePath,
    line: UInt = #line
) {
    switch result {
    case .success(let request):
        XCTFail("expected rejection containing \"\(fragment)\", got \(request)", file: file, line: line)
    case .failure(let rejection):
        XCTAssertEqual(rejection.id, expectedID, "rejection id (reason: \(rejection.reason))", file: file, line: line)
        XCTAssertTrue(
            rejection.reason.contains(fragment),
            "reason \"\(rejection.reason)\" does not contain \"\(fragment)\"",
            file: file, line: line
        )
    }
}

/// Pads `name` to 25 characters and `city` to 13, then appends the 2-letter country.
func networkDescriptor(name: String, city: String, country: String) -> String {
    func pad(_ text: String, _ width: Int) -> String {
        text + String(repeating: " ", count: max(0, width - text.count))
    }
    return pad(name, 25) + pad(city, 13) + country
}
