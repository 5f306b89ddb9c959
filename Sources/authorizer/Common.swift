import ArgumentParser
import AuthorizerServer
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
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
    /// One Redis, or a cluster: asked of the first seed that answers (a seed
    /// down, paused or failing over must not keep a process from starting).
    func target(on loop: EventLoop) async throws -> RedisTarget {
        let endpoints = try endpoints()
        var failures: [String] = []
        for endpoint in endpoints {
            let probe = RedisClient(endpoint: endpoint, eventLoop: loop, logger: quietLogger)
            defer { probe.close() }
            let clustered: Bool
            do {
                clustered = try await RedisTarget.isCluster(probe).get()
            } catch {
                failures.append("\(endpoint): \(error)")
                continue
            }
            if clustered { return .cluster(seeds: endpoints) }
            guard endpoints.count == 1 else { throw ValidationError("several --redis URLs are seeds of a Redis Cluster, but \(endpoint) is not in cluster mode") }
            return .single(endpoint)
        }
        throw ValidationError("cannot use \(failures.joined(separator: "; "))")
    }
}

/// The CLI's commands log nothing of their Redis links: errors reach the user as messages.
let quietLogger = Logger(label: "authorizer.cli", factory: { _ in SwiftLogNoOpLogHandler() })

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

/// The Redis of one CLI command, async: on a cluster, a command about a
/// key goes to the master of the key's slot (MOVED followed by the router).
/// Runs on the shared event loop group, so nothing here needs shutting down
/// but the connections.
final class RedisSession: Sendable {
    let client: RedisClient
    /// One Redis or a cluster (detected, not declared).
    let target: RedisTarget
    /// Commands by key and scripts, one Redis or a cluster alike.
    let redis: Redis

    /// The client of every master (one Redis: the one), for node-local
    /// commands (SCAN, INFO, MEMORY).
    func masters() async throws -> [(node: ClusterTopology.Node, client: RedisClient)] {
        let redis = self.redis
        return try await redis.eventLoop.flatSubmit {
            redis.topology.map { $0.masters.map { ($0, redis.client(for: $0)) } }
        }.get()
    }

    /// The master serving `key`'s slot now.
    func master(ofKey key: String) async throws -> ClusterTopology.Node? {
        let redis = self.redis
        return try await redis.eventLoop.submit { redis.master(ofSlot: HashSlot.of(key: key)) }.get()
    }

    private init(client: RedisClient, redis: Redis) {
        self.client = client
        self.target = redis.target
        self.redis = redis
    }

    /// One Redis, as given: no cluster probe.
    convenience init(endpoint: RedisEndpoint, scripts: [LuaScript] = []) {
        let client = RedisClient(endpoint: endpoint, eventLoop: MultiThreadedEventLoopGroup.singleton.next(), scripts: scripts, logger: quietLogger)
        self.init(client: client, redis: Redis(target: .single(endpoint), eventLoop: client.eventLoop, scripts: scripts, logger: quietLogger))
    }

    /// The Redis or cluster `--redis` names.
    static func open(_ options: RedisOptions, scripts: [LuaScript] = []) async throws -> RedisSession {
        let endpoint = try options.endpoint()
        let client = RedisClient(endpoint: endpoint, eventLoop: MultiThreadedEventLoopGroup.singleton.next(), scripts: scripts, logger: quietLogger)
        do {
            let target = try await options.target(on: client.eventLoop)
            let redis = Redis(target: target, eventLoop: client.eventLoop, scripts: scripts, logger: quietLogger)
            do {
                try await redis.connect().get()
            } catch {
                redis.close()
                throw error
            }
            return RedisSession(client: client, redis: redis)
        } catch {
            client.close()
            throw error
        }
    }

    var eventLoop: EventLoop { client.eventLoop }

    /// The rules, versioned on a cluster.
    var rulesStore: RulesStore { RulesStore(redis: redis) }

    /// A command; on a cluster it goes to the master serving `key`.
    func send(_ command: RedisCommand, key: String? = nil) async throws -> RESPValue {
        try await future(command, key: key).get()
    }

    /// The reply, not awaited yet (to pipeline several).
    func future(_ command: RedisCommand, key: String? = nil) -> EventLoopFuture<RESPValue> {
        if let key { return redis.send(command, slot: HashSlot.of(key: key)) }
        return client.send(command)
    }

    func eval(_ script: LuaScript, keys: [String], arguments: [String]) async throws -> RESPValue {
        let redis = self.redis
        return try await redis.eventLoop.flatSubmit { redis.evalScript(script, keys: keys, arguments: arguments) }.get()
    }

    func close() {
        redis.close()
        client.close()
    }
}

/// Who makes an operator's change (a card's status, a freeze, a revert), for the ledger entry's `by`.
struct ChangeAuthor: ParsableArguments {
    @Option(help: "Who makes the change, for the ledger (default: $USER).") var by: String?
    var name: String { by ?? ProcessInfo.processInfo.environment["USER"] ?? "operator" }
}

/// A file's text, or a failure that names the file.
func readTextFile(_ path: String) throws -> String {
    do {
        return try String(contentsOfFile: path, encoding: .utf8)
    } catch {
        throw fail("cannot read \(path): \(error.localizedDescription)")
    }
}

func fail(_ message: String) -> ExitCode {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    return ExitCode.failure
}

/// A certificate chain and its private key, read from PEM files (`--tls-cert`, `--tls-key`).
struct PEMIdentity {
    let chain: [NIOSSLCertificateSource]
    let key: NIOSSLPrivateKeySource

    init(certificateFile: String, keyFile: String) throws {
        chain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { .certificate($0) }
        key = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
    }
}
