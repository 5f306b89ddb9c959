import AuthorizerCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import RedisWire

/// How far a consumer group (the `replayer`) is behind the ledger: one
/// stream on a single Redis, the sum over the slot streams on a cluster.
/// The one definition of replayer lag, used by serve's gauges, its lag
/// warning and `authorizer top`:
///
/// - **lag** (`undelivered`): entries not yet delivered to the group, as
///   Redis reports it (`XINFO GROUPS` lag); every entry of a stream that has
///   no group yet;
/// - **pending**: delivered, not yet acknowledged;
/// - **unapplied** = lag + pending: what is not yet in the database;
/// - ages, by Redis' clock, of the oldest undelivered and of the oldest
///   unapplied entry.
public struct ReplayerLag: Sendable, Equatable {
    /// When Redis cannot tell a stream's lag, at most this many entries are counted.
    public static let maxCountedLag = 1_000

    /// Streams that exist (1 on a single Redis once written; slot streams on a cluster).
    public var streams = 0
    /// Streams without the group: no replayer ever read them.
    public var streamsWithoutGroup = 0
    /// XLEN, summed.
    public var length = 0
    /// Entries not yet delivered to the group; nil when Redis cannot tell.
    public var undelivered: Int? = 0
    /// True when `undelivered` was counted and reached `maxCountedLag` on some stream.
    public var undeliveredIsLowerBound = false
    /// Delivered to a consumer of the group, not acknowledged yet.
    public var pending = 0
    /// Consumers of the group (the most on any one stream: a replayer joins every stream).
    public var consumers = 0
    /// The oldest entry not yet delivered; nil when there is none (or it is unknown, see `agesKnown`).
    public var oldestUndelivered: StreamID?
    /// The oldest entry delivered and not acknowledged.
    public var oldestPending: StreamID?
    /// False when the oldest undelivered id could not be looked up (a Redis user without XRANGE).
    public var undeliveredAgeKnown = true
    /// False when the oldest pending id could not be looked up (a Redis user without XPENDING).
    public var pendingAgeKnown = true
    /// Redis' clock when read (milliseconds since the epoch).
    public var nowMillis: UInt64 = 0

    public init() {}

    /// The group exists on every stream (and there is at least one).
    public var groupExists: Bool { streams > 0 && streamsWithoutGroup == 0 }

    /// Not yet in the database: undelivered plus pending; nil when unknown.
    public var unapplied: Int? { undelivered.map { $0 + pending } }

    /// Age of the oldest undelivered entry in seconds: 0 when none, nil when unknown.
    public var lagSeconds: Double? {
        guard undeliveredAgeKnown else { return nil }
        return oldestUndelivered?.age(nowMillis: nowMillis) ?? 0
    }

    /// Age of the oldest unapplied entry (pending or undelivered) in seconds: 0 when none, nil when unknown.
    public var oldestUnappliedSeconds: Double? {
        guard undeliveredAgeKnown && pendingAgeKnown else { return nil }
        let oldest = [oldestUndelivered, oldestPending].compactMap { $0 }.min()
        return oldest?.age(nowMillis: nowMillis) ?? 0
    }

    /// The lag of several streams (or nodes) as one.
    public static func + (lhs: ReplayerLag, rhs: ReplayerLag) -> ReplayerLag {
        var sum = ReplayerLag()
        sum.streams = lhs.streams + rhs.streams
        sum.streamsWithoutGroup = lhs.streamsWithoutGroup + rhs.streamsWithoutGroup
        sum.length = lhs.length + rhs.length
        sum.undelivered = lhs.undelivered.flatMap { left in rhs.undelivered.map { left + $0 } }
        sum.undeliveredIsLowerBound = lhs.undeliveredIsLowerBound || rhs.undeliveredIsLowerBound
        sum.pending = lhs.pending + rhs.pending
        sum.consumers = max(lhs.consumers, rhs.consumers)
        sum.oldestUndelivered = [lhs.oldestUndelivered, rhs.oldestUndelivered].compactMap { $0 }.min()
        sum.oldestPending = [lhs.oldestPending, rhs.oldestPending].compactMap { $0 }.min()
        sum.undeliveredAgeKnown = lhs.undeliveredAgeKnown && rhs.undeliveredAgeKnown
        sum.pendingAgeKnown = lhs.pendingAgeKnown && rhs.pendingAgeKnown
        sum.nowMillis = max(lhs.nowMillis, rhs.nowMillis)
        return sum
    }

    /// What `XINFO STREAM` and `XINFO GROUPS` say, before any id lookup.
    /// `stream` nil: the stream does not exist.
    public init(stream: StreamInfo?, group: GroupInfo?) {
        guard let stream else { return }
        streams = 1
        length = stream.length
        guard let group else {
            streamsWithoutGroup = 1
            undelivered = stream.length
            oldestUndelivered = stream.firstEntryID
            return
        }
        pending = group.pending
        consumers = group.consumers
        if !(group.lastDeliveredID < stream.lastGeneratedID) {
            undelivered = 0
        } else {
            // Redis 7 reports the lag; it is null after deletions it cannot
            // account for, and then entries-added - entries-read stands in.
            undelivered = group.lag ?? stream.entriesAdded.flatMap { added in group.entriesRead.map { added - $0 } }
        }
    }

