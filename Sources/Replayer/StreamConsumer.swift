import AuthorizerCore
import Foundation
import Ledger
import Logging
import NIOCore
import NIOConcurrencyHelpers
import NIOPosix
import RedisWire

/// Streams that changed, as the `xadd` keyevents of the masters tell, and a
/// wait for the next one (one waiter: the consumer's task).
final class StreamWakeups: Sendable {
    private struct State {
        var changed: Set<String> = []
        var gap = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = NIOLockedValueBox(State())

    func mark(_ stream: String) {
        state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            guard state.changed.insert(stream).inserted else { return nil }
            defer { state.waiter = nil }
            return state.waiter
        }?.resume()
    }

    /// A subscriber lost its link: events may have been missed.
    func markGap() {
        state.withLockedValue { state -> CheckedContinuation<Void, Never>? in
            state.gap = true
            defer { state.waiter = nil }
            return state.waiter
        }?.resume()
    }

    /// The streams marked since the last call, and whether a gap was seen.
    func take() -> (streams: Set<String>, gap: Bool) {
        state.withLockedValue { state in
            defer {
                state.changed.removeAll()
                state.gap = false
            }
            return (state.changed, state.gap)
        }
    }

    /// Waits until something is marked, `limit` passed, or the task is cancelled.
    func wait(upTo limit: Duration) async {
        guard limit > .zero else { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.nextMark() }
            group.addTask { try? await Task.sleep(for: limit) }
            await group.next()
            group.cancelAll()
        }
    }

    private func nextMark() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                // Under the lock that `onCancel` takes too: a cancellation is
                // either seen here or finds the waiter stored.
                let ready = state.withLockedValue { state in
                    if !state.changed.isEmpty || state.gap || Task.isCancelled { return true }
                    state.waiter = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            state.withLockedValue { state in
                defer { state.waiter = nil }
                return state.waiter
            }?.resume()
        }
    }
}

/// One consumer of one group over every ledger stream: the `statements`
/// stream of one Redis, or every slot stream of every master of a cluster.
/// Reads, applies (durably, through the sink), then XACKs.
///
/// Idle, it costs Redis almost nothing: it listens to each master's
/// `__keyevent@0__:xadd` (node-local notifications, `t` in
/// notify-keyspace-events) and reads only the streams named there. A slow
/// sweep (the streams each master holds, then one pipelined read of every
/// stream found; at start and every `sweepInterval`) is the safety net for
/// missed events (a subscriber reconnecting, a config without `t`) and
/// finds the masters of a changed topology. A sweep first asks each master
/// how many XADDs it has executed (`INFO commandstats`): a master whose
/// count has not moved since the last sweep has no new entry and is neither
/// scanned nor read, so an idle ledger costs one INFO per master per sweep.
/// Each round pipelines one XREADGROUP per changed stream (a multi-stream
/// XREADGROUP across slots is CROSSSLOT), applies everything read in one
/// sink call, then XACKs.
///
/// The first time it meets a stream (and again after any Redis failure: a
/// batch may have been applied and not acknowledged) it creates the group
/// there and re-reads what this consumer was delivered and never
/// acknowledged. Every `claimIdleMilliseconds / 2` it claims entries other
/// consumers left pending too long.
///
/// Stops when its task is cancelled, after the round in hand (applied and
/// acknowledged): a stop never loses an entry nor applies one twice.
final class StreamConsumer {
    private let ledger: LedgerClient
    private let sink: EntrySink
    private let group: String
    private let consumer: String
    private let options: ConsumerOptions
    /// `options.replicaAcks` resolved against the topology in the first round.
    private var fence: ReplicaFence?
    private var fenceResolved = false
    private let sweepInterval: TimeInterval
    private let logger: Logger
    /// After every round, with the streams that had entries in it.
    private let afterRound: (ConsumerStats, Set<String>) async -> Void
    private let wakeups = StreamWakeups()
    private var subscribers: [ClusterTopology.Node: RedisSubscriber] = [:]
    /// Testing only: no keyevent subscription (the sweep alone).
    private let listen: Bool

    private(set) var stats = ConsumerStats()
    /// Every slot stream seen.
    private(set) var known: Set<String> = []
    /// Streams whose group exists and whose own pending entries were re-read.
    private var ready: Set<String> = []
    /// Streams whose idle consumers were looked at (once per process).
    private var tidied: Set<String> = []
    private var lastSweep = Date.distantPast
    private var lastClaim = Date.distantPast
    private var caughtUp = false
    /// Streams read since the last claim check (nil: check every known stream).
    private var claimCandidates: Set<String>?
    /// Each master's XADD count at the last sweep that read its streams.
    private var xaddCalls: [ClusterTopology.Node: Int] = [:]
    private var consecutiveFailures = 0

