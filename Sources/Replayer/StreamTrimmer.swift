import AuthorizerCore
import Ledger
import Logging
import RedisWire

/// Keeps the statements stream bounded without ever dropping an entry some
/// consumer group has not acknowledged.
///
/// One pass: the floor is the oldest entry any group still needs (its
/// smallest pending id, or the entry after its last delivered one). Entries
/// below the floor are acknowledged by every group; of those, only the
/// oldest `XLEN - maxLength` go, so the stream keeps at least `maxLength`
/// recent entries for inspection:
///
///     XTRIM statements MINID ~ <floor> LIMIT <XLEN - maxLength>
///
/// `~` removes whole macro nodes only (cheap, approximate); LIMIT bounds the
/// work of one pass. A lagging group therefore holds the stream above
/// `maxLength` until it catches up — memory is bounded by the cap plus the
/// lag, which is why `serve` watches the lag.
public final class StreamTrimmer: Sendable {
    private let redis: any LedgerRedis
    private let stream: String
    /// Entries kept even when acknowledged; 0 trims everything acknowledged.
    public let maxLength: Int
    private let logger: Logger

    public init(redis: any LedgerRedis, stream: String, maxLength: Int, logger: Logger) {
        precondition(maxLength >= 0)
        self.redis = redis
        self.stream = stream
        self.maxLength = maxLength
        self.logger = logger
    }

    public struct Pass: Sendable, Equatable {
        public let removed: Int
        public let floor: StreamID?
        public let lengthBefore: Int
    }

    /// One trim pass. Does nothing when the stream has no consumer group
    /// (nobody has declared what they still need).
    @discardableResult
    public func trim() async throws -> Pass {
        let groups = try await redis.groups(of: stream)
        guard !groups.isEmpty else { return Pass(removed: 0, floor: nil, lengthBefore: 0) }
        var floor: StreamID?
        for group in groups {
            let smallest = group.pending > 0 ? try await redis.pendingSummary(stream: stream, group: group.name).smallest : nil
            let needed = group.oldestNeeded(smallestPending: smallest)
            floor = floor.map { min($0, needed) } ?? needed
        }
        guard let floor else { return Pass(removed: 0, floor: nil, lengthBefore: 0) }
        let length = Int(try await redis.send(["XLEN", stream]).int ?? 0)
        let excess = length - maxLength
        // LIMIT 0 would mean "no limit": never send it.
        guard excess > 0 else { return Pass(removed: 0, floor: floor, lengthBefore: length) }
        let removed = Int(try await redis.send(["XTRIM", stream, "MINID", "~", floor.description, "LIMIT", String(excess)]).int ?? 0)
        assert(removed <= excess, "XTRIM removed more than its LIMIT")
        if removed > 0 {
            logger.debug("trimmed statements", metadata: ["removed": "\(removed)", "below": "\(floor)", "length": "\(length - removed)"])
        }
        return Pass(removed: removed, floor: floor, lengthBefore: length)
    }
}
