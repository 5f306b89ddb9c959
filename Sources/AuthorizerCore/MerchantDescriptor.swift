/// A merchant descriptor as printed by the card network.
///
/// A 40-character descriptor follows the network layout: name in characters
/// 1–25, city in 26–38, country in 39–40. Any other length is a free-form name.
public struct MerchantDescriptor: Sendable, Equatable {
    public static let maxLength = 200
    static let networkLayoutLength = 40

    /// The whole descriptor, normalized.
    public let normalized: String
    /// The merchant name alone, normalized (the whole descriptor when the
    /// layout is not the network one).
    public let name: String

    /// 32-bit FNV-1a of the normalized descriptor, 8 lowercase hex digits:
    /// what an idempotency record keeps for a reversal's merchant check (the
    /// whole descriptor would double the record).
    public var digest: String {
        let hex = String(FNV1a.hash32(normalized.utf8), radix: 16)
        return String(repeating: "0", count: 8 - hex.utf8.count) + hex
    }

    public init(_ raw: String) {
        // Card-network descriptors are printable ASCII: work on bytes then.
        if let fast = MerchantDescriptor.normalizeASCII(raw) {
            normalized = fast.normalized
            name = fast.name
            return
        }
        normalized = MerchantDescriptor.normalize(raw)
        let characters = Array(raw)
        if characters.count == MerchantDescriptor.networkLayoutLength {
            name = MerchantDescriptor.normalize(String(characters[0..<25]))
        } else {
            name = normalized
        }
    }

    /// The same normalization for printable ASCII (and tabs), byte by byte;
    /// nil for anything else, which takes the Unicode path.
    static func normalizeASCII(_ raw: String) -> (normalized: String, name: String)? {
        raw.utf8.withContiguousStorageIfAvailable { bytes -> (String, String)? in
            guard bytes.allSatisfy({ ($0 >= 0x20 && $0 < 0x7F) || $0 == 0x09 }) else { return nil }
            func collapse(_ slice: UnsafeBufferPointer<UInt8>.SubSequence) -> String {
                var out: [UInt8] = []
                out.reserveCapacity(slice.count)
                var pendingSpace = false
                for byte in slice {
                    if byte == 0x20 || byte == 0x09 {
                        pendingSpace = !out.isEmpty
                        continue
                    }
                    if pendingSpace {
                        out.append(0x20)
                        pendingSpace = false
                    }
                    out.append(byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z") ? byte - 32 : byte)
                }
                return String(decoding: out, as: UTF8.self)
            }
            let normalized = collapse(bytes[...])
            let name = bytes.count == networkLayoutLength ? collapse(bytes[0..<25]) : normalized
            return (normalized, name)
        } ?? nil
    }

    /// Uppercase, every run of whitespace collapsed to one space, trimmed.
    public static func normalize<S: StringProtocol>(_ raw: S) -> String {
        var result = ""
        result.reserveCapacity(raw.utf8.count)
        var pendingSpace = false
        for character in raw.uppercased() {
            if character.isWhitespace {
                pendingSpace = !result.isEmpty
                continue
            }
            if pendingSpace {
                result.append(" ")
                pendingSpace = false
            }
            result.append(character)
        }
        return result
    }
}
