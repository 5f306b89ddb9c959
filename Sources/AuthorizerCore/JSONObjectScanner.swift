/// A strict, bounded scanner for the one JSON shape terminals send: a flat
/// object whose interesting members are strings or numbers.
///
/// It keeps number lexemes as their characters (so amounts are parsed
/// exactly, never through Double), validates the whole line as JSON (nested
/// values of unknown members are checked and skipped up to `maxDepth`), and
/// refuses duplicate keys.
public struct JSONObjectScanner {
    public enum Value: Equatable, Sendable {
        case string(String)
        /// The number exactly as written, e.g. `100.10`.
        case number(String)
        case bool(Bool)
        case null
        /// An object or array; its contents are validated but not kept.
        case composite
    }

    public static let maxDepth = 32
    public static let maxMembers = 64

    /// Scans `bytes` as one JSON object and returns the members whose key is
    /// in `wanted`; other members are validated and dropped.
    public static func scan(
        _ bytes: UnsafeRawBufferPointer,
        wanted: Set<String>
    ) -> Result<[String: Value], ScanError> {
        var scanner = Cursor(bytes: bytes)
        do {
            let members = try scanner.topLevelObject(wanted: wanted)
            return .success(members)
        } catch {
            return .failure(error)
        }
    }

    public struct ScanError: Error, Equatable, Sendable, CustomStringConvertible {
        public let message: String
        public let offset: Int
        public var description: String { "malformed JSON: \(message) at byte \(offset)" }
    }

    struct Cursor {
        let bytes: UnsafeRawBufferPointer
        var index = 0

        init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

        func fail(_ message: String) -> ScanError { ScanError(message: message, offset: index) }

