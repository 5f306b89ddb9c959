/// JSON string literals, written one way everywhere (terminal answers, log
/// lines, requests built by the CLI): quotes, backslashes and control
/// characters (below 0x20, and DEL) escaped, everything else as is.
public enum JSONText {
    /// `text` as a JSON string literal, byte by byte into `write`.
    @inlinable
    public static func writeQuoted(_ text: String, _ write: (UInt8) -> Void) {
        write(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                write(UInt8(ascii: "\\"))
                write(byte)
            case UInt8(ascii: "\n"):
                write(UInt8(ascii: "\\"))
                write(UInt8(ascii: "n"))
            case UInt8(ascii: "\r"):
                write(UInt8(ascii: "\\"))
                write(UInt8(ascii: "r"))
            case UInt8(ascii: "\t"):
                write(UInt8(ascii: "\\"))
                write(UInt8(ascii: "t"))
            case 0..<0x20, 0x7F:
                for escape in [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0")] { write(escape) }
                write(hexDigit(byte >> 4))
                write(hexDigit(byte & 0xF))
            default:
                write(byte)
            }
        }
        write(UInt8(ascii: "\""))
    }

    /// `text` as a JSON string literal.
    public static func quoted(_ text: String) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count + 2)
        writeQuoted(text) { bytes.append($0) }
        return String(decoding: bytes, as: UTF8.self)
    }

    @usableFromInline
    static func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "a") + value - 10
    }
}
