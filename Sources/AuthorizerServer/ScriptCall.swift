import AuthorizerCore
import NIOCore
import RedisWire

/// One call of one script in `Lua/`: its KEYS and ARGV in the order the
/// script's header lists them, built in one place for every caller (the
/// account gate, the CLI, the tests' helpers). The keys share the slot of
/// the account (a cluster routes the call by `keys[0]`).
public struct ScriptCall: Sendable, Equatable {
    public enum Script: String, Sendable, CaseIterable {
        case authorize, unlock, decline, adjust, reverse, balance
    }

    public let script: Script
    public let keys: [String]
    public let arguments: [String]

    init(_ script: Script, keys: [String], arguments: [String]) {
        precondition(!keys.isEmpty, "every script names the account's keys")
        self.script = script
        self.keys = keys
        self.arguments = arguments
    }

    /// `authorize.lua`: lock, idempotency, balances, debit, statement.
    public static func authorize(
        _ request: TransactionRequest, _ resolution: Resolution, token: String, lockTTLms: Int64, recordTTLSeconds: Int,
        statements: String
    ) -> ScriptCall {
        ScriptCall(.authorize, keys: [
            Keys.account(request.account),
            Keys.lock(request.account),
            Keys.transaction(account: request.account, id: request.id),
            statements,
        ], arguments: [
            token,
            String(lockTTLms),
            request.id,
            request.account,
            String(request.amount.value),
            request.mcc,
            resolution.mccUsed,
            request.merchant,
            resolution.category,
            resolution.fallbackCategory,
            resolution.fallbackMode.rawValue,
            String(recordTTLSeconds),
            MerchantDescriptor(request.merchant).normalized,
        ] + request.statementFields)
    }

    /// `reverse.lua`: credits back what the original debited, under the lock.
    public static func reverse(
        _ request: ReversalRequest, token: String, lockTTLms: Int64, recordTTLSeconds: Int, windowMs: Int64, statements: String
    ) -> ScriptCall {
        ScriptCall(.reverse, keys: [
            Keys.account(request.account),
            Keys.lock(request.account),
            Keys.transaction(account: request.account, id: request.original),
            Keys.transaction(account: request.account, id: request.id),
            statements,
        ], arguments: [
            token,
            String(lockTTLms),
            request.id,
            request.account,
            request.original,
            request.amount.map { String($0.value) } ?? "",
            request.mcc ?? "",
            request.merchant.map { MerchantDescriptor($0).normalized } ?? "",
            String(recordTTLSeconds),
            String(windowMs),
        ] + request.statementFields)
    }

    /// `unlock.lua`: compare-and-delete of the account lock.
    public static func unlock(account: String, token: String) -> ScriptCall {
        ScriptCall(.unlock, keys: [Keys.lock(account)], arguments: [token])
    }

    /// `decline.lua` for an authorization declined outside authorize.lua.
    public static func decline(_ request: TransactionRequest, _ resolution: Resolution, reason: RejectReason, statements: String) -> ScriptCall {
        ScriptCall(.decline, keys: [Keys.account(request.account), statements], arguments: [
            request.id, request.account, String(request.amount.value), request.mcc, resolution.mccUsed, request.merchant,
            resolution.category, reason.text,
        ] + (request.statementFields.isEmpty ? [] : ["authorization", ""] + request.statementFields))
    }

    /// `decline.lua` for a terminal's reversal declined outside reverse.lua.
    public static func decline(_ request: ReversalRequest, reason: RejectReason, statements: String) -> ScriptCall {
        ScriptCall(.decline, keys: [Keys.account(request.account), statements], arguments: [
            request.id, request.account, "0", request.mcc ?? "", "", request.merchant ?? "", "", reason.text, "reversal", request.original,
        ] + request.statementFields)
    }

    /// `adjust.lua`: an operator's `set` or `credit`, with its statement.
    public static func adjust(kind: String, operation: String, account: String, changes: [(category: String, cents: Cents)], statements: String) -> ScriptCall {
        precondition(kind == "set" || kind == "credit")
        return ScriptCall(.adjust, keys: [Keys.account(account), statements], arguments: [kind, operation, account]
            + changes.flatMap { [$0.category, String($0.cents.value)] })
    }

    /// `balance.lua`: every category of the account, read-only.
    public static func balance(account: String) -> ScriptCall {
        ScriptCall(.balance, keys: [Keys.account(account)], arguments: [])
    }
}

extension ScriptLibrary {
    public subscript(_ script: ScriptCall.Script) -> LuaScript {
        switch script {
        case .authorize: return authorize
        case .unlock: return unlock
        case .decline: return decline
        case .adjust: return adjust
        case .reverse: return reverse
        case .balance: return balance
        }
    }
}

extension ScriptRunner {
    /// EVALSHA of `call`'s script with its keys and arguments.
    public func run(_ call: ScriptCall, in scripts: ScriptLibrary) -> EventLoopFuture<RESPValue> {
        evalScript(scripts[call.script], keys: call.keys, arguments: call.arguments)
    }
}
