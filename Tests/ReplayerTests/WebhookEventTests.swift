import Crypto
import Foundation
import Ledger
@testable import Replayer
import XCTest

/// Events from ledger entries, their body, and the signature.
final class WebhookEventTests: XCTestCase {
    private func statement(_ fields: [String: String], id: String = "1765100000123-0") throws -> Statement {
        try Statement(entry: StreamEntry(id: try XCTUnwrap(StreamID(id)), fields: fields))
    }

    private func json(_ event: WebhookEvent) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(event.body)) as? [String: Any])
    }

    func testAnApprovalIsAnEventWithEveryFieldOfTheSchema() throws {
        let approved = try statement([
            "type": "authorization", "id": "t-1", "account": "acc-1", "code": "00", "amount": "10010",
            "mcc": "5411", "merchant": "PADARIA DO ZE               SAO PAULO BR", "category": "FOOD",
            "debits": "FOOD:10010", "balances": "FOOD:89990",
        ])
        let event = try XCTUnwrap(try WebhookEvent(statement: approved, stream: "statements:{7}"))
        XCTAssertEqual(event.id, "statements:{7}/1765100000123-0")
        XCTAssertEqual(event.kind, .authorizationApproved)
        let body = try json(event)
        XCTAssertEqual(Set(body.keys), [
            "api_version", "event_id", "type", "created", "created_ms", "account", "card", "transaction_id", "code", "reason",
            "amount_cents", "currency", "merchant", "mcc", "category", "debits", "credits", "balances_after",
            "original_transaction_id", "text", "pan", "card_status", "card_status_before",
        ])
        XCTAssertEqual(body["api_version"] as? String, WebhookEvent.apiVersion)
        XCTAssertEqual(body["event_id"] as? String, event.id)
        XCTAssertEqual(body["type"] as? String, "authorization.approved")
        XCTAssertEqual(body["created"] as? String, "2025-12-07T09:33:20.123Z")
        XCTAssertEqual(body["created_ms"] as? Int, 1_765_100_000_123)
        XCTAssertEqual(body["amount_cents"] as? Int, 10_010)
        XCTAssertEqual(body["merchant"] as? String, "PADARIA DO ZE")
        XCTAssertTrue(body["card"] is NSNull)
        XCTAssertTrue(body["reason"] is NSNull)
        XCTAssertEqual(body["balances_after"] as? [String: Int], ["FOOD": 89_990])
        XCTAssertEqual(body["text"] as? String, "Compra aprovada de R$ 100,10 em PADARIA DO ZE (FOOD)")
    }

    func testKindsAndWhatIsNotAnEvent() throws {
        let declined = try statement(["type": "authorization", "id": "t", "account": "a", "code": "07", "amount": "5", "reason": "mcc blocked"])
        XCTAssertEqual(WebhookEvent.kind(of: declined), .authorizationDeclined)
        XCTAssertEqual(try json(try XCTUnwrap(try WebhookEvent(statement: declined, stream: "statements")))["reason"] as? String, "mcc blocked")
        let reversal = try statement(["type": "reversal", "id": "r", "account": "a", "code": "00", "amount": "5", "credits": "FOOD:5", "original": "t"])
        XCTAssertEqual(WebhookEvent.kind(of: reversal), .reversal)
        let empty = try statement(["type": "reversal", "id": "r2", "account": "a", "code": "00", "amount": "5", "original": "t"])
        XCTAssertNil(WebhookEvent.kind(of: empty), "a reversal that gave nothing back tells the holder nothing")
        let credit = try statement(["type": "credit", "id": "load-1", "account": "a", "code": "00", "amount": "0", "credits": "MEAL:70000,FOOD:30000"])
        let creditEvent = try XCTUnwrap(try WebhookEvent(statement: credit, stream: "statements"))
        XCTAssertEqual(try json(creditEvent)["amount_cents"] as? Int, 100_000)
        XCTAssertEqual(try json(creditEvent)["text"] as? String, "Crédito de R$ 1.000,00 (MEAL R$ 700,00 + FOOD R$ 300,00)")
        let set = try statement(["type": "set", "id": "s", "account": "a", "code": "00", "amount": "0", "credits": "FOOD:1"])
        XCTAssertNil(try WebhookEvent(statement: set, stream: "statements"))
    }

    func testTheSignatureVerifiesWithEitherSecretOfARotationOnly() {
        let current = SymmetricKey(data: Array("new-secret-0123456789".utf8))
        let previous = SymmetricKey(data: Array("old-secret-0123456789".utf8))
        let other = SymmetricKey(data: Array("not-the-secret-012345".utf8))
        let body = Array(#"{"event_id":"statements/1-0"}"#.utf8)
        let header = WebhookSignature.header(body: body, timestamp: 1_000, secrets: [current, previous])
        XCTAssertTrue(header.hasPrefix("t=1000,v1="))
        XCTAssertEqual(header.components(separatedBy: "v1=").count, 3)
        XCTAssertTrue(WebhookSignature.verify(header: header, body: body, secrets: [current], now: 1_000))
        XCTAssertTrue(WebhookSignature.verify(header: header, body: body, secrets: [previous], now: 1_300))
        XCTAssertFalse(WebhookSignature.verify(header: header, body: body, secrets: [other], now: 1_000))
        XCTAssertFalse(WebhookSignature.verify(header: header, body: body, secrets: [current], now: 1_301), "outside the tolerance")
        XCTAssertFalse(WebhookSignature.verify(header: header, body: body + [0x20], secrets: [current], now: 1_000), "the body is signed")
        let retimed = header.replacingOccurrences(of: "t=1000", with: "t=1001")
        XCTAssertFalse(WebhookSignature.verify(header: retimed, body: body, secrets: [current], now: 1_000), "the timestamp is signed")
    }

    /// A vector computed with Python's hmac: hmac.new(b"whsec-test-0123456789", b"1700000000.{}", "sha256").hexdigest().
    func testTheSignatureMatchesAnIndependentHMAC() {
        let header = WebhookSignature.header(body: Array("{}".utf8), timestamp: 1_700_000_000, secrets: [SymmetricKey(data: Array("whsec-test-0123456789".utf8))])
        XCTAssertEqual(header, "t=1700000000,v1=" + Self.pythonVector)
    }

    static let pythonVector = "8f00bede6099409acba8e67a061e61a5dabdef4c544c5ca15ba8b42128020cfb"

    func testTheConfigurationReadsSecretsFromTheEnvironmentOrAPrivateFile() throws {
        let yaml = """
            endpoints:
              - name: app
                url: http://127.0.0.1:9000/hooks
                secret_env: APP_SECRET
                events: [authorization.approved, credit]
                accounts: [acc-1]
            retry:
              first_ms: 200
              max_age_seconds: 60
            store:
              max_events: 1000
            """
        let configuration = try WebhookConfiguration(yaml: yaml, environment: ["APP_SECRET": "0123456789abcdef"])
        XCTAssertEqual(configuration.endpoints.first?.events, [.authorizationApproved, .credit])
        XCTAssertEqual(configuration.retry.firstMilliseconds, 200)
        XCTAssertEqual(configuration.retry.maxAgeSeconds, 60)
        XCTAssertEqual(configuration.maxStoredEvents, 1_000)
        XCTAssertThrowsError(try WebhookConfiguration(yaml: yaml, environment: [:]), "the secret's variable is not set")
        XCTAssertThrowsError(try WebhookConfiguration(yaml: yaml, environment: ["APP_SECRET": "short"]), "too short a secret")

        let file = FileManager.default.temporaryDirectory.appendingPathComponent("webhook-secret-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        try "0123456789abcdef\n".write(toFile: file, atomically: true, encoding: .utf8)
        let fromFile = yaml.replacingOccurrences(of: "secret_env: APP_SECRET", with: "secret_file: \(file)")
        chmod(file, 0o644)
        XCTAssertThrowsError(try WebhookConfiguration(yaml: fromFile, environment: [:]), "a secret others can read is refused") { error in
            XCTAssertTrue("\(error)".contains("chmod 600"), "\(error)")
        }
        chmod(file, 0o600)
        XCTAssertNoThrow(try WebhookConfiguration(yaml: fromFile, environment: [:]))
        XCTAssertThrowsError(try WebhookConfiguration(yaml: yaml.replacingOccurrences(of: "credit]", with: "purchase]"), environment: ["APP_SECRET": "0123456789abcdef"]))
        XCTAssertThrowsError(try WebhookConfiguration(yaml: yaml.replacingOccurrences(of: "max_age_seconds", with: "max_age_second"), environment: ["APP_SECRET": "0123456789abcdef"]), "a misspelt key") { error in
            XCTAssertTrue("\(error)".contains("unknown key max_age_second"), "\(error)")
        }
    }
}
