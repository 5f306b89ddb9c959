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
    /// The trailing window's length in seconds (60 s to 31 days), and its limits.
    case rollingSeconds = "rolling_seconds"
    case rollingAmount = "rolling_amount"
    case rollingCount = "rolling_count"
    /// Comma-separated MCCs.
    case blockedMCC = "blocked_mcc"
    /// Comma-separated digests of normalized merchant descriptors.
    case blockedMerchant = "blocked_merchant"

    /// Amounts are cents; counts are approvals; the rest are lists.
    public var isAmount: Bool { [.perTransaction, .dayAmount, .weekAmount, .monthAmount, .rollingAmount].contains(self) }

    /// A trailing window keeps at most this many approvals (authorize.lua's
    /// maxTrailing): a count limit above it could never bind.
    public static let maxTrailingApprovals = 200

    /// The longest list a control may hold (the script scans it per authorization).
    public static let maxListItems = 64

    /// The hash field of this kind in `scope`.
    public func field(scope: ControlScope) -> String { "\(scope.name).\(rawValue)" }
}

extension ControlKind {
    /// The stored form of a control given as text (a CLI option, a rules
    /// file): cents for an amount ("150.00"), a count (1-1000000), MCCs
    /// comma-separated, merchants as the digests of their normalized
    /// descriptors. Throws a message naming what is wrong.
    public func storedValue(_ items: [String]) throws -> String {
        switch self {
        case .rollingSeconds:
            guard items.count == 1, let seconds = Int(items[0]), (60...2_678_400).contains(seconds) else {
                throw ControlValueError("\(rawValue): seconds from 60 to 2678400 (31 days)")
            }
            return String(seconds)
        case .rollingCount:
            guard items.count == 1, let count = Int(items[0]), (1...Self.maxTrailingApprovals).contains(count) else {
                throw ControlValueError("\(rawValue): a count from 1 to \(Self.maxTrailingApprovals)")
            }
            return String(count)
        case .perTransaction, .dayAmount, .weekAmount, .monthAmount, .rollingAmount:
            guard items.count == 1, case .success(let cents) = Cents.parse(items[0]) else {
                throw ControlValueError("\(rawValue): a positive amount such as 150.00")
            }
            return String(cents.value)
        case .dayCount, .weekCount, .monthCount:
            guard items.count == 1, let count = Int(items[0]), (1...1_000_000).contains(count) else {
                throw ControlValueError("\(rawValue): a count from 1 to 1000000")
            }
            return String(count)
        case .blockedMCC:
            let codes = items.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }
            guard !codes.isEmpty, codes.count <= Self.maxListItems, codes.allSatisfy(MCC.isValid) else {
                throw ControlValueError("\(rawValue): up to \(Self.maxListItems) four-digit MCCs")
            }
            return codes.joined(separator: ",")
        case .blockedMerchant:
            guard !items.isEmpty, items.count <= Self.maxListItems, items.allSatisfy({ !MerchantDescriptor.normalize($0).isEmpty }) else {
                throw ControlValueError("\(rawValue): 1 to \(Self.maxListItems) merchant descriptors")
            }
            return items.map { MerchantDescriptor($0).digest }.joined(separator: ",")
        }
    }

    /// Whether `value` is a stored form of this kind (read back from Redis).
    public func isStoredValue(_ value: String) -> Bool {
        switch self {
        case .perTransaction, .dayAmount, .weekAmount, .monthAmount, .dayCount, .weekCount, .monthCount,
             .rollingSeconds, .rollingAmount, .rollingCount:
            return Int64(value).map { $0 > 0 } ?? false
        case .blockedMCC:
            return value.split(separator: ",", omittingEmptySubsequences: false).allSatisfy { MCC.isValid(String($0)) }
        case .blockedMerchant:
            return value.split(separator: ",", omittingEmptySubsequences: false).allSatisfy { $0.utf8.count == 8 && $0.allSatisfy(\.isHexDigit) }
        }
    }
}

extension ControlKind {
    /// A trailing limit needs its window's length in the same scope.
    public static func trailingWindowError(_ values: [ControlKind: String]) -> String? {
        let limited = values[.rollingAmount] != nil || values[.rollingCount] != nil
        return limited && values[.rollingSeconds] == nil ? "rolling_amount and rolling_count need rolling_seconds" : nil
    }
}

public struct ControlValueError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Whose control: the account's, one card's, or the program's (the product's
/// defaults for every account, kept in the rules).
public enum ControlScope: Equatable, Sendable {
    case account
    case card(String)
    case program

    public var name: String {
        switch self {
        case .account: return "account"
        case .card(let id): return id
        case .program: return "program"
        }
    }
}

/// The program's controls: stored forms by kind, and the argument
/// authorize.lua reads them from (ARGV[21], "KIND=VALUE;KIND=VALUE" in the
/// order of the kinds), built once per rule set rather than per request.
public struct ProgramControls: Sendable, Equatable {
    public let values: [ControlKind: String]
    public let argument: String

    public init(_ values: [ControlKind: String]) {
        self.values = values
        self.argument = ControlKind.allCases.compactMap { kind in values[kind].map { "\(kind.rawValue)=\($0)" } }.joined(separator: ";")
    }

    public static let none = ProgramControls([:])

    public func validationErrors() -> [String] {
        var errors = values.keys.sorted { $0.rawValue < $1.rawValue }.compactMap { kind in
            kind.isStoredValue(values[kind]!) ? nil : "program control \(kind.rawValue) \"\(values[kind]!)\" is not valid"
        }
        if let missing = ControlKind.trailingWindowError(values) { errors.append("program controls: " + missing) }
        return errors
    }
}
