import Logging
import NIOCore

/// A self-healing pipelined Redis client bound to one event loop.
///
/// It connects lazily, loads its Lua scripts on every new connection, calls
/// them with EVALSHA (reloading and retrying once on NOSCRIPT), and when Redis
/// is unreachable refuses at once for a short back-off instead of piling up
/// connection attempts.
public final class RedisClient: Sendable {
    public let eventLoop: EventLoop
    public let endpoint: RedisEndpoint
    private let scripts: [LuaScript]
    private let options: RedisConnection.Options
    private let logger: Logger
    private let state: NIOLoopBoundBox<State>
    private let onReconnect: (@Sendable () -> Void)?
    private let onScriptsReloaded: (@Sendable () -> Void)?

    private struct State {
        enum Link {
            case idle
            case connecting(EventLoopFuture<RedisConnection>)
            case connected(RedisConnection)
            case backingOff(until: NIODeadline, reason: String)
        }
        var link: Link = .idle
        var loaded = LoadedScripts()
        var reloading: EventLoopFuture<Void>?
        var backoff = Backoff.reconnect
        var connectedOnce = false
        var closed = false
        /// The WAIT that will be sent at the end of this event-loop tick, and its connection.
        var pendingWait: (connection: RedisConnection, count: Int, acknowledged: EventLoopFuture<Int>)?
    }

    public init(
        endpoint: RedisEndpoint,
        eventLoop: EventLoop,
        scripts: [LuaScript] = [],
        options: RedisConnection.Options = .init(),
        logger: Logger = Logger(label: "redis"),
        onReconnect: (@Sendable () -> Void)? = nil,
        onScriptsReloaded: (@Sendable () -> Void)? = nil
    ) {
        self.endpoint = endpoint
        self.eventLoop = eventLoop
        self.scripts = scripts
        self.options = options
        self.logger = logger
        self.onReconnect = onReconnect
        self.onScriptsReloaded = onScriptsReloaded
        self.state = NIOLoopBoundBox.makeBoxSendingValue(State(), eventLoop: eventLoop)
    }

    /// Connects now (and loads scripts), failing if Redis is not reachable.
    public func connect() -> EventLoopFuture<Void> {
        eventLoop.flatSubmit { self.connection().map { _ in } }
    }

    public func send(_ command: RedisCommand) -> EventLoopFuture<RESPValue> {
        if eventLoop.inEventLoop {
            return connection().flatMap { $0.send(command) }
        }
        return eventLoop.flatSubmit { self.connection().flatMap { $0.send(command) } }
    }

    /// EVALSHA of a script loaded at connect time; NOSCRIPT reloads and retries once.
    public func evalScript(_ script: LuaScript, keys: [String], arguments: [String]) -> EventLoopFuture<RESPValue> {
        onScriptConnection { connection in
            self.evalRecoveringNoScript(script, keys: keys, arguments: arguments, on: connection)
        }
    }

    /// Runs `body` on the live connection. The usual case, connected, makes
    /// no future for the link on the hot path; otherwise a failure to
    /// connect means the script was never sent.
    private func onScriptConnection<Reply: Sendable>(_ body: @escaping @Sendable (RedisConnection) -> EventLoopFuture<Reply>) -> EventLoopFuture<Reply> {
        eventLoop.assertInEventLoop()
        if case .connected(let connection) = state.value.link, connection.isActive {
            return body(connection)
        }
        return connection().flatMapErrorThrowing { error in
            throw RedisError.notSent("\(error)")
        }.flatMap(body)
    }

    private func evalRecoveringNoScript(_ script: LuaScript, keys: [String], arguments: [String], on connection: RedisConnection) -> EventLoopFuture<RESPValue> {
        evalsha(script, keys: keys, arguments: arguments, on: connection).flatMapError { error in
                guard let redisError = error as? RedisError, redisError.isNoScript else {
                    return self.eventLoop.makeFailedFuture(error)
                }
                self.logger.warning("script cache empty on redis; reloading scripts", metadata: ["script": "\(script.name)"])
                // One count per reload: later NOSCRIPTs join the reload in flight.
                if self.state.value.reloading == nil { self.onScriptsReloaded?() }
                return self.reloadScripts(on: connection).flatMap {
                    self.evalsha(script, keys: keys, arguments: arguments, on: connection)
                }
        }
    }

    private func evalsha(_ script: LuaScript, keys: [String], arguments: [String], on connection: RedisConnection) -> EventLoopFuture<RESPValue> {
        guard let sha = state.value.loaded.sha(of: script) else {
            return eventLoop.makeFailedFuture(RedisError.unexpectedReply("script \(script.name) is not registered"))
        }
        var command: [String] = []
        command.reserveCapacity(3 + keys.count + arguments.count)
        command.append("EVALSHA")
        command.append(sha)
        command.append(String(keys.count))
        command.append(contentsOf: keys)
        command.append(contentsOf: arguments)
        return connection.send(RedisCommand(command))
    }

