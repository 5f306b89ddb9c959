import RedisWire

/// One entry read from a stream. `fields` is nil when the entry was still in
/// a consumer's pending list but had already been deleted from the stream.
public struct StreamEntry: Sendable, Equatable {
    public let id: StreamID
    public let fields: [String: String]?

    public init(id: StreamID, fields: [String: String]?) {
        self.id = id
        self.fields = fields
    }
}

/// Decoding of the stream replies (RESP2 shapes).
public enum StreamReply {
    /// `[[id, [field, value, ...]], ...]` as returned by XRANGE and inside
    /// XREADGROUP and XAUTOCLAIM replies.
    public static func entries(_ value: RESPValue) throws -> [StreamEntry] {
        if value.isNull { return [] }
        guard let items = value.array else { throw RedisError.unexpectedReply("stream entries: \(value)") }
        return try items.map(entry)
    }

    public static func entry(_ value: RESPValue) throws -> StreamEntry {
        guard let pair = value.array, pair.count == 2, let text = pair[0].string, let id = StreamID(text) else {
            throw RedisError.unexpectedReply("stream entry: \(value)")
        }
        if pair[1].isNull { return StreamEntry(id: id, fields: nil) }
        guard let flat = pair[1].array, flat.count % 2 == 0 else {
            throw RedisError.unexpectedReply("stream entry fields: \(value)")
        }
        var fields: [String: String] = [:]
        fields.reserveCapacity(flat.count / 2)
        var index = 0
        while index < flat.count {
            guard let name = flat[index].string, let content = flat[index + 1].string else {
                throw RedisError.unexpectedReply("stream entry field: \(value)")
            }
            fields[name] = content
            index += 2
        }
        return StreamEntry(id: id, fields: fields)
    }

    /// XREADGROUP over one stream: nil (timed out) or `[[key, entries]]`.
    public static func readGroup(_ value: RESPValue) throws -> [StreamEntry] {
        if value.isNull { return [] }
        guard let streams = value.array else { throw RedisError.unexpectedReply("XREADGROUP: \(value)") }
        var result: [StreamEntry] = []
        for stream in streams {
            guard let pair = stream.array, pair.count == 2 else { throw RedisError.unexpectedReply("XREADGROUP stream: \(stream)") }
            result += try entries(pair[1])
        }
        return result
    }

    /// XAUTOCLAIM (Redis 7): `[next cursor, entries, deleted ids]`.
    public static func autoClaim(_ value: RESPValue) throws -> (cursor: StreamID, entries: [StreamEntry], deleted: [StreamID]) {
        guard let parts = value.array, parts.count >= 2, let text = parts[0].string, let cursor = StreamID(text) else {
            throw RedisError.unexpectedReply("XAUTOCLAIM: \(value)")
        }
        let deleted = parts.count > 2 ? (parts[2].array ?? []).compactMap { $0.string.flatMap(StreamID.init) } : []
        return (cursor, try entries(parts[1]), deleted)
    }

    /// A flat `[name, value, name, value]` reply (XINFO, HGETALL) as a dictionary.
    public static func pairs(_ value: RESPValue) -> [String: RESPValue] {
        var result: [String: RESPValue] = [:]
        let flat = value.array ?? []
        var index = 0
        while index + 1 < flat.count {
            if let name = flat[index].string { result[name] = flat[index + 1] }
            index += 2
        }
        return result
    }
}
