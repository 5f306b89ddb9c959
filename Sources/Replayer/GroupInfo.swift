import RedisWire

/// One row of `XINFO GROUPS <stream>`.
public struct GroupInfo: Sendable, Equatable {
    public let name: String
    public let consumers: Int
    /// Delivered to a consumer and not yet acknowledged.
    public let pending: Int
    public let lastDeliveredID: StreamID
    /// Entries not yet delivered to the group; nil when Redis cannot tell
    /// (after XDEL or XGROUP SETID, for example).
    public let lag: Int?

    static func parseAll(_ reply: RESPValue) throws -> [GroupInfo] {
        guard let rows = reply.array else { throw RedisError.unexpectedReply("XINFO GROUPS: \(reply)") }
        return try rows.map { row in
            let info = StreamReply.pairs(row)
            guard let name = info["name"]?.string,
                  let lastText = info["last-delivered-id"]?.string, let last = StreamID(lastText) else {
                throw RedisError.unexpectedReply("XINFO GROUPS row: \(row)")
            }
            return GroupInfo(
                name: name,
                consumers: Int(info["consumers"]?.int ?? 0),
                pending: Int(info["pending"]?.int ?? 0),
                lastDeliveredID: last,
                lag: info["lag"]?.int.map { Int($0) }
            )
        }
    }

    /// The oldest entry this group still needs: its smallest pending id, or
    /// the entry right after the last delivered one when nothing is pending.
    /// Every entry below it has been acknowledged by the group.
    func oldestNeeded(smallestPending: StreamID?) -> StreamID {
        smallestPending ?? lastDeliveredID.successor
    }
}

/// `XPENDING <stream> <group>` (summary form).
struct PendingSummary: Sendable, Equatable {
    let count: Int
    let smallest: StreamID?
    let greatest: StreamID?

    static func parse(_ reply: RESPValue) throws -> PendingSummary {
        guard let items = reply.array, items.count >= 3, let count = items[0].int else {
            throw RedisError.unexpectedReply("XPENDING: \(reply)")
        }
        return PendingSummary(
            count: Int(count),
            smallest: items[1].string.flatMap(StreamID.init),
            greatest: items[2].string.flatMap(StreamID.init)
        )
    }
}

extension LedgerRedis {
    /// The groups of a stream; empty when the stream does not exist.
    func groups(of stream: String) async throws -> [GroupInfo] {
        do {
            return try await GroupInfo.parseAll(send(["XINFO", "GROUPS", stream]))
        } catch RedisError.server(let message) where message.contains("no such key") {
            return []
        }
    }

    func pendingSummary(stream: String, group: String) async throws -> PendingSummary {
        try await PendingSummary.parse(send(["XPENDING", stream, group]))
    }

    /// The oldest entry `group` still needs (see GroupInfo.oldestNeeded);
    /// nil when the group does not exist.
    func oldestNeeded(stream: String, group: String) async throws -> StreamID? {
        guard let info = try await groups(of: stream).first(where: { $0.name == group }) else { return nil }
        let smallest = info.pending > 0 ? try await pendingSummary(stream: stream, group: group).smallest : nil
        return info.oldestNeeded(smallestPending: smallest)
    }
}
