import ArgumentParser
import AuthorizerCore
import AuthorizerServer
import Foundation
import Ledger
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import RedisWire
import Replayer
import ServiceLifecycle

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve terminals over line-delimited JSON on TCP.")

    @OptionGroup var redisOptions: RedisOptions
    @OptionGroup var logOptions: LogOptions

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (env AUTHORIZER_PORT). Default 7070; 0 picks a free port.")
    var port: Int?

    @Option(help: "Event loop threads. Default: one per core.")
    var threads: Int?

    @Option(help: "Answer deadline in milliseconds: every request is answered within it, `07 timeout` when the decision is not back.")
    var slaMs = 100

    @Option(help: "Directory of the local journal of reversals owed after a `07 timeout` (created when missing).")
    var stateDir = ".data/"

    @Option(help: "Most reversals the service may owe at once; when reached, authorizations are refused (07 authorizer storage unavailable).")
    var maxPendingReversals = 10_000

    @Option(help: "Lifetime of an account lock in milliseconds if its holder never releases it.")
    var lockTtlMs = 200

    @Option(help: "Most terminal connections at once; more are refused.")
    var maxConnections = 20_000

    @Option(help: "Close a terminal connection that does not read its answers once this many bytes are buffered for it.")
    var maxWriteBufferBytes = 1 << 20

    @Option(help: "Close a terminal connection that sends nothing for this many seconds (0: never).")
    var idleTimeoutS = 300

    @Option(help: "A Redis reply slower than this fails the connection's requests with 07 (milliseconds).")
    var redisTimeoutMs = 1_000

    @Option(help: "Serve terminals over TLS with this certificate chain (PEM).")
    var tlsCert: String?

    @Option(help: "Private key (PEM) for --tls-cert.")
    var tlsKey: String?

    @Option(help: "Require terminals to present a client certificate signed by this CA (PEM).")
    var tlsClientCa: String?

    @Option(name: .customLong("iso8583-port"), help: "Also serve ISO 8583 acquirer links on this port (0 picks a free port). Off when absent. Same host, TLS options and limits as the terminal port.")
    var iso8583Port: Int?

    @Flag(help: "A 07 timeout waits for its owed reversal's journal fsync however long the disk takes, past the SLA if need be. Without it the answer waits at most until the SLA's last moment, the line written (it survives a crash of serve, not of the host).")
    var journalFsyncBeforeAnswer = false

    @Flag(help: "ISO 8583: take a DE2 that names no card as the account id (the behaviour before cards). Without it such a request is answered DE39 14.")
    var isoPanAsAccount = false

    @OptionGroup var panKey: PANKeyOptions
    @OptionGroup var zone: ZoneOptions

    @Option(help: "Warn when the replayer has more than this many statements not yet applied.")
    var replayerLagWarnEntries = 100_000

    @Option(help: "Hand a decision to the terminal only once this many replicas acknowledged its writes (WAIT; on a Redis Cluster, every replica the cluster lists for the master, at least this many); an approval they do not acknowledge in time is reversed and answered 07 timeout. 0: off. Default: 1 on a Redis Cluster with replicas (a failover then loses no approval), 0 otherwise.")
    var replicaAcks: Int?

    @Option(help: "The most one WAIT for --replica-acks may take, in milliseconds (the SLA still bounds every answer).")
    var replicaAckTimeoutMs = 50

    @Option(help: "Re-read the rules from Redis this often, for changes made with plain redis-cli (milliseconds; 0: only on the rules-changed announcement).")
    var rulesRefreshMs = 1_000

    @Option(help: "Write the bound port to this file once listening (for scripts and tests).")
    var portFile: String?

    @Option(help: "Serve Prometheus metrics at http://<metrics-host>:<port>/metrics (e.g. 9464; 0 picks a free port). Off when absent.")
    var metricsPort: Int?

    @Option(help: "Address the metrics endpoint listens on.")
    var metricsHost = "127.0.0.1"

    func validate() throws {
        guard (10...10_000).contains(slaMs) else { throw ValidationError("--sla-ms must be 10-10000") }
        guard (10...60_000).contains(lockTtlMs) else { throw ValidationError("--lock-ttl-ms must be 10-60000") }
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        guard tlsClientCa == nil || tlsCert != nil else { throw ValidationError("--tls-client-ca needs --tls-cert and --tls-key") }
        guard maxWriteBufferBytes >= 4096 else { throw ValidationError("--max-write-buffer-bytes must be at least 4096") }
        guard idleTimeoutS >= 0 else { throw ValidationError("--idle-timeout-s must be 0 or more") }
        guard maxConnections > 0 else { throw ValidationError("--max-connections must be positive") }
        guard (0...16).contains(replicaAcks ?? 0) else { throw ValidationError("--replica-acks must be 0-16") }
        guard replicaAckTimeoutMs >= 1 else { throw ValidationError("--replica-ack-timeout-ms must be at least 1") }
        guard rulesRefreshMs == 0 || rulesRefreshMs >= 100 else { throw ValidationError("--rules-refresh-ms must be 0 or at least 100") }
        guard redisTimeoutMs >= 10 else { throw ValidationError("--redis-timeout-ms must be at least 10") }
        guard (1...1_000_000).contains(maxPendingReversals) else { throw ValidationError("--max-pending-reversals must be 1-1000000") }
        guard !stateDir.isEmpty else { throw ValidationError("--state-dir must not be empty") }
        guard metricsPort.map({ (0...65_535).contains($0) }) ?? true else { throw ValidationError("--metrics-port must be 0-65535") }
        guard iso8583Port.map({ (0...65_535).contains($0) }) ?? true else { throw ValidationError("--iso8583-port must be 0-65535") }
    }

    func run() async throws {
        logOptions.bootstrap()
        let logger = Logger(label: "authorizer")
        let endpoint = try redisOptions.endpoint()
        let luaDirectory = try ScriptLibrary.locate()
        let scripts = try ScriptLibrary.load(directory: luaDirectory)
        logger.info("lua scripts loaded", metadata: ["dir": "\(luaDirectory)"])
        let listenPort = try port ?? ProcessInfo.processInfo.environment["AUTHORIZER_PORT"].map { text in
            guard let value = Int(text) else { throw ValidationError("AUTHORIZER_PORT must be a number") }
            return value
        } ?? 7070

        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads ?? System.coreCount)
        do {
            try await serve(on: group, endpoint: endpoint, scripts: scripts, listenPort: listenPort, logger: logger)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        try await group.shutdownGracefully()
    }

    /// `--replica-acks`, or its default: 1 on a cluster with replicas
    /// (without it a master's loss loses the approvals its replica had not
    /// received), 0 otherwise. Said at start either way.
    private func chosenReplicaAcks(_ router: Redis, logger: Logger) async throws -> Int {
        if let replicaAcks {
            logger.info("replica acks", metadata: ["replica_acks": "\(replicaAcks)", "chosen": "explicitly"])
            return replicaAcks
        }
        let replicated = try await router.isReplicated().get()
        let acks = replicated ? 1 : 0
        logger.info("replica acks", metadata: [
            "replica_acks": "\(acks)",
            "chosen": "\(replicated ? "by default: the cluster has replicas (--replica-acks 0 to turn off)" : "by default: no replica listed")",
        ])
        return acks
    }

    /// The start-up, step by step: nothing listens before every step that
    /// can refuse to start (Redis, keyspace notifications, rules, the
    /// journal) has passed, and the service then runs until a signal stops it.
    private func serve(
        on group: MultiThreadedEventLoopGroup, endpoint: RedisEndpoint, scripts: ScriptLibrary, listenPort: Int, logger: Logger
    ) async throws {
        // The ledger's stream tags, before any request needs them (see LedgerLayout.tags).
        LedgerLayout.prepare()
        var config = try authorizerConfig()
        let cards = CardDirectory(keys: try panKey.keys())
        let admin = RedisClient(endpoint: endpoint, eventLoop: group.next(), logger: logger)
        let target = try await redisOptions.target(on: admin.eventLoop)
        let adminRouter = try await connectAdminRouter(target, endpoint: endpoint, loop: admin.eventLoop, logger: logger)
        config.replicaAcks = try await chosenReplicaAcks(adminRouter, logger: logger)
        try await probeNotifications(endpoint: endpoint, adminRouter: adminRouter)
        let store = RulesStore(redis: adminRouter)
        config.olderRecordsReadUntil = try await prepareRules(store, config: config, logger: logger)
        let rules = RulesCache(initial: try await store.load().get(), store: store, logger: logger)
        let metrics = metricsPort == nil ? ServerMetrics.disabled : ServerMetrics()
        let watcher = try await startLockWatcher(
            endpoint: endpoint, loop: admin.eventLoop, adminRouter: adminRouter, rules: rules, metrics: metrics, logger: logger
        )
        let journal = try openJournal(metrics: metrics, logger: logger)
        defer { journal.close() }
        let authorizer = Authorizer(
            group: group, target: target, scripts: scripts, rules: rules, watcher: watcher,
            config: config, redisOptions: RedisConnection.Options(commandTimeout: .milliseconds(Int64(redisTimeoutMs))),
            logger: logger, metrics: metrics, journal: journal, cards: cards
        )
        try await authorizer.connect().get()
        authorizer.applyOwedReversals()
        let lag = try await lagReaders(target, logger: logger)
        defer { lag.redis.close() }
        let metricsEndpoint = try await startMetrics(
            metrics, group: group, authorizer: authorizer, redis: admin, readMemory: lag.readMemory, logger: logger
        )
        let lagWatch = ReplayerLagMonitor(
            eventLoop: lag.redis.eventLoop, group: Keys.replayGroup,
            threshold: .init(maxUnappliedEntries: replayerLagWarnEntries, maxAge: .seconds(60)), logger: logger, read: lag.readLag
        ).start(every: target.ledger.lagReadInterval) { reading in
            metrics.statementsStream(reading)
        }
        let listeners = try await startListeners(group: group, authorizer: authorizer, endpoint: endpoint, listenPort: listenPort, logger: logger)

        // Signals and the stop, through the group (see ServeServices.swift).
        let services = ServiceGroup(configuration: .init(
            services: [
                RedisSideService(rules: rules, watcher: watcher, authorizer: authorizer, adminRouter: adminRouter, admin: admin),
                MetricsService(server: metricsEndpoint?.server, sampler: metricsEndpoint?.sampler, lagWatch: lagWatch),
                ListenerService(
                    terminals: listeners.terminals, iso8583: listeners.iso8583, journal: journal, logger: logger,
                    announce: announcement(listeners.terminals, endpoint: endpoint, listenPort: listenPort, logger: logger)
                ),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        try await services.run()
        logger.info("stopped")
    }

    /// The decision settings from the options.
    private func authorizerConfig() throws -> AuthorizerConfig {
        var config = AuthorizerConfig()
        config.isoPANAsAccount = isoPanAsAccount
        config.answerAfterJournalSync = journalFsyncBeforeAnswer
        let issuerZone = try zone.zone()
        // Looked up once a minute (an offset changes at a transition, on a minute).
        let offset = NIOLockedValueBox((minute: Int64.min, seconds: 0))
        config.zoneOffsetSeconds = {
            let now = Date()
            let minute = Int64(now.timeIntervalSince1970) / 60
            return offset.withLockedValue { cached in
                if cached.minute != minute { cached = (minute, issuerZone.secondsFromGMT(for: now)) }
                return cached.seconds
            }
        }
        config.sla = .milliseconds(Int64(slaMs))
        config.lockTTL = .milliseconds(Int64(lockTtlMs))
        // The journal's fsync happens inside the SLA: a fifth of it, at most 20 ms.
        config.answerMargin = .milliseconds(Int64(min(20, slaMs / 5)))
        config.maxPendingReversals = maxPendingReversals
        config.replicaAckTimeout = .milliseconds(Int64(replicaAckTimeoutMs))
        return config
    }

    /// The admin loop's own slot map, for the rules, the probes and the
    /// lock waits (keyevents are published by the master that owns the
    /// lock's slot only).
    private func connectAdminRouter(
        _ target: RedisTarget, endpoint: RedisEndpoint, loop: EventLoop, logger: Logger
    ) async throws -> Redis {
        let router = Redis(target: target, eventLoop: loop, logger: logger)
        do {
            try await router.connect().get()
        } catch {
            router.close()
            throw ValidationError("cannot use \(endpoint): \(error)")
        }
        let masters = try await router.topology.get().masters.map(\.description)
        logger.info("redis", metadata: ["masters": "\(masters)"])
        return router
    }

    /// Lock waits need keyevent notifications on every node that holds locks: refuse to start without them.
    private func probeNotifications(endpoint: RedisEndpoint, adminRouter: Redis) async throws {
        do {
            for node in try await adminRouter.topology.get().masters {
                let client = try await adminRouter.eventLoop.submit { adminRouter.client(for: node) }.get()
                let topology = try await adminRouter.topology.get()
                try await NotificationProbe.run(
                    endpoint: endpoint.at(node), redis: client, servedHere: { topology.master(ofSlot: HashSlot.of(key: $0)) == node }
                ).get()
            }
        } catch let error as RedisError {
            throw ValidationError("cannot use \(endpoint): \(error)")
        } catch let error as NotificationProbe.Missing {
            throw ValidationError("\(error)")
        }
    }

    /// Installs the default rules into an empty Redis; returns until when the older idempotency records are read.
    private func prepareRules(_ store: RulesStore, config: AuthorizerConfig, logger: Logger) async throws -> Int64 {
        if try await store.installDefaultsIfMissing().get() {
            logger.info("no rules in redis: installed the default rules")
        }
        let readUntil = try await OlderRecords.readUntil(
            store: store, nowMs: Int64(Date().timeIntervalSince1970 * 1000), lifetimeSeconds: config.idempotencyTTLSeconds
        ).get()
        if readUntil > 0 {
            logger.info("reading the older one-key idempotency records too", metadata: ["until": "\(readUntil)"])
        }
        return readUntil
    }

    /// The keyevent subscriptions behind lock waits (and the rules-changed announcement).
    private func startLockWatcher(
        endpoint: RedisEndpoint, loop: EventLoop, adminRouter: Redis, rules: RulesCache, metrics: ServerMetrics, logger: Logger
    ) async throws -> LockWatcher {
        let nodeOfLock: @Sendable (String) -> RedisEndpoint? = { lockKey in
            guard let node = adminRouter.master(ofSlot: HashSlot.of(key: lockKey)) else { return nil }
            return endpoint.at(node)
        }
        let watcher = LockWatcher(endpoint: endpoint, eventLoop: loop, logger: logger, metrics: metrics, nodeOf: nodeOfLock) {
            rules.refresh()
        }
        try await watcher.start().get()
        if rulesRefreshMs > 0 { rules.startPeriodicRefresh(every: .milliseconds(Int64(rulesRefreshMs))) }
        return watcher
    }

    private func openJournal(metrics: ServerMetrics, logger: Logger) throws -> ReversalJournal {
        do {
            return try ReversalJournal(directory: stateDir, maxEntries: maxPendingReversals, logger: logger, metrics: metrics)
        } catch {
            throw ValidationError("cannot use --state-dir \(stateDir): \(error)")
        }
    }

    /// How the replayer's lag and Redis' memory are read, off the hot path:
    /// by a monitor every `LedgerLayout.lagReadInterval`, whose readings
    /// set the gauges, on a thread and connections of its own (the shared
    /// singleton group, not a shard's loop): a cluster's full reading
    /// handles thousands of replies, which must not delay a shard's terminals.
    private struct LagReaders {
        let readLag: @Sendable () -> EventLoopFuture<ReplayerLag>
        let readMemory: @Sendable () -> EventLoopFuture<RedisMemory>
        let redis: Redis
    }

    private func lagReaders(_ target: RedisTarget, logger: Logger) async throws -> LagReaders {
        let redis = Redis(target: target, eventLoop: MultiThreadedEventLoopGroup.singleton.next(), logger: logger)
        try await redis.connect().get()
        let reader = LedgerLagReader(redis: redis)
        return LagReaders(
            readLag: { reader.read() },
            readMemory: {
                redis.eventLoop.flatSubmit {
                    redis.topology.flatMap { RedisMemory.read($0.masters.map(redis.client(for:)), on: redis.eventLoop) }
                }
            },
            redis: redis
        )
    }

    /// The terminal port, and the ISO 8583 port when asked.
    private func startListeners(
        group: MultiThreadedEventLoopGroup, authorizer: Authorizer, endpoint: RedisEndpoint, listenPort: Int, logger: Logger
    ) async throws -> (terminals: Listener, iso8583: Listener?) {
        var limits = Listener.Limits(port: listenPort)
        limits.host = host
        limits.maxConnections = maxConnections
        limits.maxWriteBufferBytes = maxWriteBufferBytes
        limits.tls = try makeTLSContext()
        limits.idleTimeout = idleTimeoutS > 0 ? .seconds(Int64(idleTimeoutS)) : nil
        let server = try await Listener.terminals(group: group, authorizer: authorizer, limits: limits, logger: logger).get()
        var isoServer: Listener?
        if let iso8583Port {
            var isoLimits = limits
            isoLimits.port = iso8583Port
            let started = try await Listener.iso8583(group: group, authorizer: authorizer, limits: isoLimits, logger: logger).get()
            isoServer = started
            logger.info("iso8583 listening", metadata: ["host": "\(host)", "port": "\(started.localPort ?? iso8583Port)"])
        }
        return (server, isoServer)
    }

    /// "authorizer listening" and the port file: said only once the service
    /// group handles SIGTERM (from `ListenerService.run`), so that a stop
    /// sent as soon as serve says it listens is a graceful one.
    private func announcement(
        _ terminals: Listener, endpoint: RedisEndpoint, listenPort: Int, logger: Logger
    ) -> @Sendable () throws -> Void {
        let boundPort = terminals.localPort ?? listenPort
        let (host, portFile) = (host, portFile)
        return {
            logger.info("authorizer listening", metadata: ["host": "\(host)", "port": "\(boundPort)", "redis": "\(endpoint)"])
            if let portFile {
                try "\(boundPort)\n".write(toFile: portFile, atomically: true, encoding: .utf8)
            }
        }
    }

    /// `/metrics` and the sampler behind its stream and contention gauges, with --metrics-port.
    private func startMetrics(
        _ metrics: ServerMetrics, group: EventLoopGroup, authorizer: Authorizer, redis: RedisClient,
        readMemory: @escaping @Sendable () -> EventLoopFuture<RedisMemory>,
        logger: Logger
    ) async throws -> (server: MetricsServer, sampler: MetricsSampler)? {
        guard let metricsPort else { return nil }
        var options = MetricsServer.Options()
        options.host = metricsHost
        options.port = metricsPort
        let server = try await MetricsServer.start(group: group, metrics: metrics, options: options, logger: logger).get()
        let sampler = MetricsSampler.start(
            authorizer: authorizer, redis: redis, metrics: metrics, readMemory: readMemory, logger: logger
        )
        logger.info("metrics listening", metadata: ["host": "\(metricsHost)", "port": "\(server.localPort ?? metricsPort)", "path": "/metrics"])
        return (server, sampler)
    }

    private func makeTLSContext() throws -> NIOSSLContext? {
        guard let tlsCert, let tlsKey else { return nil }
        let identity = try PEMIdentity(certificateFile: tlsCert, keyFile: tlsKey)
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: identity.chain, privateKey: identity.key)
        configuration.minimumTLSVersion = .tlsv12
        if let tlsClientCa {
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .file(tlsClientCa)
        }
        return try NIOSSLContext(configuration: configuration)
    }
}
