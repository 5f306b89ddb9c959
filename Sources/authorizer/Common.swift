import ArgumentParser
import AuthorizerServer
import Foundation
import Logging
import NIOCore
import NIOPosix
import RedisWire

/// `--redis`, falling back to AUTHORIZER_REDIS_URL, then the local default.
struct RedisOptions: ParsableArguments {
    @Option(name: .long, help: "Redis URL (env AUTHORIZER_REDIS_URL). Default redis://127.0.0.1:6379/0. For a Redis Cluster, any node's URL, or several comma-separated as seeds.")
    var redis: String?

    /// The first URL (the only one on a single Redis).
    func endpoint() throws -> RedisEndpoint {
        try endpoints()[0]
    }

    /// Every URL given, in order.
    func endpoints() throws -> [RedisEndpoint] {
        let text = redis ?? ProcessInfo.processInfo.environment["AUTHORIZER_REDIS_URL"] ?? "redis://127.0.0.1:6379/0"
        let urls = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !urls.isEmpty else { throw ValidationError("--redis is empty") }
        do {
            return try urls.map { try RedisEndpoint(url: $0) }
        } catch {
            throw ValidationError("\(error)")
        }
    }

    /// One Redis or a cluster: asks the first node (`cluster_enabled:1`).
    func target(on loop: EventLoop) throws -> RedisTarget {
        let endpoints = try endpoints()
        let probe = RedisClient(endpoint: endpoints[0], eventLoop: loop, logger: Logger(label: "authorizer.cli", factory: { _ in SwiftLogNoOpLogHandler() }))
        defer { probe.close() }
        let clustered: Bool
        do {
            clustered = try RedisTarget.isCluster(probe).wait()
        } catch {
            throw ValidationError("cannot use \(endpoints[0]): \(error)")
        }
        if clustered { return .cluster(seeds: endpoints) }
        guard endpoints.count == 1 else { throw ValidationError("several --redis URLs are seeds of a Redis Cluster, but \(endpoints[0]) is not in cluster mode") }
        return .single(endpoints[0])
    }
}

struct LogOptions: ParsableArguments {
    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: Logger.Level = .info

    @Option(name: .long, help: "text, or json (one JSON object per line).")
    var logFormat: LogFormat = .text

    func bootstrap() {
        let level = logLevel
        let format = logFormat
        LoggingSystem.bootstrap { label in
            switch format {
            case .text:
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            case .json:
                var handler = JSONLogHandler(label: label)
                handler.logLevel = level
                return handler
            }
        }
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

extension RedisOptions {
    /// The rules store for `redis` (its first node): versioned rules on a cluster.
    func rulesStore(_ redis: CLIRedis) throws -> RulesStore {
        switch try target(on: redis.client.eventLoop) {
        case .single:
            return RulesStore(redis: redis.client)
        case .cluster(let seeds):
            let router = ClusterRouter(
                seeds: seeds, eventLoop: redis.client.eventLoop,
                logger: Logger(label: "authorizer.cli", factory: { _ in SwiftLogNoOpLogHandler() })
            )
            try router.connect().wait()
            return RulesStore(redis: redis.client, router: router)
        }
    }
}

/// A one-shot Redis client for the CLI's own commands.
struct CLIRedis {
    let group: MultiThreadedEventLoopGroup
    let client: RedisClient
    /// One Redis or a cluster; on a cluster, commands go to the master of their key's slot.
    let target: RedisTarget
    let router: ClusterRouter?

    init(endpoint: RedisEndpoint, scripts: [LuaScript] = []) {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        client = RedisClient(
            endpoint: endpoint,
            eventLoop: group.next(),
            scripts: scripts,
            logger: Logger(label: "authorizer.cli", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        target = .single(endpoint)
        router = nil
    }

    /// The Redis or cluster `--redis` names (a cluster is detected, not declared).
    init(options: RedisOptions, scripts: [LuaScript] = []) throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let endpoint = try options.endpoint()
        let quiet = Logger(label: "authorizer.cli", factory: { _ in SwiftLogNoOpLogHandler() })
        client = RedisClient(endpoint: endpoint, eventLoop: group.next(), scripts: scripts, logger: quiet)
        do {
            target = try options.target(on: client.eventLoop)
            if case .cluster(let seeds) = target {
                let router = ClusterRouter(seeds: seeds, eventLoop: client.eventLoop, scripts: scripts, logger: quiet)
                try router.connect().wait()
                self.router = router
            } else {
                router = nil
            }
        } catch {
            client.close()
            try? group.syncShutdownGracefully()
            throw error
        }
    }

    /// A command; on a cluster it goes to the master serving `key`.
    func send(_ command: RedisCommand, key: String? = nil) throws -> RESPValue {
        if let router, let key { return try router.send(command, slot: HashSlot.of(key: key)).wait() }
        return try client.send(command).wait()
    }

    func eval(_ script: LuaScript, keys: [String], arguments: [String]) throws -> RESPValue {
        if let router {
            return try router.eventLoop.flatSubmit { router.evalScript(script, keys: keys, arguments: arguments) }.wait()
        }
        return try client.eventLoop.flatSubmit { client.evalScript(script, keys: keys, arguments: arguments) }.wait()
    }

    func shutdown() {
        router?.close()
        client.close()
        try? group.syncShutdownGracefully()
    }
}

func fail(_ message: String) -> ExitCode {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    return ExitCode.failure
}
