import AuthorizerCore
import NIOCore
import RedisWire

/// One call of one script in `Lua/`: its KEYS and ARGV in the order the
/// script's header lists them, built in one place for every caller (the
/// account gate, the CLI, the tests' helpers). The keys share the slot of
/// the account (a cluster routes the call by `keys[0]`).
public struct ScriptCall: Sendable, Equatable {
    public enum Script: String, Sendable, CaseIterable {
        case authorize, unlock, decline, adjust, reverse, balance, card, credit, freeze, revert
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

    /// `authorize.lua`: lock, idempotency, card, balances, debit, statement.
    /// `zoneOffsetSeconds`: the issuer's zone now (a card's expiry, the controls' windows).
    /// `receivedMicros`: when the request was received (wall clock, µs since
    /// 1970), recorded as the latest attempt answered an approval.
    public static func authorize(
        _ request: TransactionRequest, _ resolution: Resolution, token: String, lockTTLms: Int64, idempotency: IdempotencyScope,
        statements: String, zoneOffsetSeconds: Int = 0, receivedMicros: Int64
    ) -> ScriptCall {
        precondition(receivedMicros > 0)
        precondition(request.cardID == nil || request.card == .id(request.cardID!), "only a resolved card reaches Redis, never a PAN")
        let buckets = idempotency.buckets(account: request.account, olderDays: idempotency.authorizeOlderDays)
        let card = request.cardID.map { [Keys.card(account: request.account, card: $0)] } ?? []
        return ScriptCall(.authorize, keys: [
            Keys.account(request.account),
            Keys.lock(request.account),
            statements,
            Keys.transaction(account: request.account, id: request.id),
        ] + buckets + [Keys.controls(account: request.account), Keys.spent(account: request.account)] + card, arguments: [
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
            String(idempotency.newest.number),
            request.descriptor.digest,
            String(idempotency.retentionSeconds),
            idempotency.readOlderKeys ? "1" : "0",
            String(buckets.count),
            request.cardID ?? "",
            request.cardID == nil ? "" : request.cardExpiry ?? "",
            String(zoneOffsetSeconds),
            String(receivedMicros),
            resolution.programControls,
        ] + request.statementFields)
    }

    /// `reverse.lua`: credits back what the original debited, under the lock.
    public static func reverse(
        _ request: ReversalRequest, token: String, lockTTLms: Int64, idempotency: IdempotencyScope, windowMs: Int64, statements: String
    ) -> ScriptCall {
        let merchant = request.merchant.map { MerchantDescriptor($0) }
        return ScriptCall(.reverse, keys: [
            Keys.account(request.account),
            Keys.lock(request.account),
            statements,
            Keys.transaction(account: request.account, id: request.original),
            Keys.transaction(account: request.account, id: request.id),
            Keys.spent(account: request.account),
        ] + idempotency.buckets(account: request.account, olderDays: idempotency.reverseOlderDays), arguments: [
            token,
            String(lockTTLms),
            request.id,
            request.account,
            request.original,
            request.amount.map { String($0.value) } ?? "",
            request.mcc ?? "",
            merchant?.normalized ?? "",
            merchant?.digest ?? "",
            String(windowMs),
            String(idempotency.newest.number),
            String(idempotency.retentionSeconds),
            idempotency.readOlderKeys ? "1" : "0",
            request.owedSince.map { String($0) } ?? "",
        ] + request.statementFields)
    }

    /// `unlock.lua`: compare-and-delete of the account lock.
    public static func unlock(account: String, token: String) -> ScriptCall {
        ScriptCall(.unlock, keys: [Keys.lock(account)], arguments: [token])
    }

    /// `decline.lua` for an authorization declined outside authorize.lua:
    /// the id's first decision if it has one, else a recorded 07.
    /// `rewrite`: a WAIT follows (`--replica-acks`).
    public static func decline(
        _ request: TransactionRequest, _ resolution: Resolution, reason: RejectReason, idempotency: IdempotencyScope,
        rewrite: Bool, statements: String, receivedMicros: Int64
    ) -> ScriptCall {
        declineCall(account: request.account, id: request.id, statements: statements, idempotency: idempotency, arguments: [
            request.id, request.account, String(request.amount.value), request.mcc, resolution.mccUsed, request.merchant,
            resolution.category, reason.text, "authorization", "",
        ], digest: request.descriptor.digest, rewrite: rewrite, receivedMicros: String(receivedMicros), fields: request.statementFields)
    }

