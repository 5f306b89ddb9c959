import AuthorizerCore
import Ledger
import Logging
import NIOConcurrencyHelpers
import Metrics
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import RedisWire
import class Prometheus.PrometheusCollectorRegistry
import struct Prometheus.PrometheusMetricsFactory

/// Every metric the server exports, defined in this one place.
///
/// Each handle is created once, when the server starts; recording is an
/// atomic add or a short lock, never an allocation. Names follow Prometheus
/// conventions: `authorizer_` prefix, `_total` on counters, base units
/// (seconds) in the name of every histogram of time.
public final class ServerMetrics: Sendable {
    /// How a request ended, as a bounded label value.
    public enum ReasonClass: String, Sendable, CaseIterable {
        /// A `00` or a `51`.
        case none
        /// The line was not a valid request (JSON, fields, amounts).
        case invalidRequest = "invalid_request"
        case lineTooLong = "line_too_long"
        case unknownAccount = "unknown_account"
        /// The account lock could not be had in time, or too many requests queued for it.
        case accountBusy = "account_busy"
        case storageUnavailable = "storage_unavailable"
        /// The decision was not back within the SLA.
        case timeout
        case shuttingDown = "shutting_down"
        case internalError = "internal_error"
        /// The card named cannot authorize (unknown, not active, expired).
        case card
        /// A spending control of the account or the card refused it.
        case control
        /// A `07` the decision script gave for another reason.
        case other

        /// The class of a decision's reason; every `00` and `51` is `none`.
        public init(_ decision: Decision) {
            self = decision.rejectReason.map(ReasonClass.init(_:)) ?? .none
        }

        public init(_ reason: RejectReason) {
            switch reason {
            case .invalidRequest: self = .invalidRequest
            case .lineTooLong: self = .lineTooLong
            case .unknownAccount: self = .unknownAccount
            case .accountBusy: self = .accountBusy
            case .storageUnavailable: self = .storageUnavailable
            case .shuttingDown: self = .shuttingDown
            case .timeout: self = .timeout
            case .reversed, .originalNotFound, .amountMismatch: self = .other
            case .internalError: self = .internalError
            case .card: self = .card
            case .control: self = .control
            case .declined: self = .other
            }
        }
    }

    /// Why a request had to wait for its account.
    public enum WaitCause: String, Sendable, CaseIterable {
        /// Behind another request for the same account in this process.
        case queued
        /// The account lock was held by another holder (another process, or one that died).
        case locked
    }

    /// The Redis calls whose round trip is measured.
    public enum RedisCall: String, Sendable, CaseIterable {
        case authorize
        case decline
        case reverse
        case balance
    }

    /// The Redis links that reconnect on their own.
    public enum ReconnectingLink: String, Sendable, CaseIterable {
        /// A shard's pipelined command connection.
        case command
        /// The pub/sub connection that carries the lock and rules events.
        case subscriber
    }

    /// Metric names and their help text, as `# HELP` lines show them.
    public enum Name {
        public static let requests = "authorizer_requests_total"
        public static let requestDuration = "authorizer_request_duration_seconds"
        public static let redisRoundTrip = "authorizer_redis_round_trip_seconds"
        public static let lockWaits = "authorizer_lock_waits_total"
        public static let lockWaitDuration = "authorizer_lock_wait_seconds"
        public static let lockWaitTimeouts = "authorizer_lock_wait_timeouts_total"
        public static let contendedAccounts = "authorizer_contended_accounts"
        public static let lockWaiters = "authorizer_lock_waiters"
        public static let connections = "authorizer_terminal_connections"
        public static let connectionsRefused = "authorizer_terminal_connections_refused_total"
        public static let redisReconnects = "authorizer_redis_reconnects_total"
        public static let scriptReloads = "authorizer_redis_script_reloads_total"
        public static let streamLength = "authorizer_statements_stream_length"
        public static let replayerLagEntries = "authorizer_replayer_lag_entries"
        public static let replayerLagSeconds = "authorizer_replayer_lag_seconds"
        public static let replayerPending = "authorizer_replayer_pending_entries"
        public static let startTime = "process_start_time_seconds"
        public static let timeouts = "authorizer_timeouts_total"
        public static let journalUnsyncedAnswers = "authorizer_reversal_journal_unsynced_answers_total"
        public static let pendingReversals = "authorizer_pending_reversals"
        public static let reversalsApplied = "authorizer_reversals_applied_total"
        public static let journalBytes = "authorizer_reversal_journal_bytes"
        public static let clusterRedirects = "authorizer_redis_cluster_redirects_total"
        public static let unreplicatedDecisions = "authorizer_unreplicated_decisions_total"
        public static let redisUsedMemory = "authorizer_redis_used_memory_bytes"
        public static let redisMaxMemory = "authorizer_redis_maxmemory_bytes"
        public static let redisMemoryRatio = "authorizer_redis_memory_ratio"

