import ArgumentParser
import AuthorizerCore
import AuthorizerServer
import Foundation
import Ledger
import Logging
import NIOCore
import NIOPosix
import RedisWire
import Replayer
import ServiceLifecycle

/// The ledger's Redis: one node, or a cluster's seeds (detected by asking
/// the first node for `cluster_enabled`). `--redis`, else the role's URL(s).
func ledgerTarget(_ options: RedisOptions, roleVariable: String) async throws -> RedisTarget {
    var options = options
    if options.redis == nil, let urls = ProcessInfo.processInfo.environment[roleVariable] {
        options.redis = urls
    }
    return try await options.target(on: MultiThreadedEventLoopGroup.singleton.next())
}

struct Replay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Drain the statements stream(s) into SQLite (exactly once).",
        discussion: """
            Reads the `statements` stream (on a Redis Cluster: every slot stream `statements:{T}` of every master, \
            woken by each master's xadd keyevents, with a periodic sweep) with a consumer group, writes each batch to SQLite in one \
            transaction (rows keyed by entry id, plus the consumer's progress), then XACKs it. \
            Runs until SIGINT/SIGTERM (finishes the batch, commits, acks, exits 0), or with --drain \
            until nothing is new or unacknowledged. --notify also runs the notifier group, which \
            writes one message per decision to notifications:{ID}.
            """
    )

    /// Default: AUTHORIZER_REPLAYER_REDIS_URL, then AUTHORIZER_REDIS_URL.
    @OptionGroup var redisOptions: RedisOptions
    @OptionGroup var logOptions: LogOptions

    @Option(help: "SQLite database file (created when missing).")
    var db = "statements.sqlite"

    @Option(help: "Consumer group of the replayers.")
    var group = Keys.replayGroup

    @Option(help: "This consumer's name in the group. Default: <host>-<pid>.")
    var consumer: String?

    @Flag(help: "Exit once the group has nothing new and nothing unacknowledged.")
    var drain = false

    @Flag(help: "Also deliver one notification per decision to notifications:{ID} (consumer group `notifier`).")
    var notify = false

    @Option(help: "Entries per read and per database transaction (1-10000).")
    var batch = 500

    @Option(help: "How long one read waits for new entries, in ms (10-30000).")
    var blockMs = 1_000

    @Option(help: "Claim entries another consumer has left unacknowledged this long, in ms.")
    var claimIdleMs = 30_000

    @Option(help: "Keep at least this many acknowledged entries in the stream; older ones acknowledged by every group are trimmed (0: trim all acknowledged).")
    var trimMaxlen = 1_000_000

    @Flag(help: "Never trim the statements stream.")
    var noTrim = false

    @Option(help: "Approximate length cap of each notifications:{ID} stream.")
    var notifyMaxlen = 100

    @Option(help: "On a Redis Cluster: how often every master is swept for slot streams, in ms (the safety net under the xadd keyevents).")
    var sweepMs = 5_000

    @Option(help: "Apply (commit, notify) a batch only once this many replicas hold its entries (WAIT; on a Redis Cluster, every replica the cluster lists for the master, at least this many), so that no statement of a write a failover discards reaches the database. Default: 1 on a Redis Cluster with replicas, 0 otherwise.")
    var replicaAcks: Int?

    @Option(help: "The most one WAIT for --replica-acks may take, in ms.")
    var replicaAckTimeoutMs = 1_000

    @Option(help: .hidden)
    var killAfterCommits: Int?

    func validate() throws {
        guard (0...16).contains(replicaAcks ?? 0) else { throw ValidationError("--replica-acks must be 0-16") }
        guard ReplicaFence.timeoutRange.contains(replicaAckTimeoutMs) else { throw ValidationError("--replica-ack-timeout-ms must be 1-60000") }
        guard ConsumerOptions.batchSizeRange.contains(batch) else { throw ValidationError("--batch must be 1-10000") }
        guard ConsumerOptions.blockRange.contains(blockMs) else { throw ValidationError("--block-ms must be 10-30000") }
        guard (100...600_000).contains(sweepMs) else { throw ValidationError("--sweep-ms must be 100-600000") }
        guard claimIdleMs >= 100 else { throw ValidationError("--claim-idle-ms must be at least 100") }
        guard trimMaxlen >= 0 else { throw ValidationError("--trim-maxlen must not be negative") }
        guard (1...100_000).contains(notifyMaxlen) else { throw ValidationError("--notify-maxlen must be 1-100000") }
        if let consumer, consumer.isEmpty || consumer.count > 200 { throw ValidationError("--consumer must be 1-200 characters") }
    }

    func run() async throws {
        logOptions.bootstrap()
        let logger = Logger(label: "authorizer.replay")
        let target = try await ledgerTarget(redisOptions, roleVariable: "AUTHORIZER_REPLAYER_REDIS_URL")
        var configuration = ReplayRunner.Configuration(
            target: target,
            databasePath: db,
            consumer: consumer ?? ReplayRunner.defaultConsumerName()
        )
        configuration.sweepIntervalSeconds = Double(sweepMs) / 1000
        configuration.group = group
        configuration.consumerOptions.batchSize = batch
        configuration.consumerOptions.blockMilliseconds = blockMs
        configuration.consumerOptions.claimIdleMilliseconds = claimIdleMs
        configuration.consumerOptions.drain = drain
        configuration.consumerOptions.killAfterCommits = killAfterCommits
        configuration.consumerOptions.replicaAcks = replicaAcks
        configuration.consumerOptions.replicaAckTimeoutMilliseconds = replicaAckTimeoutMs
        configuration.notify = notify
        configuration.notificationMaxLength = notifyMaxlen
        configuration.trimMaxLength = noTrim ? nil : trimMaxlen
        configuration.progressToTerminal = isatty(STDERR_FILENO) == 1

        logger.info("replaying statements", metadata: [
            "redis": "\(target.primary)", "db": "\(db)", "group": "\(group)", "consumer": "\(configuration.consumer)",
            "drain": "\(drain)", "notify": "\(notify)", "ledger": "\(target.ledger)",
        ])
        let services = ServiceGroup(configuration: .init(
            // Done (--drain) is a normal end, not a failure of the group.
            services: [.init(
                service: ReplayService(runner: ReplayRunner(configuration: configuration, logger: logger), logger: logger),
                successTerminationBehavior: .gracefullyShutdownGroup
            )],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        try await services.run()
    }
}

/// The replayer as a service: SIGTERM/SIGINT cancel its consumers, which
/// finish the batch in hand (commit, then XACK) and stop; with --drain it
/// ends by itself once caught up.
struct ReplayService: Service {
    let runner: ReplayRunner
    let logger: Logger

    func run() async throws {
        let runner = self.runner
        let summary = try await withGracefulShutdownHandler {
            try await cancelWhenGracefulShutdown { try await runner.run() }
        } onGracefulShutdown: {
            logger.info("stopping: finishing the batch in hand")
        }
        let replayed = summary.replayed.outcome
        var metadata: Logger.Metadata = [
            "applied": "\(replayed.applied)", "duplicates": "\(replayed.duplicates)", "rejected": "\(replayed.skipped)",
            "claimed": "\(summary.replayed.claimed)", "entries_per_second": "\(Int(summary.entriesPerSecond))",
            "trimmed": "\(summary.trimmed)",
        ]
        if let notified = summary.notified {
            metadata["notified"] = "\(notified.outcome.applied)"
        }
        logger.info("replay stopped", metadata: metadata)
    }
}

struct StatementCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "statement", abstract: "Print an account's statement from SQLite.")

    @Option(help: "SQLite database written by `authorizer replay`.")
    var db = "statements.sqlite"

    @Option(help: "How many statements to show (1-10000).")
    var limit = 20

    @Argument(help: "Account id.")
    var account: String

    func validate() throws {
        guard (1...10_000).contains(limit) else { throw ValidationError("--limit must be 1-10000") }
    }

    func run() async throws {
        let store: StatementStore
        do {
            store = try await StatementStore(path: db, create: false)
        } catch let error as StatementStore.OpenError {
            throw fail("\(error)")
        }
        let statements = try store.statements(account: account, limit: limit)
        print(StatementTable.render(account: account, statements: statements, total: try store.statementCount(account: account)))
    }
}

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Recompute balances from the replayed statements and compare with Redis.",
        discussion: """
            Exits 1 when any balance differs, the ledger has a break, or an entry was rejected. \
            Needs only read access (the `operator` Redis user; default AUTHORIZER_OPERATOR_REDIS_URL).
            """
    )

    /// Default: AUTHORIZER_OPERATOR_REDIS_URL, then AUTHORIZER_REDIS_URL.
    @OptionGroup var redisOptions: RedisOptions

    @Option(help: "SQLite database written by `authorizer replay`.")
    var db = "statements.sqlite"

    @Option(help: "Consumer group of the replayers (its unacknowledged entries are read from the stream).")
    var group = Keys.replayGroup

    @Option(help: "Most mismatches printed.")
    var show = 50

    func run() async throws {
        let store: StatementStore
        do {
            store = try await StatementStore(path: db, create: false)
        } catch let error as StatementStore.OpenError {
            throw fail("\(error)")
        }
        let quiet = Logger(label: "authorizer.audit", factory: { _ in SwiftLogNoOpLogHandler() })
        // Each account against the stream that records it, on the master of its slot.
        let ledger = LedgerClient(target: try await ledgerTarget(redisOptions, roleVariable: "AUTHORIZER_OPERATOR_REDIS_URL"), logger: quiet)
        defer { ledger.close() }
        let report = try await Auditor(store: store, ledger: ledger, group: group).run()
        print("audit: \(report.accounts) accounts, \(report.fromDatabase) statements from \(db), \(report.fromStream) not yet replayed read from the stream")
        let problems: [String] = report.mismatches.map { "mismatch: \($0)" }
            + report.breaks.map { "break in the books: \($0)" }
            + report.rejected.map { "rejected entry \($0.entryID): \($0.error)" }
            + report.unreadableStreamEntries.map { "unreadable stream entry \($0)" }
        for line in problems.prefix(max(show, 0)) { print(line) }
        if problems.count > show { print("... and \(problems.count - show) more") }
        if report.passed {
            print("audit passed: every balance matches the ledger")
        } else {
            print("audit FAILED: \(report.mismatches.count) mismatched balances, \(report.breaks.count) breaks, \(report.rejected.count) rejected entries")
            throw ExitCode.failure
        }
    }
}
