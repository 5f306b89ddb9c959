import Foundation
import NIOCore
import NIOPosix
import RedisWire

/// A real redis-server from the project's redis.conf, on a free port, with
/// its data in a temp dir. Stopped (SIGKILL) when the test ends.
final class RedisServer: @unchecked Sendable {
    let port: Int
    let directory: URL
    private(set) var child: ChildProcess
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private(set) var client: RedisClient
    let extraArguments: [String]

    var url: String { "redis://127.0.0.1:\(port)/0" }
    var endpoint: RedisEndpoint { try! RedisEndpoint(url: url) }

    init(name: String, extraArguments: [String] = []) throws {
        port = try TestEnvironment.freePort()
        directory = try TestEnvironment.makeTemporaryDirectory("redis-\(name)")
        self.extraArguments = extraArguments
        child = RedisServer.makeChild(port: port, directory: directory, extra: extraArguments)
        client = RedisClient(endpoint: try RedisEndpoint(url: "redis://127.0.0.1:\(port)/0"), eventLoop: group.next())
        try startChild()
    }

    private static func makeChild(port: Int, directory: URL, extra: [String]) -> ChildProcess {
        ChildProcess(
            name: "redis-\(port)",
            executable: "/usr/bin/redis-server",
            arguments: [TestEnvironment.redisConf, "--port", String(port), "--dir", directory.path, "--daemonize", "no", "--logfile", ""] + extra
        )
    }

    private func startChild() throws {
        try child.start()
        guard child.waitForLine(containing: "Ready to accept connections") else {
            throw TestFailure("redis-server on \(port) did not start:\n\(child.output)")
        }
    }

    /// Kills Redis (SIGKILL) and starts it again on the same port and data dir.
    func restart(kill signal: Int32 = SIGKILL) throws {
        child.terminate(signal: signal)
        _ = child.waitForExit()
        child = RedisServer.makeChild(port: port, directory: directory, extra: extraArguments)
        try startChild()
    }

    func kill() {
        child.terminate(signal: SIGKILL)
        _ = child.waitForExit()
    }

    @discardableResult
    func command(_ arguments: String...) throws -> RESPValue {
        try command(arguments)
    }

    @discardableResult
    func command(_ arguments: [String]) throws -> RESPValue {
        try client.send(RedisCommand(arguments)).wait()
    }

    /// HGETALL account:{ID} as category -> cents.
    func balances(_ account: String) throws -> [String: Int64] {
        let items = try command("HGETALL", "account:{\(account)}").array ?? []
        var result: [String: Int64] = [:]
        var index = 0
        while index + 1 < items.count {
            result[items[index].string!] = items[index + 1].int
            index += 2
        }
        return result
    }

    func setBalances(_ account: String, _ balances: [String: Int64]) throws {
        try command(["DEL", "account:{\(account)}"])
        try command(["HSET", "account:{\(account)}"] + balances.flatMap { [$0.key, String($0.value)] })
    }

    /// Every entry of the statements stream as field -> value.
    func statements() throws -> [[String: String]] {
        let entries = try command("XRANGE", "statements", "-", "+").array ?? []
        return entries.map { entry in
            let fields = entry.array![1].array!
            var result: [String: String] = ["_id": entry.array![0].string!]
            var index = 0
            while index + 1 < fields.count {
                result[fields[index].string!] = fields[index + 1].string!
                index += 2
            }
            return result
        }
    }

    deinit {
        child.terminate(signal: SIGKILL)
        _ = child.waitForExit(timeout: 5)
        client.close()
        try? group.syncShutdownGracefully()
        try? FileManager.default.removeItem(at: directory)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
