import RedisWire

/// One row of `XINFO GROUPS <stream>`.
public struct GroupInfo: Sendable, Equatable {
    public let name: String
    public let consumers: Int
    /// Delivered to a consumer and not yet acknowledged.
    public let pending: Int
    public let lastDeliveredID: StreamID
    /// Entries the group has read (Redis 7); nil when Redis cannot tell.
    public let entriesRead: Int?
    /// Entries not yet delivered to the group, as Redis reports it; nil
    /// when Redis cannot tell (after XDEL or XGROUP SETID, for example).
    public let lag: Int?

    public init(name: String, consumers: Int, pending: Int, lastDeliveredID: StreamID, entriesRead: Int? = nil, lag: Int?) {
        self.name = name
        self.consumers = consumers
        self.pending = pending
        self.lastDeliveredID = lastDeliveredID
        self.entriesRead = entriesRead
        self.lag = lag
    }

    public static func parseAll(_ reply: RESPValue) throws -> [GroupInfo] {
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
                entriesRead: info["entries-read"]?.int.map { Int($0) },
                lag: info["lag"]?.int.map { Int($0) }
            )
        }
    }

    /// The oldest entry this group still needs: its smallest pending id, or
    /// the entry right after the last delivered one when nothing is pending.
    /// Every entry below it has been acknowledged by the group.
    public func oldestNeeded(smallestPending: StreamID?) -> StreamID {
        smallestPending ?? lastDeliveredID.successor
    }
}

/// What `XINFO STREAM <stream>` says about the stream itself.
public struct StreamInfo: Sendable, Equatable {
    public let length: Int
    public let lastGeneratedID: StreamID
    /// Entries ever added (Redis 7); nil when Redis does not say.
    public let entriesAdded: Int?
    public let firstEntryID: StreamID?

    public init(length: Int, lastGeneratedID: StreamID, entriesAdded: Int?, firstEntryID: StreamID?) {
        self.length = length
        self.lastGeneratedID = lastGeneratedID
        self.entriesAdded = entriesAdded
        self.firstEntryID = firstEntryID
    }

    public static func parse(_ reply: RESPValue) throws -> StreamInfo {
        let info = StreamReply.pairs(reply)
        guard let length = info["length"]?.int else { throw RedisError.unexpectedReply("XINFO STREAM: \(reply)") }
        return StreamInfo(
            length: Int(length),
            lastGeneratedID: info["last-generated-id"]?.string.flatMap(StreamID.init) ?? .zero,
            entriesAdded: info["entries-added"]?.int.map { Int($0) },
            firstEntryID: info["first-entry"]?.array?.first?.string.flatMap(StreamID.init)
        )
    }
}

/// `XPENDING <stream> <group>` (summary form).
public struct PendingSummary: Sendable, Equatable {
    public let count: Int
    public let smallest: StreamID?
    public let greatest: StreamID?

    public static func parse(_ reply: RESPValue) throws -> PendingSummary {
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

extension RedisError {
    /// `ERR no such key`: the stream does not exist (nothing written yet).
    public var isNoSuchKey: Bool {
        if case .server(let message) = self { return message.contains("no such key") }
        return false
    }
}

extension LedgerRedis {
    /// The groups of a stream; empty when the stream does not exist.
    public func groups(of stream: String) async throws -> [GroupInfo] {
        do {
            return try await GroupInfo.parseAll(send(["XINFO", "GROUPS", stream]))
        } catch let error as RedisError where error.isNoSuchKey {
            return []
        }
    }

    public func pendingSummary(stream: String, group: String) async throws -> PendingSummary {
        try await PendingSummary.parse(send(["XPENDING", stream, group]))
    }

    /// The oldest entry `group` still needs (see GroupInfo.oldestNeeded);
    /// nil when the group does not exist.
    public func oldestNeeded(stream: String, group: String) async throws -> StreamID? {
        guard let info = try await groups(of: stream).first(where: { $0.name == group }) else { return nil }
        let smallest = info.pending > 0 ? try await pendingSummary(stream: stream, group: group).smallest : nil
        return info.oldestNeeded(smallestPending: smallest)
    }
}
