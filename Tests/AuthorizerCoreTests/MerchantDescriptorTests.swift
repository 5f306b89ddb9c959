import AuthorizerCore
import XCTest

final class MerchantDescriptorTests: XCTestCase {
    func testNormalizeUppercasesCollapsesAndTrims() {
        XCTAssertEqual(MerchantDescriptor.normalize("uber eats"), "UBER EATS")
        XCTAssertEqual(MerchantDescriptor.normalize("  Uber\t\teats  "), "UBER EATS")
        XCTAssertEqual(MerchantDescriptor.normalize("UBER     EATS"), "UBER EATS")
        XCTAssertEqual(MerchantDescriptor.normalize("uber \t \n\r eats\n"), "UBER EATS")
        XCTAssertEqual(MerchantDescriptor.normalize("uber\u{A0}eats"), "UBER EATS")
        XCTAssertEqual(MerchantDescriptor.normalize("pag*josedasilva"), "PAG*JOSEDASILVA")
        XCTAssertEqual(MerchantDescriptor.normalize("padaria são joão"), "PADARIA SÃO JOÃO")
    }

    func testNormalizeOfBlankInput() {
        XCTAssertEqual(MerchantDescriptor.normalize(""), "")
        XCTAssertEqual(MerchantDescriptor.normalize(" \t  "), "")
    }

    func testNormalizeIsIdempotent() {
        for raw in ["  a  b  ", "UBER EATS", "x\ty\nz", "ção  ÉCOLE"] {
            let once = MerchantDescriptor.normalize(raw)
            XCTAssertEqual(MerchantDescriptor.normalize(once), once)
        }
    }

    func testNormalizeAcceptsSubstrings() {
        let text = "[ uber  eats ]"
        XCTAssertEqual(MerchantDescriptor.normalize(text.dropFirst().dropLast()), "UBER EATS")
    }

    func testProtocolExampleSplitsOutTheName() {
        let raw = "PADARIA DO ZE               SAO PAULO BR"
        XCTAssertEqual(raw.count, 40)
        let descriptor = MerchantDescriptor(raw)
        XCTAssertEqual(descriptor.normalized, "PADARIA DO ZE SAO PAULO BR")
        XCTAssertEqual(descriptor.name, "PADARIA DO ZE")
    }

    func testNetworkLayoutSplitsOutTheName() {
        let raw = networkDescriptor(name: "MERCADO CENTRAL", city: "RIO DE JANEIR", country: "BR")
        XCTAssertEqual(raw, "MERCADO CENTRAL          RIO DE JANEIRBR")
        let descriptor = MerchantDescriptor(raw)
        XCTAssertEqual(descriptor.normalized, "MERCADO CENTRAL RIO DE JANEIRBR")
        XCTAssertEqual(descriptor.name, "MERCADO CENTRAL")
    }

    func testNetworkLayoutNameIsNormalized() {
        let raw = networkDescriptor(name: "  uber\teats", city: "sao paulo", country: "br")
        let descriptor = MerchantDescriptor(raw)
        XCTAssertEqual(descriptor.name, "UBER EATS")
        XCTAssertEqual(descriptor.normalized, "UBER EATS SAO PAULO BR")
    }

    func testNetworkLayoutNameIsExactlyTheFirst25Characters() {
        let raw = "ABCDEFGHIJKLMNOPQRSTUVWXY" + "Z" + String(repeating: " ", count: 12) + "BR"
        XCTAssertEqual(raw.count, 40)
        XCTAssertEqual(MerchantDescriptor(raw).name, "ABCDEFGHIJKLMNOPQRSTUVWXY")
    }

    func testNetworkLayoutCountsCharactersNotBytes() {
        let raw = networkDescriptor(name: "CAFÉ SÃO JOÃO", city: "SÃO PAULO", country: "BR")
        XCTAssertEqual(raw.count, 40)
        XCTAssertGreaterThan(raw.utf8.count, 40)
        XCTAssertEqual(MerchantDescriptor(raw).name, "CAFÉ SÃO JOÃO")
    }

    func testOtherLengthsUseTheWholeDescriptorAsName() {
        for raw in [
            "UBER EATS",
            "uber eats sao paulo br",
            String(networkDescriptor(name: "PADARIA DO ZE", city: "SAO PAULO", country: "BR").dropLast()),
            networkDescriptor(name: "PADARIA DO ZE", city: "SAO PAULO", country: "BR") + " ",
            String(repeating: "A", count: 200),
        ] {
            let descriptor = MerchantDescriptor(raw)
            XCTAssertNotEqual(raw.count, 40)
            XCTAssertEqual(descriptor.normalized, MerchantDescriptor.normalize(raw))
            XCTAssertEqual(descriptor.name, descriptor.normalized)
        }
    }

    func testBlankDescriptor() {
        XCTAssertEqual(MerchantDescriptor("   "), MerchantDescriptor(""))
        XCTAssertEqual(MerchantDescriptor(String(repeating: " ", count: 40)).name, "")
    }

    func testMaxLength() {
        XCTAssertEqual(MerchantDescriptor.maxLength, 200)
    }
}
