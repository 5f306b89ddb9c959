import Ledger
import RedisWire

/// A batch is applied (committed to SQLite, notified) only once `replicas`
/// replicas of its node hold its entries: a failover discards what the old
/// master had not replicated, and a statement of a discarded write must never
/// reach the holder's ledger.
///
/// Per stream, back to back on the connection that reads it: XCLAIM of the
/// batch to this consumer itself (idle 0, JUSTID: it changes nothing but is a
/// write, so the WAIT that follows counts from here even on a connection that
/// just reconnected), then WAIT.
public struct ReplicaFence: Sendable, Equatable {
    public let replicas: Int
    public let timeoutMilliseconds: Int

    public static let timeoutRange = 1...60_000

    public init(replicas: Int, timeoutMilliseconds: Int) {
        precondition(replicas > 0 && Self.timeoutRange.contains(timeoutMilliseconds))
        self.replicas = replicas
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    /// The fence's two commands for one stream's batch; `wanted`: on a
    /// cluster, every replica listed for the node (`Redis.replicasWanted`).
    func commands(stream: String, group: String, consumer: String, ids: [StreamID], wanted: Int? = nil) -> [[String]] {
        precondition(!ids.isEmpty)
        return [
            ["XCLAIM", stream, group, consumer, "0"] + ids.map(\.description) + ["JUSTID"],
            ["WAIT", String(wanted ?? replicas), String(timeoutMilliseconds)],
        ]
    }

    /// Throws unless the WAIT reply counts enough replicas.
    func check(waitReply: RESPValue, stream: String, wanted: Int? = nil) throws {
        let acknowledged = Int(waitReply.int ?? 0)
        let wanted = wanted ?? replicas
        guard acknowledged >= wanted else {
            throw NotReplicated(stream: stream, acknowledged: acknowledged, wanted: wanted)
        }
    }
}

/// Fewer replicas than wanted hold a batch: it stays pending and is read again.
public struct NotReplicated: Error, CustomStringConvertible {
    public let stream: String
    public let acknowledged: Int
    public let wanted: Int
    public var description: String {
        "entries of \(stream) held by \(acknowledged) replicas of \(wanted) wanted; not applied yet"
    }
}
