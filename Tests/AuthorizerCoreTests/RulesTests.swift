import AuthorizerCore
import XCTest

final class RulesTests: XCTestCase {
    private let rules = Rules.defaults

    private func resolve(_ mcc: String, _ merchant: String, with rules: Rules = .defaults) -> Resolution {
        rules.resolve(mcc: mcc, merchant: MerchantDescriptor(merchant))
    }

    func testDefaultMCCCategories() {
        XCTAssertEqual(resolve("5411", "SUPERMERCADO").category, "FOOD")
        XCTAssertEqual(resolve("5412", "SUPERMERCADO").category, "FOOD")
        XCTAssertEqual(resolve("5811", "RESTAURANTE").category, "MEAL")
        XCTAssertEqual(resolve("5812", "RESTAURANTE").category, "MEAL")
    }

    func testUnknownMCCFallsBackToCash() {
        for mcc in ["5999", "0000", "4121", "5410", "5813"] {
            let resolution = resolve(mcc, "LOJA QUALQUER")
            XCTAssertEqual(resolution.mccUsed, mcc)
            XCTAssertEqual(resolution.category, "CASH")
        }
    }

    private func assertResolution(
        _ resolution: Resolution, _ mccUsed: String, _ category: String, _ fallbackCategory: String, _ fallbackMode: FallbackMode,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertEqual(resolution.mccUsed, mccUsed, "mccUsed", file: file, line: line)
        XCTAssertEqual(resolution.category, category, "category", file: file, line: line)
        XCTAssertEqual(resolution.fallbackCategory, fallbackCategory, "fallbackCategory", file: file, line: line)
        XCTAssertEqual(resolution.fallbackMode, fallbackMode, "fallbackMode", file: file, line: line)
    }

    func testResolutionCarriesFallbackSettings() {
        assertResolution(resolve("5411", "MERCADO"), "5411", "FOOD", "CASH", .whole)
        var split = Rules.defaults
        split.fallbackMode = .split
        split.fallbackCategory = "OTHER"
        assertResolution(resolve("9999", "X", with: split), "9999", "OTHER", "OTHER", .split)
        assertResolution(resolve("5811", "X", with: split), "5811", "MEAL", "OTHER", .split)
    }

    func testDefaultMerchantOverrides() {
        let expectations: [(String, String, String)] = [
            ("UBER EATS", "5812", "MEAL"),
            ("UBER TRIP", "4121", "CASH"),
            ("PAG*JOSEDASILVA", "5812", "MEAL"),
            ("PICPAY*BILHETEUNICO", "4111", "CASH"),
        ]
        for (merchant, mcc, category) in expectations {
            let resolution = resolve("5411", merchant)
            XCTAssertEqual(resolution.mccUsed, mcc, merchant)
            XCTAssertEqual(resolution.category, category, merchant)
        }
    }

    func testMerchantMatchingIsOnTheNormalizedDescriptor() {
        XCTAssertEqual(resolve("5411", "  uber\t eats ").mccUsed, "5812")
        XCTAssertEqual(resolve("5411", "Pag*JoseDaSilva").mccUsed, "5812")
        XCTAssertEqual(resolve("5411", "UBER EATS BR").mccUsed, "5411")
        XCTAssertEqual(resolve("5411", "UBEREATS").mccUsed, "5411")
    }

    func testNetworkLayoutMatchesOnTheName() {
        let raw = networkDescriptor(name: "UBER EATS", city: "SAO PAULO", country: "BR")
        XCTAssertEqual(raw.count, 40)
        XCTAssertTrue(raw.hasPrefix("UBER EATS                SAO PAULO"))
        let resolution = resolve("5411", raw)
        XCTAssertEqual(resolution.mccUsed, "5812")
        XCTAssertEqual(resolution.category, "MEAL")
        XCTAssertEqual(resolve("5411", networkDescriptor(name: "uber trip", city: "rio", country: "br")).mccUsed, "4121")
    }

