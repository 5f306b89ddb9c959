import Ledger
import RedisWire

/// The names the ledger pipeline uses in Redis (see docs/ledger.md).
/// One consumer of one consumer group on one stream.
final class ConsumerGroup: Sendable {
    let redis: any LedgerRedis
    let stream: String
    let group: String
    let consumer: String

    init(redis: any LedgerRedis, stream: String, group: String, consumer: String) {
        precondition(!group.isEmpty && !consumer.isEmpty)
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer
    }

    /// Creates the group at the start of the stream (so a first replay sees
    /// every entry still in it); an existing group is left where it is.
    func createIfMissing() async throws {
        do {
            try await redis.send(["XGROUP", "CREATE", stream, group, "0", "MKSTREAM"])
        } catch let error as RedisError where error.kind == .busyGroup {
            return
        }
    }

    /// Entries delivered to this consumer earlier and not acknowledged (it
    /// crashed or was stopped between read and XACK), after `cursor`.
    func ownPending(after cursor: StreamID, count: Int) async throws -> [StreamEntry] {
        try await StreamReply.readGroup(redis.send([
            "XREADGROUP", "GROUP", group, consumer, "COUNT", String(count), "STREAMS", stream, cursor.description,
        ]))
    }

    /// New entries, waiting up to `blockMilliseconds` when there are none.
    func readNew(count: Int, blockMilliseconds: Int) async throws -> [StreamEntry] {
        try await StreamReply.readGroup(redis.send([
            "XREADGROUP", "GROUP", group, consumer, "COUNT", String(count), "BLOCK", String(blockMilliseconds),
            "STREAMS", stream, ">",
        ]))
    }

    /// Takes over entries other consumers were delivered but have not
    /// acknowledged for `minIdleMilliseconds` (a dead or stuck consumer).
    /// Entries deleted from the stream meanwhile come back without fields.
    func claimIdle(minIdleMilliseconds: Int, after cursor: StreamID, count: Int) async throws -> (next: StreamID, entries: [StreamEntry]) {
        let reply = try await StreamReply.autoClaim(redis.send([
            "XAUTOCLAIM", stream, group, consumer, String(minIdleMilliseconds), cursor.description, "COUNT", String(count),
        ]))
        return (reply.cursor, reply.entries + reply.deleted.map { StreamEntry(id: $0, fields: nil) })
    }

    func acknowledge(_ ids: [StreamID]) async throws {
        guard !ids.isEmpty else { return }
        try await redis.send(["XACK", stream, group] + ids.map(\.description))
    }

    /// Entries of the group delivered and not yet acknowledged, by anyone.
    func pendingCount() async throws -> Int {
        try await redis.pendingSummary(stream: stream, group: group).count
    }

    /// Removes consumers that hold nothing and have not been heard from for
    /// `idleMilliseconds` (replayers that were restarted under a new name).
    func forgetIdleConsumers(idleMilliseconds: Int) async throws -> [String] {
        let reply = try await redis.send(["XINFO", "CONSUMERS", stream, group])
        var forgotten: [String] = []
        for item in reply.array ?? [] {
            let info = StreamReply.pairs(item)
            guard let name = info["name"]?.string, name != consumer,
                  info["pending"]?.int == 0, let idle = info["idle"]?.int, idle >= idleMilliseconds else { continue }
            try await redis.send(["XGROUP", "DELCONSUMER", stream, group, name])
            forgotten.append(name)
        }
        return forgotten
    }
}
