import AuthorizerCore
import NIOCore
import RedisWire

/// `ReplayerLag` of the ledger, one Redis or a cluster alike: the sum over
/// the ledger streams of every master (`statements` on one Redis, the slot
/// streams `statements:{T}` on a cluster).
///
/// Cheap for Redis by design. Each read asks every master first for its
/// `INFO commandstats`: a master on which no command that changes a stream
/// or its groups ran since the last read (XADD, scripts' included,
/// XREADGROUP, XACK, XCLAIM, XAUTOCLAIM, XDEL, XTRIM, XSETID, XGROUP, or
/// DEL, UNLINK, RESTORE, MIGRATE, FLUSH*, RENAME), and whose slots did not
/// change, keeps its last reading: one INFO per master while idle. Otherwise
/// that master is read: one XLEN per ledger stream its slots hold (pipelined; a missing
/// stream is 0 and costs no error), then, for the streams with entries,
/// XINFO STREAM + XINFO GROUPS and the id lookups of `ReplayerLagReader`,
/// at most `chunk` streams in flight at a time. No SCAN: the cost is bounded
/// by the slots, not by the keyspace.
public final class LedgerLagReader: Sendable {
    public typealias Node = ClusterTopology.Node

    /// Streams whose commands are in flight at once on one master.
    public static let chunk = 512

    private struct Reading: Sendable {
        let signature: Int
        let slots: [ClosedRange<Int>]
        let lag: ReplayerLag
    }

    private let redis: Redis
    private let group: String
    private let readings: NIOLoopBoundBox<[Node: Reading]>

    public init(redis: Redis, group: String = Keys.replayGroup) {
        self.redis = redis
        self.group = group
        self.readings = NIOLoopBoundBox.makeBoxSendingValue([:], eventLoop: redis.eventLoop)
    }

    /// The lag summed over every master, stamped with Redis' clock.
    public func read() -> EventLoopFuture<ReplayerLag> {
        redis.eventLoop.flatSubmit { self.readOnLoop() }
    }

    private func readOnLoop() -> EventLoopFuture<ReplayerLag> {
        let loop = redis.eventLoop
        return redis.topology.flatMap { topology in
            let masters = topology.masters
            guard let first = masters.first else { return loop.makeSucceededFuture(ReplayerLag()) }
            let perNode = masters.map { self.read(node: $0, slots: topology.slots(of: $0)) }
            // Forget masters that are gone (failed over, removed).
            self.readings.value = self.readings.value.filter { masters.contains($0.key) }
            return EventLoopFuture.whenAllSucceed(perNode, on: loop).flatMap { lags in
                // The clock after the reads: no entry read is newer than it.
                self.redis.client(for: first).send(RedisCommand("TIME")).map { ReplayerLag.millis(time: $0) }.recover { _ in nil }.map { time in
                    var total = lags.reduce(ReplayerLag(), +)
                    total.nowMillis = time ?? ReplayerLag.localMillis()
                    return total
                }
            }
        }
    }

    private func read(node: Node, slots: [ClosedRange<Int>]) -> EventLoopFuture<ReplayerLag> {
        let loop = redis.eventLoop
        let client = redis.client(for: node)
        // A user that may not run INFO (the read-only operator) reads in full every time.
        let info = client.send(RedisCommand("INFO", "commandstats")).map { Optional($0) }.recover { _ in nil }
        return info.flatMap { reply in
            let signature = reply?.string.map(Self.streamWriteSignature)
            if let signature, let last = self.readings.value[node], last.signature == signature, last.slots == slots {
                return loop.makeSucceededFuture(last.lag)
            }
            return self.readInFull(client: client, slots: slots).map { lag in
                if let signature { self.readings.value[node] = Reading(signature: signature, slots: slots, lag: lag) }
                return lag
            }
        }
    }

    /// XLEN of every slot stream of the node, then the lag of those with entries.
    private func readInFull(client: RedisClient, slots: [ClosedRange<Int>]) -> EventLoopFuture<ReplayerLag> {
        let loop = redis.eventLoop
        let names = redis.target.ledger.streams(servedBy: slots)
        let reader = ReplayerLagReader(eventLoop: loop, group: group) { _, command in client.send(command) }
        return Self.inChunks(names, on: loop, initial: [String]()) { chunk, found in
            let lengths = chunk.map { client.send(RedisCommand("XLEN", $0)) }
            return EventLoopFuture.whenAllSucceed(lengths, on: loop).map { replies in
                found + zip(chunk, replies).filter { ($0.1.int ?? 0) > 0 }.map(\.0)
            }
        }.flatMap { streams in
            Self.inChunks(streams, on: loop, initial: ReplayerLag()) { chunk, sum in
                reader.read(streams: chunk, nowMillis: 0).map { sum + $0 }
            }
        }
    }

    /// `body` over consecutive chunks of `items`, one chunk in flight at a time.
    private static func inChunks<Item: Sendable, Value: Sendable>(
        _ items: [Item], on loop: EventLoop, initial: Value,
        _ body: @escaping @Sendable ([Item], Value) -> EventLoopFuture<Value>
    ) -> EventLoopFuture<Value> {
        var future = loop.makeSucceededFuture(initial)
        var start = 0
        while start < items.count {
            let chunk = Array(items[start..<min(start + chunk, items.count)])
            future = future.flatMap { body(chunk, $0) }
            start += chunk.count
        }
        return future
    }

    /// The calls, summed, of the commands that can change a stream, its
    /// length or its groups (from `INFO commandstats`).
    static func streamWriteSignature(_ commandstats: String) -> Int {
        var total = 0
        for line in commandstats.split(whereSeparator: \.isNewline) where line.hasPrefix("cmdstat_") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[line.index(line.startIndex, offsetBy: 8)..<colon]
            guard changesStreams(name) else { continue }
            guard let calls = line[line.index(after: colon)...].split(separator: ",").first?.split(separator: "=").last,
                  let count = Int(calls) else { continue }
            total &+= count
        }
        return total
    }

    private static let readOnlyStreamCommands: Set<Substring> = ["xlen", "xrange", "xrevrange", "xpending", "xread"]
    private static let keyRemovals: Set<Substring> = [
        "del", "unlink", "restore", "restore-asking", "migrate", "flushall", "flushdb", "rename", "renamenx",
    ]

    private static func changesStreams(_ name: Substring) -> Bool {
        if name.hasPrefix("x") { return !name.hasPrefix("xinfo") && !readOnlyStreamCommands.contains(name) }
        return keyRemovals.contains(name)
    }
}