        public static let help: [String: String] = [
            requests: "Requests decided, by response code and reason class.",
            requestDuration: "Time from a terminal's request line read to its answer written.",
            redisRoundTrip: "Time from sending a decision script to Redis to its reply.",
            lockWaits: "Requests that had to wait for their account, by cause.",
            lockWaitDuration: "Time requests waited for their account, until decided or timed out.",
            lockWaitTimeouts: "Requests declined because their account stayed busy past the deadline.",
            contendedAccounts: "Accounts with at least one request waiting, sampled every second.",
            lockWaiters: "Requests waiting for their account, sampled every second.",
            connections: "Open terminal connections.",
            connectionsRefused: "Terminal connections refused at the connection limit.",
            redisReconnects: "Redis connections re-established after a loss, by link.",
            scriptReloads: "Lua script reloads after Redis answered NOSCRIPT.",
            streamLength: "Entries in the statements stream (XLEN), sampled every second.",
            replayerLagEntries: "Statements not yet delivered to the replayer consumer group (the whole stream while the group does not exist); NaN when unknown.",
            replayerLagSeconds: "Age of the oldest statement not yet delivered to the replayer, by Redis' clock; 0 when none, NaN when unknown.",
            replayerPending: "Statements delivered to the replayer but not acknowledged.",
            startTime: "Start time of the process since the Unix epoch, in seconds.",
            timeouts: "Requests answered 07 timeout because their decision was not back within the SLA.",
            journalUnsyncedAnswers: "07 answers given at the SLA's deadline with their owed reversal written to the journal but its fsync not yet done.",
            pendingReversals: "Reversals of timed-out authorizations the service owes and Redis has not acknowledged yet.",
            reversalsApplied: "Reversals of timed-out authorizations acknowledged by Redis.",
            journalBytes: "Size of the local journal of owed reversals, in bytes.",
            clusterRedirects: "Redis Cluster redirections followed (MOVED, ASK, TRYAGAIN), by kind.",
            redisUsedMemory: "used_memory of the Redis node nearest its maxmemory (on a cluster: the fullest master), sampled every second.",
            redisMaxMemory: "maxmemory of that node (0: no limit).",
            redisMemoryRatio: "used_memory / maxmemory of that node (0 without a limit). Past 1 every write is refused: alert at 0.8.",
            unreplicatedDecisions: "Decisions fewer replicas than wanted acknowledged in time (--replica-acks; on a cluster every listed replica of the master); approvals among them reversed and answered 07 timeout.",
        ]
    }

