import Foundation

/// The test side of an ISO 8583 link, written from the field layout alone
/// (pyiso8583 `default_ascii`): 4-digit MTI, 16 hex characters of primary
/// bitmap (plus 16 of secondary when any field above 64 is present), fixed
/// fields as they are, LLVAR/LLLVAR with 2/3 ASCII digits of length; each
/// message preceded by a 2-byte big-endian length. Independent of the
/// server's codec on purpose.
enum ISOTestCodec {
    /// Length digits per field used by the tests: 0 fixed (value sent as is), 2 LLVAR, 3 LLLVAR.
    static let lengthDigits: [Int: Int] = [2: 2, 32: 2, 35: 2, 44: 2, 48: 3, 54: 3, 63: 3]
    static let fixedLengths: [Int: Int] = [
        3: 6, 4: 12, 7: 10, 11: 6, 12: 6, 13: 4, 18: 4, 37: 12, 38: 6, 39: 2, 41: 8, 42: 15, 43: 40, 49: 3, 70: 3, 90: 42,
    ]

    static func encode(mti: String, _ fields: [Int: String]) -> [UInt8] {
        var primary = [UInt8](repeating: 0, count: 8)
        var secondary = [UInt8](repeating: 0, count: 8)
        for number in fields.keys {
            if number <= 64 {
                primary[(number - 1) / 8] |= 0x80 >> UInt8((number - 1) % 8)
            } else {
                secondary[(number - 65) / 8] |= 0x80 >> UInt8((number - 65) % 8)
            }
        }
        let hasSecondary = secondary.contains { $0 != 0 }
        if hasSecondary { primary[0] |= 0x80 }
        var text = mti + hex(primary) + (hasSecondary ? hex(secondary) : "")
        for number in fields.keys.sorted() {
            let value = fields[number]!
            if let digits = lengthDigits[number] {
                text += String(format: "%0\(digits)d", value.utf8.count)
            } else if let fixed = fixedLengths[number] {
                precondition(value.utf8.count == fixed, "DE\(number) must be \(fixed) characters: \(value)")
            }
            text += value
        }
        return Array(text.utf8)
    }

    static func frame(_ body: [UInt8]) -> [UInt8] {
        [UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String(format: "%02X", $0) }.joined()
    }

    /// Decodes an answer: only the fields the server sends back.
    static func decode(_ bytes: [UInt8]) throws -> (mti: String, fields: [Int: String]) {
        let text = String(decoding: bytes, as: UTF8.self)
        guard text.utf8.count == bytes.count, bytes.count >= 20 else { throw TestFailure("not an ISO answer: \(bytes)") }
        var index = text.startIndex
        func take(_ count: Int) throws -> String {
            guard let end = text.index(index, offsetBy: count, limitedBy: text.endIndex) else {
                throw TestFailure("answer truncated: \(text)")
            }
            defer { index = end }
            return String(text[index..<end])
        }
        let mti = try take(4)
        guard let primary = UInt64(try take(16), radix: 16) else { throw TestFailure("bad bitmap in \(text)") }
        var present = (1...64).filter { primary & (1 << UInt64(64 - $0)) != 0 }
        if present.first == 1 {
            guard let secondary = UInt64(try take(16), radix: 16) else { throw TestFailure("bad secondary bitmap in \(text)") }
            present.removeFirst()
            present += (65...128).filter { secondary & (1 << UInt64(128 - $0)) != 0 }
        }
        var fields: [Int: String] = [:]
        for number in present {
            if let digits = lengthDigits[number] {
                guard let length = Int(try take(digits)) else { throw TestFailure("bad length of DE\(number) in \(text)") }
                fields[number] = try take(length)
            } else if let fixed = fixedLengths[number] {
                fields[number] = try take(fixed)
            } else {
                throw TestFailure("unexpected DE\(number) in \(text)")
            }
        }
        guard index == text.endIndex else { throw TestFailure("bytes after the last field: \(text)") }
        return (mti, fields)
    }
}

/// A blocking ISO 8583 link to `serve` (length-prefixed messages).
final class ISOLink: @unchecked Sendable {
    let client: TerminalClient
    private var pending: [UInt8] = []

    init(port: Int, receiveTimeout: TimeInterval = 10) throws {
        client = try TerminalClient(port: port, receiveTimeout: receiveTimeout)
    }

    func send(mti: String, _ fields: [Int: String]) throws {
        try client.send(bytes: ISOTestCodec.frame(ISOTestCodec.encode(mti: mti, fields)))
    }

    func sendRaw(_ bytes: [UInt8]) throws {
        try client.send(bytes: bytes)
    }

    /// The next answer's bytes, or nil when the server closed the link.
    func readFrame() throws -> [UInt8]? {
        while true {
            if pending.count >= 2 {
                let length = Int(pending[0]) << 8 | Int(pending[1])
                if pending.count >= 2 + length {
                    let body = Array(pending[2..<(2 + length)])
                    pending.removeFirst(2 + length)
                    return body
                }
            }
            var chunk = [UInt8](repeating: 0, count: 65_536)
            let count = chunk.withUnsafeMutableBytes { recv(client.fd, $0.baseAddress, $0.count, 0) }
            if count == 0 { return nil }
            if count < 0 && errno == EINTR { continue }
            if count < 0 && errno == ECONNRESET { return nil }
            guard count > 0 else { throw TestFailure("no answer from the server (errno \(errno))") }
            pending.append(contentsOf: chunk[..<count])
        }
    }

    func read() throws -> (mti: String, fields: [Int: String]) {
        guard let body = try readFrame() else { throw TestFailure("link closed before the answer") }
        return try ISOTestCodec.decode(body)
    }

    func exchange(mti: String, _ fields: [Int: String]) throws -> (mti: String, fields: [Int: String]) {
        try send(mti: mti, fields)
        return try read()
    }
}
