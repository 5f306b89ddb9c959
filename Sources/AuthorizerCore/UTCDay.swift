/// A UTC calendar day, counted in days since 1970-01-01: the unit of the
/// idempotency buckets (`txns:{ID}:YYYYMMDD`).
public struct UTCDay: Sendable, Hashable, Comparable {
    public static let seconds: Int64 = 86_400
    public let number: Int64

    public init(number: Int64) { self.number = number }

    /// The day holding `unixSeconds` (floor division: second -1 is 1969-12-31).
    public init(unixSeconds: Int64) {
        let (quotient, remainder) = unixSeconds.quotientAndRemainder(dividingBy: Self.seconds)
        number = remainder < 0 ? quotient - 1 : quotient
    }

    public func adding(days: Int64) -> UTCDay { UTCDay(number: number + days) }

    public static func < (lhs: UTCDay, rhs: UTCDay) -> Bool { lhs.number < rhs.number }

    /// Year, month (1–12) and day (1–31) of the proleptic Gregorian calendar
    /// (H. Hinnant's days-to-civil, integer arithmetic only).
    public var civil: (year: Int64, month: Int64, day: Int64) {
        let z = number + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        assert((1...12).contains(month) && (1...31).contains(day))
        return (year, month, day)
    }

    /// `YYYYMMDD`, as in the bucket keys.
    public var compact: String {
        let (year, month, day) = civil
        precondition((0...9999).contains(year), "a four-digit year")
        return String(year * 10_000 + month * 100 + day)
    }
}
