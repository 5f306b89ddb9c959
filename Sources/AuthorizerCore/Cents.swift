/// Money as an exact count of cents. Never a floating-point value.
public struct Cents: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The largest amount a single transaction may carry: 10^12 cents.
    public static let maxTransaction = Cents(1_000_000_000_000)
    /// Balances stay below 2^53 so that Redis's Lua (doubles) handles them exactly.
    public static let maxBalance = Cents(1 << 53 - 1)

    public let value: Int64

    public init(_ value: Int64) {
        self.value = value
    }

    public static func < (lhs: Cents, rhs: Cents) -> Bool { lhs.value < rhs.value }

    /// `1205.11`, `-3.07`, `0.00`.
    public var description: String {
        let magnitude = value.magnitude
        let units = magnitude / 100
        let fraction = magnitude % 100
        let sign = value < 0 ? "-" : ""
        return "\(sign)\(units).\(fraction < 10 ? "0" : "")\(fraction)"
    }
}

public enum AmountError: Error, Equatable, Sendable, CustomStringConvertible {
    case empty
    case notADecimal
    case negative
    case zero
    case tooManyDecimals
    case tooLarge

    public var description: String {
        switch self {
        case .empty: return "amount is empty"
        case .notADecimal: return "amount must be a plain decimal number like 100.10"
        case .negative: return "amount must be greater than zero"
        case .zero: return "amount must be greater than zero"
        case .tooManyDecimals: return "amount has more than 2 decimal places"
        case .tooLarge: return "amount exceeds the maximum of 10000000000.00"
        }
    }
}

extension Cents {
    /// Parses a decimal written with digits, an optional `.` and at most two
    /// significant decimals (`100`, `100.1`, `100.10`, `100.100`), exactly, from
    /// its characters. Exponents, signs other than a leading `-`, and
    /// anything else are refused. `limit` bounds the result (inclusive).
    public static func parse<Bytes: Collection<UInt8>>(
        digits bytes: Bytes,
        allowZero: Bool = false,
        limit: Cents = .maxTransaction
    ) -> Result<Cents, AmountError> {
        var index = bytes.startIndex
        guard index != bytes.endIndex else { return .failure(.empty) }
        var negative = false
        if bytes[index] == UInt8(ascii: "-") {
            negative = true
            index = bytes.index(after: index)
        }
        var units: Int64 = 0
        var integerDigits = 0
        var fraction: Int64 = 0
        var fractionDigits = 0
        var sawPoint = false
        var tooLarge = false
        while index != bytes.endIndex {
            let byte = bytes[index]
            index = bytes.index(after: index)
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                let digit = Int64(byte &- UInt8(ascii: "0"))
                if sawPoint {
                    fractionDigits += 1
                    if fractionDigits <= 2 {
                        fraction = fraction * 10 + digit
                    } else if digit != 0 {
                        return .failure(.tooManyDecimals)
                    }
                } else {
                    integerDigits += 1
                    // Stop accumulating long before Int64 could overflow; keep
                    // scanning so format errors are reported first.
                    if units >= 1_000_000_000_000_000 {
                        tooLarge = true
                    } else {
                        units = units * 10 + digit
                    }
                }
            case UInt8(ascii: "."):
                guard !sawPoint, integerDigits > 0 else { return .failure(.notADecimal) }
                sawPoint = true
            default:
                return .failure(.notADecimal)
            }
        }
        guard integerDigits > 0, !sawPoint || fractionDigits > 0 else { return .failure(.notADecimal) }
        if fractionDigits == 1 { fraction *= 10 }
        if tooLarge { return .failure(negative ? .negative : .tooLarge) }
        let cents = units * 100 + fraction
        if negative && cents != 0 { return .failure(.negative) }
        if cents == 0 && !allowZero { return .failure(.zero) }
        guard cents <= limit.value else { return .failure(.tooLarge) }
        assert(cents >= 0 && cents <= limit.value)
        return .success(Cents(cents))
    }

    public static func parse(_ text: String, allowZero: Bool = false, limit: Cents = .maxTransaction) -> Result<Cents, AmountError> {
        parse(digits: Array(text.utf8), allowZero: allowZero, limit: limit)
    }
}
