/// Validation of the identifiers that end up inside Redis keys.
public enum Identifier {
    public static let maxLength = 64

    /// 1–64 characters of `[A-Za-z0-9._:-]`. Braces and spaces are excluded so
    /// an identifier can never break the `{ID}` hash tag of a key.
    public static func isValid<S: StringProtocol>(_ text: S) -> Bool {
        let utf8 = text.utf8
        guard !utf8.isEmpty, utf8.count <= maxLength else { return false }
        return utf8.allSatisfy(isAllowed)
    }

    @inline(__always)
    static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"),
             UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: ":"), UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }
}

/// A benefit category name: 1–32 characters of `[A-Z0-9_]`.
public enum CategoryName {
    public static let maxLength = 32

    public static func isValid(_ text: String) -> Bool {
        let utf8 = text.utf8
        guard !utf8.isEmpty, utf8.count <= maxLength else { return false }
        return utf8.allSatisfy { byte in
            (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                || byte == UInt8(ascii: "_")
        }
    }
}

/// A merchant category code: exactly four ASCII digits.
public enum MCC {
    public static func isValid(_ text: String) -> Bool {
        let utf8 = text.utf8
        return utf8.count == 4 && utf8.allSatisfy { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
    }
}