    func testFreeFormDescriptorDoesNotMatchOnAPrefix() {
        let freeForm = "UBER EATS                SAO PAULO BR"
        XCTAssertNotEqual(freeForm.count, 40)
        XCTAssertEqual(resolve("5411", freeForm).mccUsed, "5411")
    }

    func testWholeDescriptorWinsOverName() {
        var custom = Rules.defaults
        custom.merchantMCCs = ["ACME SAO PAULO BR": "5411", "ACME": "5812"]
        XCTAssertEqual(resolve("0000", networkDescriptor(name: "ACME", city: "SAO PAULO", country: "BR"), with: custom).mccUsed, "5411")
        XCTAssertEqual(resolve("0000", networkDescriptor(name: "ACME", city: "CAMPINAS", country: "BR"), with: custom).mccUsed, "5812")
        XCTAssertEqual(resolve("0000", "acme   sao paulo br", with: custom).mccUsed, "5411")
        XCTAssertEqual(resolve("0000", "ACME CAMPINAS BR", with: custom).mccUsed, "0000")
    }

    func testEffectiveMCCMatchesResolve() {
        let merchant = MerchantDescriptor("UBER TRIP")
        XCTAssertEqual(rules.effectiveMCC(mcc: "5811", merchant: merchant), "4121")
        XCTAssertEqual(rules.effectiveMCC(mcc: "5811", merchant: MerchantDescriptor("OTHER")), "5811")
    }

    func testDefaultsAreValid() {
        XCTAssertEqual(Rules.defaults.validationErrors(), [])
        XCTAssertEqual(Rules.defaults.fallbackCategory, "CASH")
        XCTAssertEqual(Rules.defaults.fallbackMode, .whole)
    }

    func testValidationErrors() {
        let bad = Rules(
            mccCategories: ["581": "MEAL", "5411": "food", "ABCD": "OK"],
            merchantMCCs: ["uber eats": "5812", "": "5812", "UBER  EATS": "5812", " UBER": "5812", "GOOD": "12345"],
            fallbackCategory: "cash",
            fallbackMode: .split
        )
        let errors = bad.validationErrors()
        let expectedFragments = [
            #"fallback category "cash""#,
            #"mcc "581" is not 4 digits"#,
            #"mcc "ABCD" is not 4 digits"#,
            #"category "food" for mcc 5411"#,
            #"merchant "uber eats" is not normalized"#,
            #"merchant "" is not normalized"#,
            #"merchant "UBER  EATS" is not normalized"#,
            #"merchant " UBER" is not normalized"#,
            #"mcc "12345" for merchant GOOD"#,
        ]
        for fragment in expectedFragments {
            XCTAssertTrue(errors.contains { $0.contains(fragment) }, "missing \(fragment) in \(errors)")
        }
        XCTAssertEqual(errors.count, expectedFragments.count, "\(errors)")
        XCTAssertEqual(bad.validationErrors(), errors, "errors are reported in a stable order")
    }

    func testCategoryNameRules() {
        for valid in ["CASH", "MEAL_2", "A", String(repeating: "Z", count: 32)] {
            var rules = Rules.defaults
            rules.fallbackCategory = valid
            XCTAssertEqual(rules.validationErrors(), [], valid)
        }
        for invalid in ["", "cash", "ME AL", "MEAL-2", "ÇASH", String(repeating: "Z", count: 33)] {
            var rules = Rules.defaults
            rules.fallbackCategory = invalid
            XCTAssertEqual(rules.validationErrors().count, 1, invalid)
        }
    }

    func testFallbackModeRawValues() {
        XCTAssertEqual(FallbackMode(rawValue: "whole"), .whole)
        XCTAssertEqual(FallbackMode(rawValue: "split"), .split)
        XCTAssertNil(FallbackMode(rawValue: "Whole"))
        XCTAssertEqual(FallbackMode.allCases.count, 2)
    }
}