    /// `decline.lua` for a terminal's reversal declined outside reverse.lua:
    /// the reversal's first decision if it has one, else a 07 (no record).
    public static func decline(
        _ request: ReversalRequest, reason: RejectReason, idempotency: IdempotencyScope, rewrite: Bool, statements: String
    ) -> ScriptCall {
        declineCall(account: request.account, id: request.id, statements: statements, idempotency: idempotency, arguments: [
            request.id, request.account, "0", request.mcc ?? "", "", request.merchant ?? "", "", reason.text, "reversal", request.original,
        ], digest: "", rewrite: rewrite, receivedMicros: "", fields: request.statementFields)
    }

    private static func declineCall(
        account: String, id: String, statements: String, idempotency: IdempotencyScope, arguments: [String], digest: String,
        rewrite: Bool, receivedMicros: String, fields: [String]
    ) -> ScriptCall {
        assert(arguments.count == 10)
        return ScriptCall(.decline, keys: [
            Keys.account(account), statements, Keys.transaction(account: account, id: id),
        ] + idempotency.buckets(account: account, olderDays: idempotency.reverseOlderDays), arguments: arguments + [
            String(idempotency.newest.number), String(idempotency.retentionSeconds), idempotency.readOlderKeys ? "1" : "0",
            digest, rewrite ? "1" : "0", receivedMicros,
        ] + fields)
    }

    /// `credit.lua`: one line of a benefit order, credited at most once ever.
    public static func credit(_ line: OrderLine, order: String, employer: String, retentionSeconds: Int64, statements: String) -> ScriptCall {
        precondition(line.amount.value > 0 && retentionSeconds > 0)
        return ScriptCall(.credit, keys: [Keys.account(line.account), Keys.orders(account: line.account), statements], arguments: [
            order, line.id, line.account, line.category, String(line.amount.value), employer, String(retentionSeconds),
        ])
    }

    /// `revert.lua`: one credited order line debited back (at most what is unspent), once.
    public static func revert(order: String, line: String, account: String, reason: String, by: String, operation: String, statements: String) -> ScriptCall {
        ScriptCall(.revert, keys: [Keys.account(account), Keys.orders(account: account), statements], arguments: [
            order, line, account, reason, by, operation,
        ])
    }

    /// `freeze.lua`: an account frozen or unfrozen, with its ledger entry.
    public static func freeze(_ freeze: Bool, operation: String, account: String, reason: String, by: String, statements: String) -> ScriptCall {
        ScriptCall(.freeze, keys: [Keys.account(account), Keys.controls(account: account), statements], arguments: [
            freeze ? "freeze" : "unfreeze", operation, account, reason, by,
        ])
    }

    /// `adjust.lua`: an operator's `set` or `credit`, with its statement.
    public static func adjust(kind: String, operation: String, account: String, changes: [(category: String, cents: Cents)], statements: String) -> ScriptCall {
        precondition(kind == "set" || kind == "credit")
        return ScriptCall(.adjust, keys: [Keys.account(account), statements], arguments: [kind, operation, account]
            + changes.flatMap { [$0.category, String($0.cents.value)] })
    }

    /// `card.lua`: a new card (`replaces`: the card it replaces, cancelled by it).
    public static func issueCard(
        operation: String, account: String, card: String, status: CardStatus, expiry: CardExpiry, kind: CardKind, maskedPAN: String,
        replaces: String?, by: String, statements: String
    ) -> ScriptCall {
        precondition(status == .active || status == .pending)
        precondition(maskedPAN.contains("*"), "a PAN is stored masked")
        let key = Keys.card(account: account, card: card)
        return ScriptCall(.card, keys: [key, Keys.cards(account: account), statements, replaces.map { Keys.card(account: account, card: $0) } ?? key], arguments: [
                "issue", operation, account, card, status.rawValue, by, expiry.description, kind.rawValue, maskedPAN, replaces ?? "",
            ])
    }

