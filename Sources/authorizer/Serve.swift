import ArgumentParser
import AuthorizerServer
import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import RedisWire

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve terminals over line-delimited JSON on TCP.")

    @OptionGroup var redisOptions: RedisOptions
    @OptionGroup var logOptions: LogOptions

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (env AUTHORIZER_PORT). Default 7070; 0 picks a free port.")
    var port: Int?

    @Option(help: "Event loop threads. Default: one per core.")
    var threads: Int?

    @Option(help: "Answer deadline in milliseconds.")
    var slaMs = 100

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

    @Option(help: "Write the bound port to this file once listening (for scripts and tests).")
    var portFile: String?

    func validate() throws {
        guard (10...10_000).contains(slaMs) else { throw ValidationError("--sla-ms must be 10-10000") }
        guard (10...60_000).contains(lockTtlMs) else { throw ValidationError("--lock-ttl-ms must be 10-60000") }
        guard maxWriteBufferBytes >= 4096 else { throw ValidationError("--max-write-buffer-bytes must be at least 4096") }
        guard idleTimeoutS >= 0 else { throw ValidationError("--idle-timeout-s must be 0 or more") }
        guard maxConnections > 0 else { throw ValidationError("--max-connections must be positive") }
        guard redisTimeoutMs >= 10 else { throw ValidationError("--redis-timeout-ms must be at least 10") }
    }

    func run() throws {
        logOptions.bootstrap()
        let logger = Logger(label: "authorizer")
        let endpoint = try redisOptions.endpoint()
        let scripts = try ScriptLibrary.load()
        let listenPort = try port ?? ProcessInfo.processInfo.environment["AUTHORIZER_PORT"].map { text in
            guard let value = Int(text) else { throw ValidationError("AUTHORIZER_PORT must be a number") }
            return value
        } ?? 7070

        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads ?? System.coreCount)
        defer { try? group.syncShutdownGracefully() }

        var config = AuthorizerConfig()
        config.sla = .milliseconds(Int64(slaMs))
        config.lockTTL = .milliseconds(Int64(lockTtlMs))
        let redisConnectionOptions = RedisConnection.Options(commandTimeout: .milliseconds(Int64(redisTimeoutMs)))

        let admin = RedisClient(endpoint: endpoint, eventLoop: group.next(), logger: logger)
        do {
            try checkNotifications(admin, logger: logger)
        } catch let error as RedisError {
            throw ValidationError("cannot reach \(endpoint): \(error)")
        }
        let store = RulesStore(redis: admin)
        if try store.installDefaultsIfMissing().wait() {
            logger.info("no rules in redis: installed the default rules")
        }
        let rules = RulesCache(initial: try store.load().wait(), store: store, logger: logger)
        let watcher = LockWatcher(endpoint: endpoint, eventLoop: admin.eventLoop, logger: logger) {
            rules.refresh()
        }
        try watcher.start().wait()
        rules.startPeriodicRefresh()

        let authorizer = Authorizer(
            group: group, endpoint: endpoint, scripts: scripts, rules: rules, watcher: watcher,
            config: config, redisOptions: redisConnectionOptions, logger: logger
        )
        try authorizer.connect().wait()

        var options = TerminalServer.Options()
        options.host = host
        options.port = listenPort
        options.maxConnections = maxConnections
        options.maxWriteBufferBytes = maxWriteBufferBytes
        options.idleTimeout = idleTimeoutS > 0 ? .seconds(Int64(idleTimeoutS)) : nil
        let server = try TerminalServer.start(group: group, authorizer: authorizer, options: options, logger: logger).wait()
        let boundPort = server.localPort ?? listenPort
        logger.info("authorizer listening", metadata: ["host": "\(host)", "port": "\(boundPort)", "redis": "\(endpoint)"])
        if let portFile {
            try "\(boundPort)\n".write(toFile: portFile, atomically: true, encoding: .utf8)
        }

        let stopped = DispatchSemaphore(value: 0)
        let signals = [SIGINT, SIGTERM].map { signalNumber -> DispatchSourceSignal in
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { stopped.signal() }
            source.resume()
            return source
        }
        stopped.wait()
        logger.info("shutting down: no new connections, answering requests in flight")
        try? server.shutdown().wait()
        rules.stop()
        watcher.close()
        try? authorizer.shutdown().wait()
        admin.close()
        signals.forEach { $0.cancel() }
        logger.info("stopped")
    }

    /// The lock waits need `notify-keyspace-events` with E (keyevent), g (del) and x (expired).
    private func checkNotifications(_ admin: RedisClient, logger: Logger) throws {
        let reply = try admin.send(RedisCommand("CONFIG", "GET", "notify-keyspace-events")).wait()
        guard let items = reply.array, items.count == 2, let flags = items[1].string else {
            throw ValidationError("unexpected reply to CONFIG GET notify-keyspace-events: \(reply)")
        }
        let hasAll = flags.contains("A")
        guard flags.contains("E"), hasAll || flags.contains("g"), hasAll || flags.contains("x") else {
            throw ValidationError(
                "redis has notify-keyspace-events \"\(flags)\"; the account lock waits need keyevent notifications for del and expired. Set `notify-keyspace-events Egx` in redis.conf (or CONFIG SET notify-keyspace-events Egx)."
            )
        }
    }
}