    /// Histogram buckets: fine below the 100 ms SLA, with 0.1 s exactly on a bound.
    static let requestBuckets: [Duration] = [
        .microseconds(500), .milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(75), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1),
    ]
    static let redisBuckets: [Duration] = [
        .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .microseconds(2500),
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .seconds(1),
    ]
    static let lockWaitBuckets: [Duration] = [
        .milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(75), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .seconds(5),
    ]

    /// What `/metrics` renders; nil when metrics are off.
    public let registry: PrometheusCollectorRegistry?

    /// Indexed by `ResponseCode` position, then `ReasonClass` position.
    private let requests: [[Counter]]
    private let requestDuration: Timer
    private let redisRoundTrips: [Timer]
    private let lockWaits: [Counter]
    private let lockWaitDuration: Timer
    private let lockWaitTimeouts: Counter
    private let contendedAccounts: Gauge
    private let lockWaiters: Gauge
    private let connections: Meter
    private let connectionsRefused: Counter
    private let redisReconnects: [Counter]
    private let scriptReloads: Counter
    private let clusterRedirects: [String: Counter]
    private let unreplicatedDecisions: Counter
    private let redisUsedMemory: Gauge
    private let redisMaxMemory: Gauge
    private let redisMemoryRatio: Gauge
    /// The memory warning is logged once per crossing of `memoryWarningRatio`.
    private let memoryWarned = NIOLockedValueBox(false)
    public static let memoryWarningRatio = 0.8
    private let streamLength: Gauge
    private let replayerLagEntries: Gauge
    private let replayerLagSeconds: Gauge
    private let replayerPending: Gauge
    private let timeouts: Counter
    private let journalUnsyncedAnswers: Counter
    private let pendingReversals: Gauge
    private let reversalsApplied: Counter
    private let journalBytes: Gauge

    /// Metrics that record nothing, for servers run without `--metrics-port`.
    public static let disabled = ServerMetrics(factory: NOOPMetricsHandler.instance, registry: nil)

    /// Metrics kept in `registry`, ready to be rendered at `/metrics`.
    public convenience init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = [
            Name.requestDuration: Self.requestBuckets,
            Name.redisRoundTrip: Self.redisBuckets,
            Name.lockWaitDuration: Self.lockWaitBuckets,
        ]
        self.init(factory: factory, registry: registry)
    }

    private init(factory: MetricsFactory, registry: PrometheusCollectorRegistry?) {
        self.registry = registry
        // Every series exists from the start (at 0), so rates and alerts see it.
        requests = ResponseCode.allCases.map { code in
            ReasonClass.allCases.compactMap { reason in
                // 00 and 51 have no reason; a 07 always has one.
                guard (code == .rejected) == (reason != .none) else { return nil }
                return Counter(label: Name.requests, dimensions: [("code", code.rawValue), ("reason", reason.rawValue)], factory: factory)
            }
        }
        requestDuration = Timer(label: Name.requestDuration, factory: factory)
        redisRoundTrips = RedisCall.allCases.map {
            Timer(label: Name.redisRoundTrip, dimensions: [("script", $0.rawValue)], factory: factory)
        }
        lockWaits = WaitCause.allCases.map {
            Counter(label: Name.lockWaits, dimensions: [("cause", $0.rawValue)], factory: factory)
        }
        lockWaitDuration = Timer(label: Name.lockWaitDuration, factory: factory)
        lockWaitTimeouts = Counter(label: Name.lockWaitTimeouts, factory: factory)
        contendedAccounts = Gauge(label: Name.contendedAccounts, factory: factory)
        lockWaiters = Gauge(label: Name.lockWaiters, factory: factory)
        connections = Meter(label: Name.connections, factory: factory)
        connectionsRefused = Counter(label: Name.connectionsRefused, factory: factory)
        redisReconnects = ReconnectingLink.allCases.map {
            Counter(label: Name.redisReconnects, dimensions: [("link", $0.rawValue)], factory: factory)
        }
        scriptReloads = Counter(label: Name.scriptReloads, factory: factory)
        unreplicatedDecisions = Counter(label: Name.unreplicatedDecisions, factory: factory)
        redisUsedMemory = Gauge(label: Name.redisUsedMemory, factory: factory)
        redisMaxMemory = Gauge(label: Name.redisMaxMemory, factory: factory)
        redisMemoryRatio = Gauge(label: Name.redisMemoryRatio, factory: factory)
        clusterRedirects = Dictionary(uniqueKeysWithValues: ["moved", "ask", "tryagain"].map {
            ($0, Counter(label: Name.clusterRedirects, dimensions: [("kind", $0)], factory: factory))
        })
        streamLength = Gauge(label: Name.streamLength, factory: factory)
        replayerLagEntries = Gauge(label: Name.replayerLagEntries, factory: factory)
        replayerLagSeconds = Gauge(label: Name.replayerLagSeconds, factory: factory)
        replayerPending = Gauge(label: Name.replayerPending, factory: factory)
        timeouts = Counter(label: Name.timeouts, factory: factory)
        journalUnsyncedAnswers = Counter(label: Name.journalUnsyncedAnswers, factory: factory)
        pendingReversals = Gauge(label: Name.pendingReversals, factory: factory)
        pendingReversals.record(0)
        reversalsApplied = Counter(label: Name.reversalsApplied, factory: factory)
        journalBytes = Gauge(label: Name.journalBytes, factory: factory)
        journalBytes.record(0)
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        Gauge(label: Name.startTime, factory: factory).record(Double(now.tv_sec) + Double(now.tv_nsec) / 1e9)
    }

    // MARK: - Requests

    /// A request was decided (counted once, whether or not its answer is then written).
    public func requestDecided(_ decision: Decision) {
        requestDecided(decision.code, ReasonClass(decision))
    }

    public func requestDecided(_ code: ResponseCode, _ reason: ReasonClass) {
        let codeIndex: Int
        switch code {
        case .approved: codeIndex = 0
        case .insufficientFunds: codeIndex = 1
        case .rejected: codeIndex = 2
        }
        let row = requests[codeIndex]
        // 00 and 51 have the single `none` series; a 07 has every other class.
        let reasonIndex = code == .rejected ? Self.rejectedIndex[reason] ?? 0 : 0
        row[reasonIndex].increment()
    }

    private static let rejectedIndex: [ReasonClass: Int] = Dictionary(
        uniqueKeysWithValues: ReasonClass.allCases.filter { $0 != .none }.enumerated().map { ($0.element, $0.offset) }
    )

    /// An answer was written to its terminal; `receivedAt` is when its line was read.
    public func requestAnswered(receivedAt: NIODeadline) {
        requestDuration.recordNanoseconds((NIODeadline.now() - receivedAt).nanoseconds)
    }

    // MARK: - Redis

    public func redisRoundTrip(_ call: RedisCall, since sent: NIODeadline) {
        let index: Int
        switch call {
        case .authorize: index = 0
        case .decline: index = 1
        case .reverse: index = 2
        case .balance: index = 3
        }
        redisRoundTrips[index].recordNanoseconds((NIODeadline.now() - sent).nanoseconds)
    }

    public func redisReconnected(_ link: ReconnectingLink) {
        redisReconnects[link == .command ? 0 : 1].increment()
    }

    public func scriptsReloaded() {
        scriptReloads.increment()
    }

    /// The fullest node's memory; a warning when it crosses 80 % of maxmemory.
    public func redisMemory(_ memory: RedisMemory, logger: Logger) {
        redisUsedMemory.record(Double(memory.used))
        redisMaxMemory.record(Double(memory.max))
        redisMemoryRatio.record(memory.ratio)
        let high = memory.ratio >= Self.memoryWarningRatio
        let crossed = memoryWarned.withLockedValue { warned -> Bool in
            defer { warned = high }
            return high != warned
        }
        guard crossed else { return }
        if high {
            logger.warning("redis memory near maxmemory: past it every authorization is answered 07 until memory is freed", metadata: [
                "used_bytes": "\(memory.used)", "maxmemory_bytes": "\(memory.max)", "percent": "\(Int(memory.ratio * 100))",
            ])
        } else {
            logger.info("redis memory below the warning level again", metadata: ["percent": "\(Int(memory.ratio * 100))"])
        }
    }

    public func unreplicatedDecision() {
        unreplicatedDecisions.increment()
    }

    public func clusterRedirect(_ kind: String) {
        clusterRedirects[kind]?.increment()
    }

    // MARK: - The SLA and the reversals the service owes

    public func timedOut() { timeouts.increment() }
    public func answeredBeforeJournalSync() { journalUnsyncedAnswers.increment() }

    public func reversalApplied() { reversalsApplied.increment() }

    /// The journal's state; nil leaves a value unchanged.
    public func reversalJournal(pending: Int?, bytes: Int?) {
        if let pending { pendingReversals.record(pending) }
        if let bytes { journalBytes.record(bytes) }
    }

    // MARK: - Account contention

    public func lockWaitStarted(_ cause: WaitCause) {
        lockWaits[cause == .queued ? 0 : 1].increment()
    }

    /// A waiting request was decided (or declined, `timedOut`).
    public func lockWaitEnded(since started: NIODeadline, timedOut: Bool) {
        lockWaitDuration.recordNanoseconds((NIODeadline.now() - started).nanoseconds)
        if timedOut { lockWaitTimeouts.increment() }
    }

    public func contention(accounts: Int, waiters: Int) {
        contendedAccounts.record(accounts)
        lockWaiters.record(waiters)
    }

    // MARK: - Terminals

    public func connectionOpened() { connections.increment() }
    public func connectionClosed() { connections.decrement() }
    public func connectionRefused() { connectionsRefused.increment() }

    // MARK: - Statements stream

    public func statementsStream(_ lag: ReplayerLag) {
        streamLength.record(lag.length)
        // NaN (Prometheus' "unknown") when the Redis user may not look.
        replayerLagEntries.record(lag.undelivered.map(Double.init) ?? .nan)
        replayerLagSeconds.record(lag.lagSeconds ?? .nan)
        replayerPending.record(lag.pending)
    }

    // MARK: - Exposition

    /// The Prometheus text exposition of every metric, families in name
    /// order, each with its `# HELP` line. Empty when metrics are off.
    public func exposition() -> [UInt8] {
        guard let registry else { return [] }
        return PrometheusText.annotated(registry.emitToBuffer(), help: Name.help)
    }
}

/// Orders the registry's families by name and gives each its `# HELP` line
/// (swift-metrics handles carry no help text of their own).
public enum PrometheusText {
    public static func annotated(_ exposition: [UInt8], help: [String: String]) -> [UInt8] {
        var families: [(name: String, lines: [Substring])] = []
        let text = String(decoding: exposition, as: UTF8.self)
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("# TYPE ") {
                let name = line.dropFirst(7).prefix { $0 != " " }
                families.append((String(name), [line]))
            } else if line.hasPrefix("# HELP ") {
                continue
            } else if families.isEmpty {
                families.append(("", [line]))
            } else {
                families[families.count - 1].lines.append(line)
            }
        }
        var output: [UInt8] = []
        output.reserveCapacity(exposition.count + help.count * 80)
        for family in families.sorted(by: { $0.name < $1.name }) {
            if let text = help[family.name] {
                output.append(contentsOf: "# HELP \(family.name) \(text)\n".utf8)
            }
            for line in family.lines {
                output.append(contentsOf: line.utf8)
                output.append(UInt8(ascii: "\n"))
            }
        }
        return output
    }
}
