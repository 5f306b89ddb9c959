/// A reversal: undo the transaction `original` of the same account.
/// `amount`, `mcc` and `merchant` are optional; when given they must match
/// the original's.
public struct ReversalRequest: Sendable, Equatable {
    public let id: String
    /// "" until a card-only request's card is resolved.
    public var account: String
    /// The card as named (a reversal needs no card check: it only gives back).
    public var card: CardReference?
    /// ISO 8583 with `--iso-pan-as-account`: the account when DE2 names no card.
    public var accountIfNoCard: String?
    public let original: String
    public let amount: Cents?
    public let mcc: String?
    public let merchant: String?
    /// Extra statement fields, name/value pairs (see `TransactionRequest.statementFields`).
    public var statementFields: [String] = []
    /// The service's own reversal of a timed-out request: when that request
    /// was answered `07` (wall clock, µs since 1970). reverse.lua lets an
    /// approval stand that an attempt received later was answered.
    public var owedSince: Int64?

    public init(
        id: String, account: String, original: String, amount: Cents? = nil, mcc: String? = nil, merchant: String? = nil, card: CardReference? = nil
    ) {
        self.id = id
        self.account = account
        self.card = card
        self.original = original
        self.amount = amount
        self.mcc = mcc
        self.merchant = merchant
    }
}

/// A balance inquiry: every category of one account.
public struct BalanceInquiry: Sendable, Equatable {
    public let id: String
    /// "" until a card-only request's card is resolved.
    public var account: String
    public var card: CardReference?
    /// ISO 8583 with `--iso-pan-as-account`: the account when DE2 names no card.
    public var accountIfNoCard: String?

    public init(id: String, account: String, card: CardReference? = nil) {
        self.id = id
        self.account = account
        self.card = card
    }
}

/// One line from a terminal, by its `type` (absent: an authorization).
public enum TerminalRequest: Sendable, Equatable {
    case authorization(TransactionRequest)
    case reversal(ReversalRequest)
    case balance(BalanceInquiry)

    public var id: String {
        switch self {
        case .authorization(let request): return request.id
        case .reversal(let request): return request.id
        case .balance(let request): return request.id
        }
    }

    public var account: String {
        switch self {
        case .authorization(let request): return request.account
        case .reversal(let request): return request.account
        case .balance(let request): return request.account
        }
    }

    /// For logs: the account, or (not resolved yet) the card as it may be shown, a masked PAN at most.
    public var holderShown: String {
        account.isEmpty ? card?.shown ?? "" : account
    }

    /// The card as named, if any.
    public var card: CardReference? {
        switch self {
        case .authorization(let request): return request.card
        case .reversal(let request): return request.card
        case .balance(let request): return request.card
        }
    }

    /// The account to use when the card names none (ISO 8583 compatibility).
    public var accountIfNoCard: String? {
        switch self {
        case .authorization(let request): return request.accountIfNoCard
        case .reversal(let request): return request.accountIfNoCard
        case .balance(let request): return request.accountIfNoCard
        }
    }

    /// The same request with its holder resolved: `account`, and the card's
    /// id (nil: no card). A PAN goes no further than this.
    public func resolved(account: String, cardID: String?) -> TerminalRequest {
        switch self {
        case .authorization(var request):
            request.account = account
            request.cardID = cardID
            request.card = cardID.map(CardReference.id)
            return .authorization(request)
        case .reversal(var request):
            request.account = account
            request.card = cardID.map(CardReference.id)
            return .reversal(request)
        case .balance(var request):
            request.account = account
            request.card = cardID.map(CardReference.id)
            return .balance(request)
        }
    }
}

public enum TerminalRequestParser {
    static let fields: Set<String> = ["type", "id", "account", "card", "expiry", "totalAmount", "mcc", "merchant", "original"]
    static let typeRule = "type must be authorization, reversal or balance"

    /// Parses one line (without its newline). `makeID` supplies an id when the
    /// request carries none.
    public static func parse(
        line: UnsafeRawBufferPointer,
        makeID: () -> String
    ) -> Result<TerminalRequest, RequestRejection> {
        precondition(line.count <= TransactionRequestParser.maxLineLength, "the framer bounds lines")
        let members: [String: JSONObjectScanner.Value]
        switch JSONObjectScanner.scan(line, wanted: fields) {
        case .success(let scanned): members = scanned
        case .failure(let error): return .failure(RequestRejection(id: nil, reason: error.description))
        }
        let id: String?
        switch Fields.id(members) {
        case .success(let value): id = value
        case .failure(let rejection): return .failure(rejection)
        }
        func reject(_ reason: String) -> Result<TerminalRequest, RequestRejection> {
            .failure(RequestRejection(id: id, reason: reason))
        }
        switch members["type"] {
        case nil, .null?, .string("authorization")?:
            return TransactionRequestParser.parse(members: members, id: id, makeID: makeID).map(TerminalRequest.authorization)
        case .string("reversal")?:
            return parseReversal(members, id: id, makeID: makeID)
        case .string("balance")?:
            switch Fields.holder(members) {
            case .success(let holder): return .success(.balance(BalanceInquiry(id: id ?? makeID(), account: holder.account, card: holder.card)))
            case .failure(let why): return reject(why.reason)
            }
        case .string?:
            return reject(typeRule)
        case _?:
            return reject("type must be a string")
        }
    }

    static func parseReversal(
        _ members: [String: JSONObjectScanner.Value],
        id: String?,
        makeID: () -> String
    ) -> Result<TerminalRequest, RequestRejection> {
        func reject(_ reason: String) -> Result<TerminalRequest, RequestRejection> {
            .failure(RequestRejection(id: id, reason: reason))
        }
        let holder: Fields.Holder
        switch Fields.holder(members) {
        case .success(let value): holder = value
        case .failure(let why): return reject(why.reason)
        }
        let original: String
        switch members["original"] {
        case nil, .null?:
            return reject("original is missing")
        case .string(let text)?, .number(let text)?:
            guard Identifier.isValid(text) else { return reject("original must be 1-64 characters of A-Z a-z 0-9 . _ : -") }
            original = text
        case _?:
            return reject("original must be a string")
        }
        let reversalID = id ?? makeID()
        guard reversalID != original else { return reject("a reversal needs an id of its own, not the original's") }
        var amount: Cents?
        switch Fields.amount(members) {
        case nil: break
        case .success(let value)?: amount = value
        case .failure(let why)?: return reject(why.reason)
        }
        var mcc: String?
        switch Fields.mcc(members) {
        case nil: break
        case .success(let value)?: mcc = value
        case .failure(let why)?: return reject(why.reason)
        }
        var merchant: String?
        switch Fields.merchant(members) {
        case nil: break
        case .success(let value)?: merchant = value
        case .failure(let why)?: return reject(why.reason)
        }
        return .success(.reversal(ReversalRequest(
            id: reversalID, account: holder.account, original: original, amount: amount, mcc: mcc, merchant: merchant, card: holder.card
        )))
    }
}
