/// The answer a terminal receives.
public enum ResponseCode: String, Sendable, CaseIterable {
    case approved = "00"
    case insufficientFunds = "51"
    case rejected = "07"
}

/// The outcome of one authorization, as reported to the terminal.
public struct Decision: Sendable, Equatable {
    public let code: ResponseCode
    /// Plain words, present on every `07`.
    public let reason: String?
    /// The answer to a balance inquiry: every category, in name order.
    public let balances: [CategoryBalance]?

    public init(code: ResponseCode, reason: String? = nil, balances: [CategoryBalance]? = nil) {
        precondition(code != .rejected || reason != nil, "a 07 always carries a reason")
        self.code = code
        self.reason = reason
        self.balances = balances
    }

    public static let approved = Decision(code: .approved)
    public static let insufficientFunds = Decision(code: .insufficientFunds)
    public static func rejected(_ reason: String) -> Decision { Decision(code: .rejected, reason: reason) }
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

/// Reasons that tooling and tests match on.
public enum RejectReason {
    public static let unknownAccount = "unknown account"
    public static let accountBusy = "account busy"
    public static let redisUnavailable = "authorizer storage unavailable"
    public static let shuttingDown = "authorizer shutting down"
    public static let lineTooLong = "line longer than 16384 bytes"
    /// The decision was not back within the SLA; an authorization answered
    /// so is reversed by the service itself.
    public static let timeout = "timeout"
    /// An authorization whose id a reversal got to first.
    public static let reversed = "reversed"
    public static let originalNotFound = "original not found"
}
