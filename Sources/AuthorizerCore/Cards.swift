/// A card's status. `lost`, `stolen` and `cancelled` are final: a card in
/// them never authorizes again (a replacement is a new card). Which moves
/// are allowed is decided in one place, `Lua/card.lua`.
public enum CardStatus: String, Sendable, CaseIterable {
    /// Issued, not yet activated.
    case pending
    case active
    /// Temporarily stopped by the holder or an operator; `unblock` reverses it.
    case blocked
    case lost
    case stolen
    case cancelled
}

/// A card's expiry, `YYMM` (valid through the last day of that month).
public struct CardExpiry: Sendable, Equatable, CustomStringConvertible {
    public let year: Int
    public let month: Int

    /// Parses `YYMM` (four digits, month 01–12).
    public init?(_ text: String) {
        let utf8 = Array(text.utf8)
        guard utf8.count == 4, utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
              let value = Int(text), (1...12).contains(value % 100) else { return nil }
        year = value / 100
        month = value % 100
    }

    public init(year: Int, month: Int) {
        precondition((0...99).contains(year) && (1...12).contains(month))
        self.year = year
        self.month = month
    }

    public var description: String {
        (year < 10 ? "0" : "") + String(year) + (month < 10 ? "0" : "") + String(month)
    }

    /// `self` plus `years`, same month (the default validity of a new card).
    public func adding(years: Int) -> CardExpiry {
        CardExpiry(year: (year + years) % 100, month: month)
    }
}

/// A primary account number: 12–19 digits. Held only while a request is
/// resolved or a card issued; never logged or stored (see `masked`).
public struct PAN: Sendable, Equatable {
    public let digits: String

    public init?(_ text: String) {
        let utf8 = text.utf8
        guard (12...19).contains(utf8.count), utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else {
            return nil
        }
        digits = text
    }

    /// First six and last four digits, the rest `*`: what statements, logs and metrics may show.
    public var masked: String {
        let bytes = Array(digits.utf8)
        return String(decoding: bytes[0..<6], as: UTF8.self) + String(repeating: "*", count: bytes.count - 10)
            + String(decoding: bytes[(bytes.count - 4)...], as: UTF8.self)
    }

    /// Whether the last digit is the Luhn check digit of the others.
    public var passesLuhn: Bool {
        let values = digits.utf8.map { Int($0 - UInt8(ascii: "0")) }
        return Self.luhnCheckDigit(values.dropLast()) == values.last
    }

    static func luhnCheckDigit<C: BidirectionalCollection>(_ payload: C) -> Int where C.Element == Int {
        var sum = 0
        for (index, digit) in payload.reversed().enumerated() {
            let doubled = index % 2 == 0 ? digit * 2 : digit
            sum += doubled > 9 ? doubled - 9 : doubled
        }
        return (10 - sum % 10) % 10
    }

    /// A random 16-digit PAN under `bin` (6 digits) with its Luhn digit.
    public static func generate<G: RandomNumberGenerator>(bin: String, using generator: inout G) -> PAN {
        precondition(bin.utf8.count == 6 && PAN(bin + "000000") != nil, "a BIN is six digits")
        var payload = bin.utf8.map { Int($0 - UInt8(ascii: "0")) }
        for _ in 0..<9 { payload.append(Int.random(in: 0...9, using: &generator)) }
        payload.append(luhnCheckDigit(payload))
        return PAN(payload.map(String.init).joined())!
    }
}

/// How a request names its card: by PAN (resolved through the index) or by card id.
public enum CardReference: Sendable, Equatable {
    case pan(PAN)
    case id(String)

    public static let rule = "card must be a PAN (12-19 digits) or a card id (crd_ and 1-60 characters of A-Z a-z 0-9 . _ : -)"

    public init?(_ text: String) {
        if let pan = PAN(text) {
            self = .pan(pan)
        } else if CardID.isValid(text) {
            self = .id(text)
        } else {
            return nil
        }
    }

    /// What may be shown of it: a masked PAN or the id.
    public var shown: String {
        switch self {
        case .pan(let pan): return pan.masked
        case .id(let id): return id
        }
    }
}

/// Card ids: `crd_` and a random part; identifiers, so they fit in keys.
public enum CardID {
    public static func isValid(_ text: String) -> Bool {
        text.hasPrefix("crd_") && text.utf8.count > 4 && Identifier.isValid(text)
    }

    public static func generate<G: RandomNumberGenerator>(using generator: inout G) -> String {
        let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz".utf8)
        var text = "crd_"
        for _ in 0..<16 { text.unicodeScalars.append(Unicode.Scalar(alphabet[Int.random(in: 0..<alphabet.count, using: &generator)])) }
        return text
    }
}

/// The kind of a card, as issued.
public enum CardKind: String, Sendable, CaseIterable {
    case physical, virtual
}
