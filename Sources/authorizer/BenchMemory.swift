import AuthorizerCore
import Foundation
import RedisWire

/// Redis memory retained by a bench phase, split into the statement streams
/// and everything else (the idempotency records, whatever their key layout).
/// Summed over the masters of a cluster.
///
/// The streams are trimmed to empty before the phase and again after it
/// (what the replayer's trimmer does once statements are stored), so
///   stream = used_memory after the phase − used_memory after the trim
///   rest   = used_memory after the trim − used_memory before the phase
/// add up to the whole change. Streams the phase created are deleted after
/// the trim and counted in `stream`, and apart (`streamKeys`): on a cluster
/// an empty per-slot stream is a fixed cost per slot, not one per authorization.
struct RedisMemoryProbe {
    /// used_memory samples, each after a pause so that replies, keyevent
    /// messages and replication have drained from the buffers.
    struct Reading: Encodable, Equatable {
        var before: Int64 = 0
        var after: Int64 = 0
        /// Entries trimmed, the streams the phase created still there.
        var afterTrim: Int64 = 0
        /// Those streams deleted too.
        var afterDelete: Int64 = 0
        var nodes: Int = 0
        var streamsCreated: Int = 0
        /// False when used_memory was still moving (keys expiring, say) when the phase began.
        var steadyBefore = true

        var stream: Int64 { after - afterDelete }
        var streamKeys: Int64 { afterTrim - afterDelete }
        var rest: Int64 { afterDelete - before }

        enum CodingKeys: String, CodingKey {
            case before = "used_memory_before", after = "used_memory_after", afterTrim = "used_memory_after_trim"
            case afterDelete = "used_memory_after_delete"
            case nodes, streamsCreated = "streams_created", steadyBefore = "steady_before"
        }
    }

    static let settle: TimeInterval = 0.5
    /// Before the phase, used_memory must move less than this between two
    /// readings `settle` apart (expiring keys of an earlier run free memory
    /// in the background), waiting at most `steadyLimit`.
    static let steadyBytes: Int64 = 64 * 1_024
    static let steadyLimit: TimeInterval = 20
    /// SCAN batch; a cluster holds at most one stream per slot (16,384).
    static let scanCount = 1_000

    let redis: RedisSession
    private var streamsBefore: Set<String> = []
    private(set) var reading = Reading()

    init(redis: RedisSession) {
        self.redis = redis
    }

    mutating func begin() async throws {
        let streams = try await allStreams()
        for (node, key) in streams { _ = try await send(["XTRIM", key, "MAXLEN", "0"], on: node) }
        streamsBefore = Set(streams.map(\.key))
        let nodes = try await self.nodes()
        reading.nodes = nodes.count
        let giveUp = Date().addingTimeInterval(Self.steadyLimit)
        var previous = try await usedMemory(nodes)
        while true {
            try await Task.sleep(for: .seconds(Self.settle))
            reading.before = try await usedMemory(nodes)
            if abs(reading.before - previous) < Self.steadyBytes { break }
            if Date() > giveUp {
                reading.steadyBefore = false
                break
            }
            previous = reading.before
        }
    }

    mutating func end() async throws {
        try await Task.sleep(for: .seconds(Self.settle))
        let nodes = try await self.nodes()
        reading.after = try await usedMemory(nodes)
        var created: [(node: ClusterTopology.Node, key: String)] = []
        for (node, key) in try await allStreams() {
            _ = try await send(["XTRIM", key, "MAXLEN", "0"], on: node)
            if !streamsBefore.contains(key) { created.append((node, key)) }
        }
        try await Task.sleep(for: .seconds(Self.settle))
        reading.afterTrim = try await usedMemory(nodes)
        for (node, key) in created { _ = try await send(["DEL", key], on: node) }
        reading.streamsCreated = created.count
        try await Task.sleep(for: .seconds(Self.settle))
        reading.afterDelete = try await usedMemory(nodes)
    }

    // MARK: - Nodes

    /// Every master (one Redis: the one).
    private func nodes() async throws -> [ClusterTopology.Node] {
        try await redis.masters().map(\.node)
    }

    private func send(_ parts: [String], on node: ClusterTopology.Node) async throws -> RESPValue {
        let command = RedisCommand(parts)
        let router = redis.redis
        let reply = try await router.eventLoop.flatSubmit { router.client(for: node).send(command) }.get()
        if case .error(let message) = reply { throw RedisError.unexpectedReply("\(parts[0]): \(message)") }
        return reply
    }

    private func usedMemory(_ nodes: [ClusterTopology.Node]) async throws -> Int64 {
        var total: Int64 = 0
        for node in nodes {
            let info = try await send(["INFO", "memory"], on: node).string ?? ""
            guard let line = info.split(whereSeparator: \.isNewline).first(where: { $0.hasPrefix("used_memory:") }),
                  let bytes = Int64(line.dropFirst("used_memory:".count)) else {
                throw RedisError.unexpectedReply("INFO memory without used_memory")
            }
            total += bytes
        }
        return total
    }

    /// Every statement stream (`statements`, `statements:{T}`) on every node (SCAN is node-local).
    private func allStreams() async throws -> [(node: ClusterTopology.Node, key: String)] {
        var found: [(node: ClusterTopology.Node, key: String)] = []
        for node in try await nodes() {
            var cursor = "0"
            repeat {
                let reply = try await send(["SCAN", cursor, "MATCH", "statements*", "COUNT", String(Self.scanCount), "TYPE", "stream"], on: node)
                guard let parts = reply.array, parts.count == 2, let next = parts[0].string else {
                    throw RedisError.unexpectedReply("SCAN: \(reply)")
                }
                found += (parts[1].array ?? []).compactMap(\.string).filter(Keys.isStatementsStream).map { (node, $0) }
                cursor = next
            } while cursor != "0"
        }
        return found
    }
}
