import AuthorizerCore
import NIOCore

/// Writes `{"id":"…","code":"00"}` (plus `"reason"` on a 07) and a newline.
enum ResponseEncoder {
    static func encode(id: String, decision: Decision, into buffer: inout ByteBuffer) {
        buffer.writeStaticString("{\"id\":")
        writeJSONString(id, into: &buffer)
        buffer.writeStaticString(",\"code\":\"")
        buffer.writeString(decision.code.rawValue)
        buffer.writeStaticString("\"")
        if let reason = decision.reason {
            buffer.writeStaticString(",\"reason\":")
            writeJSONString(reason, into: &buffer)
        }
        if let balances = decision.balances {
            buffer.writeStaticString(",\"balances\":{")
            for (index, entry) in balances.enumerated() {
                if index > 0 { buffer.writeStaticString(",") }
                writeJSONString(entry.category, into: &buffer)
                buffer.writeStaticString(":")
                writeJSONString(entry.balance.description, into: &buffer)
            }
            buffer.writeStaticString("}")
        }
        buffer.writeStaticString("}\n")
    }

    static func writeJSONString(_ text: String, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): buffer.writeStaticString("\\\"")
            case UInt8(ascii: "\\"): buffer.writeStaticString("\\\\")
            case UInt8(ascii: "\n"): buffer.writeStaticString("\\n")
            case UInt8(ascii: "\r"): buffer.writeStaticString("\\r")
            case UInt8(ascii: "\t"): buffer.writeStaticString("\\t")
            case 0..<0x20, 0x7F:
                let hex: [UInt8] = Array("0123456789abcdef".utf8)
                buffer.writeStaticString("\\u00")
                buffer.writeInteger(hex[Int(byte >> 4)])
                buffer.writeInteger(hex[Int(byte & 0xF)])
            default:
                buffer.writeInteger(byte)
            }
        }
        buffer.writeInteger(UInt8(ascii: "\""))
    }
}
