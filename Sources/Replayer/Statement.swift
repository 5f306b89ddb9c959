import AuthorizerCore
import Ledger

/// What a statement records (the stream's `type` field).
public enum StatementKind: String, Sendable, CaseIterable {
    /// A terminal's transaction: 00 (debited), 51 or 07 (nothing debited).
    case authorization
    /// An operator added amounts to balances.
    case credit
    /// An operator set balances to given values.
    case set
    /// A reversal of the transaction `original`: 00 credits back what the
    /// original debited (nothing when it was declined, already reversed or
    /// never seen); 07 changes nothing.
    case reversal
    /// A card issued or its status changed (`card`, `from` -> `to`, `by`); no money moves.
    case card
    /// A benefit order's line debited back for an operational error
    /// (`order`, `line`, `reason`, `by`): at most what was unspent.
    case revert
    /// An account frozen or unfrozen (`from` -> `to`: active or frozen, `reason`, `by`); no money moves.
    case freeze
}

/// `MEAL:700` — an amount of cents against one category.
public struct Posting: Sendable, Equatable {
    public let category: String
    public let cents: Int64

    public init(category: String, cents: Int64) {
        self.category = category
        self.cents = cents
    }

    /// Parses `MEAL:700,CASH:300`; the empty text is the empty list.
    public static func list(_ text: String) throws -> [Posting] {
        if text.isEmpty { return [] }
        return try text.split(separator: ",", omittingEmptySubsequences: false).map { item in
            let parts = item.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, let cents = Int64(parts[1]) else {
                throw StatementError.malformed("posting \"\(item)\" is not CATEGORY:CENTS")
            }
            return Posting(category: String(parts[0]), cents: cents)
        }
    }
}

public enum StatementError: Error, Equatable, CustomStringConvertible {
    case malformed(String)
    public var description: String {
        switch self {
        case .malformed(let why): return "malformed statement: \(why)"
        }
    }
}

/// One entry of the `statements` stream, typed and checked. The texts of the
/// posting lists are kept as written by the Lua scripts (they are what the
/// database stores); the parsed lists are derived from them.
public struct Statement: Sendable, Equatable {
    public let entryID: StreamID
    public let kind: StatementKind
    /// The terminal's transaction id, or the operator's operation id.
    public let transactionID: String
    public let account: String
    public let code: ResponseCode
    /// The transaction amount (0 for operator changes).
    public let amount: Cents
    public let mcc: String
    public let mccUsed: String
    public let merchant: String
    public let category: String
    public let debitsText: String
    public let creditsText: String
    public let balancesText: String
    public let reason: String
    /// The reversed transaction's id (reversals only).
    public let original: String
    /// The card used or changed ("" without one) and its masked PAN.
    public let card: String
    public let maskedPAN: String
    /// A card entry's status change (`from` is "" when the card was issued), or a freeze
    /// entry's state (`active`, `frozen`), and who made it.
    public let from: String
    public let to: String
    public let changedBy: String
    /// A benefit order's credit: its order and line ("" otherwise).
    public let order: String
    public let orderLine: String
    public let employer: String

    public let debits: [Posting]
    public let credits: [Posting]
    /// The balance of every touched category right after this change.
    public let balances: [Posting]

    /// Milliseconds since the epoch at which Redis wrote the entry.
    public var timestampMilliseconds: UInt64 { entryID.milliseconds }