    init(
        ledger: LedgerClient, sink: EntrySink, group: String, consumer: String, options: ConsumerOptions,
        sweepInterval: TimeInterval, listen: Bool = true, logger: Logger,
        afterRound: @escaping (ConsumerStats, Set<String>) async -> Void = { _, _ in }
    ) {
        self.ledger = ledger
        self.sink = sink
        self.group = group
        self.consumer = consumer
        self.options = options
        self.sweepInterval = sweepInterval
        self.listen = listen
        self.logger = logger
        self.afterRound = afterRound
    }

    func run() async throws {
        defer { subscribers.values.forEach { $0.close() } }
        var dirty: Set<String> = []
        var announced = false
        while !Task.isCancelled {
            var done = false
            try await retryingRedis {
                if !self.fenceResolved {
                    // Against the map: read it first (nothing is connected before the first round).
                    _ = try await self.ledger.masters()
                    self.fence = self.options.fence(replicated: try await self.ledger.redis.isReplicated().get())
                    self.fenceResolved = true
                }
                let woken = self.wakeups.take()
                dirty.formUnion(woken.streams)
                // Drain mode sweeps every round, whole: it must see every stream.
                if self.options.drain || woken.gap || Date().timeIntervalSince(self.lastSweep) >= self.sweepInterval {
                    dirty.formUnion(try await self.sweep(whole: self.options.drain || woken.gap))
                }
                let round = dirty
                self.claimCandidates?.formUnion(round)
                var read = 0
                var withEntries: Set<String> = []
                if !round.isEmpty {
                    let (full, count, streams) = try await self.readNew(round)
                    read = count
                    dirty = full
                    withEntries = streams
                }
                // After the read: the streams are prepared (group, own pending) by then.
                if Date().timeIntervalSince(self.lastClaim) * 1000 >= Double(self.options.claimIdleMilliseconds / 2) {
                    try await self.claimFromIdleConsumers()
                }
                if !announced {
                    // Listening, the group created and own pending re-read on every stream found.
                    announced = true
                    self.logger.info("consumer ready", metadata: [
                        "group": "\(self.group)", "consumer": "\(self.consumer)", "streams": "\(self.known.count)",
                        "replica_acks": "\(self.fence?.replicas ?? 0)",
                    ])
                }
                await self.afterRound(self.stats, withEntries)
                if self.options.drain && read == 0 && dirty.isEmpty {
                    if try await self.pendingCount() == 0 {
                        done = true
                    } else {
                        // Someone else holds entries: claim them once idle long enough.
                        try await self.claimFromIdleConsumers()
                        await self.wakeups.wait(upTo: .milliseconds(100))
                    }
                    return
                }
                if dirty.isEmpty && !self.options.drain {
                    if !self.caughtUp {
                        self.caughtUp = true
                        self.logger.info("consumer caught up", metadata: ["group": "\(self.group)", "streams": "\(self.known.count)"])
                    }
                    let next = min(self.lastSweep.addingTimeInterval(self.sweepInterval), Date().addingTimeInterval(Double(self.options.blockMilliseconds) / 1000))
                    await self.wakeups.wait(upTo: .milliseconds(Int(next.timeIntervalSinceNow * 1000)))
                    // Let a few more entries arrive: one round (one transaction) for them all.
                    if self.options.lingerMilliseconds > 0 { try? await Task.sleep(for: .milliseconds(self.options.lingerMilliseconds)) }
                }
            }
            if done { break }
        }
    }

    // MARK: - Streams and masters

