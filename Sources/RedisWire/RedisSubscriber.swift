import Logging
import NIOCore

/// One pub/sub connection shared by a whole process. Channels are added and
/// removed as callers need them; after a lost connection it reconnects,
/// subscribes again to what is wanted, and reports the gap through
/// `onResubscribed` (messages published meanwhile are lost: pub/sub is
/// fire-and-forget, so callers must have another way to make progress).
public final class RedisSubscriber: Sendable {
    public let eventLoop: EventLoop
    private let endpoint: RedisEndpoint
    private let logger: Logger
    private let onMessage: @Sendable (_ channel: String, _ payload: String) -> Void
    private let onResubscribed: @Sendable () -> Void
    private let state: NIOLoopBoundBox<State>

    private struct State {
        var wanted = Set<String>()
        var connection: EventLoopFuture<RedisConnection>?
        var reconnectScheduled = false
        var backoff = Backoff.resubscribe
        var closed = false
    }

    public init(
        endpoint: RedisEndpoint,
        eventLoop: EventLoop,
        logger: Logger = Logger(label: "redis.subscriber"),
        onMessage: @escaping @Sendable (_ channel: String, _ payload: String) -> Void,
        onResubscribed: @escaping @Sendable () -> Void = {}
    ) {
        self.endpoint = endpoint
        self.eventLoop = eventLoop
        self.logger = logger
        self.onMessage = onMessage
        self.onResubscribed = onResubscribed
        self.state = NIOLoopBoundBox.makeBoxSendingValue(State(), eventLoop: eventLoop)
    }

    /// Subscribes; the future completes once Redis confirmed every channel,
    /// so a message published after that is delivered.
    public func subscribe(_ channels: [String]) -> EventLoopFuture<Void> {
        eventLoop.flatSubmit {
            let fresh = channels.filter { !self.state.value.wanted.contains($0) }
            self.state.value.wanted.formUnion(channels)
            if let pending = self.state.value.connection {
                return pending.flatMap { connection in self.send("SUBSCRIBE", fresh, on: connection) }
            }
            return self.connect().map { _ in }
        }
    }

    public func unsubscribe(_ channels: [String]) -> EventLoopFuture<Void> {
        eventLoop.flatSubmit {
            let present = channels.filter { self.state.value.wanted.contains($0) }
            self.state.value.wanted.subtract(present)
            guard let pending = self.state.value.connection else { return self.eventLoop.makeSucceededVoidFuture() }
            return pending.flatMap { connection in self.send("UNSUBSCRIBE", present, on: connection) }
        }
    }

    public func close() {
        eventLoop.execute {
            self.state.value.closed = true
            self.state.value.wanted.removeAll()
            self.state.value.connection?.whenSuccess { $0.close() }
            self.state.value.connection = nil
        }
    }

    private func send(_ verb: String, _ channels: [String], on connection: RedisConnection) -> EventLoopFuture<Void> {
        // One command per channel: each gets exactly one confirmation reply.
        let confirmations = channels.map { connection.send(RedisCommand(verb, $0)) }
        return EventLoopFuture.andAllSucceed(confirmations, on: eventLoop)
    }

    private func connect() -> EventLoopFuture<RedisConnection> {
        eventLoop.assertInEventLoop()
        let onMessage = self.onMessage
        let future = RedisConnection.connect(
            to: endpoint,
            on: eventLoop,
            options: .init(commandTimeout: .seconds(5)),
            onPush: { push in
                guard case .array(let items) = push, items.count == 3,
                      let channel = items[1].string, let payload = items[2].string else { return }
                onMessage(channel, payload)
            }
        ).flatMap { connection in
            self.send("SUBSCRIBE", Array(self.state.value.wanted), on: connection).map { connection }
                .flatMapErrorThrowing { error in
                    connection.close()
                    throw error
                }
        }
        state.value.connection = future
        future.whenComplete { result in
            switch result {
            case .success(let connection):
                self.state.value.backoff.succeeded()
                connection.closeFuture.whenComplete { _ in self.connectionLost(connection) }
            case .failure(let error):
                self.logger.warning("subscriber connect failed", metadata: ["error": "\(error)"])
                self.state.value.connection = nil
                self.scheduleReconnect()
            }
        }
        return future
    }

    private func connectionLost(_ connection: RedisConnection) {
        guard !state.value.closed else { return }
        logger.warning("subscriber connection lost")
        state.value.connection = nil
        scheduleReconnect()
    }

    private func scheduleReconnect() {
        guard !state.value.closed, !state.value.wanted.isEmpty, !state.value.reconnectScheduled else { return }
        state.value.reconnectScheduled = true
        eventLoop.assumeIsolated().scheduleTask(in: state.value.backoff.failed()) {
            self.state.value.reconnectScheduled = false
            guard self.state.value.connection == nil, !self.state.value.wanted.isEmpty else { return }
            self.connect().whenSuccess { _ in self.onResubscribed() }
        }
    }
}
