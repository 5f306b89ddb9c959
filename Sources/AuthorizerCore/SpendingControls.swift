/// The spending controls of an account or of one of its cards, as stored in
/// `controls:{ACCOUNT}` (HASH `SCOPE.KIND` → value; SCOPE `account` or a card
/// id) and checked by authorize.lua in the execution that debits.
public enum ControlKind: String, CaseIterable, Sendable {
    case perTransaction = "per_txn"
    case dayAmount = "day_amount"
    case dayCount = "day_count"
    case weekAmount = "week_amount"
    case weekCount = "week_count"
    case monthAmount = "month_amount"
    case monthCount = "month_count"
    /// Comma-separated MCCs.
    case blockedMCC = "blocked_mcc"
    /// Comma-separated digests of normalized merchant descriptors.
    case blockedMerchant = "blocked_merchant"

    /// Amounts are cents; counts are approvals; the rest are lists.
    public var isAmount: Bool { [.perTransaction, .dayAmount, .weekAmount, .monthAmount].contains(self) }

    /// The longest list a control may hold (the script scans it per authorization).
    public static let maxListItems = 64

    /// The hash field of this kind in `scope`.
    public func field(scope: ControlScope) -> String { "\(scope.name).\(rawValue)" }
}

/// Whose control: the account's, or one card's.
public enum ControlScope: Equatable, Sendable {
    case account
    case card(String)

    public var name: String {
        switch self {
        case .account: return "account"
        case .card(let id): return id
        }
    }
}