    /// The streams each master holds; subscribe to the keyevents of
    /// masters not yet listened to (a new master, a promoted replica).
    /// Unless `whole`, a master whose XADD count has not moved since its
    /// last sweep is skipped. Returns the streams to read.
    private func sweep(whole: Bool) async throws -> Set<String> {
        lastSweep = Date()
        let masters = try await ledger.masters()
        if listen {
            for node in masters where subscribers[node] == nil {
                let wakeups = self.wakeups
                let subscriber = RedisSubscriber(
                    endpoint: ledger.endpoint(of: node), eventLoop: ledger.eventLoop, logger: logger,
                    onMessage: { [layout = ledger.layout] _, key in
                        if layout.isLedgerStream(key) { wakeups.mark(key) }
                    },
                    onResubscribed: { wakeups.markGap() }
                )
                do {
                    try await subscriber.subscribe([Self.xaddChannel]).get()
                    subscribers[node] = subscriber
                } catch {
                    subscriber.close()
                    logger.warning("cannot listen to the xadd keyevents of a master; the sweep alone finds its entries", metadata: [
                        "node": "\(node)", "error": "\(error)",
                    ])
                }
            }
            for (node, subscriber) in subscribers where !masters.contains(node) {
                subscriber.close()
                subscribers[node] = nil
            }
        }
        var found: Set<String> = []
        for node in masters {
            // Read before the scan: an XADD after it moves the count for the next sweep.
            let calls: Int?
            do {
                calls = try await xaddCount(on: node)
            } catch {
                logger.debug("cannot read the xadd count of a master", metadata: ["node": "\(node)", "error": "\(error)"])
                calls = nil
            }
            if !whole, let calls, calls == xaddCalls[node] { continue }
            logger.debug("sweeping a master", metadata: ["node": "\(node)", "xadd_calls": "\(calls.map(String.init) ?? "?")", "whole": "\(whole)"])
            let streams = try await ledger.streams(on: node)
            known.formUnion(streams)
            found.formUnion(streams)
            xaddCalls[node] = calls
        }
        for node in xaddCalls.keys where !masters.contains(node) { xaddCalls[node] = nil }
        return found
    }

    /// How many XADDs a node has executed (scripts' included), from
    /// `INFO commandstats`; nil when the user may not run INFO.
    private func xaddCount(on node: ClusterTopology.Node) async throws -> Int? {
        guard let text = try await ledger.send(["INFO", "commandstats"], on: node).string else { return nil }
        guard let line = text.split(whereSeparator: \.isNewline).first(where: { $0.hasPrefix("cmdstat_xadd:") }) else { return 0 }
        guard let calls = line.split(separator: ",").first?.split(separator: "=").last else { return nil }
        return Int(calls)
    }

    static let xaddChannel = "__keyevent@0__:xadd"

    /// Creates the group on streams seen for the first time and re-reads
    /// what this consumer was delivered there and never acknowledged.
    private func prepare(_ streams: Set<String>) async throws {
        let fresh = streams.subtracting(ready).sorted()
        guard !fresh.isEmpty else { return }
        let created = await ledger.pipelineResults(fresh.map { ($0, ["XGROUP", "CREATE", $0, group, "0", "MKSTREAM"]) })
        for result in created {
            if case .failure(let error) = result {
                if (error as? RedisError)?.kind == .busyGroup { continue }
                throw error
            }
        }
        await forgetIdleConsumers(on: fresh.filter { !tidied.contains($0) })
        var cursors = Dictionary(uniqueKeysWithValues: fresh.map { ($0, StreamID.zero) })
        while !cursors.isEmpty && !Task.isCancelled {
            let names = cursors.keys.sorted()
            let replies = try await ledger.pipeline(names.map { name in
                (name, ["XREADGROUP", "GROUP", group, consumer, "COUNT", String(options.batchSize), "STREAMS", name, cursors[name]!.description])
            })
            var batches: [(stream: String, entries: [StreamEntry])] = []
            for (name, reply) in zip(names, replies) {
                let entries = try StreamReply.readGroup(reply)
                if let last = entries.last {
                    batches.append((name, entries))
                    cursors[name] = last.id
                } else {
                    cursors[name] = nil
                }
            }
            if !batches.isEmpty {
                logger.info("re-applying entries delivered before a restart", metadata: ["count": "\(batches.reduce(0) { $0 + $1.entries.count })"])
                try await handle(batches)
            }
        }
        ready.formUnion(fresh)
    }

    /// Consumers that have held nothing for this long are removed from the group.
    static let forgetConsumersAfterMilliseconds = 3_600_000

    /// Removes, once per stream and process, the consumers of the group that
    /// hold nothing and have not been heard from for an hour (replayers
    /// restarted under a new name). Best effort: a failure is retried at the
    /// next start.
    private func forgetIdleConsumers(on streams: [String]) async {
        guard !streams.isEmpty else { return }
        tidied.formUnion(streams)
        let replies = await ledger.pipelineResults(streams.map { ($0, ["XINFO", "CONSUMERS", $0, group]) })
        var deletions: [(key: String, arguments: [String])] = []
        for (stream, result) in zip(streams, replies) {
            guard case .success(let reply) = result else { continue }
            for item in reply.array ?? [] {
                let info = StreamReply.pairs(item)
                guard let name = info["name"]?.string, name != consumer, info["pending"]?.int == 0,
                      let idle = info["idle"]?.int, idle >= Self.forgetConsumersAfterMilliseconds else { continue }
                deletions.append((stream, ["XGROUP", "DELCONSUMER", stream, group, name]))
            }
        }
        guard !deletions.isEmpty else { return }
        let results = await ledger.pipelineResults(deletions)
        let forgotten = zip(deletions, results).compactMap { deletion, result in
            (try? result.get()) == nil ? nil : deletion.arguments[4]
        }
        logger.info("removed idle consumers holding nothing", metadata: [
            "group": "\(group)", "consumers": "\(Set(forgotten).sorted().joined(separator: ","))",
        ])
    }

