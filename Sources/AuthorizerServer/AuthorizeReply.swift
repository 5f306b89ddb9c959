import AuthorizerCore
import RedisWire

/// The reply of authorize.lua.
enum AuthorizeReply {
    case unknownAccount
    case locked(pttl: Int64)
    case decided(Decision)

    /// A decision (not LOCKED, not UNKNOWN): its writes are worth a WAIT.
    static func isDecided(_ value: RESPValue) -> Bool {
        value.array?.first?.string == "DONE"
    }

    init(_ value: RESPValue) throws {
        guard let items = value.array, let kind = items.first?.string else {
            throw RedisError.unexpectedReply("\(value)")
        }
        switch kind {
        case "UNKNOWN":
            self = .unknownAccount
        case "LOCKED":
            guard items.count == 2, let pttl = items[1].int else { throw RedisError.unexpectedReply("\(value)") }
            self = .locked(pttl: pttl)
        case "DONE":
            guard items.count >= 3, let code = items[1].string.flatMap(ResponseCode.init(rawValue:)) else {
                throw RedisError.unexpectedReply("\(value)")
            }
            let detail = items[2].string ?? ""
            self = .decided(code == .rejected ? .rejected(RejectReason(text: detail)) : Decision(code: code))
        default:
            throw RedisError.unexpectedReply("\(value)")
        }
    }
}
