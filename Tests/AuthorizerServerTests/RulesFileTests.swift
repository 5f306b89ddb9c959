import AuthorizerCore
import AuthorizerServer
import XCTest

/// The program's controls in a rules file: stored forms, the script's
/// argument, and the mistakes refused with their reason.
final class RulesFileTests: XCTestCase {
    private func parse(_ controls: String) throws -> Rules {
        try RulesFile.parse("mcc: {\"5411\": FOOD}\nfallback: CASH\ncontrols:\n" + controls, fileName: "rules.yaml")
    }

    func testControlsAreStoredAsTheScriptReadsThem() throws {
        let rules = try parse("""
              per_txn: "40.00"
              month_amount: "1000"
              day_count: 2
              blocked_mcc: [7995, "5933"]
              blocked_merchant: ["Cassino Online"]
            """)
        let digest = MerchantDescriptor("CASSINO ONLINE").digest
        XCTAssertEqual(rules.programControls.values, [
            .perTransaction: "4000", .monthAmount: "100000", .dayCount: "2", .blockedMCC: "7995,5933", .blockedMerchant: digest,
        ])
        XCTAssertEqual(rules.programControls.argument, "per_txn=4000;day_count=2;month_amount=100000;blocked_mcc=7995,5933;blocked_merchant=\(digest)")
        XCTAssertEqual(rules.resolve(mcc: "5411", merchant: MerchantDescriptor("M")).programControls, rules.programControls.argument)
        XCTAssertEqual(try RulesFile.parse("fallback: CASH", fileName: "r.yaml").programControls.argument, "", "no controls: nothing passed")
    }

    func testMistakesAreRefusedWithTheirReason() {
        let cases = [
            ("  per_txn: 40.50\n", "quoted"),
            ("  daily_limit: \"10.00\"\n", "unknown control \"daily_limit\""),
            ("  day_count: 0\n", "a count from 1 to 1000000"),
            ("  blocked_mcc: [\"79\"]\n", "four-digit MCCs"),
            ("  per_txn: \"-1.00\"\n", "a positive amount"),
        ]
        for (text, reason) in cases {
            XCTAssertThrowsError(try parse(text), text) { error in
                XCTAssertTrue("\(error)".contains(reason), "\(text): \(error)")
            }
        }
    }
}