        mutating func skipWhitespace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x09, 0x0A, 0x0D: index += 1
                default: return
                }
            }
        }

        mutating func expect(_ byte: UInt8, _ what: String) throws(ScanError) {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == byte else { throw fail("expected \(what)") }
            index += 1
        }

        mutating func topLevelObject(wanted: Set<String>) throws(ScanError) -> [String: Value] {
            skipWhitespace()
            guard index < bytes.count else { throw fail("empty line") }
            guard bytes[index] == UInt8(ascii: "{") else { throw fail("expected an object") }
            index += 1
            var members: [String: Value] = [:]
            var seen = Set<String>()
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                index += 1
            } else {
                while true {
                    skipWhitespace()
                    let key = try string()
                    guard seen.insert(key).inserted else { throw fail("duplicate key \"\(key)\"") }
                    guard seen.count <= JSONObjectScanner.maxMembers else { throw fail("too many members") }
                    try expect(UInt8(ascii: ":"), "':'")
                    let value = try value(depth: 1)
                    if wanted.contains(key) { members[key] = value }
                    skipWhitespace()
                    guard index < bytes.count else { throw fail("unterminated object") }
                    if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                    if bytes[index] == UInt8(ascii: "}") { index += 1; break }
                    throw fail("expected ',' or '}'")
                }
            }
            skipWhitespace()
            guard index == bytes.count else { throw fail("trailing characters after the object") }
            return members
        }

        mutating func value(depth: Int) throws(ScanError) -> Value {
            skipWhitespace()
            guard index < bytes.count else { throw fail("expected a value") }
            switch bytes[index] {
            case UInt8(ascii: "\""):
                return .string(try string())
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return .number(try number())
            case UInt8(ascii: "t"):
                try literal("true"); return .bool(true)
            case UInt8(ascii: "f"):
                try literal("false"); return .bool(false)
            case UInt8(ascii: "n"):
                try literal("null"); return .null
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                try skipComposite(depth: depth)
                return .composite
            default:
                throw fail("unexpected character")
            }
        }

        mutating func literal(_ word: StaticString) throws(ScanError) {
            let count = word.utf8CodeUnitCount
            guard index + count <= bytes.count else { throw fail("invalid literal") }
            for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] {
                throw fail("invalid literal")
            }
            index += count
        }

        mutating func skipComposite(depth: Int) throws(ScanError) {
            guard depth < JSONObjectScanner.maxDepth else { throw fail("nesting deeper than \(JSONObjectScanner.maxDepth)") }
            let open = bytes[index]
            let close = open == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: "]")
            index += 1
            skipWhitespace()
            if index < bytes.count, bytes[index] == close { index += 1; return }
            while true {
                if open == UInt8(ascii: "{") {
                    skipWhitespace()
                    _ = try string()
                    try expect(UInt8(ascii: ":"), "':'")
                }
                _ = try value(depth: depth + 1)
                skipWhitespace()
                guard index < bytes.count else { throw fail("unterminated value") }
                if bytes[index] == UInt8(ascii: ",") { index += 1; continue }
                if bytes[index] == close { index += 1; return }
                throw fail("expected ',' or closing bracket")
            }
        }

        /// JSON number grammar; returns the lexeme unchanged.
        mutating func number() throws(ScanError) -> String {
            let start = index
            if bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard index < bytes.count, isDigit(bytes[index]) else { throw fail("invalid number") }
            if bytes[index] == UInt8(ascii: "0") {
                index += 1
            } else {
                while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
                index += 1
                guard index < bytes.count, isDigit(bytes[index]) else { throw fail("invalid number") }
                while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
                index += 1
                if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
                guard index < bytes.count, isDigit(bytes[index]) else { throw fail("invalid number") }
                while index < bytes.count, isDigit(bytes[index]) { index += 1 }
            }
            return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        }

        @inline(__always)
        func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

        /// A JSON string with escapes decoded; must be valid UTF-8.
        mutating func string() throws(ScanError) -> String {
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw fail("expected a string") }
            index += 1
            let start = index
            // Fast path: no escapes.
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") {
                    let raw = UnsafeRawBufferPointer(rebasing: bytes[start..<index])
                    index += 1
                    guard let text = String(validating: raw, as: UTF8.self) else {
                        throw ScanError(message: "string is not valid UTF-8", offset: start)
                    }
                    return text
                }
                if byte == UInt8(ascii: "\\") { break }
                if byte < 0x20 { throw fail("control character in string") }
                index += 1
            }
            var decoded = [UInt8](UnsafeRawBufferPointer(rebasing: bytes[start..<index]))
            while index < bytes.count {
                let byte = bytes[index]
                index += 1
                switch byte {
                case UInt8(ascii: "\""):
                    guard let text = String(validating: decoded, as: UTF8.self) else {
                        throw ScanError(message: "string is not valid UTF-8", offset: start)
                    }
                    return text
                case UInt8(ascii: "\\"):
                    guard index < bytes.count else { throw fail("unterminated escape") }
                    let escape = bytes[index]
                    index += 1
                    switch escape {
                    case UInt8(ascii: "\""): decoded.append(0x22)
                    case UInt8(ascii: "\\"): decoded.append(0x5C)
                    case UInt8(ascii: "/"): decoded.append(0x2F)
                    case UInt8(ascii: "b"): decoded.append(0x08)
                    case UInt8(ascii: "f"): decoded.append(0x0C)
                    case UInt8(ascii: "n"): decoded.append(0x0A)
                    case UInt8(ascii: "r"): decoded.append(0x0D)
                    case UInt8(ascii: "t"): decoded.append(0x09)
                    case UInt8(ascii: "u"):
                        var scalar = try hex4()
                        if (0xD800...0xDBFF).contains(scalar) {
                            guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                                throw fail("unpaired surrogate")
                            }
                            index += 2
                            let low = try hex4()
                            guard (0xDC00...0xDFFF).contains(low) else { throw fail("unpaired surrogate") }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else if (0xDC00...0xDFFF).contains(scalar) {
                            throw fail("unpaired surrogate")
                        }
                        guard let unicode = Unicode.Scalar(scalar) else { throw fail("invalid escape") }
                        decoded.append(contentsOf: Array(String(Character(unicode)).utf8))
                    default:
                        throw fail("invalid escape")
                    }
                default:
                    if byte < 0x20 { throw fail("control character in string") }
                    decoded.append(byte)
                }
            }
            throw fail("unterminated string")
        }

        mutating func hex4() throws(ScanError) -> UInt32 {
            guard index + 4 <= bytes.count else { throw fail("invalid \\u escape") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let byte = bytes[index]
                index += 1
                let digit: UInt32
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
                default: throw fail("invalid \\u escape")
                }
                value = value << 4 | digit
            }
            return value
        }
    }
}
