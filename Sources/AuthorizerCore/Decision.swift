/// The answer a terminal receives.
public enum ResponseCode: String, Sendable, CaseIterable {
    case approved = "00"
    case insufficientFunds = "51"
    case rejected = "07"
}

/// The outcome of one authorization, as reported to the terminal.
public struct Decision: Sendable, Equatable {
    public let code: ResponseCode
    /// Why, on every `07` (and only there).
    public let rejectReason: RejectReason?
    /// The answer to a balance inquiry: every category, in name order.
    public let balances: [CategoryBalance]?

    /// The reason in plain words, as the terminal receives it.
    public var reason: String? { rejectReason?.text }

    private init(code: ResponseCode, rejectReason: RejectReason?, balances: [CategoryBalance]?) {
        self.code = code
        self.rejectReason = rejectReason
        self.balances = balances
    }

    /// A `00` or a `51` (a `07` is made with `rejected`, which needs a reason).
    public init(code: ResponseCode, balances: [CategoryBalance]? = nil) {
        precondition(code != .rejected, "a 07 always carries a reason")
        self.init(code: code, rejectReason: nil, balances: balances)
    }

    public static let approved = Decision(code: .approved)
    public static let insufficientFunds = Decision(code: .insufficientFunds)
    public static func rejected(_ reason: RejectReason) -> Decision { Decision(code: .rejected, rejectReason: reason, balances: nil) }
}

/// One category's balance, in a balance inquiry's answer.
public struct CategoryBalance: Sendable, Equatable {
    public let category: String
    public let balance: Cents

    public init(category: String, balance: Cents) {
        self.category = category
        self.balance = balance
    }
}

/// Why a request was answered `07`: one type for the answer's words, the
/// logs and the metrics' `reason` label, so nothing classifies by text.
public enum RejectReason: Sendable, Hashable, CustomStringConvertible {
    /// The line is not a valid request; the parser's words (JSON, fields, amounts).
    case invalidRequest(String)
    case lineTooLong
    case unknownAccount
    /// The account lock could not be had before the answer deadline.
    case accountBusy
    case storageUnavailable
    case shuttingDown
    /// The decision was not back within the SLA; an authorization answered
    /// so is reversed by the service itself.
    case timeout
    /// An authorization whose id a reversal got to first.
    case reversed
    case originalNotFound
    /// A reversal whose amount is not its original's (ISO 8583 answers it DE39 13).
    case amountMismatch
    /// A fault of the authorizer itself; the detail is for the logs as much as the terminal.
    case internalError(String?)
    /// The card named cannot authorize (authorize.lua's card check, or its resolution).
    case card(CardRefusal)
    /// A spending control of the account or the card refused it.
    case control(ControlRefusal)
    /// A `07` a decision script gave in its own words.
    case declined(String)

    public static let unknownAccountText = "unknown account"
    public static let accountBusyText = "account busy"
    public static let storageUnavailableText = "authorizer storage unavailable"
    public static let shuttingDownText = "authorizer shutting down"
    public static let lineTooLongText = "line longer than \(TransactionRequestParser.maxLineLength) bytes"
    public static let timeoutText = "timeout"
    public static let reversedText = "reversed"
    public static let originalNotFoundText = "original not found"
    /// reverse.lua's words for `amountMismatch`.
    public static let amountMismatchText = "amount does not match the original"

    /// The words the terminal receives.
    public var text: String {
        switch self {
        case .invalidRequest(let words): return words
        case .lineTooLong: return Self.lineTooLongText
        case .unknownAccount: return Self.unknownAccountText
        case .accountBusy: return Self.accountBusyText
        case .storageUnavailable: return Self.storageUnavailableText
        case .shuttingDown: return Self.shuttingDownText
        case .timeout: return Self.timeoutText
        case .reversed: return Self.reversedText
        case .originalNotFound: return Self.originalNotFoundText
        case .amountMismatch: return Self.amountMismatchText
        case .internalError(let detail?): return "internal error: \(detail)"
        case .internalError(nil): return "internal error"
        case .card(let refusal): return refusal.rawValue
        case .control(let refusal): return refusal.rawValue
        case .declined(let words): return words
        }
    }