    public init(entry: StreamEntry) throws {
        guard let fields = entry.fields else { throw StatementError.malformed("entry \(entry.id) has been deleted from the stream") }
        func required(_ name: String) throws -> String {
            guard let value = fields[name] else { throw StatementError.malformed("entry \(entry.id) has no \(name)") }
            return value
        }
        guard let kind = StatementKind(rawValue: try required("type")) else {
            throw StatementError.malformed("entry \(entry.id) has unknown type \(fields["type"] ?? "")")
        }
        let account = try required("account")
        guard Identifier.isValid(account) else { throw StatementError.malformed("entry \(entry.id) has invalid account \(account)") }
        let codeText = try required("code")
        guard let code = ResponseCode(rawValue: codeText) else { throw StatementError.malformed("entry \(entry.id) has unknown code \(codeText)") }
        guard let amount = Int64(try required("amount")), amount >= 0 else {
            throw StatementError.malformed("entry \(entry.id) has an amount that is not whole cents")
        }
        self.entryID = entry.id
        self.kind = kind
        self.transactionID = try required("id")
        self.account = account
        self.code = code
        self.amount = Cents(amount)
        self.mcc = fields["mcc"] ?? ""
        self.mccUsed = fields["mcc_used"] ?? ""
        self.merchant = fields["merchant"] ?? ""
        self.category = fields["category"] ?? ""
        self.debitsText = fields["debits"] ?? ""
        self.creditsText = fields["credits"] ?? ""
        self.balancesText = fields["balances"] ?? ""
        self.reason = fields["reason"] ?? ""
        self.original = fields["original"] ?? ""
        self.card = fields["card"] ?? ""
        self.maskedPAN = fields["pan"] ?? ""
        self.from = fields["from"] ?? ""
        self.to = fields["to"] ?? ""
        self.changedBy = fields["by"] ?? ""
        self.order = fields["order"] ?? ""
        self.orderLine = fields["line"] ?? ""
        self.employer = fields["employer"] ?? ""
        self.debits = try Posting.list(debitsText)
        self.credits = try Posting.list(creditsText)
        self.balances = try Posting.list(balancesText)
        try checkConsistency()
    }

    /// The invariants the Lua scripts guarantee; an entry breaking them is
    /// not applied but kept aside for an operator.
    private func checkConsistency() throws {
        switch kind {
        case .authorization:
            guard credits.isEmpty else { throw StatementError.malformed("authorization \(entryID) carries credits") }
            if code == .approved {
                guard !debits.isEmpty, debits.reduce(0, { $0 + $1.cents }) == amount.value, debits.allSatisfy({ $0.cents > 0 }) else {
                    throw StatementError.malformed("approved \(entryID): debits \(debitsText) do not add up to \(amount.value)")
                }
            } else {
                guard debits.isEmpty else { throw StatementError.malformed("declined \(entryID) carries debits") }
            }
        case .reversal:
            guard debits.isEmpty else { throw StatementError.malformed("reversal \(entryID) carries debits") }
            guard !original.isEmpty else { throw StatementError.malformed("reversal \(entryID) names no original") }
            switch code {
            case .approved:
                guard credits.allSatisfy({ $0.cents > 0 }) else { throw StatementError.malformed("reversal \(entryID) has a non-positive credit") }
                guard credits.isEmpty || credits.reduce(0, { $0 + $1.cents }) == amount.value else {
                    throw StatementError.malformed("reversal \(entryID): credits \(creditsText) do not add up to \(amount.value)")
                }
            case .rejected:
                guard credits.isEmpty else { throw StatementError.malformed("refused reversal \(entryID) carries credits") }
            case .insufficientFunds:
                throw StatementError.malformed("reversal \(entryID) has code \(code)")
            }
        case .card:
            guard debits.isEmpty, credits.isEmpty, amount.value == 0, !card.isEmpty, CardStatus(rawValue: to) != nil else {
                throw StatementError.malformed("card entry \(entryID) must name a card and its new status, and move no money")
            }
            // A PAN never reaches the ledger: only its first six and last four digits.
            guard maskedPAN.isEmpty || maskedPAN.contains("*") else { throw StatementError.malformed("card entry \(entryID) carries an unmasked PAN") }
        case .revert:
            guard credits.isEmpty, debits.reduce(0, { $0 + $1.cents }) == amount.value, debits.allSatisfy({ $0.cents > 0 }), !order.isEmpty else {
                throw StatementError.malformed("revert \(entryID): debits \(debitsText) must add up to \(amount.value) and name the order")
            }
        case .freeze:
            guard debits.isEmpty, credits.isEmpty, amount.value == 0, ["active", "frozen"].contains(to) else {
                throw StatementError.malformed("freeze entry \(entryID) must name the new state (active or frozen) and move no money")
            }
        case .credit, .set:
            guard debits.isEmpty, !credits.isEmpty else { throw StatementError.malformed("\(kind.rawValue) \(entryID) has no credits") }
            if kind == .credit, credits.contains(where: { $0.cents <= 0 }) {
                throw StatementError.malformed("credit \(entryID) has a non-positive amount")
            }
        }
    }
}
