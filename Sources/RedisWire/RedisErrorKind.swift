/// An error reply of Redis, classified once by its leading word instead of
/// by string prefix in each caller.
public enum RedisErrorKind: Sendable, Equatable {
    /// The script cache does not hold the SHA (flushed, or a new node).
    case noScript
    /// The slot lives on another node now: update the slot map, resend there.
    case moved(slot: Int, host: String, port: Int)
    /// The slot is migrating and the key is on the importing node: ASKING, resend there, once.
    case ask(slot: Int, host: String, port: Int)
    /// A multi-key command during a slot migration: resend after a short back-off.
    case tryAgain
    /// The cluster cannot serve the slot (no master for it).
    case clusterDown
    /// The consumer group exists already.
    case busyGroup
    /// The stream or its consumer group does not exist.
    case noGroup
    /// The ACL user may not run the command or touch the key.
    case noPermission
    /// Keys of one command hash to different slots.
    case crossSlot
    /// Redis is at `maxmemory` and refused a write. A script gets it only
    /// for its first write (Redis lets a script that wrote finish): a script
    /// answered OOM wrote nothing.
    case outOfMemory
    case other

    public init(message: String) {
        let word = message.prefix { $0 != " " }
        switch word {
        case "NOSCRIPT": self = .noScript
        case "MOVED", "ASK":
            // "MOVED 3999 127.0.0.1:6381" / "ASK 3999 127.0.0.1:6381"
            let parts = message.split(separator: " ")
            guard parts.count == 3, let slot = Int(parts[1]), let colon = parts[2].lastIndex(of: ":"),
                  let port = Int(parts[2][parts[2].index(after: colon)...]) else {
                self = .other
                return
            }
            let host = String(parts[2][..<colon])
            self = word == "MOVED" ? .moved(slot: slot, host: host, port: port) : .ask(slot: slot, host: host, port: port)
        case "TRYAGAIN": self = .tryAgain
        case "CLUSTERDOWN": self = .clusterDown
        case "BUSYGROUP": self = .busyGroup
        case "NOGROUP": self = .noGroup
        case "NOPERM": self = .noPermission
        case "CROSSSLOT": self = .crossSlot
        case "OOM": self = .outOfMemory
        default: self = .other
        }
    }
}

extension RedisError {

    /// The kind of an error reply; nil for link failures.
    public var kind: RedisErrorKind? {
        if case .server(let message) = self { return RedisErrorKind(message: message) }
        return nil
    }
}
