import NIOCore

/// `INFO memory` of one Redis, reduced to what an operator alerts on: how
/// close it is to `maxmemory`, past which every write is refused (OOM).
public struct RedisMemory: Sendable, Equatable {
    public var used: Int64
    /// 0: no limit.
    public var max: Int64

    public init(used: Int64, max: Int64) {
        self.used = used
        self.max = max
    }

    /// `used_memory` and `maxmemory` of an `INFO memory` reply.
    public init(info: String) throws {
        var used: Int64?
        var max: Int64?
        for line in info.split(whereSeparator: \.isNewline) {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "used_memory": used = Int64(parts[1])
            case "maxmemory": max = Int64(parts[1])
            default: continue
            }
        }
        guard let used, let max else { throw RedisError.unexpectedReply("INFO memory without used_memory/maxmemory") }
        self.init(used: used, max: max)
    }

    /// used / max, 0 without a limit.
    public var ratio: Double { max > 0 ? Double(used) / Double(max) : 0 }

    /// The fuller of two nodes (the one nearest its limit).
    public static func fullest(_ a: RedisMemory, _ b: RedisMemory) -> RedisMemory {
        a.ratio >= b.ratio ? a : b
    }

    /// `INFO memory` of every client given, the fullest.
    public static func read(_ clients: [RedisClient], on loop: EventLoop) -> EventLoopFuture<RedisMemory> {
        let readings = clients.map { client in
            client.send(RedisCommand("INFO", "memory")).flatMapThrowing { reply -> RedisMemory in
                guard let text = reply.string else { throw RedisError.unexpectedReply("INFO memory: \(reply)") }
                return try RedisMemory(info: text)
            }
        }
        return EventLoopFuture.whenAllSucceed(readings, on: loop).map { all in
            all.reduce(RedisMemory(used: 0, max: 0), fullest)
        }
    }
}