    /// Milliseconds since the epoch from a TIME reply.
    public static func millis(time: RESPValue) -> UInt64? {
        guard let parts = time.array, parts.count == 2,
              let seconds = parts[0].int, let micros = parts[1].int, seconds >= 0, micros >= 0 else { return nil }
        return UInt64(seconds) * 1_000 + UInt64(micros) / 1_000
    }

    public static func localMillis() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(now.tv_sec) * 1_000 + UInt64(now.tv_nsec) / 1_000_000
    }
}

/// Reads `ReplayerLag` of streams through `send`, which takes a command to
/// wherever the stream lives (the one Redis, or the master of its slot).
/// Per stream: XINFO STREAM and XINFO GROUPS together, then XPENDING when
/// something is pending and one bounded XRANGE when something is undelivered.
public struct ReplayerLagReader: Sendable {
    public typealias Send = @Sendable (_ stream: String, _ command: RedisCommand) -> EventLoopFuture<RESPValue>

    public let eventLoop: EventLoop
    public let group: String
    private let send: Send

    public init(eventLoop: EventLoop, group: String = Keys.replayGroup, send: @escaping Send) {
        self.eventLoop = eventLoop
        self.group = group
        self.send = send
    }

    /// Every stream of `streams`, summed; `nowMillis` stamps the result.
    public func read(streams: [String], nowMillis: UInt64) -> EventLoopFuture<ReplayerLag> {
        let each = streams.map { readWithoutClock(stream: $0) }
        return EventLoopFuture.whenAllSucceed(each, on: eventLoop).map { lags in
            var total = lags.reduce(ReplayerLag(), +)
            total.nowMillis = nowMillis
            return total
        }
    }

    /// One stream, with Redis' clock (TIME, or the local clock when this user may not run it).
    public func read(stream: String = Keys.statements) -> EventLoopFuture<ReplayerLag> {
        readWithoutClock(stream: stream).flatMap { lag in
            // The clock after the reads: no entry read is newer than it.
            send(stream, RedisCommand("TIME")).map { ReplayerLag.millis(time: $0) }.recover { _ in nil }.map { time in
                var lag = lag
                lag.nowMillis = time ?? ReplayerLag.localMillis()
                return lag
            }
        }
    }

    private func readWithoutClock(stream: String) -> EventLoopFuture<ReplayerLag> {
        let loop = eventLoop
        let info = send(stream, RedisCommand("XINFO", "STREAM", stream))
            .flatMapThrowing { Optional(try StreamInfo.parse($0)) }
            .flatMapError(Self.missingKey(nil, on: loop))
        let groups = send(stream, RedisCommand("XINFO", "GROUPS", stream))
            .flatMapThrowing { try GroupInfo.parseAll($0) }
            .flatMapError(Self.missingKey([], on: loop))
        let group = self.group
        return info.and(groups).flatMap { info, groups in
            let mine = groups.first { $0.name == group }
            let lag = ReplayerLag(stream: info, group: mine)
            guard let mine else { return loop.makeSucceededFuture(lag) }
            return lookUpOldest(stream: stream, group: mine, lag: lag)
        }
    }

    /// The ids the ages come from, and the count when Redis cannot tell the lag.
    private func lookUpOldest(stream: String, group: GroupInfo, lag: ReplayerLag) -> EventLoopFuture<ReplayerLag> {
        let loop = eventLoop
        // A failed lookup (NOPERM for a restricted user) leaves the counts and makes that age unknown.
        let pending: EventLoopFuture<StreamID??> = lag.pending > 0
            ? send(stream, RedisCommand("XPENDING", stream, group.name))
                .flatMapThrowing { .some(try PendingSummary.parse($0).smallest) }.recover { _ in nil }
            : loop.makeSucceededFuture(.some(nil))
        let count = lag.undelivered == nil ? ReplayerLag.maxCountedLag : 1
        let undelivered: EventLoopFuture<[StreamEntry]?> = lag.undelivered == 0
            ? loop.makeSucceededFuture([])
            : send(stream, RedisCommand("XRANGE", stream, "(\(group.lastDeliveredID)", "+", "COUNT", String(count)))
                .flatMapThrowing { .some(try StreamReply.entries($0)) }.recover { _ in nil }
        return pending.and(undelivered).map { oldestPending, entries in
            var lag = lag
            if let oldestPending {
                lag.oldestPending = oldestPending
            } else {
                lag.pendingAgeKnown = false
            }
            if let entries {
                lag.oldestUndelivered = entries.first?.id
                if lag.undelivered == nil {
                    lag.undelivered = entries.count
                    lag.undeliveredIsLowerBound = entries.count >= ReplayerLag.maxCountedLag
                }
            } else {
                lag.undeliveredAgeKnown = false
            }
            return lag
        }
    }

    /// `ERR no such key` (no statement written yet) reads as `empty`.
    private static func missingKey<Value: Sendable>(_ empty: Value, on loop: EventLoop) -> @Sendable (Error) -> EventLoopFuture<Value> {
        { error in
            if let error = error as? RedisError, error.isNoSuchKey { return loop.makeSucceededFuture(empty) }
            return loop.makeFailedFuture(error)
        }
    }
}
