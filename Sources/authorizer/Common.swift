import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import RedisWire

/// `--redis`, falling back to AUTHORIZER_REDIS_URL, then the local default.
struct RedisOptions: ParsableArguments {
    @Option(name: .long, help: "Redis URL (env AUTHORIZER_REDIS_URL). Default redis://127.0.0.1:6379/0.")
    var redis: String?

    func endpoint() throws -> RedisEndpoint {
        let url = redis ?? ProcessInfo.processInfo.environment["AUTHORIZER_REDIS_URL"] ?? "redis://127.0.0.1:6379/0"
        do {
            return try RedisEndpoint(url: url)
        } catch {
            throw ValidationError("\(error)")
        }
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

/// A one-shot Redis client for the CLI's own commands.
struct CLIRedis {
    let group: MultiThreadedEventLoopGroup
    let client: RedisClient

    init(endpoint: RedisEndpoint, scripts: [LuaScript] = []) {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        client = RedisClient(
            endpoint: endpoint,
            eventLoop: group.next(),
            scripts: scripts,
            logger: Logger(label: "authorizer.cli", factory: { _ in SwiftLogNoOpLogHandler() })
        )
    }

    func send(_ command: RedisCommand) throws -> RESPValue {
        try client.send(command).wait()
    }

    func eval(_ script: LuaScript, keys: [String], arguments: [String]) throws -> RESPValue {
        try client.eventLoop.flatSubmit { client.evalScript(script, keys: keys, arguments: arguments) }.wait()
    }

    func shutdown() {
        client.close()
        try? group.syncShutdownGracefully()
    }
}

func fail(_ message: String) -> ExitCode {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
    return ExitCode.failure
}
