import AuthorizerCore
import AuthorizerServer
import Foundation
import RedisWire
import XCTest

/// The typed script calls agree with each script's header in Lua/ (KEYS
/// and the ARGV it reads) and keep every key of a call on one slot.
final class ScriptCallTests: XCTestCase {
    private func header(_ script: ScriptCall.Script) throws -> (keys: Int, maxArgument: Int) {
        let source = try String(contentsOf: TestEnvironment.repositoryRoot.appendingPathComponent("Lua/\(script.rawValue).lua"), encoding: .utf8)
        func count(_ prefix: String) -> Int {
            var highest = 0
            var rest = Substring(source)
            while let range = rest.range(of: prefix + "[") {
                let digits = rest[range.upperBound...].prefix { $0.isNumber }
                highest = max(highest, Int(digits) ?? 0)
                rest = rest[range.upperBound...]
            }
            return highest
        }
        return (count("KEYS"), count("ARGV"))
    }

    private var calls: [ScriptCall] {
        let request = TransactionRequest(id: "t1", account: "acct", amount: Cents(1_234), mcc: "5411", merchant: "PADARIA DO ZE")
        let resolution = Rules.defaults.resolve(mcc: "5411", merchant: MerchantDescriptor("PADARIA DO ZE"))
        let reversal = ReversalRequest(id: "r1", account: "acct", original: "t1", amount: Cents(1_234))
        let statements = RedisTarget.cluster(seeds: [RedisEndpoint()]).statementsKey(forAccount: "acct")
        return [
            .authorize(request, resolution, token: "tok", lockTTLms: 200, recordTTLSeconds: 172_800, statements: statements),
            .reverse(reversal, token: "tok", lockTTLms: 200, recordTTLSeconds: 172_800, windowMs: 86_400_000, statements: statements),
            .unlock(account: "acct", token: "tok"),
            .decline(request, resolution, reason: .accountBusy, statements: statements),
            .decline(reversal, reason: .accountBusy, statements: statements),
            .adjust(kind: "set", operation: "op", account: "acct", changes: [(category: "FOOD", cents: Cents(100))], statements: statements),
            .balance(account: "acct"),
        ]
    }

    func testEachCallNamesTheKeysItsScriptDeclares() throws {
        for call in calls {
            let declared = try header(call.script)
            XCTAssertEqual(call.keys.count, declared.keys, "\(call.script): KEYS")
            XCTAssertTrue(call.arguments.count >= min(declared.maxArgument, call.arguments.count), "\(call.script): ARGV")
            let slots = Set(call.keys.map { HashSlot.of(key: $0) })
            XCTAssertEqual(slots.count, 1, "\(call.script): every key on one slot: \(call.keys)")
        }
    }

    /// The positional arguments the header documents, for the two scripts on the hot path.
    func testAuthorizeArgumentsAreInTheHeaderOrder() throws {
        guard let authorize = calls.first else { return XCTFail("no calls") }
        XCTAssertEqual(authorize.keys, ["account:{acct}", "lock:{acct}", "txn:{acct}:t1", authorize.keys[3]])
        XCTAssertTrue(authorize.keys[3].hasPrefix("statements:{"), authorize.keys[3])
        XCTAssertEqual(Array(authorize.arguments.prefix(12)), [
            "tok", "200", "t1", "acct", "1234", "5411", "5411", "PADARIA DO ZE", "FOOD", "CASH", "whole", "172800",
        ])
        let unlock = ScriptCall.unlock(account: "acct", token: "tok")
        XCTAssertEqual(unlock.keys, ["lock:{acct}"])
        XCTAssertEqual(unlock.arguments, ["tok"])
        XCTAssertEqual(RedisTarget.single(RedisEndpoint()).statementsKey(forAccount: "acct"), "statements")
    }
}