    /// EVALSHA, then, when `waitMs` gives a timeout for the reply, WAIT on
    /// the very connection that carried the script: a WAIT on a newer
    /// connection (after a reconnect) would prove nothing, since Redis counts
    /// only the writes of the connection it is sent on.
    public func evalScript(
        _ script: LuaScript, keys: [String], arguments: [String], replicas: Int, waitMs: @escaping @Sendable (RESPValue) -> Int?
    ) -> EventLoopFuture<ReplicatedReply> {
        precondition(replicas > 0)
        return onScriptConnection { connection in
            self.evalRecoveringNoScript(script, keys: keys, arguments: arguments, on: connection).flatMap { reply in
                guard let timeoutMs = waitMs(reply) else {
                    return self.eventLoop.makeSucceededFuture(ReplicatedReply(reply: reply, acknowledged: nil, wanted: replicas))
                }
                return self.waitForReplicas(replicas, timeoutMs: timeoutMs, on: connection).map {
                    ReplicatedReply(reply: reply, acknowledged: $0, wanted: replicas)
                }
            }
        }
    }

    /// The number of replicas that acknowledged every write sent on
    /// `connection` so far (WAIT). Calls in one event-loop tick share one
    /// WAIT, sent at the end of the tick: one replica round trip acknowledges
    /// the whole pipelined batch. A connection closed meanwhile, or an error
    /// reply (a master just demoted refuses WAIT), counts as no replica.
    func waitForReplicas(_ count: Int, timeoutMs: Int, on connection: RedisConnection) -> EventLoopFuture<Int> {
        eventLoop.assertInEventLoop()
        precondition(count > 0 && timeoutMs > 0)
        if let pending = state.value.pendingWait, pending.connection === connection, pending.count >= count {
            return pending.acknowledged
        }
        let promise = eventLoop.makePromise(of: Int.self)
        state.value.pendingWait = (connection, count, promise.futureResult)
        eventLoop.execute {
            if self.state.value.pendingWait?.connection === connection { self.state.value.pendingWait = nil }
            guard connection.isActive else {
                promise.succeed(0)
                return
            }
            connection.send(RedisCommand("WAIT", String(count), String(timeoutMs)))
                .map { Int($0.int ?? 0) }
                .recover { _ in 0 }
                .cascade(to: promise)
        }
        return promise.futureResult
    }

    /// Waits until Redis has answered everything sent so far (QUIT is
    /// answered after every earlier command), then closes.
    public func shutdown() -> EventLoopFuture<Void> {
        eventLoop.flatSubmit {
            self.state.value.closed = true
            guard case .connected(let connection) = self.state.value.link, connection.isActive else {
                self.state.value.link = .idle
                return self.eventLoop.makeSucceededVoidFuture()
            }
            self.state.value.link = .idle
            return connection.send(RedisCommand("QUIT")).map { _ in }.recover { _ in }.always { _ in connection.close() }
        }
    }

    public func close() {
        eventLoop.execute {
            self.state.value.closed = true
            if case .connected(let connection) = self.state.value.link { connection.close() }
            self.state.value.link = .idle
        }
    }

    // MARK: - Link management (on the event loop)

    private func connection() -> EventLoopFuture<RedisConnection> {
        eventLoop.assertInEventLoop()
        switch state.value.link {
        case .connected(let connection) where connection.isActive:
            return eventLoop.makeSucceededFuture(connection)
        case .connecting(let future):
            return future
        case .backingOff(let until, let reason) where NIODeadline.now() < until:
            return eventLoop.makeFailedFuture(RedisError.unavailable(reason))
        case .connected, .idle, .backingOff:
            guard !state.value.closed else { return eventLoop.makeFailedFuture(RedisError.connectionClosed) }
            return startConnecting()
        }
    }

    private func startConnecting() -> EventLoopFuture<RedisConnection> {
        let future = RedisConnection.connect(to: endpoint, on: eventLoop, options: options).flatMap { connection in
            self.reloadScripts(on: connection).map { connection }.flatMapErrorThrowing { error in
                connection.close()
                throw error
            }
        }
        state.value.link = .connecting(future)
        future.whenComplete { result in
            switch result {
            case .success(let connection):
                let reconnected = self.state.value.connectedOnce
                self.state.value.link = .connected(connection)
                self.state.value.backoff.succeeded()
                self.state.value.connectedOnce = true
                connection.closeFuture.whenComplete { _ in
                    if case .connected(let current) = self.state.value.link, current === connection {
                        self.state.value.link = .idle
                        self.logger.warning("redis connection lost", metadata: ["redis": "\(self.endpoint)"])
                    }
                }
                if reconnected {
                    self.logger.info("redis reconnected", metadata: ["redis": "\(self.endpoint)"])
                    self.onReconnect?()
                }
            case .failure(let error):
                let next = self.state.value.backoff.failed()
                self.state.value.link = .backingOff(until: .now() + next, reason: "\(error)")
                self.logger.warning("redis connect failed", metadata: ["redis": "\(self.endpoint)", "error": "\(error)", "retry_in_ms": "\(next.nanoseconds / 1_000_000)"])
            }
        }
        return future
    }

    private func reloadScripts(on connection: RedisConnection) -> EventLoopFuture<Void> {
        if let reloading = state.value.reloading { return reloading }
        let loads = scripts.map { script in
            connection.send(RedisCommand("SCRIPT", "LOAD", script.source)).flatMapThrowing { reply -> (String, String) in
                guard let sha = reply.string, sha.utf8.count == 40 else {
                    throw RedisError.unexpectedReply("SCRIPT LOAD of \(script.name) returned \(reply)")
                }
                return (script.name, sha)
            }
        }
        let future = EventLoopFuture.whenAllSucceed(loads, on: eventLoop).map { pairs in
            for (name, sha) in pairs { self.state.value.loaded.shas[name] = sha }
        }
        state.value.reloading = future
        future.whenComplete { _ in self.state.value.reloading = nil }
        return future
    }
}
