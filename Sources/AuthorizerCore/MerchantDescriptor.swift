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

    public init(_ raw: String) {
        normalized = MerchantDescriptor.normalize(raw)
        let characters = Array(raw)
        if characters.count == MerchantDescriptor.networkLayoutLength {
            name = MerchantDescriptor.normalize(String(characters[0..<25]))
        } else {
            name = normalized
        }
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
