/// ISO 8583:1987 messages in the all-ASCII layout of pyiso8583's
/// `default_ascii` spec (jPOS ISO87APackager family with an ASCII bitmap):
/// a 4-digit ASCII MTI, the primary bitmap as 16 hex characters, the
/// secondary bitmap (DE1) as 16 more when its bit is set, then the fields
/// in order, each fixed-length or preceded by its length as 2 (LLVAR) or
/// 3 (LLLVAR) ASCII digits. No I/O here: bytes in, fields out, and back.
public enum ISO8583 {
    /// How one data element is laid out.
    public struct FieldSpec: Sendable, Equatable {
        /// 0: fixed length `maxLength`; 2: LLVAR; 3: LLLVAR.
        public let lengthDigits: Int
        public let maxLength: Int
    }

    /// Specs of DE1 ... DE128 (index 0 unused). Every field is ASCII text.
    public static let specs: [FieldSpec] = {
        func f(_ n: Int) -> FieldSpec { FieldSpec(lengthDigits: 0, maxLength: n) }
        func ll(_ n: Int) -> FieldSpec { FieldSpec(lengthDigits: 2, maxLength: n) }
        func lll(_ n: Int) -> FieldSpec { FieldSpec(lengthDigits: 3, maxLength: n) }
        var table: [FieldSpec] = Array(repeating: f(0), count: 129)
        let layout: [(Int, FieldSpec)] = [
            (1, f(16)), (2, ll(19)), (3, f(6)), (4, f(12)), (5, f(12)), (6, f(12)), (7, f(10)), (8, f(8)),
            (9, f(8)), (10, f(8)), (11, f(6)), (12, f(6)), (13, f(4)), (14, f(4)), (15, f(4)), (16, f(4)),
            (17, f(4)), (18, f(4)), (19, f(3)), (20, f(3)), (21, f(3)), (22, f(3)), (23, f(3)), (24, f(3)),
            (25, f(2)), (26, f(2)), (27, f(1)), (28, f(9)), (29, f(9)), (30, f(9)), (31, f(9)), (32, ll(11)),
            (33, ll(11)), (34, ll(28)), (35, ll(37)), (36, lll(104)), (37, f(12)), (38, f(6)), (39, f(2)), (40, f(3)),
            (41, f(8)), (42, f(15)), (43, f(40)), (44, ll(25)), (45, ll(76)), (46, lll(999)), (47, lll(999)), (48, lll(999)),
            (49, f(3)), (50, f(3)), (51, f(3)), (52, f(16)), (53, f(16)), (54, lll(240)), (55, lll(510)), (56, lll(999)),
            (57, lll(999)), (58, lll(999)), (59, lll(999)), (60, lll(999)), (61, lll(999)), (62, lll(999)), (63, lll(999)), (64, f(16)),
            (65, f(16)), (66, f(1)), (67, f(2)), (68, f(3)), (69, f(3)), (70, f(3)), (71, f(4)), (72, f(4)),
            (73, f(6)), (74, f(10)), (75, f(10)), (76, f(10)), (77, f(10)), (78, f(10)), (79, f(10)), (80, f(10)),
            (81, f(10)), (82, f(12)), (83, f(12)), (84, f(12)), (85, f(12)), (86, f(16)), (87, f(16)), (88, f(16)),
            (89, f(16)), (90, f(42)), (91, f(1)), (92, f(2)), (93, f(5)), (94, f(7)), (95, f(42)), (96, f(16)),
            (97, f(17)), (98, f(25)), (99, ll(11)), (100, ll(11)), (101, ll(17)), (102, ll(28)), (103, ll(28)), (104, lll(100)),
        ]
        for (number, spec) in layout { table[number] = spec }
        for number in 105...127 { table[number] = lll(999) }
        table[128] = f(16)
        return table
    }()

    /// One message: its MTI and its data elements (2...128) as ASCII text.
    /// The bitmaps are derived from the fields present.
    public struct Message: Sendable, Equatable {
        public var mti: String
        public var fields: [Int: String]

        public init(mti: String, fields: [Int: String] = [:]) {
            self.mti = mti
            self.fields = fields
        }

        public subscript(_ number: Int) -> String? {
            get { fields[number] }
            set { fields[number] = newValue }
        }
    }

    /// Why a message could not be read, with what could be read before it
    /// (the MTI and the fields before the faulty one), so that it can still
    /// be answered when its MTI and STAN are known.
    public struct DecodeError: Error, Sendable, Equatable, CustomStringConvertible {
        public let reason: String
        /// The MTI, when its 4 digits could be read.
        public let mti: String?
        /// The fields read before the error.
        public let fields: [Int: String]

        public var description: String { reason }
    }

    public struct EncodeError: Error, Sendable, Equatable, CustomStringConvertible {
        public let reason: String
        public var description: String { reason }
    }

    // MARK: - Decoding

