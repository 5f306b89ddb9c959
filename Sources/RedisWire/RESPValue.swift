import NIOCore

/// A RESP2 reply, copied out of hiredis into a Sendable Swift value.
public enum RESPValue: Sendable, Equatable {
    case simpleString(String)
    case error(String)
    case integer(Int64)
    case bulkString([UInt8])
    case null
    case array([RESPValue])

    /// The value as text when it is a simple or bulk string.
    public var string: String? {
        switch self {
        case .simpleString(let text): return text
        case .bulkString(let bytes): return String(decoding: bytes, as: UTF8.self)
        default: return nil
        }
    }

    public var int: Int64? {
        switch self {
        case .integer(let value): return value
        case .bulkString, .simpleString: return string.flatMap { Int64($0) }
        default: return nil
        }
    }

    public var array: [RESPValue]? {
        if case .array(let values) = self { return values }
        return nil
    }

    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}

/// Failures of the Redis link, as seen by callers.
public enum RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Redis answered with an error reply.
    case server(String)
    /// The connection closed (or was closed) before the reply arrived.
    case connectionClosed
    /// No connection could be made, and the client is backing off.
    case unavailable(String)
    /// A command waited longer than the configured timeout.
    case timeout
    /// The reply did not have the expected shape.
    case unexpectedReply(String)
    /// Too many commands are waiting for replies on this connection.
    case overloaded
    /// The command never left this process (no connection to send it on).
    case notSent(String)

    public var description: String {
        switch self {
        case .server(let message): return "redis error: \(message)"
        case .connectionClosed: return "redis connection closed"
        case .unavailable(let why): return "redis unavailable: \(why)"
        case .timeout: return "redis timed out"
        case .unexpectedReply(let what): return "unexpected redis reply: \(what)"
        case .overloaded: return "too many redis commands in flight"
        case .notSent(let why): return "command not sent: \(why)"
        }
    }

    /// True when Redis cannot have received the command: a failure that
    /// cannot hide a script that ran, or that will still run.
    public var neverSent: Bool {
        switch self {
        case .notSent, .overloaded: return true
        default: return false
        }
    }

    public var isNoScript: Bool { kind == .noScript }
}
