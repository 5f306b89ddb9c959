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
/// just reconnected), then WAIT. Only the entries the XCLAIM returns are
/// applied: after a failover the batch read from the old master may name
/// entries the new one never received; XCLAIM claims nothing for them (no
/// write, so the WAIT would pass at once) and they must not be applied.
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

    /// The entries of a batch that its master holds, by the reply of the
    /// fence's XCLAIM: an id it does not return is not in that master's
    /// pending list (a failover discarded the entry, or its delivery), so it
    /// is neither applied nor acknowledged now. An entry the master does hold
    /// is delivered again (it is past the group's last id there). Entries
    /// read as deleted (no fields) are kept: the sink skips them.
    func held(_ entries: [StreamEntry], claimReply: RESPValue) throws -> [StreamEntry] {
        guard let items = claimReply.array else { throw RedisError.unexpectedReply("XCLAIM: \(claimReply)") }
        let claimed = Set(items.compactMap { $0.string.flatMap(StreamID.init) })
        guard claimed.count == items.count else { throw RedisError.unexpectedReply("XCLAIM JUSTID: \(claimReply)") }
        return entries.filter { $0.fields == nil || claimed.contains($0.id) }
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