    /// Reads one whole message (without its length prefix). Every byte must
    /// be accounted for: trailing bytes are an error.
    public static func decode(_ bytes: UnsafeRawBufferPointer) -> Result<Message, DecodeError> {
        var fields: [Int: String] = [:]
        var mti: String?
        func fail(_ reason: String) -> Result<Message, DecodeError> {
            .failure(DecodeError(reason: reason, mti: mti, fields: fields))
        }
        guard bytes.count >= 4 else { return fail("message shorter than its MTI") }
        guard bytes[0..<4].allSatisfy(isDigit) else { return fail("MTI must be 4 digits") }
        mti = ascii(bytes, 0, 4)
        var offset = 4
        guard let primary = readBitmap(bytes, at: offset) else {
            return fail("primary bitmap must be 16 hex characters")
        }
        offset += 16
        var present: [Int] = (1...64).filter { primary & (UInt64(1) << UInt64(64 - $0)) != 0 }
        if primary & (UInt64(1) << 63) != 0 {
            guard let secondary = readBitmap(bytes, at: offset) else {
                return fail("secondary bitmap must be 16 hex characters")
            }
            offset += 16
            present.removeFirst()  // DE1 is the secondary bitmap itself
            present += (65...128).filter { secondary & (UInt64(1) << UInt64(128 - $0)) != 0 }
        }
        for number in present {
            let spec = specs[number]
            var length = spec.maxLength
            if spec.lengthDigits > 0 {
                guard offset + spec.lengthDigits <= bytes.count else {
                    return fail("field \(number): length prefix truncated")
                }
                let prefix = bytes[offset..<(offset + spec.lengthDigits)]
                guard prefix.allSatisfy(isDigit) else {
                    return fail("field \(number): length prefix must be \(spec.lengthDigits) digits")
                }
                length = prefix.reduce(0) { $0 * 10 + Int($1 - 0x30) }
                guard length <= spec.maxLength else {
                    return fail("field \(number): length \(length) over its maximum \(spec.maxLength)")
                }
                offset += spec.lengthDigits
            }
            guard offset + length <= bytes.count else {
                return fail("field \(number): truncated (\(length) bytes expected, \(bytes.count - offset) left)")
            }
            guard bytes[offset..<(offset + length)].allSatisfy({ $0 >= 0x20 && $0 <= 0x7E }) else {
                return fail("field \(number): not printable ASCII")
            }
            fields[number] = ascii(bytes, offset, length)
            offset += length
        }
        guard offset == bytes.count else {
            return fail("\(bytes.count - offset) bytes after the last field")
        }
        return .success(Message(mti: mti!, fields: fields))
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= 0x30 && byte <= 0x39 }

    private static func ascii(_ bytes: UnsafeRawBufferPointer, _ offset: Int, _ length: Int) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + length)]), as: UTF8.self)
    }

    private static func readBitmap(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> UInt64? {
        guard offset + 16 <= bytes.count else { return nil }
        var value: UInt64 = 0
        for byte in bytes[offset..<(offset + 16)] {
            let nibble: UInt8
            switch byte {
            case 0x30...0x39: nibble = byte - 0x30
            case 0x41...0x46: nibble = byte - 0x41 + 10
            case 0x61...0x66: nibble = byte - 0x61 + 10
            default: return nil
            }
            value = value << 4 | UInt64(nibble)
        }
        return value
    }

    // MARK: - Encoding

    /// Appends the message (without length prefix) to `out`. Fixed fields
    /// must have exactly their length; every value must be printable ASCII.
    public static func encode(_ message: Message, into out: inout [UInt8]) throws {
        let mti = Array(message.mti.utf8)
        guard mti.count == 4, mti.allSatisfy(isDigit) else { throw EncodeError(reason: "MTI must be 4 digits") }
        let numbers = message.fields.keys.sorted()
        guard numbers.allSatisfy({ (2...128).contains($0) && $0 != 65 }) else {
            throw EncodeError(reason: "fields are 2-128 (bitmaps are derived), not 65")
        }
        var primary: UInt64 = 0
        var secondary: UInt64 = 0
        for number in numbers {
            if number <= 64 {
                primary |= UInt64(1) << UInt64(64 - number)
            } else {
                secondary |= UInt64(1) << UInt64(128 - number)
            }
        }
        if secondary != 0 { primary |= UInt64(1) << 63 }
        out.append(contentsOf: mti)
        appendHex(primary, to: &out)
        if secondary != 0 { appendHex(secondary, to: &out) }
        for number in numbers {
            let spec = specs[number]
            let value = Array(message.fields[number]!.utf8)
            guard value.allSatisfy({ $0 >= 0x20 && $0 <= 0x7E }) else {
                throw EncodeError(reason: "field \(number): not printable ASCII")
            }
            if spec.lengthDigits == 0 {
                guard value.count == spec.maxLength else {
                    throw EncodeError(reason: "field \(number): \(value.count) characters, fixed length \(spec.maxLength)")
                }
            } else {
                guard value.count <= spec.maxLength else {
                    throw EncodeError(reason: "field \(number): \(value.count) characters, at most \(spec.maxLength)")
                }
                var digits = Array(String(value.count).utf8)
                while digits.count < spec.lengthDigits { digits.insert(0x30, at: 0) }
                out.append(contentsOf: digits)
            }
            out.append(contentsOf: value)
        }
    }

    public static func encode(_ message: Message) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        try encode(message, into: &out)
        return out
    }

    private static func appendHex(_ value: UInt64, to out: inout [UInt8]) {
        let hex = Array("0123456789ABCDEF".utf8)
        for shift in stride(from: 60, through: 0, by: -4) {
            out.append(hex[Int((value >> UInt64(shift)) & 0xF)])
        }
    }

    /// The answer's MTI: the function digit becomes "response", the origin
    /// a plain request (0100, 0101 -> 0110; 0400, 0401 -> 0410; 0800 -> 0810).
    /// nil when the MTI is not a request.
    public static func responseMTI(for mti: String) -> String? {
        let digits = Array(mti.utf8)
        guard digits.count == 4, digits.allSatisfy(isDigit), digits[2] % 2 == 0 else { return nil }
        return String(decoding: [digits[0], digits[1], digits[2] + 1, 0x30], as: UTF8.self)
    }
}
