import AuthorizerCore
import AuthorizerServer
import Foundation
import Ledger
import RedisWire
import XCTest

/// The typed script calls agree with each script's header in Lua/ (KEYS
/// and the ARGV it reads) and keep every key of a call on one slot.
final class ScriptCallTests: XCTestCase {
    /// KEYS: the highest position the script names. ARGV: the highest
    /// position the header defines (a line starting `ARGV[13]`; not an open
    /// range such as `ARGV[14..]`, whose arguments are optional).
    private func header(_ script: ScriptCall.Script) throws -> (keys: Int, arguments: Int) {
        let source = try String(contentsOf: TestEnvironment.repositoryRoot.appendingPathComponent("Lua/\(script.rawValue).lua"), encoding: .utf8)
        var keys = 0
        var rest = Substring(source)
        while let range = rest.range(of: "KEYS[") {
            keys = max(keys, Int(rest[range.upperBound...].prefix { $0.isNumber }) ?? 0)
            rest = rest[range.upperBound...]
        }
        var arguments = 0
        for line in source.split(separator: "\n") {
            let text = line.drop { $0 == " " }
            guard text.hasPrefix("ARGV[") else { continue }
            let digits = text.dropFirst(5).prefix { $0.isNumber }
            if text.dropFirst(5 + digits.count).first == "]", let position = Int(digits) {
                arguments = max(arguments, position)
            }
        }
        return (keys, arguments)
    }

    /// A script whose header ends its KEYS with `KEYS[n..]` takes n-1 fixed keys and then a list.
    private func takesKeyList(_ script: ScriptCall.Script) throws -> Bool {
        let source = try String(contentsOf: TestEnvironment.repositoryRoot.appendingPathComponent("Lua/\(script.rawValue).lua"), encoding: .utf8)
        return source.range(of: #"KEYS\[\d+\.\.\]"#, options: .regularExpression) != nil
    }

    /// 2026-11-26 (day 20783), a 24 h window, 48 h retention, older records still read.
    private let scope = IdempotencyScope(today: UTCDay(number: 20_783), reversalWindowSeconds: 86_400, retentionSeconds: 172_800, readOlderKeys: true)

    private var calls: [ScriptCall] {
        let request = TransactionRequest(id: "t1", account: "acct", amount: Cents(1_234), mcc: "5411", merchant: "PADARIA DO ZE")
        let resolution = Rules.defaults.resolve(mcc: "5411", merchant: MerchantDescriptor("PADARIA DO ZE"))
        let reversal = ReversalRequest(id: "r1", account: "acct", original: "t1", amount: Cents(1_234))
        let statements = RedisTarget.cluster(seeds: [RedisEndpoint()]).statementsKey(forAccount: "acct")
        return [
            .authorize(request, resolution, token: "tok", lockTTLms: 200, idempotency: scope, statements: statements, receivedMicros: 1_796_678_672_093_851),
            .reverse(reversal, token: "tok", lockTTLms: 200, idempotency: scope, windowMs: 86_400_000, statements: statements),
            .unlock(account: "acct", token: "tok"),
            .decline(request, resolution, reason: .accountBusy, idempotency: scope, rewrite: false, statements: statements, receivedMicros: 1_796_678_672_093_851),
            .decline(reversal, reason: .accountBusy, idempotency: scope, rewrite: false, statements: statements),
            .adjust(kind: "set", operation: "op", account: "acct", changes: [(category: "FOOD", cents: Cents(100))], statements: statements),
            .balance(account: "acct"),
            .issueCard(
                operation: "op", account: "acct", card: "crd_new", status: .active, expiry: CardExpiry(year: 30, month: 12), kind: .virtual,
                maskedPAN: "999000******7890", replaces: "crd_old", by: "test", statements: statements
            ),
            .changeCard(operation: "op", account: "acct", card: "crd_new", to: .lost, by: "test", statements: statements),
        ]
    }

    func testEachCallNamesTheKeysItsScriptDeclares() throws {
        for call in calls {
            let declared = try header(call.script)
            if try takesKeyList(call.script) {
                XCTAssertGreaterThan(call.keys.count, declared.keys, "\(call.script): KEYS and at least two buckets")
            } else {
                XCTAssertEqual(call.keys.count, declared.keys, "\(call.script): KEYS")
            }
            XCTAssertGreaterThanOrEqual(call.arguments.count, declared.arguments, "\(call.script): every fixed ARGV position")
            let slots = Set(call.keys.map { HashSlot.of(key: $0) })
            XCTAssertEqual(slots.count, 1, "\(call.script): every key on one slot: \(call.keys)")
        }
    }

    /// The positional arguments the header documents, for the two scripts on the hot path.
    func testAuthorizeArgumentsAreInTheHeaderOrder() throws {
        guard let authorize = calls.first else { return XCTFail("no calls") }
        XCTAssertEqual(authorize.keys, [
            "account:{acct}", "lock:{acct}", authorize.keys[2], "txn:{acct}:t1",
            "txns:{acct}:20261127", "txns:{acct}:20261126", "txns:{acct}:20261125",
            "controls:{acct}", "spent:{acct}",
        ], "tomorrow, today and the window's one older day, then the controls and their counters")
        XCTAssertTrue(authorize.keys[2].hasPrefix("statements:{"), authorize.keys[2])
        XCTAssertEqual(authorize.arguments, [
            "tok", "200", "t1", "acct", "1234", "5411", "5411", "PADARIA DO ZE", "FOOD", "CASH", "whole",
            "20784", MerchantDescriptor("PADARIA DO ZE").digest, "172800", "1", "3", "", "", "0", "1796678672093851", "",
        ], "no card: nothing of cards is read; when it was received last; no program controls")
        var withCard = TransactionRequest(id: "t1", account: "acct", amount: Cents(1_234), mcc: "5411", merchant: "PADARIA DO ZE", card: .id("crd_a"))
        withCard.cardID = "crd_a"
        withCard.cardExpiry = "3012"
        var rules = Rules.defaults
        rules.programControls = ProgramControls([.perTransaction: "5000", .dayCount: "3"])
        let resolution = rules.resolve(mcc: "5411", merchant: MerchantDescriptor("PADARIA DO ZE"))
        let carded = ScriptCall.authorize(
            withCard, resolution, token: "tok", lockTTLms: 200, idempotency: scope, statements: "statements", zoneOffsetSeconds: -10_800,
            receivedMicros: 1_796_678_672_093_851
        )
        XCTAssertEqual(carded.keys.last, "card:{acct}:crd_a", "the card's hash after the buckets")
        XCTAssertEqual(Array(carded.arguments.suffix(6)), ["3", "crd_a", "3012", "-10800", "1796678672093851", "per_txn=5000;day_count=3"])
        let reverse = calls[1]
        XCTAssertEqual(Array(reverse.keys.suffix(4)), ["txns:{acct}:20261127", "txns:{acct}:20261126", "txns:{acct}:20261125", "txns:{acct}:20261124"],
                       "a reversal looks back over the whole retention")
        let unlock = ScriptCall.unlock(account: "acct", token: "tok")
        XCTAssertEqual(unlock.keys, ["lock:{acct}"])
        XCTAssertEqual(unlock.arguments, ["tok"])
        XCTAssertEqual(RedisTarget.single(RedisEndpoint()).statementsKey(forAccount: "acct"), "statements")
    }
}
