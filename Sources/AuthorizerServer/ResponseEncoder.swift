import AuthorizerCore
import NIOCore

/// Writes `{"id":"…","code":"00"}` (plus `"reason"` and `"reasonCode"` on a 07) and a newline.
enum ResponseEncoder {
    static func encode(id: String, decision: Decision, into buffer: inout ByteBuffer) {
        buffer.writeStaticString("{\"id\":")
        writeJSONString(id, into: &buffer)
        buffer.writeStaticString(",\"code\":\"")
        buffer.writeString(decision.code.rawValue)
        buffer.writeStaticString("\"")
        if let reason = decision.rejectReason {
            buffer.writeStaticString(",\"reason\":")
            writeJSONString(reason.text, into: &buffer)
            buffer.writeStaticString(",\"reasonCode\":\"")
            buffer.writeString(reason.code)
            buffer.writeStaticString("\"")
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
        JSONText.writeQuoted(text) { buffer.writeInteger($0) }
    }
}
