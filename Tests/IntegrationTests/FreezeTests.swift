import Foundation
import XCTest

/// An account frozen (a court order): purchases refused on both ports,
/// credits land, balance inquiries answer; each change is a ledger entry.
final class FreezeTests: LedgerTestCase {
    func testAFrozenAccountRefusesPurchasesButTakesCreditsAndAnswersInquiries() throws {
        try adjust("set", [("5550001234", [("MEAL", 10_000)])])
        let serve = try ServeProcess(redis: redis, arguments: ["--iso8583-port", "0", "--iso-pan-as-account"])
        let client = try serve.connect()
        XCTAssertEqual(try client.request(["id": "b1", "account": "5550001234", "totalAmount": "1.00", "mcc": "5811", "merchant": "M"]).code, "00")
        let frozen = try runAuthorizer(["account", "freeze", "5550001234", "--reason", "ordem judicial 123", "--by", "ops", "--redis", redis.url]).output
        XCTAssertTrue(frozen.contains("account 5550001234 frozen"), frozen)
        let again = try runAuthorizer(["account", "freeze", "5550001234", "--reason", "again", "--redis", redis.url], expectSuccess: false)
        XCTAssertTrue(again.output.contains("already frozen"), again.output)

        let refused = try client.request(["id": "b2", "account": "5550001234", "totalAmount": "1.00", "mcc": "5811", "merchant": "M"])
        XCTAssertEqual([refused.code, refused.reason, refused.reasonCode], ["07", "account frozen", "account_frozen"])
        XCTAssertEqual(try redis.balances("5550001234"), ["MEAL": 9_900], "nothing debited")
        // Credits land; the balance inquiry answers.
        let file = redis.directory.appendingPathComponent("o.csv").path
        try "1,5550001234,MEAL,50.00\n".write(toFile: file, atomically: true, encoding: .utf8)
        try runAuthorizer(["order", "load", file, "--order", "o1", "--redis", redis.url])
        XCTAssertEqual(try redis.balances("5550001234"), ["MEAL": 14_900])
        let balance = try client.request(["type": "balance", "account": "5550001234"])
        XCTAssertEqual(balance.code, "00")
        // ISO 8583: DE39 62.
        let link = try ISOLink(port: try XCTUnwrap(serve.iso8583Port))
        let request = ISO8583Tests.purchase(pan: "5550001234", cents: 100, stan: 1, rrn: "000000000001", mcc: "5811")
        XCTAssertEqual(try link.exchange(mti: "0200", request).fields[39], "62")

        try runAuthorizer(["account", "unfreeze", "5550001234", "--reason", "ordem revogada", "--redis", redis.url])
        XCTAssertEqual(try client.request(["id": "b3", "account": "5550001234", "totalAmount": "1.00", "mcc": "5811", "merchant": "M"]).code, "00")
        let changes = try redis.statements().filter { $0["type"] == "freeze" }
        XCTAssertEqual(changes.map { "\($0["from"] ?? "") -> \($0["to"] ?? ""): \($0["reason"] ?? "") by \($0["by"] ?? "")" },
                       ["active -> frozen: ordem judicial 123 by ops", "frozen -> active: ordem revogada by \(ProcessInfo.processInfo.environment["USER"] ?? "operator")"])
        try drain(["--notify"])
        XCTAssertEqual(try audit().status, 0)
        let notes = (try redis.command("XRANGE", "notifications:{5550001234}", "-", "+").array ?? []).compactMap { $0.array?.last?.array }
            .map { fields in stride(from: 0, to: fields.count, by: 2).first { fields[$0].string == "text" }.flatMap { fields[$0 + 1].string } ?? "" }
        XCTAssertTrue(notes.contains("Conta bloqueada: compras suspensas"), "\(notes)")
        XCTAssertTrue(notes.contains("Crédito de R$ 50,00 em Refeição"), "\(notes)")
    }
}