    /// `card.lua`: a card's status change (the script knows which are allowed).
    public static func changeCard(operation: String, account: String, card: String, to status: CardStatus, by: String, statements: String) -> ScriptCall {
        let key = Keys.card(account: account, card: card)
        return ScriptCall(.card, keys: [key, Keys.cards(account: account), statements, key], arguments: [
            "status", operation, account, card, status.rawValue, by, "", "", "", "",
        ])
    }

    /// `balance.lua`: every category of the account, read-only.
    public static func balance(account: String) -> ScriptCall {
        ScriptCall(.balance, keys: [Keys.account(account)], arguments: [])
    }
}

/// The day buckets (`txns:{ID}:YYYYMMDD`) a script names, from the caller's
/// clock: tomorrow, today and the older days it must look in. Redis's clock
/// picks today among them (a caller a little behind still names it).
public struct IdempotencyScope: Sendable, Equatable {
    /// The caller's today.
    public let today: UTCDay
    /// Older days an authorization looks in: the reversal window, rounded up
    /// (an id is recognised for that long at least).
    public let authorizeOlderDays: Int
    /// Older days a reversal looks in: the retention, rounded up.
    public let reverseOlderDays: Int
    /// How long a bucket outlives its day.
    public let retentionSeconds: Int
    /// Also read the older one-key records (`txn:{ID}:TXNID`), until they expire.
    public let readOlderKeys: Bool
    /// `YYYYMMDD` of tomorrow, today and every older day named, written once.
    private let dayKeys: [String]

    public init(today: UTCDay, reversalWindowSeconds: Int, retentionSeconds: Int, readOlderKeys: Bool) {
        precondition(reversalWindowSeconds > 0 && retentionSeconds >= reversalWindowSeconds)
        let day = Int(UTCDay.seconds)
        self.today = today
        self.authorizeOlderDays = (reversalWindowSeconds + day - 1) / day
        self.reverseOlderDays = (retentionSeconds + day - 1) / day
        self.retentionSeconds = retentionSeconds
        self.readOlderKeys = readOlderKeys
        self.dayKeys = (-1...reverseOlderDays).map { today.adding(days: Int64(-$0)).compact }
        assert(authorizeOlderDays >= 1 && reverseOlderDays >= authorizeOlderDays)
    }

    /// The first bucket named: the caller's tomorrow.
    var newest: UTCDay { today.adding(days: 1) }

    /// Tomorrow's, today's and `olderDays` older buckets, newest first.
    func buckets(account: String, olderDays: Int) -> [String] {
        precondition(olderDays + 2 <= dayKeys.count)
        return dayKeys[0..<olderDays + 2].map { Keys.transactions(account: account, dayKey: $0) }
    }
}

extension ScriptLibrary {
    public subscript(_ script: ScriptCall.Script) -> LuaScript {
        switch script {
        case .authorize: return authorize
        case .unlock: return unlock
        case .decline: return decline
        case .adjust: return adjust
        case .card: return card
        case .reverse: return reverse
        case .balance: return balance
        case .credit: return credit
        case .freeze: return freeze
        case .revert: return revert
        }
    }
}

extension ScriptRunner {
    /// EVALSHA of `call`'s script with its keys and arguments.
    public func run(_ call: ScriptCall, in scripts: ScriptLibrary) -> EventLoopFuture<RESPValue> {
        evalScript(scripts[call.script], keys: call.keys, arguments: call.arguments)
    }

    /// EVALSHA of `call`'s script, then WAIT for `replicas` on the same
    /// connection when `waitMs` gives a timeout for the reply.
    public func run(
        _ call: ScriptCall, in scripts: ScriptLibrary, replicas: Int, waitMs: @escaping @Sendable (RESPValue) -> Int?
    ) -> EventLoopFuture<ReplicatedReply> {
        evalScript(scripts[call.script], keys: call.keys, arguments: call.arguments, replicas: replicas, waitMs: waitMs)
    }
}