    /// A machine-readable code for the answer's `reasonCode`: stable, unlike the words.
    public var code: String {
        switch self {
        case .invalidRequest: return "invalid_request"
        case .lineTooLong: return "line_too_long"
        case .unknownAccount: return "unknown_account"
        case .accountBusy: return "account_busy"
        case .storageUnavailable: return "storage_unavailable"
        case .shuttingDown: return "shutting_down"
        case .timeout: return "timeout"
        case .reversed: return "reversed"
        case .originalNotFound: return "original_not_found"
        case .amountMismatch: return "amount_mismatch"
        case .internalError: return "internal_error"
        case .card(let refusal): return refusal.code
        case .control(let refusal): return refusal.code
        case .declined: return "declined"
        }
    }

    public var description: String { text }

    /// A reason read back as text (a decision script's reply, the first
    /// decision of a repeated id): the known words map to their case.
    public init(text: String) {
        switch text {
        case Self.unknownAccountText: self = .unknownAccount
        case Self.accountBusyText: self = .accountBusy
        case Self.storageUnavailableText: self = .storageUnavailable
        case Self.shuttingDownText: self = .shuttingDown
        case Self.lineTooLongText: self = .lineTooLong
        case Self.timeoutText: self = .timeout
        case Self.reversedText: self = .reversed
        case Self.originalNotFoundText: self = .originalNotFound
        case Self.amountMismatchText: self = .amountMismatch
        case "internal error": self = .internalError(nil)
        case let words where CardRefusal(rawValue: words) != nil: self = .card(CardRefusal(rawValue: words)!)
        case let words where ControlRefusal(rawValue: words) != nil: self = .control(ControlRefusal(rawValue: words)!)
        default: self = .declined(text.isEmpty ? "declined" : text)
        }
    }
}

/// Why a card cannot authorize, in the words the terminal receives
/// (authorize.lua writes the same words).
public enum CardRefusal: String, Sendable, Hashable, CaseIterable {
    case unknown = "unknown card"
    case pending = "card not activated"
    case blocked = "card blocked"
    case lost = "card lost"
    case stolen = "card stolen"
    case cancelled = "card cancelled"
    case expired = "card expired"
    case expiryMismatch = "card expiry does not match"
    case otherAccount = "card does not belong to the account"

    public var code: String {
        switch self {
        case .unknown: return "card_unknown"
        case .pending: return "card_pending"
        case .blocked: return "card_blocked"
        case .lost: return "card_lost"
        case .stolen: return "card_stolen"
        case .cancelled: return "card_cancelled"
        case .expired: return "card_expired"
        case .expiryMismatch: return "card_expiry_mismatch"
        case .otherAccount: return "card_other_account"
        }
    }
}

/// Why a spending control refused an authorization, in the words the
/// terminal receives (authorize.lua writes the same words).
public enum ControlRefusal: String, Sendable, Hashable, CaseIterable {
    case perTransaction = "amount over the per-transaction limit"
    case dailyAmount = "daily limit reached"
    case weeklyAmount = "weekly limit reached"
    case monthlyAmount = "monthly limit reached"
    case dailyCount = "too many transactions today"
    case weeklyCount = "too many transactions this week"
    case monthlyCount = "too many transactions this month"
    case rollingAmount = "recent spending limit reached"
    case rollingCount = "too many transactions in a short time"
    case merchantCategory = "merchant category not allowed"
    case merchant = "merchant not allowed"
    /// The account is frozen (`authorizer account freeze`): not a limit, an order.
    case frozen = "account frozen"

    public var code: String {
        switch self {
        case .perTransaction: return "control_per_transaction"
        case .dailyAmount: return "control_daily_amount"
        case .weeklyAmount: return "control_weekly_amount"
        case .monthlyAmount: return "control_monthly_amount"
        case .dailyCount: return "control_daily_count"
        case .weeklyCount: return "control_weekly_count"
        case .monthlyCount: return "control_monthly_count"
        case .rollingAmount: return "control_rolling_amount"
        case .rollingCount: return "control_rolling_count"
        case .merchantCategory: return "control_merchant_category"
        case .merchant: return "control_merchant"
        case .frozen: return "account_frozen"
        }
    }

    /// What kind of limit: an amount, a count, or who may be paid.
    public var kind: Kind {
        switch self {
        case .perTransaction, .dailyAmount, .weeklyAmount, .monthlyAmount, .rollingAmount: return .amount
        case .dailyCount, .weeklyCount, .monthlyCount, .rollingCount: return .count
        case .merchantCategory, .merchant: return .notPermitted
        case .frozen: return .frozen
        }
    }

    public enum Kind: Sendable { case amount, count, notPermitted, frozen }
}