    /// One XREADGROUP per stream, pipelined; returns the streams that gave
    /// a full batch (more to read), how many entries were read, and the
    /// streams that had any.
    private func readNew(_ streams: Set<String>) async throws -> (full: Set<String>, read: Int, withEntries: Set<String>) {
        known.formUnion(streams)
        try await prepare(streams)
        let names = streams.sorted()
        let replies = try await ledger.pipeline(names.map { name in
            (name, ["XREADGROUP", "GROUP", group, consumer, "COUNT", String(options.batchSize), "STREAMS", name, ">"])
        })
        var batches: [(stream: String, entries: [StreamEntry])] = []
        var full: Set<String> = []
        var read = 0
        for (name, reply) in zip(names, replies) {
            let entries = try StreamReply.readGroup(reply)
            guard !entries.isEmpty else { continue }
            batches.append((name, entries))
            read += entries.count
            if entries.count >= options.batchSize { full.insert(name) }
        }
        // One transaction per batchSize entries or so.
        var chunk: [(stream: String, entries: [StreamEntry])] = []
        var chunkSize = 0
        for batch in batches {
            chunk.append(batch)
            chunkSize += batch.entries.count
            if chunkSize >= options.batchSize {
                try await handle(chunk)
                chunk = []
                chunkSize = 0
            }
        }
        if !chunk.isEmpty { try await handle(chunk) }
        return (full, read, Set(batches.map(\.stream)))
    }

    /// Apply (commit), then acknowledge. A crash between the two re-delivers
    /// the batch, which the sink ignores by (stream, id).
    private func handle(_ batches: [(stream: String, entries: [StreamEntry])]) async throws {
        var batches = batches
        if let fence { batches = try await fenceOnReplicas(batches, fence) }
        guard !batches.isEmpty else { return }
        let total = batches.reduce(0) { $0 + $1.entries.count }
        let outcome: BatchOutcome
        do {
            outcome = try await sink.apply(batches)
        } catch {
            throw SinkFailure(underlying: error)
        }
        precondition(outcome.total == total, "the sink accounts for every entry of the batch")
        stats.batches += 1
        stats.outcome += outcome
        if let limit = options.killAfterCommits, stats.batches >= limit {
            logger.critical("killing myself after commit, before XACK (--kill-after-commits)")
            kill(getpid(), SIGKILL)
        }
        _ = try await ledger.pipeline(batches.map { ($0.stream, ["XACK", $0.stream, group] + $0.entries.map(\.id.description)) })
        logger.debug("batch committed and acknowledged", metadata: [
            "group": "\(group)", "streams": "\(batches.count)", "entries": "\(total)", "applied": "\(outcome.applied)",
            "duplicates": "\(outcome.duplicates)", "total_applied": "\(stats.outcome.applied)",
        ])
    }

    /// The replica fence over a round's streams: every stream's XCLAIM, then
    /// one WAIT per master (after all of that master's XCLAIMs on the same
    /// connection, so it covers them all). Returns the batches with only the
    /// entries their master holds (see `ReplicaFence.held`), empty ones dropped.
    private func fenceOnReplicas(
        _ batches: [(stream: String, entries: [StreamEntry])], _ fence: ReplicaFence
    ) async throws -> [(stream: String, entries: [StreamEntry])] {
        let fenced = batches.filter { !$0.entries.isEmpty }
        guard !fenced.isEmpty else { return [] }
        let router = ledger.redis
        let owners = try await router.eventLoop.submit {
            fenced.map { batch -> (node: ClusterTopology.Node?, wanted: Int) in
                let node = router.master(ofSlot: HashSlot.of(key: batch.stream))
                return (node, node.map { router.replicasWanted(atLeast: fence.replicas, of: $0) } ?? fence.replicas)
            }
        }.get()
        var claims: [(key: String, arguments: [String])] = []
        var waits: [(key: String, arguments: [String], wanted: Int)] = []
        var waited = Set<ClusterTopology.Node?>()
        for (batch, owner) in zip(fenced, owners) {
            let commands = fence.commands(stream: batch.stream, group: group, consumer: consumer, ids: batch.entries.map(\.id), wanted: owner.wanted)
            claims.append((batch.stream, commands[0]))
            if waited.insert(owner.node).inserted || owner.node == nil { waits.append((batch.stream, commands[1], owner.wanted)) }
        }
        let replies = try await ledger.pipeline(claims + waits.map { ($0.key, $0.arguments) })
        for (index, wait) in waits.enumerated() {
            try fence.check(waitReply: replies[claims.count + index], stream: wait.key, wanted: wait.wanted)
        }
        var held: [(stream: String, entries: [StreamEntry])] = []
        for (index, batch) in fenced.enumerated() {
            let entries = try fence.held(batch.entries, claimReply: replies[index])
            if entries.count < batch.entries.count {
                logger.warning("entries their master does not hold (a failover discarded them): not applied", metadata: [
                    "stream": "\(batch.stream)", "entries": "\(batch.entries.count - entries.count)",
                    "first": "\(batch.entries.first { !entries.contains($0) }?.id.description ?? "")",
                ])
            }
            if !entries.isEmpty { held.append((batch.stream, entries)) }
        }
        return held
    }

    /// Entries delivered to anyone in the group and not acknowledged, over every known stream.
    private func pendingCount() async throws -> Int {
        let names = known.sorted()
        let replies = await ledger.pipelineResults(names.map { ($0, ["XPENDING", $0, group]) })
        var total = 0
        for result in replies {
            switch result {
            case .success(let reply): total += try PendingSummary.parse(reply).count
            case .failure(let error as RedisError) where error.kind == .noGroup: continue
            case .failure(let error): throw error
            }
        }
        return total
    }

    /// Takes over entries other consumers left unacknowledged too long, on
    /// the streams that have any.
    /// A consumer can only hold entries of streams that were written, which
    /// this consumer read too: after a first check over every known stream,
    /// only the streams read since the last check are looked at.
    private func claimFromIdleConsumers() async throws {
        lastClaim = Date()
        let candidates = claimCandidates ?? known
        claimCandidates = []
        let names = candidates.intersection(ready).sorted()
        guard !names.isEmpty else { return }
        let summaries = try await ledger.pipeline(names.map { ($0, ["XPENDING", $0, group]) })
        for (name, reply) in zip(names, summaries) where try PendingSummary.parse(reply).count > 0 {
            let redis = ledger.redis(forKey: name)
            var cursor = StreamID.zero
            repeat {
                let claimed = try await StreamReply.autoClaim(redis.send([
                    "XAUTOCLAIM", name, group, consumer, String(options.claimIdleMilliseconds), cursor.description,
                    "COUNT", String(options.batchSize),
                ]))
                let entries = claimed.entries + claimed.deleted.map { StreamEntry(id: $0, fields: nil) }
                if !entries.isEmpty {
                    logger.info("claimed entries from an idle consumer", metadata: ["stream": "\(name)", "count": "\(entries.count)"])
                    stats.claimed += entries.count
                    try await handle([(name, entries)])
                }
                cursor = claimed.cursor
            } while cursor != .zero && !Task.isCancelled
        }
    }

    /// Runs `body`, retrying Redis failures with back-off (`Backoff.replayer`:
    /// 50 ms doubling to 2 s) until it succeeds or the task is cancelled. Sink failures pass through.
    private func retryingRedis(_ body: () async throws -> Void) async throws {
        var backoff = Backoff.replayer
        while true {
            do {
                try await body()
                consecutiveFailures = 0
                return
            } catch let error where !(error is SinkFailure) {
                consecutiveFailures += 1
                // A batch may have been applied and not acknowledged: re-read own pending everywhere.
                ready.removeAll()
                lastSweep = .distantPast
                xaddCalls.removeAll()
                claimCandidates = nil
                if options.drain && consecutiveFailures >= options.maxDrainFailures { throw error }
                if Task.isCancelled {
                    logger.warning("stopping while redis fails", metadata: ["group": "\(group)", "error": "\(error)"])
                    return
                }
                let delay = backoff.failed()
                logger.warning("redis failed; retrying", metadata: ["group": "\(group)", "error": "\(error)", "retry_in_ms": "\(delay.nanoseconds / 1_000_000)"])
                try? await Task.sleep(for: delay.duration)
            }
        }
    }
}
